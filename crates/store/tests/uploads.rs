//! The uploads table on SQLite and PostgreSQL: rows round-trip, the quota insert refuses past
//! the limit and inserts nothing, a batch is all-or-nothing, only the owner reads or deletes a
//! row by user, and 20 concurrent uploads against a quota of 5 files store exactly 5.

use purrify_store::testing::TestDb;
use purrify_store::{Db, StoreError, Upload, UploadKind};

fn upload(id: &str, user: &str, bytes: u64) -> Upload {
    Upload {
        id: id.into(),
        user_id: user.into(),
        uri: format!("file:///s/files/{id}.jpg"),
        thumbnail_uri: Some(format!("file:///s/files/{id}.thumb.jpg")),
        file_name: "cat.jpg".into(),
        content_type: "image/jpeg".into(),
        kind: UploadKind::Image,
        bytes,
        stored_bytes: bytes + 10,
        width: Some(640),
        height: Some(480),
        duration_ms: None,
        created_at: 1_700_000_000_000 + bytes as i64,
    }
}

async fn users(db: &Db) {
    purrify_store::testing::create_user(db, "alice").await;
    purrify_store::testing::create_user(db, "bob").await;
}

async fn rows_round_trip_and_the_quota_holds(t: TestDb) {
    let db = &t.db;
    users(db).await;
    let a = upload("a1", "alice", 100);
    db.insert_uploads_within_quota(std::slice::from_ref(&a), 1000).await.unwrap();
    assert_eq!(db.upload("a1").await.unwrap(), Some(a.clone()));
    assert_eq!(db.upload_bytes_used("alice").await.unwrap(), 110);
    // 110 used + 2 x 460 = 1030 > 1000: the batch is refused whole.
    let batch = [upload("a2", "alice", 450), upload("a3", "alice", 450)];
    assert!(matches!(db.insert_uploads_within_quota(&batch, 1000).await, Err(StoreError::LimitReached(_))));
    assert_eq!(db.upload("a2").await.unwrap(), None, "nothing of a refused batch is inserted");
    // Exactly at the quota is allowed.
    db.insert_uploads_within_quota(&[upload("a2", "alice", 440), upload("a3", "alice", 430)], 1000).await.unwrap();
    assert_eq!(db.upload_bytes_used("alice").await.unwrap(), 1000);
    // Bob's usage is his own.
    db.insert_uploads_within_quota(&[upload("b1", "bob", 500)], 1000).await.unwrap();
    assert_eq!(db.upload_bytes_used("bob").await.unwrap(), 510);
    let list = db.user_uploads("alice", 10).await.unwrap();
    assert_eq!(list.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), ["a2", "a3", "a1"], "newest first");
    // A duplicate id is refused as such.
    assert!(matches!(db.insert_uploads_within_quota(&[upload("b1", "bob", 1)], 10_000).await, Err(StoreError::Duplicate(_))));
    // Mixed owners in one batch are a caller bug.
    assert!(matches!(
        db.insert_uploads_within_quota(&[upload("x1", "alice", 1), upload("x2", "bob", 1)], 10_000).await,
        Err(StoreError::Invalid(_))
    ));
    // A video without a known size.
    let mut v = upload("v1", "bob", 7);
    (v.kind, v.width, v.height, v.duration_ms, v.thumbnail_uri) = (UploadKind::Video, None, None, Some(2500), None);
    db.insert_uploads_within_quota(std::slice::from_ref(&v), 10_000).await.unwrap();
    assert_eq!(db.upload("v1").await.unwrap(), Some(v));
}

async fn only_the_owner_reads_or_deletes(t: TestDb) {
    let db = &t.db;
    users(db).await;
    db.insert_uploads_within_quota(&[upload("a1", "alice", 100)], 1000).await.unwrap();
    assert!(db.user_upload("bob", "a1").await.unwrap().is_none());
    assert!(db.delete_user_upload("bob", "a1").await.unwrap().is_none());
    assert!(db.upload("a1").await.unwrap().is_some(), "bob's delete touched nothing");
    assert!(db.pending_deletions().await.unwrap().is_empty(), "nor queued anything");
    let gone = db.delete_user_upload("alice", "a1").await.unwrap().expect("alice's own");
    assert_eq!(gone.uri, "file:///s/files/a1.jpg");
    assert!(db.upload("a1").await.unwrap().is_none());
    assert!(db.delete_user_upload("alice", "a1").await.unwrap().is_none(), "a second delete finds nothing");
    assert_eq!(db.upload_bytes_used("alice").await.unwrap(), 0);
    // Its file and thumbnail were queued with the delete, for the sweeper, due at once.
    let mut queued: Vec<(String, Option<String>, u32)> =
        db.pending_deletions().await.unwrap().into_iter().map(|p| (p.uri, p.work_id, p.attempts)).collect();
    queued.sort();
    assert_eq!(queued, [("file:///s/files/a1.jpg".to_owned(), None, 0), ("file:///s/files/a1.thumb.jpg".to_owned(), None, 0)]);
    assert_eq!(db.deletions_due(purrify_store::now_ms(), 10).await.unwrap().len(), 2);
}

async fn concurrent_uploads_cannot_overrun_the_quota(t: TestDb) {
    let db = t.db.clone();
    users(&db).await;
    // Each file takes 110 bytes; the quota fits 5.
    let tasks: Vec<_> = (0..20)
        .map(|n| {
            let db = db.clone();
            tokio::spawn(async move { db.insert_uploads_within_quota(&[upload(&format!("c{n}"), "alice", 100)], 550).await })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StoreError::LimitReached(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 5);
    assert_eq!(db.upload_bytes_used("alice").await.unwrap(), 550);
}

purrify_store::on_both_databases!(
    rows_round_trip_and_the_quota_holds,
    only_the_owner_reads_or_deletes,
    concurrent_uploads_cannot_overrun_the_quota
);
