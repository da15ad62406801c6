//! The worker reports adapted tiles in the job result (status and SSE) and in its metrics.
//! Allocation failures come from the engine's test-only injection hook, never a real OOM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::jobs::JobsConfig;
use super::{EngineSource, WorkerConfig, with_tile_report};
use crate::pipeline::{Engine, EngineConfig};
use crate::protocol::{
    EnhanceParams, FaceRestoration, JobEvent, JobRequest, JobResult, JobStatus, OutputFormat, QualityLevel, TileAdaptation,
};
use crate::runtime::RuntimeConfig;
use crate::storage::{S3Options, Storage};

fn result() -> JobResult {
    JobResult {
        output_uri: "file:///o.jpg".into(),
        content_type: "image/jpeg".into(),
        width: 2,
        height: 2,
        bytes: 1,
        faces: 0,
        face_restoration: FaceRestoration::Disabled,
        model: "m".into(),
        elapsed_ms: 1,
    }
}

#[test]
fn the_report_is_added_to_results_only() {
    let a = TileAdaptation { requested: 400, planned: 400, smallest: 200, splits: 1 };
    let done = with_tile_report(&JobEvent::Done { result: result() }, Some(a));
    assert_eq!(done["type"], "done");
    assert_eq!(done["result"]["tile_adaptation"]["splits"], 1);
    assert_eq!(serde_json::from_value::<JobEvent>(done).unwrap(), JobEvent::Done { result: result() }, "plain readers still read it");
    let running = JobEvent::Progress { progress: 0.5, stage: "tiles".into() };
    assert_eq!(with_tile_report(&running, Some(a)), serde_json::to_value(&running).unwrap());
    let status = JobStatus {
        id: "j".into(),
        state: crate::protocol::JobState::Succeeded,
        progress: 1.0,
        stage: None,
        result: Some(result()),
        error: None,
    };
    assert_eq!(with_tile_report(&status, None), serde_json::to_value(&status).unwrap(), "no adaptation, no key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_split_tiles_reports_them_in_its_result_and_metrics() {
    let engine = tokio::task::spawn_blocking(|| {
        let config = EngineConfig {
            quality_levels: vec![QualityLevel::Medium],
            runtime: RuntimeConfig { intra_threads: 2, ..Default::default() },
            ..EngineConfig::default()
        };
        Engine::load(config).expect("engine loads; run `make models`")
    })
    .await
    .unwrap();
    let provider = engine.active_provider();
    // A device that holds padded tiles up to 100 px a side.
    engine.inject_oom("realesr-animevideov3-x2", Some(Box::new(|shape: &[usize]| shape[2] > 100 || shape[3] > 100)));

    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Storage::new(&format!("file://{}", dir.path().display()), S3Options::default()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = super::start(
        WorkerConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            storage: storage.clone(),
            jobs: JobsConfig::default(),
            engine: EngineSource::Ready(Arc::new(engine)),
            shutdown_grace: Duration::from_secs(5),
        },
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", worker.addr);

    let photo = crate::runtime::paths::cache_root().join("photos").join("coffee.png");
    let img = image::open(&photo).unwrap_or_else(|e| panic!("{}: {e}; run `make models`", photo.display())).to_rgb8();
    let crop = image::imageops::crop_imm(&img, 150, 80, 200, 120).to_image();
    let mut png = std::io::Cursor::new(Vec::new());
    crop.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let input = storage.uri_for("in/a.png");
    storage.put(&input, png.into_inner().into()).await.unwrap();
    let params = EnhanceParams {
        tile_size: 128,
        quality_level: QualityLevel::Medium,
        scale: 2,
        face_enhance: false,
        output_format: OutputFormat::Jpeg,
    };
    let job = JobRequest { id: "adapt".into(), input_uri: input, output_uri: storage.uri_for("out/a.jpg"), params };

    let http = reqwest::Client::new();
    assert_eq!(http.post(format!("{base}/v1/jobs")).json(&job).send().await.unwrap().status(), 202);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status: Value = loop {
        let v: Value = http.get(format!("{base}/v1/jobs/adapt")).send().await.unwrap().json().await.unwrap();
        if v["state"] != "queued" && v["state"] != "running" {
            break v;
        }
        assert!(Instant::now() < deadline, "job did not finish: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["state"], "succeeded", "{status}");
    // The geometry of sr_oom_tests: 200x120, 128 px tiles, pad 20, 100 px device limit.
    let expected = json!({"requested": 128, "planned": 128, "smallest": 32, "splits": 4});
    assert_eq!(status["result"]["tile_adaptation"], expected);
    assert_eq!(status["result"]["width"], 400);
    serde_json::from_value::<JobStatus>(status).expect("still a JobStatus for readers without the report");

    let events = http.get(format!("{base}/v1/jobs/adapt/events")).send().await.unwrap().text().await.unwrap();
    let done = events.lines().find_map(|l| l.strip_prefix("data: ")).expect("one event for a finished job");
    let done: Value = serde_json::from_str(done).unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["result"]["tile_adaptation"], expected);

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let labels = format!(r#"{{model="realesr-animevideov3-x2",provider="{provider}"}}"#);
    assert!(metrics.contains(&format!("purrify_worker_tile_splits_total{labels} 4")), "{metrics}");
    assert!(metrics.contains(&format!("purrify_worker_tile_size_limit{labels} 60")), "{metrics}");
    let _ = stop.send(());
    worker.handle.await.unwrap().unwrap();
}
