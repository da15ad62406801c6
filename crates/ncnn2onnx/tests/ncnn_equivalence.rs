//! The converted models must compute what ncnn computes: every output element within 1e-4.
//!
//! ncnn itself runs through tools/models/ncnn_reference.py (PyPI `ncnn`, CPU, fp32); the
//! ONNX side runs in ONNX Runtime from the project cache. Inputs are real photo crops with
//! odd, non-square sizes so that H/W mix-ups and border handling show up. Missing cache
//! content fails the test (run `make models`) rather than skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail, ensure};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

const TOLERANCE: f32 = 1e-4;

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PURRIFY_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("purrify");
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    PathBuf::from(home).join(".cache/purrify")
}

/// Fails loudly when a cached artefact is missing: this test proves the converter, so it
/// must never pass vacuously.
fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run `make models` (fetches models/photos/ONNX Runtime and creates the Python venv via tools/python/venv.sh)",
        path.display()
    );
    path
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ort_env() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = require(cache_dir().join("onnxruntime/libonnxruntime.so"));
        ort::init_from(&lib)
            .unwrap_or_else(|e| panic!("loading {}: {e}", lib.display()))
            .with_name("ncnn2onnx-tests")
            .build()
            .unwrap_or_else(|e| panic!("creating the ONNX Runtime environment: {e}"))
    })
}

/// A float32 tensor in NCHW layout with batch 1.
struct Image {
    shape: [usize; 4],
    data: Vec<f32>,
}

/// An RGB crop of a cached photo, scaled to [0, 1].
fn photo_crop(photo: &str, x: u32, y: u32, w: u32, h: u32) -> Image {
    let path = require(cache_dir().join("photos").join(photo));
    let img = image::open(&path).unwrap_or_else(|e| panic!("decoding {}: {e}", path.display())).to_rgb8();
    assert!(x + w <= img.width() && y + h <= img.height(), "crop outside {photo}");
    let (w, h) = (w as usize, h as usize);
    let mut data = vec![0.0; 3 * h * w];
    for yy in 0..h {
        for xx in 0..w {
            let px = img.get_pixel(x + xx as u32, y + yy as u32);
            for c in 0..3 {
                data[(c * h + yy) * w + xx] = f32::from(px[c]) / 255.0;
            }
        }
    }
    Image { shape: [1, 3, h, w], data }
}

fn run_onnx(model: &[u8], input: &Image) -> Result<Image> {
    let mut session = Session::builder(ort_env())
        .map_err(|e| anyhow!("{e}"))?
        .commit_from_memory(model)
        .map_err(|e| anyhow!("loading the converted model into ONNX Runtime: {e}"))?;
    let tensor = Tensor::from_array((input.shape, input.data.clone())).map_err(|e| anyhow!("{e}"))?;
    let outputs = session.run(ort::inputs!["input" => tensor]).map_err(|e| anyhow!("running the converted model: {e}"))?;
    let (shape, data) = outputs["output"].try_extract_tensor::<f32>().map_err(|e| anyhow!("{e}"))?;
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let shape: [usize; 4] = dims.as_slice().try_into().map_err(|_| anyhow!("ONNX output has shape {dims:?}"))?;
    Ok(Image { shape, data: data.to_vec() })
}

