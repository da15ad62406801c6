//! What every reconcile gets: the API client, the pools' worker fleets, metrics and the
//! operator's scope. Shared by both controllers (kube-rs `Context` pattern).

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::registry::Registry;

/// The single server-side-apply field manager of the operator.
pub const FIELD_MANAGER: &str = "purrify-operator";

pub struct Context {
    pub client: kube::Client,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Watch only this namespace; `None` watches all.
    pub namespace: Option<String>,
}
