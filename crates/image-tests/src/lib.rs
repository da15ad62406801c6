//! Tests of the container images; see `tests/containers.rs`.
