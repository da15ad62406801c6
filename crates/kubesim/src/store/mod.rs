//! In-memory object storage with the write semantics of the real API server:
//! resource versions, generation, status subresource scoping, no-op detection,
//! finalizers, owner-reference garbage collection and a bounded watch history.
//!
//! The shared state and the storage primitives every verb ends in (`commit`, the
//! owner/uid indexes, the watch history) live here; the verbs are split by concern:
//! `validation` (admission), `writes`, `deletes` (finalizers and garbage collection)
//! and `reads`.

mod deletes;
mod reads;
mod validation;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};

use crate::resource::{Registry, ResKey, ResourceInfo};
use crate::selector::{FieldSelector, LabelSelector};
use deletes::Work;

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

    fn lookup(&self, res: &ResKey, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects.get(res).and_then(|m| m.get(key)).cloned()
    }

    fn obj_key(info: &ResourceInfo, ns: Option<&str>, name: &str) -> ObjKey {
        (if info.namespaced { ns.unwrap_or_default().to_string() } else { String::new() }, name.to_string())
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
}

/// The submodules' unit tests drive `State` directly, without HTTP, through this context.
#[cfg(test)]
fn test_ctx(st: &State, g: &str, v: &str, plural: &str, ns: Option<&str>) -> WriteCtx {
    WriteCtx {
        info: st.registry.get(g, v, plural).unwrap(),
        namespace: ns.map(str::to_string),
        status: false,
        manager: "test".into(),
        dry_run: false,
    }
}
