//! Tiled super-resolution: cut (see [`super::tiling`]), run each padded tile, keep its core,
//! and write it straight into the output image.
//!
//! Working memory is one padded input tile and one model output, whatever the image size.
//! When the requested scale is below the model's native scale (x4plus asked for x2), each
//! output block is averaged down inside the tile: tile cores start on multiples of the native
//! scale, so the reduction is exact and seam-free, which a resize of the stitched image or of
//! each tile with a wider filter would not be.
//!
//! A tile the execution provider cannot allocate memory for is split in four and its
//! quarters run instead (see [`super::adaptive`]); they are padded like any tile, so the
//! stitched result is the same.

use std::num::NonZeroU32;
use std::time::Duration;

use image::RgbImage;
use ndarray::ArrayView4;

use super::adaptive::{self, Adaptation, TileLimits};
use super::tiling::{self, Tile};
use crate::runtime::{Model, RuntimeError};

#[derive(Debug, thiserror::Error)]
pub enum SrError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cancelled")]
    Cancelled,
    #[error("model {model} returned shape {shape:?}, expected [1, 3, {h}, {w}]")]
    BadOutput { model: String, shape: Vec<i64>, h: u32, w: u32 },
    #[error("scale {requested} is not reachable from a x{native} model")]
    Scale { requested: u32, native: u32 },
}

/// What a run cost; the benchmark reports overhead as `total - model` against `model`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SrStats {
    pub tiles: u32,
    pub model_time: Duration,
    /// How the tiles adapted to the device's memory.
    pub adaptation: Adaptation,
}

/// A super-resolution model, the scale it natively produces, and the tile sizes its session
/// is known to hold.
#[derive(Debug)]
pub struct SrModel {
    pub model: Model,
    pub native_scale: u32,
    pub limits: TileLimits,
}

/// Edge of a tile's core, the quantity `tile_size` bounds.
fn edge(t: &Tile) -> u32 {
    t.w.max(t.h)
}

/// Options of one upscale.
#[derive(Debug, Clone, Copy)]
pub struct SrOptions {
    pub scale: u32,
    /// The tile edge asked for; the run may plan smaller ones ([`TileLimits::plan`]).
    pub tile_size: NonZeroU32,
    pub pad: u32,
}

impl SrModel {
    /// Upscales `img` by `opts.scale`. `cancelled` is polled between tiles; `on_tile(done,
    /// total, model_time)` is called after each tile with the time ONNX Runtime spent on it.
    pub fn upscale(
        &self,
        img: &RgbImage,
        opts: SrOptions,
        cancelled: &dyn Fn() -> bool,
        on_tile: &mut dyn FnMut(u32, u32, Duration),
    ) -> Result<(RgbImage, SrStats), SrError> {
        let native = self.native_scale;
        if opts.scale == 0 || !native.is_multiple_of(opts.scale) {
            return Err(SrError::Scale { requested: opts.scale, native });
        }
        let reduce = native / opts.scale;
        let (w, h) = img.dimensions();
        let planned = self.limits.plan(opts.tile_size.get());
        let tiles = tiling::plan(w, h, NonZeroU32::new(planned).unwrap_or(NonZeroU32::MIN), opts.pad);
        let total = tiles.len() as u32;
        let mut out = RgbImage::new(w * opts.scale, h * opts.scale);
        let mut stats = SrStats {
            adaptation: Adaptation { requested: opts.tile_size.get(), planned, smallest: planned, splits: 0 },
            ..SrStats::default()
        };
        let mut input = Vec::new();
        for (i, tile) in tiles.iter().enumerate() {
            let mut model_time = Duration::ZERO;
            // Depth first, in order: a split tile's quarters run before the next tile.
            let mut pending = vec![*tile];
            while let Some(t) = pending.pop() {
                if cancelled() {
                    return Err(SrError::Cancelled);
                }
                match self.run_tile(img, &t, reduce, opts.scale, &mut input, &mut out) {
                    Ok(elapsed) => {
                        self.limits.record_success(edge(&t));
                        model_time += elapsed;
                    }
                    Err(SrError::Runtime(RuntimeError::OutOfMemory { message, .. })) if edge(&t).div_ceil(2) >= adaptive::FLOOR => {
                        self.limits.record_failure(edge(&t));
                        let parts = tiling::split(&t, w, h, opts.pad);
                        let a = &mut stats.adaptation;
                        a.splits += 1;
                        a.smallest = parts.iter().map(edge).fold(a.smallest, u32::min);
                        tracing::warn!(
                            model = self.model.name(),
                            provider = %self.model.selection().active,
                            tile = edge(&t),
                            retry_with = edge(&parts[0]),
                            %message,
                            "tile did not fit in memory; splitting it in four"
                        );
                        pending.extend(parts.into_iter().rev());
                    }
                    Err(e) => return Err(e),
                }
            }
            stats.model_time += model_time;
            stats.tiles += 1;
            on_tile(i as u32 + 1, total, model_time);
        }
        Ok((out, stats))
    }

