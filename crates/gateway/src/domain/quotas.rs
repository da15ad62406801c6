//! Quotas (seed 003's 限流说明, DESIGN section 12): free users may start 10 image and 3 video
//! generations a day and make 100 API calls an hour; VIP users 100, 20 and 1000. Counted in
//! the database (one conditional upsert per use, `purrify_store::quotas`), so every replica
//! shares the counts and concurrent requests never exceed a limit. Windows are UTC days and
//! hours; a spent quota is refused with the seconds until its window ends.
//!
//! Which limits apply depends on the user's VIP state, cached here for at most
//! [`PLAN_STALENESS`] so counting an API call costs the upsert and nothing else. The expiry is
//! cached with the level and compared on every use, so a VIP period ends on time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use purrify_store::{Consumed, Db, VipState, Window};

use crate::domain::accounts::Principal;
use crate::domain::{DomainError, DomainResult};

/// How stale a cached VIP state may be: a level granted on another replica applies within it.
pub const PLAN_STALENESS: Duration = Duration::from_secs(30);
const MAX_CACHED: usize = 100_000;

/// One plan's limits. A generation limit of 0 allows none; an API-call limit of 0 turns the
/// hourly count off for the plan (nothing is counted or refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub images_per_day: i64,
    pub videos_per_day: i64,
    pub api_calls_per_hour: i64,
}

impl Limits {
    /// Seed 003's free plan.
    pub const FREE: Limits = Limits { images_per_day: 10, videos_per_day: 3, api_calls_per_hour: 100 };
    /// Seed 003's VIP plan.
    pub const VIP: Limits = Limits { images_per_day: 100, videos_per_day: 20, api_calls_per_hour: 1000 };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaSettings {
    pub free: Limits,
    pub vip: Limits,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        Self { free: Limits::FREE, vip: Limits::VIP }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Free,
    Vip,
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Vip => "vip",
        }
    }
}

/// What a generation endpoint starts, each with its own daily quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    Image,
    Video,
}

/// The three counters and where each is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Image,
    Video,
    Api,
}

impl Counter {
    /// The store's bucket: what is counted and the window's suffix.
    fn bucket(self) -> &'static str {
        match self {
            Self::Image => "image:day",
            Self::Video => "video:day",
            Self::Api => "api:hour",
        }
    }

    fn window(self) -> Window {
        match self {
            Self::Image | Self::Video => Window::Day,
            Self::Api => Window::Hour,
        }
    }

    fn limit(self, limits: &Limits) -> i64 {
        match self {
            Self::Image => limits.images_per_day,
            Self::Video => limits.videos_per_day,
            Self::Api => limits.api_calls_per_hour,
        }
    }

    fn refusal(self, limit: i64) -> String {
        match self {
            Self::Image => format!("daily image generation quota used up ({limit} a day)"),
            Self::Video => format!("daily video generation quota used up ({limit} a day)"),
            Self::Api => format!("hourly API call quota used up ({limit} an hour)"),
        }
    }
}

impl From<Generation> for Counter {
    fn from(g: Generation) -> Self {
        match g {
            Generation::Image => Self::Image,
            Generation::Video => Self::Video,
        }
    }
}

/// One counter as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: i64,
    pub used: i64,
    pub remaining: i64,
    /// When the window ends and the count starts again (unix milliseconds).
    pub reset_at: i64,
}

impl Allowance {
    fn new(limit: i64, used: i64, reset_at: i64) -> Self {
        Self { limit, used, remaining: (limit - used).max(0), reset_at }
    }
}

/// A user's plan and all three counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaReport {
    pub plan: Plan,
    pub image: Allowance,
    pub video: Allowance,
    pub api: Allowance,
}

#[derive(Clone)]
pub struct QuotaService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    settings: QuotaSettings,
    vip: Mutex<HashMap<String, (VipState, Instant)>>,
    /// The UTC hour of the last purge of old windows (see [`QuotaService::housekeeping`]).
    purged_hour: AtomicI64,
}

impl QuotaService {
    pub fn new(db: Db, settings: QuotaSettings) -> Self {
        let purged_hour = AtomicI64::new(Window::Hour.start(purrify_store::now_ms()));
        Self { inner: Arc::new(Inner { db, settings, vip: Mutex::new(HashMap::new()), purged_hour }) }
    }

    pub fn settings(&self) -> QuotaSettings {
        self.inner.settings
    }

    /// The user's plan at `now` (unix milliseconds).
    pub async fn plan_at(&self, user_id: &str, now: i64) -> DomainResult<Plan> {
        let vip = self.vip_state(user_id).await?;
        Ok(if vip.active_at(now) { Plan::Vip } else { Plan::Free })
    }

    fn limits(&self, plan: Plan) -> &Limits {
        match plan {
            Plan::Free => &self.inner.settings.free,
            Plan::Vip => &self.inner.settings.vip,
        }
    }

    /// Counts one API call. `None` when the call is not counted: administrators (the admin
    /// panel polls; operating the service is not API usage) and plans whose hourly limit is
    /// 0. A spent quota is [`DomainError::RateLimited`] until the hour ends.
    pub async fn check_api_call(&self, user: &Principal) -> DomainResult<Option<Allowance>> {
        self.check_api_call_at(user, purrify_store::now_ms()).await
    }

    pub async fn check_api_call_at(&self, user: &Principal, now: i64) -> DomainResult<Option<Allowance>> {
        if user.is_admin() {
            return Ok(None);
        }
        let plan = self.plan_at(&user.user_id, now).await?;
        if Counter::Api.limit(self.limits(plan)) <= 0 {
            return Ok(None);
        }
        self.count(&user.user_id, plan, Counter::Api, now).await.map(Some)
    }

