//! The provider adapters against local fakes that speak each protocol as its public
//! documentation describes (purrify-testkit::providers): the success paths (chat tokens in
//! order, images as bytes or URLs, asynchronous videos through queued and running states
//! with progress, the signed webhook and its signed callbacks) and every error class the
//! call policy acts on (401 -> Auth, 4xx -> Rejected, 429 with Retry-After and 5xx ->
//! Transient, malformed answers -> Protocol), a chat failing mid-stream, and a dropped chat
//! stream closing the upstream connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures::StreamExt;
use purrify_gateway::domain::providers::adapter::*;
use purrify_gateway::domain::providers::adapters::{for_protocol, webhook};
use purrify_testkit::providers::n8n::FakeN8n;
use purrify_testkit::providers::openai::{ChatEnd, ChatReply, FakeOpenAi};
use purrify_testkit::providers::runway::FakeRunway;
use purrify_testkit::providers::stability::FakeStability;
use purrify_testkit::providers::{Fault, Outcome, Plan, mp4_blob, png};
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789";

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn adapter(p: Protocol) -> Arc<dyn Adapter> {
    for_protocol(p, http()).expect("an adapter")
}

fn ep(provider: &str, base: String, key: Option<&str>, model: &str) -> Endpoint {
    Endpoint {
        provider: provider.into(),
        base_url: base,
        api_key: key.map(ApiKey::new),
        model: model.into(),
        options: Default::default(),
        timeout: Duration::from_secs(20),
    }
}

fn image_job(prompt: &str, width: u32, height: u32, count: u32) -> ImageJob {
    ImageJob { prompt: prompt.into(), negative_prompt: None, width, height, count, style: None, seed: None, init: None, strength: 0.6 }
}

fn video_job(prompt: &str, duration: u32, image: Option<InputImage>) -> VideoJob {
    VideoJob { prompt: prompt.into(), duration, resolution: "720p".into(), fps: 24, style: None, image }
}

fn input_png() -> InputImage {
    InputImage { bytes: Bytes::from(png(16, 16, 7)), content_type: "image/png".into() }
}

fn finished(s: Submitted) -> Vec<Output> {
    match s {
        Submitted::Finished(o) => o,
        other => panic!("expected a finished job, got {other:?}"),
    }
}

fn pending(s: Submitted) -> String {
    match s {
        Submitted::Pending { remote_id } => remote_id,
        other => panic!("expected a pending job, got {other:?}"),
    }
}

/// Polls until the job ends (at most 20 polls), returning the progress seen and the end.
async fn poll_to_end(a: &dyn Adapter, ep: &Endpoint, id: &str) -> (Vec<Option<f64>>, Remote) {
    let mut seen = Vec::new();
    for _ in 0..20 {
        match a.poll(ep, id).await.unwrap() {
            Remote::Running { progress } => seen.push(progress),
            end => return (seen, end),
        }
    }
    panic!("the job did not end in 20 polls: {seen:?}");
}

fn assert_png(o: &Output) {
    let Output::Bytes { bytes, content_type } = o else { panic!("expected bytes, got {o:?}") };
    assert_eq!(content_type, "image/png");
    image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("a real PNG");
}

/// The transient error of a 429 with `Retry-After: 7`, of 503, and the class of each.
fn assert_transient(e: &ProviderError, status: u16, retry_after: Option<Duration>) {
    match e {
        ProviderError::Transient { status: s, retry_after: r, .. } => {
            assert_eq!((*s, *r), (Some(status), retry_after), "{e:?}");
        }
        other => panic!("expected a transient {status}, got {other:?}"),
    }
    assert!(e.retryable() && e.provider_fault());
}

async fn chat_items(a: &dyn Adapter, ep: &Endpoint) -> Vec<Result<String, ProviderError>> {
    let messages =
        [ChatMessage { role: "system".into(), content: "Be brief.".into() }, ChatMessage { role: "user".into(), content: "Hi".into() }];
    a.chat(ep, &messages).await.expect("the chat starts").collect().await
}

// ---- OpenAI-compatible ----

