//! Faces: detection (SCRFD or MTCNN), alignment to the FFHQ template, restoration with a
//! GFPGAN/CodeFormer-style model, and pasting the restored faces into the upscaled image.
//!
//! Detection and alignment work on the *input* photo (the detectors were trained on ordinary
//! photos, and the restorer should see the original pixels, not super-resolved ones); the
//! restored crop is pasted into the *output* through the same transform composed with the
//! upscaling factor. Per face, memory is a few 512x512 buffers; the paste touches only the
//! face's bounding box.
//!
//! Licences: SCRFD's weights are InsightFace's (non-commercial research use); MTCNN's are MIT.

mod align;
mod mtcnn;
mod onnx_sig;
mod resample;
mod restore;
mod scrfd;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::RgbImage;

pub use align::{Affine, FACE_SIZE, estimate_similarity, ffhq_template, paste_back, warp_to_face};
pub use restore::FaceRestorer;

use crate::runtime::{Model, Runtime, RuntimeError};

/// Faces kept per image, best first: beyond this a photo is a crowd, and restoring each face
/// costs a model run.
pub const MAX_FACES: usize = 32;
/// Faces whose box is narrower or lower than this many input pixels are left alone: there is
/// too little to align on, and the restorer would invent a face.
pub const MIN_FACE_PX: f32 = 16.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// x0, y0, x1, y1 in image pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    /// Image-left eye, image-right eye, nose tip, image-left and image-right mouth corners.
    pub landmarks: [[f32; 2]; 5],
}

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot read face restoration model {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "face restoration model {path} does not have the GFPGAN/CodeFormer signature ({problem}): it has {found}; \
         expected one float32 input [1,3,512,512] (RGB in [-1,1]) and an output of the same shape"
    )]
    Signature { path: PathBuf, problem: String, found: String },
    #[error("unknown face detector {0:?}; expected \"scrfd\" or \"mtcnn\"")]
    UnknownDetector(String),
    #[error("cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    #[default]
    Scrfd,
    Mtcnn,
}

impl DetectorKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            DetectorKind::Scrfd => "scrfd",
            DetectorKind::Mtcnn => "mtcnn",
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectorKind {
    type Err = FaceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scrfd" => Ok(DetectorKind::Scrfd),
            "mtcnn" => Ok(DetectorKind::Mtcnn),
            _ => Err(FaceError::UnknownDetector(s.to_string())),
        }
    }
}

enum Detector {
    Scrfd(Box<scrfd::Scrfd>),
    Mtcnn(Box<mtcnn::Mtcnn>),
}

pub struct FaceDetector {
    kind: DetectorKind,
    inner: Detector,
}

impl FaceDetector {
    /// Loads `scrfd.onnx` or `mtcnn/{pnet,rnet,onet}.onnx` from `models_dir`.
    pub fn load(rt: &Runtime, kind: DetectorKind, models_dir: &Path) -> Result<Self, RuntimeError> {
        let inner = match kind {
            DetectorKind::Scrfd => Detector::Scrfd(Box::new(scrfd::Scrfd::load(rt, models_dir)?)),
            DetectorKind::Mtcnn => Detector::Mtcnn(Box::new(mtcnn::Mtcnn::load(rt, models_dir)?)),
        };
        Ok(Self { kind, inner })
    }

    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    pub fn models(&self) -> Vec<&Model> {
        match &self.inner {
            Detector::Scrfd(d) => vec![d.model()],
            Detector::Mtcnn(d) => d.models(),
        }
    }

    /// Faces in `img`, best first, overlapping detections merged, at most [`MAX_FACES`], none
    /// smaller than [`MIN_FACE_PX`].
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>, RuntimeError> {
        let mut faces = match &self.inner {
            Detector::Scrfd(d) => d.detect(img)?,
            Detector::Mtcnn(d) => d.detect(img)?,
        };
        faces.retain(|f| {
            let ok = f.bbox.iter().chain(f.landmarks.iter().flatten()).all(|v| v.is_finite());
            ok && (f.bbox[2] - f.bbox[0]).min(f.bbox[3] - f.bbox[1]) >= MIN_FACE_PX
        });
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        faces.truncate(MAX_FACES);
        Ok(faces)
    }
}

/// Indices of the boxes kept by greedy non-maximum suppression, best score first. Overlap is
/// intersection over union, or over the smaller box (`min_mode`, MTCNN's last stage), with the
/// inclusive `+1` pixel areas both reference implementations use.
pub(crate) fn nms_keep(boxes: &[([f32; 4], f32)], threshold: f32, min_mode: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].1.total_cmp(&boxes[a].1));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = &boxes[i].0;
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let b = &boxes[j].0;
            let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
            let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
            let inter = iw * ih;
            let overlap = if min_mode { inter / area(a).min(area(b)) } else { inter / (area(a) + area(b) - inter) };
            if overlap > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

