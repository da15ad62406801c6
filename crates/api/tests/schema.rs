//! What the Rust types build is what the generated CRDs admit: each value goes through the
//! schema the in-memory API server uses (pruning, defaulting, OpenAPI validation and the CEL
//! rules), as `kubectl apply` or a kube client's create would on a cluster.

use kubesim::schema::Schema;
use purrify_api::{
    EnhanceTask, EnhanceTaskStatus, ExternalEndpoint, FaceRestoration, GpuPool, GpuPoolSpec, Replicas, TaskPhase, TaskResult,
};
use serde_json::{Value, json};

fn schema_of(crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) -> Schema {
    let crd = serde_json::to_value(crd).unwrap();
    let infos = kubesim::crd::compile(&crd, None).unwrap_or_else(|causes| panic!("the CRD compiles: {causes:?}"));
    (*infos[0].schema).clone()
}

/// The object as the server would store it, or the messages of the 422.
fn admit(schema: &Schema, object: &impl serde::Serialize) -> Result<Value, Vec<String>> {
    let mut v = serde_json::to_value(object).unwrap();
    schema.prune(&mut v, true);
    schema.apply_defaults(&mut v);
    let mut errs = Vec::new();
    schema.validate(&v, None, "", &mut errs);
    if errs.is_empty() { Ok(v) } else { Err(errs.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()) }
}

fn pool(spec: GpuPoolSpec) -> GpuPool {
    GpuPool::new("default", spec)
}

#[test]
fn default_pool_spec_agrees_with_the_serde_defaults() {
    let from_empty: GpuPoolSpec = serde_json::from_value(json!({})).unwrap();
    assert_eq!(GpuPoolSpec::default(), from_empty);
    assert_eq!((from_empty.concurrency_per_replica, from_empty.gpus_per_replica), (2, 1));
}

#[test]
fn default_and_external_only_specs_are_admitted_unchanged() {
    let schema = schema_of(&purrify_api::crds()[0]);
    let endpoint = ExternalEndpoint { url: "http://203.0.113.7:8000".into(), name: Some("gpu-1".into()) };
    for spec in [GpuPoolSpec::default(), GpuPoolSpec::external_only(vec![endpoint]), GpuPoolSpec::external_only(vec![])] {
        let sent = pool(spec);
        let stored = admit(&schema, &sent).unwrap_or_else(|e| panic!("{:?} refused: {e:?}", sent.spec));
        // Nothing the server defaults differs from what the type already said.
        assert_eq!(stored, serde_json::to_value(&sent).unwrap(), "server defaults disagree with the type's");
    }
}

#[test]
fn an_external_only_pool_without_endpoints_says_so_explicitly() {
    let json = serde_json::to_value(GpuPoolSpec::external_only(vec![])).unwrap();
    assert_eq!(json["external"], json!([]), "an unregister of the last server must send `external: []`");
}

#[test]
fn a_pool_is_managed_or_external_only() {
    let schema = schema_of(&purrify_api::crds()[0]);
    let managed = GpuPoolSpec { image: Some("w:1".into()), replicas: Some(Replicas { min: 0, max: 2 }), ..GpuPoolSpec::default() };
    admit(&schema, &pool(managed.clone())).expect("image and replicas");

    let no_image = GpuPoolSpec { image: None, ..managed.clone() };
    let errs = admit(&schema, &pool(no_image)).unwrap_err();
    assert!(errs.iter().any(|e| e.starts_with("spec:") && e.contains("replicas needs an image")), "{errs:?}");

    let no_replicas = GpuPoolSpec { replicas: None, ..managed };
    let errs = admit(&schema, &pool(no_replicas)).unwrap_err();
    assert!(errs.iter().any(|e| e.contains("image needs replicas")), "{errs:?}");
}

#[test]
fn a_task_result_with_its_outcome_fields_is_admitted() {
    let schema = schema_of(&purrify_api::crds()[1]);
    let mut task: EnhanceTask = serde_yaml::from_str(
        "apiVersion: purrify.io/v1alpha1\nkind: EnhanceTask\nmetadata: {name: t}\nspec:\n  input: {uri: 's3://b/in.jpg'}\n  output: {uri: 's3://b/out.png'}\n",
    )
    .unwrap();
    task.status = Some(EnhanceTaskStatus {
        phase: TaskPhase::Succeeded,
        progress: 1.0,
        result: Some(TaskResult {
            uri: "s3://b/out.png".into(),
            width: 800,
            height: 600,
            bytes: 123_456,
            content_type: Some("image/png".into()),
            faces: 0,
            face_restoration: Some(FaceRestoration::NotConfigured),
        }),
        ..EnhanceTaskStatus::default()
    });
    let stored = admit(&schema, &task).unwrap_or_else(|e| panic!("refused: {e:?}"));
    // Pruning keeps them: the schema knows both fields.
    assert_eq!(stored["status"]["result"]["contentType"], "image/png");
    assert_eq!(stored["status"]["result"]["faceRestoration"], "notConfigured");
    let back: EnhanceTask = serde_json::from_value(stored).unwrap();
    assert_eq!(back.status, task.status);
}
