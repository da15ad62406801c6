//! Outside AI services (DESIGN section 13): providers an admin configures, one adapter per
//! protocol, and the call policy around every call.

pub mod adapter;
pub mod adapters;
pub mod catalog;
pub mod keys;
pub mod policy;
pub mod service;

pub use adapter::{ChatMessage, Protocol, ProviderError};
pub use catalog::{BUILTIN_ID, Kind, Provider};
pub use policy::{BreakerState, PolicySettings};
pub use service::{Accepted, ChainError, ChatReply, Choice, CustomProvider, ProviderService, ProviderSettings, ProviderUpdate, Selection};
