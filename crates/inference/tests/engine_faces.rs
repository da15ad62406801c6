#![cfg(feature = "engine")]
//! The whole pipeline with face restoration: real detector, real SR model, and a generated
//! restoration model whose effect is known.

mod common;

use common::*;
use image::RgbImage;
use purrify_inference::pipeline::{Engine, EngineConfig, JobControl};
use purrify_inference::protocol::{EnhanceParams, FaceRestoration, OutputFormat, QualityLevel};

fn mean_in(img: &RgbImage, x0: u32, y0: u32, w: u32, h: u32) -> f64 {
    let mut sum = 0u64;
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            sum += img.get_pixel(x, y).0.iter().map(|&v| u64::from(v)).sum::<u64>();
        }
    }
    sum as f64 / f64::from(w * h * 3)
}

#[test]
fn faces_are_restored_and_pasted_back_only_where_they_are() {
    require_models();
    let dir = tempfile::tempdir().unwrap();
    // +0.3 in [-1, 1] units brightens restored faces by about 38/255.
    let model = shift_restoration_model(dir.path(), "brighten", &FACE_SHAPE, &FACE_SHAPE, 0.3);
    let engine = Engine::load(EngineConfig {
        quality_levels: vec![QualityLevel::Fast],
        face_model: Some(model),
        ..EngineConfig::default()
    })
    .unwrap();
    engine.warm_up().unwrap();
    let input = png_bytes(&crop(&photo("astronaut.png"), 100, 0, 320, 320));
    let run = |face_enhance| {
        let params = EnhanceParams {
            tile_size: 400,
            quality_level: QualityLevel::Fast,
            scale: 2,
            face_enhance,
            output_format: OutputFormat::Png,
        };
        engine.enhance(&input, &params, JobControl { cancelled: &|| false, progress: &mut |_, _| {} }).unwrap()
    };
    let with = run(true);
    assert_eq!(with.face_restoration, FaceRestoration::Applied);
    assert_eq!(with.faces, 1);
    let without = run(false);
    assert_eq!(without.face_restoration, FaceRestoration::Disabled);
    assert_eq!(without.faces, 0);

    let a = image::load_from_memory(&with.bytes).unwrap().to_rgb8();
    let b = image::load_from_memory(&without.bytes).unwrap().to_rgb8();
    // The face (around x 140-230, y 80-200 in the crop, doubled) got brighter...
    let face_gain = mean_in(&a, 300, 200, 120, 120) - mean_in(&b, 300, 200, 120, 120);
    // ...and a corner far from it did not change at all.
    let corner_gain = mean_in(&a, 0, 560, 60, 60) - mean_in(&b, 0, 560, 60, 60);
    eprintln!("face brightened by {face_gain:.1}/255, corner by {corner_gain:.2}/255");
    assert!(face_gain > 25.0, "face region should be ~38/255 brighter, got {face_gain:.1}");
    assert!(corner_gain.abs() < 0.01, "background must be untouched, got {corner_gain:.2}");

    let coffee = png_bytes(&crop(&photo("coffee.png"), 0, 0, 200, 160));
    let params = EnhanceParams { quality_level: QualityLevel::Fast, ..EnhanceParams::default() };
    let out = engine.enhance(&coffee, &params, JobControl { cancelled: &|| false, progress: &mut |_, _| {} }).unwrap();
    assert_eq!(out.face_restoration, FaceRestoration::NoFaces);
}
