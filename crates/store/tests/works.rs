//! Works on SQLite and PostgreSQL: one work per task however often it is recorded, a status
//! that follows the task and completes only with a file, a thumbnail set once, the list
//! filters and paging, and deletion that hides at once, is all-or-nothing per request, queues
//! the objects and purges the row only once they are gone and its task can no longer be
//! recorded again.

use std::time::Duration;

use purrify_api::{EnhanceParams, TaskStatus};
use purrify_store::testing::{TestDb, create_user, job_result};
use purrify_store::{
    Db, DeleteWorks, Guard, NewTask, NewWork, PageRequest, WorkChange, WorkFile, WorkFilter, WorkKind, now_ms, on_both_databases,
};

async fn task(db: &Db, id: &str, user: Option<&str>) {
    let mut t = NewTask::new(id, "file:///in", "file:///out", EnhanceParams::default());
    t.user_id = user.map(str::to_owned);
    db.insert_task(&t, Duration::from_secs(300)).await.unwrap();
}

async fn finish(db: &Db, id: &str) {
    let job = format!("{id}-1");
    assert!(db.claim_task(id, 0, "http://w", &job).await.unwrap());
    assert!(db.complete_task(id, &job, &job_result()).await.unwrap());
}

fn new_work(id: &str, user: &str, task: &str) -> NewWork {
    NewWork {
        id: id.into(),
        user_id: user.into(),
        task_id: task.into(),
        kind: WorkKind::Image,
        title: format!("work {id}"),
        status: TaskStatus::Queued,
        error_message: None,
        media_key: format!("key-{id}"),
        created_at: now_ms(),
    }
}

fn file(id: &str) -> WorkFile {
    WorkFile { uri: format!("file:///works/{id}/output.jpg"), content_type: "image/jpeg".into(), width: 640, height: 480, size: 1234 }
}

async fn works_are_recorded_once_and_follow_their_task(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    task(db, "t1", Some("u1")).await;
    task(db, "anon", None).await;
    task(db, "ghost", Some("no-such-user")).await;
    let since = now_ms() - 60_000;
    assert_eq!(db.tasks_without_work(since, 10).await.unwrap(), ["t1"], "owned tasks of real users only");

    assert!(db.insert_work(&new_work("w1", "u1", "t1")).await.unwrap());
    assert!(!db.insert_work(&new_work("w1b", "u1", "t1")).await.unwrap(), "one work per task");
    assert!(db.tasks_without_work(since, 10).await.unwrap().is_empty());
    assert!(db.work("w1b").await.unwrap().is_none());

    assert!(db.set_work_status("t1", TaskStatus::Processing, None).await.unwrap());
    assert!(!db.set_work_status("t1", TaskStatus::Processing, None).await.unwrap(), "no change, no write");
    assert!(db.set_work_status("t1", TaskStatus::Completed, None).await.is_err(), "completing takes the file");
    assert_eq!(db.works_behind_tasks(10).await.unwrap(), ["t1"], "the task is queued again: the work follows");
    let job = "t1-1";
    assert!(db.claim_task("t1", 0, "http://w", job).await.unwrap());
    assert!(db.works_behind_tasks(10).await.unwrap().is_empty());
    assert!(db.complete_task("t1", job, &job_result()).await.unwrap());
    assert_eq!(db.works_behind_tasks(10).await.unwrap(), ["t1"]);

    assert!(db.complete_work("w1", &file("w1")).await.unwrap());
    assert!(!db.complete_work("w1", &file("w1")).await.unwrap(), "completed once");
    assert!(!db.set_work_status("t1", TaskStatus::Failed, Some("late")).await.unwrap(), "a completed work stays completed");
    assert!(db.works_behind_tasks(10).await.unwrap().is_empty());
    let w = db.work_of_task("t1").await.unwrap().unwrap();
    assert_eq!(
        (w.status, w.output_uri.as_deref(), w.width, w.file_size),
        (TaskStatus::Completed, Some(file("w1").uri.as_str()), Some(640), Some(1234))
    );
    assert_eq!(db.work_by_media_key("key-w1").await.unwrap().unwrap().id, "w1");

    // The thumbnail is due at once; a failure counts and postpones it; it is set once.
    let due = db.thumbnails_due(now_ms(), 10).await.unwrap();
    assert_eq!(due.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["w1"]);
    db.thumbnail_failed("w1", Some(now_ms() + 60_000)).await.unwrap();
    assert!(db.thumbnails_due(now_ms(), 10).await.unwrap().is_empty());
    assert_eq!(db.work("w1").await.unwrap().unwrap().thumb_attempts, 1);
    assert!(db.set_work_thumbnail("w1", "file:///works/w1/thumbnail.jpg").await.unwrap());
    assert!(!db.set_work_thumbnail("w1", "file:///other.jpg").await.unwrap(), "made once");
    assert_eq!(db.work("w1").await.unwrap().unwrap().thumbnail_uri.as_deref(), Some("file:///works/w1/thumbnail.jpg"));
    assert!(db.thumbnails_due(i64::MAX, 10).await.unwrap().is_empty());

    // A failed task's work fails with it.
    task(db, "t2", Some("u1")).await;
    db.insert_work(&new_work("w2", "u1", "t2")).await.unwrap();
    assert!(db.fail_task("t2", Guard::Queued, purrify_api::FailReason::BadInput, "not an image").await.unwrap());
    assert!(db.set_work_status("t2", TaskStatus::Failed, Some("not an image")).await.unwrap());
    let w2 = db.work("w2").await.unwrap().unwrap();
    assert_eq!((w2.status, w2.error_message.as_deref(), w2.output_uri), (TaskStatus::Failed, Some("not an image"), None));
    assert!(db.works_behind_tasks(10).await.unwrap().is_empty(), "the work failed with its task");

    // The task is retried (it runs again under the same id): its failed work follows it.
    sqlx::query("UPDATE tasks SET status = 'queued', updated_at = $2 WHERE id = $1")
        .bind("t2")
        .bind(now_ms() + 1)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(db.works_behind_tasks(10).await.unwrap(), ["t2"]);
    assert!(db.set_work_status("t2", TaskStatus::Queued, None).await.unwrap());
    finish(db, "t2").await;
    assert!(db.complete_work("w2", &file("w2")).await.unwrap(), "a retried task's work completes");

    // A work that failed after its task completed (the output could not be kept) is not behind.
    task(db, "t3", Some("u1")).await;
    finish(db, "t3").await;
    db.insert_work(&new_work("w3", "u1", "t3")).await.unwrap();
    assert_eq!(db.works_behind_tasks(10).await.unwrap(), ["t3"], "waiting for its file");
    assert!(db.set_work_status("t3", TaskStatus::Failed, Some("the result is no longer stored")).await.unwrap());
    assert!(db.works_behind_tasks(10).await.unwrap().is_empty());
}

