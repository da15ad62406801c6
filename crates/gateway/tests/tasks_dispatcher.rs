//! The dispatcher against fake workers over real HTTP, on SQLite and on PostgreSQL: the
//! happy path, retries on another worker, a worker killed mid-job, bad input, 429s,
//! deadlines, cancellation, per-user fairness and re-attachment after a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use purrify_api::{EnhanceParams, FailReason, TaskStatus};
use purrify_gateway::domain::tasks::{CancelOutcome, DispatchConfig, Dispatcher, ProgressHub};
use purrify_inference::client::Fleet;
use purrify_inference::protocol::ErrorReason;
use purrify_inference::storage::{S3Options, Storage};
use purrify_store::{Db, NewTask, Task, now_ms};
use purrify_testkit::eventually;
use purrify_testkit::fake_worker::{Behavior, FakeWorker, add_workers, result_for};
use support::{TestDb, test_fleet};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn config() -> DispatchConfig {
    DispatchConfig {
        poll_interval: Duration::from_millis(50),
        tick_interval: Duration::from_millis(100),
        progress_interval: Duration::from_millis(50),
        cancel_timeout: Duration::from_secs(2),
        ..DispatchConfig::default()
    }
}

struct Running {
    dispatcher: Dispatcher,
    hub: ProgressHub,
    db: Db,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl Running {
    fn start(db: Db, fleet: Fleet, config: DispatchConfig) -> Running {
        let hub = ProgressHub::default();
        let dispatcher = Dispatcher::new(db.clone(), fleet, None, hub.clone(), config);
        let (stop, stopped) = oneshot::channel();
        let handle = dispatcher.spawn(async move {
            let _ = stopped.await;
        });
        Running { dispatcher, hub, db, stop: Some(stop), handle }
    }

    async fn enqueue(&self, id: &str) -> Task {
        self.dispatcher.enqueue(task(id, None)).await.unwrap()
    }

    /// Waits until the task is final (as the hub shows it) and returns the row.
    async fn finished(&self, id: &str) -> Task {
        eventually(90, &format!("task {id} to finish"), || async {
            let view = self.hub.get_or_load(&self.db, id).await.unwrap()?;
            view.is_finished().then_some(())
        })
        .await;
        self.db.get_task(id).await.unwrap().unwrap()
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.await.unwrap();
    }
}

fn task(id: &str, user: Option<&str>) -> NewTask {
    let mut t = NewTask::new(id, format!("file:///data/in/{id}.jpg"), format!("file:///data/out/{id}.jpg"), EnhanceParams::default());
    t.user_id = user.map(str::to_owned);
    t.request_id = Some(format!("req-{id}"));
    t
}

/// Two fake workers ordered as the fleet breaks ties between idle workers (by endpoint),
/// so a test knows which one gets the first job.
async fn two_workers(first: Behavior, second: Behavior) -> (FakeWorker, FakeWorker) {
    let a = FakeWorker::start(4, Behavior::Succeed).await;
    let b = FakeWorker::start(4, Behavior::Succeed).await;
    let (first_w, second_w) = if a.url < b.url { (a, b) } else { (b, a) };
    first_w.script([first]);
    second_w.script([second]);
    (first_w, second_w)
}

support::on_both_databases!(
    happy_path,
    retryable_error_moves_to_another_worker,
    worker_killed_mid_job_completes_elsewhere,
    bad_input_fails_once_without_retry,
    attempts_are_bounded,
    busy_worker_is_not_an_attempt,
    deadline_cancels_the_worker_job,
    queued_past_deadline_fails,
    cancel_queued_and_processing,
    fairness_across_users,
    restart_reattaches_to_the_same_job,
    graceful_shutdown_leaves_jobs_for_the_next_start,
    housekeeping_deletes_old_tasks_and_their_objects,
    restart_with_an_unknown_worker_requeues,
    cancel_reaches_a_job_nobody_follows,
);

async fn happy_path(t: TestDb) {
    let worker = FakeWorker::start(2, Behavior::Hold).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    let mut all = run.hub.subscribe_all();

    let queued = run.enqueue("happy").await;
    assert_eq!(queued.status, TaskStatus::Queued);
    // Live progress reaches the hub (and, coarsely, the database) while the job runs.
    eventually(90, "live progress in the hub", || async {
        let v = run.hub.get("happy")?;
        (v.progress == 0.5 && v.stage.as_deref() == Some("tiles")).then_some(())
    })
    .await;
    eventually(90, "coarse progress in the database", || async {
        let row = run.db.get_task("happy").await.unwrap()?;
        (row.progress == 0.5).then_some(())
    })
    .await;
    worker.release(1);
    let row = run.finished("happy").await;

    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.job_id.as_deref(), Some("happy-1"));
    assert_eq!(row.worker.as_deref(), Some(worker.url.as_str()));
    let result = row.result.expect("result stored");
    assert_eq!(result.output_uri, "file:///data/out/happy.jpg");
    assert_eq!(row.progress, 1.0);
    assert_eq!(worker.submits(), ["happy-1"]);
    assert_eq!(worker.request_ids(), [Some("req-happy".to_owned())]);

