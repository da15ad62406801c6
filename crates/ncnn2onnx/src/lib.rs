//! Converts ncnn models (`.param` text graph + `.bin` weights) to ONNX.
//!
//! Covers the layers the Real-ESRGAN ncnn graphs use (Input, Convolution with fused
//! activations, ConvolutionDepthWise, Split, Concat, Eltwise, BinaryOp, Interp, PReLU,
//! PixelShuffle) plus a few trivial ones. ncnn blobs have no batch axis; the ONNX graph
//! adds a leading batch of 1, so ncnn's `[C,H,W]` becomes `[1,C,H,W]`.
//!
//! The sole graph input is named `input` and the sole graph output `output`, whatever the
//! ncnn blob names were; spatial dimensions are symbolic. Weights become float32
//! initializers.

mod convert;
pub mod onnx;
mod param;
mod weights;

use std::path::{Path, PathBuf};

pub use convert::{ConvertSummary, convert, convert_with_summary};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(".param line {line}: {msg}")]
    Param { line: usize, msg: String },
    #[error("layer `{layer}` (.param line {line}) has type `{kind}`, which this converter does not support")]
    UnsupportedLayer { layer: String, kind: String, line: usize },
    #[error("layer `{layer}` ({kind}, .param line {line}): {msg}")]
    Layer { layer: String, kind: String, line: usize, msg: String },
    #[error(".bin is truncated: {blob} of layer `{layer}` needs {needed} more bytes at offset {offset}, but the file has {len} bytes")]
    TruncatedBin { layer: String, blob: String, offset: usize, needed: usize, len: usize },
    #[error(".bin: {blob} of layer `{layer}` at offset {offset}: {what}")]
    UnsupportedWeights { layer: String, blob: String, offset: usize, what: String },
    #[error(".bin has {extra} bytes left after the last layer's weights (of {len}); the .param and .bin do not belong together")]
    TrailingBin { extra: usize, len: usize },
    #[error("graph: {0}")]
    Graph(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Converts the files at `param` and `bin` and writes the model to `out` atomically: the
/// bytes go to a temporary sibling first, so readers never see a half-written model.
pub fn convert_files(param: &Path, bin: &Path, out: &Path) -> Result<ConvertSummary, ConvertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    let param_text = std::fs::read_to_string(param).map_err(io(param))?;
    let bin_bytes = std::fs::read(bin).map_err(io(bin))?;
    let (bytes, summary) = convert_with_summary(&param_text, &bin_bytes)?;

    let file_name = out.file_name().ok_or_else(|| ConvertError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "output path has no file name"),
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = out.with_file_name(tmp_name);
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, out));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(ConvertError::Io { path: out.to_path_buf(), source });
    }
    Ok(summary)
}
