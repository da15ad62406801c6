//! Create, replace, patch and server-side apply, on the main resource or its status
//! subresource. Every write ends in `write_object`, which scopes the change, runs
//! admission, bumps `generation`, records managed fields and skips no-op writes.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{FieldMode, PatchKind, State, WriteCtx, finalizers, meta, meta_mut, meta_str, now, present};
use crate::crd;
use crate::error::{ApiError, ApiResult, Cause};
use crate::fieldmanager::{self, Scope, Writer};
use crate::patch;
use crate::resource::ResourceInfo;

fn random_suffix() -> String {
    // The alphabet the real server uses: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes().iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// Everything but metadata (and status, when it is a subresource): what `generation` tracks.
fn spec_part(v: &Value, exclude_status: bool) -> Value {
    let mut m = v.as_object().cloned().unwrap_or_default();
    m.remove("metadata");
    m.remove("apiVersion");
    m.remove("kind");
    if exclude_status {
        m.remove("status");
    }
    Value::Object(m)
}

impl State {
    /// The common tail of every write: scoping to main/status, defaulting, pruning,
    /// validation, generation, managed fields, no-op detection and commit.
    pub(super) fn write_object(
        &mut self,
        ctx: &WriteCtx,
        old: Option<Arc<Value>>,
        mut new: Value,
        fields: FieldMode<'_>,
    ) -> ApiResult<Value> {
        let info = ctx.info.clone();
        let name = meta_str(&new, "name").unwrap_or_default().to_string();
        let key = Self::obj_key(&info, ctx.namespace.as_deref(), &name);
        new["apiVersion"] = json!(info.api_version());
        new["kind"] = json!(info.kind);
        {
            let m = meta_mut(&mut new);
            if info.namespaced {
                m.insert("namespace".into(), json!(key.0));
            } else {
                m.remove("namespace");
            }
            m.remove("selfLink");
        }
        if let Some(o) = old.as_deref() {
            if ctx.status {
                // Status writes change status (and managedFields) only.
                let status = new.get("status").cloned();
                let mf = meta(&new).and_then(|m| m.get("managedFields")).cloned();
                new = o.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
                if let Some(mf) = mf {
                    meta_mut(&mut new).insert("managedFields".into(), mf);
                }
            } else if info.status_subresource {
                match o.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                }
            }
            // Storage keeps the version first written; clients see theirs via `present`.
            new["apiVersion"] = o.get("apiVersion").cloned().unwrap_or(json!(info.api_version()));
            let om = meta(o).cloned().unwrap_or_default();
            let m = meta_mut(&mut new);
            for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "resourceVersion"] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            if !matches!(fields, FieldMode::Applied) {
                // Clients cannot rewrite ownership except to clear it with `[{}]`.
                let reset = m
                    .get("managedFields")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty));
                match (reset, om.get("managedFields")) {
                    (true, _) | (false, None) => m.remove("managedFields"),
                    (false, Some(v)) => m.insert("managedFields".into(), v.clone()),
                };
            }
        } else if info.status_subresource {
            new.as_object_mut().expect("object").remove("status");
        }

        self.admit(&info, &name, old.as_deref(), &mut new)?;

        let exclude_status = info.status_subresource;
        let generation = match old.as_deref() {
            None => 1,
            Some(o) => {
                let g = meta(o).and_then(|m| m.get("generation")).and_then(Value::as_i64).unwrap_or(1);
                if spec_part(o, exclude_status) != spec_part(&new, exclude_status) { g + 1 } else { g }
            }
        };
        meta_mut(&mut new).insert("generation".into(), json!(generation));

        if let FieldMode::Update(manager) = fields {
            let scope = if ctx.status { Scope::Status } else { Scope::Main { exclude_status } };
            let stamp = now();
            let api_version = info.api_version();
            let w = Writer { manager, subresource: if ctx.status { "status" } else { "" }, api_version: &api_version, now: &stamp };
            fieldmanager::record_update(old.as_deref(), &mut new, &info.schema, scope, &w);
        }

        if let Some(o) = old.as_deref()
            && *o == new
        {
            return Ok(present(o, &info));
        }
        if ctx.dry_run {
            return Ok(present(&new, &info));
        }
        if meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp")) && finalizers(&new).is_empty() {
            // The last finalizer is gone: the object goes away now.
            let res = info.key();
            self.objects.entry(res.clone()).or_default().insert(key.clone(), Arc::new(new));
            let gone = self.remove(&res, &key).expect("just inserted");
            self.drain_pending();
            return Ok(present(&gone, &info));
        }
        if info.plural == "customresourcedefinitions" && info.group == "apiextensions.k8s.io" {
            let compiled = crd::compile(&new, old.as_deref()).map_err(|e| ApiError::invalid(&info.kind, &info.group, &name, e))?;
            self.registry.remove_crd(&name);
            for ri in compiled {
                self.registry.insert(ri);
            }
        }
        let stored = self.commit(&info.key(), key, old, new);
        self.drain_pending();
        Ok(present(&stored, &info))
    }

    pub fn create(&mut self, ctx: &WriteCtx, body: Value) -> ApiResult<Value> {
        self.create_with(ctx, body, FieldMode::Update(&ctx.manager))
    }

    fn create_with(&mut self, ctx: &WriteCtx, mut body: Value, fields: FieldMode<'_>) -> ApiResult<Value> {
        Self::check_identity(ctx, &body)?;
        let info = ctx.info.clone();
        if ctx.status {
            return Err(ApiError::method_not_allowed("create is not supported on the status subresource"));
        }
        if meta_str(&body, "resourceVersion").is_some_and(|r| !r.is_empty()) {
            return Err(ApiError::bad_request("resourceVersion should not be set on objects to be created"));
        }
        let m = meta_mut(&mut body);
        let mut name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            let prefix = m.get("generateName").and_then(Value::as_str).unwrap_or_default().to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    &info.kind,
                    &info.group,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired".into(),
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            name = format!("{prefix}{}", random_suffix());
            m.insert("name".into(), json!(name));
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
            m.remove(k);
        }
        if !matches!(fields, FieldMode::Applied) {
            m.remove("managedFields");
        }
        if info.namespaced {
            let ns = ctx.namespace.clone().unwrap_or_default();
            self.namespace_usable(&ns)?;
        }
        let key = Self::obj_key(&info, ctx.namespace.as_deref(), &name);
        if self.lookup(&info.key(), &key).is_some() {
            return Err(ApiError::already_exists(&info.qualified(), &name));
        }
        self.write_object(ctx, None, body, fields)
    }

    fn check_precondition(info: &ResourceInfo, name: &str, body: &Value, current: &Value) -> ApiResult<()> {
        if let Some(rv) = meta_str(body, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(current, "resourceVersion")
        {
            return Err(ApiError::stale(&info.qualified(), name));
        }
        if let Some(uid) = meta_str(body, "uid")
            && !uid.is_empty()
            && Some(uid) != meta_str(current, "uid")
        {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(current, "uid").unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    pub fn update(&mut self, ctx: &WriteCtx, name: &str, body: Value) -> ApiResult<Value> {
        Self::check_identity(ctx, &body)?;
        let info = ctx.info.clone();
        if meta_str(&body, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&body, "name").unwrap_or_default()
            )));
        }
        let key = Self::obj_key(&info, ctx.namespace.as_deref(), name);
        let Some(current) = self.lookup(&info.key(), &key) else {
            return Err(ApiError::not_found(&info.qualified(), name));
        };
        Self::check_precondition(&info, name, &body, &current)?;
        let mut body = body;
        meta_mut(&mut body).insert("name".into(), json!(name));
        self.write_object(ctx, Some(current), body, FieldMode::Update(&ctx.manager))
    }

    /// Returns the object and whether it was created (server-side apply may create).
    pub fn patch(&mut self, ctx: &WriteCtx, name: &str, kind: PatchKind, body: &Value) -> ApiResult<(Value, bool)> {
        let info = ctx.info.clone();
        let key = Self::obj_key(&info, ctx.namespace.as_deref(), name);
        let current = self.lookup(&info.key(), &key);
        if let PatchKind::Apply { force } = kind {
            Self::check_identity(ctx, body)?;
            if body.get("apiVersion").is_none() || body.get("kind").is_none() {
                return Err(ApiError::bad_request("apiVersion and kind must be set in an apply patch"));
            }
            if meta_str(body, "name").is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta_str(body, "name").unwrap_or_default()
                )));
            }
            if let Some(c) = &current {
                Self::check_precondition(&info, name, body, c)?;
            } else if ctx.status {
                return Err(ApiError::not_found(&info.qualified(), name));
            }
            let scope = if ctx.status { Scope::Status } else { Scope::Main { exclude_status: info.status_subresource } };
            let stamp = now();
            let api_version = info.api_version();
            let w = Writer {
                manager: &ctx.manager,
                subresource: if ctx.status { "status" } else { "" },
                api_version: &api_version,
                now: &stamp,
            };
            let live = current.as_deref().map(|c| present(c, &info));
            let mut merged = fieldmanager::apply(live.as_ref(), body, &info.schema, scope, force, &w)
                .map_err(|c| ApiError::apply_conflicts(&info.qualified(), name, c))?;
            meta_mut(&mut merged).insert("name".into(), json!(name));
            return match current {
                Some(c) => Ok((self.write_object(ctx, Some(c), merged, FieldMode::Applied)?, false)),
                None => {
                    meta_mut(&mut merged).remove("resourceVersion");
                    Ok((self.create_with(ctx, merged, FieldMode::Applied)?, true))
                }
            };
        }
        let Some(current) = current else {
            return Err(ApiError::not_found(&info.qualified(), name));
        };
        let mut target = present(&current, &info);
        match kind {
            PatchKind::Merge => patch::merge_patch(&mut target, body),
            PatchKind::Strategic => patch::strategic_merge(&mut target, body, Some(&info.schema)),
            PatchKind::Json => patch::json_patch(&mut target, body).map_err(|e| {
                let mut err = ApiError::invalid(&info.kind, &info.group, name, vec![]);
                err.message = format!("the server rejected our request due to an error in our request: {e}");
                err
            })?,
            PatchKind::Apply { .. } => unreachable!("handled above"),
        }
        if let PatchKind::Merge | PatchKind::Strategic = kind
            && let Some(rv) = body.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && Some(rv) != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::stale(&info.qualified(), name));
        }
        if meta_str(&target, "name") != Some(name) {
            return Err(ApiError::bad_request("the name of a patched object cannot change"));
        }
        Self::check_identity(ctx, &target)?;
        Ok((self.write_object(ctx, Some(current), target, FieldMode::Update(&ctx.manager))?, false))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::store::{Store, test_ctx as ctx};

    #[test]
    fn noop_update_keeps_version() {
        let store = Store::new(100);
        let mut st = store.lock();
        let c = ctx(&st, "", "v1", "configmaps", Some("default"));
        let created = st.create(&c, json!({"metadata": {"name": "a"}, "data": {"k": "v"}})).unwrap();
        let rv = st.resource_version();
        let again = st.update(&c, "a", created.clone()).unwrap();
        assert_eq!(again["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"]);
        assert_eq!(st.resource_version(), rv);
    }
}
