//! The provider runner's side of the task table and the providers table, on SQLite and
//! PostgreSQL: provider tasks are invisible to the engine's queries and the engine's to the
//! runner's; one of many concurrent claimers takes a task; a pending job is recorded and a
//! silent runner's task taken over only while stale; completion keeps every file and the
//! housekeeping sees the extra ones; durations per provider and model; a callback signature
//! is accepted once; providers keep their sealed key and fallback through partial edits.

use std::time::Duration;

use purrify_api::{EnhanceParams, FaceRestoration, JobResult, TaskStatus};
use purrify_store::testing::TestDb;
use purrify_store::{Db, Generation, NewTask, ProviderChange, ProviderRow, Runner, StoreError, TaskMeta, now_ms};

async fn task(db: &Db, id: &str, runner: Option<Runner>) {
    let mut t = NewTask::new(id, "", format!("file:///out/{id}.png"), EnhanceParams::default());
    if let Some(runner) = runner {
        t.meta = TaskMeta {
            kind: "text_to_image".into(),
            generation: Some(Generation {
                runner,
                provider: "dalle".into(),
                model: "dall-e-3".into(),
                job: r#"{"kind":"text_to_image"}"#.into(),
                served_by: None,
                remote_id: None,
                outputs: None,
            }),
            ..TaskMeta::default()
        };
    }
    db.insert_task(&t, Duration::from_secs(300)).await.unwrap();
}

fn result(uri: &str) -> JobResult {
    JobResult {
        output_uri: uri.into(),
        content_type: "image/png".into(),
        width: 8,
        height: 8,
        bytes: 10,
        faces: 0,
        face_restoration: FaceRestoration::Disabled,
        model: "dall-e-3".into(),
        elapsed_ms: 5,
    }
}

async fn runners_see_only_their_own_tasks_and_one_claimer_wins(t: TestDb) {
    let db = &t.db;
    task(db, "engine", None).await;
    task(db, "gen", Some(Runner::Provider)).await;
    task(db, "builtin", Some(Runner::Engine)).await;
    let engine: Vec<String> = db.queued_tasks(10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(engine.len(), 2);
    assert!(engine.contains(&"engine".to_string()) && engine.contains(&"builtin".to_string()));
    let provider: Vec<String> = db.queued_provider_tasks(10).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(provider, ["gen"]);

    let claims = (0..8).map(|i| {
        let db = db.clone();
        tokio::spawn(async move { db.claim_task("gen", 0, &format!("runner-{i}"), &format!("job-{i}")).await.unwrap() })
    });
    let won = futures::future::join_all(claims).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(won, 1, "two replicas never run one task");
    assert!(db.processing_tasks().await.unwrap().is_empty(), "the engine never re-attaches to a provider task");
    assert_eq!(db.processing_provider_tasks().await.unwrap().len(), 1);
    let rec = db.task_record("gen").await.unwrap().unwrap();
    let g = rec.meta.generation.unwrap();
    assert_eq!((g.runner, g.provider.as_str(), g.model.as_str()), (Runner::Provider, "dalle", "dall-e-3"));
}

async fn pending_jobs_take_overs_and_completion(t: TestDb) {
    let db = &t.db;
    task(db, "gen", Some(Runner::Provider)).await;
    assert!(db.claim_task("gen", 0, "runner-a", "job-a").await.unwrap());
    assert!(!db.set_provider_job("gen", "job-other", "dalle", Some("remote-1")).await.unwrap(), "another attempt's");
    assert!(db.set_provider_job("gen", "job-a", "sd", Some("remote-1")).await.unwrap());
    let g = db.task_record("gen").await.unwrap().unwrap().meta.generation.unwrap();
    assert_eq!((g.served_by.as_deref(), g.remote_id.as_deref()), (Some("sd"), Some("remote-1")));

    // Touched just now: not stale, not taken.
    let stale_before = now_ms() - 60_000;
    assert!(!db.take_over_provider_task("gen", "job-a", "job-b", "runner-b", stale_before).await.unwrap());
    // Stale: taken once, by one attempt id.
    let later = now_ms() + 1;
    assert!(db.take_over_provider_task("gen", "job-a", "job-b", "runner-b", later).await.unwrap());
    assert!(!db.take_over_provider_task("gen", "job-a", "job-c", "runner-c", later + 1).await.unwrap(), "the old attempt is gone");
    assert!(
        !db.complete_provider_task("gen", "job-a", &result("file:///out/gen.png"), "[]").await.unwrap(),
        "the silent runner cannot finish it"
    );

    let outputs = r#"[{"uri":"file:///out/gen.png","contentType":"image/png","width":8,"height":8,"bytes":10},
                      {"uri":"file:///out/gen-2.png","contentType":"image/png","width":8,"height":8,"bytes":10}]"#;
    assert!(db.complete_provider_task("gen", "job-b", &result("file:///out/gen.png"), outputs).await.unwrap());
    let done = db.get_task("gen").await.unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    let finished = db.finished_before(now_ms() + 10_000, 10).await.unwrap();
    let objects = finished.iter().find(|o| o.id == "gen").unwrap();
    assert_eq!(objects.extra_uris, ["file:///out/gen-2.png"], "housekeeping deletes every file");

    let ms = db.provider_durations("dalle", "dall-e-3", "text_to_image", 5).await.unwrap();
    assert_eq!(ms.len(), 1);
    assert!(ms[0] >= 0);
    assert!(db.provider_durations("dalle", "gpt-image-1", "text_to_image", 5).await.unwrap().is_empty());
}

