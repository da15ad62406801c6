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
    init_tracing_with(format, default_filter, tracing_subscriber::layer::Identity::new());
}

/// [`init_tracing`] with one more layer beside the stderr output (the gateway's capture of its
/// own events into the database). The filter applies to both.
pub fn init_tracing_with<L>(format: LogFormat, default_filter: &str, layer: L)
where
    L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let output = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Json => tracing_subscriber::Layer::boxed(output.json()),
        LogFormat::Text => tracing_subscriber::Layer::boxed(output),
    };
    let _ = tracing_subscriber::registry().with(layer).with(output).with(filter).try_init();
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
