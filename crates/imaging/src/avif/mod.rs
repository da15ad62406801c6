//! AVIF in pure Rust: container properties from our own `meta` reader (`boxes`), item data
//! from avif-parse, AV1 from rav1d (`dav1d`), colour conversion in `yuv`.

mod boxes;
mod dav1d;
mod yuv;

use std::io::Read;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use image::{GrayImage, ImageBuffer, Pixel, RgbImage, imageops};

use crate::{ImageError, Limits};

/// What decoding needs from the container, established before any AV1 data is touched.
struct Probe {
    props: boxes::AvifProps,
    width: u32,
    height: u32,
}

fn probe(bytes: &[u8], limits: &Limits) -> Result<Probe, ImageError> {
    let props = boxes::parse(bytes).map_err(|e| ImageError::malformed(format!("AVIF: {}", e.0)))?;
    match &props.primary.item_type {
        b"av01" => {}
        b"grid" => {
            return Err(ImageError::UnsupportedFeature(
                "tiled (grid) AVIF images are not supported; save the image as a single-tile AVIF, JPEG or PNG".into(),
            ));
        }
        _ => {
            return Err(ImageError::UnsupportedFeature("this AVIF file's main image is not AV1-coded, which is not supported".into()));
        }
    }
    // `ispe` is mandatory (MIAF); without it the size is unknown until the frame is decoded,
    // which is exactly what the limits must prevent.
    let (width, height) = props.primary.size.ok_or_else(|| ImageError::malformed("AVIF: the image has no size property"))?;
    crate::check_limits(width, height, limits)?;
    if let Some((aw, ah)) = props.alpha.as_ref().and_then(|a| a.size) {
        crate::check_limits(aw, ah, limits)?;
    }
    Ok(Probe { props, width, height })
}

/// Width and height as displayed (after `irot`), without decoding anything.
pub(crate) fn read_header(bytes: &[u8], limits: &Limits) -> Result<(u32, u32), ImageError> {
    let p = probe(bytes, limits)?;
    Ok(if p.props.primary.rotation % 2 == 1 { (p.height, p.width) } else { (p.width, p.height) })
}

pub(crate) struct AvifImage {
    pub rgb: RgbImage,
    pub alpha: Option<GrayImage>,
    pub bit_depth: u8,
    pub transformed: bool,
}

/// Longest an AV1 decode may take; this only catches a decoder that will never return (see
/// `decode`). Optimised rav1d decodes a 3 MP still in about 0.15 s on one core pair; with
/// debug assertions it checks every buffer borrow at run time and is some 400 times slower,
/// hence the wide margin in debug builds.
fn av1_timeout(pixels: u64) -> Duration {
    let secs = 60 + 10 * pixels.div_ceil(1_000_000);
    Duration::from_secs(if cfg!(debug_assertions) { secs * 50 } else { secs })
}

pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<AvifImage, ImageError> {
    let probe = probe(bytes, limits)?;
    boxes::check_complete(bytes).map_err(|e| ImageError::malformed(format!("AVIF: {}", e.0)))?;
    let data = read_items(bytes)?;

    // AV1 runs on a thread of its own that we can walk away from: should one of rav1d's
    // worker threads panic, the thread waiting for it would block forever. Losing a thread
    // beats losing the caller.
    let (tx, rx) = mpsc::sync_channel(1);
    let (width, height, nclx) = (probe.width, probe.height, probe.props.primary.nclx);
    let spawned = std::thread::Builder::new().name("purrify-av1".into()).spawn(move || {
        let _ = tx.send(decode_planes(&data, width, height, nclx));
    });
    if spawned.is_err() {
        return Err(ImageError::malformed("AVIF: could not start the AV1 decoder"));
    }
    let planes = match rx.recv_timeout(av1_timeout(u64::from(width) * u64::from(height))) {
        Ok(result) => result?,
        Err(RecvTimeoutError::Timeout) => {
            return Err(ImageError::malformed("AVIF: the AV1 decoder did not finish"));
        }
        Err(RecvTimeoutError::Disconnected) => {
            return Err(ImageError::malformed("AVIF: the AV1 decoder failed on this file"));
        }
    };

    let p = &probe.props.primary;
    let transformed = p.rotation != 0 || p.mirror.is_some();
    let rgb = transform(planes.rgb, p.rotation, p.mirror);
    let alpha = planes.alpha.map(|a| transform(a, p.rotation, p.mirror));
    Ok(AvifImage { rgb, alpha, bit_depth: planes.bit_depth, transformed })
}