fn run_ncnn(param: &Path, bin: &Path, input: &Image, work: &Path) -> Result<Image> {
    let python = require(cache_dir().join("venv/bin/python"));
    let script = require(repo_root().join("tools/models/ncnn_reference.py"));
    let in_path = work.join("input.f32");
    let out_path = work.join("ncnn_output.f32");
    std::fs::write(&in_path, input.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())?;
    let shape = input.shape.map(|d| d.to_string()).join(",");
    let run = Command::new(&python)
        .arg(&script)
        .args([param, bin, &in_path, &out_path])
        .args(["--shape", &shape])
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    ensure!(
        run.status.success(),
        "ncnn reference failed ({}); if `import ncnn` failed, run `make models`:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let sidecar: serde_json::Value = serde_json::from_slice(&std::fs::read(out_path.with_extension("f32.json"))?)?;
    let dims: Vec<usize> = sidecar["shape"]
        .as_array()
        .context("sidecar has no shape")?
        .iter()
        .map(|d| d.as_u64().map(|d| d as usize).context("bad dim"))
        .collect::<Result<_>>()?;
    let shape: [usize; 4] = dims.as_slice().try_into().map_err(|_| anyhow!("ncnn output has shape {dims:?}"))?;
    let bytes = std::fs::read(&out_path)?;
    let data: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    ensure!(data.len() == shape.iter().product::<usize>(), "ncnn output size does not match its shape {shape:?}");
    Ok(Image { shape, data })
}

fn max_abs_diff(onnx: &Image, ncnn: &Image) -> Result<f32> {
    ensure!(onnx.shape == ncnn.shape, "output shapes differ: ONNX {:?} vs ncnn {:?}", onnx.shape, ncnn.shape);
    let mut max = 0.0f32;
    for (i, (a, b)) in onnx.data.iter().zip(&ncnn.data).enumerate() {
        if !a.is_finite() || !b.is_finite() {
            bail!("non-finite output at element {i}: ONNX {a}, ncnn {b}");
        }
        max = max.max((a - b).abs());
    }
    Ok(max)
}

/// Converts one cached model, runs both engines on `input`, and checks the scale.
fn check_model(model: &str, input: Image, scale: usize) -> Result<()> {
    let dir = require(cache_dir().join("models/ncnn"));
    let param = require(dir.join(format!("{model}.param")));
    let bin = require(dir.join(format!("{model}.bin")));
    let work = tempfile::tempdir()?;
    let onnx_path = work.path().join(format!("{model}.onnx"));
    purrify_ncnn2onnx::convert_files(&param, &bin, &onnx_path)?;
    let onnx_bytes = std::fs::read(&onnx_path)?;

    let [_, _, h, w] = input.shape;
    let onnx = run_onnx(&onnx_bytes, &input)?;
    assert_eq!(onnx.shape, [1, 3, h * scale, w * scale], "{model}: ONNX output shape");
    let ncnn = run_ncnn(&param, &bin, &input, work.path())?;
    let diff = max_abs_diff(&onnx, &ncnn)?;
    // The nocapture-visible line is the measurement this test exists to report.
    println!("{model}: input {h}x{w}, output {:?}, max |onnx - ncnn| = {diff:.3e}", onnx.shape);
    ensure!(diff <= TOLERANCE, "{model}: max abs diff {diff:e} exceeds {TOLERANCE:e}");
    Ok(())
}

#[test]
fn animevideov3_x2_matches_ncnn() -> Result<()> {
    check_model("realesr-animevideov3-x2", photo_crop("astronaut.png", 180, 80, 46, 38), 2)
}

#[test]
fn animevideov3_x3_matches_ncnn() -> Result<()> {
    check_model("realesr-animevideov3-x3", photo_crop("coffee.png", 330, 120, 34, 40), 3)
}

#[test]
fn animevideov3_x4_matches_ncnn() -> Result<()> {
    check_model("realesr-animevideov3-x4", photo_crop("coffee.png", 200, 150, 44, 36), 4)
}

#[test]
fn realesrgan_x4plus_matches_ncnn() -> Result<()> {
    check_model("realesrgan-x4plus", photo_crop("astronaut.png", 210, 100, 36, 32), 4)
}

/// Deterministic pseudo-random numbers (xorshift64*) for synthetic weights.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// Uniform in [-amp, amp).
    fn uniform(&mut self, amp: f32) -> f32 {
        (self.next_u32() as f32 / 4_294_967_296.0 * 2.0 - 1.0) * amp
    }

    /// A random binary16 with magnitude in [2^-6, 2^-1): the fp16 path of the .bin.
    fn half_bits(&mut self) -> u16 {
        let r = self.next_u32();
        let sign = ((r >> 31) as u16) << 15;
        let exp = 9 + (r >> 10) % 5; // biased exponents 9..=13
        sign | ((exp as u16) << 10) | (r & 0x3ff) as u16
    }
}

