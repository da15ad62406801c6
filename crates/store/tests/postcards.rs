//! Postcards on SQLite and PostgreSQL: a postcard is written with its task's completion or
//! not at all (a task cancelled meanwhile, or another attempt's, leaves none), one per task;
//! it is found by id, task and media key; a user's list is theirs only, newest first, bounded
//! and continued after a postcard seen.

use std::time::Duration;

use purrify_api::TaskStatus;
use purrify_store::postcards::{MAX_LIST, Postcard};
use purrify_store::testing::{TestDb, create_user, job_result};
use purrify_store::{Db, Guard, NewTask, StoreError};

const T0: i64 = 1_800_000_000_000;

/// A task of `user`, claimed by attempt `<id>-1` (processing).
async fn running_task(db: &Db, id: &str, user: &str) {
    let mut t = NewTask::new(id, "", format!("file:///results/{id}.jpg"), Default::default());
    t.user_id = Some(user.into());
    t.meta.kind = "postcard".into();
    db.insert_task(&t, Duration::from_secs(300)).await.unwrap();
    assert!(db.claim_task(id, 0, "provider-runner", &format!("{id}-1")).await.unwrap());
}

fn postcard(id: &str, task: &str, user: &str, at: i64) -> Postcard {
    Postcard {
        id: id.into(),
        task_id: task.into(),
        user_id: user.into(),
        mood: "开心".into(),
        style: "赛博朋克".into(),
        theme: "生日".into(),
        extra: Some("给妈妈".into()),
        text: "祝你生日快乐".into(),
        image_uri: format!("file:///postcards/{id}.png"),
        image_type: "image/png".into(),
        media_key: format!("key-{id}"),
        frontend_code: "<!DOCTYPE html><p>祝你生日快乐</p>".into(),
        created_at: at,
    }
}

async fn complete(db: &Db, p: &Postcard) -> Result<bool, StoreError> {
    db.complete_postcard_task(&p.task_id, &format!("{}-1", p.task_id), &job_result(), "[]", p).await
}

async fn a_postcard_is_written_with_its_tasks_completion(t: TestDb) {
    let db = &t.db;
    create_user(db, "alice").await;
    running_task(db, "t1", "alice").await;
    let p = postcard("p1", "t1", "alice", T0);
    // Another attempt's completion writes nothing.
    assert!(!db.complete_postcard_task("t1", "t1-2", &job_result(), "[]", &p).await.unwrap());
    assert_eq!(db.postcard("p1").await.unwrap(), None);
    assert_eq!(db.get_task("t1").await.unwrap().unwrap().status, TaskStatus::Processing);

    assert!(complete(db, &p).await.unwrap());
    let task = db.get_task("t1").await.unwrap().unwrap();
    assert_eq!((task.status, task.result.as_ref().map(|r| r.content_type.as_str())), (TaskStatus::Completed, Some("image/jpeg")));
    assert_eq!(db.postcard("p1").await.unwrap().as_ref(), Some(&p), "every field round-trips");
    assert_eq!(db.postcard_of_task("t1").await.unwrap().as_ref(), Some(&p));
    assert_eq!(db.postcard_by_media_key("key-p1").await.unwrap().as_ref(), Some(&p));
    assert_eq!(db.postcard_by_media_key("key-p").await.unwrap(), None);
    // Completing again is refused by the task's state: still one postcard.
    assert!(!complete(db, &postcard("p2", "t1", "alice", T0)).await.unwrap());
    assert_eq!(db.postcard("p2").await.unwrap(), None);

    // A task cancelled before its postcard was recorded keeps none.
    running_task(db, "t3", "alice").await;
    assert!(db.cancel_task("t3", Guard::Job("t3-1")).await.unwrap());
    assert!(!complete(db, &postcard("p3", "t3", "alice", T0)).await.unwrap());
    assert_eq!(db.postcard_of_task("t3").await.unwrap(), None);
    assert_eq!(db.get_task("t3").await.unwrap().unwrap().status, TaskStatus::Cancelled);

    // A postcard id taken twice rolls the task's completion back.
    running_task(db, "t4", "alice").await;
    let again = Postcard { task_id: "t4".into(), media_key: "key-other".into(), ..p.clone() };
    assert!(matches!(complete(db, &again).await, Err(StoreError::Duplicate(_))));
    assert_eq!(db.get_task("t4").await.unwrap().unwrap().status, TaskStatus::Processing, "nothing of it stayed");
    assert_eq!(db.postcard_of_task("t4").await.unwrap(), None);
}

async fn lists_are_the_owners_newest_first_bounded_and_continued(t: TestDb) {
    let db = &t.db;
    create_user(db, "alice").await;
    create_user(db, "bob").await;
    // a1..a5, two of them at the same time (ties go by id, descending).
    for (n, at) in [(1, T0), (2, T0 + 10), (3, T0 + 10), (4, T0 + 20), (5, T0 + 30)] {
        running_task(db, &format!("ta{n}"), "alice").await;
        assert!(complete(db, &postcard(&format!("a{n}"), &format!("ta{n}"), "alice", at)).await.unwrap());
    }
    running_task(db, "tb1", "bob").await;
    assert!(complete(db, &postcard("b1", "tb1", "bob", T0 + 40)).await.unwrap());

    let ids = |v: Vec<Postcard>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(db.user_postcards("alice", None, 50).await.unwrap()), ["a5", "a4", "a3", "a2", "a1"]);
    assert_eq!(ids(db.user_postcards("bob", None, 50).await.unwrap()), ["b1"]);
    assert!(db.user_postcards("carol", None, 50).await.unwrap().is_empty());

    let first = ids(db.user_postcards("alice", None, 2).await.unwrap());
    assert_eq!(first, ["a5", "a4"]);
    let next = ids(db.user_postcards("alice", Some("a4"), 2).await.unwrap());
    assert_eq!(next, ["a3", "a2"], "after a4, the tie at T0+10 in id order");
    assert_eq!(ids(db.user_postcards("alice", Some("a2"), 2).await.unwrap()), ["a1"]);
    assert!(db.user_postcards("alice", Some("a1"), 2).await.unwrap().is_empty());
    assert!(db.user_postcards("alice", Some("b1"), 2).await.unwrap().is_empty(), "another user's postcard is no cursor");
    assert!(db.user_postcards("alice", Some("nope"), 2).await.unwrap().is_empty());
    assert_eq!(db.user_postcards("alice", None, 0).await.unwrap().len(), 1, "at least one");
    assert_eq!(db.user_postcards("alice", None, MAX_LIST + 50).await.unwrap().len(), 5);
}

purrify_store::on_both_databases!(a_postcard_is_written_with_its_tasks_completion, lists_are_the_owners_newest_first_bounded_and_continued);
