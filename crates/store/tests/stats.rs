//! Admin statistics on SQLite and PostgreSQL: accounts (total, active by login or by task,
//! new), tasks created in a period, and order revenue net of successful refunds only.

use std::time::Duration;

use purrify_api::EnhanceParams;
use purrify_store::testing::{TestDb, create_user};
use purrify_store::{BeginRefund, Db, NewOrder, NewTask, Revenue, SettledRefund, UserCounts, now_ms};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

async fn task_of(db: &Db, id: &str, user: &str, created_at: i64) {
    let mut t = NewTask::new(id, "file:///in", "file:///out", EnhanceParams::default());
    t.user_id = Some(user.into());
    db.insert_task_at(&t, Duration::from_secs(300), created_at).await.unwrap();
}

async fn paid_order(db: &Db, no: &str, user: &str, package: &str) {
    let package = db.package(package).await.unwrap().unwrap();
    let amount = package.price_fen;
    db.create_order(&NewOrder { out_trade_no: no.into(), user_id: user.into(), package, expires_at: now_ms() + 60_000 }).await.unwrap();
    db.mark_order_paid(no, &format!("tx-{no}"), amount).await.unwrap();
}

async fn users_are_counted_by_login_task_and_creation(t: TestDb) {
    let db = &t.db;
    let start = now_ms();
    assert_eq!(db.user_counts(start - 30 * DAY_MS, start).await.unwrap(), UserCounts::default(), "an empty table");
    for id in ["login", "tasker", "dormant"] {
        create_user(db, id).await;
    }
    db.touch_login("login", None).await.unwrap();
    task_of(db, "t-recent", "tasker", now_ms()).await;
    // The dormant user's only task is older than the window: not active.
    task_of(db, "t-old", "dormant", start - 40 * DAY_MS).await;

    let counts = db.user_counts(start - 30 * DAY_MS, start).await.unwrap();
    assert_eq!(counts, UserCounts { total: 3, active: 2, new: 3 });
    // A window that starts after every login and task: nobody is active or new.
    let later = now_ms() + 1;
    assert_eq!(db.user_counts(later, later).await.unwrap(), UserCounts { total: 3, active: 0, new: 0 });
    // A window wide enough for the old task too.
    assert_eq!(db.user_counts(start - 50 * DAY_MS, later).await.unwrap().active, 3);

    assert_eq!(db.tasks_created_since(start - DAY_MS).await.unwrap(), 1);
    assert_eq!(db.tasks_created_since(0).await.unwrap(), 2);
    assert_eq!(db.tasks_created_since(later).await.unwrap(), 0);
}

async fn revenue_is_paid_orders_net_of_successful_refunds(t: TestDb) {
    let db = &t.db;
    assert_eq!(db.revenue(0).await.unwrap(), Revenue::default());
    create_user(db, "buyer").await;
    let start = now_ms();
    paid_order(db, "P000000000000000000000011", "buyer", "standard").await; // 30.00 yuan
    paid_order(db, "P000000000000000000000012", "buyer", "basic").await; // 6.00
    paid_order(db, "P000000000000000000000013", "buyer", "basic").await; // 6.00, refund fails
    // Ordered and never paid: no revenue.
    let basic = db.package("basic").await.unwrap().unwrap();
    let pending = NewOrder {
        out_trade_no: "P000000000000000000000014".into(),
        user_id: "buyer".into(),
        package: basic,
        expires_at: now_ms() + 60_000,
    };
    db.create_order(&pending).await.unwrap();

    assert!(matches!(db.begin_refund("P000000000000000000000012", "R11", "admin", None).await.unwrap(), BeginRefund::Started { .. }));
    assert!(matches!(db.begin_refund("P000000000000000000000013", "R12", "admin", None).await.unwrap(), BeginRefund::Started { .. }));
    // Still processing: not subtracted yet.
    assert_eq!(db.revenue(0).await.unwrap().net(), 4200);
    assert!(matches!(db.settle_refund("R11", true).await.unwrap(), SettledRefund::Refunded { .. }));
    assert_eq!(db.settle_refund("R12", false).await.unwrap(), SettledRefund::Failed);

    let r = db.revenue(start).await.unwrap();
    assert_eq!(r, Revenue { paid: 4200, refunded: 600, paid_since: 4200, refunded_since: 600 });
    assert_eq!((r.net(), r.net_since()), (3600, 3600));
    let later = db.revenue(now_ms() + 1).await.unwrap();
    assert_eq!((later.net(), later.paid_since, later.refunded_since), (3600, 0, 0));
}

purrify_store::on_both_databases!(users_are_counted_by_login_task_and_creation, revenue_is_paid_orders_net_of_successful_refunds);
