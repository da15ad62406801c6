//! In-memory object storage with the write semantics of the real API server:
//! resource versions, generation, status subresource scoping, no-op detection,
//! finalizers, owner-reference garbage collection and a bounded watch history.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use crate::crd;
use crate::error::{ApiError, ApiResult, Cause};
use crate::fieldmanager::{self, Scope, Writer};
use crate::patch;
use crate::resource::{Registry, ResKey, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};

pub type ObjKey = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct HistoryEvent {
    pub rv: u64,
    pub res: ResKey,
    pub kind: EventType,
    pub obj: Arc<Value>,
    /// The object before this event, so label-selector watches can see an object
    /// leave or enter their selection and old states can be reconstructed.
    pub prev: Option<Arc<Value>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

#[derive(Debug, Clone)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply { force: bool },
}

/// Who writes and how: the field manager and whether this is a dry run.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    pub info: Arc<ResourceInfo>,
    pub namespace: Option<String>,
    pub status: bool,
    pub manager: String,
    pub dry_run: bool,
}

enum FieldMode<'a> {
    Update(&'a str),
    /// managedFields were computed by server-side apply already.
    Applied,
}

enum Work {
    /// The flag says whether the garbage collector's owner check applies (it does
    /// not when a namespace is emptied).
    Delete(ResKey, ObjKey, Propagation, bool),
    DropOwnerRef(ResKey, ObjKey, String),
    CheckForeground(String),
    CheckNamespace(String),
}

pub struct State {
    pub registry: Registry,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Arc<Value>>>,
    rv: u64,
    history: VecDeque<Arc<HistoryEvent>>,
    history_limit: usize,
    /// Every event with rv > compacted is still in `history`.
    compacted: u64,
    uids: HashMap<String, (ResKey, ObjKey)>,
    dependents: HashMap<String, BTreeSet<(ResKey, ObjKey)>>,
    next_service_ip: u32,
    pending: VecDeque<Work>,
}

