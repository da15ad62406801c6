//! Play counts without a database write per view: plays are added up in memory and a flusher
//! writes each post's accumulated plays with one `UPDATE` every few seconds, and once more at
//! shutdown. Several replicas each add their own deltas, so nothing is double counted. A play
//! counts once per client address and post within [`SquareSettings::play_window`]: reloading
//! a video does not inflate its count.
//!
//! What a crash loses is at most one flush interval of plays; a failed write puts its plays
//! back for the next flush.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{SquareService, SquareSettings};

/// Plays not yet in the database, and who played what recently.
pub(super) struct PlayCounter {
    window: Duration,
    max_recent: usize,
    state: Mutex<Counts>,
    /// One flush at a time: the shutdown's final flush waits for one under way, so a flush is
    /// never cut off holding plays it took.
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Counts {
    pending: HashMap<String, u64>,
    recent: HashMap<(IpAddr, String), Instant>,
}

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Posts whose plays were written (one statement each).
    pub posts: usize,
    pub plays: u64,
    /// Plays of posts no longer on the square, dropped.
    pub dropped: u64,
    /// Plays put back because the write failed.
    pub retained: u64,
}

impl PlayCounter {
    pub(super) fn new(settings: &SquareSettings) -> Self {
        Self {
            window: settings.play_window,
            max_recent: settings.max_recent_plays,
            state: Mutex::new(Counts::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a play of `post` by `client` at `now`, unless the client played it within the
    /// window. When the memory of recent plays is full, plays are counted without it.
    pub(super) fn record(&self, post: &str, client: IpAddr, now: Instant) -> bool {
        let mut c = self.counts();
        let key = (client, post.to_owned());
        if c.recent.get(&key).is_some_and(|at| now.saturating_duration_since(*at) < self.window) {
            return false;
        }
        if c.recent.len() < self.max_recent || c.recent.contains_key(&key) {
            c.recent.insert(key, now);
        }
        *c.pending.entry(post.to_owned()).or_default() += 1;
        true
    }

    /// Plays of `post` not written yet.
    pub(super) fn pending(&self, post: &str) -> u64 {
        self.counts().pending.get(post).copied().unwrap_or(0)
    }

    /// Forgets plays older than the window (they no longer suppress anything).
    fn forget_before(&self, now: Instant) {
        let window = self.window;
        self.counts().recent.retain(|_, at| now.saturating_duration_since(*at) < window);
    }

    fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut self.counts().pending)
    }

    fn put_back(&self, post: String, plays: u64) {
        *self.counts().pending.entry(post).or_default() += plays;
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.counts().recent.len()
    }
}

impl SquareService {
    /// Writes the plays counted so far, one `UPDATE` per post. The flusher calls it every
    /// [`SquareSettings::flush_interval`] and at shutdown; tests call it instead of waiting.
    pub async fn flush_now(&self) -> Flushed {
        let counter = &self.plays;
        let _one_at_a_time = counter.flushing.lock().await;
        counter.forget_before(Instant::now());
        let mut done = Flushed::default();
        for (post, plays) in counter.take() {
            match self.db.add_plays(&post, plays).await {
                Ok(true) => {
                    done.posts += 1;
                    done.plays += plays;
                }
                Ok(false) => done.dropped += plays,
                Err(e) => {
                    tracing::warn!(post = %post, plays, error = %e, "cannot write plays; keeping them for the next flush");
                    done.retained += plays;
                    counter.put_back(post, plays);
                }
            }
        }
        if done != Flushed::default() {
            tracing::debug!(
                posts = done.posts,
                plays = done.plays,
                dropped = done.dropped,
                retained = done.retained,
                "square plays flushed"
            );
        }
        done
    }

    /// The flusher: [`flush_now`](Self::flush_now) on every interval until `stop` changes,
    /// then once more.
    pub fn spawn_flusher(&self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.settings.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        this.flush_now().await;
                    }
                    _ = stop.changed() => break,
                }
            }
            let last = this.flush_now().await;
            tracing::info!(posts = last.posts, plays = last.plays, retained = last.retained, "square plays flushed at shutdown");
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(max_recent: usize) -> PlayCounter {
        PlayCounter::new(&SquareSettings {
            play_window: Duration::from_secs(60),
            max_recent_plays: max_recent,
            ..SquareSettings::default()
        })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_play_counts_once_per_address_and_post_within_the_window() {
        let c = counter(100);
        let t0 = Instant::now();
        assert!(c.record("a", ip(1), t0));
        assert!(!c.record("a", ip(1), t0 + Duration::from_secs(59)), "a reload within the window");
        assert!(c.record("a", ip(2), t0), "another address");
        assert!(c.record("b", ip(1), t0), "another post");
        assert!(c.record("a", ip(1), t0 + Duration::from_secs(60)), "after the window");
        assert_eq!((c.pending("a"), c.pending("b"), c.pending("c")), (3, 1, 0));
        c.forget_before(t0 + Duration::from_secs(100));
        assert_eq!(c.remembered(), 1, "only the play at 60 s is within the window at 100 s");
        let taken = c.take();
        assert_eq!((taken["a"], taken["b"], c.pending("a")), (3, 1, 0));
        c.put_back("a".into(), 3);
        assert!(c.record("a", ip(3), t0));
        assert_eq!(c.pending("a"), 4, "a failed write's plays join the new ones");
    }

    #[test]
    fn a_full_memory_still_counts_but_remembers_no_more() {
        let c = counter(2);
        let t0 = Instant::now();
        for i in 1..=4 {
            assert!(c.record("a", ip(i), t0));
        }
        assert_eq!(c.remembered(), 2);
        assert!(!c.record("a", ip(1), t0), "remembered addresses are still suppressed");
        assert!(c.record("a", ip(4), t0), "forgotten ones count again");
        assert_eq!(c.pending("a"), 5);
    }
}
