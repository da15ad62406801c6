//! Hostile and edge-case inputs, each with its exact expected outcome.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use image::ExtendedColorType;
use purrify_imaging::{Format, ImageError, Limits, decode, read_header};

/// Records the largest single allocation, to prove that bombs are refused before any pixel
/// buffer exists.
struct PeakAlloc;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only records sizes.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

#[derive(Debug)]
enum Expect {
    Ok { w: u32, h: u32 },
    Err { reason: &'static str, message: &'static str },
}

fn err(reason: &'static str, message: &'static str) -> Expect {
    Expect::Err { reason, message }
}

fn truncated_jpeg() -> Vec<u8> {
    let j = jpeg_bytes(&test_image(64, 64), 90);
    j[..j.len() / 2].to_vec()
}

fn truncated_png() -> Vec<u8> {
    let img = test_image(64, 64);
    let p = png_bytes(img.as_raw(), 64, 64, ExtendedColorType::Rgb8);
    p[..p.len() / 2].to_vec()
}

fn soi_app0_garbage() -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0];
    v.extend(noise(4096, 7));
    v
}

fn soi_garbage() -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8, 0x12];
    v.extend(noise(4096, 9));
    v
}

fn gif() -> Vec<u8> {
    let mut out = Vec::new();
    let frame = image::Frame::new(image::RgbaImage::new(4, 4));
    image::codecs::gif::GifEncoder::new(&mut out).encode_frame(frame).unwrap();
    out
}

fn tiff() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(test_image(4, 4)).write_to(&mut out, image::ImageFormat::Tiff).unwrap();
    out.into_inner()
}

fn bmp() -> Vec<u8> {
    let mut v = b"BM\x46\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0\x02\0\0\0\x02\0\0\0\x01\0\x18\0".to_vec();
    v.resize(70, 0);
    v
}

fn heic() -> Vec<u8> {
    let mut v = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic".to_vec();
    v.extend(noise(200, 3));
    v
}

fn png_rgb(w: u32, h: u32) -> Vec<u8> {
    png_bytes(test_image(w, h).as_raw(), w, h, ExtendedColorType::Rgb8)
}

/// The AVIF fixture with its `ispe` rewritten to claim another size.
fn avif_with_ispe(w: u32, h: u32) -> Vec<u8> {
    let mut f = fixture("avif8_420.avif");
    let at = f.windows(4).position(|b| b == b"ispe").expect("ispe") + 8;
    f[at..at + 4].copy_from_slice(&w.to_be_bytes());
    f[at + 4..at + 8].copy_from_slice(&h.to_be_bytes());
    f
}

fn avif_flipped(at: usize, xor: u8) -> Vec<u8> {
    let mut f = fixture("avif8_420.avif");
    f[at] ^= xor;
    f
}

fn text_named_jpg() -> Vec<u8> {
    // Written to and read back from a file named like a photo: the name must not matter.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holiday.jpg");
    std::fs::write(&path, "Dear user, this is not a photo.\n").unwrap();
    std::fs::read(path).unwrap()
}

fn cases() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let not_image = "the file is not a JPEG, PNG, WebP or AVIF image";
    vec![
        ("empty", vec![], err("empty", "the file is empty")),
        ("text named .jpg", text_named_jpg(), err("unsupported_format", not_image)),
        ("truncated JPEG", truncated_jpeg(), err("malformed", "the JPEG data ends early")),
        ("truncated PNG", truncated_png(), err("malformed", "damaged or incomplete")),
        ("SOI + APP0 + garbage", soi_app0_garbage(), err("malformed", "damaged or incomplete")),
        ("SOI + garbage", soi_garbage(), err("unsupported_format", not_image)),
        ("JPEG header only", jpeg_bytes(&test_image(8, 8), 90)[..20].to_vec(), err("malformed", "damaged or incomplete")),
        ("GIF", gif(), err("unsupported_format", "GIF images are not supported; upload a JPEG, PNG, WebP or AVIF image")),
        ("TIFF", tiff(), err("unsupported_format", "TIFF images are not supported")),
        ("BMP", bmp(), err("unsupported_format", "BMP images are not supported")),
        ("HEIC", heic(), err("unsupported_format", "HEIC images are not supported")),
        (
            "PNG claiming 100000x100000",
            png_header_only(100_000, 100_000),
            err("too_large", "image is 100000x100000 = 10000000000 pixels; the limit is 50000000"),
        ),
        ("PNG claiming 0x10", png_header_only(0, 10), err("malformed", "0x10")),
        (
            "PNG 20001x1 (too wide)",
            png_header_only(20_001, 1),
            err("too_large", "image is 20001x1; neither side may exceed 20000 pixels"),
        ),
        ("PNG header only, sane size", png_header_only(64, 64), err("malformed", "damaged or incomplete")),
        ("1x1 PNG", png_rgb(1, 1), Expect::Ok { w: 1, h: 1 }),
        ("400x8 PNG", png_rgb(400, 8), Expect::Ok { w: 400, h: 8 }),
        ("1x1 JPEG", jpeg_bytes(&test_image(1, 1), 90), Expect::Ok { w: 1, h: 1 }),
        ("400x8 JPEG", jpeg_bytes(&test_image(400, 8), 90), Expect::Ok { w: 400, h: 8 }),
        (
            "JPEG + trailing junk after EOI",
            [jpeg_bytes(&test_image(16, 16), 90), noise(300, 5)].concat(),
            Expect::Ok { w: 16, h: 16 },
        ),
        ("truncated WebP", fixture("webp_lossy.webp")[..300].to_vec(), err("malformed", "damaged or incomplete")),
        (
            "animated WebP",
            fixture("webp_animated.webp"),
            err("unsupported_feature", "animated WebP images are not supported"),
        ),
        ("truncated AVIF", fixture("avif8_420.avif")[..400].to_vec(), err("malformed", "damaged or incomplete")),
        ("AVIF cut inside meta", fixture("avif8_420.avif")[..120].to_vec(), err("malformed", "AVIF")),
        (
            "AVIF ispe claiming 100000x100000",
            avif_with_ispe(100_000, 100_000),
            err("too_large", "image is 100000x100000 = 10000000000 pixels; the limit is 50000000"),
        ),
        (
            "AVIF ispe smaller than the AV1 frame",
            avif_with_ispe(16, 16),
            err("malformed", "the coded frame is larger than the image size the file declares"),
        ),
        ("AVIF ispe larger than the AV1 frame", avif_with_ispe(64, 64), err("malformed", "the file says 64x64")),
        (
            // With rav1d's single-frame-context settings this aborted the process
            // (memorysafety/rav1d#1497); see avif::dav1d.
            "AVIF with corrupt tile data",
            avif_flipped(935, 0xFF),
            err("malformed", "AV1 decoding failed: the data is corrupt"),
        ),
        ("AVIF grid", fixture("avif_grid.avif"), err("unsupported_feature", "tiled (grid) AVIF images are not supported")),
    ]
}

