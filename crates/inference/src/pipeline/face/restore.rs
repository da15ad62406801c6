//! Face restoration models with the GFPGAN/CodeFormer ONNX signature: one float input
//! `[1, 3, 512, 512]`, RGB scaled to [-1, 1], and an output of the same shape and range.
//! No reachable package ships such weights, so the model is whatever file the admin supplies
//! and its signature is checked before the first job can fail on it.

use std::path::Path;

use image::RgbImage;
use ndarray::Array4;

use super::FaceError;
use super::align::FACE_SIZE;
use super::onnx_sig::{self, Dim, FLOAT, TensorSig};
use crate::runtime::{Model, Runtime, RuntimeError};

const SHAPE: [i64; 4] = [1, 3, FACE_SIZE as i64, FACE_SIZE as i64];

pub struct FaceRestorer {
    model: Model,
}

/// Whether `t` can hold `[1, 3, 512, 512]`: `Some(true)` when it is declared exactly so,
/// `Some(false)` when it has free dimensions (only a run can tell), `None` when it cannot.
fn matches(t: &TensorSig, check_type: bool) -> Option<bool> {
    if check_type && t.elem_type != FLOAT {
        return None;
    }
    let Some(dims) = &t.dims else { return Some(false) };
    if dims.len() != 4 {
        return None;
    }
    let mut exact = true;
    for (d, want) in dims.iter().zip(SHAPE) {
        match d {
            Dim::Fixed(v) if *v == want => {}
            // Some exporters write -1 or 0 for "any" instead of a dim_param.
            Dim::Fixed(v) if *v <= 0 => exact = false,
            Dim::Fixed(_) => return None,
            Dim::Free(_) => exact = false,
        }
    }
    Some(exact)
}

impl FaceRestorer {
    pub fn load(rt: &Runtime, path: &Path) -> Result<Self, FaceError> {
        if !path.exists() {
            return Err(RuntimeError::ModelMissing { path: path.to_path_buf() }.into());
        }
        let sig = onnx_sig::read_signature(path).map_err(|source| FaceError::Read { path: path.to_path_buf(), source })?;
        let found = || {
            let list = |ts: &[TensorSig]| ts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            format!("inputs ({}), outputs ({})", list(&sig.inputs), list(&sig.outputs))
        };
        let mismatch = |problem: &str| FaceError::Signature { path: path.to_path_buf(), problem: problem.to_string(), found: found() };

        if sig.inputs.len() != 1 {
            return Err(mismatch(&format!("{} inputs, expected exactly one", sig.inputs.len())));
        }
        let Some(output) = sig.outputs.first() else { return Err(mismatch("no outputs")) };
        let input_exact = matches(&sig.inputs[0], true).ok_or_else(|| mismatch("input is not float32 [1,3,512,512]"))?;
        // The output's element type is often left undeclared by exporters; the run checks it.
        let output_exact = matches(output, false).ok_or_else(|| mismatch("output is not [1,3,512,512]"))?;

        let name = path.file_stem().map_or_else(|| "face-restorer".to_string(), |s| s.to_string_lossy().into_owned());
        let restorer = Self { model: rt.load(&name, path)? };
        if !(input_exact && output_exact) {
            // Free dimensions: only running at 512x512 shows whether the graph accepts it.
            let probe = Array4::<f32>::zeros((1, 3, FACE_SIZE as usize, FACE_SIZE as usize));
            let out = restorer.model.run(probe.view()).map_err(|e| mismatch(&format!("a 1x3x512x512 test run failed: {e}")))?;
            if out.shape() != [1, 3, FACE_SIZE as usize, FACE_SIZE as usize] {
                return Err(mismatch(&format!("a 1x3x512x512 test run returned {:?}", out.shape())));
            }
        }
        Ok(restorer)
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn path(&self) -> &Path {
        self.model.path()
    }

    /// Restores one aligned `FACE_SIZE`² face.
    pub fn restore(&self, aligned: &RgbImage) -> Result<RgbImage, RuntimeError> {
        let n = FACE_SIZE as usize;
        if aligned.dimensions() != (FACE_SIZE, FACE_SIZE) {
            return Err(RuntimeError::Run {
                model: self.model.name().to_string(),
                message: format!("aligned face is {:?}, expected {FACE_SIZE}x{FACE_SIZE}", aligned.dimensions()),
            });
        }
        let mut input = Array4::<f32>::zeros((1, 3, n, n));
        for (x, y, p) in aligned.enumerate_pixels() {
            for c in 0..3 {
                input[[0, c, y as usize, x as usize]] = f32::from(p.0[c]) / 127.5 - 1.0;
            }
        }
        let out = self.model.run(input.view())?;
        if out.shape() != [1, 3, n, n] {
            return Err(RuntimeError::Run {
                model: self.model.name().to_string(),
                message: format!("output shape {:?}, expected [1, 3, {n}, {n}]", out.shape()),
            });
        }
        Ok(RgbImage::from_fn(FACE_SIZE, FACE_SIZE, |x, y| {
            image::Rgb([0, 1, 2].map(|c| ((out[[0, c, y as usize, x as usize]].clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8))
        }))
    }
}