async fn signatures_are_accepted_once(t: TestDb) {
    let db = &t.db;
    assert!(db.note_signature("sha256=aa", 1_000).await.unwrap());
    assert!(!db.note_signature("sha256=aa", 2_000).await.unwrap(), "a replay");
    assert!(db.note_signature("sha256=bb", 3_000).await.unwrap());
    assert_eq!(db.purge_signatures(2_500).await.unwrap(), 1);
    assert!(!db.note_signature("sha256=bb", 4_000).await.unwrap());
}

async fn providers_keep_what_an_edit_leaves_out(t: TestDb) {
    let db = &t.db;
    let row = ProviderRow {
        id: "sd".into(),
        kind: "image".into(),
        name: "Stability".into(),
        protocol: "stability".into(),
        base_url: "https://api.stability.ai".into(),
        models: r#"["core"]"#.into(),
        enabled: true,
        fallback: Some("purrify".into()),
        api_key_sealed: Some("sealed-bytes".into()),
        options: "{}".into(),
        builtin: true,
        created_at: 0,
        updated_at: 0,
    };
    assert!(db.ensure_provider(&row).await.unwrap());
    assert!(!db.ensure_provider(&ProviderRow { name: "changed".into(), ..row.clone() }).await.unwrap(), "an admin's row survives restarts");
    assert!(matches!(db.insert_provider(&row).await, Err(StoreError::Duplicate(_))));
    let edited = db.update_provider("sd", &ProviderChange { enabled: Some(false), ..ProviderChange::default() }).await.unwrap().unwrap();
    assert_eq!(
        (edited.enabled, edited.fallback.as_deref(), edited.api_key_sealed.as_deref()),
        (false, Some("purrify"), Some("sealed-bytes"))
    );
    let cleared = db
        .update_provider("sd", &ProviderChange { fallback: Some(None), api_key_sealed: Some(None), ..ProviderChange::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cleared.fallback, cleared.api_key_sealed, cleared.name.as_str()), (None, None, "Stability"));
    assert!(db.update_provider("nobody", &ProviderChange::default()).await.unwrap().is_none());
    assert_eq!(db.providers().await.unwrap().len(), 1);
}

purrify_store::on_both_databases!(
    runners_see_only_their_own_tasks_and_one_claimer_wins,
    pending_jobs_take_overs_and_completion,
    signatures_are_accepted_once,
    providers_keep_what_an_edit_leaves_out
);
