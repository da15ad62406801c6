//! Fleet, prober and breaker against fake workers over real HTTP on 127.0.0.1. Time for
//! breaker cooldowns and busy back-off comes from a `ManualClock`, so nothing sleeps for it.

#![cfg(feature = "client")]

mod client_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use client_support::{FakeWorker, Reply, accepted, worker_info};
use purrify_inference::client::{
    BreakerConfig, BreakerState, ClientConfig, Fleet, FleetConfig, ManualClock, ProbeSummary, WorkerClient, WorkerSpec, format_rfc3339,
    parse_rfc3339,
};
use purrify_inference::protocol::{EnhanceParams, JobRequest};

const COOLDOWN: Duration = Duration::from_secs(30);

/// A worker whose behaviour tests flip at run time.
#[derive(Default)]
struct Knobs {
    not_ready: AtomicBool,
    fail_jobs: AtomicBool,
    busy: AtomicBool,
    slow_probe: AtomicBool,
    capacity: AtomicU32,
    reported_in_flight: AtomicU32,
}

async fn worker(capacity: u32) -> (FakeWorker, Arc<Knobs>) {
    let knobs = Arc::new(Knobs { capacity: AtomicU32::new(capacity), ..Knobs::default() });
    let k = knobs.clone();
    let w = FakeWorker::start(move |r| match r.route() {
        ("GET", "/readyz") if k.slow_probe.load(Ordering::SeqCst) => Reply::Hang,
        ("GET", "/readyz") if k.not_ready.load(Ordering::SeqCst) => Reply::text(503, "warming up"),
        ("GET", "/readyz") => Reply::text(200, "ready"),
        ("GET", "/v1/info") => {
            let mut info = worker_info(k.capacity.load(Ordering::SeqCst), k.reported_in_flight.load(Ordering::SeqCst));
            info.ready = !k.not_ready.load(Ordering::SeqCst);
            Reply::json(200, info)
        }
        ("POST", "/v1/jobs") if k.busy.load(Ordering::SeqCst) => Reply::busy("5"),
        ("POST", "/v1/jobs") if k.fail_jobs.load(Ordering::SeqCst) => Reply::text(500, "CUDA error"),
        ("POST", "/v1/jobs") => {
            let req: JobRequest = serde_json::from_slice(&r.body).unwrap();
            Reply::json(202, accepted(&req.id))
        }
        _ => Reply::empty(404),
    })
    .await;
    (w, knobs)
}

fn fleet(clock: Arc<ManualClock>) -> Fleet {
    let config = FleetConfig {
        client: ClientConfig { timeout: Duration::from_secs(5), ..ClientConfig::default() },
        breaker: BreakerConfig { failure_threshold: 2, cooldown: COOLDOWN, max_cooldown: 4 * COOLDOWN },
        probe_timeout: Duration::from_secs(5),
        default_capacity: 1,
    };
    let http = WorkerClient::http_client(&config.client).unwrap();
    Fleet::with_parts(config, http, clock)
}

fn job(id: &str) -> JobRequest {
    JobRequest { id: id.into(), input_uri: "file:///in.png".into(), output_uri: "file:///out.jpg".into(), params: EnhanceParams::default() }
}

#[tokio::test]
async fn probed_workers_get_least_loaded_dispatch_up_to_capacity() {
    let (a, _) = worker(1).await;
    let (b, kb) = worker(3).await;
    kb.reported_in_flight.store(1, Ordering::SeqCst);
    let fleet = fleet(Arc::new(ManualClock::new()));
    assert!(fleet.upsert(WorkerSpec::new(a.url()).with_name("pod-a")).unwrap());
    assert!(fleet.upsert(WorkerSpec::new(b.url()).with_name("pod-b")).unwrap());
    assert!(fleet.pick().is_none(), "unprobed workers get nothing");

    let summary = fleet.probe_once().await;
    assert_eq!(summary, ProbeSummary { probed: 2, ready: 2, not_ready: 0, down: 0 });
    let sb = fleet.worker(&b.url()).unwrap();
    assert_eq!((sb.capacity, sb.in_flight, sb.healthy), (3, 1, true), "a job of another dispatcher counts");
    assert_eq!(sb.gpu.as_ref().unwrap().name, "Fake T4");

    // a: 0/1, b: 1/3 -> a; then a is full -> b twice; then everything is full.
    let mut leases = Vec::new();
    while let Some(mut lease) = fleet.pick() {
        let r = lease.client().with_request_id("rid-1").submit(&job(&format!("t{}", leases.len()))).await;
        lease.record(&r);
        assert!(r.is_ok(), "{r:?}");
        leases.push(lease);
    }
    let names: Vec<&str> = leases.iter().map(|l| l.name()).collect();
    assert_eq!(names, ["pod-a", "pod-b", "pod-b"]);
    assert!(b.requests().iter().filter(|r| r.path == "/v1/jobs").all(|r| r.header("x-request-id") == Some("rid-1")));

    let snap = fleet.snapshot();
    assert_eq!((snap.healthy_workers, snap.capacity, snap.in_flight), (2, 4, 4));
    assert_eq!((snap.counters.picks, snap.counters.successes, snap.counters.pick_misses), (3, 3, 2));
    let json = serde_json::to_value(&snap).unwrap();
    let heartbeat = json["workers"][0]["last_heartbeat"].as_str().unwrap();
    assert_eq!(format_rfc3339(parse_rfc3339(heartbeat).unwrap()), heartbeat);

    leases.clear();
    assert_eq!(fleet.snapshot().in_flight, 1, "leases give their slots back on drop");
}