/// Builds an ncnn model layer by layer, writing weights the way ncnn's `load_model` reads
/// them: typed blobs (tag + data) for kernels, bare float32 for biases and slopes.
struct Synth {
    lines: Vec<String>,
    bin: Vec<u8>,
    rng: Rng,
    blobs: usize,
}

impl Synth {
    fn layer(&mut self, kind: &str, name: &str, inputs: &[&str], outputs: &[&str], params: &str) {
        self.blobs += outputs.len();
        self.lines.push(format!("{kind} {name} {} {} {} {} {params}", inputs.len(), outputs.len(), inputs.join(" "), outputs.join(" ")));
    }

    fn fp16_weights(&mut self, n: usize) {
        self.bin.extend(0x0130_6B47u32.to_le_bytes());
        for _ in 0..n {
            let h = self.rng.half_bits();
            self.bin.extend(h.to_le_bytes());
        }
        if n % 2 == 1 {
            self.bin.extend([0, 0]);
        }
    }

    fn fp32_weights(&mut self, n: usize, amp: f32) {
        self.bin.extend(0u32.to_le_bytes());
        self.raw(n, amp);
    }

    fn raw(&mut self, n: usize, amp: f32) {
        for _ in 0..n {
            let v = self.rng.uniform(amp);
            self.bin.extend(v.to_le_bytes());
        }
    }

    fn param_text(&self) -> String {
        format!("7767517\n{} {}\n{}\n", self.lines.len(), self.blobs, self.lines.join("\n"))
    }
}

