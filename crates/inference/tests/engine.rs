#![cfg(feature = "engine")]
//! The enhancement engine with the real fast models on small crops of real photos.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use image::{RgbImage, RgbaImage};
use purrify_inference::pipeline::{EngineError, Enhanced, JobControl, Stage};
use purrify_inference::protocol::{EnhanceParams, ErrorReason, FaceRestoration, OutputFormat, QualityLevel};

fn run(input: &[u8], params: EnhanceParams) -> Result<Enhanced, EngineError> {
    fast_engine().enhance(input, &params, JobControl::new(&|| false, &mut |_, _| {}))
}

fn params(q: QualityLevel, scale: u32, tile: u32, fmt: OutputFormat) -> EnhanceParams {
    EnhanceParams { tile_size: tile, quality_level: q, scale, face_enhance: true, output_format: fmt }
}

fn decode_rgb(bytes: &[u8]) -> RgbImage {
    image::load_from_memory(bytes).unwrap().to_rgb8()
}

fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    let mse: f64 =
        a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / a.as_raw().len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

#[test]
fn tiled_output_equals_whole_image_output_when_pad_covers_receptive_field() {
    let input = png_bytes(&crop(&photo("coffee.png"), 200, 100, 96, 80));
    let png = |q, tile| decode_rgb(&run(&input, params(q, 2, tile, OutputFormat::Png)).unwrap().bytes);
    // A 400 px tile covers the 96x80 crop whole. medium: pad 20 >= animevideov3's
    // receptive-field radius (18).
    let whole = png(QualityLevel::Medium, 400);
    let tiled = png(QualityLevel::Medium, 32);
    let diff = max_abs_diff(&whole, &tiled);
    eprintln!("medium (pad 20): max |tiled - whole| = {diff}/255");
    assert!(diff <= 1, "tiled output differs from whole-image output by {diff}/255");
    // The comparison is sensitive: fast pads only 6 px, and its seams show.
    let fast_whole = png(QualityLevel::Fast, 400);
    let fast_tiled = png(QualityLevel::Fast, 32);
    let fast_diff = max_abs_diff(&fast_whole, &fast_tiled);
    eprintln!("fast (pad 6): max |tiled - whole| = {fast_diff}/255");
    assert!(fast_diff > 1, "a pad below the receptive field should leave visible differences");
}

#[test]
fn real_photo_upscales_at_scale_2_and_4() {
    let src = crop(&photo("astronaut.png"), 180, 60, 64, 64);
    let input = jpeg_bytes(&src);
    for scale in [2, 4] {
        let out = run(&input, params(QualityLevel::Fast, scale, 400, OutputFormat::Jpeg)).unwrap();
        assert_eq!((out.width, out.height), (64 * scale, 64 * scale));
        assert_eq!(&out.bytes[..3], &[0xFF, 0xD8, 0xFF], "JPEG by default");
        assert_eq!(out.model, if scale == 2 { "realesr-animevideov3-x2" } else { "realesr-animevideov3-x4" });
        assert_eq!(out.face_restoration, FaceRestoration::NotConfigured);
        // The enhanced image must still be the same picture: compare with a plain resize.
        let got = decode_rgb(&out.bytes);
        let reference = image::imageops::resize(&src, 64 * scale, 64 * scale, image::imageops::FilterType::CatmullRom);
        let p = psnr(&got, &reference);
        eprintln!("scale {scale}: PSNR vs bicubic = {p:.1} dB");
        assert!(p > 22.0, "output does not resemble the input (PSNR {p:.1} dB)");
    }
}

#[test]
fn progress_is_monotone_per_tile_and_ends_at_one() {
    let input = png_bytes(&crop(&photo("chelsea.png"), 0, 0, 100, 70));
    let mut seen: Vec<(Stage, f32)> = Vec::new();
    let out = fast_engine()
        .enhance(&input, &params(QualityLevel::Fast, 2, 32, OutputFormat::Jpeg), JobControl::new(&|| false, &mut |s, p| seen.push((s, p))))
        .unwrap();
    assert_eq!(out.tiles, 12, "4 x 3 tiles of 32 px");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "progress went backwards: {seen:?}");
    assert_eq!(seen.iter().filter(|(s, _)| *s == Stage::Tiles).count(), 12, "one report per tile");
    assert_eq!(seen.last().unwrap().1, 1.0);
}

