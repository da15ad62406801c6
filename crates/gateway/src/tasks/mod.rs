//! The standalone task lifecycle (DESIGN section 3): every upload is a row in the database,
//! an in-process [`Dispatcher`] hands rows to inference workers through the shared fleet
//! logic, and a [`ProgressHub`] serves their progress from memory.
//!
//! Wiring (the HTTP layer):
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use purrify_gateway::tasks::{Db, DispatchConfig, Dispatcher, NewTask, ProgressHub};
//! use purrify_inference::client::{Fleet, FleetConfig, WorkerSpec};
//!
//! let db = Db::connect("sqlite:///var/lib/purrify/gateway.db").await?;
//! let fleet = Fleet::new(FleetConfig::default())?;
//! for server in db.list_gpu_servers().await? {
//!     fleet.upsert(WorkerSpec::new(&server.url).with_name(&server.id))?;
//!     fleet.probe_worker(&server.url).await;
//! }
//! let hub = ProgressHub::default();
//! let dispatcher = Dispatcher::new(db.clone(), fleet.clone(), None, hub.clone(), DispatchConfig::default());
//! let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
//! let handle = dispatcher.spawn(async move { let _ = stop_rx.await; });
//!
//! let params = Default::default();
//! let task = dispatcher
//!     .enqueue(NewTask::new("3f2a", "file:///data/in/3f2a.jpg", "file:///data/out/3f2a.jpg", params))
//!     .await?; // durable: answer 2xx now
//! let view = hub.get_or_load(&db, &task.id).await?; // status polls
//! dispatcher.cancel(&task.id).await?;
//! let _ = stop_tx.send(());
//! handle.await?;
//! # Ok(()) }
//! ```

pub mod db;
pub mod dispatcher;
pub mod hub;
pub mod metrics;
pub mod model;

pub use db::{Db, DbError, DbKind, DbOptions, FinishedObjects, Guard, StatusCounts, migrator};
pub use dispatcher::{CancelOutcome, DispatchConfig, Dispatcher, MAX_TASK_ID_LEN, valid_task_id};
pub use hub::{HubConfig, ProgressHub, TaskView};
pub use metrics::{DispatchMetrics, DispatchStats};
pub use model::{GpuServer, NewTask, Task, TaskErrorCode, TaskFailure, TaskStatus, job_id_for, now_ms, settings};