#[tokio::test]
async fn openai_chat_streams_tokens_in_order() {
    let fake = FakeOpenAi::start(KEY).await;
    let a = adapter(Protocol::Openai);
    let e = ep("openai", fake.base_url(), Some(KEY), "gpt-4o-mini");
    let items = chat_items(&*a, &e).await;
    let tokens: Vec<String> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(tokens, ["Hello", ",", " world", "!"]);
    let req = &fake.requests_to("/chat/completions")[0];
    assert_eq!(req.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    let body = req.json().unwrap();
    assert_eq!(body["stream"], json!(true));
    assert_eq!(body["model"], json!("gpt-4o-mini"));
    assert_eq!(body["messages"][1], json!({"role": "user", "content": "Hi"}));
}

#[tokio::test]
async fn openai_chat_failing_mid_stream_yields_an_error_item() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script_chat(ChatReply::new(&["Once", " upon"], ChatEnd::Error("The server is overloaded".into())));
    fake.script_chat(ChatReply::new(&["Once"], ChatEnd::Break));
    let a = adapter(Protocol::Openai);
    let e = ep("openai", fake.base_url(), Some(KEY), "gpt-4o-mini");

    let items = chat_items(&*a, &e).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_deref().unwrap(), "Once");
    assert_eq!(items[1].as_deref().unwrap(), " upon");
    let err = items[2].as_ref().unwrap_err();
    assert!(matches!(err, ProviderError::Transient { status: None, .. }) && err.to_string().contains("overloaded"), "{err:?}");

    let items = chat_items(&*a, &e).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_deref().unwrap(), "Once");
    assert!(matches!(items[1], Err(ProviderError::Transient { .. })), "{:?}", items[1]);
}

#[tokio::test]
async fn dropping_the_chat_stream_closes_the_upstream_connection() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.script_chat(ChatReply::new(&["thinking"], ChatEnd::Hang));
    let a = adapter(Protocol::Openai);
    let e = ep("openai", fake.base_url(), Some(KEY), "gpt-4o-mini");
    let messages = [ChatMessage { role: "user".into(), content: "Hi".into() }];
    let mut stream = a.chat(&e, &messages).await.unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap(), "thinking");
    assert_eq!(fake.disconnects(), 0);
    drop(stream);
    fake.wait_disconnects(1).await;
}

#[tokio::test]
async fn openai_errors_are_classified() {
    let fake = FakeOpenAi::start(KEY).await;
    let a = adapter(Protocol::Openai);
    let good = ep("openai", fake.base_url(), Some(KEY), "gpt-4o-mini");
    let messages = [ChatMessage { role: "user".into(), content: "Hi".into() }];

    let wrong = ep("openai", fake.base_url(), Some("sk-wrong"), "gpt-4o-mini");
    let err = a.chat(&wrong, &messages).await.err().unwrap();
    assert!(matches!(err, ProviderError::Auth { status: 401, .. }), "{err:?}");
    assert!(!err.to_string().contains("sk-") && !err.to_string().contains("http"), "client-safe: {err}");

    let no_model = ep("openai", fake.base_url(), Some(KEY), "");
    let err = a.chat(&no_model, &messages).await.err().unwrap();
    assert!(matches!(err, ProviderError::Rejected { status: 400, .. }) && err.to_string().contains("model"), "{err:?}");
    assert!(!err.retryable() && !err.provider_fault());

    fake.fail_next(1, Fault::rate_limited(7));
    assert_transient(&a.chat(&good, &messages).await.err().unwrap(), 429, Some(Duration::from_secs(7)));
    fake.fail_next(1, Fault::status(503));
    assert_transient(&a.chat(&good, &messages).await.err().unwrap(), 503, None);

    fake.set_down(true);
    let err = a.submit(&good, &Job::Image(image_job("a cat", 1024, 1024, 1))).await.unwrap_err();
    assert_transient(&err, 503, None);
    fake.set_down(false);

    fake.fail_next(2, Fault::Malformed);
    assert!(matches!(a.chat(&good, &messages).await.err().unwrap(), ProviderError::Protocol(_)));
    let err = a.submit(&good, &Job::Image(image_job("a cat", 1024, 1024, 1))).await.unwrap_err();
    assert!(matches!(err, ProviderError::Protocol(_)), "{err:?}");

    let job = Job::Workflow(WorkflowJob {
        task_id: "t".into(),
        workflow: "w".into(),
        params: json!({}),
        input_url: None,
        complete_url: "http://x/c".into(),
        failed_url: "http://x/f".into(),
    });
    assert!(matches!(a.submit(&good, &job).await, Err(ProviderError::Unsupported(_))));
}

