//! Allocation failures are injected through the test-only hook of [`Model`]: the runs fail
//! with the CUDA arena's wording before ONNX Runtime is called, so no memory is exhausted.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use image::RgbImage;

use super::{SrError, SrModel, SrOptions};
use crate::pipeline::adaptive::{self, Adaptation, TileLimits};
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError, paths};

const MODEL: &str = "realesr-animevideov3-x2";

/// A fresh session (and fresh tile limits) of the fast x2 model, from `make models`.
fn load() -> SrModel {
    let path = paths::models_dir().join(format!("{MODEL}.onnx"));
    assert!(path.exists(), "{} is missing: run `make models` first", path.display());
    let rt = Runtime::new(RuntimeConfig { intra_threads: 2, ..Default::default() }).expect("ONNX Runtime loads; run `make models`");
    SrModel { model: rt.load(MODEL, &path).unwrap(), native_scale: 2, limits: TileLimits::new(MODEL, None) }
}

/// A crop of a real photo (texture makes seams visible).
fn photo(w: u32, h: u32) -> RgbImage {
    let p = paths::cache_root().join("photos").join("coffee.png");
    let img = image::open(&p).unwrap_or_else(|e| panic!("{}: {e}; run `make models`", p.display())).to_rgb8();
    image::imageops::crop_imm(&img, 150, 80, w, h).to_image()
}

/// Fails every run whose padded input is wider or taller than `max_side`, like a device
/// that holds tiles up to that size; counts the failures.
fn limit_device(m: &SrModel, max_side: usize) -> Arc<AtomicU32> {
    let failures = Arc::new(AtomicU32::new(0));
    let counter = failures.clone();
    m.model.inject_oom(Some(Box::new(move |shape: &[usize]| {
        let fails = shape[2] > max_side || shape[3] > max_side;
        if fails {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        fails
    })));
    failures
}

fn upscale(m: &SrModel, img: &RgbImage, tile: u32) -> Result<(RgbImage, super::SrStats), SrError> {
    // Pad 20 covers animevideov3's receptive field: tiles of any size stitch seam-free.
    let opts = SrOptions { scale: 2, tile_size: NonZeroU32::new(tile).unwrap(), pad: 20 };
    m.upscale(img, opts, &|| false, &mut |_, _, _| {})
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

#[test]
fn tiles_that_fail_to_allocate_are_split_and_the_result_is_unchanged() {
    let img = photo(200, 120);
    let reference = load();
    let (expected, plain) = upscale(&reference, &img, 128).unwrap();
    assert_eq!(plain.adaptation, Adaptation { requested: 128, planned: 128, smallest: 128, splits: 0 });

    let m = load();
    let failures = limit_device(&m, 100);
    let (out, stats) = upscale(&m, &img, 128).unwrap();
    // Tiles 128x120 (padded 148x120) and 72x120 (padded 92x120) fail; of the first's
    // quarters, the two padded on both sides (104 px wide) fail again and are split down to
    // 32 px cores.
    assert_eq!(stats.adaptation, Adaptation { requested: 128, planned: 128, smallest: 32, splits: 4 });
    assert_eq!(failures.load(Ordering::Relaxed), 4, "one failure per split, nothing retried at the same size");
    assert_eq!(stats.tiles, 2, "progress counts the planned tiles");
    let diff = max_abs_diff(&out, &expected);
    assert!(diff <= 1, "split tiles changed the result by {diff}/255");

    // The largest tile that ran below the smallest failure (64) was a 60 px quarter: the
    // next job starts there and allocates nothing too large.
    assert_eq!(m.limits.remembered(), Some(60));
    let (again, stats) = upscale(&m, &img, 128).unwrap();
    assert_eq!(stats.adaptation, Adaptation { requested: 128, planned: 60, smallest: 60, splits: 0 });
    assert!(stats.adaptation.adapted(), "a capped plan is still reported");
    assert_eq!(failures.load(Ordering::Relaxed), 4, "no further allocation failures");
    assert!(max_abs_diff(&again, &expected) <= 1);
}

#[test]
fn a_tile_that_fails_at_the_floor_fails_the_job() {
    let img = photo(64, 64);
    let m = load();
    let failures = limit_device(&m, 0);
    let err = upscale(&m, &img, 64).unwrap_err();
    assert!(matches!(err, SrError::Runtime(RuntimeError::OutOfMemory { .. })), "{err}");
    assert!(err.to_string().contains("ran out of memory"), "{err}");
    // 64 splits once into 32 px quarters (the floor); the first of them fails and ends it.
    assert_eq!(failures.load(Ordering::Relaxed), 2);
    assert_eq!(m.limits.remembered(), Some(adaptive::FLOOR));
    // The engine reports it as an inference failure, which dispatchers retry elsewhere.
    let engine_err = crate::pipeline::EngineError::from(err);
    assert_eq!(engine_err.reason(), crate::protocol::ErrorReason::Inference);
    assert!(engine_err.reason().retryable());
}

#[test]
fn without_failures_nothing_adapts() {
    let img = photo(90, 70);
    let m = load();
    let failures = limit_device(&m, 10_000);
    let (_, stats) = upscale(&m, &img, 64).unwrap();
    assert!(!stats.adaptation.adapted(), "{:?}", stats.adaptation);
    assert_eq!(stats.tiles, 4);
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(m.limits.remembered(), None);
}
