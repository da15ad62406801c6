//! One module per resource, each exposing `router() -> Router<AppState>`.

pub mod docs;
pub mod enhance;
pub mod system;
pub mod tasks;
pub mod webhook;
