//! kube-runtime's Controller works unchanged: it reconciles a custom resource, owns a
//! child, writes status with server-side apply, and settles (no-op writes end the loop).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

struct Ctx {
    client: Client,
}

const MANAGER: &str = "gadget-controller";

async fn reconcile(g: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = g.namespace().unwrap_or_default();
    let name = g.name_any();
    let gadgets: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &gadget_ar());
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let owner = g.controller_owner_ref(&gadget_ar()).expect("gadgets have uids");
    let child = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-config"), "ownerReferences": [owner]},
        "data": {"image": g.data["spec"]["image"]},
    });
    let pp = PatchParams::apply(MANAGER).force();
    cms.patch(&format!("{name}-config"), &pp, &Patch::Apply(child)).await?;
    let status = json!({
        "apiVersion": "kubesim.test/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "observedGeneration": g.metadata.generation,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}],
        },
    });
    gadgets.patch_status(&name, &pp, &Patch::Apply(status)).await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<DynamicObject>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn controller_reconciles_and_settles() {
    let sim = start().await;
    let gadgets = install_gadget_crd(&sim.client).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let ctx = Arc::new(Ctx { client: sim.client.clone() });
    let controller = Controller::new_with(gadgets.clone(), watcher::Config::default(), gadget_ar())
        .owns(cms.clone(), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    for i in 0..3 {
        gadgets.create(&PostParams::default(), &gadget(&format!("g{i}"), json!({"image": "worker:1"}))).await.unwrap();
    }
    eventually(|| async {
        let all = gadgets.list(&Default::default()).await.unwrap();
        all.items.iter().all(|g| g.data["status"]["observedGeneration"] == 1 && g.data["status"]["phase"] == "Running").then_some(())
    })
    .await;
    assert_eq!(cms.get("g0-config").await.unwrap().data.unwrap()["image"], "worker:1");

    // A spec change is a new generation; the controller catches up.
    gadgets.patch("g1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": "worker:2"}}))).await.unwrap();
    eventually(|| async {
        let g = gadgets.get("g1").await.unwrap();
        (g.data["status"]["observedGeneration"] == 2).then_some(())
    })
    .await;
    eventually(|| async { (cms.get("g1-config").await.unwrap().data.unwrap()["image"] == "worker:2").then_some(()) }).await;

    // Settled: the controller's own no-op writes cause no further versions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rv = sim.handle.resource_version();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sim.handle.resource_version(), rv, "no write loop");
    // Writes per object stay small: each reconcile is one child apply and one status apply.
    let status_writes = sim.handle.request_count("apply", "gadgets/status");
    assert!(status_writes <= 12, "status applies: {status_writes}");

    // Deleting a gadget garbage-collects its child.
    gadgets.delete("g0", &DeleteParams::default()).await.unwrap();
    eventually(|| async { cms.get_opt("g0-config").await.unwrap().is_none().then_some(()) }).await;
    task.abort();
}
