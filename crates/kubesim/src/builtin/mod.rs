//! Built-in kinds: the table of what is served (group, version, names, scope), the list
//! topology hints that strategic merge and apply need, and (in submodules) their
//! protobuf wire format, OpenAPI schemas and `kubectl get` columns.

pub mod proto;

use std::sync::Arc;

use serde_json::{Value, json};

use crate::resource::ResourceInfo;
use crate::schema::Schema;

/// Built-in list topology: which lists merge by key (containers by name, ...), so
/// strategic merge and apply behave as they do for the real types.
fn pod_spec_hints() -> Value {
    let by_name =
        |items: Value| json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": items});
    let container = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["containerPort", "protocol"], "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
        "env": by_name(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        "volumeMounts": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["mountPath"], "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    }});
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
        "containers": by_name(container.clone()),
        "initContainers": by_name(container),
        "volumes": by_name(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        "imagePullSecrets": by_name(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}))
    }})
}

fn conditions_hint() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
        "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
    }})
}

fn hints(plural: &str) -> Value {
    let template = || {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
            "template": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"spec": pod_spec_hints()}}
        }})
    };
    let spec = match plural {
        "pods" => pod_spec_hints(),
        "deployments" | "jobs" => template(),
        "services" => {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
            }})
        }
        _ => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    };
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
        "spec": spec,
        "status": conditions_hint()
    }})
}

/// One served built-in kind.
pub struct Builtin {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    /// Has a status subresource.
    pub status: bool,
    /// In the `all` category (`kubectl get all`).
    pub all: bool,
}

const fn b(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    flags: u8,
) -> Builtin {
    Builtin { group, version, plural, kind, namespaced, short, status: flags & STATUS != 0, all: flags & ALL != 0 }
}

const NS: bool = true;
const CLUSTER: bool = false;
/// Has a status subresource.
const STATUS: u8 = 1;
/// In the `all` category.
const ALL: u8 = 2;

/// Everything served besides custom resources, with the scope, short names and
/// subresources a 1.33 server reports.
pub const BUILTINS: &[Builtin] = &[
    b("", "v1", "namespaces", "Namespace", CLUSTER, &["ns"], STATUS),
    b("", "v1", "pods", "Pod", NS, &["po"], STATUS | ALL),
    b("", "v1", "services", "Service", NS, &["svc"], STATUS | ALL),
    b("", "v1", "events", "Event", NS, &["ev"], 0),
    b("", "v1", "configmaps", "ConfigMap", NS, &["cm"], 0),
    b("", "v1", "secrets", "Secret", NS, &[], 0),
    b("", "v1", "serviceaccounts", "ServiceAccount", NS, &["sa"], 0),
    b("apps", "v1", "deployments", "Deployment", NS, &["deploy"], STATUS | ALL),
    b("batch", "v1", "jobs", "Job", NS, &[], STATUS | ALL),
    b("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", NS, &["hpa"], STATUS | ALL),
    b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", NS, &["pdb"], STATUS),
    b("networking.k8s.io", "v1", "ingresses", "Ingress", NS, &["ing"], STATUS),
    b("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", NS, &["netpol"], 0),
    b("rbac.authorization.k8s.io", "v1", "roles", "Role", NS, &[], 0),
    b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", NS, &[], 0),
    b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", CLUSTER, &[], 0),
    b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", CLUSTER, &[], 0),
    b("coordination.k8s.io", "v1", "leases", "Lease", NS, &[], 0),
    b("events.k8s.io", "v1", "events", "Event", NS, &["ev"], 0),
    b("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER, &["crd", "crds"], STATUS),
];

impl Builtin {
    pub fn info(&self) -> ResourceInfo {
        let schema = Schema::parse(&hints(self.plural), "builtin").expect("builtin hints are valid");
        ResourceInfo {
            group: self.group.into(),
            version: self.version.into(),
            plural: self.plural.into(),
            singular: self.kind.to_lowercase(),
            kind: self.kind.into(),
            list_kind: format!("{}List", self.kind),
            namespaced: self.namespaced,
            short_names: self.short.iter().map(|s| s.to_string()).collect(),
            categories: if self.all { vec!["all".into()] } else { Vec::new() },
            status_subresource: self.status,
            validating: false,
            schema: Arc::new(schema),
            crd: None,
            openapi_schema: None,
            printer_columns: Vec::new(),
        }
    }
}