async fn lists_filter_and_page(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    create_user(db, "u2").await;
    let base = 1_700_000_000_000_i64;
    for i in 0..12_i64 {
        let (user, id) = (if i < 10 { "u1" } else { "u2" }, format!("w{i:02}"));
        let mut w = new_work(&id, user, &format!("t{i:02}"));
        w.created_at = base + i * 1000;
        w.kind = if i % 4 == 0 { WorkKind::Video } else { WorkKind::Image };
        w.title = if i == 3 { "Cat at 100% zoom".into() } else { format!("Photo {i}") };
        w.status = if i % 3 == 0 { TaskStatus::Failed } else { TaskStatus::Processing };
        assert!(db.insert_work(&w).await.unwrap());
    }
    let mine = |f: WorkFilter| WorkFilter { user_id: Some("u1".into()), ..f };
    let page = db.works(&mine(WorkFilter::default()), PageRequest::new(Some(1), Some(4))).await.unwrap();
    assert_eq!((page.total, page.total_pages()), (10, 3));
    assert_eq!(page.items.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["w09", "w08", "w07", "w06"], "newest first");
    let last = db.works(&mine(WorkFilter::default()), PageRequest::new(Some(3), Some(4))).await.unwrap();
    assert_eq!(last.items.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), ["w01", "w00"]);

    let count = |f: WorkFilter| async move { db.works(&f, PageRequest::default()).await.unwrap().total };
    assert_eq!(count(mine(WorkFilter { kind: Some(WorkKind::Video), ..Default::default() })).await, 3, "w00 w04 w08");
    assert_eq!(count(mine(WorkFilter { statuses: vec![TaskStatus::Failed], ..Default::default() })).await, 4, "w00 w03 w06 w09");
    assert_eq!(count(mine(WorkFilter { statuses: vec![TaskStatus::Failed, TaskStatus::Processing], ..Default::default() })).await, 10);
    let window = WorkFilter { created_from: Some(base + 2000), created_before: Some(base + 5000), ..Default::default() };
    assert_eq!(count(mine(window)).await, 3, "from inclusive, before exclusive");
    assert_eq!(count(mine(WorkFilter { keyword: Some("100%".into()), ..Default::default() })).await, 1, "% is literal");
    assert_eq!(count(mine(WorkFilter { keyword: Some("CAT".into()), ..Default::default() })).await, 1, "case-insensitive");
    assert_eq!(count(mine(WorkFilter { keyword: Some("_".into()), ..Default::default() })).await, 0, "_ is literal");
    assert_eq!(count(WorkFilter::default()).await, 12, "everyone's (admin)");
    assert_eq!(count(WorkFilter { user_id: Some("u2".into()), ..Default::default() }).await, 2);

    let change = WorkChange { title: Some("Best cat".into()), is_favorite: Some(true), is_public: None };
    assert!(db.update_work(Some("u2"), "w03", &change).await.unwrap().is_none(), "not u2's");
    let w = db.update_work(Some("u1"), "w03", &change).await.unwrap().unwrap();
    assert_eq!((w.title.as_str(), w.is_favorite, w.is_public), ("Best cat", true, false));
    assert_eq!(count(mine(WorkFilter { favorite: Some(true), ..Default::default() })).await, 1);
    let w = db.update_work(None, "w03", &WorkChange { is_public: Some(true), ..Default::default() }).await.unwrap().unwrap();
    assert_eq!((w.title.as_str(), w.is_favorite, w.is_public), ("Best cat", true, true), "untouched fields stay");
}