#[tokio::test]
async fn unreachable_provider_is_transient() {
    let port = purrify_testkit::free_port();
    let a = adapter(Protocol::Openai);
    let e = ep("openai", format!("http://127.0.0.1:{port}/v1"), Some(KEY), "gpt-4o-mini");
    let err = a.submit(&e, &Job::Image(image_job("a cat", 1024, 1024, 1))).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient { status: None, .. }), "{err:?}");
    assert!(!err.to_string().contains("127.0.0.1"), "no URL in {err}");
}

#[tokio::test]
async fn openai_images_come_back_as_bytes_or_urls() {
    let fake = FakeOpenAi::start(KEY).await;
    let a = adapter(Protocol::Openai);
    let e = ep("openai", fake.base_url(), Some(KEY), "dall-e-2");

    let outs = finished(a.submit(&e, &Job::Image(image_job("a cat", 1024, 1024, 2))).await.unwrap());
    assert_eq!(outs.len(), 2);
    outs.iter().for_each(assert_png);
    let body = fake.requests_to("/images/generations")[0].json().unwrap();
    assert_eq!(body, json!({"model": "dall-e-2", "prompt": "a cat", "n": 2, "size": "1024x1024", "response_format": "b64_json"}));

    // dall-e-3 makes one picture per call.
    let e3 = ep("openai", fake.base_url(), Some(KEY), "dall-e-3");
    let outs = finished(a.submit(&e3, &Job::Image(image_job("a dog", 1024, 1024, 2))).await.unwrap());
    assert_eq!(outs.len(), 2);
    assert_eq!(fake.requests_to("/images/generations").len(), 3);

    // gpt-image models refuse response_format and always answer base64.
    let gi = ep("openai", fake.base_url(), Some(KEY), "gpt-image-1");
    let outs = finished(a.submit(&gi, &Job::Image(image_job("a fox", 1024, 1024, 1))).await.unwrap());
    assert_png(&outs[0]);

    fake.answer_images_as_url(true);
    let outs = finished(a.submit(&e, &Job::Image(image_job("a cow", 1024, 1024, 1))).await.unwrap());
    let Output::Url(url) = &outs[0] else { panic!("expected a URL, got {:?}", outs[0]) };
    let got = http().get(url).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "image/png");
    image::load_from_memory(&got.bytes().await.unwrap()).unwrap();
}

#[tokio::test]
async fn openai_image_edits_send_the_picture_as_multipart() {
    let fake = FakeOpenAi::start(KEY).await;
    let a = adapter(Protocol::Openai);
    let e = ep("openai", fake.base_url(), Some(KEY), "dall-e-2");
    let mut job = image_job("make it blue", 512, 512, 1);
    job.init = Some(input_png());
    let outs = finished(a.submit(&e, &Job::Image(job.clone())).await.unwrap());
    assert_png(&outs[0]);
    let req = &fake.requests_to("/images/edits")[0];
    assert!(req.header("content-type").unwrap().starts_with("multipart/form-data"));
    let text = req.text();
    assert!(text.contains("name=\"image\"; filename=\"image.png\"") && text.contains("make it blue") && text.contains("512x512"), "{text}");

    job.width = 300;
    let err = a.submit(&e, &Job::Image(job)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 400, .. }) && err.to_string().contains("300x512"), "{err:?}");
}

