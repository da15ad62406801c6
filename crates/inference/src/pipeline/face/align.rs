//! Geometry of face alignment: the FFHQ template, similarity fitting, warping a face into the
//! 512x512 crop the restorers expect, and pasting the restored crop back.
//!
//! Coordinates follow the usual image convention (OpenCV's `warpAffine`, the detectors'
//! landmarks): pixel `(x, y)` has its centre at integer `(x, y)`.

use image::RgbImage;

/// Side of the aligned crop GFPGAN and CodeFormer work on.
pub const FACE_SIZE: u32 = 512;

/// Five landmarks (image-left eye, image-right eye, nose tip, image-left and image-right mouth
/// corners) of the average FFHQ face in a 512x512 crop. These are facexlib's numbers, which
/// GFPGAN and CodeFormer were trained with; a different template would shift every face the
/// models see.
pub fn ffhq_template() -> [[f32; 2]; 5] {
    [[192.981_38, 239.947_08], [318.902_77, 240.193_6], [256.634_16, 314.019_35], [201.261_17, 371.410_43], [313.089_05, 371.151_18]]
}

/// A 2x3 affine transform, row-major: `x' = a x + b y + c`, `y' = d x + e y + f`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f32; 6]);

impl Affine {
    pub const IDENTITY: Affine = Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let [a, b, c, d, e, f] = self.0;
        [a * p[0] + b * p[1] + c, d * p[0] + e * p[1] + f]
    }

    /// The inverse transform. A singular matrix (all landmarks on one point) has none; the
    /// result is then the identity, so callers produce a harmless crop instead of NaNs.
    pub fn invert(&self) -> Affine {
        let [a, b, c, d, e, f] = self.0.map(f64::from);
        let det = a * e - b * d;
        if det.abs() < 1e-12 || !det.is_finite() {
            return Affine::IDENTITY;
        }
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        let ic = -(ia * c + ib * f);
        let if_ = -(id * c + ie * f);
        Affine([ia, ib, ic, id, ie, if_].map(|v| v as f32))
    }

    /// `self` followed by a uniform scale of the destination: maps into a copy of the
    /// destination that is `s` times larger.
    pub fn scaled(&self, s: f32) -> Affine {
        Affine(self.0.map(|v| v * s))
    }

    /// `self` followed by `next`.
    pub fn then(&self, next: &Affine) -> Affine {
        let [a, b, c, d, e, f] = next.0;
        let [p, q, r, s, t, u] = self.0;
        Affine([a * p + b * s, a * q + b * t, a * r + b * u + c, d * p + e * s, d * q + e * t, d * r + e * u + f])
    }

    pub fn translation(dx: f32, dy: f32) -> Affine {
        Affine([1.0, 0.0, dx, 0.0, 1.0, dy])
    }

    /// How many destination pixels one source pixel spans (geometric mean of the axes).
    pub fn scale_factor(&self) -> f32 {
        let [a, b, _, d, e, _] = self.0;
        (a * e - b * d).abs().sqrt()
    }
}

/// Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
/// `src` onto `dst` — Umeyama's solution, which in 2-D has a closed form.
pub fn estimate_similarity(src: &[[f32; 2]; 5], dst: &[[f32; 2]; 5]) -> Affine {
    // f64: the sums of squares of image coordinates lose digits in f32.
    let n = src.len() as f64;
    let mean = |pts: &[[f32; 2]; 5]| {
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(x, y), p| (x + f64::from(p[0]), y + f64::from(p[1])));
        (sx / n, sy / n)
    };
    let (msx, msy) = mean(src);
    let (mdx, mdy) = mean(dst);
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst) {
        let (px, py) = (f64::from(s[0]) - msx, f64::from(s[1]) - msy);
        let (qx, qy) = (f64::from(d[0]) - mdx, f64::from(d[1]) - mdy);
        dot += px * qx + py * qy;
        cross += px * qy - py * qx;
        norm += px * px + py * py;
    }
    if norm < 1e-12 {
        return Affine::translation((mdx - msx) as f32, (mdy - msy) as f32);
    }
    let (a, b) = (dot / norm, cross / norm);
    let tx = mdx - (a * msx - b * msy);
    let ty = mdy - (b * msx + a * msy);
    Affine([a, -b, tx, b, a, ty].map(|v| v as f32))
}

