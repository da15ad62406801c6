//! Tests of the container images; see `tests/images/main.rs`.
