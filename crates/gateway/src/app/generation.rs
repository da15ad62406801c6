//! Assembling the provider service, generation and the provider runner from the
//! configuration.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::domain::generation::GenerationService;
use crate::domain::generation::outputs::CopyRules;
use crate::domain::generation::runner::{self, RunnerSettings};
use crate::domain::providers::{PolicySettings, ProviderService, ProviderSettings};
use crate::domain::quotas::QuotaService;
use crate::domain::tasks::TaskService;
use crate::metrics::Metrics;

pub async fn start(
    config: &Config,
    tasks: &TaskService,
    quotas: &QuotaService,
    metrics: &Metrics,
    image_limits: purrify_imaging::Limits,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(ProviderService, GenerationService, JoinHandle<()>)> {
    let p = &config.providers;
    let policy = PolicySettings {
        attempts: p.provider_attempts,
        retry_base: Duration::from_millis(p.provider_retry_base_ms),
        call_timeout: Duration::from_secs(p.provider_timeout_seconds),
        breaker_failures: p.provider_breaker_failures,
        breaker_cooldown: Duration::from_secs(p.provider_breaker_cooldown_seconds),
        ..PolicySettings::default()
    };
    let settings = ProviderSettings {
        policy,
        poll_interval: Duration::from_millis(p.provider_poll_ms),
        allow_private: config.allow_private_workers,
        sealing_key: p.provider_key.clone(),
    };
    let providers = ProviderService::start(tasks.db().clone(), settings, metrics.provider_calls.clone()).await?;
    let copy = CopyRules {
        max_bytes: p.provider_max_result_bytes,
        timeout: Duration::from_secs(p.provider_timeout_seconds),
        allow_private: config.allow_private_workers,
        limits: image_limits,
    };
    let generation = GenerationService::new(tasks.clone(), providers.clone(), quotas.clone(), copy);
    let runner = runner::spawn(
        tasks.clone(),
        providers.clone(),
        RunnerSettings {
            concurrency: p.provider_concurrency as usize,
            tick: Duration::from_secs(1),
            stale_after: Duration::from_secs(600),
            copy,
            public_url: p.public_url.clone(),
            max_input_bytes: config.max_upload_bytes,
        },
        stop,
    );
    Ok((providers, generation, runner))
}