/// The per-tile times handed to the worker's histogram are the model's own: one per tile,
/// adding up to the engine's model time, which excludes decode, faces and encode.
#[test]
fn tile_model_times_are_reported_per_tile() {
    let input = png_bytes(&crop(&photo("chelsea.png"), 0, 0, 100, 70));
    let mut samples: Vec<Duration> = Vec::new();
    let mut record = |d: Duration| samples.push(d);
    let out = fast_engine()
        .enhance(
            &input,
            &params(QualityLevel::Fast, 2, 32, OutputFormat::Jpeg),
            JobControl { cancelled: &|| false, progress: &mut |_, _| {}, tile_model_time: Some(&mut record) },
        )
        .unwrap();
    assert_eq!(samples.len() as u32, out.tiles);
    let sum: Duration = samples.iter().sum();
    let t = out.timings;
    assert_eq!(sum, t.sr_model, "the samples are the model time, nothing else");
    assert!(sum <= t.tiles && t.tiles <= t.total, "{t:?}");
    assert!(sum + t.decode + t.encode <= t.total, "{t:?}");
    assert!(samples.iter().all(|d| !d.is_zero()));
}

/// `tile_size: 0` used to run the whole image as one tile (memory growing with the image);
/// it now means the default 400 px tile.
#[test]
fn zero_tile_size_runs_with_the_default_tile() {
    let input = png_bytes(&RgbImage::from_fn(450, 20, |x, y| image::Rgb([(x % 256) as u8, (y * 9) as u8, 90])));
    let out = run(&input, params(QualityLevel::Fast, 2, 0, OutputFormat::Jpeg)).unwrap();
    assert_eq!(out.tiles, 2, "450 px wide in 400 px tiles");
    assert_eq!((out.width, out.height), (900, 40));
}

#[test]
fn cancellation_is_checked_between_tiles() {
    let input = png_bytes(&crop(&photo("chelsea.png"), 0, 0, 128, 64));
    let tiles_done = AtomicU32::new(0);
    let cancelled = || tiles_done.load(Ordering::Relaxed) >= 2;
    let mut progress = |s: Stage, _| {
        if s == Stage::Tiles {
            tiles_done.fetch_add(1, Ordering::Relaxed);
        }
    };
    let err = fast_engine()
        .enhance(&input, &params(QualityLevel::Fast, 2, 32, OutputFormat::Jpeg), JobControl::new(&cancelled, &mut progress))
        .unwrap_err();
    assert_eq!(err.reason(), ErrorReason::Cancelled);
    assert_eq!(tiles_done.load(Ordering::Relaxed), 2, "stopped right after the second of 8 tiles");
}

