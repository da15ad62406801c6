//! Writes the project's CRDs to `crds/` (or the directory given), one YAML file each.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("crds"));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("purrify-crdgen: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, yaml) in purrify_api::crd_files() {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, yaml) {
            eprintln!("purrify-crdgen: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
