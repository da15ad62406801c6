//! JPEG, PNG and WebP through the `image` crate's decoders.

use std::io::Cursor;

use image::codecs::jpeg::JpegDecoder;
use image::codecs::png::PngDecoder;
use image::codecs::webp::WebPDecoder;
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, RgbImage};

use crate::{Format, ImageError, Limits, check_limits};

/// A decoder whose headers have been read and checked against the limits.
pub(crate) struct Opened<'a> {
    decoder: Box<dyn ImageDecoder + 'a>,
    pub orientation: Orientation,
}

impl Opened<'_> {
    /// Size as displayed, i.e. after the EXIF orientation.
    pub(crate) fn display_size(&self) -> (u32, u32) {
        let (w, h) = self.decoder.dimensions();
        if swaps_axes(self.orientation) { (h, w) } else { (w, h) }
    }
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(o, Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH)
}

pub(crate) fn open<'a>(bytes: &'a [u8], format: Format, limits: &Limits) -> Result<Opened<'a>, ImageError> {
    // The PNG size sits at a fixed offset: refuse bombs before any decoder exists.
    if format == Format::Png
        && let Some((w, h)) = png_ihdr_size(bytes)
    {
        check_limits(w, h, limits)?;
    }
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(METADATA_ALLOC_BUDGET);
    let cursor = Cursor::new(bytes);
    let mut decoder: Box<dyn ImageDecoder + 'a> = match format {
        Format::Jpeg => Box::new(JpegDecoder::new(cursor).map_err(from_image)?),
        Format::Png => Box::new(PngDecoder::with_limits(cursor, image_limits.clone()).map_err(from_image)?),
        Format::Webp => {
            let d = WebPDecoder::new(cursor).map_err(from_image)?;
            // Only the first frame would come out; silently enhancing one frame of an
            // animation is worse than saying no.
            if d.has_animation() {
                return Err(ImageError::UnsupportedFeature("animated WebP images are not supported; upload a still image".into()));
            }
            Box::new(d)
        }
        other => {
            return Err(ImageError::UnsupportedFormat { format: Some(other) });
        }
    };
    let (w, h) = decoder.dimensions();
    check_limits(w, h, limits)?;
    image_limits.max_image_width = Some(limits.max_dimension);
    image_limits.max_image_height = Some(limits.max_dimension);
    decoder.set_limits(image_limits).map_err(from_image)?;
    // Broken EXIF must not sink an otherwise fine photo: fall back to "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    Ok(Opened { decoder, orientation })
}

pub(crate) struct RasterImage {
    pub rgb: RgbImage,
    pub alpha: Option<GrayImage>,
    pub bit_depth: u8,
}

/// `bytes` must be what `opened` was opened from.
pub(crate) fn decode(bytes: &[u8], format: Format, opened: Opened<'_>) -> Result<RasterImage, ImageError> {
    // Checked here, not in `open`: a header read may legitimately see only a prefix.
    if format == Format::Jpeg && jpeg_is_truncated(bytes) {
        return Err(ImageError::malformed("the JPEG data ends early; the file was probably cut off"));
    }
    let Opened { decoder, orientation } = opened;
    let mut img = DynamicImage::from_decoder(decoder).map_err(from_image)?;
    img.apply_orientation(orientation);
    let bit_depth = match img {
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) | DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => 16,
        DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => 32,
        _ => 8,
    };
    let (rgb, alpha) = split(img);
    Ok(RasterImage { rgb, alpha, bit_depth })
}

/// 16-bit to 8-bit with round-to-nearest (65535 / 255 = 257 exactly, and no value lands on a
/// tie), unlike a plain `>> 8`, which darkens by up to one level.
fn to8(v: u16) -> u8 {
    ((u32::from(v) + 128) / 257) as u8
}

