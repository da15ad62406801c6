//! The ledger and task holds on SQLite and PostgreSQL, under concurrency: every event once,
//! balances never negative, and every balance equal to the sum of its ledger.

use std::time::Duration;

use purrify_api::{EnhanceParams, FailReason};
use purrify_store::testing::TestDb;
use purrify_store::{Applied, Db, EntryKind, Guard, HoldOutcome, NewEntry, NewTask, PageRequest, Settlement};

async fn user(db: &Db, id: &str) {
    purrify_store::testing::create_user(db, id).await;
}

fn entry(user: &str, delta: i64, kind: EntryKind, reference: &str) -> NewEntry {
    NewEntry { user_id: user.into(), delta, kind, reference: reference.into(), note: None, actor: None }
}

async fn balance(db: &Db, user: &str) -> i64 {
    db.user(user).await.unwrap().unwrap().balance
}

async fn entries_are_idempotent_and_never_overdraw(t: TestDb) {
    let db = &t.db;
    user(db, "u1").await;
    let Applied::Written(e) = db.apply_entry(&entry("u1", 10_050, EntryKind::Grant, "welcome:u1")).await.unwrap() else { panic!() };
    assert_eq!(e.balance_after, 10_050);
    assert!(
        matches!(db.apply_entry(&entry("u1", 10_050, EntryKind::Grant, "welcome:u1")).await.unwrap(), Applied::Duplicate(d) if d.id == e.id)
    );
    assert_eq!(db.apply_entry(&entry("u1", -20_000, EntryKind::Adjust, "adj-1")).await.unwrap(), Applied::Insufficient { balance: 10_050 });
    assert!(db.ledger_entry(EntryKind::Adjust, "adj-1").await.unwrap().is_none(), "a refused entry leaves nothing");
    assert!(matches!(db.apply_entry(&entry("u1", -50, EntryKind::Adjust, "adj-2")).await.unwrap(), Applied::Written(_)));
    assert_eq!(db.apply_entry(&entry("ghost", 5, EntryKind::Grant, "g")).await.unwrap(), Applied::NoUser);
    assert_eq!(balance(db, "u1").await, 10_000);
    let totals = db.ledger_totals("u1").await.unwrap();
    assert_eq!((totals.sum(), totals.of(EntryKind::Grant), totals.of(EntryKind::Adjust), totals.entries), (10_000, 10_050, -50, 2));
    let page = db.ledger_page("u1", None, PageRequest::new(Some(1), Some(1))).await.unwrap();
    assert_eq!((page.total, page.items[0].reference.as_str()), (2, "adj-2"), "newest first");
    assert_eq!(db.ledger_page("u1", Some(EntryKind::Grant), PageRequest::default()).await.unwrap().total, 1);
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

/// 200 writers on one account at once: credits, debits that may or may not fit, and every
/// event sent twice. Nothing is lost, nothing doubled, the balance never goes negative.
async fn two_hundred_concurrent_writers_on_one_account(t: TestDb) {
    let db = t.db.clone();
    user(&db, "hot").await;
    db.apply_entry(&entry("hot", 1_000, EntryKind::Grant, "seed")).await.unwrap();
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let (delta, kind) = if i % 2 == 0 { (300, EntryKind::Recharge) } else { (-700, EntryKind::Adjust) };
                let e = entry("hot", delta, kind, &format!("event-{}", i / 2 * 2 + i % 2));
                // Each event is delivered twice, concurrently, like a repeated notification.
                let (a, b) = tokio::join!(db.apply_entry(&e), db.apply_entry(&e));
                [a.unwrap(), b.unwrap()]
            })
        })
        .collect();
    let mut written = 0;
    for w in writers {
        for outcome in w.await.unwrap() {
            match outcome {
                Applied::Written(e) => {
                    assert!(e.balance_after >= 0);
                    written += 1;
                }
                Applied::Duplicate(_) | Applied::Insufficient { .. } => {}
                Applied::NoUser => panic!("the user exists"),
            }
        }
    }
    let totals = db.ledger_totals("hot").await.unwrap();
    assert_eq!(totals.entries, written + 1, "one entry per written event, plus the seed");
    assert_eq!(balance(&db, "hot").await, totals.sum(), "balance = sum of the ledger");
    assert_eq!(totals.of(EntryKind::Recharge), 100 * 300, "every credit exactly once");
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

