//! Health probing: the only part of the fleet that performs I/O on its own.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::debug;

use super::WorkerClient;
use super::fleet::{Fleet, ProbeResult, lookup_key};

/// What one probing round found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub probed: usize,
    pub ready: usize,
    pub not_ready: usize,
    pub down: usize,
}

impl Fleet {
    /// Probes every worker concurrently (`/readyz` and `/v1/info`, bounded by
    /// `probe_timeout`), then records health, capacity, reported load and GPU telemetry, and
    /// feeds the breakers: a dead worker counts as a failure, a ready one closes a breaker
    /// whose cooldown is over.
    pub async fn probe_once(&self) -> ProbeSummary {
        let targets: Vec<(String, u64, WorkerClient)> = {
            let st = self.shared.lock();
            st.workers.iter().map(|(k, w)| (k.clone(), w.uid, w.client.clone())).collect()
        };
        let timeout = self.shared.config.probe_timeout;
        let results = join_all(targets.into_iter().map(|(key, uid, client)| async move {
            let result = probe(&client, timeout).await;
            (key, uid, result)
        }))
        .await;

        let mut summary = ProbeSummary { probed: results.len(), ..ProbeSummary::default() };
        for (key, uid, result) in results {
            self.count_probe(&result, &mut summary);
            self.apply_probe(&key, uid, result);
        }
        summary
    }

    /// Probes one worker now (e.g. right after adding it, so it need not wait for the next
    /// round). `None` if the endpoint is not in the fleet; otherwise whether it is healthy.
    pub async fn probe_worker(&self, endpoint: &str) -> Option<bool> {
        let key = lookup_key(endpoint);
        let (uid, client) = {
            let st = self.shared.lock();
            let w = st.workers.get(&key)?;
            (w.uid, w.client.clone())
        };
        let result = probe(&client, self.shared.config.probe_timeout).await;
        let ready = matches!(result, ProbeResult::Ready(_));
        self.count_probe(&result, &mut ProbeSummary::default());
        self.apply_probe(&key, uid, result);
        Some(ready)
    }

    /// Runs [`probe_once`](Self::probe_once) every `interval` until `shutdown` completes;
    /// a round in progress is abandoned at shutdown. Pass e.g. a `watch` receiver's
    /// `changed()` or a `CancellationToken::cancelled_owned()`.
    pub fn spawn_prober<F>(&self, interval: Duration, shutdown: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let fleet = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            // After a slow round, wait a full interval instead of probing back to back.
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    _ = ticker.tick() => {}
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    summary = fleet.probe_once() => debug!(?summary, "probe round"),
                }
            }
            debug!("prober stopped");
        })
    }

    fn count_probe(&self, result: &ProbeResult, summary: &mut ProbeSummary) {
        let c = &self.shared.counters;
        c.probes.fetch_add(1, Ordering::Relaxed);
        match result {
            ProbeResult::Ready(_) => summary.ready += 1,
            ProbeResult::NotReady(_) => summary.not_ready += 1,
            ProbeResult::Down(_) => {
                summary.down += 1;
                c.probe_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn probe(client: &WorkerClient, timeout: Duration) -> ProbeResult {
    let both = async { tokio::join!(client.readyz(), client.info()) };
    match tokio::time::timeout(timeout, both).await {
        Err(_) => ProbeResult::Down(format!("probe timed out after {timeout:?}")),
        Ok((Err(e), _)) => ProbeResult::Down(e.to_string()),
        Ok((Ok(false), info)) => ProbeResult::NotReady(info.ok()),
        // The two calls race a worker finishing warm-up; the next round settles it.
        Ok((Ok(true), Ok(info))) if !info.ready => ProbeResult::NotReady(Some(info)),
        Ok((Ok(true), Ok(info))) => ProbeResult::Ready(info),
        Ok((Ok(true), Err(e))) => ProbeResult::Down(format!("/v1/info: {e}")),
    }
}
