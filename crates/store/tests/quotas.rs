//! Quota counters on SQLite and PostgreSQL: a window counts up to its limit and no further,
//! buckets, users and windows count apart, a new window starts from zero, usage reports only
//! current windows, old windows are purged, and 100 concurrent consumers of a limit of 10 get
//! exactly 10 uses.

use purrify_store::testing::TestDb;
use purrify_store::{Consumed, Db, QuotaUsage, VipState, Window};

async fn user(db: &Db, id: &str) {
    purrify_store::testing::create_user(db, id).await;
}

/// 2024-01-26T13:45:10.500Z: a fixed instant, so no test depends on the wall clock.
const NOW: i64 = 1_706_276_710_500;
const HOUR: i64 = 3_600_000;

async fn counts_to_the_limit_and_no_further(t: TestDb) {
    let db = &t.db;
    user(db, "alice").await;
    user(db, "bob").await;
    let day = Window::Day.start(NOW);
    for n in 1..=3 {
        assert_eq!(db.consume_quota("alice", "video:day", day, 3).await.unwrap(), Consumed::Allowed { count: n });
    }
    for _ in 0..2 {
        assert_eq!(
            db.consume_quota("alice", "video:day", day, 3).await.unwrap(),
            Consumed::Exhausted { count: 3 },
            "refusals count nothing"
        );
    }
    // Other buckets and other users have counters of their own.
    assert_eq!(db.consume_quota("alice", "image:day", day, 3).await.unwrap(), Consumed::Allowed { count: 1 });
    assert_eq!(db.consume_quota("bob", "video:day", day, 3).await.unwrap(), Consumed::Allowed { count: 1 });
    // A raised limit (the user became VIP) counts on from where the window stands.
    assert_eq!(db.consume_quota("alice", "video:day", day, 20).await.unwrap(), Consumed::Allowed { count: 4 });
    // A lowered one refuses without touching the count.
    assert_eq!(db.consume_quota("alice", "video:day", day, 2).await.unwrap(), Consumed::Exhausted { count: 4 });
    // A limit of 0 allows nothing and writes nothing.
    assert_eq!(db.consume_quota("bob", "image:day", day, 0).await.unwrap(), Consumed::Exhausted { count: 0 });
    assert_eq!(db.quota_count("bob", "image:day", day).await.unwrap(), 0);
    assert_eq!(db.quota_count("alice", "video:day", day).await.unwrap(), 4);
}

async fn a_new_window_starts_from_zero(t: TestDb) {
    let db = &t.db;
    user(db, "carol").await;
    let this_hour = Window::Hour.start(NOW);
    for _ in 0..2 {
        assert!(db.consume_quota("carol", "api:hour", this_hour, 2).await.unwrap().allowed());
    }
    assert!(!db.consume_quota("carol", "api:hour", this_hour, 2).await.unwrap().allowed());
    // The last millisecond of the hour is still the spent window; the next one is new.
    let last_ms = Window::Hour.end(NOW) - 1;
    assert_eq!(Window::Hour.start(last_ms), this_hour);
    let next_hour = Window::Hour.start(Window::Hour.end(NOW));
    assert_eq!(next_hour, this_hour + HOUR);
    assert_eq!(db.consume_quota("carol", "api:hour", next_hour, 2).await.unwrap(), Consumed::Allowed { count: 1 });
    assert_eq!(db.quota_count("carol", "api:hour", this_hour).await.unwrap(), 2, "the old window keeps its count");
}

async fn usage_reports_current_windows_and_purge_drops_old_ones(t: TestDb) {
    let db = &t.db;
    user(db, "dave").await;
    let (hour, day) = (Window::Hour.start(NOW), Window::Day.start(NOW));
    let yesterday = day - Window::Day.millis();
    // An earlier hour of today, yesterday's day window, and today's windows.
    db.consume_quota("dave", "api:hour", hour - HOUR, 10).await.unwrap();
    db.consume_quota("dave", "image:day", yesterday, 10).await.unwrap();
    for _ in 0..3 {
        db.consume_quota("dave", "api:hour", hour, 10).await.unwrap();
    }
    db.consume_quota("dave", "image:day", day, 10).await.unwrap();
    let usage = db.quota_usage("dave", NOW).await.unwrap();
    assert_eq!(
        usage,
        vec![
            QuotaUsage { bucket: "api:hour".into(), window_start: hour, count: 3 },
            QuotaUsage { bucket: "image:day".into(), window_start: day, count: 1 },
        ]
    );
    // The next hour: the API count is over, today's image count is not.
    let later = db.quota_usage("dave", NOW + HOUR).await.unwrap();
    assert_eq!(later, vec![QuotaUsage { bucket: "image:day".into(), window_start: day, count: 1 }]);
    assert!(db.quota_usage("nobody", NOW).await.unwrap().is_empty());

    assert_eq!(db.purge_quota_windows(day).await.unwrap(), 1, "yesterday's window");
    assert_eq!(db.quota_count("dave", "image:day", yesterday).await.unwrap(), 0);
    assert_eq!(db.quota_usage("dave", NOW).await.unwrap(), usage, "current windows survive the purge");
}

async fn a_hundred_concurrent_consumers_get_exactly_the_limit(t: TestDb) {
    let db = t.db.clone();
    user(&db, "erin").await;
    let day = Window::Day.start(NOW);
    let racers: Vec<_> = (0..100)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.consume_quota("erin", "image:day", day, 10).await.unwrap() })
        })
        .collect();
    let mut allowed: Vec<i64> = Vec::new();
    for r in futures::future::join_all(racers).await {
        match r.unwrap() {
            Consumed::Allowed { count } => allowed.push(count),
            Consumed::Exhausted { count } => assert_eq!(count, 10, "refused only once the window is full"),
        }
    }
    allowed.sort_unstable();
    assert_eq!(allowed, (1..=10).collect::<Vec<_>>(), "each count handed out once");
    assert_eq!(db.quota_count("erin", "image:day", day).await.unwrap(), 10);
}

async fn vip_state_reads_and_sets(t: TestDb) {
    let db = &t.db;
    user(db, "frank").await;
    assert_eq!(db.vip_state("frank").await.unwrap(), Some(VipState { level: 0, expires_at: None }));
    let vip = VipState { level: 2, expires_at: Some(NOW + HOUR) };
    assert!(db.set_vip("frank", vip).await.unwrap());
    assert_eq!(db.vip_state("frank").await.unwrap(), Some(vip));
    assert_eq!(db.user("frank").await.unwrap().unwrap().vip_level, 2, "the users row is what changed");
    assert!(!db.set_vip("nobody", vip).await.unwrap());
    assert_eq!(db.vip_state("nobody").await.unwrap(), None);
    assert!(db.set_vip("frank", VipState { level: -1, expires_at: None }).await.is_err());
}

purrify_store::on_both_databases!(
    counts_to_the_limit_and_no_further,
    a_new_window_starts_from_zero,
    usage_reports_current_windows_and_purge_drops_old_ones,
    a_hundred_concurrent_consumers_get_exactly_the_limit,
    vip_state_reads_and_sets,
);
