//! The assembled gateway: its state, the router with its middleware, start-up and graceful
//! shutdown of the whole stack (database, storage, fleet, task backend, the optional
//! in-process worker).

pub mod accounts;
pub mod cli;
mod embedded;
mod generation;
mod lifecycle;
mod payments;
mod router;

use std::path::PathBuf;
use std::sync::Arc;

use purrify_inference::storage::Storage;
use tokio_util::sync::CancellationToken;

pub use lifecycle::{Gateway, Stack, build, start};
pub use router::router;

use crate::config::Config;
use crate::domain::accounts::AccountService;
use crate::domain::assistant::AssistantService;
use crate::domain::audit::AuditLog;
use crate::domain::credits::CreditService;
use crate::domain::generation::GenerationService;
use crate::domain::live::LiveHub;
use crate::domain::logs::LogService;
use crate::domain::payments::PaymentService;
use crate::domain::providers::ProviderService;
use crate::domain::quotas::QuotaService;
use crate::domain::recharge::RechargeService;
use crate::domain::square::SquareService;
use crate::domain::tasks::TaskService;
use crate::domain::uploads::UploadService;
use crate::domain::works::WorkService;
use crate::http::middleware::rate_limit::RateLimiter;
use crate::metrics::Metrics;

/// Everything a handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub storage: Arc<Storage>,
    pub metrics: Arc<Metrics>,
    pub limiter: Arc<RateLimiter>,
    pub upload_limiter: Arc<RateLimiter>,
    pub swagger_ui_dir: PathBuf,
    /// The task core: tasks, the fleet and GPU servers, whichever backend runs.
    pub tasks: TaskService,
    /// Users, logins and tokens.
    pub accounts: AccountService,
    /// Balances, the ledger, task prices and holds.
    pub credits: CreditService,
    /// Recharge codes (seed 002).
    pub recharge: RechargeService,
    /// Recharge orders paid through WeChat Pay (seeds 000 and 001).
    pub payments: PaymentService,
    /// Seed 003's daily generation and hourly API-call quotas.
    pub quotas: QuotaService,
    /// Live task updates per user, for `/ws`.
    pub live: LiveHub,
    /// Uploaded files (seeds 001 and 003): storage, quota, ownership.
    pub uploads: UploadService,
    /// Seed 004's AI postcards: creation (a provider task), status, detail, lists, pictures.
    pub postcards: crate::domain::postcards::PostcardService,
    /// System logs, task timelines and retention (seed 002's /api/logs).
    pub logs: LogService,
    /// Records what users did (logins, admin actions, payments, deletions, every write).
    pub audit: AuditLog,
    /// What users keep of their tasks (seeds 001 and 003), thumbnails and object deletion.
    pub works: WorkService,
    /// Seed 003's square: shared works, likes, favorites, plays counted in memory.
    pub square: SquareService,
    /// Outside AI providers: configuration, the call policy, chat (seeds 003 and 004).
    pub providers: ProviderService,
    /// Seed 003's AI assistant: chat answers relayed from the assistant provider, conversations kept.
    pub assistant: AssistantService,
    /// Generation tasks through providers and workflow callbacks (seeds 001, 003, 004).
    pub generation: GenerationService,
    /// Cancelled when the gateway starts shutting down: long-lived responses (SSE streams,
    /// WebSocket sessions) end on it, or they would hold the shutdown open for ever.
    pub draining: CancellationToken,
}
