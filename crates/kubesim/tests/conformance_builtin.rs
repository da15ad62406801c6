//! The built-in kinds a Helm chart needs, through kube-rs: discovery with the right scope,
//! create/get/list/watch/delete with exact round trips, cluster vs namespaced paths, 404s.

mod common;

use common::*;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchEvent, WatchParams};
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};

struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// Everything but apiVersion, kind and metadata.
    body: Value,
}

fn kinds() -> Vec<Kind> {
    let rules = json!([{"apiGroups": ["purrify.io"], "resources": ["gpupools", "gpupools/status"], "verbs": ["get", "list", "watch"], "resourceNames": ["default"]}]);
    let pod_template = json!({"metadata": {"labels": {"app": "w"}}, "spec": {"restartPolicy": "Never",
        "containers": [{"name": "w", "image": "busybox:1.36", "command": ["sh", "-c", "true"],
            "resources": {"limits": {"cpu": "500m", "memory": "64Mi", "nvidia.com/gpu": "1"}}}]}});
    let k = |group, version, kind, plural, namespaced, body| Kind { group, version, kind, plural, namespaced, body };
    vec![
        k("rbac.authorization.k8s.io", "v1", "Role", "roles", true, json!({"rules": rules})),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            json!({"rules": rules,
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"purrify.io/aggregate": "true"}}]}}),
        ),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "default"}, {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}]}),
        ),
        k(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            json!({
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}]}),
        ),
        k(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            json!({"automountServiceAccountToken": false, "imagePullSecrets": [{"name": "registry"}]}),
        ),
        k(
            "",
            "v1",
            "Secret",
            "secrets",
            true,
            json!({"type": "kubernetes.io/basic-auth", "data": {"username": "YWRtaW4="}, "immutable": true}),
        ),
        k("", "v1", "ConfigMap", "configmaps", true, json!({"data": {"a.yaml": "x: 1\n"}, "binaryData": {"b": "AAE="}})),
        k("", "v1", "Pod", "pods", true, json!({"spec": pod_template["spec"]})),
        k(
            "networking.k8s.io",
            "v1",
            "Ingress",
            "ingresses",
            true,
            json!({"spec": {"ingressClassName": "nginx", "rules": [{"host": "purrify.example",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "gateway", "port": {"number": 8080}}}}]}}]}}),
        ),
        k(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
            json!({"spec": {"podSelector": {"matchLabels": {"app": "worker"}},
            "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gateway"}}}], "ports": [{"port": 8000, "protocol": "TCP"}]}]}}),
        ),
        k(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            true,
            json!({"spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gateway"}, "minReplicas": 1, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
        ),
        k(
            "batch",
            "v1",
            "Job",
            "jobs",
            true,
            json!({"spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": pod_template}}),
        ),
        k(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            json!({"spec": {"maxUnavailable": "25%", "selector": {"matchLabels": {"app": "w"}}}}),
        ),
    ]
}

fn api(sim: &Sim, k: &Kind) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(k.group, k.version, k.kind), k.plural);
    if k.namespaced { Api::namespaced_with(sim.client.clone(), "default", &ar) } else { Api::all_with(sim.client.clone(), &ar) }
}

