//! The CRDs in `crds/` are what the types generate, and the examples are valid resources.

use std::path::Path;

use purrify_api::{EnhanceTask, GpuPool, QualityLevel};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn generated_crds_are_in_sync_with_crds_dir() {
    let mut stale = Vec::new();
    for (name, yaml) in purrify_api::crd_files() {
        let path = repo().join("crds").join(&name);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == yaml => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(e) => stale.push(format!("{}: {e}", path.display())),
        }
    }
    assert!(stale.is_empty(), "CRDs are out of date ({}): run `cargo run -p purrify-api --bin purrify-crdgen`", stale.join("; "));
}

#[test]
fn crds_carry_descriptions_status_columns_short_names_and_cel() {
    for crd in purrify_api::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let version = &v["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object(), "status subresource");
        assert!(version["additionalPrinterColumns"].as_array().unwrap().len() >= 4);
        assert!(!v["spec"]["names"]["shortNames"].as_array().unwrap().is_empty());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert!(spec["x-kubernetes-validations"].is_array(), "CEL rules on spec");
    }
}

/// Every property at every depth (spec and status, through arrays and maps) carries a
/// description, so `kubectl explain` documents the whole resource.
#[test]
fn every_property_of_every_crd_has_a_description() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for crd in purrify_api::crds() {
        let v = serde_json::to_value(&crd).unwrap();
        let kind = v["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        let root = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        walk(root, &kind, &mut missing, &mut seen);
    }
    // The walk really went deep: both kinds have far more than their top-level fields.
    assert!(seen > 60, "only {seen} properties walked");
    assert!(missing.is_empty(), "properties without a description:\n{}", missing.join("\n"));
}

fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>, seen: &mut usize) {
    if let Some(props) = schema["properties"].as_object() {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            *seen += 1;
            if child["description"].as_str().is_none_or(|d| d.trim().is_empty()) {
                missing.push(child_path.clone());
            }
            walk(child, &child_path, missing, seen);
        }
    }
    if schema["items"].is_object() {
        walk(&schema["items"], &format!("{path}[]"), missing, seen);
    }
    if schema["additionalProperties"].is_object() {
        walk(&schema["additionalProperties"], &format!("{path}{{}}"), missing, seen);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for sub in schema[combinator].as_array().into_iter().flatten() {
            walk(sub, path, missing, seen);
        }
    }
}

#[test]
fn examples_are_valid_resources() {
    let read = |f: &str| std::fs::read_to_string(repo().join("examples").join(f)).unwrap();
    let pool: GpuPool = serde_yaml::from_str(&read("gpupool.yaml")).unwrap();
    assert_eq!(pool.spec.replicas.as_ref().unwrap().max, 4);
    assert_eq!(pool.spec.concurrency_per_replica, 2);

    let external: GpuPool = serde_yaml::from_str(&read("gpupool-external.yaml")).unwrap();
    assert!(external.spec.image.is_none() && external.spec.replicas.is_none());
    assert_eq!(external.spec.external.len(), 2);
    assert_eq!(external.spec.gpus_per_replica, 1, "defaults apply");

    let task: EnhanceTask = serde_yaml::from_str(&read("enhancetask.yaml")).unwrap();
    assert_eq!(task.spec.params.quality_level, QualityLevel::Fast);
    assert_eq!(task.spec.deadline_seconds, 300);
}

#[test]
fn minimal_task_gets_the_seed_defaults() {
    let task: EnhanceTask = serde_yaml::from_str(
        "apiVersion: purrify.io/v1alpha1\nkind: EnhanceTask\nmetadata: {name: t}\nspec:\n  input: {uri: 's3://b/in.jpg'}\n  output: {uri: 's3://b/out.jpg'}\n",
    )
    .unwrap();
    assert_eq!(task.spec.pool, "default");
    assert_eq!((task.spec.params.tile_size, task.spec.params.scale), (400, 2));
    assert_eq!(task.spec.params.quality_level, QualityLevel::High);
    assert_eq!(task.spec.deadline_seconds, 300);
}
