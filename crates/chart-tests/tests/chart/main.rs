//! The chart, rendered across the values matrix and checked without running anything: typed
//! manifests, pod security, wiring between objects, RBAC and CRDs from their one source, and
//! the values schema's refusals.

#[path = "../support/mod.rs"]
mod support;

mod objects;
mod providers;
mod render;
mod schema;
mod sources;