#[tokio::test]
async fn openai_video_runs_to_the_end_with_progress() {
    let fake = FakeOpenAi::start(KEY).await;
    fake.plan_video(Plan { queued_polls: 1, running_polls: 3, outcome: Outcome::Succeed });
    fake.plan_video(Plan { queued_polls: 0, running_polls: 1, outcome: Outcome::Fail("Video generation failed: unsafe prompt".into()) });
    let a = adapter(Protocol::Openai);
    let e = ep("openai", fake.base_url(), Some(KEY), "sora-2");

    let id = pending(a.submit(&e, &Job::Video(video_job("waves", 5, Some(input_png())))).await.unwrap());
    let form = fake.requests_to("/videos")[0].text();
    assert!(form.contains("name=\"seconds\"\r\n\r\n4\r\n"), "5 s snaps to Sora's 4 s: {form}");
    assert!(form.contains("name=\"size\"\r\n\r\n1280x720\r\n") && form.contains("name=\"input_reference\""), "{form}");

    let (progress, end) = poll_to_end(&*a, &e, &id).await;
    assert_eq!(progress, [Some(0.0), Some(0.25), Some(0.5), Some(0.75)]);
    let Remote::Finished(outs) = end else { panic!("expected the video, got {end:?}") };
    let Output::Bytes { bytes, content_type } = &outs[0] else { panic!("the content needs the key: fetched as bytes") };
    assert_eq!((content_type.as_str(), bytes), ("video/mp4", &mp4_blob()));
    assert!(fake.requests_to("/content").iter().all(|r| r.header("authorization") == Some(&format!("Bearer {KEY}"))));

    let id = pending(a.submit(&e, &Job::Video(video_job("a riot", 8, None))).await.unwrap());
    let (_, end) = poll_to_end(&*a, &e, &id).await;
    let Remote::Failed(why) = end else { panic!("expected a failure, got {end:?}") };
    assert!(why.contains("unsafe prompt"), "{why}");

    a.cancel(&e, &id).await.unwrap();
    assert_eq!(fake.requests().last().unwrap().method, "DELETE");
    a.cancel(&e, &id).await.expect("a job already gone is not an error");
    let err = a.poll(&e, &id).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 404, .. }), "{err:?}");
}

// ---- Stability AI ----

#[tokio::test]
async fn stability_makes_one_image_per_call() {
    let fake = FakeStability::start(KEY).await;
    let a = adapter(Protocol::Stability);
    let e = ep("stability", fake.base_url(), Some(KEY), "");
    let mut job = image_job("a lighthouse", 1920, 1080, 2);
    job.seed = Some(42);
    job.style = Some("anime".into());
    job.negative_prompt = Some("fog".into());
    let outs = finished(a.submit(&e, &Job::Image(job)).await.unwrap());
    assert_eq!(outs.len(), 2);
    outs.iter().for_each(assert_png);
    let reqs = fake.requests_to("/generate/core");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("accept"), Some("image/*"));
    assert_eq!(reqs[0].header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    for (r, seed) in reqs.iter().zip(["42", "43"]) {
        let t = r.text();
        for field in
            [("aspect_ratio", "16:9"), ("seed", seed), ("style_preset", "anime"), ("negative_prompt", "fog"), ("output_format", "png")]
        {
            assert!(t.contains(&format!("name=\"{}\"\r\n\r\n{}\r\n", field.0, field.1)), "{field:?} in {t}");
        }
    }

    let mut job = image_job("a lighthouse", 1024, 1024, 1);
    job.style = Some("watercolour".into());
    finished(a.submit(&e, &Job::Image(job)).await.unwrap());
    assert!(!fake.requests_to("/generate/core")[2].text().contains("style_preset"), "unknown styles are not sent");
}

#[tokio::test]
async fn stability_image_to_image_uses_sd3() {
    let fake = FakeStability::start(KEY).await;
    let a = adapter(Protocol::Stability);
    let e = ep("stability", fake.base_url(), Some(KEY), "sd3.5-large");
    let mut job = image_job("in autumn", 1024, 1024, 1);
    job.init = Some(input_png());
    let outs = finished(a.submit(&e, &Job::Image(job)).await.unwrap());
    assert_png(&outs[0]);
    let t = fake.requests_to("/generate/sd3")[0].text();
    for field in [("mode", "image-to-image"), ("strength", "0.60"), ("model", "sd3.5-large")] {
        assert!(t.contains(&format!("name=\"{}\"\r\n\r\n{}\r\n", field.0, field.1)), "{field:?} in {t}");
    }
    assert!(t.contains("name=\"image\"; filename=\"image.png\""));
    assert!(matches!(a.submit(&e, &Job::Video(video_job("x", 5, None))).await, Err(ProviderError::Unsupported(_))));
}

