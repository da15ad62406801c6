//! Orders and refunds on SQLite and PostgreSQL: the seeded packages, an order credited
//! exactly once however many deliveries race, a wrong amount refused without writing, and the
//! refund policy (refused up front when the balance no longer covers the credits; at
//! settlement what is left is taken, never below zero; a failed refund makes the order paid
//! again).

use purrify_store::testing::TestDb;
use purrify_store::{BeginRefund, Db, EntryKind, MarkPaid, NewOrder, OrderStatus, PageRequest, SettledRefund, now_ms};

async fn user(db: &Db, id: &str) {
    purrify_store::testing::create_user(db, id).await;
}

async fn balance(db: &Db, user: &str) -> i64 {
    db.user(user).await.unwrap().unwrap().balance
}

async fn order(db: &Db, no: &str, user: &str, package: &str) {
    let package = db.package(package).await.unwrap().unwrap();
    let new = NewOrder { out_trade_no: no.into(), user_id: user.into(), package, expires_at: now_ms() + 60_000 };
    db.create_order(&new).await.unwrap();
}

async fn packages_are_seeded_and_orders_credit_once(t: TestDb) {
    let db = &t.db;
    let packages = db.packages(true).await.unwrap();
    let prices: Vec<(i64, i64, i64)> = packages.iter().map(|p| (p.price_fen, p.credits, p.bonus)).collect();
    assert_eq!(prices, [(600, 6000, 0), (3000, 30000, 3000), (9800, 98000, 12000)]);
    user(db, "u1").await;
    order(db, "P000000000000000000000001", "u1", "standard").await;

    let wrong = db.mark_order_paid("P000000000000000000000001", "4200001", 2999).await.unwrap();
    assert_eq!(wrong, MarkPaid::AmountMismatch { expected: 3000 });
    assert_eq!(balance(db, "u1").await, 0, "a wrong amount credits nothing");

    let mut racing = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let db = db.clone();
        racing.spawn(async move { db.mark_order_paid("P000000000000000000000001", "4200001", 3000).await.unwrap() });
    }
    let outcomes = racing.join_all().await;
    assert_eq!(outcomes.iter().filter(|o| matches!(o, MarkPaid::Applied(_))).count(), 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, MarkPaid::Applied(_) | MarkPaid::AlreadyApplied)));
    assert_eq!(balance(db, "u1").await, 33000);
    let totals = db.ledger_totals("u1").await.unwrap();
    assert_eq!((totals.of(EntryKind::Recharge), totals.entries), (33000, 1));
    let o = db.order("P000000000000000000000001").await.unwrap().unwrap();
    assert_eq!((o.status, o.transaction_id.as_deref()), (OrderStatus::Paid, Some("4200001")));
    assert_eq!(db.mark_order_paid("NOSUCHORDER1", "x", 1).await.unwrap(), MarkPaid::Unknown);

    order(db, "P000000000000000000000002", "u1", "basic").await;
    assert!(db.close_order("P000000000000000000000002").await.unwrap());
    assert!(!db.close_order("P000000000000000000000002").await.unwrap(), "closed once");
    let paid = db.orders(Some("u1"), Some(OrderStatus::Paid), PageRequest::default()).await.unwrap();
    assert_eq!(paid.items.len(), 1);
    assert_eq!(db.orders(None, None, PageRequest::default()).await.unwrap().total, 2);
}

async fn refunds_follow_the_policy(t: TestDb) {
    let db = &t.db;
    user(db, "u2").await;
    order(db, "P000000000000000000000003", "u2", "basic").await;
    assert!(matches!(
        db.begin_refund("P000000000000000000000003", "R1", "admin", None).await.unwrap(),
        BeginRefund::NotRefundable(OrderStatus::Pending)
    ));
    db.mark_order_paid("P000000000000000000000003", "4200003", 600).await.unwrap();

    // Spent down to 10.00 of its 60.00: refused up front.
    db.adjust_balance_to("u2", 1000, "admin", "spent", "spend-1").await.unwrap();
    let refused = db.begin_refund("P000000000000000000000003", "R1", "admin", None).await.unwrap();
    assert_eq!(refused, BeginRefund::BalanceTooLow { balance: 1000, needed: 6000 });
    assert_eq!(db.order("P000000000000000000000003").await.unwrap().unwrap().status, OrderStatus::Paid);

    // Covered again; started; a failed refund puts the order back.
    db.adjust_balance_to("u2", 7000, "admin", "topped up", "spend-2").await.unwrap();
    assert!(matches!(
        db.begin_refund("P000000000000000000000003", "R1", "admin", Some("test")).await.unwrap(),
        BeginRefund::Started { .. }
    ));
    assert_eq!(db.settle_refund("R1", false).await.unwrap(), SettledRefund::Failed);
    assert_eq!(db.settle_refund("R1", true).await.unwrap(), SettledRefund::AlreadySettled);
    assert_eq!(db.order("P000000000000000000000003").await.unwrap().unwrap().status, OrderStatus::Paid);
    assert_eq!(balance(db, "u2").await, 7000);

    // Started, then spent before WeChat reports success: what is left is taken.
    assert!(matches!(db.begin_refund("P000000000000000000000003", "R2", "admin", None).await.unwrap(), BeginRefund::Started { .. }));
    db.adjust_balance_to("u2", 2500, "admin", "spent meanwhile", "spend-3").await.unwrap();
    assert_eq!(db.settle_refund("R2", true).await.unwrap(), SettledRefund::Refunded { taken: 2500, needed: 6000 });
    assert_eq!(db.settle_refund("R2", true).await.unwrap(), SettledRefund::AlreadySettled);
    assert_eq!(balance(db, "u2").await, 0);
    let r = db.refund("R2").await.unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.credits_taken), ("success", Some(2500)));
    assert_eq!(db.order("P000000000000000000000003").await.unwrap().unwrap().status, OrderStatus::Refunded);
    assert_eq!(db.ledger_entry(EntryKind::Refund, "R2").await.unwrap().unwrap().delta, -2500);
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

purrify_store::on_both_databases!(packages_are_seeded_and_orders_credit_once, refunds_follow_the_policy);