    /// Runs one padded tile and writes its core into `out`; returns the model time.
    fn run_tile(
        &self,
        img: &RgbImage,
        tile: &Tile,
        reduce: u32,
        scale: u32,
        input: &mut Vec<f32>,
        out: &mut RgbImage,
    ) -> Result<Duration, SrError> {
        let native = self.native_scale;
        fill_input(img, tile, input);
        let view = ArrayView4::from_shape((1, 3, tile.ph as usize, tile.pw as usize), &input[..]).expect("buffer sized for the tile");
        let (written, elapsed) = self.model.run_raw(view, |shape, data| {
            let expected_h = tile.ph * native;
            let expected_w = tile.pw * native;
            if shape != [1, 3, i64::from(expected_h), i64::from(expected_w)] {
                return Err(SrError::BadOutput {
                    model: self.model.name().to_string(),
                    shape: shape.to_vec(),
                    h: expected_h,
                    w: expected_w,
                });
            }
            write_core(data, tile, native, reduce, scale, out);
            Ok(())
        })?;
        written?;
        Ok(elapsed)
    }
}

/// Planar RGB in [0, 1] of the padded tile, the layout Real-ESRGAN was trained on.
fn fill_input(img: &RgbImage, tile: &Tile, buf: &mut Vec<f32>) {
    let (pw, ph) = (tile.pw as usize, tile.ph as usize);
    let plane = pw * ph;
    buf.clear();
    buf.resize(plane * 3, 0.0);
    let (r, rest) = buf.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    let stride = img.width() as usize * 3;
    let raw = img.as_raw();
    const INV: f32 = 1.0 / 255.0;
    for y in 0..ph {
        let row_start = (tile.py as usize + y) * stride + tile.px as usize * 3;
        let row = &raw[row_start..row_start + pw * 3];
        let o = y * pw;
        for (x, px) in row.chunks_exact(3).enumerate() {
            r[o + x] = f32::from(px[0]) * INV;
            g[o + x] = f32::from(px[1]) * INV;
            b[o + x] = f32::from(px[2]) * INV;
        }
    }
}

