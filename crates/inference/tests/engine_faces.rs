#![cfg(feature = "engine")]
//! The whole pipeline with face restoration: real detector, real SR model, and a generated
//! restoration model whose effect is known.

mod common;

use common::*;
use image::RgbImage;
use purrify_inference::pipeline::{Engine, EngineConfig, EngineError, JobControl, Stage};
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
    let engine =
        Engine::load(EngineConfig { quality_levels: vec![QualityLevel::Fast], face_model: Some(model), ..EngineConfig::default() })
            .unwrap();
    engine.warm_up().unwrap();
    let input = png_bytes(&crop(&photo("astronaut.png"), 100, 0, 320, 320));
    let run = |face_enhance| {
        let params =
            EnhanceParams { tile_size: 400, quality_level: QualityLevel::Fast, scale: 2, face_enhance, output_format: OutputFormat::Png };
        let mut seen: Vec<(Stage, f32)> = Vec::new();
        let out = engine.enhance(&input, &params, JobControl::new(&|| false, &mut |s, p| seen.push((s, p)))).unwrap();
        (out, seen)
    };
    let (with, seen) = run(true);
    assert_eq!(with.face_restoration, FaceRestoration::Applied);
    assert_eq!(with.faces, 1);
    // Progress per face: one report when detection starts, one after each restored face;
    // all after the tiles, before the encode, and never going backwards.
    let stages: Vec<Stage> = seen.iter().map(|(s, _)| *s).collect();
    let faces: Vec<f32> = seen.iter().filter(|(s, _)| *s == Stage::Faces).map(|(_, p)| *p).collect();
    assert_eq!(faces.len(), 1 + with.faces as usize, "{seen:?}");
    assert!(faces[1] > faces[0], "the face's own report moves the bar: {seen:?}");
    let first_face = stages.iter().position(|s| *s == Stage::Faces).unwrap();
    assert!(stages[..first_face].contains(&Stage::Tiles) && !stages[first_face..].contains(&Stage::Tiles), "{stages:?}");
    assert!(stages[first_face..].iter().all(|s| matches!(s, Stage::Faces | Stage::Encode)), "{stages:?}");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "progress went backwards: {seen:?}");
    let (without, seen) = run(false);
    assert_eq!(without.face_restoration, FaceRestoration::Disabled);
    assert_eq!(without.faces, 0);
    assert!(seen.iter().all(|(s, _)| *s != Stage::Faces), "no face stage when disabled: {seen:?}");

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
    let out = engine.enhance(&coffee, &params, JobControl::new(&|| false, &mut |_, _| {})).unwrap();
    assert_eq!(out.face_restoration, FaceRestoration::NoFaces);

    // Cancellation is checked before each face: cancelled once the tiles are done, the job
    // stops with no face restored and no encode.
    let tiles_done = std::sync::atomic::AtomicBool::new(false);
    let mut stages = Vec::new();
    let err = engine
        .enhance(
            &input,
            &EnhanceParams { quality_level: QualityLevel::Fast, output_format: OutputFormat::Png, ..EnhanceParams::default() },
            JobControl::new(&|| tiles_done.load(std::sync::atomic::Ordering::Relaxed), &mut |s, _| {
                if s == Stage::Faces {
                    tiles_done.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                stages.push(s);
            }),
        )
        .unwrap_err();
    assert!(matches!(err, EngineError::Cancelled), "{err}");
    assert_eq!(stages.iter().filter(|s| **s == Stage::Faces).count(), 1, "only detection started: {stages:?}");
    assert!(!stages.contains(&Stage::Encode));
}
