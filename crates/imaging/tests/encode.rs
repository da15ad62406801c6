//! Encoding round trips and resizing with alpha.

mod common;

use common::*;
use image::{ExtendedColorType, GrayImage, Luma};
use purrify_imaging::{
    DEFAULT_JPEG_QUALITY, Format, ImageError, Limits, OutputFormat, check_output_size, decode, encode, resize_gray, resize_rgb,
    resize_rgb_alpha, sniff,
};

#[test]
fn jpeg_round_trip_and_quality() {
    let img = test_image(120, 80);
    let hi = encode(&img, None, OutputFormat::Jpeg, DEFAULT_JPEG_QUALITY).unwrap();
    let lo = encode(&img, None, OutputFormat::Jpeg, 30).unwrap();
    assert_eq!(sniff(&hi), Some(Format::Jpeg));
    assert!(lo.len() < hi.len());
    let d = decode(&hi, &Limits::default()).unwrap();
    let (max, mean) = diff(d.rgb.as_raw(), img.as_raw());
    assert!(mean < 3.0, "max {max} mean {mean}");
    // Out-of-range qualities are clamped, not errors.
    assert!(encode(&img, None, OutputFormat::Jpeg, 0).is_ok());
    assert!(encode(&img, None, OutputFormat::Jpeg, 255).is_ok());
}

#[test]
fn jpeg_with_alpha_is_composited_over_white() {
    let img = image::RgbImage::from_pixel(16, 16, image::Rgb([0, 0, 0]));
    let alpha = GrayImage::from_fn(16, 16, |x, _| Luma([if x < 8 { 255 } else { 0 }]));
    let d = decode(&encode(&img, Some(&alpha), OutputFormat::Jpeg, 95).unwrap(), &Limits::default()).unwrap();
    assert!(d.alpha.is_none());
    assert!(d.rgb.get_pixel(2, 8).0.iter().all(|&c| c < 10));
    assert!(d.rgb.get_pixel(13, 8).0.iter().all(|&c| c > 245));
}

#[test]
fn png_and_webp_are_lossless_with_and_without_alpha() {
    let img = test_image(33, 17);
    let alpha = GrayImage::from_fn(33, 17, |x, y| Luma([(x * 7 + y) as u8]));
    for format in [OutputFormat::Png, OutputFormat::Webp] {
        let d = decode(&encode(&img, None, format, 0).unwrap(), &Limits::default()).unwrap();
        assert_eq!(d.rgb, img, "{format:?}");
        assert!(d.alpha.is_none());
        let bytes = encode(&img, Some(&alpha), format, 0).unwrap();
        let d = decode(&bytes, &Limits::default()).unwrap();
        assert_eq!(d.alpha.as_ref(), Some(&alpha), "{format:?}");
        // WebP lossless may drop colour under alpha 0; PNG keeps everything.
        for ((p, q), a) in d.rgb.pixels().zip(img.pixels()).zip(alpha.pixels()) {
            if a.0[0] > 0 || format == OutputFormat::Png {
                assert_eq!(p, q, "{format:?}");
            }
        }
    }
}

#[test]
fn rgba_png_decode_resize_encode() {
    let bytes = fixture("rgba_source.png");
    let d = decode(&bytes, &Limits::default()).unwrap();
    let alpha = d.alpha.expect("source has transparency");
    let (rgb2, alpha2) = resize_rgb_alpha(&d.rgb, &alpha, 96, 64);
    assert_eq!((rgb2.dimensions(), alpha2.dimensions()), ((96, 64), (96, 64)));
    // Opaque left edge stays opaque, transparent right edge stays transparent.
    assert!(alpha2.get_pixel(1, 30).0[0] > 250);
    assert!(alpha2.get_pixel(94, 30).0[0] < 5);
    let out = encode(&rgb2, Some(&alpha2), OutputFormat::Png, 0).unwrap();
    let back = decode(&out, &Limits::default()).unwrap();
    assert_eq!(back.alpha.as_ref(), Some(&alpha2));
    assert_eq!(back.rgb, rgb2);
}

#[test]
fn resize_quality_on_smooth_content() {
    let img = test_image(200, 100);
    let half = resize_rgb(&img, 100, 50);
    let back = resize_rgb(&half, 200, 100);
    let (_, mean) = diff(back.as_raw(), img.as_raw());
    assert!(mean < 12.0, "mean {mean}");
    let g = GrayImage::from_pixel(10, 10, Luma([77]));
    assert!(resize_gray(&g, 23, 5).pixels().all(|p| p.0[0] == 77));
}

