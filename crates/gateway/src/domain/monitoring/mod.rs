//! What administrators watch: platform statistics (accounts, tasks by status, GPU servers,
//! revenue; seeds 001/002) and the GPU fleet (servers, their GPUs and running tasks, the
//! cluster's totals; seed 002). Everything is read on demand from the task service and the
//! database; nothing here keeps state of its own.

pub mod gpu;
pub mod stats;

use crate::domain::tasks::TaskService;

pub use gpu::{ClusterOverview, GpuServer, GpuServerDetail, GpuServerStatus, GpuUsage, RunningTask, ServerSource};
pub use stats::{ACTIVE_DAYS, AdminStats};

/// Cheap to build per request: it borrows the task service, which owns everything it reads.
pub struct Monitoring<'a> {
    tasks: &'a TaskService,
}

impl<'a> Monitoring<'a> {
    pub fn new(tasks: &'a TaskService) -> Self {
        Self { tasks }
    }
}
