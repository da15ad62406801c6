//! Ledger writes per second under contention (`make bench`), on SQLite and PostgreSQL side by
//! side: 200 concurrent writers on one account (every write serialises on that account's
//! lock), and 200 writers spread over 1,000 accounts. Each write is one ledger entry and its
//! balance change in one transaction. After each run the invariant is checked: every balance
//! equals the sum of its ledger.
//!
//! `PURRIFY_TEST_POSTGRES_URL` names a PostgreSQL admin URL (tools/postgres/start.sh prints
//! one); without it only SQLite runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use purrify_store::testing::{Backend, TestDb};
use purrify_store::{Applied, Db, DbOptions, EntryKind, NewEntry};

const WRITERS: usize = 200;
const RUN: Duration = Duration::from_secs(5);

async fn run(db: &Db, accounts: usize) -> (f64, u64) {
    for i in 0..accounts {
        purrify_store::testing::create_user(db, &format!("acct-{i}")).await;
    }
    let written = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, written, seq) = (db.clone(), written.clone(), seq.clone());
            tokio::spawn(async move {
                while start.elapsed() < RUN {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    let user = format!("acct-{}", (w + n as usize) % accounts);
                    let e = NewEntry {
                        user_id: user,
                        delta: 100,
                        kind: EntryKind::Grant,
                        reference: format!("bench-{n}"),
                        note: None,
                        actor: None,
                    };
                    if let Ok(Applied::Written(_)) = db.apply_entry(&e).await {
                        written.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let secs = start.elapsed().as_secs_f64();
    let n = written.load(Ordering::Relaxed);
    assert!(db.ledger_mismatches().await.expect("audit").is_empty(), "a balance differs from its ledger");
    (n as f64 / secs, n)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let mut backends = vec![Backend::Sqlite];
    if std::env::var(purrify_store::testing::PG_ENV).is_ok_and(|v| !v.is_empty()) {
        backends.push(Backend::Postgres);
    } else {
        eprintln!("ledger bench: {} is not set; PostgreSQL skipped", purrify_store::testing::PG_ENV);
    }
    println!("ledger bench: {WRITERS} concurrent writers for {} s per case; one entry + balance per transaction", RUN.as_secs());
    println!("{:>10} {:>22} {:>12} {:>10}", "database", "accounts", "writes/s", "writes");
    for backend in backends {
        for accounts in [1, 1000] {
            let t = TestDb::new(backend).await;
            // A pool as large as a gateway's would use under this load.
            let db = Db::connect_with(&t.url, DbOptions { max_connections: 20, ..DbOptions::default() }).await.expect("pool");
            let (rate, n) = run(&db, accounts).await;
            let what = if accounts == 1 { "1 (all on one)".to_owned() } else { format!("{accounts} (spread)") };
            println!("{:>10} {:>22} {:>12.0} {:>10}", format!("{backend:?}"), what, rate, n);
            db.close().await;
        }
    }
}
