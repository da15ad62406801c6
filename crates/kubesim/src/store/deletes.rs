//! Deletion: preconditions, finalizers and `deletionTimestamp`, namespace teardown,
//! CRD removal, and owner-reference garbage collection (Background, Foreground and
//! Orphan propagation), run as a queue of follow-up work after each change.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    DeleteOpts, EventType, FieldMode, HistoryEvent, ListOpts, ObjKey, Propagation, State, WriteCtx, finalizers, meta, meta_mut, meta_str,
    now, owner_uids, present,
};
use crate::error::{ApiError, ApiResult};
use crate::resource::ResKey;

pub(super) enum Work {
    /// The flag says whether the garbage collector's owner check applies (it does
    /// not when a namespace is emptied).
    Delete(ResKey, ObjKey, Propagation, bool),
    DropOwnerRef(ResKey, ObjKey, String),
    CheckForeground(String),
    CheckNamespace(String),
}

impl State {
    /// Removes an object for good and queues what follows (GC, CRD and namespace cleanup).
    pub(super) fn remove(&mut self, res: &ResKey, key: &ObjKey) -> Option<Arc<Value>> {
        let old = self.objects.get_mut(res)?.remove(key)?;
        self.rv += 1;
        let mut gone = (*old).clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let gone = Arc::new(gone);
        self.index(res, key, Some(&old), None);
        self.push_history(HistoryEvent {
            rv: self.rv,
            res: res.clone(),
            kind: EventType::Deleted,
            obj: gone.clone(),
            prev: Some(old.clone()),
        });
        if let Some(uid) = meta_str(&old, "uid") {
            for dep in self.dependents.get(uid).cloned().unwrap_or_default() {
                self.pending.push_back(Work::Delete(dep.0, dep.1, Propagation::Background, true));
            }
        }
        for owner in owner_uids(&old) {
            self.pending.push_back(Work::CheckForeground(owner));
        }
        if res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions" {
            self.drop_crd(&old);
        }
        if !key.0.is_empty() {
            self.pending.push_back(Work::CheckNamespace(key.0.clone()));
        }
        Some(gone)
    }

    fn drop_crd(&mut self, crd_obj: &Value) {
        let name = meta_str(crd_obj, "name").unwrap_or_default().to_string();
        let group = crd_obj.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
        let plural = crd_obj.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or_default();
        let res = ResKey { group: group.into(), plural: plural.into() };
        let keys: Vec<ObjKey> = self.objects.get(&res).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for k in keys {
            self.remove(&res, &k);
        }
        self.objects.remove(&res);
        self.registry.remove_crd(&name);
    }

    pub(super) fn drain_pending(&mut self) {
        while let Some(w) = self.pending.pop_front() {
            match w {
                Work::Delete(res, key, policy, gc) => {
                    let Some(obj) = self.lookup(&res, &key) else {
                        continue;
                    };
                    // A dependent with another solid owner only loses the dangling reference.
                    let solid_owner = owner_uids(&obj).iter().any(|u| self.owner_solid(u));
                    if gc && solid_owner {
                        let dead: Vec<String> = owner_uids(&obj).into_iter().filter(|u| !self.uids.contains_key(u)).collect();
                        for u in dead {
                            self.pending.push_back(Work::DropOwnerRef(res.clone(), key.clone(), u));
                        }
                        continue;
                    }
                    let _ = self.delete_object(&res, &key, policy);
                }
                Work::DropOwnerRef(res, key, uid) => {
                    let Some(obj) = self.lookup(&res, &key) else {
                        continue;
                    };
                    let _ = self.internal_update(&res, &obj, |v| {
                        if let Some(refs) = v.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
                            if refs.is_empty() {
                                meta_mut(v).remove("ownerReferences");
                            }
                        }
                    });
                }
                Work::CheckForeground(owner_uid) => {
                    let Some((res, key)) = self.uids.get(&owner_uid).cloned() else {
                        continue;
                    };
                    let Some(owner) = self.lookup(&res, &key) else {
                        continue;
                    };
                    let waiting = meta(&owner).is_some_and(|m| m.contains_key("deletionTimestamp"))
                        && finalizers(&owner).iter().any(|f| f == "foregroundDeletion");
                    if waiting && self.dependents.get(&owner_uid).is_none_or(BTreeSet::is_empty) {
                        let _ = self.internal_update(&res, &owner, |v| remove_finalizer(v, "foregroundDeletion"));
                    }
                }
                Work::CheckNamespace(ns) => {
                    let ns_res = ResKey { group: String::new(), plural: "namespaces".into() };
                    let ns_key = (String::new(), ns.clone());
                    let Some(nso) = self.lookup(&ns_res, &ns_key) else {
                        continue;
                    };
                    let terminating = meta(&nso).is_some_and(|m| m.contains_key("deletionTimestamp"));
                    let empty = self.objects.values().all(|m| m.keys().all(|(n, _)| *n != ns));
                    if terminating && empty && finalizers(&nso).is_empty() {
                        self.remove(&ns_res, &ns_key);
                    }
                }
            }
        }
    }

    /// An owner that exists and is not itself waiting for its dependents to go.
    fn owner_solid(&self, uid: &str) -> bool {
        let Some((res, key)) = self.uids.get(uid) else {
            return false;
        };
        let Some(o) = self.lookup(res, key) else {
            return false;
        };
        !(meta(&o).is_some_and(|m| m.contains_key("deletionTimestamp")) && finalizers(&o).iter().any(|f| f == "foregroundDeletion"))
    }

    /// A server-initiated metadata change (GC, finalizer bookkeeping).
    fn internal_update(&mut self, res: &ResKey, obj: &Arc<Value>, f: impl FnOnce(&mut Value)) -> ApiResult<()> {
        let Some(info) = self.registry.any_version(res) else {
            return Ok(());
        };
        let mut new = (**obj).clone();
        f(&mut new);
        let ns = meta_str(obj, "namespace").map(str::to_string);
        let ctx = WriteCtx { info, namespace: ns, status: false, manager: String::new(), dry_run: false };
        self.write_object(&ctx, Some(obj.clone()), new, FieldMode::Update(""))?;
        Ok(())
    }

    pub fn delete(&mut self, ctx: &WriteCtx, name: &str, opts: &DeleteOpts) -> ApiResult<Value> {
        let info = ctx.info.clone();
        let key = Self::obj_key(&info, ctx.namespace.as_deref(), name);
        let Some(current) = self.lookup(&info.key(), &key) else {
            return Err(ApiError::not_found(&info.qualified(), name));
        };
        if info.plural == "namespaces" && info.group.is_empty() && ["default", "kube-system", "kube-public"].contains(&name) {
            return Err(ApiError::forbidden(format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")));
        }
        if let Some(uid) = &opts.precondition_uid
            && Some(uid.as_str()) != meta_str(&current, "uid")
        {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && Some(rv.as_str()) != meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &info.qualified(),
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&current, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if opts.dry_run {
            return Ok(present(&current, &info));
        }
        let policy = opts.propagation.unwrap_or_default();
        let out = self.delete_object(&info.key(), &key, policy)?;
        self.drain_pending();
        Ok(present(&out, &info))
    }

    /// Deletes or marks for deletion; returns the object as the client should see it.
    fn delete_object(&mut self, res: &ResKey, key: &ObjKey, policy: Propagation) -> ApiResult<Arc<Value>> {
        let Some(current) = self.lookup(res, key) else {
            return Err(ApiError::internal("object vanished during deletion"));
        };
        let uid = meta_str(&current, "uid").unwrap_or_default().to_string();
        let has_dependents = self.dependents.get(&uid).is_some_and(|s| !s.is_empty());
        let is_namespace = res.group.is_empty() && res.plural == "namespaces";
        let mut obj = current.clone();
        match policy {
            Propagation::Orphan => {
                for (r, k) in self.dependents.get(&uid).cloned().unwrap_or_default() {
                    self.pending.push_back(Work::DropOwnerRef(r, k, uid.clone()));
                }
                self.drain_pending();
            }
            Propagation::Foreground if has_dependents => {
                if !finalizers(&current).iter().any(|f| f == "foregroundDeletion") {
                    let updated = self.mark_deleting(res, &current, Some("foregroundDeletion"))?;
                    obj = updated;
                }
                for (r, k) in self.dependents.get(&uid).cloned().unwrap_or_default() {
                    self.pending.push_back(Work::Delete(r, k, Propagation::Foreground, true));
                }
                self.pending.push_back(Work::CheckForeground(uid.clone()));
                return Ok(obj);
            }
            _ => {}
        }
        if is_namespace {
            let ns = key.1.clone();
            if !meta(&current).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                obj = self.mark_deleting(res, &current, None)?;
                let keys: Vec<(ResKey, ObjKey)> = self
                    .objects
                    .iter()
                    .flat_map(|(r, m)| m.keys().filter(|(n, _)| *n == ns).map(move |k| (r.clone(), k.clone())))
                    .collect();
                for (r, k) in keys {
                    self.pending.push_back(Work::Delete(r, k, Propagation::Background, false));
                }
            }
            self.pending.push_back(Work::CheckNamespace(ns));
            return Ok(obj);
        }
        let current = self.lookup(res, key).unwrap_or(current);
        if !finalizers(&current).is_empty() {
            if meta(&current).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                return Ok(current);
            }
            return self.mark_deleting(res, &current, None);
        }
        self.remove(res, key).ok_or_else(|| ApiError::internal("object vanished during deletion"))
    }

    fn mark_deleting(&mut self, res: &ResKey, current: &Arc<Value>, add_finalizer: Option<&str>) -> ApiResult<Arc<Value>> {
        let mut new = (**current).clone();
        let m = meta_mut(&mut new);
        m.entry("deletionTimestamp").or_insert_with(|| json!(now()));
        m.entry("deletionGracePeriodSeconds").or_insert(json!(0));
        if let Some(f) = add_finalizer {
            let list = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut()
                && !a.iter().any(|x| x == f)
            {
                a.push(json!(f));
            }
        }
        if res.group.is_empty() && res.plural == "namespaces" {
            new["status"] = json!({"phase": "Terminating"});
        }
        let key = (meta_str(&new, "namespace").unwrap_or_default().to_string(), meta_str(&new, "name").unwrap_or_default().to_string());
        let key = if self.lookup(res, &key).is_some() { key } else { (String::new(), key.1) };
        Ok(self.commit(res, key, Some(current.clone()), new))
    }

    pub fn delete_collection(&mut self, ctx: &WriteCtx, opts: &ListOpts, del: &DeleteOpts) -> ApiResult<Value> {
        let info = ctx.info.clone();
        let list = self.list(&info, ctx.namespace.as_deref(), &ListOpts { limit: None, continue_token: None, ..opts.clone() })?;
        let mut items = Vec::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let name = meta_str(&item, "name").unwrap_or_default().to_string();
            let item_ctx = WriteCtx { namespace: meta_str(&item, "namespace").map(str::to_string), ..ctx.clone() };
            match self.delete(&item_ctx, &name, del) {
                Ok(v) => items.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        }))
    }
}

fn remove_finalizer(v: &mut Value, f: &str) {
    if let Some(list) = v.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
        list.retain(|x| x != f);
        if list.is_empty() {
            meta_mut(v).remove("finalizers");
        }
    }
}
