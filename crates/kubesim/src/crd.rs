//! CustomResourceDefinitions: validating them and turning them into served kinds.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::Cause;
use crate::resource::ResourceInfo;
use crate::schema::Schema;

fn invalid(field: &str, message: String) -> Cause {
    Cause { reason: "FieldValueInvalid".into(), message, field: field.into() }
}

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field: field.into() }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Compiles a CRD into one `ResourceInfo` per served version, or the causes of a 422.
pub fn compile(crd: &Value, old: Option<&Value>) -> Result<Vec<ResourceInfo>, Vec<Cause>> {
    let mut errs = Vec::new();
    let name = crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |p: &str| spec.pointer(p).and_then(Value::as_str).unwrap_or_default().to_string();
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    let scope = s("/scope");
    let singular = match s("/names/singular") {
        x if x.is_empty() => kind.to_lowercase(),
        x => x,
    };
    let list_kind = match s("/names/listKind") {
        x if x.is_empty() => format!("{kind}List"),
        x => x,
    };
    if group.is_empty() {
        errs.push(required("spec.group"));
    } else if !group.contains('.') {
        errs.push(invalid("spec.group", format!("Invalid value: {group:?}: should be a domain with at least one dot")));
    }
    if plural.is_empty() {
        errs.push(required("spec.names.plural"));
    } else if !is_dns_label(&plural) {
        errs.push(invalid(
            "spec.names.plural",
            format!("Invalid value: {plural:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'"),
        ));
    }
    if kind.is_empty() {
        errs.push(required("spec.names.kind"));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    if name != format!("{plural}.{group}") {
        errs.push(invalid("metadata.name", format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group")));
    }
    let namespaced = match scope.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        "" => {
            errs.push(required("spec.scope"));
            true
        }
        other => {
            errs.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!("Unsupported value: {other:?}: supported values: \"Cluster\", \"Namespaced\""),
                field: "spec.scope".into(),
            });
            true
        }
    };
    if let Some(old_scope) = old.and_then(|o| o.pointer("/spec/scope")).and_then(Value::as_str)
        && old_scope != scope
    {
        errs.push(invalid("spec.scope", format!("Invalid value: {scope:?}: field is immutable")));
    }
    let short_names: Vec<String> = spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let categories: Vec<String> = spec
        .pointer("/names/categories")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let versions = spec.get("versions").and_then(Value::as_array).cloned().unwrap_or_default();
    if versions.is_empty() {
        errs.push(required("spec.versions"));
    }
    let storage_count = versions.iter().filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true)).count();
    if !versions.is_empty() && storage_count != 1 {
        errs.push(invalid(
            "spec.versions",
            format!("Invalid value: \"array\": must have exactly one version marked as storage version, found {storage_count}"),
        ));
    }
    let mut out = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if vname.is_empty() {
            errs.push(required(&format!("spec.versions[{i}].name")));
            continue;
        }
        let field = format!("spec.versions[{i}].schema.openAPIV3Schema");
        let schema = match v.pointer("/schema/openAPIV3Schema") {
            None => {
                errs.push(required(&field));
                continue;
            }
            Some(raw) => {
                if raw.get("type").and_then(Value::as_str) != Some("object") {
                    errs.push(invalid(&format!("{field}.type"), "Unsupported value: must be object at the root".into()));
                }
                match Schema::parse(raw, &field) {
                    Ok(s) => s,
                    Err(mut e) => {
                        errs.append(&mut e);
                        continue;
                    }
                }
            }
        };
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        out.push(ResourceInfo {
            group: group.clone(),
            version: vname,
            plural: plural.clone(),
            singular: singular.clone(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            namespaced,
            short_names: short_names.clone(),
            categories: categories.clone(),
            status_subresource: v.pointer("/subresources/status").is_some(),
            validating: true,
            schema: Arc::new(schema),
            crd: Some(name.to_string()),
            openapi_schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
            printer_columns: v.get("additionalPrinterColumns").and_then(Value::as_array).cloned().unwrap_or_default(),
        });
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// The status a real server reports once a CRD is served: names accepted, established.
pub fn status(crd: &Value, old_status: Option<&Value>, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["singular"] = json!(k.to_lowercase());
    }
    if accepted.get("listKind").is_none()
        && let Some(k) = names.get("kind").and_then(Value::as_str)
    {
        accepted["listKind"] = json!(format!("{k}List"));
    }
    let mut stored: Vec<String> = old_status
        .and_then(|s| s.get("storedVersions"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    if let Some(versions) = crd.pointer("/spec/versions").and_then(Value::as_array) {
        for v in versions {
            if v.get("storage").and_then(Value::as_bool) == Some(true)
                && let Some(n) = v.get("name").and_then(Value::as_str)
                && !stored.iter().any(|s| s == n)
            {
                stored.push(n.to_string());
            }
        }
    }
    // Keep transition times stable so re-writing an unchanged CRD is a no-op.
    let since = |t: &str| {
        old_status
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(t)))
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .unwrap_or(now)
            .to_string()
    };
    json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    })
}
