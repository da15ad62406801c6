//! YUV (any AV1 layout, 8/10/12-bit) to 8-bit RGB and alpha.
//!
//! Chroma is upsampled bilinearly with centred siting (3:1 weights), which is what libavif
//! (and so Pillow and browsers) does by default; nearest-neighbour would leave visible colour
//! fringes on edges that the enhancement models would then sharpen.

use image::{GrayImage, RgbImage};

use super::dav1d::{Picture, Plane, Samples};

/// How to interpret the samples: ITU-T H.273 code points plus the range flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ColorParams {
    pub matrix: u16,
    pub primaries: u16,
    pub full_range: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Matrix {
    /// Luma weights for red and blue.
    YCbCr {
        kr: f32,
        kb: f32,
    },
    /// GBR stored as-is (lossless AVIF).
    Identity,
    YCgCo,
}

fn matrix_for(cp: ColorParams) -> Matrix {
    const BT601: Matrix = Matrix::YCbCr { kr: 0.299, kb: 0.114 };
    const BT709: Matrix = Matrix::YCbCr { kr: 0.2126, kb: 0.0722 };
    const BT2020: Matrix = Matrix::YCbCr { kr: 0.2627, kb: 0.0593 };
    match cp.matrix {
        0 => Matrix::Identity,
        1 => BT709,
        4 => Matrix::YCbCr { kr: 0.30, kb: 0.11 },
        5 | 6 => BT601,
        7 => Matrix::YCbCr { kr: 0.212, kb: 0.087 },
        8 => Matrix::YCgCo,
        // The constant-luminance variant is treated as its non-constant sibling: exact CL
        // decoding needs the transfer function, and such files are practically nonexistent.
        9 | 10 => BT2020,
        // "Chromaticity-derived": weights follow from the colour primaries.
        12 | 13 => match cp.primaries {
            1 => BT709,
            9 => BT2020,
            12 => Matrix::YCbCr { kr: 0.228_975, kb: 0.079_287 },
            _ => BT601,
        },
        // Unspecified and reserved values: BT.601, as libavif assumes.
        _ => BT601,
    }
}

/// `normalised = (sample - offset) * scale`, mapping the coded range to 0..1 (luma) or
/// -0.5..0.5 (chroma).
#[derive(Debug, Clone, Copy)]
struct Range {
    y_off: f32,
    y_scale: f32,
    c_off: f32,
    c_scale: f32,
}

fn range_for(bit_depth: u8, full: bool) -> Range {
    let shift = u32::from(bit_depth - 8);
    let max = ((1u32 << bit_depth) - 1) as f32;
    if full {
        Range { y_off: 0.0, y_scale: 1.0 / max, c_off: (1u32 << (bit_depth - 1)) as f32, c_scale: 1.0 / max }
    } else {
        Range {
            y_off: (16u32 << shift) as f32,
            y_scale: 1.0 / (219u32 << shift) as f32,
            c_off: (128u32 << shift) as f32,
            c_scale: 1.0 / (224u32 << shift) as f32,
        }
    }
}

fn to_u8(v: f32) -> u8 {
    // Saturating float-to-int cast: NaN becomes 0, out-of-range values clamp.
    (v * 255.0 + 0.5) as u8
}