#[tokio::test]
async fn worker_going_down_opens_its_breaker_and_a_probe_after_cooldown_restores_it() {
    let (a, ka) = worker(2).await;
    let (b, _) = worker(1).await;
    let clock = Arc::new(ManualClock::new());
    let fleet = fleet(clock.clone());
    fleet.upsert(WorkerSpec::new(a.url())).unwrap();
    fleet.upsert(WorkerSpec::new(b.url())).unwrap();
    fleet.probe_once().await;
    let only_a = [b.url()];

    a.stop().await;
    assert_eq!(fleet.probe_once().await.down, 1);
    let sa = fleet.worker(&a.url()).unwrap();
    assert!(!sa.healthy);
    assert_eq!(sa.breaker, BreakerState::Closed, "one failure is below the threshold");
    assert!(sa.last_error.is_some());
    assert!(fleet.pick_excluding(&only_a).is_none(), "unhealthy workers are skipped at once");
    fleet.probe_once().await;
    assert_eq!(fleet.worker(&a.url()).unwrap().breaker, BreakerState::Open);
    assert_eq!(fleet.counters().breaker_trips, 1);

    // Only b takes work now.
    let lease = fleet.pick().unwrap();
    assert_eq!(lease.endpoint(), b.url());
    assert!(fleet.pick().is_none());
    drop(lease);

    // Back up, but the breaker keeps it out until the cooldown is over.
    a.restart().await;
    fleet.probe_once().await;
    let sa = fleet.worker(&a.url()).unwrap();
    assert!(sa.healthy && !sa.available);
    assert_eq!(sa.breaker, BreakerState::Open);
    assert!(fleet.pick_excluding(&only_a).is_none());

    // After the cooldown exactly one request probes it; it fails and the cooldown grows.
    clock.advance(COOLDOWN);
    assert_eq!(fleet.worker(&a.url()).unwrap().breaker, BreakerState::HalfOpen);
    ka.fail_jobs.store(true, Ordering::SeqCst);
    let mut probe = fleet.pick_excluding(&only_a).unwrap();
    assert!(probe.is_probe());
    assert!(fleet.pick_excluding(&only_a).is_none(), "a single probe at a time");
    let r = probe.client().submit(&job("probe-1")).await;
    assert!(matches!(&r, Err(e) if e.is_worker_failure()), "{r:?}");
    probe.record(&r);
    drop(probe);
    assert_eq!(fleet.worker(&a.url()).unwrap().breaker, BreakerState::Open);
    clock.advance(COOLDOWN);
    assert!(fleet.pick_excluding(&only_a).is_none(), "cooldown doubled after the failed probe");

    // Second half of the doubled cooldown: this time the health prober is the probe.
    ka.fail_jobs.store(false, Ordering::SeqCst);
    clock.advance(COOLDOWN);
    fleet.probe_once().await;
    let sa = fleet.worker(&a.url()).unwrap();
    assert_eq!((sa.breaker, sa.healthy, sa.available), (BreakerState::Closed, true, true));
    let mut lease = fleet.pick_excluding(&only_a).unwrap();
    assert!(!lease.is_probe());
    let r = lease.client().submit(&job("after")).await;
    lease.record(&r);
    assert!(r.is_ok());
}

#[tokio::test]
async fn a_successful_request_probe_closes_the_breaker() {
    let (a, ka) = worker(1).await;
    let clock = Arc::new(ManualClock::new());
    let fleet = fleet(clock.clone());
    fleet.upsert(WorkerSpec::new(a.url())).unwrap();
    assert_eq!(fleet.probe_worker(&a.url()).await, Some(true));
    assert_eq!(fleet.probe_worker("http://127.0.0.1:1").await, None, "not in the fleet");

    ka.fail_jobs.store(true, Ordering::SeqCst);
    for i in 0..2 {
        let mut lease = fleet.pick().unwrap();
        let r = lease.client().submit(&job(&format!("f{i}"))).await;
        lease.record(&r);
    }
    let sa = fleet.worker(&a.url()).unwrap();
    assert_eq!(sa.breaker, BreakerState::Open);
    assert!(sa.last_error.unwrap().contains("CUDA error"));

    ka.fail_jobs.store(false, Ordering::SeqCst);
    clock.advance(COOLDOWN);
    let mut probe = fleet.pick().unwrap();
    assert!(probe.is_probe());
    let r = probe.client().submit(&job("p")).await;
    probe.record(&r);
    assert_eq!(fleet.worker(&a.url()).unwrap().breaker, BreakerState::Closed);
}

