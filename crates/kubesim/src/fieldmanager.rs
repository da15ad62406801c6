//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! The model: every manager entry (manager name, operation Apply|Update, subresource)
//! owns a set of leaf paths. Objects are granular maps; lists are atomic unless the
//! schema marks them `x-kubernetes-list-type: map` (elements keyed by
//! `x-kubernetes-list-map-keys`, each element also owned as a `.` marker) or `set`
//! (elements owned by value). In `metadata` only labels, annotations, finalizers and
//! ownerReferences are tracked, as on the real server.
//!
//! Apply: conflicts are paths the applier sets to a value different from the live one
//! while another entry owns them (409 unless `force`, which takes ownership). Paths the
//! applier owned before and omits now are removed unless another entry owns them.
//! Non-apply writes give the writer's Update entry every path they changed and take
//! changed or removed paths away from everyone else.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::schema::Schema;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PE {
    F(String),
    /// Canonical JSON of the key fields of a map-list element.
    K(String),
    /// Canonical JSON of a set element.
    V(String),
}

pub type Path = Vec<PE>;
pub type FieldSet = BTreeSet<Path>;

/// Which part of the object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scope {
    /// The main resource; `status` excluded when the kind has a status subresource.
    Main {
        exclude_status: bool,
    },
    Status,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

fn metadata_schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        Schema::parse(
            &json!({
                "type": "object",
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "ownerReferences": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["uid"], "items": {"type": "object"}}
                }
            }),
            "metadata",
        )
        .expect("static metadata schema is valid")
    })
}

/// The schema for a top-level field, with `metadata` handled uniformly.
fn root_child<'a>(schema: &'a Schema, key: &str) -> Option<&'a Schema> {
    if key == "metadata" { Some(metadata_schema()) } else { schema.child(key) }
}

pub fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sort(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    // Keys are inserted sorted, so the output is canonical whatever Map's ordering is.
    serde_json::to_string(&sort(v)).unwrap_or_default()
}

fn element_key(keys: &[String], e: &Value) -> String {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), e.get(k).cloned().unwrap_or(Value::Null));
    }
    canonical(&Value::Object(m))
}

/// The part of an object a write in `scope` covers, as owned by field managers.
pub fn scoped(v: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    let Some(m) = v.as_object() else {
        return Value::Object(out);
    };
    for (k, val) in m {
        match (k.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("metadata", Scope::Main { .. }) => {
                let mut meta = Map::new();
                for f in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(x) = val.get(f) {
                        meta.insert(f.into(), x.clone());
                    }
                }
                if !meta.is_empty() {
                    out.insert("metadata".into(), Value::Object(meta));
                }
            }
            ("metadata", Scope::Status) => {}
            ("status", Scope::Status) => {
                out.insert(k.clone(), val.clone());
            }
            (_, Scope::Status) => {}
            ("status", Scope::Main { exclude_status: true }) => {}
            _ => {
                out.insert(k.clone(), val.clone());
            }
        }
    }
    Value::Object(out)
}

pub fn field_set(v: &Value, schema: &Schema) -> FieldSet {
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            collect(val, root_child(schema, k), vec![PE::F(k.clone())], &mut out);
        }
    }
    out
}

fn collect(v: &Value, schema: Option<&Schema>, prefix: Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !schema.is_some_and(Schema::is_atomic_map) => {
            if m.is_empty() {
                out.insert(prefix);
                return;
            }
            for (k, val) in m {
                let mut p = prefix.clone();
                p.push(PE::F(k.clone()));
                collect(val, schema.and_then(|s| s.child(k)), p, out);
            }
        }
        Value::Array(items) => {
            let item_schema = schema.and_then(Schema::item);
            if let Some(keys) = schema.and_then(Schema::map_keys) {
                for e in items {
                    let mut kp = prefix.clone();
                    kp.push(PE::K(element_key(keys, e)));
                    out.insert(kp.clone());
                    if let Some(em) = e.as_object() {
                        for (k, val) in em {
                            let mut p = kp.clone();
                            p.push(PE::F(k.clone()));
                            collect(val, item_schema.and_then(|s| s.child(k)), p, out);
                        }
                    }
                }
            } else if schema.is_some_and(Schema::is_set) {
                for e in items {
                    let mut p = prefix.clone();
                    p.push(PE::V(canonical(e)));
                    out.insert(p);
                }
            } else {
                out.insert(prefix);
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

fn key_matches(e: &Value, key_json: &str) -> bool {
    let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key_json) else {
        return false;
    };
    key.iter().all(|(k, want)| e.get(k).unwrap_or(&Value::Null) == want)
}

pub fn get<'a>(v: &'a Value, path: &[PE]) -> Option<&'a Value> {
    let mut cur = v;
    for pe in path {
        cur = match pe {
            PE::F(k) => cur.get(k)?,
            PE::K(kj) => cur.as_array()?.iter().find(|e| key_matches(e, kj))?,
            PE::V(vj) => {
                let want: Value = serde_json::from_str(vj).ok()?;
                cur.as_array()?.iter().find(|e| **e == want)?
            }
        };
    }
    Some(cur)
}

