//! The real `kubectl` against a kubesim process, as a person would run them: the binary
//! started with `serve --kubeconfig`, kubectl given `KUBECONFIG`, a `HOME` of its own (so
//! its discovery and OpenAPI caches start empty) and the workspace root as working
//! directory (so `-f crds/` means the project's CRDs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub use purrify_testkit::kubectl_path;

/// The workspace root, where `crds/`, `deploy/` and `examples/` are.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

pub struct Cluster {
    child: Child,
    pub addr: String,
    pub kubeconfig: PathBuf,
    pub home: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `purrify-kubesim serve --addr 127.0.0.1:0 --kubeconfig DIR/kubeconfig`.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut child = Command::new(env!("CARGO_BIN_EXE_purrify-kubesim"))
            .args(["serve", "--addr", "127.0.0.1:0", "--kubeconfig"])
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubesim starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("address line");
        let addr = line.trim().strip_prefix("listening on ").expect("listening on ADDR").to_string();
        Cluster { child, addr, kubeconfig, home, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `kubectl ARGS` and returns its output, whatever its exit status.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(&kubectl_path(), args, stdin)
    }

    /// `run` with another kubectl binary.
    pub fn run_using(&self, kubectl: &Path, args: &[&str]) -> Output {
        self.run_with(kubectl, args, None)
    }

    /// `ok` with another kubectl binary.
    pub fn ok_using(&self, kubectl: &Path, args: &[&str]) -> String {
        let out = self.run_with(kubectl, args, None);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "{} {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
            kubectl.display(),
            args.join(" "),
            out.status
        );
        stdout.into_owned()
    }

    fn run_with(&self, kubectl: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(kubectl);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .current_dir(workspace_root())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl runs");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("stdin written");
        }
        child.wait_with_output().expect("kubectl finishes")
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, None)
    }

    pub fn ok_with_input(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kubectl {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}", args.join(" "), out.status);
        stdout.into_owned()
    }

    /// `kubectl ARGS`, which must fail; its stderr.
    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "kubectl {} should have failed:\nstdout:\n{stdout}\nstderr:\n{stderr}", args.join(" "));
        stderr.into_owned()
    }

    /// `kubectl ARGS -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whitespace-separated cells of each line of a `kubectl get` table.
pub fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

/// The documents of a YAML file of the workspace (`deploy/operator-rbac.yaml`).
pub fn yaml_docs(rel: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(workspace_root().join(rel)).expect("yaml file");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("yaml parses"))
        .filter(|v| !v.is_null())
        .collect()
}