pub(crate) fn nms(faces: Vec<Face>, threshold: f32, min_mode: bool) -> Vec<Face> {
    let boxes: Vec<_> = faces.iter().map(|f| (f.bbox, f.score)).collect();
    nms_keep(&boxes, threshold, min_mode).into_iter().map(|i| faces[i].clone()).collect()
}

/// Maps input pixel centres onto output pixel centres when `output` is `input` upscaled by
/// `scale`: pixel x covers [x, x+1), so its centre x+0.5 lands on (x+0.5)*scale.
pub fn input_to_output(scale: f32) -> Affine {
    let t = 0.5 * (scale - 1.0);
    Affine([scale, 0.0, t, 0.0, scale, t])
}

/// Pastes a face restored from the crop `warp_to_face(input, input_to_face)` into `output`
/// (= `input` upscaled by `scale`), feathered over a tenth of the pasted square as facexlib
/// does; the face itself sits well inside the template's margins, so the blend stays in hair
/// and background.
pub fn paste_face(output: &mut RgbImage, restored: &RgbImage, input_to_face: &Affine, scale: f32) {
    let face_to_output = input_to_face.invert().then(&input_to_output(scale));
    let side = FACE_SIZE as f32 * face_to_output.scale_factor();
    paste_back(output, restored, &face_to_output, (side / 10.0).max(2.0));
}

/// Detects faces on `input` and restores them into `output` (= `input` upscaled by `scale`);
/// see [`restore_detected`]. Returns the number of faces found. This is the one face path:
/// the engine runs it after super-resolution.
pub fn restore_faces(
    detector: &FaceDetector,
    restorer: Option<&FaceRestorer>,
    input: &RgbImage,
    output: &mut RgbImage,
    scale: f32,
    cancelled: &dyn Fn() -> bool,
    on_face: impl FnMut(usize, usize),
) -> Result<usize, FaceError> {
    let faces = detector.detect(input)?;
    match restorer {
        Some(r) => restore_detected(&faces, r, input, output, scale, cancelled, on_face),
        None => Ok(faces.len()),
    }
}

/// For each face: align it from `input` onto the 512x512 template, restore it, and paste it
/// into `output` (= `input` upscaled by `scale`) with a feathered edge. `cancelled` is polled
/// before each face (a restoration is a full model run); `on_face(done, total)` is called
/// after each face. Without a restorer ([`restore_faces`] with `None`), faces are only
/// counted and `output` is untouched.
///
/// Each face is aligned from the input, never from `output`, so pasting one face cannot
/// change what the next one sees; only one restored face is held at a time.
pub fn restore_detected(
    faces: &[Face],
    restorer: &FaceRestorer,
    input: &RgbImage,
    output: &mut RgbImage,
    scale: f32,
    cancelled: &dyn Fn() -> bool,
    mut on_face: impl FnMut(usize, usize),
) -> Result<usize, FaceError> {
    let template = ffhq_template();
    for (i, face) in faces.iter().enumerate() {
        if cancelled() {
            return Err(FaceError::Cancelled);
        }
        let to_face = estimate_similarity(&face.landmarks, &template);
        let aligned = warp_to_face(input, &to_face);
        let restored = restorer.restore(&aligned)?;
        paste_face(output, &restored, &to_face, scale);
        on_face(i + 1, faces.len());
    }
    Ok(faces.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_kind_round_trips() {
        for k in [DetectorKind::Scrfd, DetectorKind::Mtcnn] {
            assert_eq!(k.as_str().parse::<DetectorKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(" MTCNN ".parse::<DetectorKind>().unwrap(), DetectorKind::Mtcnn);
        let err = "retinaface".parse::<DetectorKind>().unwrap_err().to_string();
        assert!(err.contains("retinaface") && err.contains("scrfd"), "{err}");
    }

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let boxes = [([0.0, 0.0, 10.0, 10.0], 0.8), ([1.0, 1.0, 11.0, 11.0], 0.9), ([50.0, 50.0, 60.0, 60.0], 0.7)];
        assert_eq!(nms_keep(&boxes, 0.4, false), vec![1, 2]);
        // A small box inside a big one: low IoU, but fully covered in min mode.
        let nested = [([0.0, 0.0, 100.0, 100.0], 0.9), ([10.0, 10.0, 20.0, 20.0], 0.8)];
        assert_eq!(nms_keep(&nested, 0.7, false), vec![0, 1]);
        assert_eq!(nms_keep(&nested, 0.7, true), vec![0]);
    }

    #[test]
    fn input_to_output_maps_pixel_areas() {
        let a = input_to_output(4.0);
        // Input pixel 0 covers output pixels 0..4, whose centre is 1.5.
        assert_eq!(a.apply([0.0, 0.0]), [1.5, 1.5]);
        // Pixel edges map to pixel edges: 10 input pixels span 40 output pixels.
        assert_eq!(a.apply([-0.5, 9.5]), [-0.5, 39.5]);
    }
}
