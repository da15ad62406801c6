//! The desired children of a GpuPool, built from YAML fixtures without any cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use purrify_api::GpuPool;
use purrify_operator::pool::builder::{self, WorkerDefaults};
use purrify_operator::pool::validate::{ValidPool, validate};

fn fixture(name: &str) -> GpuPool {
    let path = format!("{}/tests/fixtures/pool/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn build(name: &str, replicas: i32) -> (GpuPool, ValidPool, builder::Desired) {
    let pool = fixture(name);
    let valid = validate(&pool).expect("fixture is valid");
    let ic = valid.in_cluster.clone().expect("in-cluster pool");
    let owner = builder::owner_reference(&pool).expect("fixture has a uid");
    let desired = builder::desired(&valid, &ic, replicas, &owner, &WorkerDefaults::default());
    (pool, valid, desired)
}

fn container(d: &builder::Desired) -> &Container {
    let spec = d.deployment.spec.template.spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1);
    &spec.containers[0]
}

fn env(c: &Container) -> BTreeMap<String, String> {
    c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect()
}

#[test]
fn gpu_pool_deployment() {
    let (pool, _, d) = build("gpu", 3);
    let dep = &d.deployment;
    assert_eq!(dep.metadata.name.as_deref(), Some("photos-inference"));
    assert_eq!(dep.metadata.namespace.as_deref(), Some("purrify"));
    assert_eq!(dep.spec.replicas, Some(3));

    let owners = dep.metadata.owner_references.as_ref().unwrap();
    assert_eq!(owners.len(), 1);
    let o = &owners[0];
    assert_eq!((o.api_version.as_str(), o.kind.as_str(), o.name.as_str()), ("purrify.io/v1alpha1", "GpuPool", "photos"));
    assert_eq!(o.uid, pool.metadata.uid.clone().unwrap());
    assert_eq!(o.controller, Some(true));
    // Blocking the owner's deletion would need `gpupools/finalizers` rights under
    // OwnerReferencesPermissionEnforcement, for a foreground deletion nobody asks for.
    assert_eq!(o.block_owner_deletion, None);

    // Selector: stable, matched by the template, and carried by every child.
    let selector = dep.spec.selector.match_labels.clone().unwrap();
    assert_eq!(
        selector,
        BTreeMap::from([("app.kubernetes.io/name".into(), "purrify-inference".into()), ("purrify.io/pool".into(), "photos".into())])
    );
    let template_labels = dep.spec.template.metadata.as_ref().unwrap().labels.clone().unwrap();
    for (k, v) in &selector {
        assert_eq!(template_labels.get(k), Some(v), "template carries selector label {k}");
    }
    assert_eq!(template_labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("purrify-operator"));
    assert_eq!(dep.metadata.labels, Some(template_labels.clone()));

    // GPU workers roll one at a time without surge: a surge pod would need a spare GPU.
    let ru = dep.spec.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!((ru.max_surge.clone(), ru.max_unavailable.clone()), (Some(IntOrString::Int(0)), Some(IntOrString::Int(1))));

    let c = container(&d);
    assert_eq!(c.image.as_deref(), Some("registry.example.com/purrify/inference:0.1.0"));
    assert_eq!(c.args.as_deref(), Some(&["serve".to_string()][..]));
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.container_port), (Some("http"), 8000));

    // Resources: the pool's, plus its GPUs as a limit.
    let r = c.resources.as_ref().unwrap();
    let limits = r.limits.as_ref().unwrap();
    assert_eq!(limits.get("nvidia.com/gpu"), Some(&Quantity("2".into())));
    assert_eq!(limits.get("memory"), Some(&Quantity("12Gi".into())));
    let requests = r.requests.as_ref().unwrap();
    assert_eq!(requests.get("cpu"), Some(&Quantity("2".into())));

    // Probes: liveness on /healthz, readiness on /readyz, both on the named port.
    let live = c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((live.path.as_deref(), live.port.clone()), (Some("/healthz"), IntOrString::String("http".into())));
    let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!((ready.path.as_deref(), ready.port.clone()), (Some("/readyz"), IntOrString::String("http".into())));

    let env = env(c);
    assert_eq!(env["PURRIFY_WORKER_ADDR"], "0.0.0.0:8000");
    assert_eq!(env["PURRIFY_EXECUTION_PROVIDER"], "tensorrt");
    assert_eq!(env["PURRIFY_MODELS_DIR"], "/models");
    assert_eq!(env["PURRIFY_FACE_MODEL"], "/models/gfpgan-v1.4.onnx");
    assert_eq!(env["PURRIFY_CAPACITY"], "3");
    assert_eq!(env["PURRIFY_QUALITY_LEVELS"], "high,fast");
    assert_eq!(env["PURRIFY_LOG_FORMAT"], "json");
    assert!(env.contains_key("PURRIFY_TENSORRT_CACHE"));
    let env_from = c.env_from.as_ref().unwrap();
    assert_eq!(env_from[0].config_map_ref.as_ref().unwrap().name, "purrify-worker");
    assert_eq!(env_from[0].config_map_ref.as_ref().unwrap().optional, Some(true));
    assert_eq!(env_from[1].secret_ref.as_ref().unwrap().name, "purrify-worker");

    // Models from the PVC, read-only, where PURRIFY_MODELS_DIR points.
    let pod = dep.spec.template.spec.as_ref().unwrap();
    let volumes = pod.volumes.as_ref().unwrap();
    let models = volumes.iter().find(|v| v.persistent_volume_claim.is_some()).unwrap();
    let claim = models.persistent_volume_claim.as_ref().unwrap();
    assert_eq!((claim.claim_name.as_str(), claim.read_only), ("purrify-models", Some(true)));
    let mount = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == models.name).unwrap();
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/models", Some(true)));

    // Scheduling onto the GPU nodes.
    assert_eq!(pod.node_selector.as_ref().unwrap().get("nvidia.com/gpu.present").map(String::as_str), Some("true"));
    let t = &pod.tolerations.as_ref().unwrap()[0];
    assert_eq!(
        (t.key.as_deref(), t.operator.as_deref(), t.effect.as_deref()),
        (Some("nvidia.com/gpu"), Some("Exists"), Some("NoSchedule"))
    );
    assert!(pod.termination_grace_period_seconds.unwrap() > 60, "outlives the worker's 60 s drain");
}