/// Converts the picture's colour planes to RGB.
pub(crate) fn to_rgb(pic: &Picture<'_>, cp: ColorParams) -> RgbImage {
    let (w, h) = (pic.width(), pic.height());
    let range = range_for(pic.bit_depth(), cp.full_range);
    let matrix = matrix_for(cp);
    let (sx, sy) = pic.layout().shifts();
    let mut out = vec![0u8; w * h * 3];
    let y = pic.plane(0);
    let u = pic.plane(1);
    let v = pic.plane(2);
    match (y, u, v) {
        (Some(y), Some(u), Some(v)) => match (&y.samples, &u.samples, &v.samples) {
            (Samples::U8(ys), Samples::U8(us), Samples::U8(vs)) => {
                convert(&mut out, w, h, (*ys, &y), Some(((*us, &u), (*vs, &v))), sx, sy, range, matrix)
            }
            (Samples::U16(ys), Samples::U16(us), Samples::U16(vs)) => {
                convert(&mut out, w, h, (*ys, &y), Some(((*us, &u), (*vs, &v))), sx, sy, range, matrix)
            }
            _ => {} // mixed sample sizes cannot come out of one picture
        },
        (Some(y), _, _) => match &y.samples {
            Samples::U8(ys) => convert::<u8>(&mut out, w, h, (*ys, &y), None, 0, 0, range, matrix),
            Samples::U16(ys) => convert::<u16>(&mut out, w, h, (*ys, &y), None, 0, 0, range, matrix),
        },
        _ => {}
    }
    // Length is exactly w*h*3 by construction.
    RgbImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

type PlaneRef<'a, T> = (&'a [T], &'a Plane<'a>);

#[allow(clippy::too_many_arguments)]
fn convert<T: Copy + Into<u32>>(
    out: &mut [u8],
    w: usize,
    h: usize,
    (ys, yp): PlaneRef<'_, T>,
    chroma: Option<(PlaneRef<'_, T>, PlaneRef<'_, T>)>,
    sx: u32,
    sy: u32,
    range: Range,
    matrix: Matrix,
) {
    // Chroma sums carry 4 bits of interpolation weight (3:1 in each direction).
    let chroma_off16 = range.c_off * 16.0;
    let chroma_scale16 = range.c_scale / 16.0;
    let (cw, mut row_u, mut row_v) = match chroma {
        Some(((_, up), _)) => (up.width, vec![0u32; up.width], vec![0u32; up.width]),
        None => (0, Vec::new(), Vec::new()),
    };

    for (yy, out_row) in out.chunks_exact_mut(w * 3).enumerate().take(h) {
        let luma = &ys[yy * yp.stride..yy * yp.stride + w];
        let Some(((us, up), (vs, vp))) = chroma else {
            for (px, &l) in out_row.chunks_exact_mut(3).zip(luma) {
                let g = to_u8((l.into() as f32 - range.y_off) * range.y_scale);
                px.copy_from_slice(&[g, g, g]);
            }
            continue;
        };

        // Vertical pass into row_u/row_v (weight 4).
        let (r0, r1) = neighbour_rows(yy, sy, up.height);
        for (x, (du, dv)) in row_u.iter_mut().zip(row_v.iter_mut()).enumerate() {
            *du = 3 * us[r0 * up.stride + x].into() + us[r1 * up.stride + x].into();
            *dv = 3 * vs[r0 * vp.stride + x].into() + vs[r1 * vp.stride + x].into();
        }

        for (x, (px, &l)) in out_row.chunks_exact_mut(3).zip(luma).enumerate() {
            // Horizontal pass (weight 4 more, 16 in total).
            let (c0, c1) = neighbour_rows(x, sx, cw);
            let su = 3 * row_u[c0] + row_u[c1];
            let sv = 3 * row_v[c0] + row_v[c1];
            let lum = l.into() as f32;
            let (r, g, b) = match matrix {
                Matrix::YCbCr { kr, kb } => {
                    let yn = (lum - range.y_off) * range.y_scale;
                    let cb = (su as f32 - chroma_off16) * chroma_scale16;
                    let cr = (sv as f32 - chroma_off16) * chroma_scale16;
                    let kg = 1.0 - kr - kb;
                    let r = yn + (2.0 - 2.0 * kr) * cr;
                    let b = yn + (2.0 - 2.0 * kb) * cb;
                    let g = (yn - kr * r - kb * b) / kg;
                    (r, g, b)
                }
                Matrix::Identity => {
                    let off16 = range.y_off * 16.0;
                    let scale16 = range.y_scale / 16.0;
                    ((sv as f32 - off16) * scale16, (lum - range.y_off) * range.y_scale, (su as f32 - off16) * scale16)
                }
                Matrix::YCgCo => {
                    let yn = (lum - range.y_off) * range.y_scale;
                    let cg = (su as f32 - chroma_off16) * chroma_scale16;
                    let co = (sv as f32 - chroma_off16) * chroma_scale16;
                    let t = yn - cg;
                    (t + co, yn + cg, t - co)
                }
            };
            px[0] = to_u8(r);
            px[1] = to_u8(g);
            px[2] = to_u8(b);
        }
    }
}

