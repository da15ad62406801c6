//! Stopping a worker job on our side's decision (cancel, deadline, a retry elsewhere), bounded
//! so an unreachable worker never holds the caller up. Failures only cost GPU time: nobody
//! expects the job's result any more.

use std::time::Duration;

use tracing::{Instrument, debug};

use super::{ClientError, WorkerClient};

/// `DELETE`s a worker job within `bound`; failures are logged, not returned.
pub async fn cancel_job(client: &WorkerClient, job_id: &str, bound: Duration) {
    match tokio::time::timeout(bound, client.cancel(job_id)).await {
        Ok(Ok(())) | Ok(Err(ClientError::NotFound)) => {}
        Ok(Err(e)) => debug!(job_id, error = %e, "cancelling the worker job failed"),
        Err(_) => debug!(job_id, "cancelling the worker job timed out"),
    }
}

/// [`cancel_job`] in the background, in the caller's span.
pub fn spawn_cancel(client: WorkerClient, job_id: String, bound: Duration) {
    tokio::spawn(async move { cancel_job(&client, &job_id, bound).await }.in_current_span());
}
