//! Component schemas: built-in kinds from their protobuf layout (field names, types, list
//! and patch strategies; no descriptions), custom resources from their CRD's
//! `openAPIV3Schema`, each kind marked with `x-kubernetes-group-version-kind`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::builtin::proto::{self, Field, Ty};
use crate::resource::ResourceInfo;

pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// Schema name -> schema, as in `components.schemas` (v3) or `definitions` (v2).
pub type Schemas = BTreeMap<String, Value>;

pub fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `k8s.io.api.core.v1.Pod` -> `io.k8s.api.core.v1.Pod`.
fn openapi_name(proto_name: &str) -> String {
    match proto_name.strip_prefix("k8s.io.") {
        Some(rest) => format!("io.k8s.{rest}"),
        None => proto_name.to_string(),
    }
}

/// `purrify.io` `v1alpha1` `GpuPool` -> `io.purrify.v1alpha1.GpuPool`, as the real server names them.
fn crd_name(info: &ResourceInfo, kind: &str) -> String {
    let reversed: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{kind}", reversed.join("."), info.version)
}

/// The component name of a kind (None for a built-in with no known layout).
pub fn kind_schema_name(info: &ResourceInfo) -> Option<String> {
    if info.crd.is_some() {
        return Some(crd_name(info, &info.kind));
    }
    if info.group == "apiextensions.k8s.io" {
        return Some(format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{}.{}", info.version, info.kind));
    }
    proto::message_for(&info.api_version(), &info.kind).map(|m| openapi_name(&m))
}

fn gvk(info: &ResourceInfo, kind: &str) -> Value {
    json!([{"group": info.group, "version": info.version, "kind": kind}])
}

fn special_schema(proto_name: &str) -> Value {
    match proto_name.rsplit('.').next().unwrap_or_default() {
        "Time" | "MicroTime" => json!({"type": "string", "format": "date-time"}),
        "Duration" | "Quantity" => json!({"type": "string"}),
        "IntOrString" => json!({"type": "string", "format": "int-or-string"}),
        _ => json!({"type": "object"}),
    }
}

fn scalar_schema(ty: &Ty, out: &mut Schemas) -> Value {
    match ty {
        Ty::String => json!({"type": "string"}),
        Ty::Bytes => json!({"type": "string", "format": "byte"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Int32 => json!({"type": "integer", "format": "int32"}),
        Ty::Int64 => json!({"type": "integer", "format": "int64"}),
        Ty::Map(_, v) => json!({"type": "object", "additionalProperties": scalar_schema(v, out)}),
        Ty::Message(m) => {
            add_message(m, out);
            reference(&openapi_name(m))
        }
    }
}

fn field_schema(f: &Field, out: &mut Schemas) -> Value {
    let inner = scalar_schema(&f.ty, out);
    let mut s = if f.repeated {
        json!({"type": "array", "items": inner})
    } else if matches!(f.ty, Ty::Message(_)) {
        json!({"allOf": [inner]})
    } else {
        inner
    };
    if let Some(t) = &f.list_type {
        s["x-kubernetes-list-type"] = json!(t);
    }
    if !f.list_keys.is_empty() {
        s["x-kubernetes-list-map-keys"] = json!(f.list_keys);
    }
    if let Some(p) = &f.patch_strategy {
        s["x-kubernetes-patch-strategy"] = json!(p);
    }
    if let Some(k) = &f.patch_key {
        s["x-kubernetes-patch-merge-key"] = json!(k);
    }
    s
}

fn collect_properties(fields: &[Field], props: &mut Map<String, Value>, out: &mut Schemas) {
    for f in fields {
        match &f.ty {
            Ty::Message(m) if f.inline => {
                if let Some(inner) = proto::table().messages.get(m) {
                    collect_properties(inner, props, out);
                }
            }
            _ => {
                props.insert(f.json.clone(), field_schema(f, out));
            }
        }
    }
}

/// Adds the schema of a protobuf message, and of every message it refers to.
pub fn add_message(proto_name: &str, out: &mut Schemas) {
    let name = openapi_name(proto_name);
    if out.contains_key(&name) {
        return;
    }
    if proto::is_special(proto_name) {
        out.insert(name, special_schema(proto_name));
        return;
    }
    out.insert(name.clone(), Value::Null);
    let mut props = Map::new();
    if let Some(fields) = proto::table().messages.get(proto_name) {
        collect_properties(fields, &mut props, out);
    }
    out.insert(name, json!({"type": "object", "properties": props}));
}

fn type_meta(props: &mut Map<String, Value>) {
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
    );
    props.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
    );
}

/// The meta types every document's paths refer to.
pub fn add_meta(out: &mut Schemas) {
    for m in ["ObjectMeta", "Status", "DeleteOptions"] {
        add_message(&format!("k8s.io.apimachinery.pkg.apis.meta.v1.{m}"), out);
    }
    out.entry(PATCH.into()).or_insert_with(|| json!({"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}));
}

/// Adds the schemas of a served kind and its list; returns the kind's schema name.
pub fn add_kind(info: &ResourceInfo, out: &mut Schemas) -> Option<String> {
    let name = kind_schema_name(info)?;
    let mut schema = match (&info.openapi_schema, proto::message_for(&info.api_version(), &info.kind)) {
        (Some(raw), _) => (**raw).clone(),
        (None, Some(m)) if info.crd.is_none() => {
            add_message(&m, out);
            out.get(&name).cloned().unwrap_or(json!({"type": "object"}))
        }
        // CustomResourceDefinitions: described loosely.
        _ => json!({"type": "object", "properties": {"spec": {"type": "object"}, "status": {"type": "object"}}}),
    };
    if !schema.get("properties").is_some_and(Value::is_object) {
        schema["properties"] = json!({});
    }
    let props = schema["properties"].as_object_mut().expect("ensured above");
    type_meta(props);
    props.insert(
        "metadata".into(),
        json!({"allOf": [reference(OBJECT_META)], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
    );
    schema["x-kubernetes-group-version-kind"] = gvk(info, &info.kind);
    out.insert(name.clone(), schema);

    let mut list_props = Map::new();
    type_meta(&mut list_props);
    list_props.insert("items".into(), json!({"type": "array", "items": reference(&name)}));
    list_props.insert("metadata".into(), json!({"allOf": [reference(LIST_META)]}));
    let list_name = format!("{}{}", name.strip_suffix(info.kind.as_str()).unwrap_or(&name), info.list_kind);
    out.insert(
        list_name,
        json!({"type": "object", "required": ["items"], "properties": list_props, "x-kubernetes-group-version-kind": gvk(info, &info.list_kind)}),
    );
    add_meta(out);
    add_message("k8s.io.apimachinery.pkg.apis.meta.v1.ListMeta", out);
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_have_schemas_with_gvk_and_patch_strategies() {
        let reg = crate::resource::Registry::with_builtins();
        let info = reg.get("apps", "v1", "deployments").unwrap();
        let mut out = Schemas::new();
        assert_eq!(add_kind(&info, &mut out).as_deref(), Some("io.k8s.api.apps.v1.Deployment"));
        let d = &out["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert!(d["properties"]["spec"]["allOf"][0]["$ref"].as_str().unwrap().ends_with("io.k8s.api.apps.v1.DeploymentSpec"));
        let c = &out["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(out["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"][0]["kind"], "DeploymentList");
        // Embedded structs are flattened: a volume has `configMap` beside `name`.
        assert!(out["io.k8s.api.core.v1.Volume"]["properties"].get("configMap").is_some());
        assert!(out.values().all(|v| !v.is_null()), "every referenced schema is filled in");
    }
}
