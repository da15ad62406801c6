//! Server-side field validation (`fieldValidation=Ignore|Warn|Strict`): unknown fields in a
//! write's body fail it (Strict, what kubectl sends by default), come back as `Warning`
//! headers (Warn, the default), or pass silently (Ignore).
//!
//! The body as sent is checked, not the stored result: custom resources are pruned by
//! their schema afterwards as before, and built-ins are stored as given.

use std::collections::HashMap;

use serde_json::Value;

use crate::builtin::proto::{self, Ty};
use crate::error::ApiError;
use crate::resource::ResourceInfo;
use crate::schema::Schema;

const OBJECT_META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Ignore,
    Warn,
    Strict,
}

impl Directive {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Directive, ApiError> {
        match q.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => Ok(Directive::Warn),
            Some("Ignore") => Ok(Directive::Ignore),
            Some("Strict") => Ok(Directive::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

/// Keys a patch may carry that are directives, not fields.
fn is_directive(key: &str) -> bool {
    key.starts_with('$')
}

fn check_schema(s: &Schema, v: &Value, root: bool, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if is_directive(k) {
                    continue;
                }
                let p = join(path, k);
                if (root || s.embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    if k == "metadata" {
                        check_message(OBJECT_META, child, &p, out);
                    }
                    continue;
                }
                match s.properties.get(k).or(s.additional.as_deref()) {
                    Some(sub) => check_schema(sub, child, false, &p, out),
                    None if s.keeps_unknown() || child.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = s.item() {
                for (i, item) in items.iter().enumerate() {
                    check_schema(sub, item, false, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// The JSON keys of a message: its fields, with embedded structs' fields promoted.
fn lookup<'a>(message: &str, key: &str) -> Option<&'a proto::Field> {
    let fields = proto::table().messages.get(message)?;
    fields.iter().find(|f| !f.inline && f.json == key).or_else(|| {
        fields.iter().filter(|f| f.inline).find_map(|f| match &f.ty {
            Ty::Message(m) => lookup(m, key),
            _ => None,
        })
    })
}

fn check_value(ty: &Ty, v: &Value, path: &str, out: &mut Vec<String>) {
    match ty {
        Ty::Message(m) if !proto::is_special(m) => check_message(m, v, path, out),
        Ty::Map(_, val) => {
            for (k, child) in v.as_object().into_iter().flatten() {
                check_value(val, child, &join(path, k), out);
            }
        }
        _ => {}
    }
}

fn check_message(message: &str, v: &Value, path: &str, out: &mut Vec<String>) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        if is_directive(k) || child.is_null() {
            continue;
        }
        let p = join(path, k);
        match lookup(message, k) {
            Some(f) if f.repeated => {
                for (i, item) in child.as_array().into_iter().flatten().enumerate() {
                    check_value(&f.ty, item, &format!("{p}[{i}]"), out);
                }
            }
            Some(f) => check_value(&f.ty, child, &p, out),
            None => out.push(p),
        }
    }
}

/// The unknown fields of a write's body, as paths like `spec.foo` or `spec.items[0].bar`.
pub fn unknown_fields(info: &ResourceInfo, body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if info.validating {
        check_schema(&info.schema, body, true, "", &mut out);
    } else if let Some(message) = proto::message_for(&info.api_version(), &info.kind) {
        let Some(m) = body.as_object() else { return out };
        for (k, child) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                _ if is_directive(k) || child.is_null() => {}
                _ => match lookup(&message, k) {
                    Some(f) => check_value(&f.ty, child, k, &mut out),
                    None => out.push(k.clone()),
                },
            }
        }
    }
    out
}

/// Applies the directive: an error under Strict, warnings under Warn.
pub fn check(info: &ResourceInfo, body: &Value, directive: Directive) -> Result<Vec<String>, ApiError> {
    if directive == Directive::Ignore {
        return Ok(Vec::new());
    }
    let unknown: Vec<String> = unknown_fields(info, body).into_iter().map(|p| format!("unknown field {p:?}")).collect();
    if directive == Directive::Strict && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = info.kind,
            version = info.version,
        )));
    }
    Ok(unknown)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::Registry;

    #[test]
    fn builtin_unknown_fields_are_found_through_embedded_structs() {
        let reg = Registry::with_builtins();
        let deploy = reg.get("apps", "v1", "deployments").unwrap();
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "labelz": {}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x"}],
                "volumes": [{"name": "v", "configMap": {"name": "cm"}}]}},
                "strategy": {"$retainKeys": ["type"]}}});
        assert_eq!(unknown_fields(&deploy, &body), vec!["metadata.labelz", "spec.template.spec.containers[0].imagePullPolicyy"]);
        let err = check(&deploy, &body, Directive::Strict).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with(
                "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"metadata.labelz\""
            ),
            "{}",
            err.message
        );
        assert_eq!(check(&deploy, &body, Directive::Warn).unwrap().len(), 2);
        assert!(check(&deploy, &body, Directive::Ignore).unwrap().is_empty());
        let cm = reg.get("", "v1", "configmaps").unwrap();
        assert!(unknown_fields(&cm, &json!({"metadata": {"name": "x"}, "data": {"any-key": "v"}})).is_empty());
    }
}
