//! Small JPEG previews (work cards, upload thumbnails).

use crate::{ImageError, Limits, OutputFormat, decode, encode, resize_rgb, resize_rgb_alpha};

/// JPEG quality of thumbnails: small files, artefacts invisible at card size.
pub const THUMBNAIL_JPEG_QUALITY: u8 = 80;

/// A JPEG preview plus the size of the image it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    /// The encoded JPEG.
    pub jpeg: Vec<u8>,
    /// Size of the thumbnail itself.
    pub width: u32,
    pub height: u32,
    /// Displayed (upright) size of the source image.
    pub source_width: u32,
    pub source_height: u32,
}

impl Thumbnail {
    pub const MIME_TYPE: &'static str = "image/jpeg";
    pub const EXTENSION: &'static str = "jpg";
}

/// The size that fits `width` x `height` inside a `max_side` square, keeping the aspect
/// ratio, never larger than the source and never 0 on either side.
pub fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let max_side = max_side.max(1);
    let longest = width.max(height);
    if longest <= max_side {
        return (width.max(1), height.max(1));
    }
    let scale = |side: u32| ((u64::from(side) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest)).max(1) as u32;
    (scale(width), scale(height))
}

/// Decodes `bytes` (JPEG, PNG, WebP or AVIF, within `limits`) and returns a JPEG whose
/// longest side is at most `max_side` (the image is never enlarged). Transparent areas are
/// flattened on white, as JPEG has no alpha.
pub fn thumbnail(bytes: &[u8], limits: &Limits, max_side: u32) -> Result<Thumbnail, ImageError> {
    let decoded = decode(bytes, limits)?;
    let (source_width, source_height) = decoded.rgb.dimensions();
    let (width, height) = fit_within(source_width, source_height, max_side);
    let jpeg = match &decoded.alpha {
        Some(alpha) => {
            let (rgb, alpha) = resize_rgb_alpha(&decoded.rgb, alpha, width, height);
            encode(&rgb, Some(&alpha), OutputFormat::Jpeg, THUMBNAIL_JPEG_QUALITY)?
        }
        None => encode(&resize_rgb(&decoded.rgb, width, height), None, OutputFormat::Jpeg, THUMBNAIL_JPEG_QUALITY)?,
    };
    Ok(Thumbnail { jpeg, width, height, source_width, source_height })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn png_rgba(w: u32, h: u32, alpha: u8) -> Vec<u8> {
        let rgb = RgbImage::from_pixel(w, h, Rgb([0, 0, 0]));
        let a = GrayImage::from_pixel(w, h, Luma([alpha]));
        encode(&rgb, Some(&a), OutputFormat::Png, 0).unwrap()
    }

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_within(4000, 3000, 400), (400, 300));
        assert_eq!(fit_within(3000, 4000, 400), (300, 400));
        assert_eq!(fit_within(100, 50, 400), (100, 50));
        assert_eq!(fit_within(10_000, 1, 400), (400, 1));
        assert_eq!(fit_within(400, 400, 400), (400, 400));
        assert_eq!(fit_within(5, 5, 0), (1, 1));
    }

    #[test]
    fn large_jpeg_becomes_small_jpeg() {
        let rgb = RgbImage::from_fn(1200, 800, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let src = encode(&rgb, None, OutputFormat::Jpeg, 95).unwrap();
        let t = thumbnail(&src, &Limits::default(), 256).unwrap();
        assert_eq!((t.source_width, t.source_height), (1200, 800));
        assert_eq!((t.width, t.height), (256, 171));
        assert!(t.jpeg.len() < src.len());
        let back = image::load_from_memory_with_format(&t.jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (256, 171));
    }

    #[test]
    fn small_image_is_not_enlarged() {
        let t = thumbnail(&png_rgba(40, 30, 255), &Limits::default(), 256).unwrap();
        assert_eq!((t.width, t.height, t.source_width, t.source_height), (40, 30, 40, 30));
        assert_eq!(crate::sniff(&t.jpeg), Some(crate::Format::Jpeg));
    }

    #[test]
    fn transparency_is_flattened_on_white() {
        // Fully transparent black: must come out white, not black.
        let t = thumbnail(&png_rgba(64, 64, 0), &Limits::default(), 32).unwrap();
        let back = image::load_from_memory(&t.jpeg).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (32, 32));
        assert!(back.pixels().all(|p| p.0.iter().all(|&c| c > 245)), "{:?}", back.get_pixel(16, 16));
    }

    #[test]
    fn limits_and_garbage_are_refused() {
        let limits = Limits { max_pixels: 100, max_dimension: 100 };
        assert!(matches!(thumbnail(&png_rgba(20, 20, 255), &limits, 10), Err(ImageError::TooLarge { .. })));
        assert!(matches!(thumbnail(b"not an image at all", &Limits::default(), 10), Err(ImageError::UnsupportedFormat { .. })));
        assert!(matches!(thumbnail(b"", &Limits::default(), 10), Err(ImageError::Empty)));
    }
}