fn get_mut<'a>(v: &'a mut Value, path: &[PE]) -> Option<&'a mut Value> {
    let mut cur = v;
    for pe in path {
        cur = match pe {
            PE::F(k) => cur.get_mut(k)?,
            PE::K(kj) => cur.as_array_mut()?.iter_mut().find(|e| key_matches(e, kj))?,
            PE::V(vj) => {
                let want: Value = serde_json::from_str(vj).ok()?;
                cur.as_array_mut()?.iter_mut().find(|e| **e == want)?
            }
        };
    }
    Some(cur)
}

/// Removes the value at `path`; afterwards prunes maps that the removal emptied.
fn remove(v: &mut Value, path: &[PE]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(p) = get_mut(v, parent) else {
        return;
    };
    match last {
        PE::F(k) => {
            if let Some(m) = p.as_object_mut() {
                m.remove(k);
            }
        }
        PE::K(kj) => {
            if let Some(a) = p.as_array_mut() {
                a.retain(|e| !key_matches(e, kj));
            }
        }
        PE::V(vj) => {
            if let (Some(a), Ok(want)) = (p.as_array_mut(), serde_json::from_str::<Value>(vj)) {
                a.retain(|e| *e != want);
            }
        }
    }
    let emptied = match p {
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if emptied && !parent.is_empty() && matches!(parent.last(), Some(PE::F(_))) {
        remove(v, parent);
    }
}

fn merge(live: &mut Value, applied: &Value, schema: Option<&Schema>, root: bool) {
    match (&mut *live, applied) {
        (Value::Object(l), Value::Object(a)) if !schema.is_some_and(Schema::is_atomic_map) => {
            for (k, av) in a {
                let child = if root { schema.and_then(|s| root_child(s, k)) } else { schema.and_then(|s| s.child(k)) };
                match l.get_mut(k) {
                    Some(lv) => merge(lv, av, child, false),
                    None => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => {
            if let Some(keys) = schema.and_then(Schema::map_keys) {
                let item = schema.and_then(Schema::item);
                for ae in a {
                    let k = element_key(keys, ae);
                    match l.iter_mut().find(|e| element_key(keys, e) == k) {
                        Some(le) => merge(le, ae, item, false),
                        None => l.push(ae.clone()),
                    }
                }
            } else if schema.is_some_and(Schema::is_set) {
                for ae in a {
                    if !l.contains(ae) {
                        l.push(ae.clone());
                    }
                }
            } else {
                *live = applied.clone();
            }
        }
        _ => *live = applied.clone(),
    }
}

pub fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for (i, pe) in path.iter().enumerate() {
            let key = match pe {
                PE::F(k) => format!("f:{k}"),
                PE::K(k) => format!("k:{k}"),
                PE::V(v) => format!("v:{v}"),
            };
            let child = node.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let child = child.as_object_mut().expect("trie nodes are objects");
            if i + 1 == path.len() {
                // A leaf that also has children is marked by ".".
                if !child.is_empty() {
                    child.insert(".".into(), json!({}));
                }
            } else if set.contains(&path[..=i].to_vec()) && !child.contains_key(".") {
                child.insert(".".into(), json!({}));
            }
            node = child;
        }
    }
    Value::Object(root)
}

pub fn decode(v: &Value) -> FieldSet {
    fn walk(m: &Map<String, Value>, prefix: &Path, out: &mut FieldSet) {
        for (k, child) in m {
            if k == "." {
                out.insert(prefix.clone());
                continue;
            }
            let pe = if let Some(x) = k.strip_prefix("f:") {
                PE::F(x.to_string())
            } else if let Some(x) = k.strip_prefix("k:") {
                // Re-canonicalise: other writers may order keys differently.
                PE::K(serde_json::from_str::<Value>(x).map(|v| canonical(&v)).unwrap_or_else(|_| x.to_string()))
            } else if let Some(x) = k.strip_prefix("v:") {
                PE::V(serde_json::from_str::<Value>(x).map(|v| canonical(&v)).unwrap_or_else(|_| x.to_string()))
            } else {
                continue;
            };
            let mut p = prefix.clone();
            p.push(pe);
            match child.as_object() {
                Some(cm) if !cm.is_empty() => walk(cm, &p, out),
                _ => {
                    out.insert(p);
                }
            }
        }
    }
    let mut out = FieldSet::new();
    if let Some(m) = v.as_object() {
        walk(m, &Vec::new(), &mut out);
    }
    out
}

pub fn read_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                    let manager = s("manager");
                    if manager.is_empty() && e.get("fieldsV1").is_none() {
                        return None;
                    }
                    Some(Entry {
                        manager,
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        subresource: s("subresource"),
                        set: e.get("fieldsV1").map(decode).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            m.insert("time".into(), json!(e.time));
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), encode(&e.set));
            if !e.subresource.is_empty() {
                m.insert("subresource".into(), json!(e.subresource));
            }
            Value::Object(m)
        })
        .collect();
    if list.is_empty() {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        return;
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["managedFields"] = Value::Array(list);
}

