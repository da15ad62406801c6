//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge patch is approximated from the schema topology: lists with
//! `x-kubernetes-list-type: map` merge element-wise on their first key (the built-in
//! hints give containers by name, ports by containerPort, conditions by type, ...),
//! `set` lists are unioned, other lists are replaced. Directives supported:
//! `$patch: delete` on a list element or map, `$patch: replace` on a map,
//! `$deleteFromPrimitiveList/<field>` and `$retainKeys`; `$setElementOrder` is ignored.

use serde_json::{Map, Value};

use crate::schema::Schema;

pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p.strip_prefix('/').ok_or_else(|| format!("invalid JSON pointer {p:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("path element {t:?} not found"))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("bad array index {t:?}"))?;
                a.get_mut(i).ok_or_else(|| format!("array index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into a scalar at {t:?}")),
        };
    }
    Ok(cur)
}

fn get_at<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add_at(doc: &mut Value, toks: &[String], v: Value) -> Result<(), String> {
    let Some((last, parent)) = toks.split_last() else {
        *doc = v;
        return Ok(());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), v);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| format!("bad array index {last:?}"))?;
            if i > a.len() {
                return Err(format!("array index {i} out of range"));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err("cannot add to a scalar".into()),
    }
}

fn remove_at(doc: &mut Value, toks: &[String]) -> Result<Value, String> {
    let (last, parent) = toks.split_last().ok_or("cannot remove the whole document")?;
    match parent_mut(doc, parent)? {
        Value::Object(m) => m.remove(last).ok_or_else(|| format!("unable to remove nonexistent key: {last}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("bad array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("array index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err("cannot remove from a scalar".into()),
    }
}

pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).ok_or("operation without \"op\"")?;
        let path = split_pointer(op.get("path").and_then(Value::as_str).ok_or("operation without \"path\"")?)?;
        let value = || op.get("value").cloned().ok_or_else(|| format!("{name} operation without \"value\""));
        let from = || -> Result<Vec<String>, String> {
            split_pointer(op.get("from").and_then(Value::as_str).ok_or_else(|| format!("{name} operation without \"from\""))?)
        };
        match name {
            "add" => add_at(doc, &path, value()?)?,
            "remove" => {
                remove_at(doc, &path)?;
            }
            "replace" => {
                if path.is_empty() {
                    *doc = value()?;
                } else {
                    remove_at(doc, &path)
                        .map_err(|_| format!("replace operation does not apply: doc is missing key: /{}", path.join("/")))?;
                    add_at(doc, &path, value()?)?;
                }
            }
            "move" => {
                let v = remove_at(doc, &from()?)?;
                add_at(doc, &path, v)?;
            }
            "copy" => {
                let v = get_at(doc, &from()?).cloned().ok_or("copy from a missing path")?;
                add_at(doc, &path, v)?;
            }
            "test" => {
                let want = value()?;
                if get_at(doc, &path) != Some(&want) {
                    return Err(format!("testing value /{} failed", path.join("/")));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}

/// Strategic merge patch, guided by `schema` (see the module docs).
pub fn strategic_merge(target: &mut Value, patch: &Value, schema: Option<&Schema>) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = p.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let child = schema.and_then(|s| s.child(k));
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Array(items) => {
                let existing = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(existing, items, child);
            }
            Value::Object(_) => {
                if child.is_some_and(Schema::is_atomic_map) {
                    t.insert(k.clone(), v.clone());
                } else {
                    strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v, child);
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list(existing: &mut Value, items: &[Value], schema: Option<&Schema>) {
    let keys = schema.and_then(Schema::map_keys);
    if let (Some(keys), Value::Array(cur)) = (keys, &mut *existing) {
        // Strategic merge keys are single fields; the first list-map key plays that role.
        let key = &keys[0];
        for item in items {
            let id = item.get(key);
            let pos = cur.iter().position(|c| id.is_some() && c.get(key) == id);
            let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
            match (pos, delete) {
                (Some(i), true) => {
                    cur.remove(i);
                }
                (None, true) => {}
                (Some(i), false) => strategic_merge(&mut cur[i], item, schema.and_then(Schema::item)),
                (None, false) => {
                    let mut fresh = Value::Null;
                    strategic_merge(&mut fresh, item, schema.and_then(Schema::item));
                    cur.push(fresh);
                }
            }
        }
        return;
    }
    if let (true, Value::Array(cur)) = (schema.is_some_and(Schema::is_set), &mut *existing) {
        for item in items {
            if !cur.contains(item) {
                cur.push(item.clone());
            }
        }
        return;
    }
    *existing = Value::Array(items.to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_ops() {
        let mut d = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "replace", "path": "/b/c", "value": 2},
                {"op": "test", "path": "/b/c", "value": 2},
                {"op": "copy", "from": "/b/c", "path": "/x"},
                {"op": "move", "from": "/x", "path": "/y"},
                {"op": "remove", "path": "/a/0"}
            ]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": [2, 3], "b": {"c": 2}, "y": 2}));
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/y", "value": 9}])).is_err());
        assert!(json_patch(&mut d, &json!([{"op": "replace", "path": "/nope", "value": 9}])).is_err());
    }

    #[test]
    fn strategic_by_key() {
        let schema = Schema::parse(
            &json!({"properties": {"containers": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}}}}),
            "",
        )
        .unwrap();
        let mut t = json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]});
        strategic_merge(
            &mut t,
            &json!({"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}, {"name": "c", "image": "w"}]}),
            Some(&schema),
        );
        assert_eq!(t, json!({"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}));
    }
}
