#![cfg(feature = "engine")]
//! Asking for OpenVINO with ONNX Runtime's standard build (what a worker image without the
//! OpenVINO build has) runs on the CPU provider, with the reason recorded, instead of failing.
//! Its own test binary: a process loads one ONNX Runtime library, and this one loads the
//! standard build.

mod common;

use common::*;
use purrify_inference::runtime::{Provider, Runtime, RuntimeConfig, paths};

#[test]
fn openvino_falls_back_to_cpu_on_the_standard_build() {
    require_models();
    let standard = paths::cache_root().join("onnxruntime").join(paths::ORT_LIB_NAME);
    let rt = Runtime::new(RuntimeConfig {
        provider: Provider::OpenVino,
        intra_threads: 2,
        library: Some(standard.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(rt.library(), standard);
    let m = rt.load("fallback", &paths::models_dir().join("realesr-animevideov3-x2.onnx")).unwrap();
    let sel = m.selection();
    assert_eq!(sel.requested, Provider::OpenVino);
    assert_eq!(sel.active, Provider::Cpu);
    assert_eq!(sel.registered, [Provider::Cpu]);
    assert_eq!(sel.skipped.len(), 1);
    assert_eq!(sel.skipped[0].0, Provider::OpenVino);
    assert!(!sel.skipped[0].1.is_empty(), "the reason is kept for the warning and /v1/info");
    eprintln!("skipped: {:?}", sel.skipped);
    let out = m.run(ndarray::Array4::<f32>::zeros((1, 3, 16, 16)).view()).unwrap();
    assert_eq!(out.shape(), [1, 3, 32, 32], "and the model still runs");
}
