//! Admission: request identity checks, namespace lifecycle, metadata validation,
//! the defaults of built-in kinds, and schema pruning, defaulting and validation
//! (including CEL rules) of custom resources.

use serde_json::{Value, json};

use super::{State, WriteCtx, meta, meta_mut, meta_str, now};
use crate::crd;
use crate::error::{ApiError, ApiResult, Cause};
use crate::resource::{ResKey, ResourceInfo};

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

impl State {
    /// Type and namespace checks shared by create, update, patch and apply.
    pub(super) fn check_identity(ctx: &WriteCtx, body: &Value) -> ApiResult<()> {
        let info = &ctx.info;
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
            && av != info.api_version()
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
        if let Some(k) = body.get("kind").and_then(Value::as_str)
            && k != info.kind
        {
            return Err(ApiError::bad_request(format!("the kind in the data ({k}) does not match the expected kind ({})", info.kind)));
        }
        if info.namespaced
            && let (Some(body_ns), Some(ns)) = (meta_str(body, "namespace"), ctx.namespace.as_deref())
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        Ok(())
    }

    pub(super) fn namespace_usable(&self, ns: &str) -> ApiResult<()> {
        let res = ResKey { group: String::new(), plural: "namespaces".into() };
        match self.lookup(&res, &(String::new(), ns.to_string())) {
            None => Err(ApiError::not_found(&crate::error::Qualified { plural: "namespaces", group: "" }, ns)),
            Some(o) if meta(&o).is_some_and(|m| m.contains_key("deletionTimestamp")) => {
                let mut e = ApiError::forbidden(format!("unable to create new content in namespace {ns} because it is being terminated"));
                e.details.causes.push(Cause {
                    reason: "NamespaceTerminating".into(),
                    message: format!("namespace {ns} is being terminated"),
                    field: "metadata.namespace".into(),
                });
                Err(e)
            }
            Some(_) => Ok(()),
        }
    }

    /// Metadata validation, defaulting and schema validation of a write's result, with
    /// every problem reported at once as the real server does.
    pub(super) fn admit(&mut self, info: &ResourceInfo, name: &str, old: Option<&Value>, new: &mut Value) -> ApiResult<()> {
        let mut errs = Vec::new();
        if old.is_none() {
            let valid = if info.plural == "namespaces" {
                name.len() <= 63 && is_dns_subdomain(name) && !name.contains('.')
            } else {
                is_dns_subdomain(name)
            };
            if !valid {
                errs.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
                    field: "metadata.name".into(),
                });
            }
        }
        if let Some(labels) = meta(new).and_then(|m| m.get("labels")) {
            match labels.as_object() {
                Some(l) => {
                    for (k, v) in l {
                        if !v.as_str().is_some_and(is_label_value) {
                            errs.push(Cause {
                                reason: "FieldValueInvalid".into(),
                                message: format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                                field: format!("metadata.labels.{k}"),
                            });
                        }
                    }
                }
                None => errs.push(Cause {
                    reason: "FieldValueTypeInvalid".into(),
                    message: "Invalid value: must be a map of strings".into(),
                    field: "metadata.labels".into(),
                }),
            }
        }
        self.builtin_defaults(info, old, new);
        if info.validating {
            info.schema.prune(new, true);
            info.schema.apply_defaults(new);
            info.schema.validate(new, old, "", &mut errs);
        }
        if info.plural == "customresourcedefinitions" && info.group == "apiextensions.k8s.io" {
            match crd::compile(new, old) {
                Ok(_) => {
                    let st = crd::status(new, old.and_then(|o| o.get("status")), &now());
                    new["status"] = st;
                }
                Err(mut e) => errs.append(&mut e),
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(&info.kind, &info.group, name, errs));
        }
        Ok(())
    }

    /// The few defaults of built-in kinds that clients commonly rely on.
    fn builtin_defaults(&mut self, info: &ResourceInfo, old: Option<&Value>, new: &mut Value) {
        if !info.group.is_empty() && info.group != "apps" {
            return;
        }
        match (info.plural.as_str(), old) {
            ("namespaces", None) => {
                let name = meta_str(new, "name").unwrap_or_default().to_string();
                let m = meta_mut(new);
                let labels = m.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
                new["status"] = json!({"phase": "Active"});
            }
            ("secrets", _) if new.get("type").is_none_or(|t| t.as_str() == Some("")) => {
                new["type"] = json!("Opaque");
            }
            ("pods", None) => {
                new["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            ("deployments", _) => {
                // Only when a spec exists: a partial object stays partial.
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.entry("replicas").or_insert(json!(1));
                }
            }
            ("services", _) => {
                if !new.get("spec").is_some_and(Value::is_object) {
                    new["spec"] = json!({});
                }
                if new["spec"].get("type").is_none() {
                    new["spec"]["type"] = json!("ClusterIP");
                }
                let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
                if new["spec"]["type"] != "ExternalName" && new["spec"].get("clusterIP").is_none() {
                    let ip = match old_ip {
                        Some(ip) => ip,
                        None => {
                            let n = self.next_service_ip;
                            self.next_service_ip += 1;
                            json!(format!("10.96.{}.{}", n / 250, n % 250 + 1))
                        }
                    };
                    new["spec"]["clusterIP"] = ip.clone();
                    new["spec"]["clusterIPs"] = json!([ip]);
                }
            }
            _ => {}
        }
    }
}
