//! Purrify's gateway: the public REST API the mini-program speaks (seed 000), turning each
//! upload into a task and reporting its status back.
//!
//! Layout (DESIGN section 1): `http/` is HTTP only (envelope, extractors, auth, OpenAPI,
//! middleware, one routes module per area); `domain/` is what the gateway does (the task
//! service and its standalone and Kubernetes backends, the GPU fleet), without axum; the
//! database is `purrify-store`'s, reached only from `domain/`; `app/` assembles and runs it.

pub mod app;
pub mod config;
pub mod domain;
pub mod http;
pub mod metrics;

use clap::Parser;

/// Entry point of the binary.
pub fn run() -> anyhow::Result<()> {
    let config = config::Config::parse();
    init_tracing(config.log_format);
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async move {
        let gateway = app::start(config, shutdown_signal()).await?;
        gateway.handle.await?
    });
    // `start` already spent the grace period; connections it cut off and blocking work (an
    // embedded worker's inference) must not hold the exit beyond it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

fn init_tracing(format: config::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Text => builder.try_init(),
    };
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
