//! `WorkerClient` against a scripted fake worker over real HTTP on 127.0.0.1.

#![cfg(feature = "client")]

mod client_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use client_support::{After, FakeWorker, Reply, accepted, event_json, job_result, status, worker_info};
use futures::StreamExt;
use purrify_inference::client::{ClientConfig, ClientError, JobOutcome, WorkerClient};
use purrify_inference::protocol::{EnhanceParams, ErrorReason, JobError, JobEvent, JobRequest, JobState, WorkerErrorBody};

/// Safety net so a regression hangs a test for seconds, not forever. Not an assertion on time.
const GUARD: Duration = Duration::from_secs(20);

fn fast_config() -> ClientConfig {
    ClientConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        event_idle_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(10),
        max_poll_failures: 2,
    }
}

fn client(w: &FakeWorker) -> WorkerClient {
    WorkerClient::with_config(&w.url(), fast_config()).unwrap()
}

fn job(id: &str) -> JobRequest {
    JobRequest {
        id: id.into(),
        input_uri: "file:///in/cat.png".into(),
        output_uri: format!("file:///out/{id}.jpg"),
        params: EnhanceParams::default(),
    }
}

fn progress(p: f32) -> JobEvent {
    JobEvent::Progress { progress: p, stage: "tiles".into() }
}

#[tokio::test]
async fn submit_posts_the_job_and_forwards_the_request_id() {
    let w = FakeWorker::start(|r| match r.route() {
        ("POST", "/v1/jobs") => {
            let req: JobRequest = serde_json::from_slice(&r.body).unwrap();
            Reply::json(202, accepted(&req.id))
        }
        _ => Reply::empty(500),
    })
    .await;
    let c = client(&w).with_request_id("req-42");
    let got = c.submit(&job("j1")).await.unwrap();
    assert_eq!(got, accepted("j1"));

    let reqs = w.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].header("x-request-id"), Some("req-42"));
    assert_eq!(reqs[0].header("content-type"), Some("application/json"));
    let sent: JobRequest = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(sent, job("j1"));
    assert!(client(&w).request_id().is_none(), "the original client is untouched");
}

#[tokio::test]
async fn full_worker_answers_busy_with_retry_after() {
    let w = FakeWorker::start(|_| Reply::busy("7")).await;
    let e = client(&w).submit(&job("j1")).await.unwrap_err();
    assert_eq!(e, ClientError::Busy { retry_after: Duration::from_secs(7) });
    assert_eq!(e.category(), "busy");
    assert!(e.retry_elsewhere() && !e.is_worker_failure());
}

#[tokio::test]
async fn bad_parameters_are_rejected_with_the_workers_message() {
    let w =
        FakeWorker::start(|_| Reply::json(422, WorkerErrorBody { error: "invalid_params".into(), message: "scale must be 2 or 4".into() }))
            .await;
    let e = client(&w).submit(&job("j1")).await.unwrap_err();
    assert_eq!(e, ClientError::Rejected { status: 422, message: "scale must be 2 or 4".into() });
    assert!(!e.retry_elsewhere());
}

#[tokio::test]
async fn server_errors_dead_and_silent_workers_are_unavailable() {
    let w = FakeWorker::start(|r| match r.route() {
        ("GET", "/v1/info") => Reply::text(500, "boom"),
        _ => Reply::Hang,
    })
    .await;
    let e = client(&w).info().await.unwrap_err();
    assert!(matches!(&e, ClientError::Unavailable(m) if m.contains("500") && m.contains("boom")), "{e}");

    let impatient = ClientConfig { timeout: Duration::from_millis(100), ..fast_config() };
    let e = WorkerClient::with_config(&w.url(), impatient).unwrap().healthz().await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable(_)), "{e}");

    w.stop().await;
    let e = client(&w).healthz().await.unwrap_err();
    assert!(matches!(e, ClientError::Unavailable(_)), "{e}");
    assert!(e.retry_elsewhere() && e.is_worker_failure());
}

#[tokio::test]
async fn status_cancel_and_unknown_jobs() {
    let w = FakeWorker::start(|r| match r.route() {
        ("GET", "/v1/jobs/j1") => Reply::json(200, status("j1", JobState::Running, 0.5)),
        ("DELETE", "/v1/jobs/j1") => Reply::empty(202),
        ("GET", "/v1/jobs/garbled") => Reply::text(200, "{not json"),
        _ => Reply::json(404, WorkerErrorBody { error: "not_found".into(), message: "no such job".into() }),
    })
    .await;
    let c = client(&w);
    assert_eq!(c.status("j1").await.unwrap(), status("j1", JobState::Running, 0.5));
    c.cancel("j1").await.unwrap();
    assert_eq!(c.status("nope").await.unwrap_err(), ClientError::NotFound);
    assert_eq!(c.cancel("nope").await.unwrap_err(), ClientError::NotFound);
    assert!(matches!(c.status("garbled").await.unwrap_err(), ClientError::Protocol(_)));
    // Outside job URLs a 404 means "not a worker", which is not the same as an unknown job.
    assert!(matches!(c.info().await.unwrap_err(), ClientError::Protocol(_)));
}

