use std::process::ExitCode;

fn main() -> ExitCode {
    match purrify_inference::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whole cause chain: scripts and people both read it.
            eprintln!("purrify-inference: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
