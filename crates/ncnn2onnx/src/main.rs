use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Converts an ncnn model (.param + .bin) to ONNX (opset 17, float32, input `input`
/// [1,C,H,W], output `output`).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// ncnn text graph (.param)
    param: PathBuf,
    /// ncnn weights (.bin)
    bin: PathBuf,
    /// ONNX model to write (replaced atomically)
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match purrify_ncnn2onnx::convert_files(&args.param, &args.bin, &args.out) {
        Ok(s) => {
            eprintln!(
                "{} -> {}: {} ncnn layers, {} ONNX nodes, {} weights, {} bytes; {} -> {}",
                args.param.display(),
                args.out.display(),
                s.ncnn_layers,
                s.onnx_nodes,
                s.weights,
                s.model_bytes,
                s.inputs.join(","),
                s.outputs.join(","),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("purrify-ncnn2onnx: {e}");
            ExitCode::FAILURE
        }
    }
}
