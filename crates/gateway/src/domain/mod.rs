//! What the gateway does, without HTTP: the task service with its two backends
//! (`tasks::standalone`: rows and an in-process dispatcher; `tasks::kubernetes`: custom
//! resources driven by the operator) and the fleet of GPU servers. Never imports axum; reaches
//! the database only through `purrify-store`.

pub mod accounts;
pub mod assistant;
pub mod audit;
pub mod callbacks;
pub mod credits;
pub mod error;
pub mod fleet;
pub mod generation;
pub mod live;
pub mod logs;
pub mod monitoring;
pub mod outbound;
pub mod payments;
pub mod postcards;
pub mod providers;
pub mod quotas;
pub mod recharge;
pub mod square;
pub mod storage_deletions;
pub mod tasks;
pub mod uploads;
pub mod works;

pub use error::{DomainError, DomainResult};
