//! The cache directory shared by `tools/models/fetch.py`, the engine and the gateway:
//! `PURRIFY_CACHE`, else `$XDG_CACHE_HOME/purrify`, else `~/.cache/purrify`.

use std::path::{Path, PathBuf};

pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("PURRIFY_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("purrify")
}
