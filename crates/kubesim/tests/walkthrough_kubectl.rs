//! "Try it with kubectl": the walkthrough below, run step by step with the real kubectl.
//!
//! ```sh
//! target/debug/purrify-kubesim serve --addr 127.0.0.1:6443 --kubeconfig /tmp/kubesim.kubeconfig &
//! export KUBECONFIG=/tmp/kubesim.kubeconfig
//! kubectl create namespace purrify
//! kubectl apply -f crds/
//! kubectl apply -f deploy/
//! kubectl apply -f examples/gpupool-external.yaml
//! kubectl get gpupools -n purrify
//! kubectl explain gpupool.spec.external
//! kubectl apply -f examples/enhancetask.yaml
//! kubectl get enhancetasks -n purrify -o wide
//! kubectl apply --server-side -f deploy/
//! kubectl delete namespace purrify
//! kill %1
//! ```
//!
//! The test reads the `kubectl` lines from this comment and runs exactly those, from the
//! workspace root; the server it starts listens on a free port (`--addr 127.0.0.1:0`)
//! instead of 6443, and kubectl gets an empty `HOME` so no earlier discovery cache is used.
//! It runs the `kubectl` on `PATH`, then each versioned kubectl installed beside it
//! (`kubectl.1.27` and newer, as the Cloud SDK's dispatcher ships them).

mod common;

use std::path::{Path, PathBuf};

use common::kubectl::{Cluster, kubectl_path, table_rows, yaml_docs};

/// The walkthrough's kubectl commands, from the comment above.
fn steps() -> Vec<Vec<String>> {
    let source = include_str!("walkthrough_kubectl.rs");
    let steps: Vec<Vec<String>> = source
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .filter_map(|l| l.trim().strip_prefix("kubectl "))
        .map(|cmd| cmd.split_whitespace().map(str::to_string).collect())
        .collect();
    assert!(steps.len() >= 8, "the walkthrough comment lists its kubectl commands");
    steps
}

/// Checks what each step printed.
fn check(step: &[String], out: &str) {
    let cmd = step.join(" ");
    let lines = |suffix: &str| out.lines().filter(|l| l.ends_with(suffix)).count();
    match cmd.as_str() {
        "create namespace purrify" => assert_eq!(out.trim(), "namespace/purrify created"),
        "apply -f crds/" => assert_eq!(lines(" created"), 2, "{out}"),
        "apply -f deploy/" => {
            let docs = yaml_docs("deploy/gateway-rbac.yaml").len() + yaml_docs("deploy/operator-rbac.yaml").len();
            assert_eq!(lines(" created"), docs, "{out}");
        }
        "apply -f examples/gpupool-external.yaml" => assert_eq!(out.trim(), "gpupool.purrify.io/default created"),
        "get gpupools -n purrify" => {
            let rows = table_rows(out);
            assert_eq!(rows[0], ["NAME", "READY", "WORKERS", "QUEUE", "AGE"], "{out}");
            assert_eq!(rows[1][0], "default", "{out}");
        }
        "explain gpupool.spec.external" => {
            assert!(out.contains("KIND:       GpuPool") && out.contains("FIELD: external <[]Object>"), "{out}");
            assert!(out.contains("url\t<string> -required-"), "{out}");
        }
        "apply -f examples/enhancetask.yaml" => assert_eq!(out.trim(), "enhancetask.purrify.io/cat-photo created"),
        "get enhancetasks -n purrify -o wide" => {
            let rows = table_rows(out);
            assert_eq!(rows[0], ["NAME", "PHASE", "PROGRESS", "WORKER", "AGE"], "{out}");
            assert_eq!(rows[1][0], "cat-photo", "{out}");
        }
        "apply --server-side -f deploy/" => assert!(out.lines().all(|l| l.ends_with(" serverside-applied")), "{out}"),
        "delete namespace purrify" => assert_eq!(out.trim(), "namespace \"purrify\" deleted"),
        other => panic!("the test does not know what `kubectl {other}` should print"),
    }
}

fn walk_through(kubectl: &Path) {
    let c = Cluster::start();
    for step in steps() {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let out = c.ok_using(kubectl, &args);
        check(&step, &out);
    }
    // The namespace took its contents with it.
    let left = c.run_using(kubectl, &["get", "gpupools,enhancetasks,roles,rolebindings,serviceaccounts", "-n", "purrify", "-o", "name"]);
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "{left:?}");
}

#[test]
fn walkthrough_with_the_kubectl_on_path() {
    walk_through(&kubectl_path());
}

/// `kubectl.1.NN` files beside the real kubectl (the dispatcher's), 1.27 and newer.
fn versioned_kubectls() -> Vec<PathBuf> {
    let real = std::fs::canonicalize(kubectl_path()).expect("kubectl path");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(real.parent().expect("a directory"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let minor: u32 = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            (minor >= 27).then(|| (minor, e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn walkthrough_with_each_installed_kubectl_version() {
    for kubectl in versioned_kubectls() {
        eprintln!("walkthrough with {}", kubectl.display());
        walk_through(&kubectl);
    }
}