#[test]
fn alpha_is_resized_when_the_format_keeps_it_and_dropped_for_jpeg() {
    let rgb = crop(&photo("coffee.png"), 0, 0, 40, 30);
    let rgba = RgbaImage::from_fn(40, 30, |x, y| {
        let p = rgb.get_pixel(x, y);
        image::Rgba([p[0], p[1], p[2], if x < 20 { 255 } else { 0 }])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(rgba).write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let input = bytes.into_inner();

    let out = run(&input, params(QualityLevel::Fast, 2, 400, OutputFormat::Png)).unwrap();
    let img = image::load_from_memory(&out.bytes).unwrap();
    assert!(img.color().has_alpha(), "PNG output keeps alpha");
    let a = img.to_rgba8();
    assert_eq!(a.dimensions(), (80, 60));
    assert_eq!(a.get_pixel(5, 30)[3], 255, "opaque half stays opaque");
    assert_eq!(a.get_pixel(75, 30)[3], 0, "transparent half stays transparent");

    let out = run(&input, params(QualityLevel::Fast, 2, 400, OutputFormat::Jpeg)).unwrap();
    assert!(!image::load_from_memory(&out.bytes).unwrap().color().has_alpha());
}

/// JPEG with an APP1 Exif segment holding only an Orientation tag.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian TIFF header, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn hostile_inputs_table() {
    let photo = crop(&photo("rocket.jpg"), 100, 100, 48, 32);
    let jpeg = jpeg_bytes(&photo);
    let gif = gif_bytes(&photo);
    let mut garbage_after_header = jpeg[..20].to_vec();
    garbage_after_header.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let tiny = png_bytes(&RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 10])));
    let strip = png_bytes(&crop(&photo, 0, 0, 40, 8));
    let wide = png_bytes(&RgbImage::from_fn(400, 8, |x, _| image::Rgb([(x % 256) as u8, 0, 0])));

    let x2 = params(QualityLevel::Fast, 2, 400, OutputFormat::Jpeg);
    let x4 = params(QualityLevel::Fast, 4, 400, OutputFormat::Jpeg);
    let webp = params(QualityLevel::Fast, 2, 400, OutputFormat::Webp);
    // The result-size rows use PNGs with no pixel data: they can only pass if the size is
    // refused from the header, before decoding (which fails as bad input, see the last of
    // them) or any model work.
    // (name, input, params, expected: Ok((w, h)) of the output, or Err(reason))
    type Row = (&'static str, Vec<u8>, EnhanceParams, Result<(u32, u32), ErrorReason>);
    let table: Vec<Row> = vec![
        ("empty", vec![], x2, Err(ErrorReason::BadInput)),
        ("text named .jpg", b"hello, this is not an image\n".to_vec(), x2, Err(ErrorReason::BadInput)),
        ("truncated JPEG", jpeg[..jpeg.len() / 3].to_vec(), x2, Err(ErrorReason::BadInput)),
        ("garbage after a JPEG header", garbage_after_header, x2, Err(ErrorReason::BadInput)),
        ("GIF", gif, x2, Err(ErrorReason::BadInput)),
        ("PNG header claiming 100000x100000", png_header_claiming(100_000, 100_000), x2, Err(ErrorReason::TooLarge)),
        ("x4 JPEG result wider than 65535", png_without_pixels(16_384, 100), x4, Err(ErrorReason::TooLarge)),
        ("x2 WebP result taller than 16383", png_without_pixels(100, 8_192), webp, Err(ErrorReason::TooLarge)),
        ("x4 result over max_output_pixels", png_without_pixels(7_000, 7_000), x4, Err(ErrorReason::TooLarge)),
        ("PNG without pixels, 100x100 at x4", png_without_pixels(100, 100), x4, Err(ErrorReason::BadInput)),
        ("1x1", tiny, x2, Ok((2, 2))),
        ("40x8", strip, x2, Ok((80, 16))),
        ("400x8", wide, x2, Ok((800, 16))),
        ("EXIF orientation 6 (rotate 90)", with_exif_orientation(&jpeg, 6), x2, Ok((64, 96))),
        ("plain 48x32 JPEG", jpeg.clone(), x2, Ok((96, 64))),
    ];
    let mut failures = Vec::new();
    for (name, input, params, expected) in table {
        let got = run(&input, params);
        let got_summary = match &got {
            Ok(e) => Ok((e.width, e.height)),
            Err(e) => Err(e.reason()),
        };
        if let Err(e) = &got {
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{name}: message must be one line: {msg:?}");
            if name.contains("result") {
                assert!(msg.starts_with("the result would be"), "{name}: {msg}");
            }
            eprintln!("{name}: {:?}: {msg}", e.reason());
        }
        if got_summary != expected {
            failures.push(format!("{name}: expected {expected:?}, got {got_summary:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn exif_rotation_moves_pixels_not_just_dimensions() {
    // Left half red, right half blue; orientation 6 means "rotate 90 clockwise to display",
    // so the red half ends up on top.
    let img = RgbImage::from_fn(64, 32, |x, _| if x < 32 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) });
    let input = with_exif_orientation(&jpeg_bytes(&img), 6);
    let out = decode_rgb(&run(&input, params(QualityLevel::Fast, 2, 400, OutputFormat::Png)).unwrap().bytes);
    assert_eq!(out.dimensions(), (64, 128));
    let top = out.get_pixel(32, 20);
    let bottom = out.get_pixel(32, 108);
    assert!(top[0] > 200 && top[2] < 60, "top should be red, got {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom should be blue, got {bottom:?}");
}

#[test]
fn invalid_parameters_are_refused_with_the_field_named() {
    let input = png_bytes(&RgbImage::new(8, 8));
    let err = run(&input, params(QualityLevel::Fast, 3, 400, OutputFormat::Jpeg)).unwrap_err();
    assert_eq!(err.reason(), ErrorReason::InvalidParams);
    assert!(err.to_string().contains("scale"));
    let err = run(&input, params(QualityLevel::High, 2, 400, OutputFormat::Jpeg)).unwrap_err();
    assert_eq!(err.reason(), ErrorReason::InvalidParams, "x4plus is not loaded in this engine");
    assert!(err.to_string().contains("high"));
}

/// This machine's ONNX Runtime (the CPU wheel) has no CUDA or TensorRT: asking for them must
/// load the session on CPU, with the reason recorded, not fail.
#[test]
fn gpu_providers_fall_back_to_cpu_when_the_runtime_lacks_them() {
    use purrify_inference::runtime::{Provider, Runtime, RuntimeConfig};
    require_models();
    let model = purrify_inference::runtime::paths::models_dir().join("realesr-animevideov3-x2.onnx");
    for requested in [Provider::Cuda, Provider::TensorRt] {
        let rt = Runtime::new(RuntimeConfig { provider: requested, ..Default::default() }).unwrap();
        let m = rt.load("fallback", &model).unwrap();
        let sel = m.selection();
        assert_eq!(sel.requested, requested);
        assert_eq!(sel.active, Provider::Cpu, "{requested} must fall back to cpu here");
        assert_eq!(sel.registered, vec![Provider::Cpu]);
        // TensorRT is registered with CUDA behind it: both are tried, in that order.
        let tried: Vec<Provider> = sel.skipped.iter().map(|(p, _)| *p).collect();
        assert_eq!(tried, requested.registrations());
        assert!(sel.skipped.iter().all(|(_, why)| !why.is_empty()));
        eprintln!("{requested}: skipped {:?}", sel.skipped);
    }
}
