use std::process::ExitCode;

fn main() -> ExitCode {
    purrify_inference::cli::install_panic_hook();
    match purrify_inference::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whole cause chain: scripts and people both read it.
            eprintln!("purrify-inference: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
