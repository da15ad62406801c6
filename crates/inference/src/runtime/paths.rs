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

/// Candidates for `provider`. OpenVINO needs the ONNX Runtime build from the
/// `onnxruntime-openvino` wheel (`onnxruntime-openvino/` in the cache, or `lib/openvino/` beside
/// the binary); `ORT_DYLIB_PATH` still wins, since an image decides which build it ships. The
/// standard candidates follow, so a missing OpenVINO build degrades to the CPU provider.
pub fn ort_library_candidates_for(provider: super::Provider) -> Vec<PathBuf> {
    let mut out = ort_library_candidates();
    if provider == super::Provider::OpenVino {
        let explicit = usize::from(std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()));
        let mut openvino = vec![cache_root().join("onnxruntime-openvino").join(ORT_LIB_NAME)];
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            openvino.push(dir.join("lib").join("openvino").join(ORT_LIB_NAME));
        }
        out.splice(explicit..explicit, openvino);
    }
    out
}

/// The first existing candidate for `provider`, and whether it is the build that provider
/// asked for (false: an OpenVINO request found only the standard build).
pub fn find_ort_library_for(provider: super::Provider) -> Option<(PathBuf, bool)> {
    let found = ort_library_candidates_for(provider).into_iter().find(|p| p.exists())?;
    let matches = provider != super::Provider::OpenVino
        || std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty())
        || found.parent().is_some_and(|d| d.ends_with("onnxruntime-openvino") || d.ends_with("openvino"));
    Some((found, matches))
}

#[cfg(target_os = "macos")]
pub const ORT_LIB_NAME: &str = "libonnxruntime.dylib";
#[cfg(not(target_os = "macos"))]
pub const ORT_LIB_NAME: &str = "libonnxruntime.so";

/// The first existing candidate, if any.
pub fn find_ort_library() -> Option<PathBuf> {
    ort_library_candidates().into_iter().find(|p| p.exists())
}