fn split(img: DynamicImage) -> (RgbImage, Option<GrayImage>) {
    let (w, h) = (img.width(), img.height());
    let build = |rgb: Vec<u8>, alpha: Option<Vec<u8>>| {
        // Buffer sizes are w*h*3 and w*h by construction.
        (RgbImage::from_raw(w, h, rgb).unwrap_or_default(), alpha.and_then(|a| GrayImage::from_raw(w, h, a)))
    };
    match img {
        DynamicImage::ImageRgb8(i) => (i, None),
        DynamicImage::ImageLuma8(g) => build(g.as_raw().iter().flat_map(|&v| [v, v, v]).collect(), None),
        DynamicImage::ImageLumaA8(la) => {
            let raw = la.as_raw();
            build(raw.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(), Some(raw.chunks_exact(2).map(|p| p[1]).collect()))
        }
        DynamicImage::ImageRgba8(rgba) => {
            let raw = rgba.as_raw();
            build(raw.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(), Some(raw.chunks_exact(4).map(|p| p[3]).collect()))
        }
        DynamicImage::ImageLuma16(g) => build(g.as_raw().iter().flat_map(|&v| [to8(v); 3]).collect(), None),
        DynamicImage::ImageLumaA16(la) => {
            let raw = la.as_raw();
            build(raw.chunks_exact(2).flat_map(|p| [to8(p[0]); 3]).collect(), Some(raw.chunks_exact(2).map(|p| to8(p[1])).collect()))
        }
        DynamicImage::ImageRgb16(i) => build(i.as_raw().iter().map(|&v| to8(v)).collect(), None),
        DynamicImage::ImageRgba16(rgba) => {
            let raw = rgba.as_raw();
            build(
                raw.chunks_exact(4).flat_map(|p| [to8(p[0]), to8(p[1]), to8(p[2])]).collect(),
                Some(raw.chunks_exact(4).map(|p| to8(p[3])).collect()),
            )
        }
        // Float images do not come out of the decoders we use; keep a correct fallback.
        other => {
            let alpha = other.color().has_alpha().then(|| other.to_rgba8().as_raw().chunks_exact(4).map(|p| p[3]).collect());
            build(other.to_rgb8().into_raw(), alpha)
        }
    }
}

/// What a decoder may allocate besides the output pixels (bounded by `Limits` instead): row
/// buffers and metadata. Only the PNG decoder honours it, which matters for compressed
/// metadata: an iCCP chunk of a few KB can inflate to gigabytes.
const METADATA_ALLOC_BUDGET: u64 = 64 << 20;

fn png_ihdr_size(bytes: &[u8]) -> Option<(u32, u32)> {
    // signature (8) + chunk length (4) + "IHDR" (4) + width (4) + height (4)
    if bytes.len() < 24 || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((w, h))
}

/// A JPEG whose entropy-coded data never reaches an EOI marker was cut off. zune-jpeg (in the
/// lenient mode `image` uses) would fill the missing part with grey and report success; a
/// half-grey photo is not worth enhancing, so we refuse it.
///
/// Inside entropy-coded data 0xFF is always followed by 0x00 (stuffing), 0xD0..=0xD7 (restart)
/// or a real marker, so any FF D9 after the first SOS is the EOI. Data after the EOI (such as
/// the video appended by "motion photo" cameras) is fine.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let Some(sos) = first_sos(bytes) else {
        // Headers are broken or incomplete: the decoder will say so.
        return false;
    };
    !bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Offset of the first SOS marker, found by walking segment lengths (so bytes inside EXIF or
/// ICC data cannot be mistaken for markers).
fn first_sos(bytes: &[u8]) -> Option<usize> {
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while *bytes.get(i)? == 0xFF && *bytes.get(i + 1)? == 0xFF {
            i += 1;
        }
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(i + 1)?;
        match marker {
            0xDA => return Some(i),
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => i += 2,
            0xD8 | 0xD9 => return None,
            _ => {
                let len = u16::from_be_bytes([*bytes.get(i + 2)?, *bytes.get(i + 3)?]) as usize;
                if len < 2 {
                    return None;
                }
                i += 2 + len;
            }
        }
    }
}

pub(crate) fn from_image(e: image::ImageError) -> ImageError {
    use image::ImageError as E;
    match e {
        E::Decoding(d) => ImageError::malformed(d),
        E::Unsupported(u) => ImageError::UnsupportedFeature(format!(
            "the image uses a feature that is not supported ({})",
            crate::error::one_line(&u.to_string(), 120)
        )),
        E::Limits(_) => ImageError::malformed("the image needs more memory to decode than allowed"),
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::malformed("the file ends early; it was probably cut off")
        }
        other => ImageError::malformed(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_rounding() {
        for v in 0..=u16::MAX {
            let exact = (f64::from(v) * 255.0 / 65535.0).round() as u8;
            assert_eq!(to8(v), exact, "{v}");
        }
    }

    #[test]
    fn sos_walk_skips_segment_payloads() {
        // SOI, APP1 whose payload contains FF DA and FF D9, then SOS, data, EOI.
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xDA, 0xFF, 0xD9];
        let sos = j.len();
        j.extend([0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34]);
        assert_eq!(first_sos(&j), Some(sos));
        assert!(jpeg_is_truncated(&j));
        j.extend([0xFF, 0xD9]);
        assert!(!jpeg_is_truncated(&j));
        assert!(!jpeg_is_truncated(&[0xFF, 0xD8, 0xFF]));
    }
}