    let view = run.hub.get("happy").unwrap();
    assert_eq!(view.status, TaskStatus::Completed);
    assert_eq!(view.result.as_ref().unwrap().width, 64);
    // The all-tasks stream saw the task queued, in progress and completed, in that order.
    let mut seen: Vec<(TaskStatus, f32)> = Vec::new();
    while let Ok(v) = all.try_recv() {
        seen.push((v.status, v.progress));
    }
    assert_eq!(seen.first().map(|s| s.0), Some(TaskStatus::Queued));
    assert_eq!(seen.last().map(|s| s.0), Some(TaskStatus::Completed));
    assert!(seen.contains(&(TaskStatus::Processing, 0.5)), "{seen:?}");

    let stats = run.dispatcher.stats();
    assert_eq!((stats.dispatched, stats.completed, stats.retries), (1, 1, 0));
    run.shutdown().await;
}

async fn retryable_error_moves_to_another_worker(t: TestDb) {
    let (flaky, good) = two_workers(Behavior::Fail(ErrorReason::Inference, "CUDA error: out of memory at /opt/x"), Behavior::Succeed).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&flaky.url, &good.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    run.enqueue("retry").await;
    let row = run.finished("retry").await;

    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.attempts, 2);
    assert_eq!(flaky.started(), ["retry-1"]);
    assert_eq!(good.started(), ["retry-2"], "the retry went to the other worker");
    assert_eq!(row.worker.as_deref(), Some(good.url.as_str()));
    assert_eq!(run.dispatcher.stats().retries, 1);
    run.shutdown().await;
}

async fn worker_killed_mid_job_completes_elsewhere(t: TestDb) {
    let (doomed, survivor) = two_workers(Behavior::Hold, Behavior::Succeed).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&doomed.url, &survivor.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    run.enqueue("killed").await;
    doomed.wait_started(1).await;
    eventually(90, "progress from the doomed worker", || async {
        let v = run.hub.get("killed")?;
        (v.status == TaskStatus::Processing && v.progress > 0.0).then_some(())
    })
    .await;
    doomed.kill();

    let row = run.finished("killed").await;
    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.attempts, 2);
    assert_eq!(survivor.started(), ["killed-2"]);
    assert_eq!(row.worker.as_deref(), Some(survivor.url.as_str()));
    run.shutdown().await;
}

async fn bad_input_fails_once_without_retry(t: TestDb) {
    let (a, b) = two_workers(
        Behavior::Fail(ErrorReason::BadInput, "cannot decode the image: not a JPEG, PNG, WebP or AVIF"),
        Behavior::Fail(ErrorReason::BadInput, "cannot decode the image: not a JPEG, PNG, WebP or AVIF"),
    )
    .await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&a.url, &b.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    run.enqueue("garbage").await;
    let row = run.finished("garbage").await;

    assert_eq!(row.status, TaskStatus::Failed);
    assert_eq!(row.attempts, 1);
    assert_eq!(row.error_code.as_deref(), Some("BAD_INPUT"));
    assert_eq!(
        row.error_message.as_deref(),
        Some("cannot decode the image: not a JPEG, PNG, WebP or AVIF"),
        "input errors carry the worker's message"
    );
    assert_eq!(a.submits().len() + b.submits().len(), 1, "no retry");
    let view = run.hub.get("garbage").unwrap();
    assert_eq!(view.error.as_ref().unwrap().code, "BAD_INPUT");
    assert_eq!(run.dispatcher.metrics().failed_count(FailReason::BadInput), 1);
    run.shutdown().await;
}

