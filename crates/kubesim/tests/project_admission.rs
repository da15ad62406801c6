//! The project's generated CRDs (`crds/`) at admission, as an admin or the gateway meets them:
//! every example in `examples/` is created as written (nothing refused, nothing pruned), and
//! each CEL rule refuses a violating object with a 422 whose message says what is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

const NS: &str = "purrify";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn start_with_project_crds() -> Sim {
    let sim = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let mut n = 0;
    for entry in std::fs::read_dir(repo().join("crds")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            crds.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert_eq!(n, 2, "GpuPool and EnhanceTask CRDs");
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(sim.client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    sim
}

fn api_for(sim: &Sim, object: &Value) -> Api<DynamicObject> {
    let (group, version) = object["apiVersion"].as_str().unwrap().split_once('/').unwrap();
    let kind = object["kind"].as_str().unwrap();
    let plural = match kind {
        "GpuPool" => "gpupools",
        "EnhanceTask" => "enhancetasks",
        other => panic!("not a Purrify kind: {other}"),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let ns = object["metadata"]["namespace"].as_str().unwrap_or(NS);
    Api::namespaced_with(sim.client.clone(), ns, &ApiResource::from_gvk_with_plural(&gvk, plural))
}

/// Every field `sent` has is in `stored` with the same value: the server neither dropped
/// (pruned) nor changed anything, only added defaults.
fn assert_kept(sent: &Value, stored: &Value, path: &str) {
    match (sent, stored) {
        (Value::Object(s), Value::Object(t)) => {
            for (k, v) in s {
                let child = format!("{path}.{k}");
                let kept = t.get(k).unwrap_or_else(|| panic!("{child} was pruned: the schema does not know it"));
                assert_kept(v, kept, &child);
            }
        }
        (Value::Array(s), Value::Array(t)) => {
            assert_eq!(s.len(), t.len(), "{path}: list length changed");
            for (i, (a, b)) in s.iter().zip(t).enumerate() {
                assert_kept(a, b, &format!("{path}[{i}]"));
            }
        }
        (Value::Number(a), Value::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{path} changed")
        }
        (a, b) => assert_eq!(a, b, "{path} changed"),
    }
}

#[tokio::test]
async fn every_example_is_admitted_as_written() {
    let sim = start_with_project_crds().await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut admitted = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let sent = Value::deserialize(doc).unwrap();
            if sent.is_null() {
                continue;
            }
            let what = format!("{} ({})", file.display(), sent["metadata"]["name"]);
            let api = api_for(&sim, &sent);
            let object: DynamicObject = serde_json::from_value(sent.clone()).unwrap();
            let created = api.create(&PostParams::default(), &object).await.unwrap_or_else(|e| panic!("{what} refused: {e}"));
            let stored = serde_json::to_value(&created).unwrap();
            assert_kept(&sent["spec"], &stored["spec"], &format!("{what}: spec"));
            // Examples may share a name (two ways to write the default pool).
            let name = created.metadata.name.clone().unwrap();
            api.delete(&name, &DeleteParams::default()).await.unwrap();
            admitted += 1;
        }
    }
    assert!(admitted >= 3, "only {admitted} examples found in {:?}", files);
}

async fn refused(sim: &Sim, object: Value) -> Box<kube::core::Status> {
    let api = api_for(sim, &object);
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let status = api_err(api.create(&PostParams::default(), &object).await);
    assert_eq!(status.code, 422, "{status:?}");
    status
}

fn task(params: Value) -> Value {
    json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "EnhanceTask",
        "metadata": {"name": "t", "namespace": NS},
        "spec": {"input": {"uri": "s3://b/in.jpg"}, "output": {"uri": "s3://b/out.jpg"}, "params": params}
    })
}

fn pool(spec: Value) -> Value {
    json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
        "metadata": {"name": "p", "namespace": NS},
        "spec": spec
    })
}

#[tokio::test]
async fn task_params_rules_refuse_with_a_clear_message() {
    let sim = start_with_project_crds().await;
    // 3 is inside the schema's 2..4 range: only the CEL rule catches it.
    let e = refused(&sim, task(json!({"scale": 3}))).await;
    assert!(e.message.contains("scale must be 2 or 4"), "{}", e.message);
    assert!(e.message.contains("spec.params"), "names the field: {}", e.message);
    let e = refused(&sim, task(json!({"tileSize": 16}))).await;
    assert!(e.message.contains("tileSize must be 0") && e.message.contains("32..1024"), "{}", e.message);
    for ok in [json!({"scale": 4, "tileSize": 0}), json!({"tileSize": 32})] {
        let api = api_for(&sim, &task(ok.clone()));
        let object: DynamicObject = serde_json::from_value(task(ok)).unwrap();
        api.create(&PostParams::default(), &object).await.unwrap();
        api.delete("t", &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_pool_is_refused_unless_managed_or_external_only() {
    let sim = start_with_project_crds().await;
    let e = refused(&sim, pool(json!({"replicas": {"min": 0, "max": 2}}))).await;
    assert!(e.message.contains("replicas needs an image"), "{}", e.message);
    let e = refused(&sim, pool(json!({"image": "w:1"}))).await;
    assert!(e.message.contains("image needs replicas"), "{}", e.message);
    let e = refused(&sim, pool(json!({"image": "w:1", "replicas": {"min": 3, "max": 2}}))).await;
    assert!(e.message.contains("replicas.min must not exceed replicas.max"), "{}", e.message);

    // External-only, also with no endpoint left (the last server unregistered).
    for spec in [
        json!({"image": "w:1", "replicas": {"min": 0, "max": 2}}),
        json!({"external": [{"url": "http://203.0.113.7:8000"}]}),
        json!({"external": []}),
        json!({}),
    ] {
        let api = api_for(&sim, &pool(spec.clone()));
        let object: DynamicObject = serde_json::from_value(pool(spec.clone())).unwrap();
        api.create(&PostParams::default(), &object).await.unwrap_or_else(|e| panic!("{spec} refused: {e}"));
        api.delete("p", &DeleteParams::default()).await.unwrap();
    }
}