#[inline]
fn to_u8(v: f32) -> u8 {
    // NaN maps to 0 through the saturating cast.
    (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8
}

/// Copies the core of a model output (planar, `native` x the padded tile) into `out`,
/// averaging `reduce` x `reduce` blocks when the requested scale is below the native one.
fn write_core(data: &[f32], tile: &Tile, native: u32, reduce: u32, scale: u32, out: &mut RgbImage) {
    let ow = (tile.pw * native) as usize;
    let plane = ow * (tile.ph * native) as usize;
    let (cx, cy) = tile.core_offset();
    let (cx, cy) = ((cx * native) as usize, (cy * native) as usize);
    let out_w = out.width() as usize;
    let dst_x0 = (tile.x * scale) as usize;
    let dst_y0 = (tile.y * scale) as usize;
    let core_w = (tile.w * scale) as usize;
    let core_h = (tile.h * scale) as usize;
    let buf: &mut [u8] = &mut *out;
    if reduce == 1 {
        for y in 0..core_h {
            let src = (cy + y) * ow + cx;
            let dst = ((dst_y0 + y) * out_w + dst_x0) * 3;
            let dst_row = &mut buf[dst..dst + core_w * 3];
            for (x, px) in dst_row.chunks_exact_mut(3).enumerate() {
                px[0] = to_u8(data[src + x]);
                px[1] = to_u8(data[plane + src + x]);
                px[2] = to_u8(data[2 * plane + src + x]);
            }
        }
        return;
    }
    let r = reduce as usize;
    let norm = 1.0 / (r * r) as f32;
    for y in 0..core_h {
        let dst = ((dst_y0 + y) * out_w + dst_x0) * 3;
        let dst_row = &mut buf[dst..dst + core_w * 3];
        for (x, px) in dst_row.chunks_exact_mut(3).enumerate() {
            let mut acc = [0f32; 3];
            for dy in 0..r {
                let src = (cy + y * r + dy) * ow + cx + x * r;
                for dx in 0..r {
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += data[c * plane + src + dx];
                    }
                }
            }
            px[0] = to_u8(acc[0] * norm);
            px[1] = to_u8(acc[1] * norm);
            px[2] = to_u8(acc[2] * norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake model output: the padded tile upscaled by nearest neighbour, as planar floats.
    fn nearest_output(img: &RgbImage, tile: &Tile, native: u32) -> Vec<f32> {
        let ow = tile.pw * native;
        let oh = tile.ph * native;
        let plane = (ow * oh) as usize;
        let mut data = vec![0f32; plane * 3];
        for y in 0..oh {
            for x in 0..ow {
                let p = img.get_pixel(tile.px + x / native, tile.py + y / native);
                for c in 0..3 {
                    data[c * plane + (y * ow + x) as usize] = f32::from(p[c]) / 255.0;
                }
            }
        }
        data
    }

    fn plan(width: u32, height: u32, tile_size: u32, pad: u32) -> Vec<Tile> {
        tiling::plan(width, height, NonZeroU32::new(tile_size).unwrap(), pad)
    }

    fn test_image(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn input_is_planar_unit_range() {
        let img = test_image(10, 6);
        let tile = plan(10, 6, 4, 1)[1];
        let mut buf = Vec::new();
        fill_input(&img, &tile, &mut buf);
        assert_eq!(buf.len(), (tile.pw * tile.ph * 3) as usize);
        let p = img.get_pixel(tile.px + 2, tile.py + 1);
        let plane = (tile.pw * tile.ph) as usize;
        let i = (tile.pw + 2) as usize;
        for c in 0..3 {
            let expected = f32::from(p[c]) / 255.0;
            assert!((buf[c * plane + i] - expected).abs() < 1e-6, "channel {c}: {} vs {expected}", buf[c * plane + i]);
        }
    }

    #[test]
    fn stitching_nearest_outputs_reproduces_a_nearest_upscale() {
        let img = test_image(37, 23);
        for (native, scale) in [(2, 2), (4, 4), (4, 2)] {
            let mut out = RgbImage::new(37 * scale, 23 * scale);
            for tile in plan(37, 23, 8, 3) {
                let data = nearest_output(&img, &tile, native);
                write_core(&data, &tile, native, native / scale, scale, &mut out);
            }
            for (x, y, p) in out.enumerate_pixels() {
                assert_eq!(p, img.get_pixel(x / scale, y / scale), "native {native} scale {scale} at {x},{y}");
            }
        }
    }

    #[test]
    fn conversion_rounds_and_clamps() {
        assert_eq!(to_u8(-0.5), 0);
        assert_eq!(to_u8(2.0), 255);
        assert_eq!(to_u8(f32::NAN), 0);
        assert_eq!(to_u8(0.5), 128);
        assert_eq!(to_u8(1.0 / 255.0), 1);
    }
}

/// Adaptive tiles with the real model and injected allocation failures.
#[cfg(test)]
#[path = "sr_oom_tests.rs"]
mod oom_tests;
