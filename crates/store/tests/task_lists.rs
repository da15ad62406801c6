//! Task management reads and writes on SQLite and PostgreSQL: the detail columns, filtered and
//! sorted pages, hiding finished tasks, the per-user active-task limit (also under concurrent
//! inserts), the queue position in dispatch order, queue figures, and scenes.

use std::time::Duration;

use purrify_api::{EnhanceParams, QualityLevel, TaskStatus};
use purrify_store::testing::{TestDb, create_user};
use purrify_store::{Db, Guard, NewTask, PageRequest, SceneFields, StoreError, TaskFilter, TaskMeta, TaskSort};

const DEADLINE: Duration = Duration::from_secs(300);

fn task(id: &str, user: &str, priority: i32) -> NewTask {
    let mut t = NewTask::new(id, format!("file:///in/{id}.jpg"), format!("file:///out/{id}.jpg"), EnhanceParams::default());
    t.user_id = Some(user.into());
    t.priority = priority;
    t
}

async fn insert_at(db: &Db, t: &NewTask, at: i64) {
    db.insert_task_at(t, DEADLINE, at).await.unwrap();
}

purrify_store::on_both_databases!(
    details_pages_and_hiding,
    active_limit_holds_under_concurrency,
    queue_position_follows_dispatch_order,
    scenes_round_trip
);

async fn details_pages_and_hiding(t: TestDb) {
    let db = &t.db;
    create_user(db, "u1").await;
    create_user(db, "u2").await;
    let mut first = task("a", "u1", 0);
    first.meta = TaskMeta {
        title: Some("holiday".into()),
        description: Some("beach photos".into()),
        scene_id: Some("portrait".into()),
        callback_url: Some("https://example.com/hook".into()),
        estimated_seconds: Some(30),
        ..TaskMeta::default()
    };
    insert_at(db, &first, 1_000).await;
    insert_at(db, &task("b", "u1", 2), 2_000).await;
    insert_at(db, &task("c", "u1", 1), 3_000).await;
    insert_at(db, &task("d", "u2", 0), 4_000).await;
    let rec = db.task_record("a").await.unwrap().unwrap();
    assert_eq!(rec.meta.kind, "enhance");
    assert_eq!(
        (rec.meta.title.as_deref(), rec.meta.scene_id.as_deref(), rec.meta.estimated_seconds),
        (Some("holiday"), Some("portrait"), Some(30))
    );
    assert_eq!(rec.meta.callback_url.as_deref(), Some("https://example.com/hook"));
    assert_eq!((rec.cost, rec.hidden_at), (0, None));

    let ids = |p: &purrify_store::Page<purrify_store::TaskRecord>| p.items.iter().map(|r| r.task.id.clone()).collect::<Vec<_>>();
    let mine = TaskFilter { user_id: Some("u1".into()), ..Default::default() };
    let page = db.task_page(&mine, TaskSort::CreatedAt, false, PageRequest::new(Some(1), Some(2))).await.unwrap();
    assert_eq!((ids(&page), page.total, page.total_pages()), (vec!["c".to_string(), "b".into()], 3, 2));
    let page2 = db.task_page(&mine, TaskSort::CreatedAt, false, PageRequest::new(Some(2), Some(2))).await.unwrap();
    assert_eq!(ids(&page2), ["a"]);
    let by_priority = db.task_page(&mine, TaskSort::Priority, false, PageRequest::default()).await.unwrap();
    assert_eq!(ids(&by_priority), ["b", "c", "a"]);
    let all = db.task_page(&TaskFilter::default(), TaskSort::CreatedAt, true, PageRequest::default()).await.unwrap();
    assert_eq!(ids(&all), ["a", "b", "c", "d"]);

    // Status and kind filters; updated_at order moves with changes.
    assert!(db.claim_task("b", 0, "http://w", "b-1").await.unwrap());
    assert!(db.fail_task("c", Guard::Queued, purrify_api::FailReason::BadInput, "bad").await.unwrap());
    let running = TaskFilter { user_id: Some("u1".into()), status: Some(TaskStatus::Processing), ..Default::default() };
    assert_eq!(ids(&db.task_page(&running, TaskSort::UpdatedAt, false, PageRequest::default()).await.unwrap()), ["b"]);
    let other_kind = TaskFilter { kind: Some("video".into()), ..Default::default() };
    assert_eq!(db.task_page(&other_kind, TaskSort::CreatedAt, false, PageRequest::default()).await.unwrap().total, 0);

    // Only finished tasks hide, once; hidden ones leave every page.
    assert!(!db.hide_task("b").await.unwrap(), "a processing task");
    assert!(db.hide_task("c").await.unwrap());
    assert!(!db.hide_task("c").await.unwrap(), "already hidden");
    assert!(db.task_record("c").await.unwrap().unwrap().hidden_at.is_some());
    assert_eq!(db.task_page(&mine, TaskSort::CreatedAt, false, PageRequest::default()).await.unwrap().total, 2);

    // One retry per task.
    let mut retry = task("c2", "u1", 0);
    retry.meta.retry_of = Some("c".into());
    insert_at(db, &retry, 5_000).await;
    let mut again = task("c3", "u1", 0);
    again.meta.retry_of = Some("c".into());
    assert!(matches!(db.insert_task_at(&again, DEADLINE, 6_000).await, Err(StoreError::Duplicate(_))));
    assert_eq!(db.retry_of("c").await.unwrap().as_deref(), Some("c2"));
    assert_eq!(db.active_task_count("u1").await.unwrap(), 3);
}

