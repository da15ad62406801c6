//! One adapter per protocol (see [`super::adapter::Adapter`]), each tested against its fake
//! in `purrify-testkit::providers`. `http` holds what they share: the timeout, error
//! classification, `Retry-After` and client-safe messages.

mod http;
pub mod openai;
pub mod runway;
mod sse;
pub mod stability;
pub mod webhook;

use std::sync::Arc;

use super::adapter::{Adapter, Protocol};

/// The adapter for a protocol; `None` for the built-in `purrify`, which runs on the engine
/// backend instead of an outside call. `http` should not follow redirects to other hosts
/// with the key (reqwest drops `Authorization` on cross-host redirects) and should have no
/// overall timeout of its own: each call sets the endpoint's.
pub fn for_protocol(protocol: Protocol, http: reqwest::Client) -> Option<Arc<dyn Adapter>> {
    match protocol {
        Protocol::Purrify => None,
        Protocol::Openai => Some(Arc::new(openai::OpenAi::new(http))),
        Protocol::Stability => Some(Arc::new(stability::Stability::new(http))),
        Protocol::Runway => Some(Arc::new(runway::Runway::new(http))),
        Protocol::Webhook => Some(Arc::new(webhook::Webhook::new(http))),
    }
}
