//! Outside AI services (DESIGN section 13): providers an admin configures, one adapter per
//! protocol, and the call policy around every call.

pub mod adapter;
pub mod adapters;
pub mod keys;
pub mod policy;
