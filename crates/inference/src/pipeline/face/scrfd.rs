//! SCRFD-2.5G with five keypoints (InsightFace; the ONNX file of the PyPI sdist `scrfd==0.3.0`).
//!
//! One fixed 640x640 input: the image is fitted into the top-left corner, the rest left black.
//! Three FPN levels (strides 8, 16, 32) with two anchors per location give, per anchor, a score,
//! box distances (left, top, right, bottom) and five keypoint offsets, all in stride units
//! relative to the anchor's location.

use std::path::Path;

use image::RgbImage;
use ndarray::{Array4, ArrayD};

use super::resample::{Dst, resize_region};
use super::{Face, nms};
use crate::runtime::{Model, Runtime, RuntimeError};

const SIDE: u32 = 640;
const STRIDES: [usize; 3] = [8, 16, 32];
const ANCHORS: usize = 2;
const SCORE_THRESHOLD: f32 = 0.5;
/// InsightFace's default; 0.5 lets overlapping neighbours in group photos double up.
const NMS_THRESHOLD: f32 = 0.4;

pub(crate) struct Scrfd {
    model: Model,
    /// Positions in the model's outputs of score/bbox/kps for each stride.
    order: [[usize; 3]; 3],
}

impl Scrfd {
    pub(crate) fn load(rt: &Runtime, models_dir: &Path) -> Result<Self, RuntimeError> {
        let model = rt.load("scrfd", &models_dir.join("scrfd.onnx"))?;
        let names = model.output_names();
        if names.len() != 9 {
            return Err(RuntimeError::Session {
                model: "scrfd".into(),
                message: format!("expected 9 outputs (score/bbox/kps at strides 8, 16, 32), found {}: {names:?}", names.len()),
            });
        }
        // The exported names say which is which; when a re-export renamed them, fall back to
        // the upstream order (all scores, then all boxes, then all keypoints).
        let mut order = [[0; 3]; 3];
        for (s, stride) in STRIDES.iter().enumerate() {
            for (k, kind) in ["score", "bbox", "kps"].iter().enumerate() {
                let wanted = format!("{kind}_{stride}");
                order[s][k] = names.iter().position(|n| *n == wanted).unwrap_or(k * 3 + s);
            }
        }
        Ok(Self { model, order })
    }

    pub(crate) fn model(&self) -> &Model {
        &self.model
    }

    pub(crate) fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, RuntimeError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok(vec![]);
        }
        let (new_w, new_h) = if h > w {
            (((f64::from(SIDE) * f64::from(w) / f64::from(h)) as u32).max(1), SIDE)
        } else {
            (SIDE, ((f64::from(SIDE) * f64::from(h) / f64::from(w)) as u32).max(1))
        };
        let (sx, sy) = (w as f32 / new_w as f32, h as f32 / new_h as f32);

        // Black padding, normalised like the image: (0 - 127.5) / 128.
        let side = SIDE as usize;
        let mut input = Array4::<f32>::from_elem((1, 3, side, side), -127.5 / 128.0);
        let data = input.as_slice_mut().expect("a fresh array is contiguous");
        let mut dst = Dst { data, col: 1, row: side, plane: side * side, scale: 1.0 / 128.0, offset: -127.5 / 128.0 };
        resize_region(img, (0, 0, w, h), (new_w, new_h), &mut dst);
        let outputs = self.model.run_all(input.view())?;

        let mut faces = Vec::new();
        for (s, &stride) in STRIDES.iter().enumerate() {
            let cells = (SIDE as usize / stride).pow(2) * ANCHORS;
            let get = |k: usize, width: usize| -> Result<&[f32], RuntimeError> {
                flat(&outputs[self.order[s][k]], cells * width).ok_or_else(|| RuntimeError::Run {
                    model: "scrfd".into(),
                    message: format!(
                        "output {} has shape {:?}, expected {cells}x{width}",
                        self.model.output_names()[self.order[s][k]],
                        outputs[self.order[s][k]].shape()
                    ),
                })
            };
            let (scores, boxes, kps) = (get(0, 1)?, get(1, 4)?, get(2, 10)?);
            let fw = SIDE as usize / stride;
            let st = stride as f32;
            for (i, &score) in scores.iter().enumerate() {
                if score < SCORE_THRESHOLD {
                    continue;
                }
                let cell = i / ANCHORS;
                let (cx, cy) = ((cell % fw) as f32 * st, (cell / fw) as f32 * st);
                let b = &boxes[i * 4..i * 4 + 4];
                let k = &kps[i * 10..i * 10 + 10];
                let mut landmarks = [[0.0; 2]; 5];
                for (j, l) in landmarks.iter_mut().enumerate() {
                    *l = [(cx + k[2 * j] * st) * sx, (cy + k[2 * j + 1] * st) * sy];
                }
                faces.push(Face {
                    bbox: [(cx - b[0] * st) * sx, (cy - b[1] * st) * sy, (cx + b[2] * st) * sx, (cy + b[3] * st) * sy],
                    score,
                    landmarks,
                });
            }
        }
        Ok(nms(faces, NMS_THRESHOLD, false))
    }
}

/// The contiguous data of an output when it holds exactly `len` values (`[1, N, k]` or `[N, k]`).
fn flat(a: &ArrayD<f32>, len: usize) -> Option<&[f32]> {
    if a.len() != len {
        return None;
    }
    a.as_slice()
}