#[test]
fn gpu_pool_service_and_pdb() {
    let (_, _, d) = build("gpu", 1);
    let svc = &d.service;
    assert_eq!(svc.metadata.name.as_deref(), Some("photos-inference"));
    assert_eq!(svc.metadata.owner_references.as_ref().unwrap()[0].kind, "GpuPool");
    let spec = svc.spec.as_ref().unwrap();
    assert_eq!(spec.selector, d.deployment.spec.selector.match_labels);
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port, port.target_port.clone()), (Some("http"), 8000, Some(IntOrString::String("http".into()))));

    let pdb = &d.pdb;
    assert_eq!(pdb.metadata.name.as_deref(), Some("photos-inference"));
    assert_eq!(pdb.metadata.owner_references.as_ref().unwrap()[0].name, "photos");
    let spec = pdb.spec.as_ref().unwrap();
    assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(spec.min_available, None, "only one of the two may be set");
    assert_eq!(spec.selector.as_ref().unwrap().match_labels, d.deployment.spec.selector.match_labels);
    assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
}

#[test]
fn cpu_pool_has_no_gpu_and_defaults() {
    let (_, valid, d) = build("cpu", 0);
    assert_eq!(valid.in_cluster.as_ref().unwrap().min, 0);
    assert_eq!(d.deployment.spec.replicas, Some(0));
    assert!(d.deployment.spec.strategy.is_none(), "CPU pools keep the default rollout");
    let c = container(&d);
    let limits = c.resources.as_ref().and_then(|r| r.limits.clone()).unwrap_or_default();
    assert!(!limits.contains_key("nvidia.com/gpu"));
    let env = env(c);
    assert_eq!(env["PURRIFY_EXECUTION_PROVIDER"], "cpu");
    assert_eq!(env["PURRIFY_CAPACITY"], "2", "the CRD default concurrency");
    assert!(!env.contains_key("PURRIFY_MODELS_DIR"), "no PVC: the image's models, where the image's own variable points");
    assert!(!env.contains_key("PURRIFY_FACE_MODEL"));
    assert!(!env.contains_key("PURRIFY_QUALITY_LEVELS"), "the worker's default levels");
    assert!(!env.contains_key("PURRIFY_TENSORRT_CACHE"));
    let pod = d.deployment.spec.template.spec.as_ref().unwrap();
    let volumes: Vec<&str> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, ["tmp"], "models are in the image; only /tmp is writable");
    assert!(pod.node_selector.is_none() && pod.tolerations.is_none());
}