#[tokio::test]
async fn stability_errors_are_classified() {
    let fake = FakeStability::start(KEY).await;
    let a = adapter(Protocol::Stability);
    let e = ep("stability", fake.base_url(), Some(KEY), "");
    let job = Job::Image(image_job("a lighthouse", 1024, 1024, 1));

    let err = a.submit(&e, &Job::Image(image_job(" ", 1024, 1024, 1))).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 400, .. }) && err.to_string().contains("prompt: is required"), "{err:?}");

    let err = a.submit(&ep("stability", fake.base_url(), Some("sk-nope"), ""), &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { status: 401, .. }), "{err:?}");
    let err = a.submit(&ep("stability", fake.base_url(), None, ""), &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");

    fake.fail_next(1, Fault::status(403));
    let err = a.submit(&e, &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 403, .. }) && err.to_string().contains("content moderation"), "{err:?}");
    assert!(!err.provider_fault(), "a refused prompt does not count against the provider");

    let mut big = image_job("a lighthouse", 1024, 1024, 1);
    big.init = Some(InputImage { bytes: Bytes::from(vec![0u8; 11 << 20]), content_type: "image/png".into() });
    let err = a.submit(&e, &Job::Image(big)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 413, .. }), "{err:?}");

    fake.fail_next(1, Fault::rate_limited(60));
    assert_transient(&a.submit(&e, &job).await.unwrap_err(), 429, Some(Duration::from_secs(60)));
    fake.fail_next(1, Fault::status(500));
    assert_transient(&a.submit(&e, &job).await.unwrap_err(), 500, None);
    fake.fail_next(1, Fault::Malformed);
    assert!(matches!(a.submit(&e, &job).await.unwrap_err(), ProviderError::Protocol(_)));
}

// ---- Runway ----

#[tokio::test]
async fn runway_image_to_video_runs_through_throttled_and_running() {
    let fake = FakeRunway::start(KEY).await;
    fake.plan_task(Plan { queued_polls: 2, running_polls: 1, outcome: Outcome::Succeed }, true);
    let a = adapter(Protocol::Runway);
    let e = ep("runway", fake.base_url(), Some(KEY), "gen4_turbo");

    let id = pending(a.submit(&e, &Job::Video(video_job("the cat turns", 5, Some(input_png())))).await.unwrap());
    let req = &fake.requests_to("/v1/image_to_video")[0];
    assert_eq!(req.header("x-runway-version"), Some("2024-11-06"));
    let body = req.json().unwrap();
    assert!(body["promptImage"].as_str().unwrap().starts_with("data:image/png;base64,iVBOR"), "{body}");
    assert_eq!(
        (&body["model"], &body["ratio"], &body["duration"], &body["promptText"]),
        (&json!("gen4_turbo"), &json!("1280:720"), &json!(5), &json!("the cat turns"))
    );

    let (progress, end) = poll_to_end(&*a, &e, &id).await;
    assert_eq!(progress, [None, None, Some(0.5)]);
    let Remote::Finished(outs) = end else { panic!("expected the video, got {end:?}") };
    let Output::Url(url) = &outs[0] else { panic!("Runway's output is a URL") };
    let got = http().get(url).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "video/mp4");
    assert_eq!(got.bytes().await.unwrap(), mp4_blob());
}

