//! `make bench` (operator part): the EnhanceTask controller against kubesim (in process,
//! real HTTP) and fake workers that finish jobs at once.
//!
//! 1. Backlog: `--tasks` tasks (default 1,000) are queued before the controller starts;
//!    dispatch throughput, creation -> accepted latency (p50/p99, dominated by the wait in
//!    the queue), and API writes per task, TTL deletes included (`ttlSecondsAfterFinished: 0`).
//! 2. Trickle: `--trickle` tasks (default 200) created one at a time with the controller
//!    running and workers free: creation -> accepted is the scheduling latency itself
//!    (watch delivery, queue, pick, submit).
//!
//! `cargo run --release -p purrify-operator --example dispatch_bench -- [--tasks N]
//!  [--trickle N] [--workers N] [--capacity N] [--no-events]`

#[path = "../tests/task_support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::ResourceExt;
use purrify_api::TaskPhase;
use purrify_operator::task::TaskConfig;
use purrify_testkit::fake_worker::{Behavior, FakeWorker};
use support::{Env, add_workers, start};

struct Args {
    tasks: usize,
    trickle: usize,
    workers: usize,
    capacity: u32,
    events: bool,
}

fn args() -> Args {
    let mut a = Args { tasks: 1000, trickle: 200, workers: 4, capacity: 8, events: true };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<usize>().ok()).unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--tasks" => a.tasks = num(),
            "--trickle" => a.trickle = num(),
            "--workers" => a.workers = num().max(1),
            "--capacity" => a.capacity = num().max(1) as u32,
            "--no-events" => a.events = false,
            "--bench" => {} // passed by `cargo bench`-style runners
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Creation -> accepted per task, from when each create was sent to when a worker got its job.
fn latencies(created: &HashMap<String, Instant>, workers: &[FakeWorker]) -> Vec<Duration> {
    let mut out: Vec<Duration> = workers
        .iter()
        .flat_map(|w| w.started_at())
        .filter_map(|(job, at)| {
            let uid = job.rsplit_once('-').map(|(u, _)| u)?;
            created.get(uid).map(|c| at.saturating_duration_since(*c))
        })
        .collect();
    out.sort();
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    let env = Env::start().await;
    let mut workers = Vec::new();
    for _ in 0..a.workers {
        workers.push(FakeWorker::start(a.capacity, Behavior::Instant).await);
    }
    let ctx = env.context();
    let urls: Vec<&str> = workers.iter().map(|w| w.url.as_str()).collect();
    add_workers(&ctx, &urls).await;
    let config = TaskConfig { events: a.events, ..TaskConfig::default() };

    println!("operator dispatch bench: {} workers x {} slots, events {}", a.workers, a.capacity, if a.events { "on" } else { "off" });

    // ---- backlog ----
    let created = Arc::new(Mutex::new(HashMap::new()));
    let t_create = Instant::now();
    futures::stream::iter(0..a.tasks)
        .for_each_concurrent(16, |i| {
            let env = &env;
            let created = created.clone();
            async move {
                let sent = Instant::now();
                let t = env
                    .create(&format!("bench-{i:05}"), |s| {
                        s.ttl_seconds_after_finished = Some(0);
                        s.owner.as_mut().unwrap().user_id = format!("user-{}", i % 50);
                    })
                    .await;
                created.lock().unwrap().insert(t.uid().unwrap(), sent);
            }
        })
        .await;
    let create_s = t_create.elapsed();
    let writes_before = env.task_writes();

    let started = Instant::now();
    let ctl = start(ctx.clone(), env.hub.clone(), config.clone());
    let total = |ws: &[FakeWorker]| ws.iter().map(|w| w.started().len()).sum::<usize>();
    wait_for("every backlog job to be accepted", Duration::from_secs(600), || total(&workers) >= a.tasks).await;
    let dispatched_in = started.elapsed();
    wait_for("every backlog task to be deleted after its TTL", Duration::from_secs(600), || {
        env.served("delete", "enhancetasks") >= a.tasks as u64
    })
    .await;
    let finished_in = started.elapsed();
    let backlog = latencies(&created.lock().unwrap(), &workers);
    let writes = env.task_writes() - writes_before + a.tasks as u64; // + the creates
    let text = env.metrics.encode();
    let rounds = metric(&text, "purrify_operator_reconcile_duration_seconds_count{controller=\"enhancetask\"}");
    let round_s = metric(&text, "purrify_operator_reconcile_duration_seconds_sum{controller=\"enhancetask\"}");
    let events = env.operator_writes("create", "events");

    println!("backlog: {} tasks queued (created in {:.2} s), then the controller started", a.tasks, create_s.as_secs_f64());
    println!(
        "  dispatch throughput  {:>8.0} tasks/s  (all accepted in {:.2} s; all finished and deleted in {:.2} s: {:.0} tasks/s)",
        a.tasks as f64 / dispatched_in.as_secs_f64(),
        dispatched_in.as_secs_f64(),
        finished_in.as_secs_f64(),
        a.tasks as f64 / finished_in.as_secs_f64()
    );
    println!(
        "  creation -> accepted p50 {:>8.1} ms   p99 {:>8.1} ms   (includes the wait behind the backlog)",
        ms(percentile(&backlog, 0.50)),
        ms(percentile(&backlog, 0.99))
    );
    println!(
        "  API writes per task  {:>8.2}  (enhancetasks: create {}, status patches {}, deletes {}); Events {:.2}/task, counted apart",
        writes as f64 / a.tasks as f64,
        a.tasks,
        env.served("patch", "enhancetasks/status"),
        env.served("delete", "enhancetasks"),
        events as f64 / a.tasks as f64
    );
    println!(
        "  controller rounds    {:>8.0}  mean {:.3} ms each (index, chores, dispatch decisions; no I/O)",
        rounds,
        if rounds > 0.0 { round_s / rounds * 1000.0 } else { 0.0 }
    );

    // ---- trickle ----
    if a.trickle > 0 {
        let accepted_before = total(&workers);
        let mut created = HashMap::new();
        for i in 0..a.trickle {
            let sent = Instant::now();
            let t = env.create(&format!("trickle-{i:05}"), |s| s.ttl_seconds_after_finished = Some(0)).await;
            created.insert(t.uid().unwrap(), sent);
            let want = accepted_before + i + 1;
            wait_for("a trickled job to be accepted", Duration::from_secs(60), || total(&workers) >= want).await;
        }
        let all = (a.tasks + a.trickle) as u64;
        wait_for("every trickled task to be deleted", Duration::from_secs(60), || env.served("delete", "enhancetasks") >= all).await;
        let lat = latencies(&created, &workers);
        println!("trickle: {} tasks created one at a time, workers free", a.trickle);
        println!(
            "  creation -> accepted p50 {:>8.1} ms   p99 {:>8.1} ms   (watch delivery + schedule + submit)",
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99))
        );
    }

    ctl.stop().await;
    let left = env.tasks().list(&Default::default()).await.map(|l| l.items.len()).unwrap_or(0);
    let stuck = env
        .tasks()
        .list(&Default::default())
        .await
        .map(|l| l.items.iter().filter(|t| t.status.as_ref().is_none_or(|s| s.phase != TaskPhase::Succeeded)).count())
        .unwrap_or(0);
    if left > 0 {
        println!("note: {left} tasks not yet deleted at exit ({stuck} not Succeeded)");
    }
}
