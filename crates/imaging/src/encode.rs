use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, GrayImage, ImageEncoder, RgbImage};

use crate::ImageError;

/// Formats we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OutputFormat {
    #[default]
    Jpeg,
    Png,
    /// Lossless: `image`'s WebP encoder has no lossy mode.
    Webp,
}

impl OutputFormat {
    pub fn mime_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    pub fn supports_alpha(self) -> bool {
        !matches!(self, OutputFormat::Jpeg)
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "JPEG",
            OutputFormat::Png => "PNG",
            OutputFormat::Webp => "WebP",
        }
    }

    /// Longest side the format can store: JPEG's frame header has 16-bit sizes, PNG allows up
    /// to 2^31 - 1. Lossless WebP stores `side - 1` in 14 bits (16384 at most), but
    /// image-webp 0.2 reads a 16384 side back as 0, so 16383 is the largest WebP this
    /// service, and anyone decoding with that crate, can read.
    pub fn max_side(self) -> u32 {
        match self {
            OutputFormat::Jpeg => 65_535,
            OutputFormat::Png => i32::MAX as u32,
            OutputFormat::Webp => 16_383,
        }
    }
}

/// Checks that a `width` x `height` result can be written as `format` and has at most
/// `max_pixels` pixels. Callers run it on the size they *will* produce (input header times
/// scale) before doing any work, so a request that cannot succeed fails at once, as bad input.
pub fn check_output_size(width: u64, height: u64, format: OutputFormat, max_pixels: u64) -> Result<(), ImageError> {
    let max_side = format.max_side();
    if width == 0 || height == 0 {
        return Err(ImageError::Encode("the image is empty".into()));
    }
    if width.max(height) > u64::from(max_side) {
        return Err(ImageError::OutputTooLarge { width, height, format: format.name(), max_side });
    }
    if width.saturating_mul(height) > max_pixels {
        return Err(ImageError::OutputTooManyPixels { width, height, max_pixels });
    }
    Ok(())
}

pub const DEFAULT_JPEG_QUALITY: u8 = 92;

/// Encodes `rgb` (plus `alpha`, which must have the same size, for PNG and WebP).
///
/// JPEG has no alpha channel: when `alpha` is given the image is composited over white, so
/// transparent areas do not turn into whatever colour happened to be stored under them
/// (often black). `jpeg_quality` is clamped to 1..=100 and ignored by the lossless formats.
pub fn encode(rgb: &RgbImage, alpha: Option<&GrayImage>, format: OutputFormat, jpeg_quality: u8) -> Result<Vec<u8>, ImageError> {
    let (w, h) = rgb.dimensions();
    // The pixels exist already, so only the format's own limit applies here.
    check_output_size(u64::from(w), u64::from(h), format, u64::MAX)?;
    if let Some(a) = alpha
        && a.dimensions() != (w, h)
    {
        return Err(ImageError::Encode(format!("alpha is {}x{} but the image is {w}x{h}", a.width(), a.height())));
    }
    // Rough guess to avoid regrowing the output several times for large images.
    let mut out = Vec::with_capacity((w as usize * h as usize / 4).min(64 << 20));
    let result = match format {
        OutputFormat::Jpeg => {
            let enc = JpegEncoder::new_with_quality(&mut out, jpeg_quality.clamp(1, 100));
            match alpha {
                Some(a) => enc.write_image(&over_white(rgb, a), w, h, ExtendedColorType::Rgb8),
                None => enc.write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8),
            }
        }
        OutputFormat::Png => {
            // Fast deflate: the outputs are large upscaled photos where the default level
            // costs several times the time for a few percent of size.
            let enc = PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive);
            match alpha {
                Some(a) => enc.write_image(&interleave(rgb, a), w, h, ExtendedColorType::Rgba8),
                None => enc.write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8),
            }
        }
        OutputFormat::Webp => {
            let enc = WebPEncoder::new_lossless(&mut out);
            match alpha {
                Some(a) => enc.write_image(&interleave(rgb, a), w, h, ExtendedColorType::Rgba8),
                None => enc.write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8),
            }
        }
    };
    result.map_err(|e| ImageError::Encode(crate::error::one_line(&e.to_string(), 160)))?;
    Ok(out)
}

pub(crate) fn interleave(rgb: &RgbImage, alpha: &GrayImage) -> Vec<u8> {
    rgb.as_raw().chunks_exact(3).zip(alpha.as_raw()).flat_map(|(p, &a)| [p[0], p[1], p[2], a]).collect()
}

fn over_white(rgb: &RgbImage, alpha: &GrayImage) -> Vec<u8> {
    rgb.as_raw()
        .chunks_exact(3)
        .zip(alpha.as_raw())
        .flat_map(|(p, &a)| {
            let a = u32::from(a);
            let blend = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
            [blend(p[0]), blend(p[1]), blend(p[2])]
        })
        .collect()
}
