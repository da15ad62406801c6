//! Cleaning up deleted works: their objects are deleted by the shared
//! [`DeletionSweeper`](crate::domain::storage_deletions::DeletionSweeper) (retries with
//! backoff), and a deleted work's row is purged once its objects are gone and its task is out
//! of the recorder's reach. The work itself was hidden when it was deleted, so nothing
//! half-deleted is shown.

use purrify_store::{duration_ms, now_ms};

use super::WorkService;

impl WorkService {
    pub(super) async fn sweep_deletions(&self) {
        self.deletions.sweep().await;
        let settled_before = now_ms().saturating_sub(duration_ms(self.settings.start_catch_up));
        match self.db.purge_deleted_works(settled_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "deleted works purged"),
            Err(e) => tracing::warn!(error = %e, "cannot purge deleted works"),
        }
    }
}
