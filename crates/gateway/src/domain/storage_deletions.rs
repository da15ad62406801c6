//! The deletion sweeper over the `storage_deletions` queue, for every owner of stored
//! objects: deleted works and deleted uploads queue their objects in the same transaction as
//! the row change, and [`DeletionSweeper::sweep`] deletes them from storage. A failure is
//! retried with [`backoff`] (the queued row keeps its attempts and last error); an object is
//! dropped from the queue only once it is gone, or when its URI is nothing this storage could
//! ever delete. The gateway sweeps on the works recorder's tick, which runs on every replica.

use std::sync::Arc;
use std::time::Duration;

use purrify_inference::storage::Storage;
use purrify_store::{Db, duration_ms, now_ms};

/// Objects deleted per sweep (the next sweep takes the rest).
const BATCH: u32 = 200;

/// Cheap to clone; clones share one database pool and storage.
#[derive(Clone)]
pub struct DeletionSweeper {
    db: Db,
    storage: Arc<Storage>,
}

impl DeletionSweeper {
    pub fn new(db: Db, storage: Arc<Storage>) -> Self {
        Self { db, storage }
    }

    /// Queues an object that no row references any more (a copy stored too late, or one a
    /// direct delete failed on), for the sweeper to delete with retries.
    pub async fn queue(&self, uri: &str, work_id: Option<&str>) -> Result<(), purrify_store::StoreError> {
        self.db.queue_deletion(uri, work_id).await
    }

    /// Deletes the objects due now; failures wait for their next attempt.
    pub async fn sweep(&self) {
        let due = match self.db.deletions_due(now_ms(), BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list objects to delete");
                return;
            }
        };
        for d in due {
            let outcome = match self.storage.delete(&d.uri).await {
                Ok(()) => self.db.deletion_done(&d.uri).await,
                // A foreign or malformed URI is nothing this storage could delete.
                Err(e) if e.is_client_error() => {
                    tracing::warn!(uri = %d.uri, error = %e, "object cannot be deleted here; dropped from the queue");
                    self.db.deletion_done(&d.uri).await
                }
                Err(e) => {
                    let attempts = d.attempts + 1;
                    let retry_at = now_ms().saturating_add(duration_ms(backoff(attempts)));
                    tracing::warn!(uri = %d.uri, attempts, error = %e, "deleting an object failed; retrying later");
                    self.db.deletion_failed(&d.uri, retry_at, &e.to_string()).await
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(uri = %d.uri, error = %e, "cannot record an object deletion");
            }
        }
    }
}

/// Exponential backoff from one second, capped at ten minutes.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(10)).min(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(600));
    }
}