/// Bilinear sample with the border replicated, so faces at the image edge get plausible
/// context instead of black wedges the restorer would try to "restore".
#[inline]
fn sample_bilinear(img: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let x0 = x.floor() as i64;
    let y0 = y.floor() as i64;
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let x1 = (x0 + 1).min(w - 1);
    let y1 = (y0 + 1).min(h - 1);
    let raw = img.as_raw();
    let stride = w as usize * 3;
    let at = |xx: i64, yy: i64| yy as usize * stride + xx as usize * 3;
    let (i00, i01, i10, i11) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
    let mut out = [0.0; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = f32::from(raw[i00 + c]) * (1.0 - fx) + f32::from(raw[i01 + c]) * fx;
        let bottom = f32::from(raw[i10 + c]) * (1.0 - fx) + f32::from(raw[i11 + c]) * fx;
        *o = top * (1.0 - fy) + bottom * fy;
    }
    out
}

/// Samples per axis so that shrinking by `src_per_dst` does not alias (bilinear alone only
/// looks at 2x2 source pixels). Capped: beyond 8x8 the cost outweighs the gain.
fn supersampling(src_per_dst: f32) -> usize {
    (src_per_dst.ceil() as usize).clamp(1, 8)
}

/// The destination pixel centred at `(u, v)`, as the mean of `n`x`n` bilinear samples spread
/// over its area and mapped into the source by `inv`.
#[inline]
fn sample_area(img: &RgbImage, inv: &Affine, u: f32, v: f32, n: usize) -> [f32; 3] {
    if n == 1 {
        let [x, y] = inv.apply([u, v]);
        return sample_bilinear(img, x, y);
    }
    let mut acc = [0.0; 3];
    let step = 1.0 / n as f32;
    for j in 0..n {
        for i in 0..n {
            let su = u - 0.5 + (i as f32 + 0.5) * step;
            let sv = v - 0.5 + (j as f32 + 0.5) * step;
            let [x, y] = inv.apply([su, sv]);
            let s = sample_bilinear(img, x, y);
            for c in 0..3 {
                acc[c] += s[c];
            }
        }
    }
    let k = 1.0 / (n * n) as f32;
    acc.map(|v| v * k)
}

#[inline]
fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The `FACE_SIZE`² crop of `img` under `src_to_face` (bilinear, border replicated).
pub fn warp_to_face(img: &RgbImage, src_to_face: &Affine) -> RgbImage {
    let inv = src_to_face.invert();
    let n = supersampling(inv.scale_factor());
    let mut out = RgbImage::new(FACE_SIZE, FACE_SIZE);
    for (u, v, px) in out.enumerate_pixels_mut() {
        px.0 = sample_area(img, &inv, u as f32, v as f32, n).map(to_u8);
    }
    out
}

