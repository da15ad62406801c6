//! Test support shared by the crates' tests: the project's binaries as processes (here),
//! and, behind features, kubesim clients, a fake inference worker, the gateway's API and
//! local fakes of WeChat's login and WeChat Pay.

#[cfg(feature = "kube")]
pub mod cluster;
#[cfg(feature = "fake-worker")]
pub mod fake_worker;
#[cfg(feature = "gateway-client")]
pub mod gateway_client;
#[cfg(feature = "providers")]
pub mod providers;
#[cfg(feature = "wechat")]
pub mod wechat;
#[cfg(feature = "wechatpay")]
pub mod wechatpay;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process, SIGKILLed when dropped, so a failing test leaves nothing running. Its
/// stderr goes to a log file that failing tests print.
pub struct Proc {
    child: Option<Child>,
    pub name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` with stdout discarded and stderr logged to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], envs: &[(&str, &Path)], log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let mut cmd = Command::new(program);
        cmd.args(args).env("RUST_LOG", "info").stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Proc { child: Some(child), name: name.into(), log }
    }

    /// Wraps an already started child (e.g. one whose stdout the test reads).
    pub fn adopt(name: &str, child: Child, log: PathBuf) -> Proc {
        Proc { child: Some(child), name: name.into(), log }
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A workspace binary next to the running test (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    // target/<profile>/deps/<test binary> -> target/<profile>/<name>
    let p = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name);
    assert!(p.exists(), "{} is missing: `cargo test --workspace --no-run` builds it (make test does)", p.display());
    p
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `secs` seconds.
/// The bound only keeps a broken test from hanging: nothing asserts on how fast a condition
/// is reached through this.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < give_up, "gave up after {secs} s waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The kubectl tests run: `$KUBECTL`, else `kubectl` on `PATH`. Missing is a failure, not a
/// skip: every machine of this kind has it.
pub fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECTL") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl is not on PATH: these tests run the real client (set KUBECTL to use another one)")
}
