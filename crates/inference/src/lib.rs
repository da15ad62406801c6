//! Purrify's inference crate: the enhancement engine (ONNX Runtime through `ort`), the worker
//! HTTP server that runs it, and the typed client plus fleet logic that dispatchers use.
//!
//! Features: `client` (protocol, client, fleet; no ONNX Runtime) and `engine` (everything).

pub mod cache;
pub mod protocol;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "engine")]
pub mod cli;
#[cfg(feature = "engine")]
pub mod pipeline;
#[cfg(feature = "engine")]
pub mod runtime;
#[cfg(feature = "engine")]
pub mod server;
#[cfg(feature = "storage")]
pub mod storage;