    /// The hourly API-call limit that applies to `user` now (0: not counted).
    pub async fn api_limit(&self, user: &Principal) -> DomainResult<i64> {
        if user.is_admin() {
            return Ok(0);
        }
        let plan = self.plan_at(&user.user_id, purrify_store::now_ms()).await?;
        Ok(Counter::Api.limit(self.limits(plan)))
    }

    /// Counts one generation of `kind` against the user's daily quota, before the generation
    /// starts; refused with [`DomainError::RateLimited`] until midnight UTC once it is spent.
    /// Administrators are counted like everyone, by their VIP state: a generation costs a
    /// provider call whoever asks for it.
    pub async fn consume(&self, user: &Principal, kind: Generation) -> DomainResult<Allowance> {
        self.consume_at(user, kind, purrify_store::now_ms()).await
    }

    pub async fn consume_at(&self, user: &Principal, kind: Generation, now: i64) -> DomainResult<Allowance> {
        let plan = self.plan_at(&user.user_id, now).await?;
        self.count(&user.user_id, plan, kind.into(), now).await
    }

    async fn count(&self, user_id: &str, plan: Plan, counter: Counter, now: i64) -> DomainResult<Allowance> {
        let window = counter.window();
        let limit = counter.limit(self.limits(plan));
        let reset_at = window.end(now);
        match self.inner.db.consume_quota(user_id, counter.bucket(), window.start(now), limit).await? {
            Consumed::Allowed { count } => Ok(Allowance::new(limit, count, reset_at)),
            Consumed::Exhausted { .. } => {
                tracing::info!(user_id, bucket = counter.bucket(), limit, plan = plan.as_str(), "quota spent");
                let retry_after = u64::try_from((reset_at - now + 999) / 1000).unwrap_or(1).max(1);
                Err(DomainError::RateLimited { message: counter.refusal(limit), retry_after })
            }
        }
    }

    /// Gives back a generation counted at `counted_at` by [`Self::consume`] whose request was
    /// then refused (no balance, invalid for the provider): a refused request costs nothing.
    pub async fn give_back(&self, user: &Principal, kind: Generation, counted_at: i64) -> DomainResult<()> {
        let counter: Counter = kind.into();
        self.inner.db.return_quota(&user.user_id, counter.bucket(), counter.window().start(counted_at)).await?;
        Ok(())
    }

    /// The user's plan and counters now.
    pub async fn report(&self, user: &Principal) -> DomainResult<QuotaReport> {
        self.report_at(user, purrify_store::now_ms()).await
    }

    pub async fn report_at(&self, user: &Principal, now: i64) -> DomainResult<QuotaReport> {
        let plan = self.plan_at(&user.user_id, now).await?;
        let usage = self.inner.db.quota_usage(&user.user_id, now).await?;
        let limits = self.limits(plan);
        let allowance = |c: Counter| {
            let used = usage.iter().find(|u| u.bucket == c.bucket()).map_or(0, |u| u.count);
            Allowance::new(c.limit(limits), used, c.window().end(now))
        };
        Ok(QuotaReport { plan, image: allowance(Counter::Image), video: allowance(Counter::Video), api: allowance(Counter::Api) })
    }

    /// Periodic upkeep: forgets stale cached VIP states (memory stays bounded) and, once an
    /// hour, deletes the windows that started before yesterday. Counters only go stale when a
    /// window ends, so a purge more often than hourly would find nothing new; the first one
    /// comes at the first full hour after start, which keeps start-up (and every short-lived
    /// test stack) free of it.
    pub async fn housekeeping(&self) {
        let now = purrify_store::now_ms();
        let hour = Window::Hour.start(now);
        if self.inner.purged_hour.swap(hour, Ordering::Relaxed) != hour
            && let Err(e) = self.inner.db.purge_quota_windows(Window::Day.start(now) - Window::Day.millis()).await
        {
            tracing::warn!(error = %e, "cannot purge old quota windows");
        }
        let at = Instant::now();
        self.inner.vip.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (_, t)| at.saturating_duration_since(*t) < PLAN_STALENESS);
    }

    async fn vip_state(&self, user_id: &str) -> DomainResult<VipState> {
        let at = Instant::now();
        {
            let map = self.inner.vip.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((state, _)) = map.get(user_id).filter(|(_, t)| at.saturating_duration_since(*t) < PLAN_STALENESS) {
                return Ok(*state);
            }
        }
        let state =
            self.inner.db.vip_state(user_id).await?.ok_or_else(|| DomainError::Unauthorized("the account no longer exists".into()))?;
        let mut map = self.inner.vip.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED && !map.contains_key(user_id) {
            map.retain(|_, (_, t)| at.saturating_duration_since(*t) < PLAN_STALENESS);
            if map.len() >= MAX_CACHED {
                map.clear();
            }
        }
        map.insert(user_id.to_owned(), (state, at));
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_limits() {
        let s = QuotaSettings::default();
        assert_eq!((s.free.images_per_day, s.free.videos_per_day, s.free.api_calls_per_hour), (10, 3, 100));
        assert_eq!((s.vip.images_per_day, s.vip.videos_per_day, s.vip.api_calls_per_hour), (100, 20, 1000));
    }

    #[test]
    fn counters_are_kept_in_windows_their_buckets_name() {
        for c in [Counter::Image, Counter::Video, Counter::Api] {
            assert_eq!(Window::of_bucket(c.bucket()), Some(c.window()), "{c:?}");
        }
        assert_eq!(Allowance::new(3, 5, 0).remaining, 0, "a lowered limit never reports negative room");
    }
}