/// Renders a path like the real server does in conflict messages: `.spec.replicas`,
/// `.spec.containers[name="app"].image`.
pub fn render_path(path: &[PE]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            PE::F(k) => {
                s.push('.');
                s.push_str(k);
            }
            PE::K(kj) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(kj)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            PE::V(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub now: &'a str,
}

fn find_entry<'e>(entries: &'e mut Vec<Entry>, w: &Writer<'_>, op: &str) -> &'e mut Entry {
    let pos = entries.iter().position(|e| e.manager == w.manager && e.operation == op && e.subresource == w.subresource);
    match pos {
        Some(i) => &mut entries[i],
        None => {
            entries.push(Entry {
                manager: w.manager.to_string(),
                operation: op.to_string(),
                api_version: w.api_version.to_string(),
                time: w.now.to_string(),
                subresource: w.subresource.to_string(),
                set: FieldSet::new(),
            });
            entries.last_mut().expect("just pushed")
        }
    }
}

fn set_entry(entry: &mut Entry, set: FieldSet, w: &Writer<'_>) {
    if entry.set != set {
        entry.set = set;
        entry.time = w.now.to_string();
        entry.api_version = w.api_version.to_string();
    }
}

/// Server-side apply of `applied` onto `live` (None: create). Returns the merged
/// object with managedFields updated, or the conflicts as (manager, path).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    schema: &Schema,
    scope: Scope,
    force: bool,
    w: &Writer<'_>,
) -> Result<Value, Vec<(String, String)>> {
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut entries = read_entries(live_v);
    let mut applied_scoped = scoped(applied, scope);
    schema.prune(&mut applied_scoped, true);
    let applied_set = field_set(&applied_scoped, schema);

    let is_self = |e: &Entry| e.manager == w.manager && e.operation == "Apply" && e.subresource == w.subresource;
    let mut conflicts = Vec::new();
    let mut forced: Vec<(usize, Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if is_self(e) {
            continue;
        }
        for p in e.set.intersection(&applied_set) {
            if matches!(p.last(), Some(PE::K(_))) {
                continue;
            }
            if get(live_v, p) != get(&applied_scoped, p) {
                conflicts.push((e.manager.clone(), render_path(p)));
                forced.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, p) in forced {
        entries[i].set.remove(&p);
    }

    let mut merged = live_v.clone();
    merge(&mut merged, &applied_scoped, Some(schema), true);
    // Identity fields come from the request, whatever the live object had.
    for k in ["apiVersion", "kind"] {
        if let Some(v) = applied.get(k) {
            merged[k] = v.clone();
        }
    }
    if let Some(meta) = applied.get("metadata").and_then(Value::as_object) {
        for k in ["name", "namespace", "generateName"] {
            if let Some(v) = meta.get(k)
                && live.is_none()
            {
                merged["metadata"][k] = v.clone();
            }
        }
    }

    let prev: FieldSet = entries.iter().find(|e| is_self(e)).map(|e| e.set.clone()).unwrap_or_default();
    let others: FieldSet = entries.iter().filter(|e| !is_self(e)).flat_map(|e| e.set.iter().cloned()).collect();
    let mut dropped: Vec<&Path> = prev
        .iter()
        .filter(|p| !applied_set.contains(*p) && !others.contains(*p))
        .filter(|p| !others.iter().any(|o| o.len() > p.len() && o.starts_with(p)))
        .collect();
    // Shallowest first: removing an element first makes its fields' removals no-ops,
    // whereas removing key fields first would leave an unmatchable husk behind.
    dropped.sort_by_key(|p| p.len());
    for p in dropped {
        remove(&mut merged, p);
    }

    let entry = find_entry(&mut entries, w, "Apply");
    set_entry(entry, applied_set, w);
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// Records a non-apply write: the writer's Update entry gains every changed path.
pub fn record_update(old: Option<&Value>, new: &mut Value, schema: &Schema, scope: Scope, w: &Writer<'_>) {
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let mut entries = read_entries(old_v);
    let old_scoped = scoped(old_v, scope);
    let new_scoped = scoped(new, scope);
    let old_set = field_set(&old_scoped, schema);
    let new_set = field_set(&new_scoped, schema);
    let changed: FieldSet = new_set.iter().filter(|p| get(&old_scoped, p) != get(&new_scoped, p)).cloned().collect();
    let removed: FieldSet = old_set.difference(&new_set).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        let keep: FieldSet = e.set.iter().filter(|p| !changed.contains(*p) && !removed.contains(*p)).cloned().collect();
        if keep != e.set {
            e.set = keep;
        }
    }
    if !changed.is_empty() && !w.manager.is_empty() {
        let entry = find_entry(&mut entries, w, "Update");
        let mut set = entry.set.clone();
        set.extend(changed);
        set_entry(entry, set, w);
    }
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::parse(
            &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                    "containers": {"type": "array", "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                }}
            }}),
            "",
        )
        .unwrap()
    }

    fn w(m: &'static str) -> Writer<'static> {
        Writer { manager: m, subresource: "", api_version: "v1", now: "2024-01-01T00:00:00Z" }
    }

    const MAIN: Scope = Scope::Main { exclude_status: true };

    #[test]
    fn fields_v1_round_trip() {
        let v = json!({"metadata": {"labels": {"a": "1"}, "finalizers": ["x"]},
            "spec": {"replicas": 1, "containers": [{"name": "c", "image": "i"}], "empty": {}}});
        let set = field_set(&scoped(&v, MAIN), &schema());
        let enc = encode(&set);
        assert_eq!(enc["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."], json!({}));
        assert_eq!(enc["f:metadata"]["f:finalizers"]["v:\"x\""], json!({}));
        assert_eq!(decode(&enc), set);
    }

    #[test]
    fn apply_conflicts_force_and_removal() {
        let s = schema();
        let a1 = json!({"apiVersion": "v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"replicas": 1, "containers": [{"name": "c", "image": "i"}, {"name": "d", "image": "j"}]}});
        let live = apply(None, &a1, &s, MAIN, false, &w("one")).unwrap();
        // Same value from another manager: shared ownership, no conflict.
        let a2 = json!({"spec": {"replicas": 1}});
        let live = apply(Some(&live), &a2, &s, MAIN, false, &w("two")).unwrap();
        let a3 = json!({"spec": {"replicas": 2}});
        let err = apply(Some(&live), &a3, &s, MAIN, false, &w("two")).unwrap_err();
        assert_eq!(err, vec![("one".to_string(), ".spec.replicas".to_string())]);
        let forced = apply(Some(&live), &a3, &s, MAIN, true, &w("two")).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        // "one" drops container d and replicas: d goes, replicas stays (two owns it).
        let a4 = json!({"apiVersion": "v1", "kind": "K", "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let after = apply(Some(&forced), &a4, &s, MAIN, false, &w("one")).unwrap();
        assert_eq!(after["spec"]["containers"], json!([{"name": "c", "image": "i"}]));
        assert_eq!(after["spec"]["replicas"], 2);
    }

    #[test]
    fn update_takes_ownership() {
        let s = schema();
        let a1 = json!({"spec": {"replicas": 1, "x": "a"}});
        let live = apply(None, &a1, &s, MAIN, false, &w("applier")).unwrap();
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(3);
        record_update(Some(&live), &mut edited, &s, MAIN, &w("editor"));
        let entries = read_entries(&edited);
        let editor = entries.iter().find(|e| e.manager == "editor").unwrap();
        assert!(editor.set.contains(&vec![PE::F("spec".into()), PE::F("replicas".into())]));
        let applier = entries.iter().find(|e| e.manager == "applier").unwrap();
        assert!(!applier.set.contains(&vec![PE::F("spec".into()), PE::F("replicas".into())]));
        // Re-applying the old value now conflicts with the editor.
        assert!(apply(Some(&edited), &a1, &s, MAIN, false, &w("applier")).is_err());
    }
}