async fn active_limit_holds_under_concurrency(t: TestDb) {
    let db = t.db.clone();
    create_user(&db, "u1").await;
    create_user(&db, "u2").await;
    let inserts: Vec<_> = (0..12)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut t = task(&format!("t{i}"), "u1", 0);
                t.max_active = Some(3);
                db.insert_task(&t, DEADLINE).await
            })
        })
        .collect();
    let mut ok = 0;
    for i in inserts {
        match i.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::LimitReached(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 3, "exactly the limit");
    assert_eq!(db.active_task_count("u1").await.unwrap(), 3);
    // Other users are not counted; a finished task frees its slot.
    let mut other = task("o", "u2", 0);
    other.max_active = Some(3);
    db.insert_task(&other, DEADLINE).await.unwrap();
    let queued = db
        .task_page(&TaskFilter { user_id: Some("u1".into()), ..Default::default() }, TaskSort::CreatedAt, true, PageRequest::default())
        .await
        .unwrap();
    assert!(db.cancel_task(&queued.items[0].task.id, Guard::Queued).await.unwrap());
    let mut next = task("next", "u1", 0);
    next.max_active = Some(3);
    db.insert_task(&next, DEADLINE).await.unwrap();
}

async fn queue_position_follows_dispatch_order(t: TestDb) {
    let db = &t.db;
    for u in ["u1", "u2", "u3"] {
        create_user(db, u).await;
    }
    assert_eq!(db.queue_position("u1").await.unwrap(), None);
    // u1 bursts three tasks; u2 arrives later with one; u3 has a high-priority task.
    for (i, at) in [(0, 1_000), (1, 1_001), (2, 1_002)] {
        insert_at(db, &task(&format!("u1-{i}"), "u1", 0), at).await;
    }
    insert_at(db, &task("u2-0", "u2", 0), 2_000).await;
    insert_at(db, &task("u3-0", "u3", 5), 3_000).await;
    let order: Vec<String> = db.queued_tasks(100).await.unwrap().into_iter().map(|t| t.id).collect();
    for user in ["u1", "u2", "u3"] {
        let first = order.iter().position(|id| id.starts_with(user)).unwrap() as u64;
        assert_eq!(db.queue_position(user).await.unwrap(), Some(first), "{user} in {order:?}");
    }
    assert_eq!(db.queue_position("u3").await.unwrap(), Some(0));
    assert!(db.claim_task("u3-0", 0, "http://w", "u3-0-1").await.unwrap());
    let figures = db.queue_figures(3_600_000, 100).await.unwrap();
    assert_eq!((figures.queued, figures.processing, figures.recently_started), (4, 1, 1));
    assert!(figures.average_wait_ms.unwrap() > 0.0);
}

async fn scenes_round_trip(t: TestDb) {
    let db = &t.db;
    let fields = |name: &str, sort: i64, active: bool| SceneFields {
        name: name.into(),
        description: "d".into(),
        cover_url: Some("https://cdn.example.com/c.jpg".into()),
        kind: "enhance".into(),
        params: EnhanceParams { quality_level: QualityLevel::Fast, scale: 4, face_enhance: false, ..EnhanceParams::default() },
        price: Some(250),
        sort_order: sort,
        active,
    };
    let a = db.insert_scene("s1", &fields("Portrait", 20, true)).await.unwrap();
    assert_eq!((a.params.scale, a.price, a.active), (4, Some(250), true));
    db.insert_scene("s2", &fields("Landscape", 10, true)).await.unwrap();
    db.insert_scene("s3", &fields("Hidden", 0, false)).await.unwrap();
    assert!(matches!(db.insert_scene("s1", &fields("x", 0, true)).await, Err(StoreError::Duplicate(_))));
    let names = |v: Vec<purrify_store::Scene>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(db.scenes(true).await.unwrap()), ["Landscape", "Portrait"]);
    assert_eq!(names(db.scenes(false).await.unwrap()), ["Hidden", "Landscape", "Portrait"]);
    let mut changed = fields("Portrait HD", 20, true);
    changed.price = None;
    let updated = db.update_scene("s1", &changed).await.unwrap().unwrap();
    assert_eq!((updated.name.as_str(), updated.price), ("Portrait HD", None));
    assert!(db.update_scene("nope", &changed).await.unwrap().is_none());
    assert!(db.delete_scene("s1").await.unwrap());
    assert!(!db.delete_scene("s1").await.unwrap());
    assert!(db.scene("s1").await.unwrap().is_none());
}
