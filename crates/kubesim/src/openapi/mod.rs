//! `/openapi/v3` (an index, then one document per group-version) and `/openapi/v2` (one
//! document, JSON or protobuf: see `v2proto`), built from what the registry serves at the moment of the request, so
//! CRDs appear and disappear with their definitions.
//!
//! kubectl reads them to decide how to validate: each PATCH operation carries
//! `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter, which tells
//! kubectl (1.27+) that the server validates fields itself (`fieldValidation=Strict`), so it
//! skips client-side validation. `kubectl explain` walks the component schemas; `kubectl
//! apply` takes the built-in kinds' patch strategies from them.

pub mod schemas;
pub mod serve;
pub mod v2proto;

use serde_json::{Map, Value, json};

use crate::resource::{Registry, ResourceInfo};
use schemas::{DELETE_OPTIONS, PATCH, STATUS, Schemas, reference};

/// The server version the documents describe.
const TITLE_VERSION: &str = "v1.33.0";

/// `api/v1` or `apis/{group}/{version}`: the key in the v3 index and the URL tail.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

fn param(name: &str, location: &str, description: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "description": description, "schema": {"type": "string", "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn query_params(action: &str) -> Vec<Value> {
    let q = |n: &str, d: &str| param(n, "query", d);
    let write = || {
        vec![
            q(
                "dryRun",
                "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
            ),
            q("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
            q(
                "fieldValidation",
                "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: unknown fields are dropped silently. - Warn: each unknown field is reported in a warning header and dropped (the default). - Strict: the request fails with BadRequest when it has unknown fields.",
            ),
        ]
    };
    let list = || {
        [
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "resourceVersionMatch",
            "watch",
            "allowWatchBookmarks",
            "sendInitialEvents",
            "timeoutSeconds",
        ]
        .iter()
        .map(|n| q(n, "See the Kubernetes API conventions for list options."))
        .collect()
    };
    match action {
        "post" | "put" => write(),
        "patch" => {
            let mut w = write();
            w.push(q(
                "force",
                "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
            ));
            w
        }
        "list" | "deletecollection" => list(),
        _ => Vec::new(),
    }
}

fn camel(group: &str) -> String {
    let g = if group.is_empty() { "core" } else { group.strip_suffix(".k8s.io").unwrap_or(group) };
    g.split(['.', '-']).map(|p| p[..1].to_uppercase() + &p[1..]).collect()
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}, "application/yaml": {"schema": schema}})
}

/// One operation of a path, with what kubectl looks for: the action, the GVK, parameters.
fn operation(info: &ResourceInfo, action: &str, kind_ref: &Value, list_ref: &Value, sub: &str) -> Value {
    let word = match action {
        "get" => "read",
        "put" => "replace",
        "post" => "create",
        "deletecollection" => "deleteCollection",
        other => other,
    };
    let scope = if info.namespaced && action != "listAll" { "Namespaced" } else { "" };
    let word = if action == "listAll" { "list" } else { word };
    let suffix = if sub.is_empty() { String::new() } else { sub[..1].to_uppercase() + &sub[1..] };
    let mut op = json!({
        "operationId": format!("{word}{}{}{scope}{}{}", camel(&info.group), camel(&info.version), info.kind, suffix),
        "tags": [format!("{}_{}", if info.group.is_empty() { "core" } else { &info.group }, info.version)],
        "x-kubernetes-action": if action == "listAll" { "list" } else { action },
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
        "parameters": query_params(if action == "listAll" { "list" } else { action }),
    });
    let returns = match action {
        "list" | "listAll" => list_ref.clone(),
        "deletecollection" => reference(STATUS),
        _ => kind_ref.clone(),
    };
    let mut responses =
        json!({"200": {"description": "OK", "content": json_content(returns.clone())}, "401": {"description": "Unauthorized"}});
    match action {
        "post" | "put" | "patch" => responses["201"] = json!({"description": "Created", "content": json_content(returns)}),
        "delete" => responses["202"] = json!({"description": "Accepted", "content": json_content(returns)}),
        _ => {}
    }
    op["responses"] = responses;
    match action {
        "post" | "put" => op["requestBody"] = json!({"content": json_content(kind_ref.clone()), "required": true}),
        "patch" => {
            let p = json!({"schema": reference(PATCH)});
            let mut content = json!({
                "application/apply-patch+yaml": p, "application/json-patch+json": p, "application/merge-patch+json": p,
            });
            if info.crd.is_none() {
                content["application/strategic-merge-patch+json"] = p;
            }
            op["requestBody"] = json!({"content": content, "required": true});
        }
        "delete" | "deletecollection" => op["requestBody"] = json!({"content": json_content(reference(DELETE_OPTIONS))}),
        _ => {}
    }
    op
}

