//! One adapter per protocol (see [`super::adapter::Adapter`]).

use std::sync::Arc;

use super::adapter::{Adapter, Protocol};

/// The adapter for a protocol; `None` for the built-in `purrify`, which runs on the engine
/// backend instead of an outside call.
pub fn for_protocol(protocol: Protocol, http: reqwest::Client) -> Option<Arc<dyn Adapter>> {
    let _ = http;
    match protocol {
        Protocol::Purrify => None,
        // Filled in by the adapters' files.
        Protocol::Openai | Protocol::Stability | Protocol::Runway | Protocol::Webhook => None,
    }
}
