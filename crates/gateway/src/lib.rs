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
    // The gateway's own events at INFO and above also go to `system_logs` (seed 002's
    // /api/logs/system), through the stack started below.
    let (capture, system_logs) = domain::logs::system_log_channel();
    purrify_process::init_tracing_with(config.log_format, "info,ort=warn", capture);
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(command) = config.command.clone() {
        let out = rt.block_on(app::cli::run(&config, &command, &mut std::io::stdin().lock()))?;
        println!("{out}");
        return Ok(());
    }
    let result = rt.block_on(async move {
        let gateway = app::start(config, purrify_process::shutdown_signal()).await?;
        gateway.state.logs.attach_system_logs(system_logs);
        gateway.handle.await?
    });
    // `start` already spent the grace period; connections it cut off and blocking work (an
    // embedded worker's inference) must not hold the exit beyond it.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