/// Every layer type and parameter form the converter supports that the Real-ESRGAN graphs
/// do not exercise (other activations, padding forms, Eltwise/BinaryOp variants, both
/// PixelShuffle modes, bilinear/bicubic resizes with non-integral ratios, fixed-size
/// resize), checked against ncnn on a real photo crop.
#[test]
fn synthetic_layer_zoo_matches_ncnn() -> Result<()> {
    let mut s = Synth { lines: Vec::new(), bin: Vec::new(), rng: Rng(0x9E37_79B9_7F4A_7C15), blobs: 0 };
    s.layer("Input", "in", &[], &["data"], "");
    s.layer("Split", "split_data", &["data"], &["d0", "d1", "d2", "d3"], "");
    s.layer("Convolution", "conv_leaky", &["d0"], &["a"], "0=8 1=3 4=1 5=1 6=216 9=2 -23310=1,1.000000e-01");
    s.fp16_weights(216);
    s.raw(8, 0.1);
    // 3x1 kernel, padding only left/right.
    s.layer("Convolution", "conv_clip", &["d1"], &["b"], "0=8 1=3 11=1 4=1 14=0 5=1 6=72 9=3 -23310=2,-2.000000e-01,3.000000e-01");
    s.fp32_weights(72, 0.5);
    s.raw(8, 0.1);
    s.layer("Convolution", "conv_sigmoid", &["d2"], &["e"], "0=8 1=1 5=0 6=24 9=4");
    s.fp32_weights(24, 1.0);
    // Border filled with 0.5 instead of zeros, then hard-swish.
    s.layer("Convolution", "conv_hswish", &["d3"], &["f"], "0=8 1=3 4=1 18=5.000000e-01 5=1 6=216 9=6 -23310=2,2.000000e-01,5.000000e-01");
    s.fp16_weights(216);
    s.raw(8, 0.1);
    s.layer("Split", "split_a", &["a"], &["a0", "a1"], "");
    s.layer("ConvolutionDepthWise", "dw_mish", &["a0"], &["c"], "0=8 1=3 4=-233 5=1 6=72 7=8 9=5");
    s.fp16_weights(72);
    s.raw(8, 0.1);
    s.layer("Split", "split_e", &["e"], &["e0", "e1"], "");
    s.layer("Split", "split_f", &["f"], &["f0", "f1"], "");
    s.layer("Eltwise", "sum3", &["b", "c", "e0"], &["s1"], "0=1 -23301=3,5.000000e-01,-1.000000e+00,2.000000e+00");
    s.layer("Eltwise", "prod", &["a1", "f0"], &["s2"], "0=0");
    s.layer("Eltwise", "max", &["s1", "s2"], &["s3"], "0=2");
    s.layer("BinaryOp", "rsub_scalar", &["s3"], &["t1"], "0=7 1=1 2=1.500000e+00");
    // Denominator kept in (1, 2) so that float rounding is not amplified.
    s.layer("BinaryOp", "add_scalar", &["e1"], &["e2"], "0=0 1=1 2=1.000000e+00");
    s.layer("BinaryOp", "rdiv", &["e2", "t1"], &["t2"], "0=8");
    s.layer("BinaryOp", "max_scalar", &["t2"], &["t3"], "0=4 1=1 2=-5.000000e-01");
    s.layer("BinaryOp", "sub", &["t3", "f1"], &["t4"], "0=1");
    s.layer("PReLU", "prelu8", &["t4"], &["p1"], "0=8");
    s.raw(8, 0.5);
    s.layer("PReLU", "prelu1", &["p1"], &["p2"], "0=1");
    s.raw(1, 0.5);
    s.layer("Split", "split_p", &["p2"], &["p20", "p21"], "");
    s.layer("Concat", "concat", &["p20", "p21"], &["cat"], "0=0");
    s.layer("Split", "split_cat", &["cat"], &["cat0", "cat1"], "");
    s.layer("PixelShuffle", "ps_crd", &["cat0"], &["ps0"], "0=2");
    s.layer("PixelShuffle", "ps_dcr", &["cat1"], &["ps1"], "0=2 1=1");
    s.layer("BinaryOp", "mul", &["ps0", "ps1"], &["m"], "0=2");
    s.layer("Interp", "bilinear", &["m"], &["r1"], "0=2 1=7.000000e-01 2=5.500000e-01");
    s.layer("Interp", "bicubic", &["r1"], &["r2"], "0=3 1=1.500000e+00 2=1.300000e+00");
    s.layer("Interp", "nearest", &["r2"], &["r3"], "0=1 1=2.000000e+00 2=3.000000e+00");
    s.layer("Interp", "fixed_aligned", &["r3"], &["r4"], "0=2 3=23 4=29 6=1");
    s.layer("Interp", "nearest_fractional", &["r4"], &["r5"], "0=1 1=1.700000e+00 2=6.000000e-01");
    s.layer("Interp", "fixed_bicubic", &["r5"], &["r6"], "0=3 3=31 4=13");
    s.layer("Interp", "fixed_nearest", &["r6"], &["r7"], "0=1 3=24 4=31");
    s.layer("Convolution", "conv_stride2", &["r7"], &["output"], "0=3 1=3 3=2 4=1 5=1 6=108");
    s.fp32_weights(108, 0.5);
    s.raw(3, 0.1);

    let work = tempfile::tempdir()?;
    let param = work.path().join("zoo.param");
    let bin = work.path().join("zoo.bin");
    std::fs::write(&param, s.param_text())?;
    std::fs::write(&bin, &s.bin)?;
    let onnx_bytes = purrify_ncnn2onnx::convert(&s.param_text(), &s.bin)?;

    let input = photo_crop("chelsea.png", 140, 60, 18, 13);
    let onnx = run_onnx(&onnx_bytes, &input)?;
    let ncnn = run_ncnn(&param, &bin, &input, work.path())?;
    let diff = max_abs_diff(&onnx, &ncnn)?;
    let peak = ncnn.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    println!("synthetic layer zoo: output {:?}, max |ncnn| = {peak:.3}, max |onnx - ncnn| = {diff:.3e}", onnx.shape);
    ensure!(peak > 0.05, "synthetic output is nearly zero, so the comparison would prove little");
    ensure!(diff <= TOLERANCE, "synthetic graph: max abs diff {diff:e} exceeds {TOLERANCE:e}");
    Ok(())
}
