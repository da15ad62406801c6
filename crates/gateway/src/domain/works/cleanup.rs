//! The deletion sweeper: objects of deleted works are removed from storage, a failure is
//! retried with backoff (the row stays, with its attempts and last error), and a deleted
//! work's row is purged once its objects are gone and its task is out of the recorder's
//! reach. The work itself was hidden when it was deleted, so nothing half-deleted is shown.

use purrify_store::{duration_ms, now_ms};

use super::{WorkService, backoff};

/// Objects deleted per sweep (the next sweep takes the rest).
const BATCH: u32 = 200;

impl WorkService {
    pub(super) async fn sweep_deletions(&self) {
        let now = now_ms();
        let due = match self.db.deletions_due(now, BATCH).await {
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
        let settled_before = now.saturating_sub(duration_ms(self.settings.start_catch_up));
        match self.db.purge_deleted_works(settled_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "deleted works purged"),
            Err(e) => tracing::warn!(error = %e, "cannot purge deleted works"),
        }
    }
}
