//! Purrify's gateway: the public REST API the mini-program speaks (seed 000), turning each
//! upload into a task and reporting its status back.

pub mod tasks;
