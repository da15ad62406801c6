//! CustomResourceDefinitions: serving, schema validation, pruning, defaulting and CEL.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

#[tokio::test]
async fn crd_becomes_established_and_serves_its_kind() {
    let sim = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let gadgets = install_gadget_crd(&sim.client).await;
    let established = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        await_condition(crds.clone(), "gadgets.kubesim.test", conditions::is_crd_established()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    let st = established.status.unwrap();
    assert_eq!(st.accepted_names.unwrap().kind, "Gadget");
    assert_eq!(st.stored_versions, Some(vec!["v1".to_string()]));

    let g = gadgets.create(&PostParams::default(), &gadget("g1", json!({"image": "worker:1"}))).await.unwrap();
    assert_eq!(g.types.as_ref().unwrap().api_version, "kubesim.test/v1");
    assert_eq!(gadgets.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Deleting the CRD removes the kind and its objects.
    crds.delete("gadgets.kubesim.test", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(gadgets.list(&ListParams::default()).await).code, 404);
}

#[tokio::test]
async fn schema_defaults_prunes_and_validates() {
    let sim = start().await;
    let gadgets = install_gadget_crd(&sim.client).await;
    let g = gadgets
        .create(
            &PostParams::default(),
            &gadget(
                "g",
                json!({"image": "worker:1", "unknown": 1, "port": "http",
                "extra": {"anything": {"goes": [1, 2]}}, "tags": {"a": "b"}}),
            ),
        )
        .await
        .unwrap();
    let spec = &g.data["spec"];
    assert!(spec.get("unknown").is_none(), "unknown fields are pruned: {spec}");
    assert_eq!(spec["mode"], "cpu", "defaults apply");
    assert_eq!(spec["replicas"], json!({"min": 1, "max": 1}));
    assert_eq!(spec["extra"], json!({"anything": {"goes": [1, 2]}}), "preserve-unknown-fields keeps data");
    assert_eq!(spec["port"], "http");

    for (spec, field, reason) in [
        (json!({}), "spec.image", "FieldValueRequired"),
        (json!({"image": "UPPER"}), "spec.image", "FieldValueInvalid"),
        (json!({"image": ""}), "spec.image", "FieldValueInvalid"),
        (json!({"image": "a".repeat(65)}), "spec.image", "FieldValueTooLong"),
        (json!({"image": 5}), "spec.image", "FieldValueTypeInvalid"),
        (json!({"image": "a", "mode": "tpu"}), "spec.mode", "FieldValueNotSupported"),
        (json!({"image": "a", "replicas": {"min": 0, "max": 101}}), "spec.replicas.max", "FieldValueInvalid"),
        (json!({"image": "a", "replicas": {"min": -1, "max": 1}}), "spec.replicas.min", "FieldValueInvalid"),
        (json!({"image": "a", "port": 1.5}), "spec.port", "FieldValueTypeInvalid"),
        (json!({"image": "a", "tags": {"k": 1}}), "spec.tags.k", "FieldValueTypeInvalid"),
        (json!({"image": "a", "workers": [{"name": "w"}, {"name": "w"}]}), "spec.workers[1]", "FieldValueDuplicate"),
        (json!({"image": "a", "replicas": {"min": 3, "max": 2}}), "spec", "FieldValueInvalid"),
    ] {
        let e = api_err(gadgets.create(&PostParams::default(), &gadget("bad", spec.clone())).await);
        assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{spec}");
        let details = e.details.as_ref().unwrap();
        assert_eq!(details.kind, "Gadget");
        assert!(
            details.causes.iter().any(|c| c.field == field && c.reason == reason),
            "{spec}: wanted {field}/{reason}, got {:?}",
            details.causes
        );
        assert!(e.message.starts_with("Gadget.kubesim.test \"bad\" is invalid: "), "{}", e.message);
    }
    let e = api_err(gadgets.create(&PostParams::default(), &gadget("bad", json!({"image": "a", "replicas": {"min": 3, "max": 2}}))).await);
    assert!(e.message.contains("replicas.min must not exceed replicas.max"), "{}", e.message);

    // Nullable fields accept null.
    gadgets
        .create(&PostParams::default(), &gadget("nullable", json!({"image": "a", "input": {"uri": "s3://x", "bytes": null}})))
        .await
        .unwrap();
}

#[tokio::test]
async fn cel_transition_rules_make_fields_immutable() {
    let sim = start().await;
    let gadgets = install_gadget_crd(&sim.client).await;
    gadgets.create(&PostParams::default(), &gadget("g", json!({"image": "a", "input": {"uri": "s3://in/1"}}))).await.unwrap();
    let pp = PatchParams::default();
    // Changing other fields is fine; changing the immutable one is not.
    gadgets.patch("g", &pp, &Patch::Merge(json!({"spec": {"image": "b"}}))).await.unwrap();
    let e = api_err(gadgets.patch("g", &pp, &Patch::Merge(json!({"spec": {"input": {"uri": "s3://in/2"}}}))).await);
    assert_eq!(e.code, 422);
    let cause = &e.details.as_ref().unwrap().causes[0];
    assert_eq!(cause.field, "spec.input");
    assert!(cause.message.contains("input is immutable"), "{}", cause.message);
    // Through server-side apply as well.
    let apply = json!({"apiVersion": "kubesim.test/v1", "kind": "Gadget", "metadata": {"name": "g"},
        "spec": {"image": "b", "input": {"uri": "s3://in/3"}}});
    let e = api_err(gadgets.patch("g", &PatchParams::apply("x").force(), &Patch::Apply(apply)).await);
    assert_eq!(e.code, 422);
}

#[tokio::test]
async fn crds_with_unsupported_cel_or_bad_names_are_rejected() {
    let sim = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let mut crd = gadget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
        json!([{"rule": "self.image.quantity() > 1"}]);
    let e = api_err(crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("compilation failed"), "{}", e.message);

    let mut crd = gadget_crd();
    crd["metadata"]["name"] = json!("wrong.kubesim.test");
    let e = api_err(crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await);
    assert_eq!(e.code, 422);
    assert_eq!(e.details.unwrap().causes[0].field, "metadata.name");
}

#[tokio::test]
async fn cluster_scoped_and_multi_version_crds() {
    let sim = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}});
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "clusterthings.kubesim.test"},
        "spec": {
            "group": "kubesim.test",
            "scope": "Cluster",
            "names": {"plural": "clusterthings", "kind": "ClusterThing"},
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false, "schema": schema},
                {"name": "v1", "served": true, "storage": true, "schema": schema}
            ]
        }
    });
    crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await.unwrap();
    let v1 = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubesim.test", "v1", "ClusterThing"), "clusterthings");
    let v1alpha1 = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubesim.test", "v1alpha1", "ClusterThing"), "clusterthings");
    let things: Api<DynamicObject> = Api::all_with(sim.client.clone(), &v1);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "kubesim.test/v1", "kind": "ClusterThing",
        "metadata": {"name": "t"}, "spec": {"x": 1}}))
    .unwrap();
    let created = things.create(&PostParams::default(), &obj).await.unwrap();
    assert!(created.namespace().is_none());
    // The same object through the other served version.
    let old: Api<DynamicObject> = Api::all_with(sim.client.clone(), &v1alpha1);
    let seen = old.get("t").await.unwrap();
    assert_eq!(seen.types.unwrap().api_version, "kubesim.test/v1alpha1");
    assert_eq!(seen.data["spec"]["x"], 1);
    let groups = sim.client.list_api_group_resources("kubesim.test/v1alpha1").await.unwrap();
    assert!(groups.resources.iter().any(|r| r.name == "clusterthings" && !r.namespaced));
}

