//! Task lifecycle (being written).
