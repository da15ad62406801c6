//! Discovery, CRUD, errors, list semantics, leases and metrics, through kube-rs.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, VersionMatch};
use kube::discovery::{Discovery, Scope};
use serde_json::json;

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn discovery_lists_builtins_and_crds() {
    let sim = start().await;
    let info = sim.client.apiserver_version().await.unwrap();
    assert_eq!(info.major, "1");

    install_gadget_crd(&sim.client).await;
    let discovery = Discovery::new(sim.client.clone()).run().await.unwrap();
    for (gvk, plural, namespaced) in [
        (kube::api::GroupVersionKind::gvk("", "v1", "Pod"), "pods", true),
        (kube::api::GroupVersionKind::gvk("", "v1", "Namespace"), "namespaces", false),
        (kube::api::GroupVersionKind::gvk("apps", "v1", "Deployment"), "deployments", true),
        (kube::api::GroupVersionKind::gvk("policy", "v1", "PodDisruptionBudget"), "poddisruptionbudgets", true),
        (kube::api::GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"), "leases", true),
        (kube::api::GroupVersionKind::gvk("events.k8s.io", "v1", "Event"), "events", true),
        (gadget_gvk(), "gadgets", true),
    ] {
        let (ar, caps) = discovery.resolve_gvk(&gvk).unwrap_or_else(|| panic!("{gvk:?} discovered"));
        assert_eq!(ar.plural, plural);
        assert_eq!(caps.scope == Scope::Namespaced, namespaced, "{plural}");
    }
    let (_, caps) = discovery.resolve_gvk(&gadget_gvk()).unwrap();
    assert!(caps.subresources.iter().any(|(ar, _)| ar.plural == "status"), "status subresource listed");

    // Aggregated discovery gives the same answers in two requests.
    let agg = Discovery::new(sim.client.clone()).run_aggregated().await.unwrap();
    assert!(agg.resolve_gvk(&gadget_gvk()).is_some());
    assert!(agg.resolve_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "Service")).is_some());

    // The raw resource list carries verbs and short names.
    let core = sim.client.list_core_api_resources("v1").await.unwrap();
    let pods = core.resources.iter().find(|r| r.name == "pods").unwrap();
    assert!(pods.verbs.contains(&"watch".to_string()));
    assert_eq!(pods.short_names.as_deref(), Some(&["po".to_string()][..]));
    assert!(core.resources.iter().any(|r| r.name == "pods/status"));
}

#[tokio::test]
async fn create_get_replace_delete_and_errors() {
    let sim = start().await;
    let pods: Api<Pod> = Api::default_namespaced(sim.client.clone());
    let created = pods.create(&PostParams::default(), &pod("web", json!({"app": "web"}))).await.unwrap();
    assert!(created.uid().is_some());
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.resource_version().unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(created.namespace().as_deref(), Some("default"));

    let e = api_err(pods.create(&PostParams::default(), &pod("web", json!({}))).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "pods \"web\" already exists");
    assert_eq!(e.details.as_ref().unwrap().kind, "pods");

    let e = api_err(pods.get("nope").await);
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "pods \"nope\" not found");

    let mut generated = pod("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("worker-".into());
    let g = pods.create(&PostParams::default(), &generated).await.unwrap();
    assert!(g.name_any().starts_with("worker-") && g.name_any().len() == "worker-".len() + 5);

    // Replace with a stale resourceVersion is a conflict; with the current one it works.
    let mut fresh = pods.get("web").await.unwrap();
    fresh.labels_mut().insert("tier".into(), "front".into());
    let replaced = pods.replace("web", &PostParams::default(), &fresh).await.unwrap();
    assert_ne!(replaced.resource_version(), created.resource_version());
    let e = api_err(pods.replace("web", &PostParams::default(), &fresh).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"), "{}", e.message);

    // Namespaced objects need an existing namespace.
    let elsewhere: Api<Pod> = Api::namespaced(sim.client.clone(), "missing");
    let e = api_err(elsewhere.create(&PostParams::default(), &pod("x", json!({}))).await);
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "namespaces \"missing\" not found");

    // Invalid names are 422 with causes.
    let e = api_err(pods.create(&PostParams::default(), &pod("Bad_Name", json!({}))).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert_eq!(e.details.as_ref().unwrap().causes[0].field, "metadata.name");

    // Delete returns the object; afterwards it is gone.
    let deleted = pods.delete("web", &DeleteParams::default()).await.unwrap();
    assert_eq!(deleted.left().unwrap().name_any(), "web");
    assert_eq!(api_err(pods.get("web").await).code, 404);
    assert_eq!(api_err(pods.delete("web", &DeleteParams::default()).await).code, 404);

    // Cluster-scoped kinds and the namespaces present at start.
    let nss: Api<Namespace> = Api::all(sim.client.clone());
    let names: Vec<String> = nss.list(&ListParams::default()).await.unwrap().iter().map(|n| n.name_any()).collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap()).await.unwrap();
    let ns = nss.get("team-a").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
}