/// Blends `face` (a `FACE_SIZE`² crop) into `target` through `face_to_target`.
///
/// The mask is the crop's square, eroded by one target pixel (bilinear sampling at the very
/// edge mixes in replicated border) and feathered over `feather_px` target pixels with a
/// smoothstep, i.e. what eroding and blurring a full-size mask would give, computed from the
/// distance to the square's edge instead. Only the square's bounding box is visited, and no
/// mask is allocated, so memory does not depend on the size of `target`.
pub fn paste_back(target: &mut RgbImage, face: &RgbImage, face_to_target: &Affine, feather_px: f32) {
    let (fw, fh) = (face.width() as f32, face.height() as f32);
    let (tw, th) = (target.width() as i64, target.height() as i64);
    if tw == 0 || th == 0 || fw == 0.0 || fh == 0.0 {
        return;
    }
    let corners = [[-0.5, -0.5], [fw - 0.5, -0.5], [-0.5, fh - 0.5], [fw - 0.5, fh - 0.5]].map(|p| face_to_target.apply(p));
    let bound = |f: fn(f32, f32) -> f32, k: usize| corners.iter().map(|p| p[k]).fold(corners[0][k], f);
    let x0 = (bound(f32::min, 0).floor() as i64).max(0);
    let y0 = (bound(f32::min, 1).floor() as i64).max(0);
    let x1 = (bound(f32::max, 0).ceil() as i64).min(tw - 1);
    let y1 = (bound(f32::max, 1).ceil() as i64).min(th - 1);
    if x0 > x1 || y0 > y1 {
        return;
    }

    let inv = face_to_target.invert();
    let target_per_face = face_to_target.scale_factor().max(1e-6);
    let n = supersampling(1.0 / target_per_face);
    let feather = feather_px.max(1e-3);
    const ERODE_PX: f32 = 1.0;

    for y in y0..=y1 {
        for x in x0..=x1 {
            let [u, v] = inv.apply([x as f32, y as f32]);
            let edge_face = (u + 0.5).min(v + 0.5).min(fw - 0.5 - u).min(fh - 0.5 - v);
            let t = ((edge_face * target_per_face - ERODE_PX) / feather).clamp(0.0, 1.0);
            if t <= 0.0 {
                continue;
            }
            let alpha = t * t * (3.0 - 2.0 * t);
            let src = sample_area(face, &inv, x as f32, y as f32, n);
            let px = target.get_pixel_mut(x as u32, y as u32);
            for (dst, s) in px.0.iter_mut().zip(src) {
                let old = f32::from(*dst);
                *dst = to_u8(old + (s - old) * alpha);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: [f32; 2], b: [f32; 2], tol: f32) -> bool {
        (a[0] - b[0]).abs() <= tol && (a[1] - b[1]).abs() <= tol
    }

    fn rot_scale_shift(angle: f32, s: f32, tx: f32, ty: f32) -> Affine {
        let (sin, cos) = angle.sin_cos();
        Affine([s * cos, -s * sin, tx, s * sin, s * cos, ty])
    }

    #[test]
    fn similarity_recovers_known_transform() {
        let truth = rot_scale_shift(0.37, 2.3, -41.0, 17.5);
        let src = ffhq_template();
        let dst = src.map(|p| truth.apply(p));
        let est = estimate_similarity(&src, &dst);
        for (e, t) in est.0.iter().zip(truth.0) {
            assert!((e - t).abs() < 1e-3 * t.abs().max(1.0), "estimated {:?}, truth {:?}", est.0, truth.0);
        }
        for (s, d) in src.iter().zip(&dst) {
            assert!(close(est.apply(*s), *d, 1e-2));
        }
    }

    #[test]
    fn similarity_is_least_squares_under_noise() {
        let truth = rot_scale_shift(-0.2, 0.5, 100.0, 50.0);
        let src = ffhq_template();
        let noise = [[0.3, -0.2], [-0.1, 0.4], [0.2, 0.1], [-0.3, -0.3], [0.1, 0.2]];
        let mut dst = src.map(|p| truth.apply(p));
        for (d, n) in dst.iter_mut().zip(noise) {
            d[0] += n[0];
            d[1] += n[1];
        }
        let est = estimate_similarity(&src, &dst);
        for (s, d) in src.iter().zip(&dst) {
            assert!(close(est.apply(*s), *d, 0.6));
        }
    }

    #[test]
    fn invert_then_apply_is_identity() {
        let a = Affine([1.7, -0.4, 12.0, 0.3, 0.9, -7.0]);
        let inv = a.invert();
        for p in [[0.0, 0.0], [511.0, 3.0], [-20.0, 900.5], [1234.5, -77.25]] {
            assert!(close(inv.apply(a.apply(p)), p, 1e-3), "{p:?}");
            assert!(close(a.apply(inv.apply(p)), p, 1e-3), "{p:?}");
        }
        let both = a.then(&inv);
        for (x, y) in both.0.iter().zip(Affine::IDENTITY.0) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn scaled_and_then_compose() {
        let a = rot_scale_shift(0.1, 1.5, 3.0, 4.0);
        let p = [10.0, 20.0];
        let q = a.apply(p);
        assert!(close(a.scaled(4.0).apply(p), [q[0] * 4.0, q[1] * 4.0], 1e-3));
        let t = Affine::translation(1.5, -2.0);
        assert!(close(a.then(&t).apply(p), [q[0] + 1.5, q[1] - 2.0], 1e-4));
        assert!((a.scaled(4.0).scale_factor() - 6.0).abs() < 1e-4);
    }

    /// An image with a distinct colour dot at each of five landmarks.
    fn dotted(size: (u32, u32), pts: &[[f32; 2]; 5], radius: f32) -> RgbImage {
        let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]];
        RgbImage::from_fn(size.0, size.1, |x, y| {
            for (p, c) in pts.iter().zip(colours) {
                if (x as f32 - p[0]).hypot(y as f32 - p[1]) <= radius {
                    return image::Rgb(c);
                }
            }
            image::Rgb([40, 40, 40])
        })
    }

    /// Centroid of the pixels close to `colour`.
    fn centroid(img: &RgbImage, colour: [u8; 3]) -> [f32; 2] {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for (x, y, p) in img.enumerate_pixels() {
            let d: i32 = p.0.iter().zip(colour).map(|(a, b)| (i32::from(*a) - i32::from(b)).abs()).sum();
            if d < 60 {
                sx += x as f32;
                sy += y as f32;
                n += 1.0;
            }
        }
        assert!(n > 0.0, "colour {colour:?} not found");
        [sx / n, sy / n]
    }

    #[test]
    fn warp_maps_landmarks_onto_template() {
        // A face rotated by 20 degrees and about a third of the template's size.
        let face_in_template = rot_scale_shift(0.35, 0.33, 150.0, 60.0);
        let landmarks = ffhq_template().map(|p| face_in_template.apply(p));
        let img = dotted((400, 300), &landmarks, 3.0);
        let to_face = estimate_similarity(&landmarks, &ffhq_template());
        let crop = warp_to_face(&img, &to_face);
        assert_eq!(crop.dimensions(), (FACE_SIZE, FACE_SIZE));
        let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255]];
        for (t, c) in ffhq_template().iter().zip(colours) {
            let got = centroid(&crop, c);
            assert!(close(got, *t, 1.5), "colour {c:?}: at {got:?}, template {t:?}");
        }
    }

    #[test]
    fn warp_downscaling_does_not_alias() {
        // A 1-px checkerboard shrunk 4x must come out as flat grey, not as moire.
        let img = RgbImage::from_fn(2048, 2048, |x, y| if (x + y) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) });
        let crop = warp_to_face(&img, &Affine([0.25, 0.0, 0.0, 0.0, 0.25, 0.0]));
        // The outermost ring replicates the source's border and is not a mean of both colours.
        for (u, v, p) in crop.enumerate_pixels().filter(|(u, v, _)| (1..FACE_SIZE - 1).contains(u) && (1..FACE_SIZE - 1).contains(v)) {
            assert!((i32::from(p.0[0]) - 128).abs() <= 2, "({u},{v}): {:?}", p.0);
        }
    }

    #[test]
    fn paste_back_touches_only_the_face_and_feathers_monotonically() {
        let mut target = RgbImage::from_pixel(1000, 800, image::Rgb([10, 20, 30]));
        let before = target.clone();
        let face = RgbImage::from_pixel(FACE_SIZE, FACE_SIZE, image::Rgb([250, 240, 230]));
        // Face square maps to a 256-px square with its corner at (300, 200), rotated a bit.
        let face_to_target = rot_scale_shift(0.15, 0.5, 300.0, 200.0);
        paste_back(&mut target, &face, &face_to_target, 20.0);

        let inv = face_to_target.invert();
        let mut changed = 0;
        for (x, y, p) in target.enumerate_pixels() {
            let [u, v] = inv.apply([x as f32, y as f32]);
            let inside = u >= -0.5 && v >= -0.5 && u <= 511.5 && v <= 511.5;
            if !inside {
                assert_eq!(p, before.get_pixel(x, y), "outside pixel ({x},{y}) changed");
            } else if p != before.get_pixel(x, y) {
                changed += 1;
            }
            // Deep inside: fully the face.
            if (u - 256.0).abs() < 150.0 && (v - 256.0).abs() < 150.0 {
                assert_eq!(p.0, [250, 240, 230], "centre pixel ({x},{y})");
            }
        }
        assert!(changed > 200 * 200, "only {changed} pixels changed");

        // Walking from outside into the face along a row, the blend only ever increases.
        let y = 330;
        let row: Vec<u8> = (250..450).map(|x| target.get_pixel(x, y).0[0]).collect();
        assert!(row.windows(2).all(|w| w[1] >= w[0]), "not monotone: {row:?}");
        let ramp = row.iter().filter(|&&r| r > 10 && r < 250).count();
        assert!((10..=40).contains(&ramp), "feather spans {ramp} px: {row:?}");
    }

    #[test]
    fn paste_back_off_image_is_a_no_op() {
        let mut target = RgbImage::from_pixel(64, 64, image::Rgb([1, 2, 3]));
        let face = RgbImage::from_pixel(FACE_SIZE, FACE_SIZE, image::Rgb([200; 3]));
        paste_back(&mut target, &face, &Affine::translation(5000.0, 5000.0), 8.0);
        assert!(target.pixels().all(|p| p.0 == [1, 2, 3]));
    }
}
