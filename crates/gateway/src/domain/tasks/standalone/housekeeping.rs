//! Retention: finished tasks older than the configured period are deleted, their storage
//! objects first, so nothing half-deleted is left (a failed object delete keeps its row for
//! the next round).

use purrify_store::{StoreError, duration_ms, now_ms};
use tracing::{debug, info, warn};

use super::Inner;

impl Inner {
    pub(super) async fn housekeep(&self) -> Result<u64, StoreError> {
        let Some(retention) = self.config.retention else {
            return Ok(0);
        };
        let Some(storage) = self.storage.as_ref() else {
            let n = self.db.delete_finished_older_than(retention).await?;
            if n > 0 {
                info!(deleted = n, "housekeeping removed finished tasks");
            }
            return Ok(n);
        };
        let cutoff = now_ms().saturating_sub(duration_ms(retention));
        let mut deleted = 0;
        loop {
            let batch = self.db.finished_before(cutoff, 500).await?;
            let mut stuck = false;
            for objects in &batch {
                let mut objects_gone = true;
                for uri in [&objects.input_uri, &objects.output_uri].into_iter().chain(&objects.extra_uris) {
                    match storage.delete(uri).await {
                        Ok(()) => {}
                        // A foreign or malformed URI is nothing we could delete anyway.
                        Err(e) if e.is_client_error() => debug!(uri, error = %e, "object skipped"),
                        Err(e) => {
                            warn!(uri, error = %e, "deleting a task object failed; row kept");
                            objects_gone = false;
                        }
                    }
                }
                if !objects_gone {
                    stuck = true;
                    continue;
                }
                if self.db.delete_finished_task(&objects.id).await? {
                    self.hub.remove(&objects.id);
                    deleted += 1;
                }
            }
            if stuck || batch.len() < 500 {
                break;
            }
        }
        if deleted > 0 {
            info!(deleted, "housekeeping removed finished tasks and their objects");
        }
        Ok(deleted)
    }
}
