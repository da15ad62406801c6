use purrify_inference::client::ConfigError;

/// Why a GpuPool reconcile failed. Invalid specs are not errors: they end in a status
/// condition, since retrying cannot fix them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {namespace}/{name} exists and is controlled by something other than this pool")]
    NotOwned { kind: &'static str, namespace: String, name: String },
    #[error("worker endpoint: {0}")]
    Endpoint(#[from] ConfigError),
    #[error("the GpuPool object has no {0}")]
    Incomplete(&'static str),
    #[error("the {0} cache has not synced yet")]
    CacheNotReady(&'static str),
}

impl Error {
    /// Bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::NotOwned { .. } => "not_owned",
            Self::Endpoint(_) => "endpoint",
            Self::Incomplete(_) => "incomplete",
            Self::CacheNotReady(_) => "cache",
        }
    }
}
