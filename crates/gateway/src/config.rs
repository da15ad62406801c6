//! Every option is a flag with an environment variable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// One machine: SQLite or PostgreSQL, local or S3 storage, an in-process worker and GPU
    /// servers registered by webhook.
    Standalone,
    /// Uploads become EnhanceTask custom resources that the operator drives.
    Kubernetes,
}

pub use purrify_process::LogFormat;

#[derive(Parser, Debug, Clone)]
#[command(name = "purrify-gateway", version, about = "Purrify's public REST API gateway")]
pub struct Config {
    /// Listen address. Default 127.0.0.1:8080; the PORT variable changes only the port.
    #[arg(long, env = "PURRIFY_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Task backend.
    #[arg(long, env = "PURRIFY_BACKEND", default_value = "standalone")]
    pub backend: Backend,
    /// Kubernetes backend: namespace of the EnhanceTasks and GpuPools.
    #[arg(long, env = "PURRIFY_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Kubernetes backend: the operator's HTTP address for live progress
    /// (e.g. http://purrify-operator:9090); without it progress moves in coarse steps.
    #[arg(long, env = "PURRIFY_OPERATOR_URL")]
    pub operator_url: Option<String>,
    /// Directory for the default SQLite database and local storage.
    #[arg(long, env = "PURRIFY_DATA_DIR", default_value = "purrify-data")]
    pub data_dir: PathBuf,
    /// Object storage root for uploads and results: file:///srv/purrify or s3://bucket/prefix.
    /// Default: file://<data-dir>/storage.
    #[arg(long, env = "PURRIFY_STORAGE")]
    pub storage: Option<String>,
    /// S3-compatible endpoint (credentials from AWS_* variables).
    #[arg(long, env = "PURRIFY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "PURRIFY_S3_REGION")]
    pub s3_region: Option<String>,
    #[arg(long, env = "PURRIFY_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
    /// sqlite://path/to/db or postgres://user:pass@host/db. Default: SQLite in <data-dir>.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Shared secret GPU servers present to /webhook/*. No default: without it the webhooks
    /// are disabled.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Key that signs task-completion callbacks (`callback_url` on task creation): each POST
    /// carries `X-Purrify-Timestamp` and `X-Purrify-Signature: sha256=<hex HMAC of
    /// "<timestamp>.<body>">`. Without it, tasks with a `callback_url` are refused.
    #[arg(long, env = "PURRIFY_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
    /// Attempts per task-completion callback before it is given up; the wait between them
    /// doubles from `--callback-retry-base-ms` (capped at an hour).
    #[arg(long, env = "PURRIFY_CALLBACK_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub callback_max_attempts: u32,
    #[arg(long, env = "PURRIFY_CALLBACK_RETRY_BASE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub callback_retry_base_ms: u64,
    /// Time one callback POST may take, connection included.
    #[arg(long, env = "PURRIFY_CALLBACK_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub callback_timeout_seconds: u64,
    /// `/ws` heartbeat: milliseconds between the server's pings; a connection that sent
    /// nothing back by the next ping is closed (4002). The access token is re-checked then too.
    #[arg(long, env = "PURRIFY_WS_PING_INTERVAL_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub ws_ping_interval_ms: u64,
    /// Milliseconds a `/ws` connection has to authenticate (or follow a task by id) before it
    /// is closed (4001).
    #[arg(long, env = "PURRIFY_WS_AUTH_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub ws_auth_timeout_ms: u64,
    /// Bearer token for admin endpoints (/api/v1/config/*). Without it they are disabled.
    #[arg(long, env = "PURRIFY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Access-token signing key as `<key id>:<secret>` (secret: at least 32 bytes). Required in
    /// Kubernetes mode; standalone mode generates one in the data directory and keeps it.
    #[arg(long, env = "PURRIFY_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// Keys that still verify but no longer sign (`<kid>:<secret>`, comma-separated): keep the
    /// previous key here for one access-token lifetime after rotating.
    #[arg(long, env = "PURRIFY_JWT_PREVIOUS_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub jwt_previous_keys: Vec<String>,
    /// Access-token lifetime in seconds (seed 002: 1800).
    #[arg(long, env = "PURRIFY_ACCESS_TOKEN_SECONDS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(60..=86400))]
    pub access_token_seconds: u64,
    /// Refresh-token lifetime in days.
    #[arg(long, env = "PURRIFY_REFRESH_TOKEN_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=365))]
    pub refresh_token_days: u64,
    /// Accept `POST /api/v1/enhance` without a Bearer token (seed 000's anonymous uploads).
    #[arg(long, env = "PURRIFY_ALLOW_ANONYMOUS_UPLOADS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_anonymous_uploads: bool,
    /// WeChat mini-program app id and secret, for `jscode2session` (seed 000's names).
    #[arg(long, env = "WECHAT_APPID")]
    pub wechat_appid: Option<String>,
    #[arg(long, env = "WECHAT_SECRET", hide_env_values = true)]
    pub wechat_secret: Option<String>,
    /// Base URL of WeChat's API (tests point it at a local fake).
    #[arg(long, env = "WECHAT_API_BASE", default_value = "https://api.weixin.qq.com")]
    pub wechat_api_base: String,
    /// The first admin, created at start when the database has no admin.
    #[arg(long, env = "PURRIFY_BOOTSTRAP_ADMIN_EMAIL")]
    pub bootstrap_admin_email: Option<String>,
    #[arg(long, env = "PURRIFY_BOOTSTRAP_ADMIN_PASSWORD", hide_env_values = true)]
    pub bootstrap_admin_password: Option<String>,
    /// Login attempts per minute per client address (also the burst); 0 disables.
    #[arg(long, env = "PURRIFY_LOGINS_PER_MINUTE_PER_ADDRESS", default_value_t = 20.0)]
    pub logins_per_minute_per_address: f64,
    /// Login attempts per minute per account (also the burst); 0 disables.
    #[arg(long, env = "PURRIFY_LOGINS_PER_MINUTE_PER_ACCOUNT", default_value_t = 5.0)]
    pub logins_per_minute_per_account: f64,
    /// argon2id memory cost in KiB (OWASP: 19456) and iterations (2).
    #[arg(long, env = "PURRIFY_ARGON2_MEMORY_KIB", default_value_t = 19456, value_parser = clap::value_parser!(u32).range(1024..=1048576))]
    pub argon2_memory_kib: u32,
    #[arg(long, env = "PURRIFY_ARGON2_ITERATIONS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub argon2_iterations: u32,
    /// Largest upload in bytes.
    #[arg(long, env = "PURRIFY_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Largest image in pixels (checked from the header at upload and again by the worker).
    #[arg(long, env = "PURRIFY_MAX_PIXELS", default_value_t = purrify_imaging::Limits::default().max_pixels)]
    pub max_pixels: u64,
    /// Bytes of uploaded files (and their thumbnails) one user may keep (seed 001/003 uploads).
    #[arg(long, env = "PURRIFY_UPLOAD_QUOTA_BYTES", default_value_t = 1 << 30)]
    pub upload_quota_bytes: u64,
    /// Allowed CORS origins, comma-separated; `*` allows any.
    #[arg(long, env = "PURRIFY_CORS_ORIGINS", value_delimiter = ',', default_value = "*")]
    pub cors_origins: Vec<String>,
    /// Sustained requests per second per client (0 disables rate limiting).
    #[arg(long, env = "PURRIFY_RATE_LIMIT", default_value_t = 50.0)]
    pub rate_limit: f64,
    /// Burst size per client.
    #[arg(long, env = "PURRIFY_RATE_BURST", default_value_t = 100.0)]
    pub rate_burst: f64,
    /// Uploads per minute per client (an upload costs a GPU job).
    #[arg(long, env = "PURRIFY_UPLOADS_PER_MINUTE", default_value_t = 30.0)]
    pub uploads_per_minute: f64,
    /// Identify clients by X-Forwarded-For (only behind a trusted proxy): the address the
    /// outermost trusted proxy appended, `--trusted-proxy-hops` entries from the right.
    #[arg(long, env = "PURRIFY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Trusted proxies in front of the gateway that each append to X-Forwarded-For (e.g. 2 for
    /// a cloud load balancer in front of the ingress controller). Entries left of them are
    /// whatever the client sent and are never trusted.
    #[arg(long, env = "PURRIFY_TRUSTED_PROXY_HOPS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub trusted_proxy_hops: u32,
    /// Seconds a task may take from upload to result before it fails (seed: 5 minutes).
    #[arg(long, env = "PURRIFY_TASK_DEADLINE_SECONDS", default_value_t = 300)]
    pub task_deadline_seconds: u64,
    /// Attempts per task across workers.
    #[arg(long, env = "PURRIFY_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// Accept GPU-server registrations on loopback, link-local and cloud-metadata addresses
    /// (development only: otherwise the webhook could make the gateway call internal services).
    #[arg(long, env = "PURRIFY_ALLOW_PRIVATE_WORKERS")]
    pub allow_private_workers: bool,
    /// Worker health-probe interval in seconds.
    #[arg(long, env = "PURRIFY_PROBE_INTERVAL", default_value_t = 5)]
    pub probe_interval_seconds: u64,
    /// Run an inference worker inside the gateway (standalone mode).
    #[arg(long, env = "PURRIFY_EMBEDDED_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    pub embedded_worker: bool,
    /// Quality levels the embedded worker serves.
    #[arg(long, env = "PURRIFY_QUALITY_LEVELS", value_delimiter = ',', default_value = "high,medium,fast")]
    pub quality_levels: Vec<String>,
    /// Jobs the embedded worker accepts at once.
    #[arg(long, env = "PURRIFY_WORKER_CAPACITY", default_value_t = 2)]
    pub worker_capacity: usize,
    /// Intra-op threads of the embedded worker (0 = all cores).
    #[arg(long, env = "PURRIFY_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Face restoration model for the embedded worker (GFPGAN/CodeFormer ONNX signature).
    #[arg(long, env = "PURRIFY_FACE_MODEL")]
    pub face_model: Option<PathBuf>,
    /// Seconds in-flight requests and jobs get after SIGTERM.
    #[arg(long, env = "PURRIFY_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// Swagger UI assets for /docs (default: the cache filled by `make models`).
    #[arg(long, env = "PURRIFY_SWAGGER_UI_DIR")]
    pub swagger_ui_dir: Option<PathBuf>,
    #[arg(long, env = "PURRIFY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    /// Days system logs, user actions and task timelines are kept (seed 002's /api/logs);
    /// older rows are deleted in bounded batches by the housekeeping loop.
    #[arg(long, env = "PURRIFY_LOG_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
    pub log_retention_days: u64,
    #[command(flatten)]
    pub quotas: QuotaConfig,
    #[command(flatten)]
    pub payments: PaymentConfig,
    #[command(flatten)]
    pub providers: ProviderConfig,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Seed 003's quotas per plan (VIP: a VIP level above 0 that has not expired). Defaults are
/// the seed's. A generation limit of 0 allows none; an API-call limit of 0 turns the hourly
/// count off for that plan.
#[derive(clap::Args, Debug, Clone)]
pub struct QuotaConfig {
    /// Image generations a free user may start per UTC day.
    #[arg(long, env = "PURRIFY_QUOTA_FREE_IMAGES_PER_DAY", default_value_t = 10, value_parser = clap::value_parser!(i64).range(0..))]
    pub free_images_per_day: i64,
    /// Video generations a free user may start per UTC day.
    #[arg(long, env = "PURRIFY_QUOTA_FREE_VIDEOS_PER_DAY", default_value_t = 3, value_parser = clap::value_parser!(i64).range(0..))]
    pub free_videos_per_day: i64,
    /// Authenticated API calls a free user may make per UTC hour.
    #[arg(long, env = "PURRIFY_QUOTA_FREE_API_CALLS_PER_HOUR", default_value_t = 100, value_parser = clap::value_parser!(i64).range(0..))]
    pub free_api_calls_per_hour: i64,
    #[arg(long, env = "PURRIFY_QUOTA_VIP_IMAGES_PER_DAY", default_value_t = 100, value_parser = clap::value_parser!(i64).range(0..))]
    pub vip_images_per_day: i64,
    #[arg(long, env = "PURRIFY_QUOTA_VIP_VIDEOS_PER_DAY", default_value_t = 20, value_parser = clap::value_parser!(i64).range(0..))]
    pub vip_videos_per_day: i64,
    #[arg(long, env = "PURRIFY_QUOTA_VIP_API_CALLS_PER_HOUR", default_value_t = 1000, value_parser = clap::value_parser!(i64).range(0..))]
    pub vip_api_calls_per_hour: i64,
}

/// Outside AI providers (DESIGN section 13): the key that seals their API keys, and the call
/// policy around every call (deadline, retries, breaker).
#[derive(clap::Args, Debug, Clone)]
pub struct ProviderConfig {
    /// Seals providers' API keys at rest (AES-256-GCM): 32 bytes as 64 hex digits or base64.
    /// Without it no API key can be stored, so only the built-in provider works.
    #[arg(long, env = "PURRIFY_PROVIDER_KEY", hide_env_values = true)]
    pub provider_key: Option<String>,
    /// The gateway's public base URL (e.g. https://api.example.com): where a workflow calls
    /// back (`/api/callback/task-complete|failed`). Workflow tasks fail without it.
    #[arg(long, env = "PURRIFY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Tries of one provider call before the fallback (1 = no retry).
    #[arg(long, env = "PURRIFY_PROVIDER_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub provider_attempts: u32,
    /// First retry wait in milliseconds (doubling, ±20%); a provider's Retry-After wins.
    #[arg(long, env = "PURRIFY_PROVIDER_RETRY_BASE_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub provider_retry_base_ms: u64,
    /// Longest single provider HTTP exchange, in seconds.
    #[arg(long, env = "PURRIFY_PROVIDER_TIMEOUT_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub provider_timeout_seconds: u64,
    /// Provider faults in a row that open its circuit breaker.
    #[arg(long, env = "PURRIFY_PROVIDER_BREAKER_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub provider_breaker_failures: u32,
    /// Seconds an open breaker refuses calls before one probe.
    #[arg(long, env = "PURRIFY_PROVIDER_BREAKER_COOLDOWN_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub provider_breaker_cooldown_seconds: u64,
    /// Milliseconds between polls of a pending provider job (video APIs).
    #[arg(long, env = "PURRIFY_PROVIDER_POLL_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(10..))]
    pub provider_poll_ms: u64,
    /// Provider tasks one gateway runs at once.
    #[arg(long, env = "PURRIFY_PROVIDER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub provider_concurrency: u64,
    /// Largest result file copied in from a provider, in bytes.
    #[arg(long, env = "PURRIFY_PROVIDER_MAX_RESULT_BYTES", default_value_t = 200 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub provider_max_result_bytes: u64,
}

/// Recharge orders and WeChat Pay. The merchant itself is configured with seed 000's
/// variables (`WECHAT_MCH_ID`, `WECHAT_APPID`, `WECHAT_API_KEY`, `WECHAT_NOTIFY_URL`, the
/// certificates directory, ...; see `purrify_wechatpay::load`), read at start.
#[derive(clap::Args, Debug, Clone)]
pub struct PaymentConfig {
    /// Seconds an order can be paid (its WeChat `time_expire`); the reconciler closes it after.
    #[arg(long, env = "PURRIFY_PAY_ORDER_TTL_SECONDS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub order_ttl_seconds: u64,
    /// Seconds an order or refund may stay unsettled before the reconciler asks WeChat.
    #[arg(long, env = "PURRIFY_PAY_RECONCILE_AFTER_SECONDS", default_value_t = 120)]
    pub reconcile_after_seconds: u64,
    /// Seconds between reconciler rounds.
    #[arg(long, env = "PURRIFY_PAY_RECONCILE_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_interval_seconds: u64,
    /// The merchant's settings when given by an embedding program or a test; `None` reads
    /// them from the environment at start.
    #[arg(skip)]
    pub wechat_pay: Option<purrify_wechatpay::Settings>,
}

/// Operator commands; without one the gateway serves.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Account administration against the configured database.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AdminCommand {
    /// Creates an account (the first admin, typically). The password is read from standard
    /// input, never from the command line, where other users could see it.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, value_enum, default_value = "admin")]
        role: RoleArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    User,
    Admin,
}

impl Config {
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| {
            let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(8080);
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
        })
    }

    /// Kubernetes mode runs as several replicas: state they must agree on (the access-token
    /// signing key) has to come from configuration, never be generated by one of them.
    pub fn replicated(&self) -> bool {
        self.backend == Backend::Kubernetes
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}/purrify.db", self.data_dir.display()))
    }

    pub fn storage_root(&self) -> String {
        self.storage.clone().unwrap_or_else(|| {
            let dir = std::path::absolute(self.data_dir.join("storage")).unwrap_or_else(|_| self.data_dir.join("storage"));
            format!("file://{}", dir.display())
        })
    }

    /// A configuration with every default, for tests and embedding.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        let mut c = Config::parse_from(["purrify-gateway"]);
        c.data_dir = data_dir;
        c
    }
}
