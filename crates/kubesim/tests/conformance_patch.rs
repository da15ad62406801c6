//! Patch types, server-side apply and the status subresource, through kube-rs.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

fn deployment(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pool", "labels": {"managed-by": "operator"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "pool"}},
            "template": {
                "metadata": {"labels": {"app": "pool"}},
                "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}
            }
        }
    })
}

#[tokio::test]
async fn merge_and_json_patches() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let pp = PatchParams::default();

    let merged = cms.patch("c", &pp, &Patch::Merge(json!({"data": {"a": null, "c": "3"}}))).await.unwrap();
    assert_eq!(merged.data.unwrap(), [("b".to_string(), "2".to_string()), ("c".to_string(), "3".to_string())].into());

    let ops: json_patch_ops::Ops = serde_json::from_value(json!([
        {"op": "test", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/b", "value": "20"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}
    ]))
    .unwrap();
    let patched: ConfigMap = json_patch_ops::send(&sim, "c", &ops).await;
    assert_eq!(patched.data.as_ref().unwrap()["b"], "20");
    assert_eq!(patched.labels()["x"], "y");

    // A failing test op rejects the whole patch.
    let (code, body) = raw(
        "PATCH",
        &format!("{}/api/v1/namespaces/default/configmaps/c", sim.handle.url()),
        Some(("application/json-patch+json", r#"[{"op":"test","path":"/data/b","value":"nope"}]"#)),
    )
    .await;
    assert_eq!(code, 422, "{body}");

    // A resourceVersion in a merge patch is a precondition.
    let stale = json!({"metadata": {"resourceVersion": created.resource_version().unwrap()}, "data": {"z": "1"}});
    let e = api_err(cms.patch("c", &pp, &Patch::Merge(stale)).await);
    assert_eq!(e.code, 409);

    // Unknown patch types are 415.
    let (code, _) = raw("PATCH", &format!("{}/api/v1/namespaces/default/configmaps/c", sim.handle.url()), Some(("text/plain", "x"))).await;
    assert_eq!(code, 415);
}

/// JSON patch through kube's raw request API: kube's typed JSON patch needs the
/// `jsonpatch` feature, which the project does not otherwise use.
mod json_patch_ops {
    pub type Ops = serde_json::Value;

    pub async fn send(sim: &super::Sim, name: &str, ops: &Ops) -> k8s_openapi::api::core::v1::ConfigMap {
        let mut req = kube::core::Request::new("/api/v1/namespaces/default/configmaps")
            .patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(ops))
            .unwrap();
        req.headers_mut().insert("content-type", "application/json-patch+json".parse().unwrap());
        sim.client.request(req).await.unwrap()
    }
}

#[tokio::test]
async fn strategic_merge_merges_containers_by_name() {
    let sim = start().await;
    let deps: Api<Deployment> = Api::default_namespaced(sim.client.clone());
    let mut d = deployment(1);
    d["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "worker", "image": "worker:1"},
        {"name": "sidecar", "image": "sidecar:1"}
    ]);
    deps.create(&PostParams::default(), &serde_json::from_value(d).unwrap()).await.unwrap();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "sidecar:2"}]}}}});
    let out = deps.patch("pool", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    let containers = out.spec.template.spec.unwrap().containers;
    let images: Vec<(String, String)> = containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap())).collect();
    assert_eq!(images, vec![("worker".into(), "worker:1".into()), ("sidecar".into(), "sidecar:2".into())]);

    // Custom resources have no strategic merge keys: 415, as on a real server.
    let gadgets = install_gadget_crd(&sim.client).await;
    gadgets.create(&PostParams::default(), &gadget("g", json!({"image": "a"}))).await.unwrap();
    let e = api_err(gadgets.patch("g", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"image": "b"}}))).await);
    assert_eq!(e.code, 415);
}

