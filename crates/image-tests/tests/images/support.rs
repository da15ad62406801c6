//! What both suites share: podman with the project's CONTAINERS_CONF, the images `make
//! images` builds, the checks every container passes (non-root, a clean stop on SIGTERM), and
//! an S3 server (s3s-fs) on the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn podman_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("podman");
    cmd.env("CONTAINERS_CONF", root().join("tools/images/containers.conf")).args(args);
    cmd
}

pub fn run(args: &[&str]) -> Output {
    podman_cmd(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman ({e}): `make images` installs it (podman, buildah, runc from Debian's packages)"))
}

/// Runs podman and returns its trimmed stdout; panics with its stderr when it fails.
pub fn podman(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "podman {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `make images`, once per test run: it builds the images when missing and rebuilds them
/// from the binaries this test run was built with (a few seconds when nothing changed), so the
/// containers never run stale binaries. Without podman it installs it; nothing is skipped.
pub fn ensure_images() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let start = Instant::now();
        let st = Command::new("make").arg("images").current_dir(root()).status().expect("cannot run make");
        assert!(st.success(), "`make images` failed");
        eprintln!("make images: {:?}", start.elapsed());
    });
    for i in ["gateway", "operator", "inference"] {
        assert!(run(&["image", "exists", &format!("purrify-{i}:{VERSION}")]).status.success(), "purrify-{i}:{VERSION} missing");
    }
}

/// One scenario at a time: CI has 2 cores, and each runs three containers.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `podman logs` of `containers`, for failure messages.
pub fn logs_of(containers: &[String]) -> String {
    containers
        .iter()
        .map(|c| {
            let out = run(&["logs", "--tail", "60", c]);
            format!("--- {c} ---\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every process of the container runs as UID 10001, in the container and on the host.
pub fn assert_non_root(container: &str) {
    assert_eq!(podman(&["inspect", "-f", "{{.Config.User}}", container]), "10001:10001", "{container}");
    let top = podman(&["top", container, "user", "huser", "comm"]);
    let procs: Vec<&str> = top.lines().skip(1).collect();
    assert!(!procs.is_empty(), "{container}: no processes\n{top}");
    for line in procs {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 2 && cols[0] != "root" && cols[1] == "10001", "{container} runs as {line}\n{top}");
    }
}

/// `podman stop` (SIGTERM, then SIGKILL after `grace_secs`), timed: the container must exit
/// by itself (code 0, not the 137 of the SIGKILL) within the grace period.
pub fn stop_within(container: &str, grace_secs: u64) -> Duration {
    let start = Instant::now();
    podman(&["stop", "--time", &grace_secs.to_string(), container]);
    let took = start.elapsed();
    let code = podman(&["inspect", "-f", "{{.State.ExitCode}}", container]);
    assert_eq!(code, "0", "{container} did not exit cleanly on SIGTERM (took {took:?})");
    assert!(took < Duration::from_secs(grace_secs), "{container} took {took:?} to stop (grace {grace_secs} s)");
    took
}

pub const S3_KEY: &str = "purrify-image-test";
pub const S3_SECRET: &str = "purrify-image-test-secret";
pub const S3_BUCKET: &str = "photos";

/// s3s-fs over `dir` with one bucket `S3_BUCKET`, on an ephemeral port of every host address
/// (containers reach it through their network's gateway or the host's loopback); the port.
pub async fn s3_server(dir: &Path) -> u16 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    std::fs::create_dir_all(dir.join(S3_BUCKET)).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(dir).unwrap());
    b.set_auth(s3s::auth::SimpleAuth::from_single(S3_KEY, S3_SECRET));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let service = service.clone();
            tokio::spawn(async move {
                let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = conn.serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    port
}

/// The files under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

pub fn purrify_cache() -> PathBuf {
    std::env::var_os("PURRIFY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/purrify"))
}