#[tokio::test]
async fn generation_tracks_spec_only_and_noop_writes_are_free() {
    let sim = start().await;
    let deps: Api<Deployment> = Api::default_namespaced(sim.client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
    }))
    .unwrap();
    let d = deps.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));

    // Metadata change: new resourceVersion, same generation.
    let pp = PatchParams::default();
    let labelled = deps.patch("web", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await.unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    assert_ne!(labelled.resource_version(), d.resource_version());

    // Spec change bumps generation.
    let scaled = deps.patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));

    // The same patch again is a no-op: no new resourceVersion, no write counted as a change.
    let rv_before = sim.handle.resource_version();
    let again = deps.patch("web", &pp, &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    assert_eq!(again.resource_version(), scaled.resource_version());
    let replaced = deps.replace("web", &PostParams::default(), &again).await.unwrap();
    assert_eq!(replaced.resource_version(), scaled.resource_version());
    assert_eq!(sim.handle.resource_version(), rv_before);
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let sim = start().await;
    let pods: Api<Pod> = Api::default_namespaced(sim.client.clone());
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({"app": "cache", "tier": "back"})),
        ("e", json!({})),
    ] {
        pods.create(&PostParams::default(), &pod(name, labels)).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> { l.iter().map(|p| p.name_any()).collect() };
    for (sel, want) in [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier=back", vec!["b"]),
        ("app!=web", vec!["c", "d", "e"]),
        ("app in (db, cache)", vec!["c", "d"]),
        ("app notin (web),tier", vec!["d"]),
        ("tier", vec!["a", "b", "d"]),
        ("!tier", vec!["c", "e"]),
    ] {
        let got = names(pods.list(&ListParams::default().labels(sel)).await.unwrap());
        assert_eq!(got, want, "selector {sel}");
    }
    let got = names(pods.list(&ListParams::default().fields("metadata.name=c")).await.unwrap());
    assert_eq!(got, vec!["c"]);
    let got = names(pods.list(&ListParams::default().fields("metadata.name!=c,metadata.namespace=default")).await.unwrap());
    assert_eq!(got, vec!["a", "b", "d", "e"]);
    let e = api_err(pods.list(&ListParams::default().labels("app in web")).await);
    assert_eq!(e.code, 400);

    // Pages of two, all served from the first page's snapshot even while writes happen.
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(first.clone()), vec!["a", "b"]);
    let token = first.metadata.continue_.clone().unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    pods.create(&PostParams::default(), &pod("bb", json!({}))).await.unwrap();
    pods.delete("d", &DeleteParams::default()).await.unwrap();
    let second = pods.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(second.clone()), vec!["c", "d"]);
    assert_eq!(second.metadata.resource_version, first.metadata.resource_version);
    let third = pods.list(&ListParams::default().limit(2).continue_token(second.metadata.continue_.as_deref().unwrap())).await.unwrap();
    assert_eq!(names(third.clone()), vec!["e"]);
    assert!(third.metadata.continue_.is_none());

    // resourceVersionMatch: Exact reads the past, NotOlderThan refuses the future.
    let rv = first.metadata.resource_version.clone().unwrap();
    let exact = pods.list(&ListParams::default().at(&rv).matching(VersionMatch::Exact)).await.unwrap();
    assert_eq!(names(exact), vec!["a", "b", "c", "d", "e"]);
    let now = pods.list(&ListParams::default().at(&rv).matching(VersionMatch::NotOlderThan)).await.unwrap();
    assert_eq!(names(now), vec!["a", "b", "bb", "c", "e"]);
    // (Raw HTTP: kube's client retries 504s with backoff.)
    let future = sim.handle.resource_version() + 100;
    let (code, body) = raw(
        "GET",
        &format!("{}/api/v1/namespaces/default/pods?resourceVersion={future}&resourceVersionMatch=NotOlderThan", sim.handle.url()),
        None,
    )
    .await;
    assert_eq!(code, 504, "{body}");
    assert!(body.contains("Too large resource version"), "{body}");

    // Listing across namespaces.
    let all: Api<Pod> = Api::all(sim.client.clone());
    assert_eq!(all.list(&ListParams::default()).await.unwrap().items.len(), 5);
}