fn object(k: &Kind, name: &str) -> DynamicObject {
    let api_version = if k.group.is_empty() { k.version.to_string() } else { format!("{}/{}", k.group, k.version) };
    let mut v = json!({"apiVersion": api_version, "kind": k.kind, "metadata": {"name": name, "labels": {"test": "builtin"}}});
    for (f, x) in k.body.as_object().unwrap() {
        v[f] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// The object's own fields (not metadata or server-set status), as JSON.
fn content(o: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(&o.data).unwrap();
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

#[tokio::test]
async fn discovery_lists_each_kind_with_its_scope() {
    let sim = start().await;
    let discovery = Discovery::new(sim.client.clone()).run_aggregated().await.unwrap();
    for k in kinds() {
        let (ar, caps) =
            discovery.resolve_gvk(&GroupVersionKind::gvk(k.group, k.version, k.kind)).unwrap_or_else(|| panic!("{} discovered", k.kind));
        assert_eq!(ar.plural, k.plural);
        assert_eq!(caps.scope == Scope::Namespaced, k.namespaced, "{}", k.kind);
    }
    let (code, body) = raw("GET", &format!("{}/apis/batch/v1", sim.handle.url()), None).await;
    assert_eq!(code, 200);
    let jobs = serde_json::from_str::<Value>(&body).unwrap()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "jobs")
        .cloned()
        .unwrap();
    assert_eq!(jobs["categories"], json!(["all"]));
    assert!(body.contains("\"jobs/status\""), "{body}");
}

#[tokio::test]
async fn each_kind_round_trips_through_create_get_list_and_delete() {
    let sim = start().await;
    for k in kinds() {
        let api = api(&sim, &k);
        let sent = object(&k, "one");
        let created = api.create(&PostParams::default(), &sent).await.unwrap_or_else(|e| panic!("{} created: {e}", k.kind));
        assert_eq!(content(&created), content(&sent), "{} stored exactly as sent", k.kind);
        assert_eq!(created.metadata.namespace.is_some(), k.namespaced, "{} scope", k.kind);
        let got = api.get("one").await.unwrap();
        assert_eq!(serde_json::to_value(&got).unwrap(), serde_json::to_value(&created).unwrap(), "{}", k.kind);
        let listed = api.list(&ListParams::default().labels("test=builtin")).await.unwrap();
        assert_eq!(listed.items.iter().filter_map(|o| o.metadata.name.as_deref()).collect::<Vec<_>>(), ["one"], "{}", k.kind);
        let e = api_err(api.create(&PostParams::default(), &sent).await);
        assert_eq!(e.code, 409, "{}", k.kind);
        api.delete("one", &DeleteParams::default()).await.unwrap();
        let e = api_err(api.get("one").await);
        assert_eq!(e.code, 404, "{}", k.kind);
        let group = if k.group.is_empty() { String::new() } else { format!(".{}", k.group) };
        assert_eq!(e.message, format!("{}{group} \"one\" not found", k.plural));
    }
}

#[tokio::test]
async fn watches_see_rbac_and_job_objects_come_and_go() {
    let sim = start().await;
    for k in kinds().into_iter().filter(|k| matches!(k.kind, "ClusterRoleBinding" | "Role" | "Job")) {
        let api = api(&sim, &k);
        let rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
        let mut events = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
        api.create(&PostParams::default(), &object(&k, "watched")).await.unwrap();
        api.delete("watched", &DeleteParams::default()).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match events.try_next().await.unwrap().expect("watch event") {
                WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.name.unwrap())),
                WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.name.unwrap())),
                _ => {}
            }
        }
        assert_eq!(seen, [("ADDED", "watched".to_string()), ("DELETED", "watched".to_string())], "{}", k.kind);
    }
}

#[tokio::test]
async fn cluster_and_namespaced_paths_and_unknown_resources() {
    let sim = start().await;
    let url = sim.handle.url();
    let body = |kind: &str| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "x"}}).to_string();
    let rbac = format!("{url}/apis/rbac.authorization.k8s.io/v1");

    // A ClusterRole lives at the cluster path only.
    let (code, _) = raw("POST", &format!("{rbac}/clusterroles"), Some(("application/json", &body("ClusterRole")))).await;
    assert_eq!(code, 201);
    assert_eq!(raw("GET", &format!("{rbac}/clusterroles/x"), None).await.0, 200);
    assert_eq!(raw("GET", &format!("{rbac}/namespaces/default/clusterroles/x"), None).await.0, 404);
    // A Role needs a namespace to be created in, and is listed across namespaces.
    assert_eq!(raw("POST", &format!("{rbac}/roles"), Some(("application/json", &body("Role")))).await.0, 405);
    assert_eq!(raw("POST", &format!("{rbac}/namespaces/kube-system/roles"), Some(("application/json", &body("Role")))).await.0, 201);
    let (code, list) = raw("GET", &format!("{rbac}/roles"), None).await;
    assert_eq!(code, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["kind"], "RoleList");
    assert_eq!(list["items"][0]["metadata"]["namespace"], "kube-system");
    // A Role in a namespace that does not exist is refused.
    assert_eq!(raw("POST", &format!("{rbac}/namespaces/nowhere/roles"), Some(("application/json", &body("Role")))).await.0, 404);

    for path in [
        "/apis/rbac.authorization.k8s.io/v1/widgets",
        "/apis/batch/v2/jobs",
        "/apis/nope.example/v1",
        "/api/v1/namespaces/default/ingresses",
    ] {
        let (code, body) = raw("GET", &format!("{url}{path}"), None).await;
        assert_eq!(code, 404, "{path}: {body}");
    }
    let (code, body) = raw("GET", &format!("{rbac}/namespaces/default/rolebindings/missing"), None).await;
    assert_eq!(code, 404);
    assert!(body.contains("rolebindings.rbac.authorization.k8s.io \\\"missing\\\" not found"), "{body}");
}
