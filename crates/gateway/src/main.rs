use std::process::ExitCode;

fn main() -> ExitCode {
    match purrify_gateway::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("purrify-gateway: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