async fn attempts_are_bounded(t: TestDb) {
    let worker = FakeWorker::start(4, Behavior::Fail(ErrorReason::Internal, "panic in /srv/worker/src/x.rs")).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    run.enqueue("doomed").await;
    let row = run.finished("doomed").await;

    assert_eq!(row.status, TaskStatus::Failed);
    assert_eq!(row.attempts, 3);
    // With one worker the retries have nowhere else to go.
    assert_eq!(worker.started(), ["doomed-1", "doomed-2", "doomed-3"]);
    assert_eq!(row.error_code.as_deref(), Some("INTERNAL_ERROR"));
    let message = row.error_message.unwrap();
    assert!(!message.contains("/srv"), "internal details stay in the logs: {message}");
    run.shutdown().await;
}

async fn busy_worker_is_not_an_attempt(t: TestDb) {
    let worker = FakeWorker::start(4, Behavior::Succeed).await;
    worker.script([Behavior::Busy, Behavior::Busy]);
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    run.enqueue("busy").await;
    let row = run.finished("busy").await;

    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.attempts, 1, "429s are not attempts");
    assert_eq!(worker.submits(), ["busy-1", "busy-1", "busy-1"]);
    assert_eq!(worker.started(), ["busy-1"]);
    let stats = run.dispatcher.stats();
    assert_eq!((stats.busy_requeues, stats.retries), (2, 0));
    run.shutdown().await;
}

async fn deadline_cancels_the_worker_job(t: TestDb) {
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let run = Running::start(t.db.clone(), fleet, config());
    let mut slow = task("slow", None);
    slow.deadline = Some(Duration::from_millis(500));
    run.dispatcher.enqueue(slow).await.unwrap();
    let row = run.finished("slow").await;

    assert_eq!(row.status, TaskStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("PROCESSING_TIMEOUT"));
    assert!(row.error_message.as_deref().unwrap().contains("deadline"), "{:?}", row.error_message);
    assert_eq!(worker.deletes(), ["slow-1"], "the worker job was cancelled");
    assert_eq!(run.dispatcher.metrics().failed_count(FailReason::DeadlineExceeded), 1);
    run.shutdown().await;
}

async fn queued_past_deadline_fails(t: TestDb) {
    // No worker at all: the task can only wait, then time out.
    let run = Running::start(t.db.clone(), test_fleet(), config());
    let mut lonely = task("lonely", None);
    lonely.deadline = Some(Duration::from_millis(300));
    run.dispatcher.enqueue(lonely).await.unwrap();
    let row = run.finished("lonely").await;
    assert_eq!(row.status, TaskStatus::Failed);
    assert_eq!(row.error_code.as_deref(), Some("PROCESSING_TIMEOUT"));
    assert_eq!(row.attempts, 0);
    run.shutdown().await;
}

