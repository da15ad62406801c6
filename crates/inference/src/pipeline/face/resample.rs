//! Resizing for the detectors' inputs: area averaging when shrinking (OpenCV's INTER_AREA,
//! which MTCNN was tuned with, and what keeps a 3000-px photo from aliasing at 640 px),
//! bilinear when enlarging. Results go straight into the caller's tensor layout.
//!
//! Separable and streaming: each source row is resampled horizontally once and accumulated
//! into the output row(s) it covers, so the cost is about one multiply-add per source pixel
//! and tap, and memory is a few output rows whatever the photo's size.

use image::RgbImage;

/// Interleaved RGB pixels the resampler can read.
pub(crate) trait Source {
    type Px: Copy + Into<f32>;
    fn dims(&self) -> (u32, u32);
    fn raw(&self) -> &[Self::Px];
}

impl Source for RgbImage {
    type Px = u8;
    fn dims(&self) -> (u32, u32) {
        self.dimensions()
    }
    fn raw(&self) -> &[u8] {
        self.as_raw()
    }
}

/// A float RGB image, for pyramid levels resampled again.
pub(crate) struct FloatImage {
    pub width: u32,
    pub height: u32,
    /// Interleaved RGB, row-major.
    pub data: Vec<f32>,
}

impl Source for FloatImage {
    type Px = f32;
    fn dims(&self) -> (u32, u32) {
        (self.width, self.height)
    }
    fn raw(&self) -> &[f32] {
        &self.data
    }
}

/// Where output pixel `(x, y)`, channel `c` goes: `data[x * col + y * row + c * plane]`,
/// written as `value * scale + offset` (the networks' normalisation).
pub(crate) struct Dst<'a> {
    pub data: &'a mut [f32],
    pub col: usize,
    pub row: usize,
    pub plane: usize,
    pub scale: f32,
    pub offset: f32,
}

/// Source taps of each output coordinate along one axis: `taps[starts[o]..starts[o + 1]]`.
/// Taps outside `0..bound` are dropped, which makes the padding black without a branch in
/// the inner loops.
struct Taps {
    starts: Vec<usize>,
    taps: Vec<(usize, f32)>,
}

impl Taps {
    fn of(&self, o: usize) -> &[(usize, f32)] {
        &self.taps[self.starts[o]..self.starts[o + 1]]
    }
}

fn axis_taps(origin: i64, len: u32, out: u32, bound: u32) -> Taps {
    let mut starts = Vec::with_capacity(out as usize + 1);
    let mut taps = Vec::new();
    let push = |taps: &mut Vec<(usize, f32)>, i: i64, w: f32| {
        let s = origin + i;
        if s >= 0 && s < i64::from(bound) && w > 0.0 {
            taps.push((s as usize, w));
        }
    };
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
                    push(&mut taps, i, (w / ratio) as f32);
                }
                i += 1;
            }
        } else {
            let s = ((f64::from(o) + 0.5) * ratio - 0.5).clamp(0.0, f64::from(len - 1));
            let i0 = s.floor();
            let f = (s - i0) as f32;
            let i0 = i0 as i64;
            push(&mut taps, i0, 1.0 - f);
            push(&mut taps, (i0 + 1).min(i64::from(len) - 1), f);
        }
    }
    starts.push(taps.len());
    Taps { starts, taps }
}