#[tokio::test]
async fn runway_text_to_video_fails_and_cancels() {
    let fake = FakeRunway::start(KEY).await;
    fake.plan_task(Plan { queued_polls: 0, running_polls: 1, outcome: Outcome::Fail("The output was flagged as unsafe.".into()) }, false);
    fake.plan_task(Plan { queued_polls: 1, running_polls: 5, outcome: Outcome::Succeed }, false);
    let a = adapter(Protocol::Runway);
    let e = ep("runway", fake.base_url(), Some(KEY), "");

    let id = pending(a.submit(&e, &Job::Video(video_job("storm", 5, None))).await.unwrap());
    let body = fake.requests_to("/v1/text_to_video")[0].json().unwrap();
    assert_eq!(body["model"], json!("gen4.5"));
    let (_, end) = poll_to_end(&*a, &e, &id).await;
    let Remote::Failed(why) = end else { panic!("expected a failure, got {end:?}") };
    assert!(why.contains("flagged as unsafe"), "{why}");

    let id = pending(a.submit(&e, &Job::Video(video_job("calm", 5, None))).await.unwrap());
    assert!(matches!(a.poll(&e, &id).await.unwrap(), Remote::Running { .. }));
    a.cancel(&e, &id).await.unwrap();
    assert!(fake.cancelled(&id));
    assert!(matches!(a.poll(&e, &id).await.unwrap(), Remote::Failed(w) if w == "cancelled"));
    a.cancel(&e, "00000000-unknown").await.expect("404 on cancel is fine");
}

#[tokio::test]
async fn runway_errors_are_classified() {
    let fake = FakeRunway::start(KEY).await;
    let a = adapter(Protocol::Runway);
    let e = ep("runway", fake.base_url(), Some(KEY), "gen4_turbo");
    let job = Job::Video(video_job("waves", 5, Some(input_png())));

    let err = a.submit(&ep("runway", fake.base_url(), Some("key_wrong"), "gen4_turbo"), &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { status: 401, .. }), "{err:?}");

    let mut bad_ratio = e.clone();
    bad_ratio.options.insert("ratio".into(), json!("7:3"));
    let err = a.submit(&bad_ratio, &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 400, .. }) && err.to_string().contains("ratio"), "{err:?}");

    let mut other_version = e.clone();
    other_version.options.insert("runwayVersion".into(), json!("2099-01-01"));
    let err = a.submit(&other_version, &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected { status: 400, .. }) && err.to_string().contains("2099-01-01"), "{err:?}");

    let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
    fake.fail_next(1, Fault::Status { status: 429, retry_after: Some(later) });
    match a.submit(&e, &job).await.unwrap_err() {
        ProviderError::Transient { status: Some(429), retry_after: Some(d), .. } => {
            assert!(d > Duration::from_secs(60) && d <= Duration::from_secs(90), "{d:?}")
        }
        other => panic!("expected a 429 with an HTTP-date Retry-After, got {other:?}"),
    }
    fake.fail_next(1, Fault::status(502));
    assert_transient(&a.poll(&e, "any").await.unwrap_err(), 502, None);
    fake.fail_next(1, Fault::Malformed);
    assert!(matches!(a.submit(&e, &job).await.unwrap_err(), ProviderError::Protocol(_)));
    assert!(matches!(a.submit(&e, &Job::Image(image_job("x", 8, 8, 1))).await, Err(ProviderError::Unsupported(_))));
}

// ---- Signed webhook ----

/// A callback receiver that checks signatures with `webhook::verify`, as the gateway's
/// callback endpoint does; it keeps the bodies it accepted, by path.
async fn receiver(secret: &'static str) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
        let keep = keep.clone();
        async move {
            let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let now = chrono::Utc::now().timestamp();
            let checked = webhook::verify(
                secret.as_bytes(),
                &h(webhook::TIMESTAMP_HEADER),
                &body,
                &h(webhook::SIGNATURE_HEADER),
                now,
                webhook::DEFAULT_TOLERANCE,
            );
            if checked.is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            keep.lock().unwrap().push((uri.path().to_owned(), serde_json::from_slice(&body).unwrap()));
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn workflow(task_id: &str, callbacks: &str) -> Job {
    Job::Workflow(WorkflowJob {
        task_id: task_id.into(),
        workflow: "id_photo".into(),
        params: json!({"background": "blue"}),
        input_url: Some("https://files.example/in.jpg?sig=1".into()),
        complete_url: format!("{callbacks}/api/callback/task-complete"),
        failed_url: format!("{callbacks}/api/callback/task-failed"),
    })
}

#[tokio::test]
async fn webhook_posts_signed_tasks_and_the_workflow_calls_back_signed() {
    const SECRET: &str = "n8n-shared-secret";
    let fake = FakeN8n::start(SECRET).await;
    let (callbacks, got) = receiver(SECRET).await;
    let a = adapter(Protocol::Webhook);
    assert!(!a.polls());
    let e = ep("n8n", fake.base_url(), Some(SECRET), "");

    assert_eq!(pending(a.submit(&e, &workflow("task-1", &callbacks)).await.unwrap()), "task-1");
    let task = fake.received("task-1").expect("the fake verified the signature and took the task");
    assert_eq!((task.workflow.as_str(), &task.params), ("id_photo", &json!({"background": "blue"})));
    assert_eq!(task.input_url.as_deref(), Some("https://files.example/in.jpg?sig=1"));
    assert_eq!(pending(a.submit(&e, &workflow("task-2", &callbacks)).await.unwrap()), "task-2");

    assert_eq!(fake.complete("task-1", "https://files.example/out.png").await, 200);
    assert_eq!(fake.fail("task-2", "no face found").await, 200);
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            ("/api/callback/task-complete".to_owned(), json!({"taskId": "task-1", "outputUrl": "https://files.example/out.png"})),
            ("/api/callback/task-failed".to_owned(), json!({"taskId": "task-2", "error": "no face found"})),
        ]
    );
}