async fn cancel_queued_and_processing(t: TestDb) {
    let fleet = test_fleet();
    let run = Running::start(t.db.clone(), fleet.clone(), config());
    // Queued (no worker yet): cancelled at once.
    run.enqueue("wait").await;
    assert_eq!(run.dispatcher.cancel("wait").await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(run.db.get_task("wait").await.unwrap().unwrap().status, TaskStatus::Cancelled);
    assert_eq!(run.hub.get("wait").unwrap().status, TaskStatus::Cancelled);

    // Processing: the worker job is deleted, then the task is cancelled.
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    add_workers(&fleet, &[&worker.url]).await;
    run.dispatcher.notify();
    run.enqueue("work").await;
    worker.wait_started(1).await;
    assert_eq!(run.dispatcher.cancel("work").await.unwrap(), CancelOutcome::Cancelled);
    let row = run.db.get_task("work").await.unwrap().unwrap();
    assert_eq!(row.status, TaskStatus::Cancelled);
    assert_eq!(worker.deletes(), ["work-1"]);
    assert_eq!(run.hub.get("work").unwrap().status, TaskStatus::Cancelled);
    // Releasing the held job now changes nothing: the result is not wanted any more.
    worker.release(1);

    // Finished and unknown tasks.
    let done_worker = FakeWorker::start(4, Behavior::Succeed).await;
    fleet.remove(&worker.url);
    add_workers(&fleet, &[&done_worker.url]).await;
    run.enqueue("done").await;
    run.finished("done").await;
    assert_eq!(run.dispatcher.cancel("done").await.unwrap(), CancelOutcome::AlreadyFinished(TaskStatus::Completed));
    assert_eq!(run.dispatcher.cancel("nope").await.unwrap(), CancelOutcome::NotFound);
    assert_eq!(run.dispatcher.cancel("wait").await.unwrap(), CancelOutcome::Cancelled, "cancelling twice is harmless");
    assert_eq!(run.dispatcher.stats().cancelled, 2);
    run.shutdown().await;
}

async fn fairness_across_users(t: TestDb) {
    // Queue first (no worker), then let one single-slot worker run them one by one: the
    // order it sees is the dispatch order.
    let base = now_ms() - 10_000;
    let order_in = [
        ("a1", Some("alice"), 0),
        ("a2", Some("alice"), 0),
        ("a3", Some("alice"), 0),
        ("b1", Some("bob"), 0),
        ("c1", Some("carol"), 0),
        ("p1", Some("alice"), 5),
    ];
    for (i, (id, user, priority)) in order_in.iter().enumerate() {
        let mut nt = task(id, *user);
        nt.priority = *priority;
        t.db.insert_task_at(&nt, Duration::from_secs(300), base + i as i64).await.unwrap();
    }
    let fleet = test_fleet();
    let run = Running::start(t.db.clone(), fleet.clone(), config());
    let worker = FakeWorker::start(1, Behavior::Succeed).await;
    add_workers(&fleet, &[&worker.url]).await;
    run.dispatcher.notify();
    for (id, _, _) in order_in {
        run.finished(id).await;
    }
    assert_eq!(worker.started(), ["p1-1", "a1-1", "b1-1", "c1-1", "a2-1", "a3-1"]);
    run.shutdown().await;
}

async fn restart_reattaches_to_the_same_job(t: TestDb) {
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let first = Running::start(t.db.clone(), fleet, config());
    first.enqueue("phoenix").await;
    worker.wait_started(1).await;
    let first_stats = first.dispatcher.metrics();
    // The gateway dies: its loop and every follower go at once.
    first.handle.abort();
    let _ = first.handle.await;
    drop(first.dispatcher);
    let row = t.db.get_task("phoenix").await.unwrap().unwrap();
    assert_eq!(row.status, TaskStatus::Processing);

    // A new gateway: new pool, new fleet, new hub, same database.
    let db = t.reopen().await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let second = Running::start(db, fleet, config());
    eventually(90, "the resubmission of the same job id", || async { (worker.submits().len() >= 2).then_some(()) }).await;
    worker.release(1);
    let row = second.finished("phoenix").await;

    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.attempts, 1, "re-attaching is not a new attempt");
    assert_eq!(worker.submits(), ["phoenix-1", "phoenix-1"]);
    assert_eq!(worker.started(), ["phoenix-1"], "the job ran once");
    let stats = second.dispatcher.stats();
    assert_eq!((stats.reattached, stats.completed, stats.dispatched), (1, 1, 0));
    assert_eq!(first_stats.snapshot().completed, 0);
    second.shutdown().await;
}

async fn graceful_shutdown_leaves_jobs_for_the_next_start(t: TestDb) {
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let first = Running::start(t.db.clone(), fleet.clone(), config());
    first.enqueue("calm").await;
    worker.wait_started(1).await;
    first.shutdown().await;
    assert_eq!(t.db.get_task("calm").await.unwrap().unwrap().status, TaskStatus::Processing, "shutdown neither fails nor re-runs the task");
    assert!(worker.deletes().is_empty(), "the job keeps running on its worker");

    // Finished while no gateway was watching; the next start collects the result.
    worker.release(1);
    let second = Running::start(t.db.clone(), fleet, config());
    let row = second.finished("calm").await;
    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(worker.started(), ["calm-1"]);
    second.shutdown().await;
}