pub struct Store {
    state: Mutex<State>,
    /// Latest resource version; watch streams wake on changes.
    pub(crate) notify: tokio::sync::watch::Sender<u64>,
    /// Bumped to make every open watch end with 410 Gone.
    pub(crate) expiry: tokio::sync::watch::Sender<u64>,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta(v: &Value) -> Option<&Map<String, Value>> {
    v.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    meta(v).and_then(|m| m.get(k)).and_then(Value::as_str)
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"].as_object_mut().expect("ensured above")
}

fn finalizers(v: &Value) -> Vec<String> {
    meta(v)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn owner_uids(v: &Value) -> Vec<String> {
    meta(v)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default()
}

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

fn random_suffix() -> String {
    // The alphabet the real server uses: no vowels, no confusable characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes().iter().take(5).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
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

/// The object as a client of `info`'s version sees it.
pub fn present(obj: &Value, info: &ResourceInfo) -> Value {
    let mut o = obj.clone();
    let av = info.api_version();
    if o.get("apiVersion").and_then(Value::as_str) != Some(av.as_str()) {
        o["apiVersion"] = json!(av);
    }
    o
}

impl Store {
    pub fn new(history_limit: usize) -> Store {
        let mut st = State {
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 0,
            uids: HashMap::new(),
            dependents: HashMap::new(),
            next_service_ip: 1,
            pending: VecDeque::new(),
        };
        let ns_info = st.registry.get("", "v1", "namespaces").expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ctx = WriteCtx { info: ns_info.clone(), namespace: None, status: false, manager: "kubesim".into(), dry_run: false };
            st.create(&ctx, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
                .expect("creating a system namespace");
        }
        let (notify, _) = tokio::sync::watch::channel(st.rv);
        let (expiry, _) = tokio::sync::watch::channel(0);
        Store { state: Mutex::new(st), notify, expiry }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a write under the lock and wakes watchers afterwards.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.lock();
        let out = f(&mut st);
        let rv = st.rv;
        drop(st);
        self.notify.send_if_modified(|cur| {
            let changed = *cur != rv;
            *cur = rv;
            changed
        });
        out
    }

    /// Forgets all history and ends every open watch with 410, as after an
    /// apiserver restart with etcd compaction: watchers must relist.
    pub fn expire_watches(&self) {
        {
            let mut st = self.lock();
            st.history.clear();
            st.compacted = st.rv;
        }
        self.expiry.send_modify(|e| *e += 1);
    }
}

impl State {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    fn objects_of(&self, res: &ResKey) -> Option<&BTreeMap<ObjKey, Arc<Value>>> {
        self.objects.get(res)
    }

    fn lookup(&self, res: &ResKey, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects.get(res).and_then(|m| m.get(key)).cloned()
    }

    fn obj_key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> ObjKey {
        (if info.namespaced { ns.unwrap_or_default().to_string() } else { String::new() }, name.to_string())
    }

    pub fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        self.lookup(&info.key(), &Self::obj_key(info, ns, name))
            .map(|o| present(&o, info))
            .ok_or_else(|| ApiError::not_found(&info.qualified(), name))
    }

    fn push_history(&mut self, ev: HistoryEvent) {
        self.history.push_back(Arc::new(ev));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    fn index(&mut self, res: &ResKey, key: &ObjKey, old: Option<&Value>, new: Option<&Value>) {
        if let Some(o) = old {
            for u in owner_uids(o) {
                if let Some(set) = self.dependents.get_mut(&u) {
                    set.remove(&(res.clone(), key.clone()));
                    if set.is_empty() {
                        self.dependents.remove(&u);
                    }
                }
            }
            if new.is_none()
                && let Some(uid) = meta_str(o, "uid")
            {
                self.uids.remove(uid);
            }
        }
        if let Some(n) = new {
            for u in owner_uids(n) {
                self.dependents.entry(u).or_default().insert((res.clone(), key.clone()));
            }
            if let Some(uid) = meta_str(n, "uid") {
                self.uids.insert(uid.to_string(), (res.clone(), key.clone()));
            }
        }
    }

    /// Stores `new` under a fresh resource version.
    fn commit(&mut self, res: &ResKey, key: ObjKey, old: Option<Arc<Value>>, mut new: Value) -> Arc<Value> {
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let new = Arc::new(new);
        self.index(res, &key, old.as_deref(), Some(&new));
        self.objects.entry(res.clone()).or_default().insert(key, new.clone());
        self.push_history(HistoryEvent {
            rv: self.rv,
            res: res.clone(),
            kind: if old.is_some() { EventType::Modified } else { EventType::Added },
            obj: new.clone(),
            prev: old,
        });
        new
    }

    /// Removes an object for good and queues what follows (GC, CRD and namespace cleanup).
    fn remove(&mut self, res: &ResKey, key: &ObjKey) -> Option<Arc<Value>> {
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

    fn drain_pending(&mut self) {
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

    fn namespace_usable(&self, ns: &str) -> ApiResult<()> {
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

    /// Type and namespace checks shared by create, update, patch and apply.
    fn check_identity(ctx: &WriteCtx, body: &Value) -> ApiResult<()> {
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

    /// The common tail of every write: scoping to main/status, defaulting, pruning,
    /// validation, generation, managed fields, no-op detection and commit.
    fn write_object(&mut self, ctx: &WriteCtx, old: Option<Arc<Value>>, mut new: Value, fields: FieldMode<'_>) -> ApiResult<Value> {
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

        let mut errs = Vec::new();
        if old.is_none() {
            let valid = if info.plural == "namespaces" {
                name.len() <= 63 && is_dns_subdomain(&name) && !name.contains('.')
            } else {
                is_dns_subdomain(&name)
            };
            if !valid {
                errs.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
                    field: "metadata.name".into(),
                });
            }
        }
        if let Some(labels) = meta(&new).and_then(|m| m.get("labels")) {
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
        self.builtin_defaults(&info, old.as_deref(), &mut new);
        if info.validating {
            info.schema.prune(&mut new, true);
            info.schema.apply_defaults(&mut new);
            info.schema.validate(&new, old.as_deref(), "", &mut errs);
        }
        if info.plural == "customresourcedefinitions" && info.group == "apiextensions.k8s.io" {
            match crd::compile(&new, old.as_deref()) {
                Ok(_) => {
                    let st = crd::status(&new, old.as_deref().and_then(|o| o.get("status")), &now());
                    new["status"] = st;
                }
                Err(mut e) => errs.append(&mut e),
            }
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(&info.kind, &info.group, &name, errs));
        }

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

    // ------------------------------------------------------------ verbs

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

    // ------------------------------------------------------------ reads

    /// The objects of `res` as they were at `rv`, rebuilt from history (borrowed when
    /// `rv` is the present, which is the common case).
    fn snapshot(&self, res: &ResKey, rv: u64) -> ApiResult<std::borrow::Cow<'_, BTreeMap<ObjKey, Arc<Value>>>> {
        static EMPTY: BTreeMap<ObjKey, Arc<Value>> = BTreeMap::new();
        let current = self.objects_of(res).unwrap_or(&EMPTY);
        if rv >= self.rv {
            return Ok(std::borrow::Cow::Borrowed(current));
        }
        if rv < self.compacted {
            return Err(ApiError::gone(format!(
                "The resourceVersion for the provided list is too old: {rv} (compacted at {})",
                self.compacted
            )));
        }
        let mut objs = current.clone();
        for ev in self.history.iter().rev() {
            if ev.rv <= rv {
                break;
            }
            if ev.res != *res {
                continue;
            }
            let key =
                (meta_str(&ev.obj, "namespace").unwrap_or_default().to_string(), meta_str(&ev.obj, "name").unwrap_or_default().to_string());
            match (ev.kind, &ev.prev) {
                (EventType::Added, _) => {
                    objs.remove(&key);
                }
                (_, Some(p)) => {
                    objs.insert(key, p.clone());
                }
                (_, None) => {}
            }
        }
        Ok(std::borrow::Cow::Owned(objs))
    }

    pub fn list(&self, info: &ResourceInfo, ns: Option<&str>, opts: &ListOpts) -> ApiResult<Value> {
        let res = info.key();
        let rv_param = opts.resource_version.as_deref().filter(|r| !r.is_empty());
        let parse_rv = |r: &str| r.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {r:?}")));
        let (snapshot_rv, start_after) = if let Some(tok) = &opts.continue_token {
            if rv_param.is_some_and(|r| r != "0") {
                return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
            }
            let bad =
                || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
            let (rv, rest) = tok.split_once(':').ok_or_else(bad)?;
            let rv: u64 = rv.parse().map_err(|_| bad())?;
            let (nsx, name) = rest.split_once(':').ok_or_else(bad)?;
            (rv, Some((unhex(nsx).ok_or_else(bad)?, unhex(name).ok_or_else(bad)?)))
        } else {
            let rv = match (rv_param, opts.resource_version_match.as_deref()) {
                (None, Some("Exact")) | (Some("0"), Some("Exact")) => {
                    return Err(ApiError::bad_request("resourceVersionMatch \"Exact\" requires a non-zero resourceVersion"));
                }
                (None, Some(m)) if !m.is_empty() => {
                    return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"));
                }
                (None | Some("0"), _) => self.rv,
                (Some(r), m) => {
                    let n = parse_rv(r)?;
                    let exact = m == Some("Exact") || (m.is_none() && opts.limit.is_some());
                    if n > self.rv {
                        return Err(ApiError::too_large_resource_version(n, self.rv));
                    }
                    match m {
                        Some("Exact") | Some("NotOlderThan") | None => {}
                        Some(other) => {
                            return Err(ApiError::bad_request(format!("unknown resourceVersionMatch {other:?}")));
                        }
                    }
                    if exact { n } else { self.rv }
                }
            };
            (rv, None)
        };
        let objs = self.snapshot(&res, snapshot_rv)?;
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        let iter = objs.iter().filter(|((n, _), _)| match ns {
            Some(ns) if info.namespaced => n == ns,
            _ => true,
        });
        let iter = iter.filter(|(k, _)| start_after.as_ref().is_none_or(|s| *k > s));
        for (k, o) in iter {
            if !opts.labels.matches(o) || !opts.fields.matches(o) {
                continue;
            }
            if let Some(limit) = opts.limit
                && limit > 0
                && items.len() >= limit
            {
                if next.is_none() {
                    next = Some(k.clone());
                }
                remaining += 1;
                continue;
            }
            items.push(present(o, info));
        }
        let mut list_meta = json!({"resourceVersion": snapshot_rv.to_string()});
        if next.is_some() {
            let last = items
                .last()
                .map(|i| (meta_str(i, "namespace").unwrap_or_default().to_string(), meta_str(i, "name").unwrap_or_default().to_string()));
            if let Some((lns, lname)) = last {
                // An empty namespace for cluster-scoped kinds matches the storage key.
                let lns = if info.namespaced { lns } else { String::new() };
                list_meta["continue"] = json!(format!("{snapshot_rv}:{}:{}", hex(&lns), hex(&lname)));
                list_meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": list_meta,
            "items": items,
        }))
    }

    /// Current objects for a watch's initial events.
    pub fn current(&self, res: &ResKey) -> Vec<Arc<Value>> {
        self.objects_of(res).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Events of `res` after `after`, or Err when history no longer reaches back that far.
    pub fn events_after(&self, res: &ResKey, after: u64) -> Result<Vec<Arc<HistoryEvent>>, u64> {
        if after < self.compacted {
            return Err(self.compacted);
        }
        let start = self.history.partition_point(|e| e.rv <= after);
        Ok(self.history.range(start..).filter(|e| e.res == *res).cloned().collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(st: &State, g: &str, v: &str, plural: &str, ns: Option<&str>) -> WriteCtx {
        WriteCtx {
            info: st.registry.get(g, v, plural).unwrap(),
            namespace: ns.map(str::to_string),
            status: false,
            manager: "test".into(),
            dry_run: false,
        }
    }

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

    #[test]
    fn snapshot_rebuilds_old_state() {
        let store = Store::new(100);
        let mut st = store.lock();
        let c = ctx(&st, "", "v1", "configmaps", Some("default"));
        st.create(&c, json!({"metadata": {"name": "a"}, "data": {"k": "1"}})).unwrap();
        let rv1 = st.resource_version();
        st.patch(&c, "a", PatchKind::Merge, &json!({"data": {"k": "2"}})).unwrap();
        st.create(&c, json!({"metadata": {"name": "b"}})).unwrap();
        let info = c.info.clone();
        let old = st
            .list(
                &info,
                Some("default"),
                &ListOpts { resource_version: Some(rv1.to_string()), resource_version_match: Some("Exact".into()), ..Default::default() },
            )
            .unwrap();
        let items = old["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["data"]["k"], "1");
    }
}
