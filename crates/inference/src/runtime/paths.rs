//! Where the runtime library and models live when nobody says otherwise.
//!
//! The same rule as `tools/models/fetch.py`, so `make models` followed by the CLI needs no
//! extra environment: `PURRIFY_CACHE`, else `$XDG_CACHE_HOME/purrify`, else `~/.cache/purrify`.

use std::path::PathBuf;

pub use crate::cache::cache_root;

/// Directory holding `*.onnx` models (`PURRIFY_MODELS_DIR` overrides).
pub fn models_dir() -> PathBuf {
    std::env::var_os("PURRIFY_MODELS_DIR").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| cache_root().join("models"))
}

/// Candidate locations of `libonnxruntime.so`, most specific first: `ORT_DYLIB_PATH` (what
/// container images set), the cache filled by `make models`, then `lib/` beside the binary.
pub fn ort_library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push(PathBuf::from(p));
    }
    out.push(cache_root().join("onnxruntime").join(ORT_LIB_NAME));
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        out.push(dir.join("lib").join(ORT_LIB_NAME));
    }
    out
}

#[cfg(target_os = "macos")]
pub const ORT_LIB_NAME: &str = "libonnxruntime.dylib";
#[cfg(not(target_os = "macos"))]
pub const ORT_LIB_NAME: &str = "libonnxruntime.so";

/// The first existing candidate, if any.
pub fn find_ort_library() -> Option<PathBuf> {
    ort_library_candidates().into_iter().find(|p| p.exists())
}
