#[tokio::main]
async fn main() -> std::process::ExitCode {
    match kubesim::run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("purrify-kubesim: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
