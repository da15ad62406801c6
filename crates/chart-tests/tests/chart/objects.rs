//! Rendered manifests as the typed structs of their kind. A manifest must not only
//! deserialize: serialized back it must be the same document, so a field the type does not
//! know (a typo, a field at the wrong level) is an error, not silently dropped.

use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kubesim::schema::Schema;
use purrify_api::GpuPool;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::support::{Doc, chart_dir};

/// Prometheus Operator's ServiceMonitor, the fields the chart writes (no k8s-openapi type
/// exists for it); unknown fields are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub namespace_selector: NamespaceSelector,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub match_names: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub port: String,
    pub path: String,
    pub interval: String,
}

/// A rendered object, typed. Parsing is the check for some kinds; their contents are not
/// looked at further.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub enum Object {
    Deployment(Box<Deployment>),
    Service(Box<Service>),
    ServiceAccount(Box<ServiceAccount>),
    ConfigMap(Box<ConfigMap>),
    Secret(Box<Secret>),
    Pod(Box<Pod>),
    Ingress(Box<Ingress>),
    NetworkPolicy(Box<NetworkPolicy>),
    Hpa(Box<HorizontalPodAutoscaler>),
    Pdb(Box<PodDisruptionBudget>),
    Role(Box<Role>),
    ClusterRole(Box<ClusterRole>),
    RoleBinding(Box<RoleBinding>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Crd(Box<CustomResourceDefinition>),
    GpuPool(Box<GpuPool>),
    ServiceMonitor(Box<ServiceMonitor>),
}

/// The rendered manifests of one release, typed, with the documents they came from.
pub struct Release {
    pub docs: Vec<Doc>,
    pub objects: Vec<Object>,
}

impl Release {
    pub fn new(docs: Vec<Doc>) -> Release {
        let objects = docs.iter().map(typed).collect();
        Release { docs, objects }
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.objects.iter().filter_map(|o| if let Object::Deployment(d) = o { Some(&**d) } else { None })
    }
    pub fn deployment(&self, name: &str) -> &Deployment {
        self.deployments().find(|d| d.metadata.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("no Deployment {name}"))
    }
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.objects.iter().filter_map(|o| if let Object::Service(d) = o { Some(&**d) } else { None })
    }
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.objects.iter().filter_map(|o| if let Object::Pod(d) = o { Some(&**d) } else { None })
    }
    pub fn gpu_pools(&self) -> impl Iterator<Item = &GpuPool> {
        self.objects.iter().filter_map(|o| if let Object::GpuPool(d) = o { Some(&**d) } else { None })
    }
    pub fn count(&self, kind: &str) -> usize {
        self.docs.iter().filter(|d| d.kind() == kind).count()
    }
    pub fn has(&self, kind: &str, name: &str) -> bool {
        self.docs.iter().any(|d| d.kind() == kind && d.name() == name)
    }
}

/// The manifest as the struct of its kind; panics when it is not one, or when the struct
/// does not give back the same document.
pub fn typed(doc: &Doc) -> Object {
    match (doc.api_version(), doc.kind()) {
        ("apps/v1", "Deployment") => Object::Deployment(Box::new(exact(doc))),
        ("v1", "Service") => Object::Service(Box::new(exact(doc))),
        ("v1", "ServiceAccount") => Object::ServiceAccount(Box::new(exact(doc))),
        ("v1", "ConfigMap") => Object::ConfigMap(Box::new(exact(doc))),
        ("v1", "Secret") => Object::Secret(Box::new(exact(doc))),
        ("v1", "Pod") => Object::Pod(Box::new(exact(doc))),
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(Box::new(exact(doc))),
        ("networking.k8s.io/v1", "NetworkPolicy") => Object::NetworkPolicy(Box::new(exact(doc))),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => Object::Hpa(Box::new(exact(doc))),
        ("policy/v1", "PodDisruptionBudget") => Object::Pdb(Box::new(exact(doc))),
        ("rbac.authorization.k8s.io/v1", "Role") => Object::Role(Box::new(exact(doc))),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => Object::ClusterRole(Box::new(exact(doc))),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => Object::RoleBinding(Box::new(exact(doc))),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => Object::ClusterRoleBinding(Box::new(exact(doc))),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => Object::Crd(Box::new(exact(doc))),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => Object::ServiceMonitor(Box::new(exact(doc))),
        ("purrify.io/v1alpha1", "GpuPool") => Object::GpuPool(Box::new(admitted_pool(doc))),
        (api, kind) => panic!("{}: {api} {kind} is not a kind the chart is meant to render", doc.source),
    }
}

fn exact<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let t: T = serde_json::from_value(doc.value.clone())
        .unwrap_or_else(|e| panic!("{} does not parse as {}: {e}", doc.id(), std::any::type_name::<T>()));
    let back = serde_json::to_value(&t).unwrap();
    let mut diffs = Vec::new();
    diff(&doc.value, &back, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{}: the {} type does not keep these fields (unknown or misplaced):\n{}",
        doc.id(),
        doc.kind(),
        diffs.join("\n")
    );
    t
}

/// Paths where `a` (rendered) and `b` (through the type) differ.
pub fn diff(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(v, w, &format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: dropped ({v})")),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(format!("{path}.{k}: added ({})", y[k]));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} became {b}")),
    }
}

/// The GpuPool schema of the chart's CRD, as kubesim admits custom resources with it.
pub fn gpupool_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let text = std::fs::read_to_string(chart_dir().join("crds/gpupools.purrify.io.yaml")).unwrap();
        let crd: Value = serde_yaml::from_str(&text).unwrap();
        let infos = kubesim::crd::compile(&crd, None).unwrap_or_else(|causes| panic!("the GpuPool CRD compiles: {causes:?}"));
        (*infos[0].schema).clone()
    })
}

/// A GpuPool as the API server would admit it: nothing pruned (every field is one the schema
/// knows), OpenAPI and CEL rules pass; then the Rust type reads it.
fn admitted_pool(doc: &Doc) -> GpuPool {
    let schema = gpupool_schema();
    let mut v = doc.value.clone();
    schema.prune(&mut v, true);
    let mut pruned = Vec::new();
    diff(&doc.value, &v, "", &mut pruned);
    assert!(pruned.is_empty(), "{}: fields the CRD schema does not know:\n{}", doc.id(), pruned.join("\n"));
    schema.apply_defaults(&mut v);
    let mut errs = Vec::new();
    schema.validate(&v, None, "", &mut errs);
    let msgs: Vec<String> = errs.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
    assert!(msgs.is_empty(), "{} is refused by the CRD schema: {msgs:?}", doc.id());
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{}: {e}", doc.id()))
}
