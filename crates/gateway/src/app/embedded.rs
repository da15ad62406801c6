//! The inference worker inside the gateway (standalone mode, feature `embedded-worker`): the
//! same worker server as a GPU server runs, on an ephemeral loopback port.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
#[cfg(feature = "embedded-worker")]
use std::time::Duration;

use purrify_inference::storage::Storage;

use crate::config::Config;

#[cfg(feature = "embedded-worker")]
pub(super) async fn start_embedded_worker(
    config: &Config,
    storage: &Arc<Storage>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    use purrify_inference::pipeline::EngineConfig;
    use purrify_inference::protocol::QualityLevel;
    use purrify_inference::runtime::RuntimeConfig;
    use purrify_inference::server::{EngineSource, WorkerConfig, jobs::JobsConfig};

    if !config.embedded_worker {
        return Ok(None);
    }
    let quality_levels = config
        .quality_levels
        .iter()
        .map(|q| q.parse::<QualityLevel>().map_err(|e| anyhow::anyhow!("--quality-levels: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let engine = EngineConfig {
        runtime: RuntimeConfig { intra_threads: config.threads, ..Default::default() },
        quality_levels,
        face_model: config.face_model.clone(),
        limits: purrify_imaging::Limits { max_pixels: config.max_pixels, ..Default::default() },
        ..EngineConfig::default()
    };
    // The in-process worker is reached over loopback HTTP through the same fleet client as
    // remote workers: one dispatch path, one set of failure modes.
    let mut stop = stop;
    let worker = purrify_inference::server::start(
        WorkerConfig {
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0),
            storage: storage.clone(),
            jobs: JobsConfig {
                capacity: config.worker_capacity.max(1),
                parallel: 1,
                max_input_bytes: config.max_upload_bytes,
                retain: Duration::from_secs(3600),
            },
            engine: EngineSource::Load(Box::new(engine)),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_seconds),
        },
        async move {
            let _ = stop.changed().await;
        },
    )
    .await?;
    let addr = worker.addr;
    tokio::spawn(async move {
        match worker.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "embedded worker stopped"),
            Err(e) => tracing::error!(error = %e, "embedded worker panicked"),
        }
    });
    Ok(Some(addr))
}

#[cfg(not(feature = "embedded-worker"))]
pub(super) async fn start_embedded_worker(
    config: &Config,
    _storage: &Arc<Storage>,
    _stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<SocketAddr>> {
    if config.embedded_worker {
        tracing::warn!("this build has no embedded worker (feature `embedded-worker`); register GPU servers by webhook");
    }
    Ok(None)
}
