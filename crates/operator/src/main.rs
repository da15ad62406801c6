use std::process::ExitCode;

fn main() -> ExitCode {
    match purrify_operator::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain: scripts and people both read it.
            eprintln!("purrify-operator: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
