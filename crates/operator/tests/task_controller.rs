//! The EnhanceTask controller against kubesim (real HTTP, the shipped CRDs) and fake
//! workers (real HTTP, the worker protocol): the lifecycle of DESIGN section 3 and the write
//! budget of section 2.

mod task_support;

use std::collections::HashMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use purrify_api::TaskPhase;
use purrify_inference::protocol::ErrorReason;
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use task_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 GET (the operator crate has no HTTP client of its own): status and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// Opens the all-tasks progress stream and returns a reader of its raw text.
async fn open_stream(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /v1/progress HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
    s
}

async fn read_until(s: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(needle) {
        let n = tokio::time::timeout_at(give_up, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("stream never showed {needle:?}; saw {seen}"))
            .unwrap();
        assert!(n > 0, "stream closed before {needle:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

async fn serve_progress(hub: purrify_operator::task::ProgressHub) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = purrify_operator::task::router(hub);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_streams_progress_and_stays_within_five_writes() {
    let env = Env::start().await;
    let worker = FakeWorker::start(2, Behavior::Hold).await;
    let ctx = env.context();
    add_workers(&ctx, &[&worker.url]).await;
    let progress = serve_progress(env.hub.clone()).await;
    let mut stream = open_stream(progress).await;
    let ctl = start(ctx, env.hub.clone(), test_config());

    let created = env.create("happy", |s| s.ttl_seconds_after_finished = Some(1)).await;
    let running = env.wait_phase("happy", TaskPhase::Running).await;
    let st = status(&running);
    assert_eq!(st.attempts, 1);
    assert_eq!(st.job_id.as_deref(), Some(format!("{}-1", uid(&created)).as_str()), "job id is uid-attempt");
    assert_eq!(st.worker.as_deref(), Some(worker.url.as_str()));
    assert!(st.start_time.is_some());

    // Live progress is in memory and on the stream; the CR gets one coarse mark.
    let seen = read_until(&mut stream, "\"progress\":0.5").await;
    assert!(seen.contains("event: progress") && seen.contains("\"name\":\"happy\""), "{seen}");
    let (code, body) = http_get(progress, "/v1/tasks/default/happy/progress").await;
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["phase"], "Running");
    assert_eq!(view["progress"], 0.5);
    assert_eq!(view["stage"], "tiles");
    eventually(60, "the coarse progress mark", || async { env.get("happy").await.filter(|t| status(t).progress == 0.5).map(|_| ()) }).await;
    let (code, _) = http_get(progress, "/v1/tasks/default/nope/progress").await;
    assert_eq!(code, 404);

    worker.release(1);
    let done = env.wait_phase("happy", TaskPhase::Succeeded).await;
    let st = status(&done);
    let result = st.result.as_ref().expect("a result");
    assert_eq!(result.uri, "file:///data/results/photo.jpg");
    assert_eq!((result.width, result.height, result.bytes, result.faces), (64, 48, 1234, 1));
    // The worker's own words for the output type and the face outcome, for the gateway.
    assert_eq!(result.content_type.as_deref(), Some("image/jpeg"));
    assert_eq!(result.face_restoration, Some(purrify_api::FaceRestoration::Applied));
    assert_eq!(st.progress, 1.0);
    assert!(st.completion_time.is_some() && st.error.is_none());
    read_until(&mut stream, "\"phase\":\"Succeeded\"").await;
    assert_eq!(worker.request_ids(), [Some("req-fixture".to_owned())], "the request id reaches the worker");

    // TTL: deleted a second after finishing.
    env.wait_gone("happy").await;
    // Let a stray duplicate write (there should be none) land before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.stop().await;

    let writes = env.task_writes();
    assert_eq!(env.served("create", "enhancetasks"), 1);
    assert_eq!(env.served("patch", "enhancetasks/status"), 3, "Running, progress mark, Succeeded");
    assert_eq!(env.served("delete", "enhancetasks"), 1);
    assert!(writes <= 5, "{writes} API writes for one task");
    assert_eq!(env.operator_writes("patch_status", "enhancetasks"), 3);
    assert_eq!(env.operator_writes("delete", "enhancetasks"), 1);
    // Events are writes too, to another resource, and counted apart.
    let events = env.operator_writes("create", "events");
    assert!(events >= 2, "Started and Succeeded events: {events}");
    eventually(60, "events to reach the server", || async {
        (env.served("create", "events") + env.served("patch", "events") >= events).then_some(())
    })
    .await;
    let metrics = env.metrics.encode();
    assert!(metrics.contains("purrify_operator_dispatch_latency_seconds_count 1"), "{metrics}");
    assert!(metrics.contains("purrify_operator_task_transitions_total{phase=\"Succeeded\"} 1"), "{metrics}");
}

/// Jobs of the fake that finish 20 ms after their 0.5 mark must not race the coarse write.
fn no_progress_mark() -> purrify_operator::task::TaskConfig {
    purrify_operator::task::TaskConfig { progress_write_delay: Duration::from_secs(30), ..test_config() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_retries_on_another_worker() {
    let env = Env::start().await;
    let a = FakeWorker::start(2, Behavior::Succeed).await;
    let b = FakeWorker::start(2, Behavior::Succeed).await;
    for w in [&a, &b] {
        w.rule(|req| req.id.ends_with("-1").then_some(Behavior::Fail(ErrorReason::Inference, "CUDA error")));
    }
    let ctx = env.context();
    add_workers(&ctx, &[&a.url, &b.url]).await;
    let ctl = start(ctx, env.hub.clone(), no_progress_mark());
    let t = env.create("retry", |_| {}).await;
    let done = env.wait_phase("retry", TaskPhase::Succeeded).await;
    ctl.stop().await;

    let st = status(&done);
    assert_eq!(st.attempts, 2);
    let first = format!("{}-1", uid(&t));
    let second = format!("{}-2", uid(&t));
    let (failed_on, ran_on) = if a.started().contains(&first) { (&a, &b) } else { (&b, &a) };
    assert_eq!(failed_on.started(), [first], "attempt 1 ran once, on one worker");
    assert_eq!(ran_on.started(), [second], "attempt 2 went to the other worker");
    assert_eq!(st.worker.as_deref(), Some(ran_on.url.as_str()));
    assert_eq!(env.served("patch", "enhancetasks/status"), 4, "Running, Queued, Running, Succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_is_replaced_and_a_busy_one_costs_no_write() {
    let env = Env::start().await;
    let a = FakeWorker::start(1, Behavior::Hold).await;
    let b = FakeWorker::start(1, Behavior::Hold).await;
    let ctx = env.context();
    add_workers(&ctx, &[&a.url, &b.url]).await;
    let ctl = start(ctx.clone(), env.hub.clone(), test_config());
    env.create("survivor", |_| {}).await;
    let running = env.wait_phase("survivor", TaskPhase::Running).await;
    let (dead, alive) = if status(&running).worker.as_deref() == Some(a.url.as_str()) { (&a, &b) } else { (&b, &a) };
    dead.wait_started(1).await;
    dead.kill();
    alive.release(1);
    let done = env.wait_phase("survivor", TaskPhase::Succeeded).await;
    assert_eq!(status(&done).attempts, 2);
    assert_eq!(status(&done).worker.as_deref(), Some(alive.url.as_str()));
    ctl.stop().await;

    // 429 from one worker: the other takes the job, and nothing extra is written.
    let env = Env::start().await;
    let busy = FakeWorker::start(4, Behavior::Busy).await;
    let free = FakeWorker::start(4, Behavior::Succeed).await;
    let ctx = env.context();
    add_workers(&ctx, &[&busy.url, &free.url]).await;
    let ctl = start(ctx, env.hub.clone(), no_progress_mark());
    for i in 0..3 {
        env.create(&format!("b{i}"), |_| {}).await;
    }
    for i in 0..3 {
        let t = env.wait_phase(&format!("b{i}"), TaskPhase::Succeeded).await;
        assert_eq!(status(&t).attempts, 1, "a 429 is not an attempt");
        assert_eq!(status(&t).worker.as_deref(), Some(free.url.as_str()));
    }
    ctl.stop().await;
    assert!(busy.started().is_empty());
    assert_eq!(env.served("patch", "enhancetasks/status"), 6, "Running and Succeeded per task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_at_once_without_retry() {
    let env = Env::start().await;
    let w = FakeWorker::start(2, Behavior::Fail(ErrorReason::BadInput, "cannot decode: not an image")).await;
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let ctl = start(ctx, env.hub.clone(), test_config());
    env.create("bad", |_| {}).await;
    let failed = env.wait_phase("bad", TaskPhase::Failed).await;
    let st = status(&failed);
    let err = st.error.as_ref().unwrap();
    assert_eq!(err.reason, "BadInput");
    assert_eq!(err.message, "cannot decode: not an image");
    assert_eq!(st.attempts, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.stop().await;
    assert_eq!(w.submits().len(), 1, "no retry");

    // A refusal at submit (invalid parameters) also fails at once, with one write.
    let env = Env::start().await;
    let w = FakeWorker::start(2, Behavior::Reject("tile_size must be between 32 and 1024")).await;
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let ctl = start(ctx, env.hub.clone(), test_config());
    env.create("refused", |_| {}).await;
    let failed = env.wait_phase("refused", TaskPhase::Failed).await;
    assert_eq!(status(&failed).error.as_ref().unwrap().reason, "InvalidParams");
    ctl.stop().await;
    assert_eq!(env.served("patch", "enhancetasks/status"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_cancel_the_job_and_fail_the_task() {
    let env = Env::start().await;
    let w = FakeWorker::start(2, Behavior::Hold).await;
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let ctl = start(ctx, env.hub.clone(), test_config());
    // A running task past its deadline, and one in a pool without workers.
    let t = env.create("slow", |s| s.deadline_seconds = 2).await;
    env.create("stuck", |s| {
        s.deadline_seconds = 1;
        s.pool = "empty".into();
    })
    .await;
    let failed = env.wait_phase("slow", TaskPhase::Failed).await;
    let err = status(&failed).error.clone().unwrap();
    assert_eq!(err.reason, "DeadlineExceeded");
    assert!(err.message.contains("2 s"), "{}", err.message);
    let job = format!("{}-1", uid(&t));
    eventually(60, "the job to be cancelled", || async { w.deletes().contains(&job).then_some(()) }).await;

    let stuck = env.wait_phase("stuck", TaskPhase::Failed).await;
    let err = status(&stuck).error.clone().unwrap();
    assert_eq!(err.reason, "DeadlineExceeded");
    assert!(err.message.contains("free"), "{}", err.message);
    assert_eq!(status(&stuck).attempts, 0);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_by_annotation_and_by_deletion() {
    let env = Env::start().await;
    let w = FakeWorker::start(4, Behavior::Hold).await;
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let ctl = start(ctx, env.hub.clone(), test_config());

    let running = env.create("running", |_| {}).await;
    env.wait_phase("running", TaskPhase::Running).await;
    env.annotate("running", "purrify.io/cancel", "true").await;
    let c = env.wait_phase("running", TaskPhase::Cancelled).await;
    assert_eq!(status(&c).error.as_ref().unwrap().reason, "Cancelled");
    assert!(w.deletes().contains(&format!("{}-1", uid(&running))), "the worker job was stopped");

    let queued = env.create("queued", |s| s.pool = "empty".into()).await;
    env.annotate("queued", "purrify.io/cancel", "true").await;
    let c = env.wait_phase("queued", TaskPhase::Cancelled).await;
    assert_eq!(status(&c).attempts, 0);
    let _ = queued;

    // Deleting a running task stops its job; nothing is written to the gone object.
    let doomed = env.create("doomed", |_| {}).await;
    env.wait_phase("doomed", TaskPhase::Running).await;
    let before = env.served("patch", "enhancetasks/status");
    env.tasks().delete("doomed", &DeleteParams::default()).await.unwrap();
    let job = format!("{}-1", uid(&doomed));
    eventually(60, "the deleted task's job to be cancelled", || async { w.deletes().contains(&job).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.served("patch", "enhancetasks/status"), before);
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_users_burst_does_not_starve_another() {
    let env = Env::start().await;
    // Queued before any controller runs, alice's burst first.
    let mut uids = HashMap::new();
    for i in 0..8 {
        let t = env.create(&format!("alice-{i}"), |s| s.owner.as_mut().unwrap().user_id = "alice".into()).await;
        uids.insert(format!("{}-1", uid(&t)), t.name_any());
    }
    for i in 0..2 {
        let t = env.create(&format!("bob-{i}"), |s| s.owner.as_mut().unwrap().user_id = "bob".into()).await;
        uids.insert(format!("{}-1", uid(&t)), t.name_any());
    }
    let urgent = env
        .create("urgent", |s| {
            s.owner.as_mut().unwrap().user_id = "alice".into();
            s.priority = 10;
        })
        .await;
    uids.insert(format!("{}-1", uid(&urgent)), urgent.name_any());

    let w = FakeWorker::start(1, Behavior::Instant).await;
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let ctl = start(ctx, env.hub.clone(), test_config());
    let list = || async {
        let all = env.tasks().list(&ListParams::default()).await.unwrap();
        all.items.iter().all(|t| t.status.as_ref().is_some_and(|s| s.phase == TaskPhase::Succeeded)).then_some(())
    };
    eventually(60, "every task to succeed", list).await;
    ctl.stop().await;

    let order: Vec<String> = w.started().iter().map(|id| uids[id].clone()).collect();
    assert_eq!(order.len(), 11);
    assert_eq!(order[0], "urgent", "priority first: {order:?}");
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(pos("bob-0") <= 2 && pos("bob-1") <= 4, "bob is interleaved with alice's burst: {order:?}");
    let alice: Vec<&String> = order.iter().filter(|o| o.starts_with("alice-")).collect();
    let mut sorted = alice.clone();
    sorted.sort();
    assert_eq!(alice, sorted, "each user's own tasks go oldest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_reattaches_instead_of_rerunning() {
    let env = Env::start().await;
    let w = FakeWorker::start(2, Behavior::Hold).await;
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let first = start(ctx, env.hub.clone(), test_config());
    let t = env.create("longjob", |_| {}).await;
    env.wait_phase("longjob", TaskPhase::Running).await;
    w.wait_started(1).await;
    first.stop().await;

    // A new operator process: new registry, same worker, the task still Running.
    let ctx = env.context();
    add_workers(&ctx, &[&w.url]).await;
    let job = format!("{}-1", uid(&t));
    let second = start(ctx, env.hub.clone(), test_config());
    eventually(60, "the job to be resubmitted", || async { (w.submits().iter().filter(|s| **s == job).count() == 2).then_some(()) }).await;
    w.release(1);
    let done = env.wait_phase("longjob", TaskPhase::Succeeded).await;
    second.stop().await;
    assert_eq!(status(&done).attempts, 1, "the same attempt finished");
    assert_eq!(w.started(), std::slice::from_ref(&job), "the job ran once");
    assert_eq!(w.submits(), [job.clone(), job], "submitted, then re-attached by id");
    assert!(w.deletes().is_empty());
}
