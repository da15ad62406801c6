//! Image decoding and encoding for Purrify, in pure Rust, with hard limits.
//!
//! - Inputs: JPEG, PNG, WebP and AVIF, recognised by magic bytes only. GIF, TIFF, BMP and
//!   HEIC are recognised in order to refuse them by name.
//! - Sizes are checked from the headers before any pixel buffer exists, so decompression
//!   bombs cost nothing ([`read_header`], [`decode`]).
//! - Orientation (EXIF for JPEG/PNG/WebP, `irot`/`imir` for AVIF) is applied: what callers get
//!   is upright.
//! - Output is always 8-bit RGB plus an optional separate alpha channel.
//! - Hostile input yields an [`ImageError`], never a panic (decoders run under
//!   `catch_unwind`; see `avif::dav1d` for the one exception).

mod avif;
mod complete;
mod encode;
mod error;
mod raster;
mod resize;
mod sniff;
mod thumbnail;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use complete::{BoxPos, Completeness, Container, check_complete};
pub use encode::{DEFAULT_JPEG_QUALITY, OutputFormat, check_output_size, encode};
pub use error::ImageError;
pub use resize::{resize_gray, resize_rgb, resize_rgb_alpha};
pub use sniff::{Format, SNIFF_LEN, sniff};
pub use thumbnail::{THUMBNAIL_JPEG_QUALITY, Thumbnail, fit_within, thumbnail};

pub use image::{GrayImage, RgbImage};

/// Hard limits applied before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Width times height.
    pub max_pixels: u64,
    /// Longest side. Guards against thin images (1 x 50,000,000) that pass the pixel limit
    /// but make tiling and models misbehave.
    pub max_dimension: u32,
}

impl Limits {
    pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;
    pub const DEFAULT_MAX_DIMENSION: u32 = 20_000;
}

impl Default for Limits {
    /// 50 megapixels (a large camera photo) and 20,000 pixels per side.
    fn default() -> Self {
        Limits { max_pixels: Self::DEFAULT_MAX_PIXELS, max_dimension: Self::DEFAULT_MAX_DIMENSION }
    }
}

pub(crate) fn check_limits(width: u32, height: u32, limits: &Limits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::malformed(format!("the image claims a size of {width}x{height}")));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageError::TooLarge { width, height, max_pixels: limits.max_pixels });
    }
    if width.max(height) > limits.max_dimension {
        return Err(ImageError::DimensionTooLarge { width, height, max_dimension: limits.max_dimension });
    }
    Ok(())
}

/// What [`read_header`] learns without decoding pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format: Format,
    /// As displayed: after EXIF orientation / AVIF rotation, so 90-degree turns swap them.
    pub width: u32,
    pub height: u32,
}

/// A decoded image: upright, 8-bit, colour and alpha apart.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub rgb: RgbImage,
    /// Present only when the image has real transparency: an alpha channel that is 255
    /// everywhere is dropped, so callers need not carry it through the pipeline.
    pub alpha: Option<GrayImage>,
    pub format: Format,
    /// Bits per sample before conversion to 8 bits: 8 for JPEG and WebP, 8 or 16 for PNG
    /// (palette and low-bit PNGs report 8), 8, 10 or 12 for AVIF.
    pub source_bit_depth: u8,
    /// True when a rotation or mirroring from the file's metadata was applied.
    pub orientation_applied: bool,
}

fn detect(bytes: &[u8]) -> Result<Format, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    match sniff(bytes) {
        Some(f) if f.is_supported() => Ok(f),
        other => Err(ImageError::UnsupportedFormat { format: other }),
    }
}

/// Runs a decoder step, turning a panic inside a decoder into `Malformed`.
fn guarded<T>(f: impl FnOnce() -> Result<T, ImageError>) -> Result<T, ImageError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(ImageError::malformed("the decoder could not process this file")))
}

/// Identifies the format and the displayed size and checks them against `limits`, reading
/// headers only (no pixel data is decoded or allocated).
///
/// For JPEG, PNG and AVIF a prefix of the file holding all headers is enough (for JPEG that
/// includes everything up to the first scan; EXIF sits there).
pub fn read_header(bytes: &[u8], limits: &Limits) -> Result<Header, ImageError> {
    let format = detect(bytes)?;
    let (width, height) = guarded(|| match format {
        Format::Avif => avif::read_header(bytes, limits),
        _ => raster::open(bytes, format, limits).map(|o| o.display_size()),
    })?;
    Ok(Header { format, width, height })
}

/// Decodes a JPEG, PNG, WebP or AVIF image to upright 8-bit RGB (+ alpha).
///
/// Limits are checked against the header before decoding; see [`Limits`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, ImageError> {
    let format = detect(bytes)?;
    let mut decoded = guarded(|| match format {
        Format::Avif => avif::decode(bytes, limits).map(|a| Decoded {
            rgb: a.rgb,
            alpha: a.alpha,
            format,
            source_bit_depth: a.bit_depth,
            orientation_applied: a.transformed,
        }),
        _ => {
            let opened = raster::open(bytes, format, limits)?;
            let orientation_applied = opened.orientation != image::metadata::Orientation::NoTransforms;
            raster::decode(bytes, format, opened).map(|r| Decoded {
                rgb: r.rgb,
                alpha: r.alpha,
                format,
                source_bit_depth: r.bit_depth,
                orientation_applied,
            })
        }
    })?;
    if decoded.alpha.as_ref().is_some_and(|a| a.as_raw().iter().all(|&v| v == 255)) {
        decoded.alpha = None;
    }
    Ok(decoded)
}
