//! Shared test support: the real engine (loaded once per test binary) and real photos.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use image::{DynamicImage, ImageFormat, RgbImage};
use purrify_inference::pipeline::{Engine, EngineConfig};
use purrify_inference::protocol::QualityLevel;
use purrify_inference::runtime::paths;

/// Fails (never skips) when `make models` has not run: a test that silently passes without
/// its models proves nothing.
pub fn require_models() {
    let dir = paths::models_dir();
    for f in ["realesr-animevideov3-x2.onnx", "realesr-animevideov3-x4.onnx", "realesrgan-x4plus.onnx"] {
        assert!(dir.join(f).exists(), "{} is missing: run `make models` first", dir.join(f).display());
    }
    assert!(paths::find_ort_library().is_some(), "ONNX Runtime library missing: run `make models` first");
}

/// The engine with the fast models (animevideov3 x2/x4), shared by every test in a binary.
pub fn fast_engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            require_models();
            let config = EngineConfig {
                quality_levels: vec![QualityLevel::Medium, QualityLevel::Fast],
                runtime: purrify_inference::runtime::RuntimeConfig { intra_threads: 2, ..Default::default() },
                ..EngineConfig::default()
            };
            let engine = Engine::load(config).expect("engine loads");
            engine.warm_up().expect("warm-up");
            Arc::new(engine)
        })
        .clone()
}

pub fn photo_path(name: &str) -> PathBuf {
    let p = paths::cache_root().join("photos").join(name);
    assert!(p.exists(), "{} is missing: run `make models` first", p.display());
    p
}

pub fn photo(name: &str) -> RgbImage {
    image::open(photo_path(name)).expect("photo decodes").to_rgb8()
}

pub fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    image::imageops::crop_imm(img, x, y, w, h).to_image()
}

pub fn png_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn jpeg_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, ImageFormat::Jpeg).unwrap();
    out.into_inner()
}
