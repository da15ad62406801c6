//! Recharge codes on SQLite and PostgreSQL: batches are all-or-nothing, the status filter
//! agrees with each code's status, a redemption credits once per (code, user) and refuses
//! without writing anything, and 200 users racing for a 5-use code get exactly 5 uses.

use purrify_store::testing::TestDb;
use purrify_store::{CodeFilter, CodeStatus, Db, EntryKind, NewBatch, PageRequest, Redemption, StoreError, now_ms};

async fn user(db: &Db, id: &str) {
    purrify_store::testing::create_user(db, id).await;
}

fn batch(codes: &[&str], amount: i64, max_uses: i64, expires_at: i64) -> NewBatch {
    NewBatch {
        name: "新用户充值码".into(),
        amount,
        max_uses,
        expires_at,
        created_by: "admin".into(),
        codes: codes.iter().map(|c| (*c).to_owned()).collect(),
    }
}

const HOUR: i64 = 3_600_000;

async fn balance(db: &Db, user: &str) -> i64 {
    db.user(user).await.unwrap().unwrap().balance
}

async fn statuses(db: &Db, status: CodeStatus) -> Vec<String> {
    let filter = CodeFilter { status: Some(status), batch_id: None };
    let mut codes: Vec<String> =
        db.recharge_codes(&filter, PageRequest::default()).await.unwrap().items.into_iter().map(|c| c.code).collect();
    codes.sort();
    codes
}