#[tokio::test]
async fn server_side_apply_ownership_conflicts_and_removal() {
    let sim = start().await;
    let deps: Api<Deployment> = Api::default_namespaced(sim.client.clone());
    let operator = PatchParams::apply("purrify-operator");

    // Apply creates.
    let created = deps.patch("pool", &operator, &Patch::Apply(deployment(2))).await.unwrap();
    assert_eq!(created.spec.replicas, Some(2));
    let mf = created.managed_fields();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("purrify-operator"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = serde_json::to_value(&mf[0].fields_v1).unwrap();
    assert!(fields["f:spec"]["f:replicas"].is_object(), "{fields}");
    assert!(fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"worker\"}"]["f:image"].is_object(), "{fields}");

    // The same apply again changes nothing.
    let again = deps.patch("pool", &operator, &Patch::Apply(deployment(2))).await.unwrap();
    assert_eq!(again.resource_version(), created.resource_version());

    // Another manager setting a field to a different value conflicts...
    let autoscaler = PatchParams::apply("autoscaler");
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "pool"}, "spec": {"replicas": 5}});
    let e = api_err(deps.patch("pool", &autoscaler, &Patch::Apply(scale.clone())).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("conflict with \"purrify-operator\""), "{}", e.message);
    assert!(e.message.contains(".spec.replicas"), "{}", e.message);
    assert_eq!(e.details.as_ref().unwrap().causes[0].reason, "FieldManagerConflict");

    // ...unless forced, which moves ownership.
    let forced = deps.patch("pool", &autoscaler.clone().force(), &Patch::Apply(scale)).await.unwrap();
    assert_eq!(forced.spec.replicas, Some(5));

    // The operator stops setting replicas (the autoscaler keeps them) and drops a label
    // it owned alone (so it is removed).
    let mut slim = deployment(2);
    slim["spec"].as_object_mut().unwrap().remove("replicas");
    slim["metadata"].as_object_mut().unwrap().remove("labels");
    let after = deps.patch("pool", &operator, &Patch::Apply(slim)).await.unwrap();
    assert_eq!(after.spec.replicas, Some(5));
    assert!(after.labels().get("managed-by").is_none(), "{:?}", after.labels());

    // Apply without a field manager is a 400.
    let (code, body) = raw(
        "PATCH",
        &format!("{}/apis/apps/v1/namespaces/default/deployments/pool", sim.handle.url()),
        Some(("application/apply-patch+yaml", &deployment(1).to_string())),
    )
    .await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn apply_shares_map_lists_between_managers() {
    let sim = start().await;
    let gadgets = install_gadget_crd(&sim.client).await;
    let mine = |workers: serde_json::Value| {
        json!({"apiVersion": "kubesim.test/v1", "kind": "Gadget", "metadata": {"name": "g"},
            "spec": {"image": "img", "workers": workers}})
    };
    gadgets.patch("g", &PatchParams::apply("one"), &Patch::Apply(mine(json!([{"name": "w1", "endpoint": "a"}])))).await.unwrap();
    let two = json!({"apiVersion": "kubesim.test/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "spec": {"workers": [{"name": "w2", "endpoint": "b"}]}});
    let both = gadgets.patch("g", &PatchParams::apply("two"), &Patch::Apply(two)).await.unwrap();
    assert_eq!(both.data["spec"]["workers"], json!([{"name": "w1", "endpoint": "a"}, {"name": "w2", "endpoint": "b"}]));
    // "one" dropping its worker removes only that element.
    let after = gadgets.patch("g", &PatchParams::apply("one"), &Patch::Apply(mine(json!([])))).await.unwrap();
    assert_eq!(after.data["spec"]["workers"], json!([{"name": "w2", "endpoint": "b"}]));
}

#[tokio::test]
async fn status_subresource_scopes_writes() {
    let sim = start().await;
    let gadgets = install_gadget_crd(&sim.client).await;
    let mut g = gadget("g", json!({"image": "a"}));
    g.data["status"] = json!({"phase": "Running"});
    let created = gadgets.create(&PostParams::default(), &g).await.unwrap();
    assert!(created.data.get("status").is_none(), "status is dropped on create");

    // /status writes change status only; spec changes in them are ignored.
    let pp = PatchParams::default();
    let st = gadgets.patch_status("g", &pp, &Patch::Merge(json!({"spec": {"image": "b"}, "status": {"phase": "Queued"}}))).await.unwrap();
    assert_eq!(st.data["status"]["phase"], "Queued");
    assert_eq!(st.data["spec"]["image"], "a");
    assert_eq!(st.metadata.generation, Some(1), "status changes leave generation alone");

    // Main-resource writes ignore status changes.
    let main = gadgets.patch("g", &pp, &Patch::Merge(json!({"spec": {"image": "c"}, "status": {"phase": "Failed"}}))).await.unwrap();
    assert_eq!(main.data["status"]["phase"], "Queued");
    assert_eq!(main.data["spec"]["image"], "c");
    assert_eq!(main.metadata.generation, Some(2));

    // Replace on /status, then server-side apply on /status with its own manager.
    let mut current = gadgets.get_status("g").await.unwrap();
    current.data["status"]["phase"] = json!("Running");
    let replaced = gadgets.replace_status("g", &PostParams::default(), &current).await.unwrap();
    assert_eq!(replaced.data["status"]["phase"], "Running");
    let apply = json!({"apiVersion": "kubesim.test/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "status": {"phase": "Succeeded", "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}]}});
    let applied = gadgets.patch_status("g", &PatchParams::apply("status-writer").force(), &Patch::Apply(apply.clone())).await.unwrap();
    assert_eq!(applied.data["status"]["phase"], "Succeeded");
    let entry = applied.managed_fields().iter().find(|m| m.manager.as_deref() == Some("status-writer")).cloned().unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    // Re-applying the same status is a no-op.
    let again = gadgets.patch_status("g", &PatchParams::apply("status-writer").force(), &Patch::Apply(apply)).await.unwrap();
    assert_eq!(again.resource_version(), applied.resource_version());

    // Status validation applies on /status too.
    let e = api_err(gadgets.patch_status("g", &pp, &Patch::Merge(json!({"status": {"phase": "Bogus"}}))).await);
    assert_eq!(e.code, 422);

    // Built-ins behave the same: pod status is reset on create and written via /status.
    let pods: Api<Pod> = Api::default_namespaced(sim.client.clone());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Running"}}))
    .unwrap();
    let p = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    let p = pods.patch_status("p", &pp, &Patch::Merge(json!({"status": {"phase": "Running"}}))).await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    let _: DynamicObject = gadgets.get("g").await.unwrap();
}
