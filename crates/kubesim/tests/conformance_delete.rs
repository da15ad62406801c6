//! Deletion: finalizers, owner-reference garbage collection and namespaces.

mod common;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn cm(name: &str, extra_meta: serde_json::Value) -> ConfigMap {
    let mut v = json!({"metadata": {"name": name}});
    if let Some(m) = extra_meta.as_object() {
        for (k, x) in m {
            v["metadata"][k] = x.clone();
        }
    }
    serde_json::from_value(v).unwrap()
}

fn owned_by(owner: &ConfigMap) -> serde_json::Value {
    json!({"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(),
        "uid": owner.uid().unwrap(), "controller": true, "blockOwnerDeletion": true}]})
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let created = cms.create(&PostParams::default(), &cm("f", json!({"finalizers": ["purrify.io/cleanup"]}))).await.unwrap();
    let mut w = cms.watch(&WatchParams::default().disable_bookmarks(), &created.resource_version().unwrap()).await.unwrap().boxed();

    let marked = cms.delete("f", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(cms.get("f").await.unwrap().metadata.deletion_timestamp.is_some(), "still there");
    // Deleting again changes nothing.
    let again = cms.delete("f", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(again.resource_version(), marked.resource_version());

    cms.patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert_eq!(api_err(cms.get("f").await).code, 404);

    // Watchers see the mark, then the removal.
    match tokio::time::timeout(std::time::Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Modified(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        other => panic!("{other:?}"),
    }
    match tokio::time::timeout(std::time::Duration::from_secs(5), w.next()).await.unwrap().unwrap().unwrap() {
        WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "f"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn owner_deletion_collects_dependents() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let owner = cms.create(&PostParams::default(), &cm("owner", json!({}))).await.unwrap();
    let child = cms.create(&PostParams::default(), &cm("child", owned_by(&owner))).await.unwrap();
    cms.create(&PostParams::default(), &cm("grandchild", owned_by(&child))).await.unwrap();
    cms.create(&PostParams::default(), &cm("unrelated", json!({}))).await.unwrap();
    cms.delete("owner", &DeleteParams::background()).await.unwrap();
    eventually(|| async { cms.get_opt("grandchild").await.unwrap().is_none().then_some(()) }).await;
    assert!(cms.get_opt("child").await.unwrap().is_none());
    assert!(cms.get_opt("unrelated").await.unwrap().is_some());

    // A dependent with another living owner only loses the dangling reference.
    let a = cms.create(&PostParams::default(), &cm("a", json!({}))).await.unwrap();
    let b = cms.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    let mut refs = owned_by(&a);
    refs["ownerReferences"].as_array_mut().unwrap().push(owned_by(&b)["ownerReferences"][0].clone());
    refs["ownerReferences"][1]["controller"] = json!(false);
    cms.create(&PostParams::default(), &cm("shared", refs)).await.unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let shared = cms.get("shared").await.unwrap();
    assert_eq!(shared.owner_references().len(), 1);
    assert_eq!(shared.owner_references()[0].name, "b");
}

#[tokio::test]
async fn orphan_and_foreground_propagation() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let owner = cms.create(&PostParams::default(), &cm("owner", json!({}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("kept", owned_by(&owner))).await.unwrap();
    cms.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let kept = cms.get("kept").await.unwrap();
    assert!(kept.owner_references().is_empty(), "orphaned dependents lose the reference");

    // Foreground: the owner waits (with a finalizer) for a dependent that has one.
    let owner = cms.create(&PostParams::default(), &cm("fg", json!({}))).await.unwrap();
    let mut meta = owned_by(&owner);
    meta["finalizers"] = json!(["purrify.io/hold"]);
    cms.create(&PostParams::default(), &cm("slow-child", meta)).await.unwrap();
    cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    let waiting = cms.get("fg").await.unwrap();
    assert!(waiting.finalizers().contains(&"foregroundDeletion".to_string()));
    assert!(cms.get("slow-child").await.unwrap().metadata.deletion_timestamp.is_some());
    cms.patch("slow-child", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually(|| async { cms.get_opt("fg").await.unwrap().is_none().then_some(()) }).await;
}

#[tokio::test]
async fn namespace_deletion_removes_its_contents() {
    let sim = start().await;
    let nss: Api<Namespace> = Api::all(sim.client.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "temp"}})).unwrap()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "temp");
    cms.create(&PostParams::default(), &cm("x", json!({}))).await.unwrap();
    cms.create(&PostParams::default(), &cm("held", json!({"finalizers": ["purrify.io/hold"]}))).await.unwrap();
    nss.delete("temp", &DeleteParams::default()).await.unwrap();
    let ns = nss.get("temp").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    assert!(cms.get_opt("x").await.unwrap().is_none());
    let e = api_err(cms.create(&PostParams::default(), &cm("new", json!({}))).await);
    assert_eq!(e.code, 403);
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    eventually(|| async { nss.get_opt("temp").await.unwrap().is_none().then_some(()) }).await;

    let e = api_err(nss.delete("default", &DeleteParams::default()).await);
    assert_eq!(e.code, 403);
}