/// The same (kind, ref) for two accounts at once (their write scopes differ): one wins.
async fn one_event_is_one_entry_across_accounts(t: TestDb) {
    let db = t.db.clone();
    user(&db, "a").await;
    user(&db, "b").await;
    let (ea, eb) = (entry("a", 100, EntryKind::Recharge, "order-1"), entry("b", 100, EntryKind::Recharge, "order-1"));
    let (x, y) = tokio::join!(db.apply_entry(&ea), db.apply_entry(&eb));
    let written = [&x, &y].iter().filter(|r| matches!(r, Ok(Applied::Written(_)))).count();
    assert_eq!(written, 1, "{x:?} {y:?}");
    assert_eq!(balance(&db, "a").await + balance(&db, "b").await, 100);
    assert!(db.ledger_mismatches().await.unwrap().is_empty(), "the loser's balance change was rolled back");
}

fn task(id: &str, owner: &str) -> NewTask {
    let mut t = NewTask::new(id, "file:///in", "file:///out", EnhanceParams::default());
    t.user_id = Some(owner.into());
    t
}

async fn holds_settle_exactly_once(t: TestDb) {
    let db = t.db.clone();
    user(&db, "u").await;
    db.apply_entry(&entry("u", 250, EntryKind::Grant, "g")).await.unwrap();
    assert_eq!(db.hold("t1", "u", 100).await.unwrap(), HoldOutcome::Held { balance: 150 });
    assert_eq!(db.hold("t1", "u", 100).await.unwrap(), HoldOutcome::Duplicate);
    assert_eq!(db.hold("t2", "u", 100).await.unwrap(), HoldOutcome::Held { balance: 50 });
    assert_eq!(db.hold("t3", "u", 100).await.unwrap(), HoldOutcome::Insufficient { balance: 50, price: 100 });
    // A capture and a release race for t1, twice over: exactly one applies.
    let racers: Vec<_> = [Settlement::Capture, Settlement::Release, Settlement::Capture, Settlement::Release]
        .into_iter()
        .map(|how| {
            let db = db.clone();
            tokio::spawn(async move { (how, db.settle("t1", how).await.unwrap()) })
        })
        .collect();
    let mut won = Vec::new();
    for r in racers {
        let (how, did) = r.await.unwrap();
        if did {
            won.push(how);
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let expected = if won[0] == Settlement::Capture { 50 } else { 150 };
    assert_eq!(balance(&db, "u").await, expected);
    assert!(!db.settle("t1", Settlement::Release).await.unwrap(), "settled holds stay settled");
    assert!(db.settle("t2", Settlement::Release).await.unwrap());
    assert_eq!(db.hold_state("t2").await.unwrap().as_deref(), Some("released"));
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

async fn the_settler_finds_finished_and_orphaned_holds(t: TestDb) {
    let db = t.db.clone();
    user(&db, "u").await;
    db.apply_entry(&entry("u", 1_000, EntryKind::Grant, "g")).await.unwrap();
    for id in ["done", "bad", "queued", "orphan"] {
        assert!(matches!(db.hold(id, "u", 100).await.unwrap(), HoldOutcome::Held { .. }));
    }
    for id in ["done", "bad", "queued"] {
        db.insert_task(&task(id, "u"), Duration::from_secs(300)).await.unwrap();
    }
    assert!(db.fail_task("bad", Guard::Queued, FailReason::BadInput, "not an image").await.unwrap());
    assert!(db.claim_task("done", 0, "http://w", "done-1").await.unwrap());
    assert!(db.complete_task("done", "done-1", &purrify_store::testing::job_result()).await.unwrap());
    let open = db.holds_to_settle(60_000, 100).await.unwrap();
    let ids: Vec<_> = open.iter().map(|h| (h.task_id.as_str(), h.task_status.as_deref())).collect();
    assert_eq!(ids, [("done", Some("completed")), ("bad", Some("failed"))], "a young orphan may still get its task");
    let open = db.holds_to_settle(-1, 100).await.unwrap();
    assert!(open.iter().any(|h| h.task_id == "orphan" && h.task_status.is_none()), "an old orphan is found");
    assert!(db.settle("done", Settlement::Capture).await.unwrap());
    assert_eq!(db.get_task("done").await.unwrap().unwrap().user_id.as_deref(), Some("u"));
    assert_eq!(db.user_task_stats("u").await.unwrap().total_cost, 100, "the captured price is the task's cost");
    assert_eq!(db.hold_totals("u").await.unwrap(), (300, 100));
}

purrify_store::on_both_databases!(
    entries_are_idempotent_and_never_overdraw,
    two_hundred_concurrent_writers_on_one_account,
    one_event_is_one_entry_across_accounts,
    holds_settle_exactly_once,
    the_settler_finds_finished_and_orphaned_holds,
);