#[tokio::test]
async fn webhook_errors_are_classified() {
    let fake = FakeN8n::start("right-secret").await;
    let a = adapter(Protocol::Webhook);
    let job = workflow("t", "http://127.0.0.1:9");

    let err = a.submit(&ep("n8n", fake.base_url(), Some("wrong-secret"), ""), &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { status: 401, .. }), "{err:?}");
    let before = fake.request_count();
    let err = a.submit(&ep("n8n", fake.base_url(), None, ""), &job).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth { .. }), "{err:?}");
    assert_eq!(fake.request_count(), before, "nothing is sent unsigned");

    let e = ep("n8n", fake.base_url(), Some("right-secret"), "");
    fake.fail_next(1, Fault::status(503));
    assert_transient(&a.submit(&e, &job).await.unwrap_err(), 503, None);
    assert!(matches!(a.submit(&e, &Job::Image(image_job("x", 8, 8, 1))).await, Err(ProviderError::Unsupported(_))));
    assert!(matches!(a.poll(&e, "t").await, Err(ProviderError::Unsupported(_))));
}

#[test]
fn webhook_signatures_verify_and_refuse_tampering_and_stale_times() {
    let body = br#"{"taskId":"t1","outputUrl":"https://x/y.png"}"#;
    let sig = webhook::sign(b"s3cret", 1_700_000_000, body);
    assert_eq!(sig, purrify_testkit::providers::n8n::sign("s3cret", 1_700_000_000, body), "the fake computes the same scheme on its own");
    let tol = Duration::from_secs(300);
    let verify = |ts: &str, body: &[u8], sig: &str, now: i64| webhook::verify(b"s3cret", ts, body, sig, now, tol);
    assert_eq!(verify("1700000000", body, &sig, 1_700_000_100), Ok(()));
    assert!(verify("1700000000", br#"{"taskId":"t2","outputUrl":"https://x/y.png"}"#, &sig, 1_700_000_000).is_err(), "another body");
    assert!(verify("1700000001", body, &sig, 1_700_000_000).is_err(), "another timestamp");
    let mut flipped = sig.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    assert!(verify("1700000000", body, std::str::from_utf8(&flipped).unwrap(), 1_700_000_000).is_err(), "another signature");
    assert!(webhook::verify(b"other", "1700000000", body, &sig, 1_700_000_000, tol).is_err(), "another secret");
    assert!(verify("1700000000", body, &sig, 1_700_000_301).is_err(), "stale");
    assert!(verify("1700000000", body, &sig, 1_699_999_699).is_err(), "from the future");
    assert!(verify("yesterday", body, &sig, 1_700_000_000).is_err(), "not a time");
    assert!(verify("1700000000", body, sig.trim_start_matches("sha256="), 1_700_000_000).is_err(), "no scheme");
}

#[test]
fn every_outside_protocol_has_its_adapter() {
    assert!(for_protocol(Protocol::Purrify, http()).is_none());
    for p in [Protocol::Openai, Protocol::Stability, Protocol::Runway, Protocol::Webhook] {
        assert_eq!(adapter(p).protocol(), p);
    }
}
