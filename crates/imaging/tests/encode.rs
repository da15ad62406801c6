//! Encoding round trips and resizing with alpha.

mod common;

use common::*;
use image::{ExtendedColorType, GrayImage, Luma};
use purrify_imaging::{
    DEFAULT_JPEG_QUALITY, Format, ImageError, Limits, OutputFormat, decode, encode, resize_gray,
    resize_rgb, resize_rgb_alpha, sniff,
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
    let d = decode(
        &encode(&img, Some(&alpha), OutputFormat::Jpeg, 95).unwrap(),
        &Limits::default(),
    )
    .unwrap();
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
    assert_eq!(
        (rgb2.dimensions(), alpha2.dimensions()),
        ((96, 64), (96, 64))
    );
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
    assert!(matches!(
        encode(&image::RgbImage::new(0, 0), None, OutputFormat::Jpeg, 90),
        Err(ImageError::Encode(_))
    ));
}

#[test]
fn sixteen_bit_source_encodes_as_8_bit() {
    let native: Vec<u8> = [1000u16, 40000, 65535]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let d = decode(
        &png_bytes(&native, 1, 1, ExtendedColorType::Rgb16),
        &Limits::default(),
    )
    .unwrap();
    let png = encode(&d.rgb, None, OutputFormat::Png, 0).unwrap();
    assert_eq!(
        decode(&png, &Limits::default()).unwrap().source_bit_depth,
        8
    );
}
