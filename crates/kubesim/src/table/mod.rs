//! Server-side printing: `meta.k8s.io/v1` `Table` responses for `kubectl get`, which asks
//! for them in `Accept` (`as=Table`). Custom resources get their CRD's
//! `additionalPrinterColumns` (Name and Age when there are none); built-ins get the
//! columns of the real server's printers, or most of them (see `builtin`).

mod builtin;
pub mod jsonpath;

use serde_json::{Value, json};

use crate::resource::ResourceInfo;

/// What a Table row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn from_query(v: Option<&str>) -> Include {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

pub enum Cell {
    Name,
    /// A JSONPath into the object; the first match.
    Path(String),
    Computed(fn(&Value) -> Value),
}

pub struct Column {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date` (rendered as an age: `5m`).
    pub ty: String,
    pub format: String,
    pub description: String,
    /// 0 is always shown; higher only with `-o wide`.
    pub priority: i64,
    pub cell: Cell,
}

impl Column {
    pub fn new(name: &str, ty: &str, priority: i64, cell: Cell) -> Column {
        let format = if matches!(cell, Cell::Name) { "name" } else { "" };
        Column { name: name.into(), ty: ty.into(), format: format.into(), description: String::new(), priority, cell }
    }
}

/// Age as kubectl prints it (apimachinery's `duration.HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let (minutes, hours) = (secs / 60, secs / 3600);
    let with = |big: i64, bu: &str, small: i64, su: &str| if small == 0 { format!("{big}{bu}") } else { format!("{big}{bu}{small}{su}") };
    match () {
        _ if minutes < 10 => with(minutes, "m", secs % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => with(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => with(hours / 24, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ if hours < 24 * 365 * 8 => with(hours / 24 / 365, "y", hours / 24 % 365, "d"),
        _ => format!("{}y", hours / 24 / 365),
    }
}

/// The age of an RFC 3339 timestamp, or None if it is not one.
pub fn age(ts: &str) -> Option<String> {
    let t = chrono::DateTime::parse_from_rfc3339(ts).ok()?;
    Some(human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()))
}

/// A JSON value shown in a `string` column: Go's `%v` for scalars, JSON otherwise.
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn cell(col: &Column, obj: &Value) -> Value {
    let v = match &col.cell {
        Cell::Name => return obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        Cell::Computed(f) => return f(obj),
        Cell::Path(p) => match jsonpath::find(obj, p).ok().and_then(|r| r.into_iter().next()) {
            Some(v) => v,
            None => return Value::Null,
        },
    };
    match col.ty.as_str() {
        "string" => json!(plain(&v)),
        "integer" => v.as_f64().map(|f| json!(f as i64)).unwrap_or(Value::Null),
        "number" if v.is_number() => v,
        "boolean" if v.is_boolean() => v,
        "date" => v.as_str().map(|s| json!(age(s).unwrap_or_else(|| "<invalid>".into()))).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The columns of a kind.
pub fn columns(info: &ResourceInfo) -> Vec<Column> {
    if info.crd.is_none() {
        return builtin::columns(&info.group, &info.plural);
    }
    let mut cols = vec![Column::new("Name", "string", 0, Cell::Name)];
    cols[0].description = "Name must be unique within a namespace.".into();
    if info.printer_columns.is_empty() {
        cols.push(Column::new("Age", "date", 0, Cell::Path(".metadata.creationTimestamp".into())));
    }
    for c in &info.printer_columns {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let mut col =
            Column::new(&s("name"), &s("type"), c.get("priority").and_then(Value::as_i64).unwrap_or(0), Cell::Path(s("jsonPath")));
        col.format = s("format");
        col.description = s("description");
        cols.push(col);
    }
    cols
}

fn row(cols: &[Column], obj: &Value, include: Include) -> Value {
    let cells: Vec<Value> = cols.iter().map(|c| cell(c, obj)).collect();
    let mut r = json!({"cells": cells});
    match include {
        Include::None => {}
        Include::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
        Include::Object => r["object"] = obj.clone(),
    }
    r
}

/// A Table of `items`; `metadata` is the list's (resourceVersion, continue).
pub fn table(info: &ResourceInfo, items: &[Value], metadata: Value, include: Include) -> Value {
    let cols = columns(info);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": if c.ty == "date" && info.crd.is_none() { "string" } else { c.ty.as_str() }, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = items.iter().map(|o| row(&cols, o, include)).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_print_like_kubectl() {
        for (s, want) in [
            (5, "5s"),
            (119, "119s"),
            (150, "2m30s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (30 * 3600, "30h"),
            (3 * 86400 + 3600, "3d1h"),
            (400 * 86400, "400d"),
            (3 * 365 * 86400, "3y"),
        ] {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }
}