/// Resizes the `w`x`h` region of `src` at `(x0, y0)` to `out_w`x`out_h` into `dst`. The region
/// may extend past the image: those pixels count as black, which is how MTCNN pads boxes at
/// the border.
pub(crate) fn resize_region<S: Source>(src: &S, (x0, y0, w, h): (i64, i64, u32, u32), (out_w, out_h): (u32, u32), dst: &mut Dst<'_>) {
    if w == 0 || h == 0 || out_w == 0 || out_h == 0 {
        return;
    }
    let (iw, ih) = src.dims();
    let raw = src.raw();
    let stride = iw as usize * 3;
    let tx = axis_taps(x0, w, out_w, iw);
    let ty = axis_taps(y0, h, out_h, ih);
    let ow = out_w as usize;

    // Two horizontally resampled source rows: enough for bilinear (rows i, i+1) and for area
    // averaging (a boundary row shared by two output rows).
    let mut cache: [(usize, Vec<f32>); 2] = [(usize::MAX, vec![0.0; ow * 3]), (usize::MAX, vec![0.0; ow * 3])];
    let mut acc = vec![0.0f32; ow * 3];
    for oy in 0..out_h as usize {
        acc.fill(0.0);
        for &(sy, wy) in ty.of(oy) {
            let slot = match cache.iter().position(|(y, _)| *y == sy) {
                Some(i) => i,
                None => {
                    // Rows arrive in increasing order: the smaller cached row is done with.
                    let i = if cache[0].0 == usize::MAX || (cache[1].0 != usize::MAX && cache[0].0 < cache[1].0) { 0 } else { 1 };
                    let row = &raw[sy * stride..(sy + 1) * stride];
                    let out = &mut cache[i].1;
                    for (ox, o) in out.chunks_exact_mut(3).enumerate() {
                        let mut px = [0.0f32; 3];
                        for &(sx, wx) in tx.of(ox) {
                            let p = &row[sx * 3..sx * 3 + 3];
                            px[0] += p[0].into() * wx;
                            px[1] += p[1].into() * wx;
                            px[2] += p[2].into() * wx;
                        }
                        o.copy_from_slice(&px);
                    }
                    cache[i].0 = sy;
                    i
                }
            };
            for (a, v) in acc.iter_mut().zip(&cache[slot].1) {
                *a += v * wy;
            }
        }
        for (ox, px) in acc.chunks_exact(3).enumerate() {
            let base = ox * dst.col + oy * dst.row;
            for (c, v) in px.iter().enumerate() {
                dst.data[base + c * dst.plane] = v * dst.scale + dst.offset;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resizes into an interleaved `[y][x][c]` buffer.
    fn resize(img: &RgbImage, region: (i64, i64, u32, u32), out: (u32, u32)) -> Vec<f32> {
        let mut data = vec![f32::NAN; (out.0 * out.1 * 3) as usize];
        let mut dst = Dst { data: &mut data, col: 3, row: out.0 as usize * 3, plane: 1, scale: 1.0, offset: 0.0 };
        resize_region(img, region, out, &mut dst);
        data
    }

    #[test]
    fn area_average_of_halving() {
        let img = RgbImage::from_fn(4, 2, |x, _| image::Rgb([(x * 10) as u8, 0, 0]));
        assert_eq!(resize(&img, (0, 0, 4, 2), (2, 1)), vec![5.0, 0.0, 0.0, 25.0, 0.0, 0.0]);
    }

    #[test]
    fn area_average_of_a_fractional_ratio() {
        // 3 -> 2: output 0 covers source 0 and half of 1.
        let img = RgbImage::from_fn(3, 1, |x, _| image::Rgb([[0, 30, 60][x as usize]; 3]));
        let out = resize(&img, (0, 0, 3, 1), (2, 1));
        assert!((out[0] - 10.0).abs() < 1e-4 && (out[3] - 50.0).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn padding_outside_the_image_is_black() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([100, 100, 100]));
        let out = resize(&img, (-2, 0, 4, 2), (2, 1));
        assert_eq!([out[0], out[3]], [0.0, 100.0]);
        let out = resize(&img, (1, 1, 2, 2), (1, 1));
        assert_eq!(out[0], 25.0);
    }

    #[test]
    fn enlarging_is_bilinear_and_keeps_constants() {
        let img = RgbImage::from_pixel(3, 3, image::Rgb([7, 8, 9]));
        let out = resize(&img, (0, 0, 3, 3), (10, 7));
        for px in out.chunks(3) {
            assert!((px[0] - 7.0).abs() < 1e-4 && (px[2] - 9.0).abs() < 1e-4, "{px:?}");
        }
        let ramp = RgbImage::from_fn(2, 1, |x, _| image::Rgb([(x * 100) as u8; 3]));
        let out = resize(&ramp, (0, 0, 2, 1), (4, 1));
        let reds: Vec<f32> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(reds, vec![0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn planar_layout_and_normalisation() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([0, 128, 255]));
        let mut data = vec![0.0; 12];
        let mut dst = Dst { data: &mut data, col: 1, row: 2, plane: 4, scale: 0.5, offset: -1.0 };
        resize_region(&img, (0, 0, 2, 2), (2, 2), &mut dst);
        assert_eq!(data, [[-1.0; 4], [63.0; 4], [126.5; 4]].concat());
    }
}