async fn batches_list_by_status_and_redeem_once(t: TestDb) {
    let db = &t.db;
    user(db, "admin").await;
    user(db, "u1").await;
    user(db, "u2").await;
    let now = now_ms();
    let live = db.create_recharge_batch(&batch(&["OWL-AAAA-AAAA-AAAA", "OWL-BBBB-BBBB-BBBB"], 10_050, 2, now + HOUR)).await.unwrap();
    assert_eq!((live.codes.len(), live.codes[0].amount, live.codes[0].batch_id.as_str()), (2, 10_050, live.id.as_str()));
    db.create_recharge_batch(&batch(&["OWL-CCCC-CCCC-CCCC"], 500, 1, now - 1)).await.unwrap();
    db.create_recharge_batch(&batch(&["OWL-DDDD-DDDD-DDDD"], 500, 1, now + HOUR)).await.unwrap();
    assert!(db.set_recharge_code_disabled("OWL-DDDD-DDDD-DDDD", true).await.unwrap());
    assert!(!db.set_recharge_code_disabled("OWL-NONE-NONE-NONE", true).await.unwrap());

    // One batch reusing an existing code: refused whole, the fresh code in it not kept.
    let clash = db.create_recharge_batch(&batch(&["OWL-EEEE-EEEE-EEEE", "OWL-AAAA-AAAA-AAAA"], 100, 1, now + HOUR)).await;
    assert!(matches!(clash, Err(StoreError::Duplicate(ref m)) if !m.contains("AAAA")), "{clash:?}");
    assert!(db.recharge_code("OWL-EEEE-EEEE-EEEE").await.unwrap().is_none(), "a failed batch leaves no codes");
    assert!(matches!(db.create_recharge_batch(&batch(&[], 100, 1, now + HOUR)).await, Err(StoreError::Invalid(_))));

    assert_eq!(statuses(db, CodeStatus::Active).await, ["OWL-AAAA-AAAA-AAAA", "OWL-BBBB-BBBB-BBBB"]);
    assert_eq!(statuses(db, CodeStatus::Expired).await, ["OWL-CCCC-CCCC-CCCC"]);
    assert_eq!(statuses(db, CodeStatus::Disabled).await, ["OWL-DDDD-DDDD-DDDD"]);
    assert!(statuses(db, CodeStatus::Used).await.is_empty());
    let by_batch = CodeFilter { status: None, batch_id: Some(live.id.clone()) };
    let page = db.recharge_codes(&by_batch, PageRequest::new(Some(2), Some(1))).await.unwrap();
    assert_eq!((page.total, page.items.len(), page.total_pages()), (2, 1, 2));
    assert_eq!(page.items[0].batch_name, "新用户充值码");

    let Redemption::Redeemed(r) = db.redeem_recharge_code("OWL-AAAA-AAAA-AAAA", "u1").await.unwrap() else { panic!("redeems") };
    assert_eq!((r.amount, r.balance_after, r.ledger_ref.as_str()), (10_050, 10_050, "OWL-AAAA-AAAA-AAAA:u1"));
    assert_eq!(db.redeem_recharge_code("OWL-AAAA-AAAA-AAAA", "u1").await.unwrap(), Redemption::AlreadyRedeemed);
    let code = db.recharge_code("OWL-AAAA-AAAA-AAAA").await.unwrap().unwrap();
    assert_eq!(code.used_count, 1, "a repeat does not spend a use");
    assert!(matches!(db.redeem_recharge_code("OWL-AAAA-AAAA-AAAA", "u2").await.unwrap(), Redemption::Redeemed(_)));
    assert_eq!(db.redeem_recharge_code("OWL-AAAA-AAAA-AAAA", "admin").await.unwrap(), Redemption::Exhausted);
    assert_eq!(statuses(db, CodeStatus::Used).await, ["OWL-AAAA-AAAA-AAAA"]);
    assert_eq!(db.recharge_code("OWL-AAAA-AAAA-AAAA").await.unwrap().unwrap().status(now_ms()), CodeStatus::Used);

    // Refusals write nothing: no use, no redemption, no ledger entry, no balance.
    assert_eq!(db.redeem_recharge_code("OWL-CCCC-CCCC-CCCC", "u2").await.unwrap(), Redemption::Expired);
    assert_eq!(db.redeem_recharge_code("OWL-DDDD-DDDD-DDDD", "u2").await.unwrap(), Redemption::Disabled);
    assert_eq!(db.redeem_recharge_code("OWL-ZZZZ-ZZZZ-ZZZZ", "u2").await.unwrap(), Redemption::Unknown);
    assert_eq!(db.redeem_recharge_code("OWL-BBBB-BBBB-BBBB", "ghost").await.unwrap(), Redemption::NoUser);
    assert_eq!(db.recharge_code("OWL-BBBB-BBBB-BBBB").await.unwrap().unwrap().used_count, 0, "a failed redemption is rolled back");
    for code in ["OWL-CCCC-CCCC-CCCC", "OWL-DDDD-DDDD-DDDD"] {
        assert_eq!(db.recharge_code(code).await.unwrap().unwrap().used_count, 0);
        assert!(db.ledger_entry(EntryKind::Redeem, &format!("{code}:u2")).await.unwrap().is_none());
    }
    assert_eq!((balance(db, "u1").await, balance(db, "u2").await, balance(db, "admin").await), (10_050, 10_050, 0));

    // Records are ordered by time in milliseconds: make sure this one is later.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    db.redeem_recharge_code("OWL-BBBB-BBBB-BBBB", "u1").await.unwrap();
    let records = db.recharge_redemptions("u1", PageRequest::default()).await.unwrap();
    assert_eq!(records.total, 2);
    assert_eq!(
        records.items.iter().map(|r| (r.code.as_str(), r.balance_after)).collect::<Vec<_>>(),
        [("OWL-BBBB-BBBB-BBBB", 20_100), ("OWL-AAAA-AAAA-AAAA", 10_050)],
        "newest first, with the balance each left"
    );
    assert_eq!(db.recharge_redemptions("u2", PageRequest::default()).await.unwrap().total, 1);
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

/// 200 different users redeem one code with 5 uses at once. The per-account write scope does
/// not serialise them (different accounts), so only the conditional UPDATE stands between
/// them and a sixth use.
async fn two_hundred_users_race_for_a_five_use_code(t: TestDb) {
    let db = t.db.clone();
    user(&db, "admin").await;
    let users: Vec<String> = (0..200).map(|i| format!("racer-{i:03}")).collect();
    for u in &users {
        user(&db, u).await;
    }
    db.create_recharge_batch(&batch(&["OWL-RACE-RACE-RACE"], 2_500, 5, now_ms() + HOUR)).await.unwrap();
    let racers: Vec<_> = users
        .iter()
        .cloned()
        .map(|u| {
            let db = db.clone();
            tokio::spawn(async move { (db.redeem_recharge_code("OWL-RACE-RACE-RACE", &u).await.unwrap(), u) })
        })
        .collect();
    let mut winners = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            (Redemption::Redeemed(rec), u) => {
                assert_eq!((rec.balance_after, rec.user_id.as_str()), (2_500, u.as_str()));
                winners.push(u);
            }
            (Redemption::Exhausted, _) => {}
            (other, u) => panic!("{u}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 5, "exactly max_uses redemptions succeed");
    assert_eq!(db.recharge_code("OWL-RACE-RACE-RACE").await.unwrap().unwrap().used_count, 5);
    let mut credited = 0;
    for u in &users {
        let totals = db.ledger_totals(u).await.unwrap();
        assert_eq!(totals.sum(), balance(&db, u).await, "{u}: balance = sum of ledger");
        assert_eq!(db.recharge_redemptions(u, PageRequest::default()).await.unwrap().total, totals.entries, "{u}");
        if totals.entries > 0 {
            assert!(winners.contains(u), "{u} was credited without winning");
            assert_eq!((totals.entries, totals.of(EntryKind::Redeem)), (1, 2_500));
            credited += 1;
        }
    }
    assert_eq!(credited, 5, "5 ledger entries");
    assert!(db.ledger_mismatches().await.unwrap().is_empty());
}

/// One user double-submitting the same code from two devices: one credit.
async fn one_user_redeeming_twice_at_once_is_credited_once(t: TestDb) {
    let db = t.db.clone();
    user(&db, "admin").await;
    user(&db, "twice").await;
    db.create_recharge_batch(&batch(&["OWL-TWIN-TWIN-TWIN"], 700, 10, now_ms() + HOUR)).await.unwrap();
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.redeem_recharge_code("OWL-TWIN-TWIN-TWIN", "twice").await.unwrap() })
        })
        .collect();
    let mut redeemed = 0;
    for t in tries {
        match t.await.unwrap() {
            Redemption::Redeemed(_) => redeemed += 1,
            Redemption::AlreadyRedeemed => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(redeemed, 1);
    assert_eq!(db.recharge_code("OWL-TWIN-TWIN-TWIN").await.unwrap().unwrap().used_count, 1);
    assert_eq!(balance(&db, "twice").await, 700);
}

purrify_store::on_both_databases!(
    batches_list_by_status_and_redeem_once,
    two_hundred_users_race_for_a_five_use_code,
    one_user_redeeming_twice_at_once_is_credited_once,
);