/// The paths of one kind: collection, item, status, and the all-namespaces list.
fn paths_of(info: &ResourceInfo, kind_name: &str, paths: &mut Map<String, Value>) {
    let prefix = format!("/{}", gv_path(&info.group, &info.version));
    let kind_ref = reference(kind_name);
    let list_ref = reference(&format!("{}{}", kind_name.strip_suffix(info.kind.as_str()).unwrap_or(kind_name), info.list_kind));
    let collection =
        if info.namespaced { format!("{prefix}/namespaces/{{namespace}}/{}", info.plural) } else { format!("{prefix}/{}", info.plural) };
    let ns_param = || param("namespace", "path", "object name and auth scope, such as for teams and projects");
    let name_param = || param("name", "path", &format!("name of the {}", info.kind));
    let item = |params: Vec<Value>, actions: &[&str], sub: &str| {
        let mut p = json!({"parameters": params});
        for a in actions {
            let method = match *a {
                "list" | "get" | "listAll" => "get",
                "deletecollection" => "delete",
                other => other,
            };
            p[method] = operation(info, a, &kind_ref, &list_ref, sub);
        }
        p
    };
    let base: Vec<Value> = if info.namespaced { vec![ns_param()] } else { Vec::new() };
    paths.insert(collection.clone(), item(base.clone(), &["list", "post", "deletecollection"], ""));
    let mut named = base;
    named.push(name_param());
    paths.insert(format!("{collection}/{{name}}"), item(named.clone(), &["get", "put", "patch", "delete"], ""));
    if info.status_subresource {
        paths.insert(format!("{collection}/{{name}}/status"), item(named, &["get", "put", "patch"], "status"));
    }
    if info.namespaced {
        paths.insert(format!("{prefix}/{}", info.plural), item(Vec::new(), &["listAll"], ""));
    }
}

/// The OpenAPI v3 document of one group-version, or None if nothing is served there.
pub fn v3_document(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let infos = reg.in_group_version(group, version);
    if infos.is_empty() {
        return None;
    }
    let mut components = Schemas::new();
    let mut paths = Map::new();
    schemas::add_meta(&mut components);
    for info in &infos {
        if let Some(name) = schemas::add_kind(info, &mut components) {
            paths_of(info, &name, &mut paths);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": TITLE_VERSION},
        "paths": paths,
        "components": {"schemas": components},
    }))
}

/// A stable content hash for the index's `?hash=` (FNV-1a, 64 bits).
pub fn hash(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{h:016X}")
}

/// `/openapi/v3`: every served group-version and the URL of its current document.
pub fn v3_index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in reg.group_versions() {
        if let Some(doc) = v3_document(reg, &g, &v) {
            let key = gv_path(&g, &v);
            paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&doc))}));
        }
    }
    json!({"paths": paths})
}

/// Rewrites a v3 fragment for Swagger 2.0: definitions refs, no `nullable`.
fn to_v2_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("nullable");
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/components/schemas/", "#/definitions/");
            }
            m.values_mut().for_each(to_v2_schema);
        }
        Value::Array(a) => a.iter_mut().for_each(to_v2_schema),
        _ => {}
    }
}

fn to_v2_operation(op: &Value) -> Value {
    let mut out = op.clone();
    let o = out.as_object_mut().expect("operations are objects");
    let mut params: Vec<Value> = o
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let mut p = p.clone();
            if let Some(s) = p.as_object_mut().and_then(|m| m.remove("schema")) {
                p["type"] = s["type"].clone();
                p["uniqueItems"] = json!(true);
            }
            p
        })
        .collect();
    if let Some(body) = o.remove("requestBody") {
        let schema = body["content"].as_object().and_then(|c| c.values().next()).map(|c| c["schema"].clone()).unwrap_or(json!({}));
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
        o.insert("consumes".into(), json!(body["content"].as_object().map(|c| c.keys().cloned().collect::<Vec<_>>())));
    }
    o.insert("parameters".into(), json!(params));
    o.insert("produces".into(), json!(["application/json", "application/yaml"]));
    if let Some(Value::Object(responses)) = o.get_mut("responses") {
        for r in responses.values_mut() {
            if let Some(schema) = r.get("content").and_then(|c| c.get("application/json")).map(|c| c["schema"].clone()) {
                *r = json!({"description": r["description"], "schema": schema});
            }
        }
    }
    to_v2_schema(&mut out);
    out
}

/// `/openapi/v2`: every group-version in one Swagger 2.0 document.
pub fn v2_document(reg: &Registry) -> Value {
    let mut definitions = Map::new();
    let mut paths = Map::new();
    for (g, v) in reg.group_versions() {
        let Some(doc) = v3_document(reg, &g, &v) else { continue };
        if let Some(schemas) = doc.pointer("/components/schemas").and_then(Value::as_object) {
            for (name, s) in schemas {
                let mut s = s.clone();
                to_v2_schema(&mut s);
                definitions.insert(name.clone(), s);
            }
        }
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            let mut out = Map::new();
            for (k, op) in item.as_object().into_iter().flatten() {
                if k == "parameters" {
                    let mut p = op.clone();
                    for x in p.as_array_mut().into_iter().flatten() {
                        if let Some(s) = x.as_object_mut().and_then(|m| m.remove("schema")) {
                            x["type"] = s["type"].clone();
                        }
                    }
                    out.insert(k.clone(), p);
                } else {
                    out.insert(k.clone(), to_v2_operation(op));
                }
            }
            paths.insert(path.clone(), Value::Object(out));
        }
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": TITLE_VERSION}, "paths": paths, "definitions": definitions})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_gvk_and_field_validation() {
        let reg = Registry::with_builtins();
        let doc = v3_document(&reg, "rbac.authorization.k8s.io", "v1").unwrap();
        let patch = &doc["paths"]["/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Role");
        assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
        assert!(doc["paths"].get("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}").is_some());
        assert!(v3_document(&reg, "nope.example", "v1").is_none());
        let index = v3_index(&reg);
        assert!(index["paths"]["api/v1"]["serverRelativeURL"].as_str().unwrap().starts_with("/openapi/v3/api/v1?hash="));
        let v2 = v2_document(&reg);
        assert!(v2["definitions"]["io.k8s.api.core.v1.Pod"].is_object());
        let p = &v2["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert!(p["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation" && p["type"] == "string"));
        assert!(!serde_json::to_string(&v2).unwrap().contains("#/components/"));
    }
}