#[test]
fn encode_rejects_bad_arguments() {
    let img = test_image(4, 4);
    let wrong = GrayImage::new(3, 4);
    let e = encode(&img, Some(&wrong), OutputFormat::Png, 0).unwrap_err();
    assert_eq!(e.reason(), "encode");
    assert!(!e.is_input_error());
    assert!(matches!(encode(&image::RgbImage::new(0, 0), None, OutputFormat::Jpeg, 90), Err(ImageError::Encode(_))));
}

#[test]
fn sixteen_bit_source_encodes_as_8_bit() {
    let native: Vec<u8> = [1000u16, 40000, 65535].iter().flat_map(|v| v.to_ne_bytes()).collect();
    let d = decode(&png_bytes(&native, 1, 1, ExtendedColorType::Rgb16), &Limits::default()).unwrap();
    let png = encode(&d.rgb, None, OutputFormat::Png, 0).unwrap();
    assert_eq!(decode(&png, &Limits::default()).unwrap().source_bit_depth, 8);
}

/// `max_side` is exactly where the formats stop working: one more pixel fails in the JPEG
/// encoder itself, and for WebP produces a file that does not read back (image-webp decodes a
/// 16384 side as 0). Our own check refuses it first, as the request's fault (not retried).
#[test]
fn output_side_limits_match_the_encoders() {
    use image::ImageEncoder;
    let any_size = Limits { max_pixels: u64::MAX, max_dimension: u32::MAX };
    for format in [OutputFormat::Jpeg, OutputFormat::Webp] {
        let max = format.max_side();
        for (w, h) in [(max, 1), (1, max)] {
            let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
            let bytes = encode(&img, None, format, 90).unwrap_or_else(|e| panic!("{format:?} {w}x{h} must encode: {e}"));
            let d = decode(&bytes, &any_size).unwrap_or_else(|e| panic!("{format:?} {w}x{h} must decode: {e}"));
            assert_eq!(d.rgb.dimensions(), (w, h), "{format:?}");
        }
        let over = image::RgbImage::new(max + 1, 1);
        let mut sink = Vec::new();
        match format {
            OutputFormat::Jpeg => {
                let raw = image::codecs::jpeg::JpegEncoder::new(&mut sink).write_image(over.as_raw(), max + 1, 1, ExtendedColorType::Rgb8);
                assert!(raw.is_err(), "the JPEG encoder accepts {} px", max + 1);
            }
            _ => {
                image::codecs::webp::WebPEncoder::new_lossless(&mut sink)
                    .write_image(over.as_raw(), max + 1, 1, ExtendedColorType::Rgb8)
                    .unwrap();
                let back = decode(&sink, &any_size).map(|d| d.rgb.dimensions());
                assert_ne!(back, Ok((max + 1, 1)), "a {} px WebP reads back", max + 1);
            }
        }
        let e = encode(&over, None, format, 90).unwrap_err();
        assert!(matches!(e, ImageError::OutputTooLarge { .. }), "{format:?}: {e:?}");
        assert!(e.is_input_error());
        assert_eq!(e.reason(), "too_large");
        let msg = e.to_string();
        assert!(msg.contains(format.name()) && msg.contains(&max.to_string()), "{msg}");
    }
    assert_eq!(OutputFormat::Png.max_side(), (1 << 31) - 1);
}

#[test]
fn output_size_is_checked_against_pixels_and_sides() {
    // 20000x20000 input at x4: 80000 per side is too wide for JPEG and WebP, not for PNG.
    let (w, h) = (80_000, 80_000);
    for format in [OutputFormat::Jpeg, OutputFormat::Webp] {
        let e = check_output_size(w, h, format, u64::MAX).unwrap_err();
        assert!(matches!(e, ImageError::OutputTooLarge { .. }), "{e:?}");
    }
    let e = check_output_size(w, h, OutputFormat::Png, 200_000_000).unwrap_err();
    assert_eq!(e, ImageError::OutputTooManyPixels { width: w, height: h, max_pixels: 200_000_000 });
    assert_eq!(
        e.to_string(),
        "the result would be 80000x80000 = 6400000000 pixels; the limit is 200000000; use a smaller scale or a smaller image"
    );
    assert!(e.is_input_error());
    // The limits are inclusive.
    assert!(check_output_size(16_383, 10, OutputFormat::Webp, 163_830).is_ok());
    assert!(check_output_size(16_383, 10, OutputFormat::Webp, 163_829).is_err());
    assert!(check_output_size(65_535, 65_535, OutputFormat::Jpeg, u64::MAX).is_ok());
}
