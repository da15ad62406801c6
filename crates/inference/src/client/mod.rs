//! The typed client of the worker HTTP API (DESIGN section 4) and the fleet logic shared by
//! the gateway's standalone dispatcher and the Kubernetes operator.
//!
//! Layout follows "pure state, thin I/O": [`CircuitBreaker`], the least-loaded choice and the
//! SSE parser are plain values driven by the caller (time is injected), so they are tested
//! without sockets; [`WorkerClient`] and the prober are the only parts that touch the network.
//!
//! Typical dispatcher loop:
//!
//! ```no_run
//! # async fn demo(fleet: purrify_inference::client::Fleet,
//! #               req: purrify_inference::protocol::JobRequest) {
//! let mut tried = Vec::new();
//! while let Some(mut lease) = fleet.pick_excluding(&tried) {
//!     let submitted = lease.client().submit(&req).await;
//!     lease.record(&submitted);
//!     match submitted {
//!         Ok(_) => { /* follow lease.client().wait(..), keep the lease until the job ends */ break }
//!         Err(e) if e.retry_elsewhere() => tried.push(lease.endpoint().to_owned()),
//!         Err(_) => break, // bad input: no other worker will do better
//!     }
//! }
//! # }
//! ```

mod breaker;
mod cancel;
mod error;
mod fleet;
pub mod policy;
mod prober;
mod sse;
mod time;
mod worker;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
pub use cancel::{cancel_job, spawn_cancel};
pub use error::{ClientError, ConfigError};
pub use fleet::{
    Clock, Fleet, FleetConfig, FleetCounters, FleetSnapshot, Lease, ManualClock, SystemClock, WorkerSnapshot, WorkerSpec,
    normalize_endpoint,
};
pub use prober::ProbeSummary;
pub use sse::{SseEvent, SseParser};
pub use time::{format_rfc3339, parse_rfc3339};
pub use worker::{ClientConfig, EventStream, JobOutcome, REQUEST_ID_HEADER, WorkerClient};