#[tokio::test]
async fn busy_worker_is_skipped_for_retry_after_then_used_again() {
    let (a, ka) = worker(4).await;
    let (b, kb) = worker(4).await;
    let clock = Arc::new(ManualClock::new());
    let fleet = fleet(clock.clone());
    fleet.sync([WorkerSpec::new(a.url()), WorkerSpec::new(b.url())]).unwrap();
    fleet.probe_once().await;
    // Equal load: the tie goes to the first endpoint in order, whichever port that is.
    let ((first, k_first), (second, _)) = if a.url() < b.url() { ((&a, &ka), (&b, &kb)) } else { ((&b, &kb), (&a, &ka)) };
    k_first.busy.store(true, Ordering::SeqCst);

    // Retry on another worker after a 429, as the dispatcher does.
    let mut tried = Vec::new();
    let mut lease = fleet.pick().unwrap();
    assert_eq!(lease.endpoint(), first.url());
    let r = lease.client().submit(&job("t")).await;
    lease.record(&r);
    assert!(matches!(r, Err(ref e) if e.retry_elsewhere()), "{r:?}");
    tried.push(lease.endpoint().to_owned());
    drop(lease);
    let lease = fleet.pick_excluding(&tried).unwrap();
    assert_eq!(lease.endpoint(), second.url());
    drop(lease);

    let s = fleet.worker(&first.url()).unwrap();
    assert_eq!((s.busy, s.available, s.breaker), (1, false, BreakerState::Closed));
    for _ in 0..3 {
        assert_eq!(fleet.pick().unwrap().endpoint(), second.url());
    }
    clock.advance(Duration::from_secs(5));
    assert!(fleet.worker(&first.url()).unwrap().available);
}

#[tokio::test]
async fn warming_and_silent_workers_are_unhealthy_but_only_silence_counts_as_failure() {
    let (a, ka) = worker(2).await;
    let (b, kb) = worker(2).await;
    let clock = Arc::new(ManualClock::new());
    let config = FleetConfig {
        probe_timeout: Duration::from_millis(200),
        breaker: BreakerConfig { failure_threshold: 1, ..BreakerConfig::default() },
        ..FleetConfig::default()
    };
    let fleet = Fleet::with_parts(config, WorkerClient::http_client(&ClientConfig::default()).unwrap(), clock);
    fleet.upsert(WorkerSpec::new(a.url())).unwrap();
    fleet.upsert(WorkerSpec::new(b.url())).unwrap();
    ka.not_ready.store(true, Ordering::SeqCst);
    kb.slow_probe.store(true, Ordering::SeqCst);

    let summary = fleet.probe_once().await;
    assert_eq!((summary.not_ready, summary.down), (1, 1));
    let (sa, sb) = (fleet.worker(&a.url()).unwrap(), fleet.worker(&b.url()).unwrap());
    assert!(!sa.healthy && sa.last_heartbeat.is_some(), "a warming worker still answers");
    assert_eq!(sa.breaker, BreakerState::Closed);
    assert!(!sb.healthy && sb.last_heartbeat.is_none());
    assert!(sb.last_error.unwrap().contains("timed out"));
    assert_eq!(sb.breaker, BreakerState::Open);
    assert_eq!(fleet.counters().probe_failures, 1);
    assert!(fleet.pick().is_none());

    ka.not_ready.store(false, Ordering::SeqCst);
    fleet.probe_once().await;
    assert!(fleet.worker(&a.url()).unwrap().healthy);
    assert!(fleet.pick().is_some());
}

#[tokio::test]
async fn background_prober_tracks_health_and_stops_on_shutdown() {
    let (a, ka) = worker(1).await;
    let fleet = Fleet::new(FleetConfig::default()).unwrap();
    fleet.upsert(WorkerSpec::new(a.url())).unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let prober = fleet.spawn_prober(Duration::from_millis(10), async move {
        let _ = stop_rx.changed().await;
    });

    wait_until(|| fleet.worker(&a.url()).unwrap().healthy).await;
    ka.not_ready.store(true, Ordering::SeqCst);
    wait_until(|| !fleet.worker(&a.url()).unwrap().healthy).await;
    ka.not_ready.store(false, Ordering::SeqCst);
    wait_until(|| fleet.worker(&a.url()).unwrap().healthy).await;

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(20), prober).await.expect("prober stops").unwrap();
    assert!(fleet.counters().probes >= 3);
}

/// Polls a condition the prober makes true in the background; bounded, not a timing check.
async fn wait_until(cond: impl Fn() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not reached");
}