#[test]
fn workers_are_restricted_with_a_writable_tmp() {
    // The "restricted" Pod Security Standard: worker pods are admitted where it is enforced.
    for fixture in ["cpu", "gpu"] {
        let (_, _, d) = build(fixture, 1);
        let pod = d.deployment.spec.template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().expect("a pod securityContext");
        assert_eq!(psc.run_as_non_root, Some(true), "{fixture}");
        assert_eq!(psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"), "{fixture}");
        let c = container(&d);
        let sc = c.security_context.as_ref().expect("a container securityContext");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{fixture}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{fixture}");
        assert_eq!(sc.run_as_non_root, Some(true), "{fixture}");
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_owned()]), "{fixture}");
        assert_eq!(sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"), "{fixture}");
        let tmp = c.volume_mounts.iter().flatten().find(|m| m.mount_path == "/tmp").expect("/tmp mounted");
        let vol = pod.volumes.iter().flatten().find(|v| v.name == tmp.name).unwrap();
        assert!(vol.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()), "{fixture}: /tmp is a bounded emptyDir");
    }
}

#[test]
fn external_pool_has_no_children() {
    let pool = fixture("external");
    let valid = validate(&pool).unwrap();
    assert!(valid.in_cluster.is_none());
    let endpoints: Vec<_> = valid.external.iter().map(|w| (w.endpoint.as_str(), w.name.as_deref(), w.capacity)).collect();
    assert_eq!(
        endpoints,
        [
            ("http://203.0.113.7:8000", Some("gpu-server-1"), Some(2)),
            ("https://gpu2.example.com", Some("https://gpu2.example.com"), Some(2))
        ]
    );
}

#[test]
fn worker_defaults_can_be_turned_off() {
    let pool = fixture("cpu");
    let valid = validate(&pool).unwrap();
    let ic = valid.in_cluster.clone().unwrap();
    let owner = builder::owner_reference(&pool).unwrap();
    let none = WorkerDefaults { env_config_map: None, env_secret: None };
    let dep = builder::deployment(&valid, &ic, 1, &owner, &none);
    assert!(dep.spec.template.spec.unwrap().containers[0].env_from.is_none());
}

#[test]
fn desired_objects_serialise_for_server_side_apply() {
    // Server-side apply needs apiVersion and kind in the body.
    let (_, _, d) = build("gpu", 2);
    for (v, api, kind) in [
        (serde_json::to_value(&d.deployment).unwrap(), "apps/v1", "Deployment"),
        (serde_json::to_value(&d.service).unwrap(), "v1", "Service"),
        (serde_json::to_value(&d.pdb).unwrap(), "policy/v1", "PodDisruptionBudget"),
    ] {
        assert_eq!(v["apiVersion"], api);
        assert_eq!(v["kind"], kind);
        assert!(v.get("status").is_none(), "{kind}: status is not ours to apply");
    }
}
