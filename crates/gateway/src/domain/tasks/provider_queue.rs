//! The task core's side of provider tasks (`runner = 'provider'`): the provider runner
//! (`domain::generation::runner`) takes them from the database, and this is how the rest of
//! the task service reaches it: a wake-up when one is created, and the cancellation handle of
//! each one this replica is running.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct ProviderQueue {
    wake: Notify,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl ProviderQueue {
    /// A task was created or may be due: the runner looks now rather than at its next tick.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    pub async fn notified(&self) {
        self.wake.notified().await;
    }

    /// Registers a task the runner starts; the token is cancelled by [`Self::cancel`].
    pub fn track(&self, task_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.running.lock().expect("provider queue lock").insert(task_id.to_string(), token.clone());
        token
    }

    pub fn untrack(&self, task_id: &str) {
        self.running.lock().expect("provider queue lock").remove(task_id);
    }

    /// Stops the task if this replica runs it; `false` when it does not.
    pub fn cancel(&self, task_id: &str) -> bool {
        match self.running.lock().expect("provider queue lock").get(task_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// How many provider tasks this replica runs now.
    pub fn running(&self) -> usize {
        self.running.lock().expect("provider queue lock").len()
    }
}