#[test]
fn hostile_inputs_table() {
    let limits = Limits::default();
    let mut failures = Vec::new();
    for (name, bytes, expect) in cases() {
        let got = decode(&bytes, &limits);
        let ok = match (&expect, &got) {
            (Expect::Ok { w, h }, Ok(d)) => d.rgb.dimensions() == (*w, *h),
            (Expect::Err { reason, message }, Err(e)) => {
                e.reason() == *reason && e.to_string().contains(message) && !e.to_string().contains('\n')
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{name}: expected {expect:?}, got {:?}",
                got.as_ref().map(|d| d.rgb.dimensions()).map_err(|e| (e.reason(), e.to_string()))
            ));
        }
        // read_header must agree wherever the header alone can tell.
        if let (Expect::Ok { w, h }, Ok(hd)) = (&expect, read_header(&bytes, &limits)) {
            assert_eq!((hd.width, hd.height), (*w, *h), "{name}: header");
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn bombs_are_refused_by_read_header_too() {
    let limits = Limits::default();
    for bytes in [png_header_only(100_000, 100_000), avif_with_ispe(100_000, 100_000)] {
        assert!(matches!(
            read_header(&bytes, &limits),
            Err(ImageError::TooLarge { width: 100_000, height: 100_000, max_pixels: 50_000_000 })
        ));
    }
}

#[test]
fn bombs_allocate_nothing_big() {
    // 65535x65535 is as large as JPEG can declare; PNG and AVIF go further.
    let mut jpeg = jpeg_bytes(&test_image(8, 8), 90);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    let inputs = [png_header_only(100_000, 100_000), avif_with_ispe(100_000, 100_000), jpeg];
    for bytes in &inputs {
        LARGEST.store(0, Ordering::Relaxed);
        let e = decode(bytes, &Limits::default()).unwrap_err();
        assert_eq!(e.reason(), "too_large", "{e}");
        let largest = LARGEST.load(Ordering::Relaxed);
        // Other tests run concurrently, so this is a loose bound: a decoded bomb would need
        // gigabytes.
        assert!(largest < 256 << 20, "largest allocation {largest} bytes");
    }
}

#[test]
fn custom_limits_apply() {
    let jpeg = jpeg_bytes(&test_image(64, 48), 90);
    let tight = Limits { max_pixels: 64 * 48 - 1, max_dimension: 1000 };
    assert!(matches!(decode(&jpeg, &tight), Err(ImageError::TooLarge { width: 64, height: 48, .. })));
    let narrow = Limits { max_pixels: 1 << 20, max_dimension: 63 };
    assert!(matches!(read_header(&jpeg, &narrow), Err(ImageError::DimensionTooLarge { width: 64, .. })));
    let exact = Limits { max_pixels: 64 * 48, max_dimension: 64 };
    assert!(decode(&jpeg, &exact).is_ok());
    // AVIF limits are also enforced against the frame rav1d is allowed to allocate.
    let avif = fixture("avif8_420.avif");
    assert_eq!(decode(&avif, &Limits { max_pixels: 48 * 32 - 1, max_dimension: 100 }).unwrap_err().reason(), "too_large");
}

#[test]
fn read_header_sees_format_and_size() {
    let limits = Limits::default();
    let h = read_header(&png_rgb(400, 8), &limits).unwrap();
    assert_eq!((h.format, h.width, h.height), (Format::Png, 400, 8));
    let h = read_header(&fixture("avif8_420.avif"), &limits).unwrap();
    assert_eq!((h.format, h.width, h.height), (Format::Avif, 48, 32));
    let h = read_header(&fixture("webp_lossy.webp"), &limits).unwrap();
    assert_eq!((h.format, h.width, h.height), (Format::Webp, 48, 32));
    // A prefix with the headers is enough for JPEG, PNG and AVIF.
    let jpeg = jpeg_bytes(&test_image(300, 200), 90);
    let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let h = read_header(&jpeg[..sos + 20], &limits).unwrap();
    assert_eq!((h.width, h.height), (300, 200));
    let avif = fixture("avif8_420.avif");
    let mdat = avif.windows(4).position(|w| w == b"mdat").unwrap();
    assert_eq!(read_header(&avif[..mdat], &limits).unwrap().width, 48);
}