/// For output position `i` of a plane subsampled by `shift`, the nearest source sample and the
/// second-nearest one (weights 3 and 1), clamped at the edges. Without subsampling both are
/// the same sample.
fn neighbour_rows(i: usize, shift: u32, len: usize) -> (usize, usize) {
    if shift == 0 {
        let i = i.min(len.saturating_sub(1));
        return (i, i);
    }
    let j = (i >> 1).min(len.saturating_sub(1));
    let other = if i & 1 == 0 { j.saturating_sub(1) } else { (j + 1).min(len.saturating_sub(1)) };
    (j, other)
}

/// Converts an alpha item (its luma plane) to 8-bit alpha.
pub(crate) fn to_alpha(pic: &Picture<'_>, full_range: bool) -> GrayImage {
    let (w, h) = (pic.width(), pic.height());
    let bd = pic.bit_depth();
    let max = (1u32 << bd) - 1;
    let lut: Vec<u8> = (0..=max)
        .map(|v| {
            let n = if full_range {
                v as f32 / max as f32
            } else {
                let s = (bd - 8) as u32;
                (v as f32 - (16u32 << s) as f32) / (219u32 << s) as f32
            };
            to_u8(n)
        })
        .collect();
    let mut out = vec![0u8; w * h];
    if let Some(p) = pic.plane(0) {
        for (yy, row) in out.chunks_exact_mut(w).enumerate() {
            let start = yy * p.stride;
            match &p.samples {
                Samples::U8(s) => {
                    for (o, &v) in row.iter_mut().zip(&s[start..start + w]) {
                        *o = lut[usize::from(v)];
                    }
                }
                Samples::U16(s) => {
                    for (o, &v) in row.iter_mut().zip(&s[start..start + w]) {
                        *o = lut[usize::from(v).min(max as usize)];
                    }
                }
            }
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_follow_centred_siting() {
        // 4:2:0, 5 luma samples -> 3 chroma samples.
        let got: Vec<_> = (0..5).map(|i| neighbour_rows(i, 1, 3)).collect();
        assert_eq!(got, vec![(0, 0), (0, 1), (1, 0), (1, 2), (2, 1)]);
        assert_eq!(neighbour_rows(7, 0, 8), (7, 7));
    }

    #[test]
    fn ranges_map_reference_points() {
        let r = range_for(10, false);
        assert_eq!(to_u8((64.0 - r.y_off) * r.y_scale), 0);
        assert_eq!(to_u8((940.0 - r.y_off) * r.y_scale), 255);
        assert_eq!((512.0 - r.c_off) * r.c_scale, 0.0);
        let f = range_for(8, true);
        assert_eq!(to_u8((255.0 - f.y_off) * f.y_scale), 255);
        assert_eq!(to_u8((128.0 - f.y_off) * f.y_scale), 128);
        assert_eq!(to_u8(1.2), 255);
        assert_eq!(to_u8(-0.3), 0);
        assert_eq!(to_u8(f32::NAN), 0);
    }

    #[test]
    fn unspecified_matrix_is_bt601() {
        let cp = ColorParams { matrix: 2, primaries: 2, full_range: true };
        assert_eq!(matrix_for(cp), Matrix::YCbCr { kr: 0.299, kb: 0.114 });
    }
}