struct Planes {
    rgb: RgbImage,
    alpha: Option<GrayImage>,
    bit_depth: u8,
}

fn decode_planes(data: &avif_parse::AvifData, width: u32, height: u32, nclx: Option<boxes::Nclx>) -> Result<Planes, ImageError> {
    let (w, h) = (width as usize, height as usize);
    // Anything other than exactly `ispe` is refused below, so rav1d need never allocate a
    // larger frame, whatever a corrupt sequence header claims. `ispe` passed the limits.
    let max_pixels = u64::from(width) * u64::from(height);
    let (mut rgb, bit_depth) = {
        let mut decoder = dav1d::Decoder::new(max_pixels).map_err(av1_err)?;
        let pic = decoder.decode_still(&data.primary_item).map_err(av1_err)?;
        if (pic.width(), pic.height()) != (w, h) {
            return Err(ImageError::malformed(format!(
                "AVIF: the coded image is {}x{} but the file says {w}x{h}",
                pic.width(),
                pic.height()
            )));
        }
        let seq = pic.seq_color();
        // The container's colour description wins over the bitstream's (MIAF).
        let cp = match nclx {
            Some(n) => yuv::ColorParams { matrix: n.matrix, primaries: n.primaries, full_range: n.full_range },
            None => yuv::ColorParams { matrix: seq.matrix, primaries: seq.primaries, full_range: seq.full_range },
        };
        (yuv::to_rgb(&pic, cp), pic.bit_depth())
    };

    let mut alpha = None;
    if let Some(alpha_obus) = data.alpha_item.as_deref() {
        let mut decoder = dav1d::Decoder::new(max_pixels).map_err(av1_err)?;
        let pic = decoder.decode_still(alpha_obus).map_err(av1_err)?;
        if (pic.width(), pic.height()) != (w, h) {
            return Err(ImageError::malformed("AVIF: the alpha channel's size differs from the image's"));
        }
        // The range of an alpha plane is the AV1 stream's own; colour `nclx` does not apply.
        alpha = Some(yuv::to_alpha(&pic, pic.seq_color().full_range));
    }
    if let (Some(a), true) = (&alpha, data.premultiplied_alpha) {
        unpremultiply(&mut rgb, a);
    }
    Ok(Planes { rgb, alpha, bit_depth })
}

fn av1_err(e: dav1d::Av1Error) -> ImageError {
    ImageError::malformed(e.0)
}

fn read_items(bytes: &[u8]) -> Result<avif_parse::AvifData, ImageError> {
    // avif-parse insists on the major brand `avif`; valid files may have e.g. `mif1` there with
    // `avif` among the compatible brands (sniff checked that). Present it a patched 12-byte
    // prefix instead of copying the file.
    let mut patched = [0u8; 12];
    let needs_patch = bytes.len() >= 12 && &bytes[4..8] == b"ftyp" && !matches!(&bytes[8..12], b"avif" | b"avis");
    let (head, rest): (&[u8], &[u8]) = if needs_patch {
        patched.copy_from_slice(&bytes[..12]);
        patched[8..12].copy_from_slice(b"avif");
        (&patched, &bytes[12..])
    } else {
        (&[], bytes)
    };
    let mut reader = head.chain(rest);
    avif_parse::read_avif(&mut reader).map_err(|e| match e {
        avif_parse::Error::Unsupported(what) => ImageError::UnsupportedFeature(format!(
            "this AVIF file uses a feature that is not supported ({})",
            crate::error::one_line(what, 120)
        )),
        other => ImageError::malformed(format!("AVIF: {other}")),
    })
}

fn unpremultiply(rgb: &mut RgbImage, alpha: &GrayImage) {
    for (px, a) in rgb.pixels_mut().zip(alpha.pixels()) {
        let a = u32::from(a.0[0]);
        if a == 0 || a == 255 {
            continue;
        }
        for c in px.0.iter_mut() {
            *c = ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8;
        }
    }
}

/// HEIF applies `irot` (quarter turns anti-clockwise) before `imir`.
fn transform<P: Pixel + 'static>(
    img: ImageBuffer<P, Vec<P::Subpixel>>,
    rotation: u8,
    mirror: Option<u8>,
) -> ImageBuffer<P, Vec<P::Subpixel>> {
    let img = match rotation {
        1 => imageops::rotate270(&img),
        2 => imageops::rotate180(&img),
        3 => imageops::rotate90(&img),
        _ => img,
    };
    match mirror {
        Some(0) => imageops::flip_vertical(&img),
        Some(_) => imageops::flip_horizontal(&img),
        None => img,
    }
}