#[tokio::test]
async fn leases_support_optimistic_leader_election() {
    let sim = start().await;
    let leases: Api<Lease> = Api::default_namespaced(sim.client.clone());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "purrify-operator"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();

    // Two contenders read the same version; only the first replace wins.
    let seen_by_a = leases.get("purrify-operator").await.unwrap();
    let seen_by_b = seen_by_a.clone();
    let mut a = seen_by_a;
    a.spec.as_mut().unwrap().holder_identity = Some("a".into());
    a.spec.as_mut().unwrap().lease_transitions = Some(1);
    leases.replace("purrify-operator", &PostParams::default(), &a).await.unwrap();
    let mut b = seen_by_b;
    b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let e = api_err(leases.replace("purrify-operator", &PostParams::default(), &b).await);
    assert_eq!(e.code, 409);
    let now = leases.get("purrify-operator").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("a"));
}

#[tokio::test]
async fn services_get_cluster_ips_and_configmaps_round_trip() {
    let sim = start().await;
    let svcs: Api<Service> = Api::default_namespaced(sim.client.clone());
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {"selector": {"app": "worker"}, "ports": [{"port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    let s = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = s.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert!(spec.cluster_ip.unwrap().starts_with("10.96."));

    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"k": "v"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    assert_eq!(cms.get("cfg").await.unwrap().data.unwrap()["k"], "v");
}

#[tokio::test]
async fn metrics_count_requests_per_verb_and_resource() {
    let sim = start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    for i in 0..3 {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.get("c0").await.unwrap();
    let _ = cms.get("nope").await;
    assert_eq!(sim.handle.request_count("create", "configmaps"), 3);
    assert_eq!(sim.handle.request_count("get", "configmaps"), 2);

    // The same numbers over HTTP in Prometheus text.
    let (code, text) = raw("GET", &format!("{}/metrics", sim.handle.url()), None).await;
    assert_eq!(code, 200);
    assert!(text.contains("kubesim_requests_total{verb=\"create\",resource=\"configmaps\",code=\"201\"} 3"), "{text}");
    assert!(text.contains("kubesim_requests_total{verb=\"get\",resource=\"configmaps\",code=\"404\"} 1"), "{text}");
}

#[tokio::test]
async fn yaml_bodies_are_accepted() {
    let sim = start().await;
    let url = format!("{}/api/v1/namespaces/default/configmaps", sim.handle.url());
    let (code, body) =
        raw("POST", &url, Some(("application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n")))
            .await;
    assert_eq!(code, 201, "{body}");
    let apply = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  k: v\n";
    let (code, body) = raw("PATCH", &format!("{url}/applied?fieldManager=kubectl"), Some(("application/apply-patch+yaml", apply))).await;
    assert_eq!(code, 201, "{body}");
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client.clone());
    assert_eq!(cms.get("applied").await.unwrap().data.unwrap()["k"], "v");
}
