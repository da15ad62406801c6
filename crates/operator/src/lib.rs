//! Purrify's operator: reconciles `GpuPool`s into inference Deployments and worker health,
//! and drives every `EnhanceTask` onto a healthy worker.
//!
//! Layout: `pool/` (GpuPool controller: pure builders of the desired objects, status
//! computation, worker probing), `task/` (EnhanceTask controller: scheduling, following jobs,
//! retries, deadlines, TTL, progress stream), `registry.rs` (the pools' worker fleets, shared
//! by both controllers), `context.rs`, `leader.rs` (Lease-based leader election),
//! `metrics.rs`, `cli.rs`.

pub mod cli;
pub mod context;
pub mod leader;
pub mod metrics;
pub mod pool;
pub mod registry;
pub mod task;