async fn deletes_hide_queue_and_purge(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    create_user(db, "u2").await;
    for (w, user) in [("w1", "u1"), ("w2", "u1"), ("w3", "u2")] {
        let task_id = format!("t-{w}");
        task(db, &task_id, Some(user)).await;
        finish(db, &task_id).await;
        db.insert_work(&new_work(w, user, &task_id)).await.unwrap();
        db.set_work_status(&task_id, TaskStatus::Processing, None).await.unwrap();
        assert!(db.complete_work(w, &file(w)).await.unwrap());
    }
    db.set_work_thumbnail("w1", "file:///works/w1/thumbnail.jpg").await.unwrap();

    // All or nothing: one foreign id and nothing is deleted.
    let ids = vec!["w1".to_owned(), "w3".to_owned(), "nope".to_owned()];
    assert_eq!(db.delete_works("u1", &ids).await.unwrap(), DeleteWorks::Missing(vec!["nope".into(), "w3".into()]));
    assert!(db.work("w1").await.unwrap().is_some());
    assert!(db.pending_deletions().await.unwrap().is_empty());
    assert!(db.delete_works("u1", &[]).await.is_err());
    assert!(db.delete_works("u1", &vec!["w1".to_owned(); 101]).await.is_ok(), "duplicates count once");

    let deleted = db.delete_works("u1", &["w2".to_owned()]).await.unwrap();
    assert_eq!(deleted, DeleteWorks::Deleted { works: 1, objects: 1 });
    for id in ["w1", "w2"] {
        assert!(db.work(id).await.unwrap().is_none(), "hidden at once");
        assert!(db.update_work(Some("u1"), id, &WorkChange::default()).await.unwrap().is_none());
    }
    assert_eq!(db.works(&WorkFilter { user_id: Some("u1".into()), ..Default::default() }, PageRequest::default()).await.unwrap().total, 0);
    assert_eq!(db.delete_works("u1", &["w1".to_owned()]).await.unwrap(), DeleteWorks::Missing(vec!["w1".into()]), "deleted once");
    assert!(db.tasks_without_work(0, 10).await.unwrap().is_empty(), "a deleted work still covers its task");

    let pending = db.pending_deletions().await.unwrap();
    let mut uris: Vec<&str> = pending.iter().map(|p| p.uri.as_str()).collect();
    uris.sort();
    assert_eq!(uris, ["file:///works/w1/output.jpg", "file:///works/w1/thumbnail.jpg", "file:///works/w2/output.jpg"]);

    // A failure postpones the object; rows go only once every object is gone and their
    // tasks finished before the cut-off.
    let now = now_ms();
    db.deletion_failed("file:///works/w1/output.jpg", now + 60_000, "permission denied").await.unwrap();
    let due = db.deletions_due(now, 10).await.unwrap();
    assert_eq!(due.len(), 2, "{due:?}");
    let failed = db.pending_deletions().await.unwrap().into_iter().find(|p| p.uri.ends_with("w1/output.jpg")).unwrap();
    assert_eq!((failed.attempts, failed.last_error.as_deref(), failed.work_id.as_deref()), (1, Some("permission denied"), Some("w1")));
    for p in due {
        db.deletion_done(&p.uri).await.unwrap();
    }
    let later = now_ms() + 1000;
    assert_eq!(db.purge_deleted_works(0).await.unwrap(), 0, "nothing was deleted before the cut-off");
    assert_eq!(db.purge_deleted_works(later).await.unwrap(), 1, "w2 only: w1 still has an object");
    db.deletion_done("file:///works/w1/output.jpg").await.unwrap();
    assert_eq!(db.purge_deleted_works(later).await.unwrap(), 1);
    assert!(db.pending_deletions().await.unwrap().is_empty());
    assert!(db.work("w3").await.unwrap().is_some(), "u2's work untouched");

    // An object queued twice is one deletion.
    db.queue_deletion("file:///works/x", None).await.unwrap();
    db.queue_deletion("file:///works/x", None).await.unwrap();
    assert_eq!(db.pending_deletions().await.unwrap().len(), 1);
}

on_both_databases!(works_are_recorded_once_and_follow_their_task, lists_filter_and_page, deletes_hide_queue_and_purge);
