//! Lanczos3 resizing through fast_image_resize, which picks SSE4.1/AVX2 (or NEON) at run time.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbImage};

fn options(premultiply: bool) -> ResizeOptions {
    ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).use_alpha(premultiply)
}

/// Resizes raw interleaved pixels. Sizes are checked by the callers, so the resizer cannot
/// fail here; should that ever change, an all-zero image is returned rather than a panic.
fn resize_raw(src: &[u8], sw: u32, sh: u32, dw: u32, dh: u32, pixel: PixelType, premultiply: bool) -> Vec<u8> {
    let channels = pixel.size();
    if dw == 0 || dh == 0 {
        return Vec::new();
    }
    if sw == 0 || sh == 0 {
        return vec![0; dw as usize * dh as usize * channels];
    }
    if (sw, sh) == (dw, dh) {
        return src.to_vec();
    }
    let mut dst = Image::new(dw, dh, pixel);
    let ok = ImageRef::new(sw, sh, src, pixel).ok().and_then(|src| Resizer::new().resize(&src, &mut dst, &options(premultiply)).ok());
    if ok.is_none() {
        return vec![0; dw as usize * dh as usize * channels];
    }
    dst.into_vec()
}

/// High-quality (Lanczos3) resize of an RGB image.
pub fn resize_rgb(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let raw = resize_raw(img.as_raw(), img.width(), img.height(), width, height, PixelType::U8x3, false);
    RgbImage::from_raw(width, height, raw).unwrap_or_else(|| RgbImage::new(width, height))
}

/// High-quality (Lanczos3) resize of one channel, e.g. an alpha mask on its own.
pub fn resize_gray(img: &GrayImage, width: u32, height: u32) -> GrayImage {
    let raw = resize_raw(img.as_raw(), img.width(), img.height(), width, height, PixelType::U8, false);
    GrayImage::from_raw(width, height, raw).unwrap_or_else(|| GrayImage::new(width, height))
}

/// Resizes colour and alpha together with premultiplied alpha.
///
/// Resizing them separately (`resize_rgb` + `resize_gray`) lets the colour stored under fully
/// transparent pixels (often black) bleed into the visible edge; premultiplying weights each
/// colour sample by its opacity, which is the correct way. Returns `(rgb, alpha)`.
pub fn resize_rgb_alpha(rgb: &RgbImage, alpha: &GrayImage, width: u32, height: u32) -> (RgbImage, GrayImage) {
    if rgb.dimensions() != alpha.dimensions() {
        return (resize_rgb(rgb, width, height), resize_gray(alpha, width, height));
    }
    let rgba = crate::encode::interleave(rgb, alpha);
    let raw = resize_raw(&rgba, rgb.width(), rgb.height(), width, height, PixelType::U8x4, true);
    let color: Vec<u8> = raw.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    let a: Vec<u8> = raw.chunks_exact(4).map(|p| p[3]).collect();
    (
        RgbImage::from_raw(width, height, color).unwrap_or_else(|| RgbImage::new(width, height)),
        GrayImage::from_raw(width, height, a).unwrap_or_else(|| GrayImage::new(width, height)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_sizes_do_not_panic() {
        let img = RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        assert_eq!(resize_rgb(&img, 0, 5).dimensions(), (0, 5));
        assert_eq!(resize_rgb(&RgbImage::new(0, 0), 3, 2).dimensions(), (3, 2));
        assert_eq!(resize_rgb(&img, 4, 3), img);
        let up = resize_rgb(&img, 9, 7);
        assert!(up.pixels().all(|p| p.0 == [10, 20, 30]));
        assert_eq!(resize_gray(&GrayImage::new(1, 1), 1, 400).dimensions(), (1, 400));
    }

    #[test]
    fn transparent_colour_does_not_bleed() {
        // Left half opaque red, right half fully transparent black.
        let rgb = RgbImage::from_fn(16, 4, |x, _| if x < 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 0]) });
        let alpha = GrayImage::from_fn(16, 4, |x, _| image::Luma([if x < 8 { 255 } else { 0 }]));
        let (c, a) = resize_rgb_alpha(&rgb, &alpha, 8, 2);
        for x in 0..8 {
            if a.get_pixel(x, 0).0[0] > 16 {
                assert!(c.get_pixel(x, 0).0[0] > 240, "x={x} {:?}", c.get_pixel(x, 0));
            }
        }
        // Separately, the edge darkens: the reason resize_rgb_alpha exists.
        let naive = resize_rgb(&rgb, 8, 2);
        assert!(naive.get_pixel(4, 0).0[0] < 200);
    }
}
