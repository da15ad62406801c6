//! Resizing for the detectors' inputs: area averaging when shrinking (OpenCV's INTER_AREA,
//! which MTCNN was tuned with, and what keeps a 3000-px photo from aliasing at 640 px),
//! bilinear when enlarging. Results go straight into the caller's tensor layout.

use image::RgbImage;

/// Pixels the resampler can read.
pub(crate) trait Source {
    fn dims(&self) -> (u32, u32);
    fn get(&self, x: u32, y: u32) -> [f32; 3];
}

impl Source for RgbImage {
    fn dims(&self) -> (u32, u32) {
        self.dimensions()
    }
    #[inline]
    fn get(&self, x: u32, y: u32) -> [f32; 3] {
        self.get_pixel(x, y).0.map(f32::from)
    }
}

/// A float RGB image, for pyramid levels resampled again.
pub(crate) struct FloatImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<[f32; 3]>,
}

impl Source for FloatImage {
    fn dims(&self) -> (u32, u32) {
        (self.width, self.height)
    }
    #[inline]
    fn get(&self, x: u32, y: u32) -> [f32; 3] {
        self.data[y as usize * self.width as usize + x as usize]
    }
}

/// Source taps of each output coordinate along one axis: `taps[starts[o]..starts[o + 1]]`.
struct Taps {
    starts: Vec<usize>,
    taps: Vec<(i64, f32)>,
}

fn axis_taps(origin: i64, len: u32, out: u32) -> Taps {
    let mut starts = Vec::with_capacity(out as usize + 1);
    let mut taps = Vec::new();
    let ratio = f64::from(len) / f64::from(out);
    for o in 0..out {
        starts.push(taps.len());
        if ratio >= 1.0 {
            let lo = f64::from(o) * ratio;
            let hi = (f64::from(o) + 1.0) * ratio;
            let mut i = lo.floor() as i64;
            while (i as f64) < hi {
                let w = hi.min(i as f64 + 1.0) - lo.max(i as f64);
                if w > 1e-9 {
                    taps.push((origin + i, (w / ratio) as f32));
                }
                i += 1;
            }
        } else {
            let s = ((f64::from(o) + 0.5) * ratio - 0.5).clamp(0.0, f64::from(len - 1));
            let i0 = s.floor();
            let f = (s - i0) as f32;
            let i0 = i0 as i64;
            let i1 = (i0 + 1).min(i64::from(len) - 1);
            taps.push((origin + i0, 1.0 - f));
            if f > 0.0 {
                taps.push((origin + i1, f));
            }
        }
    }
    starts.push(taps.len());
    Taps { starts, taps }
}

/// Resizes the `w`x`h` region of `src` at `(x0, y0)` to `out_w`x`out_h` and hands each output
/// pixel (0..255 floats) to `put(ox, oy, rgb)`. The region may extend past the image: those
/// pixels count as black, which is how MTCNN pads boxes at the border.
pub(crate) fn resize_region<S: Source>(
    src: &S,
    (x0, y0, w, h): (i64, i64, u32, u32),
    (out_w, out_h): (u32, u32),
    mut put: impl FnMut(u32, u32, [f32; 3]),
) {
    if w == 0 || h == 0 || out_w == 0 || out_h == 0 {
        return;
    }
    let (iw, ih) = src.dims();
    let tx = axis_taps(x0, w, out_w);
    let ty = axis_taps(y0, h, out_h);
    for oy in 0..out_h as usize {
        for ox in 0..out_w as usize {
            let mut acc = [0.0f32; 3];
            for &(sy, wy) in &ty.taps[ty.starts[oy]..ty.starts[oy + 1]] {
                if sy < 0 || sy >= i64::from(ih) {
                    continue;
                }
                for &(sx, wx) in &tx.taps[tx.starts[ox]..tx.starts[ox + 1]] {
                    if sx < 0 || sx >= i64::from(iw) {
                        continue;
                    }
                    let p = src.get(sx as u32, sy as u32);
                    let wgt = wx * wy;
                    acc[0] += p[0] * wgt;
                    acc[1] += p[1] * wgt;
                    acc[2] += p[2] * wgt;
                }
            }
            put(ox as u32, oy as u32, acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_average_of_halving() {
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb([(x * 10) as u8, 0, 0]));
        let mut out = vec![];
        resize_region(&img, (0, 0, 4, 2), (2, 1), |x, y, p| out.push((x, y, p[0])));
        assert_eq!(out, vec![(0, 0, 5.0), (1, 0, 25.0)]);
    }

    #[test]
    fn padding_outside_the_image_is_black() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([100, 100, 100]));
        let mut out = vec![];
        resize_region(&img, (-2, 0, 4, 2), (2, 1), |_, _, p| out.push(p[0]));
        assert_eq!(out, vec![0.0, 100.0]);
    }

    #[test]
    fn enlarging_is_bilinear_and_keeps_constants() {
        let img = RgbImage::from_pixel(3, 3, image::Rgb([7, 8, 9]));
        let mut n = 0;
        resize_region(&img, (0, 0, 3, 3), (10, 7), |_, _, p| {
            n += 1;
            assert!((p[0] - 7.0).abs() < 1e-4 && (p[2] - 9.0).abs() < 1e-4, "{p:?}");
        });
        assert_eq!(n, 70);
    }
}
