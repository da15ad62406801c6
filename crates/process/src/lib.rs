//! What every Purrify binary does as a process, written once: logs on stderr in text or JSON
//! with `RUST_LOG` overriding the default filter, and the signals that start a graceful
//! shutdown (SIGTERM, which Kubernetes sends before killing a pod, and SIGINT).

/// Log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber: `RUST_LOG` when set, else `default_filter`. A second call
/// (tests start servers in one process) keeps the first subscriber.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Resolves on the first SIGINT or SIGTERM. When a handler cannot be installed that signal
/// is simply not waited for (the other still is).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sigterm_ends_the_wait() {
        // Registered first, so from here on a SIGTERM reaches tokio's listeners instead of
        // killing the test process.
        let _listener = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let waiting = tokio::spawn(shutdown_signal());
        // The waiter registers on its first poll; signal until it has seen one.
        for _ in 0..200 {
            if waiting.is_finished() {
                break;
            }
            let sent = std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status();
            assert!(sent.is_ok_and(|s| s.success()), "kill -TERM self");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(waiting.is_finished(), "shutdown_signal resolves on SIGTERM");
    }
}