#[tokio::test]
async fn health_readiness_and_info() {
    let ready = Arc::new(AtomicUsize::new(0));
    let r2 = ready.clone();
    let w = FakeWorker::start(move |r| match r.route() {
        ("GET", "/healthz") => Reply::text(200, "ok"),
        ("GET", "/readyz") if r2.load(Ordering::SeqCst) == 0 => Reply::text(503, "warming up"),
        ("GET", "/readyz") => Reply::text(200, "ready"),
        ("GET", "/v1/info") => Reply::json(200, worker_info(4, 1)),
        _ => Reply::empty(404),
    })
    .await;
    let c = client(&w);
    c.healthz().await.unwrap();
    assert!(!c.readyz().await.unwrap(), "503 is not ready, not an error");
    ready.store(1, Ordering::SeqCst);
    assert!(c.readyz().await.unwrap());
    assert_eq!(c.info().await.unwrap(), worker_info(4, 1));
}

#[tokio::test]
async fn events_split_across_writes_are_reassembled() {
    let done = event_json(&JobEvent::Done { result: job_result("j1") });
    let (done_a, done_b) = done.split_at(done.len() / 2);
    let pieces = [
        ": connected\n\n".to_owned(),
        "event: progress\r\ndata: {\"type\":\"progress\",".to_owned(),
        "\"progress\":0.25,\"stage\":\"tiles\"}\r".to_owned(),
        "\n\r\n: keep-alive\n\nevent: progress\ndata: ".to_owned(),
        format!("{}\n\nevent: done\ndata: {done_a}", event_json(&progress(0.75))),
        format!("{done_b}\n"),
        "\n".to_owned(),
    ];
    let w = FakeWorker::start(move |r| match r.route() {
        ("GET", "/v1/jobs/j1/events") => {
            // Hold: the stream must end at the terminal event, not wait for the server to close.
            Reply::sse(&pieces.iter().map(String::as_str).collect::<Vec<_>>(), After::Hold)
        }
        _ => Reply::empty(404),
    })
    .await;
    let c = client(&w).with_request_id("req-7");
    let events: Vec<_> = tokio::time::timeout(GUARD, c.events("j1").collect()).await.unwrap();
    let events: Vec<JobEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events, [progress(0.25), progress(0.75), JobEvent::Done { result: job_result("j1") }]);
    assert_eq!(w.requests()[0].header("x-request-id"), Some("req-7"));
    assert_eq!(w.requests()[0].header("accept"), Some("text/event-stream"));
}

#[tokio::test]
async fn event_stream_that_ends_early_says_so() {
    let p = format!("event: progress\ndata: {}\n\n", event_json(&progress(0.5)));
    let w = FakeWorker::start(move |r| match r.path.as_str() {
        "/v1/jobs/finished/events" => Reply::sse(&[&p], After::Finish),
        "/v1/jobs/dropped/events" => Reply::sse(&[&p], After::Drop),
        "/v1/jobs/text/events" => Reply::text(200, "hello"),
        "/v1/jobs/junk/events" => Reply::sse(&["event: done\ndata: {\"type\":\"done\"}\n\n"], After::Hold),
        _ => Reply::empty(404),
    })
    .await;
    let c = client(&w);
    for id in ["finished", "dropped"] {
        let events: Vec<_> = tokio::time::timeout(GUARD, c.events(id).collect()).await.unwrap();
        assert_eq!(events.len(), 2, "{id}: {events:?}");
        assert_eq!(events[0], Ok(progress(0.5)));
        assert!(matches!(events[1], Err(ClientError::Unavailable(_))), "{id}: {:?}", events[1]);
    }
    let events: Vec<_> = c.events("unknown").collect().await;
    assert_eq!(events, [Err(ClientError::NotFound)]);
    let events: Vec<_> = c.events("text").collect().await;
    assert!(matches!(events[..], [Err(ClientError::Protocol(_))]), "{events:?}");
    let events: Vec<_> = tokio::time::timeout(GUARD, c.events("junk").collect()).await.unwrap();
    assert!(matches!(events[..], [Err(ClientError::Protocol(_))]), "{events:?}");
}

#[tokio::test]
async fn silent_event_stream_times_out_as_unavailable() {
    let p = format!("event: progress\ndata: {}\n\n", event_json(&progress(0.5)));
    let w = FakeWorker::start(move |_| Reply::sse(&[&p], After::Hold)).await;
    let config = ClientConfig { event_idle_timeout: Duration::from_millis(100), ..fast_config() };
    let c = WorkerClient::with_config(&w.url(), config).unwrap();
    let events: Vec<_> = tokio::time::timeout(GUARD, c.events("j1").collect()).await.unwrap();
    assert_eq!(events[0], Ok(progress(0.5)));
    assert!(matches!(&events[1], Err(ClientError::Unavailable(m)) if m.contains("idle")), "{events:?}");
}