async fn housekeeping_deletes_old_tasks_and_their_objects(t: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::new(dir.path().to_str().unwrap(), S3Options::default()).unwrap());
    let mut objects = Vec::new();
    for id in ["old", "active"] {
        let input = storage.uri_for(&format!("in/{id}.jpg"));
        let output = storage.uri_for(&format!("out/{id}.jpg"));
        storage.put(&input, Bytes::from_static(b"in")).await.unwrap();
        storage.put(&output, Bytes::from_static(b"out")).await.unwrap();
        let mut nt = NewTask::new(id, &input, &output, EnhanceParams::default());
        nt.user_id = None;
        t.db.insert_task(&nt, Duration::from_secs(300)).await.unwrap();
        objects.push((input, output));
    }
    assert!(t.db.claim_task("old", 0, "http://w", "old-1").await.unwrap());
    let result = result_for(&purrify_inference::protocol::JobRequest {
        id: "old-1".into(),
        input_uri: objects[0].0.clone(),
        output_uri: objects[0].1.clone(),
        params: EnhanceParams::default(),
    });
    assert!(t.db.complete_task("old", "old-1", &result).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;

    let dispatcher = Dispatcher::new(
        t.db.clone(),
        test_fleet(),
        Some(storage.clone()),
        ProgressHub::default(),
        DispatchConfig { retention: Some(Duration::ZERO), ..config() },
    );
    assert_eq!(dispatcher.housekeep().await.unwrap(), 1);
    assert!(t.db.get_task("old").await.unwrap().is_none());
    assert!(t.db.get_task("active").await.unwrap().is_some());
    let exists = |uri: &str| {
        let path = url::Url::parse(uri).unwrap().to_file_path().unwrap();
        path.exists()
    };
    assert!(!exists(&objects[0].0) && !exists(&objects[0].1), "old objects deleted");
    assert!(exists(&objects[1].0) && exists(&objects[1].1), "active objects kept");
    assert_eq!(dispatcher.housekeep().await.unwrap(), 0);
}

async fn restart_with_an_unknown_worker_requeues(t: TestDb) {
    let gone = FakeWorker::start(4, Behavior::Hold).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&gone.url]).await;
    let first = Running::start(t.db.clone(), fleet, config());
    first.enqueue("moved").await;
    gone.wait_started(1).await;
    first.handle.abort();
    let _ = first.handle.await;

    // The next gateway knows only another worker (the first was unregistered meanwhile).
    let other = FakeWorker::start(4, Behavior::Succeed).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&other.url]).await;
    let second = Running::start(t.db.clone(), fleet, config());
    let row = second.finished("moved").await;

    assert_eq!(row.status, TaskStatus::Completed);
    assert_eq!(row.attempts, 2);
    assert_eq!(other.started(), ["moved-2"]);
    eventually(90, "the orphaned job to be cancelled on its old worker", || async { (gone.deletes() == ["moved-1"]).then_some(()) }).await;
    second.shutdown().await;
}

async fn cancel_reaches_a_job_nobody_follows(t: TestDb) {
    let worker = FakeWorker::start(4, Behavior::Hold).await;
    let fleet = test_fleet();
    add_workers(&fleet, &[&worker.url]).await;
    let first = Running::start(t.db.clone(), fleet.clone(), config());
    first.enqueue("adrift").await;
    worker.wait_started(1).await;
    first.shutdown().await;

    // A dispatcher whose loop is not running (e.g. still starting) can still cancel it.
    let idle = Dispatcher::new(t.db.clone(), fleet, None, ProgressHub::default(), config());
    assert_eq!(idle.cancel("adrift").await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(worker.deletes(), ["adrift-1"]);
    assert_eq!(t.db.get_task("adrift").await.unwrap().unwrap().status, TaskStatus::Cancelled);
}
