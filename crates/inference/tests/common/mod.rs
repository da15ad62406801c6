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

/// A face-restoration model with the GFPGAN/CodeFormer signature (`[1,3,512,512]` in [-1, 1]
/// in and out) that adds `shift` to every channel: a 1x1 convolution generated here, so tests
/// can predict exactly what restoration does to a face.
pub fn shift_restoration_model(dir: &std::path::Path, name: &str, input: &[Option<i64>], output: &[Option<i64>], shift: f32) -> PathBuf {
    use purrify_ncnn2onnx::onnx::{Attribute, GraphBuilder};
    let mut weight = vec![0.0f32; 9];
    for c in 0..3 {
        weight[c * 3 + c] = 1.0;
    }
    let mut g = GraphBuilder::new(name);
    g.input("input", input)
        .output("output", output)
        .initializer_f32("w", &[3, 3, 1, 1], &weight)
        .initializer_f32("b", &[3], &[shift; 3])
        .node("Conv", &["input", "w", "b"], &["output"], vec![Attribute::Ints("kernel_shape".into(), vec![1, 1])]);
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, g.to_model_bytes()).unwrap();
    path
}

pub const FACE_SHAPE: [Option<i64>; 4] = [Some(1), Some(3), Some(512), Some(512)];

/// The signature and IHDR of a PNG claiming `width` x `height`, and nothing else.
pub fn png_header_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
    out
}

/// A well-formed PNG of `width` x `height` whose image data is an empty zlib stream: its
/// header reads fine, but decoding it fails.
pub fn png_without_pixels(width: u32, height: u32) -> Vec<u8> {
    let mut out = png_header_claiming(width, height);
    out.extend(png_chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `img` as a GIF: a format that is recognised, and refused by name.
pub fn gif_bytes(img: &RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, ImageFormat::Gif).unwrap();
    out.into_inner()
}
