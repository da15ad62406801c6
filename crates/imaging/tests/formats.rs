//! Decoding each supported format and variant, compared with independent references.

mod common;

use common::*;
use image::{ExtendedColorType, GrayImage, Rgb, RgbImage};
use purrify_imaging::{Format, Limits, decode, read_header};

fn limits() -> Limits {
    Limits::default()
}

/// Decodes an AVIF fixture and compares it with two references:
/// - `*_exact.png` (where present): textbook float conversion of libdav1d's YUV output, which
///   we should match to the rounding;
/// - `*_ref.png`: Pillow's decode (libavif + libyuv). libyuv uses 6-bit fixed-point
///   coefficients and replicates the last chroma sample of odd-width rows, so it gets a
///   tolerance, and the last column of odd-width images is left out of its maximum.
fn check_avif(name: &str, depth: u8) {
    let bytes = fixture(name);
    let d = decode(&bytes, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(d.format, Format::Avif);
    assert_eq!(d.source_bit_depth, depth, "{name}");
    let h = read_header(&bytes, &limits()).unwrap();
    assert_eq!((h.width, h.height), d.rgb.dimensions(), "{name}: header vs pixels");

    let exact_name = name.replace(".avif", "_exact.png");
    if std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(&exact_name).exists() {
        let (exact, _) = reference(&exact_name);
        let (max, mean) = diff(d.rgb.as_raw(), exact.as_raw());
        eprintln!("{name}: vs exact: max {max} mean {mean:.3}");
        assert!(max <= 1 && mean <= 0.05, "{name}: differs from the exact conversion: max {max}, mean {mean:.3}");
    }

    let (ref_rgb, ref_alpha) = reference(&name.replace(".avif", "_ref.png"));
    assert_eq!(d.rgb.dimensions(), ref_rgb.dimensions(), "{name}");
    let (w, _) = ref_rgb.dimensions();
    let cols = if w % 2 == 1 { w - 1 } else { w };
    let crop = |img: &RgbImage| -> Vec<u8> { img.rows().flat_map(|r| r.take(cols as usize).flat_map(|p| p.0)).collect() };
    let (max, _) = diff(&crop(&d.rgb), &crop(&ref_rgb));
    let (_, mean) = diff(d.rgb.as_raw(), ref_rgb.as_raw());
    eprintln!("{name}: vs Pillow: max {max} mean {mean:.3}");
    assert!(max <= 6 && mean <= 1.2, "{name}: rgb differs from Pillow: max {max}, mean {mean:.3}");

    match (d.alpha, ref_alpha) {
        (Some(a), Some(r)) => {
            let (max, mean) = diff(a.as_raw(), r.as_raw());
            eprintln!("{name}: alpha max {max} mean {mean:.3}");
            assert!(max <= 1 && mean <= 0.05, "{name}: alpha max {max}, mean {mean:.3}");
        }
        (None, None) => {}
        (a, r) => panic!("{name}: alpha presence differs: ours {} reference {}", a.is_some(), r.is_some()),
    }
}

#[test]
fn avif_8bit_420() {
    check_avif("avif8_420.avif", 8);
}

#[test]
fn avif_8bit_alpha() {
    check_avif("avif8_alpha.avif", 8);
}

#[test]
fn avif_10bit_420() {
    check_avif("avif10_420.avif", 10);
}

#[test]
fn avif_10bit_alpha() {
    check_avif("avif10_alpha.avif", 10);
}

#[test]
fn avif_12bit_444_limited_range() {
    check_avif("avif12_444_limited.avif", 12);
}

#[test]
fn avif_8bit_422_bt709() {
    check_avif("avif8_422_bt709.avif", 8);
}

#[test]
fn avif_monochrome() {
    check_avif("avif8_mono.avif", 8);
    let d = decode(&fixture("avif8_mono.avif"), &limits()).unwrap();
    assert!(d.rgb.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
}

#[test]
fn avif_rotation_and_mirror() {
    check_avif("avif8_irot1_imir1.avif", 8);
    let d = decode(&fixture("avif8_irot1_imir1.avif"), &limits()).unwrap();
    assert!(d.orientation_applied);
    assert_eq!(d.rgb.dimensions(), (32, 48));
}

#[test]
fn cmyk_jpeg_matches_pillow() {
    let d = decode(&fixture("cmyk.jpg"), &limits()).unwrap();
    let (r, _) = reference("cmyk_ref.png");
    let (max, mean) = diff(d.rgb.as_raw(), r.as_raw());
    eprintln!("cmyk: max {max} mean {mean:.3}");
    // zune-jpeg and libjpeg agree to within IDCT rounding; an un-inverted CMYK decode would be
    // off by ~200.
    assert!(max <= 3 && mean <= 0.5, "max {max} mean {mean:.3}");
    assert_eq!(d.source_bit_depth, 8);
    assert!(d.alpha.is_none());
}

#[test]
fn palette_png_with_transparency() {
    let d = decode(&fixture("palette_trns.png"), &limits()).unwrap();
    let (r, ra) = reference("palette_trns_ref.png");
    let alpha = d.alpha.expect("tRNS must become alpha");
    assert_eq!(alpha.as_raw(), ra.unwrap().as_raw());
    assert_eq!(d.rgb.as_raw(), r.as_raw());
    assert_eq!(d.source_bit_depth, 8);
}

#[test]
fn webp_lossy_close_to_libwebp() {
    let d = decode(&fixture("webp_lossy.webp"), &limits()).unwrap();
    assert_eq!(d.format, Format::Webp);
    let (r, _) = reference("webp_lossy_ref.png");
    let (max, mean) = diff(d.rgb.as_raw(), r.as_raw());
    eprintln!("webp lossy: max {max} mean {mean:.3}");
    // image-webp reproduces libwebp (fancy upsampling included) exactly today; allow rounding.
    assert!(max <= 2 && mean <= 0.1, "max {max} mean {mean:.3}");
}

#[test]
fn webp_lossless_alpha_exact() {
    let d = decode(&fixture("webp_alpha_lossless.webp"), &limits()).unwrap();
    let (r, ra) = reference("rgba_source.png");
    let (ra, alpha) = (ra.unwrap(), d.alpha.expect("alpha"));
    assert_eq!(alpha.as_raw(), ra.as_raw());
    // Colour under fully transparent pixels is not kept by lossless WebP; compare the rest.
    for ((p, q), a) in d.rgb.pixels().zip(r.pixels()).zip(ra.pixels()) {
        if a.0[0] > 0 {
            assert_eq!(p, q);
        }
    }
}

#[test]
fn exif_rotated_jpeg() {
    // 64x32 grey with a red block in the top-left corner, stored unrotated; EXIF says 6
    // (rotate 90 degrees clockwise to display).
    let mut img = RgbImage::from_pixel(64, 32, Rgb([128, 128, 128]));
    for y in 0..8 {
        for x in 0..8 {
            img.put_pixel(x, y, Rgb([230, 20, 20]));
        }
    }
    let jpeg = with_exif_orientation(&jpeg_bytes(&img, 95), 6);
    let h = read_header(&jpeg, &limits()).unwrap();
    assert_eq!((h.width, h.height), (32, 64));
    let d = decode(&jpeg, &limits()).unwrap();
    assert!(d.orientation_applied);
    assert_eq!(d.rgb.dimensions(), (32, 64));
    let red = |p: &Rgb<u8>| p.0[0] > 180 && p.0[1] < 80 && p.0[2] < 80;
    // Top-left goes to top-right under a clockwise quarter turn.
    assert!(red(d.rgb.get_pixel(32 - 4, 3)), "{:?}", d.rgb.get_pixel(28, 3));
    assert!(!red(d.rgb.get_pixel(3, 3)));
    assert!(!red(d.rgb.get_pixel(32 - 4, 64 - 4)));

    // The same JPEG without EXIF is left alone.
    let plain = decode(&jpeg_bytes(&img, 95), &limits()).unwrap();
    assert!(!plain.orientation_applied);
    assert_eq!(plain.rgb.dimensions(), (64, 32));
}

#[test]
fn exif_orientation_in_png() {
    // eXIf chunk before IDAT, orientation 3 (rotate 180).
    let mut img = RgbImage::from_pixel(10, 6, Rgb([0, 0, 0]));
    img.put_pixel(0, 0, Rgb([255, 255, 255]));
    let png = png_bytes(img.as_raw(), 10, 6, ExtendedColorType::Rgb8);
    let ihdr_end = 8 + 25;
    let png = [&png[..ihdr_end], &png_chunk(b"eXIf", &exif_tiff(3)), &png[ihdr_end..]].concat();
    let d = decode(&png, &limits()).unwrap();
    assert!(d.orientation_applied);
    assert_eq!(d.rgb.get_pixel(9, 5).0, [255, 255, 255]);
    assert_eq!(d.rgb.get_pixel(0, 0).0, [0, 0, 0]);
}

#[test]
fn sixteen_bit_png_rounds() {
    // Values chosen around rounding boundaries: v/257 = 0.498, 0.502, 127.5-ish, 254.6.
    let samples: [u16; 6] = [128, 129, 32767, 32896, 65535, 65407];
    // image's PNG encoder takes native-endian 16-bit samples.
    let native: Vec<u8> = samples.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let png = png_bytes(&native, 2, 1, ExtendedColorType::Rgb16);
    let d = decode(&png, &limits()).unwrap();
    assert_eq!(d.source_bit_depth, 16);
    let expect: Vec<u8> = samples.iter().map(|&v| (f64::from(v) / 257.0).round() as u8).collect();
    assert_eq!(d.rgb.as_raw(), &expect);
    assert_eq!(expect, vec![0, 1, 127, 128, 255, 255]);
}

#[test]
fn sixteen_bit_rgba_png_keeps_alpha() {
    let samples: [u16; 8] = [65535, 0, 0, 32896, 0, 65535, 0, 65535];
    let native: Vec<u8> = samples.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let d = decode(&png_bytes(&native, 2, 1, ExtendedColorType::Rgba16), &limits()).unwrap();
    assert_eq!(d.source_bit_depth, 16);
    assert_eq!(d.rgb.as_raw(), &vec![255, 0, 0, 0, 255, 0]);
    assert_eq!(d.alpha.unwrap().as_raw(), &vec![128, 255]);
}

#[test]
fn grayscale_png_becomes_rgb() {
    let g = GrayImage::from_fn(5, 3, |x, y| image::Luma([(x * 50 + y) as u8]));
    let d = decode(&png_bytes(g.as_raw(), 5, 3, ExtendedColorType::L8), &limits()).unwrap();
    assert!(d.alpha.is_none());
    for (p, q) in d.rgb.pixels().zip(g.pixels()) {
        assert_eq!(p.0, [q.0[0]; 3]);
    }
}

#[test]
fn gray_alpha_png() {
    let raw = [10u8, 0, 20, 128, 30, 255];
    let d = decode(&png_bytes(&raw, 3, 1, ExtendedColorType::La8), &limits()).unwrap();
    assert_eq!(d.rgb.as_raw(), &vec![10, 10, 10, 20, 20, 20, 30, 30, 30]);
    assert_eq!(d.alpha.unwrap().as_raw(), &vec![0, 128, 255]);
}

#[test]
fn opaque_alpha_is_dropped() {
    let rgba: Vec<u8> = test_image(6, 4).pixels().flat_map(|p| [p.0[0], p.0[1], p.0[2], 255]).collect();
    let d = decode(&png_bytes(&rgba, 6, 4, ExtendedColorType::Rgba8), &limits()).unwrap();
    assert!(d.alpha.is_none());
    assert_eq!(d.rgb, test_image(6, 4));
}

/// The project's cache directory, by the rule of `tools/models/fetch.py` and
/// `purrify_inference::cache::cache_root` (this crate cannot depend on that one):
/// `PURRIFY_CACHE`, else `$XDG_CACHE_HOME/purrify`, else `~/.cache/purrify`.
fn cache_root() -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os("PURRIFY_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("purrify")
}

/// The real photos the setup step fetches (scikit-image's), with their known sizes; the
/// committed fixtures stay tiny. Missing photos fail the test: run `make models`.
#[test]
fn real_photos() {
    let dir = cache_root().join("photos");
    let expected = [
        ("astronaut.png", Format::Png, (512, 512)),
        ("chelsea.png", Format::Png, (451, 300)),
        ("coffee.png", Format::Png, (600, 400)),
        ("rocket.jpg", Format::Jpeg, (640, 427)),
    ];
    for (name, format, size) in expected {
        let path = dir.join(name);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `make models` (or set PURRIFY_CACHE) first", path.display()));
        let h = read_header(&bytes, &limits()).unwrap();
        let d = decode(&bytes, &limits()).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(d.format, format, "{name}");
        assert_eq!((h.width, h.height), size, "{name}: header");
        assert_eq!(d.rgb.dimensions(), size, "{name}: pixels");
        // A real photo, not a blank buffer: plenty of distinct values.
        let mut seen = [false; 256];
        d.rgb.as_raw().iter().for_each(|&v| seen[usize::from(v)] = true);
        assert!(seen.iter().filter(|&&s| s).count() > 128, "{name}: too few distinct values");
    }
}
