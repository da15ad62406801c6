#![cfg(feature = "engine")]
//! The OpenVINO execution provider, with ONNX Runtime's OpenVINO build from `make models`.
//! Its own test binary: a process loads one ONNX Runtime library, and this one loads that
//! build (`openvino_fallback.rs` loads the standard one).

mod common;

use common::*;
use ndarray::Array4;
use purrify_inference::runtime::{Provider, Runtime, RuntimeConfig, paths};

fn planar(img: &image::RgbImage) -> Array4<f32> {
    let (w, h) = img.dimensions();
    Array4::from_shape_fn((1, 3, h as usize, w as usize), |(_, c, y, x)| f32::from(img.get_pixel(x as u32, y as u32)[c]) / 255.0)
}

#[test]
fn openvino_runs_the_models_and_agrees_with_the_cpu_provider() {
    require_models();
    let library = paths::cache_root().join("onnxruntime-openvino").join(paths::ORT_LIB_NAME);
    assert!(library.exists(), "{} is missing: run `make models`", library.display());
    let rt = Runtime::new(RuntimeConfig { intra_threads: 2, ..Default::default() }).unwrap();
    assert_eq!(rt.config().provider, Provider::OpenVino, "the default provider");
    assert_eq!(rt.library(), library, "an OpenVINO request loads the OpenVINO build");

    let input = planar(&crop(&photo("coffee.png"), 200, 100, 64, 48));
    for name in ["realesr-animevideov3-x2", "realesrgan-x4plus"] {
        let file = paths::models_dir().join(format!("{name}.onnx"));
        let ov = rt.load(name, &file).unwrap();
        assert_eq!(ov.selection().active, Provider::OpenVino, "{name}: {:?}", ov.selection().skipped);
        assert_eq!(ov.selection().registered, [Provider::OpenVino, Provider::Cpu]);
        let cpu_rt = Runtime::new(RuntimeConfig { provider: Provider::Cpu, intra_threads: 2, ..Default::default() }).unwrap();
        let cpu = cpu_rt.load(name, &file).unwrap();
        assert_eq!(cpu.selection().active, Provider::Cpu);

        let a = ov.run(input.view()).unwrap();
        let b = cpu.run(input.view()).unwrap();
        assert_eq!(a.shape(), b.shape());
        let mse =
            a.iter().zip(b.iter()).map(|(x, y)| f64::from(x.clamp(0.0, 1.0) - y.clamp(0.0, 1.0)).powi(2)).sum::<f64>() / a.len() as f64;
        let psnr = 10.0 * (1.0 / mse.max(1e-12)).log10();
        let max = a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        eprintln!("{name}: OpenVINO vs CPU provider PSNR {psnr:.1} dB, max |difference| {max:e}");
        // Different kernels, same fp32 arithmetic: far beyond anything visible (40 dB).
        assert!(psnr > 60.0, "{name}: OpenVINO differs from the CPU provider, PSNR {psnr:.1} dB");
    }
}