#[tokio::test]
async fn wait_follows_events_to_the_end() {
    let err = JobError { reason: ErrorReason::BadInput, message: "not an image".into() };
    let error_event = format!("event: error\ndata: {}\n\n", event_json(&JobEvent::Error { error: err.clone() }));
    let done_event = format!(
        "event: progress\ndata: {}\n\nevent: done\ndata: {}\n\n",
        event_json(&progress(0.5)),
        event_json(&JobEvent::Done { result: job_result("ok") })
    );
    let w = FakeWorker::start(move |r| match r.path.as_str() {
        "/v1/jobs/ok/events" => Reply::sse(&[&done_event], After::Hold),
        "/v1/jobs/bad/events" => Reply::sse(&[&error_event], After::Hold),
        _ => Reply::empty(404),
    })
    .await;
    let c = client(&w);
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(GUARD, c.wait("ok", |e| seen.push(e.clone()))).await.unwrap();
    assert_eq!(outcome, Ok(JobOutcome::Succeeded(job_result("ok"))));
    assert_eq!(seen, [progress(0.5), JobEvent::Done { result: job_result("ok") }]);

    let outcome = tokio::time::timeout(GUARD, c.wait("bad", |_| {})).await.unwrap();
    assert_eq!(outcome, Ok(JobOutcome::Failed(err)));

    assert_eq!(c.wait("forgotten", |_| {}).await, Err(ClientError::NotFound));
    assert!(w.requests().iter().all(|r| r.path.ends_with("/events")), "no polling while events flow");
}

#[tokio::test]
async fn wait_falls_back_to_polling_when_the_stream_drops() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p2 = polls.clone();
    let first = format!("event: progress\ndata: {}\n\n", event_json(&progress(0.25)));
    let w = FakeWorker::start(move |r| match r.route() {
        ("GET", "/v1/jobs/j1/events") => Reply::sse(&[&first, ": keep-alive\n\n"], After::Drop),
        ("GET", "/v1/jobs/j1") => match p2.fetch_add(1, Ordering::SeqCst) {
            // The worker restarted its stream handling but the job runs on.
            0 => Reply::json(200, status("j1", JobState::Running, 0.5)),
            1 => Reply::text(503, "overloaded"),
            2 => Reply::json(200, status("j1", JobState::Running, 0.5)),
            _ => Reply::json(200, status("j1", JobState::Succeeded, 1.0)),
        },
        _ => Reply::empty(404),
    })
    .await;
    let c = client(&w);
    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(GUARD, c.wait("j1", |e| seen.push(e.clone()))).await.unwrap();
    assert_eq!(outcome, Ok(JobOutcome::Succeeded(job_result("j1"))));
    // Repeated identical polls are reported once; the terminal event is synthesised.
    assert_eq!(seen, [progress(0.25), progress(0.5), JobEvent::Done { result: job_result("j1") }]);
    assert_eq!(polls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn wait_gives_up_when_polling_keeps_failing_or_the_job_is_gone() {
    let w = FakeWorker::start(|r| match r.path.as_str() {
        "/v1/jobs/down/events" | "/v1/jobs/gone/events" => Reply::sse(&[": hi\n\n"], After::Drop),
        "/v1/jobs/down" => Reply::text(502, "bad gateway"),
        "/v1/jobs/cancelled/events" => Reply::sse(&[], After::Drop),
        "/v1/jobs/cancelled" => Reply::json(200, status("cancelled", JobState::Cancelled, 0.3)),
        _ => Reply::empty(404),
    })
    .await;
    let c = client(&w);
    let e = tokio::time::timeout(GUARD, c.wait("down", |_| {})).await.unwrap().unwrap_err();
    assert!(matches!(&e, ClientError::Unavailable(m) if m.contains("502")), "{e}");
    let polls = w.requests().iter().filter(|r| r.path == "/v1/jobs/down").count();
    assert_eq!(polls, 3, "max_poll_failures = 2 allows two failed polls, the third gives up");

    let e = tokio::time::timeout(GUARD, c.wait("gone", |_| {})).await.unwrap().unwrap_err();
    assert_eq!(e, ClientError::NotFound, "a restarted worker lost the job: resubmit");

    let mut seen = Vec::new();
    let outcome = tokio::time::timeout(GUARD, c.wait("cancelled", |e| seen.push(e.clone()))).await.unwrap();
    assert_eq!(outcome, Ok(JobOutcome::Cancelled));
    assert!(matches!(&seen[..], [JobEvent::Error { error }] if error.reason == ErrorReason::Cancelled));
}