/// The project's own generated CRDs (`crds/`) install, and their CEL rules hold.
#[tokio::test]
async fn project_crds_install_and_enforce_their_rules() {
    let sim = start().await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let gvk = GroupVersionKind::gvk("purrify.io", "v1alpha1", "EnhanceTask");
    let tasks: Api<DynamicObject> =
        Api::default_namespaced_with(sim.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "enhancetasks"));
    let task: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "purrify.io/v1alpha1", "kind": "EnhanceTask", "metadata": {"name": "t1"},
        "spec": {"input": {"uri": "s3://in/a.jpg"}, "output": {"uri": "s3://out/a.jpg"}, "owner": {"userId": "u1"}}
    }))
    .unwrap();
    let created = tasks.create(&PostParams::default(), &task).await.unwrap();
    assert_eq!(created.data["spec"]["deadlineSeconds"], 300, "schema defaults apply");
    let e = api_err(tasks.patch("t1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"input": {"uri": "s3://in/b.jpg"}}}))).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec is immutable"), "{}", e.message);

    let gvk = GroupVersionKind::gvk("purrify.io", "v1alpha1", "GpuPool");
    let pools: Api<DynamicObject> = Api::default_namespaced_with(sim.client.clone(), &ApiResource::from_gvk_with_plural(&gvk, "gpupools"));
    let pool = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "purrify.io/v1alpha1", "kind": "GpuPool",
            "metadata": {"name": "p"}, "spec": spec}))
        .unwrap()
    };
    let e = api_err(pools.create(&PostParams::default(), &pool(json!({"image": "w:1", "replicas": {"min": 3, "max": 2}}))).await);
    assert!(e.message.contains("replicas.min must not exceed replicas.max"), "{}", e.message);
    pools.create(&PostParams::default(), &pool(json!({"image": "w:1", "replicas": {"min": 1, "max": 2}}))).await.unwrap();
}
