//! Structural OpenAPI v3 schemas as CRDs carry them: defaulting, pruning, validation
//! (including CEL rules) and the list/map topology that server-side apply needs.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::cel;
use crate::error::Cause;

#[derive(Debug, Clone)]
pub struct Rule {
    pub source: String,
    program: cel::Program,
    message: Option<String>,
    message_expression: Option<cel::Program>,
    reason: Option<String>,
    field_path: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub type_: Option<String>,
    pub properties: BTreeMap<String, Schema>,
    pub required: Vec<String>,
    pub items: Option<Box<Schema>>,
    pub additional: Option<Box<Schema>>,
    /// `additionalProperties: false` (or absent) vs `true`.
    pub additional_allowed: bool,
    pub enum_: Option<Vec<Value>>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub unique_items: bool,
    pub pattern: Option<(String, Regex)>,
    pub format: Option<String>,
    pub nullable: bool,
    pub default: Option<Value>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
    pub rules: Vec<Rule>,
}

fn u64_field(m: &Map<String, Value>, k: &str) -> Option<u64> {
    m.get(k).and_then(Value::as_u64)
}

fn f64_field(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn bool_field(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn str_field(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k).and_then(Value::as_str).map(str::to_string)
}

impl Schema {
    /// A schema that accepts anything and keeps unknown fields (built-in kinds).
    pub fn permissive() -> Schema {
        Schema { preserve_unknown: true, ..Default::default() }
    }

    /// Parses a schema; compile errors (bad regex, unsupported CEL) come back as causes
    /// with `path` as the field prefix.
    pub fn parse(v: &Value, path: &str) -> Result<Schema, Vec<Cause>> {
        let mut errs = Vec::new();
        let s = Self::parse_inner(v, path, &mut errs);
        if errs.is_empty() { Ok(s) } else { Err(errs) }
    }

    fn parse_inner(v: &Value, path: &str, errs: &mut Vec<Cause>) -> Schema {
        let Some(m) = v.as_object() else {
            errs.push(Cause { reason: "FieldValueInvalid".into(), message: "Invalid value: must be an object".into(), field: path.into() });
            return Schema::default();
        };
        let mut s = Schema {
            type_: str_field(m, "type"),
            required: m
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            enum_: m.get("enum").and_then(Value::as_array).cloned(),
            minimum: f64_field(m, "minimum"),
            maximum: f64_field(m, "maximum"),
            exclusive_minimum: bool_field(m, "exclusiveMinimum"),
            exclusive_maximum: bool_field(m, "exclusiveMaximum"),
            multiple_of: f64_field(m, "multipleOf"),
            min_length: u64_field(m, "minLength"),
            max_length: u64_field(m, "maxLength"),
            min_items: u64_field(m, "minItems"),
            max_items: u64_field(m, "maxItems"),
            min_properties: u64_field(m, "minProperties"),
            max_properties: u64_field(m, "maxProperties"),
            unique_items: bool_field(m, "uniqueItems"),
            format: str_field(m, "format"),
            nullable: bool_field(m, "nullable"),
            default: m.get("default").cloned(),
            preserve_unknown: bool_field(m, "x-kubernetes-preserve-unknown-fields"),
            int_or_string: bool_field(m, "x-kubernetes-int-or-string"),
            embedded: bool_field(m, "x-kubernetes-embedded-resource"),
            list_type: str_field(m, "x-kubernetes-list-type"),
            list_map_keys: m
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            map_type: str_field(m, "x-kubernetes-map-type"),
            ..Default::default()
        };
        if let Some(p) = m.get("pattern").and_then(Value::as_str) {
            match Regex::new(p) {
                Ok(re) => s.pattern = Some((p.to_string(), re)),
                Err(e) => errs.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!("Invalid value: {p:?}: must be a valid regular expression: {e}"),
                    field: format!("{path}.pattern"),
                }),
            }
        }
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for (k, pv) in props {
                s.properties.insert(k.clone(), Self::parse_inner(pv, &format!("{path}.properties[{k}]"), errs));
            }
        }
        if let Some(items) = m.get("items") {
            s.items = Some(Box::new(Self::parse_inner(items, &format!("{path}.items"), errs)));
        }
        match m.get("additionalProperties") {
            Some(Value::Bool(b)) => s.additional_allowed = *b,
            Some(ap @ Value::Object(_)) => {
                s.additional_allowed = true;
                s.additional = Some(Box::new(Self::parse_inner(ap, &format!("{path}.additionalProperties"), errs)));
            }
            _ => {}
        }
        for (key, target) in [("allOf", &mut s.all_of), ("anyOf", &mut s.any_of), ("oneOf", &mut s.one_of)] {
            if let Some(list) = m.get(key).and_then(Value::as_array) {
                for (i, sub) in list.iter().enumerate() {
                    target.push(Self::parse_inner(sub, &format!("{path}.{key}[{i}]"), errs));
                }
            }
        }
        if let Some(n) = m.get("not") {
            s.not = Some(Box::new(Self::parse_inner(n, &format!("{path}.not"), errs)));
        }
        if let Some(rules) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
            for (i, r) in rules.iter().enumerate() {
                let field = format!("{path}.x-kubernetes-validations[{i}].rule");
                let Some(src) = r.get("rule").and_then(Value::as_str) else {
                    errs.push(Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field });
                    continue;
                };
                let program = match cel::Program::compile(src) {
                    Ok(p) => p,
                    Err(e) => {
                        errs.push(Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!(
                                "Invalid value: {src:?}: compilation failed: {e} (kubesim evaluates a CEL subset: see the crate docs)"
                            ),
                            field,
                        });
                        continue;
                    }
                };
                let message_expression = match r.get("messageExpression").and_then(Value::as_str) {
                    Some(me) => match cel::Program::compile(me) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            errs.push(Cause {
                                reason: "FieldValueInvalid".into(),
                                message: format!("Invalid value: {me:?}: messageExpression compilation failed: {e}"),
                                field: format!("{path}.x-kubernetes-validations[{i}].messageExpression"),
                            });
                            None
                        }
                    },
                    None => None,
                };
                s.rules.push(Rule {
                    source: src.to_string(),
                    program,
                    message: str_field(r.as_object().expect("checked above"), "message"),
                    message_expression,
                    reason: r.get("reason").and_then(Value::as_str).map(str::to_string),
                    field_path: r.get("fieldPath").and_then(Value::as_str).map(str::to_string),
                });
            }
        }
        s
    }

    /// The schema of a property (or of any key of a map).
    pub fn child(&self, key: &str) -> Option<&Schema> {
        self.properties.get(key).or(self.additional.as_deref()).or_else(|| self.all_of.iter().find_map(|s| s.properties.get(key)))
    }

    pub fn item(&self) -> Option<&Schema> {
        self.items.as_deref()
    }

    /// The keys of a `map`-typed list, or `None` for atomic/set lists.
    pub fn map_keys(&self) -> Option<&[String]> {
        if self.list_type.as_deref() == Some("map") && !self.list_map_keys.is_empty() { Some(&self.list_map_keys) } else { None }
    }

    pub fn is_set(&self) -> bool {
        self.list_type.as_deref() == Some("set")
    }

    pub fn is_atomic_map(&self) -> bool {
        self.map_type.as_deref() == Some("atomic")
    }

    pub(crate) fn keeps_unknown(&self) -> bool {
        self.preserve_unknown || self.additional_allowed && self.additional.is_none()
    }

    // ------------------------------------------------------------ pruning

    /// Structural pruning: drops fields the schema does not know about.
    /// `root` keeps apiVersion/kind/metadata, which the server handles itself.
    pub fn prune(&self, v: &mut Value, root: bool) {
        match v {
            Value::Object(m) => {
                let keep_meta = root || self.embedded;
                if !self.keeps_unknown() {
                    m.retain(|k, _| {
                        self.properties.contains_key(k)
                            || self.additional.is_some()
                            || (keep_meta && (k == "apiVersion" || k == "kind" || k == "metadata"))
                    });
                }
                for (k, child) in m.iter_mut() {
                    if keep_meta && k == "metadata" {
                        continue;
                    }
                    if let Some(s) = self.properties.get(k).or(self.additional.as_deref()) {
                        s.prune(child, false);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = self.item() {
                    for i in items {
                        s.prune(i, false);
                    }
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ defaulting

    /// Applies `default`s and drops nulls that the schema does not allow, as the
    /// real server does before validation.
    pub fn apply_defaults(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, val| !(val.is_null() && self.properties.get(k).or(self.additional.as_deref()).is_some_and(|s| !s.nullable)));
                for (k, s) in &self.properties {
                    if !m.contains_key(k)
                        && let Some(d) = &s.default
                    {
                        m.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in m.iter_mut() {
                    if let Some(s) = self.properties.get(k).or(self.additional.as_deref()) {
                        s.apply_defaults(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(s) = self.item() {
                    for i in items {
                        s.apply_defaults(i);
                    }
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ validation

    pub fn validate(&self, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
        let before = errs.len();
        self.validate_value(v, path, errs);
        if errs.len() > before {
            // Children and rules of a node with the wrong shape only add noise.
            return;
        }
        match v {
            Value::Object(m) => {
                for r in &self.required {
                    if !m.contains_key(r) {
                        errs.push(cause("FieldValueRequired", join(path, r), "Required value".into()));
                    }
                }
                for (k, child) in m {
                    if path.is_empty() && (k == "metadata" || k == "apiVersion" || k == "kind") {
                        continue;
                    }
                    let Some(s) = self.properties.get(k).or(self.additional.as_deref()) else {
                        continue;
                    };
                    let old_child = old.and_then(|o| o.get(k));
                    s.validate(child, old_child, &join(path, k), errs);
                }
            }
            Value::Array(items) => {
                if let Some(s) = self.item() {
                    for (i, item) in items.iter().enumerate() {
                        let old_item = old.and_then(|o| self.correlate_item(item, o));
                        s.validate(item, old_item, &format!("{path}[{i}]"), errs);
                    }
                }
            }
            _ => {}
        }
        self.run_rules(v, old, path, errs);
    }

    /// Finds the old element matching `item` so transition rules can compare; atomic
    /// lists have no such correlation, as on a real server.
    fn correlate_item<'a>(&self, item: &Value, old: &'a Value) -> Option<&'a Value> {
        let olds = old.as_array()?;
        if let Some(keys) = self.map_keys() {
            olds.iter().find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
        } else if self.is_set() {
            olds.iter().find(|o| *o == item)
        } else {
            None
        }
    }

    fn run_rules(&self, v: &Value, old: Option<&Value>, path: &str, errs: &mut Vec<Cause>) {
        for r in &self.rules {
            if r.program.is_transition() && old.is_none() {
                continue;
            }
            let outcome = r.program.eval(v, old);
            let field = match &r.field_path {
                Some(fp) => format!("{path}{}", if fp.starts_with('.') || fp.starts_with('[') { fp.clone() } else { format!(".{fp}") }),
                None => path.to_string(),
            };
            let field = field.trim_start_matches('.').to_string();
            match outcome {
                Ok(cel::CVal::Bool(true)) => {}
                Ok(cel::CVal::Bool(false)) => {
                    let msg = r
                        .message_expression
                        .as_ref()
                        .and_then(|me| match me.eval(v, old) {
                            Ok(cel::CVal::Str(s)) if !s.trim().is_empty() => Some(s),
                            _ => None,
                        })
                        .or_else(|| r.message.clone())
                        .unwrap_or_else(|| format!("failed rule: {}", r.source));
                    let reason = match r.reason.as_deref() {
                        Some("FieldValueForbidden") => "FieldValueForbidden",
                        Some("FieldValueRequired") => "FieldValueRequired",
                        Some("FieldValueDuplicate") => "FieldValueDuplicate",
                        _ => "FieldValueInvalid",
                    };
                    let message = match reason {
                        "FieldValueForbidden" => format!("Forbidden: {msg}"),
                        "FieldValueRequired" => format!("Required value: {msg}"),
                        "FieldValueDuplicate" => format!("Duplicate value: {msg}"),
                        _ => format!("Invalid value: {}: {msg}", render(v)),
                    };
                    errs.push(cause(reason, field, message));
                }
                Ok(other) => errs.push(cause(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {}: rule did not evaluate to a bool: {:?}", render(v), other),
                )),
                Err(e) => errs.push(cause(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {}: rule {:?} evaluation error: {e}", render(v), r.source),
                )),
            }
        }
    }

    fn type_ok(&self, v: &Value) -> bool {
        if self.int_or_string {
            return v.is_string() || is_integer(v);
        }
        match self.type_.as_deref() {
            Some("object") => v.is_object(),
            Some("array") => v.is_array(),
            Some("string") => v.is_string(),
            Some("integer") => is_integer(v),
            Some("number") => v.is_number(),
            Some("boolean") => v.is_boolean(),
            _ => true,
        }
    }

    /// Checks on this node alone (not children, not rules).
    fn validate_value(&self, v: &Value, path: &str, errs: &mut Vec<Cause>) {
        let p = if path.is_empty() { "<root>" } else { path };
        if v.is_null() {
            if !self.nullable && self.type_.is_some() {
                errs.push(cause(
                    "FieldValueTypeInvalid",
                    path.into(),
                    format!("Invalid value: \"null\": {p} in body must be of type {}: \"null\"", self.type_.as_deref().unwrap_or("object")),
                ));
            }
            return;
        }
        if !self.type_ok(v) {
            let want = if self.int_or_string { "integer or string" } else { self.type_.as_deref().unwrap_or("") };
            errs.push(cause(
                "FieldValueTypeInvalid",
                path.into(),
                format!("Invalid value: {}: {p} in body must be of type {want}: {}", render(v), json_type_quoted(v)),
            ));
            return;
        }
        if let Some(allowed) = &self.enum_
            && !allowed.contains(v)
        {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            errs.push(cause(
                "FieldValueNotSupported",
                path.into(),
                format!("Unsupported value: {}: supported values: {}", v, list.join(", ")),
            ));
        }
        if let Some(n) = v.as_f64() {
            if let Some(max) = self.maximum {
                let bad = if self.exclusive_maximum { n >= max } else { n > max };
                if bad {
                    let rel = if self.exclusive_maximum { "less than" } else { "less than or equal to" };
                    errs.push(cause(
                        "FieldValueInvalid",
                        path.into(),
                        format!("Invalid value: {v}: {p} in body should be {rel} {}", fmt_num(max)),
                    ));
                }
            }
            if let Some(min) = self.minimum {
                let bad = if self.exclusive_minimum { n <= min } else { n < min };
                if bad {
                    let rel = if self.exclusive_minimum { "greater than" } else { "greater than or equal to" };
                    errs.push(cause(
                        "FieldValueInvalid",
                        path.into(),
                        format!("Invalid value: {v}: {p} in body should be {rel} {}", fmt_num(min)),
                    ));
                }
            }
            if let Some(m) = self.multiple_of
                && m > 0.0
                && (n / m).fract().abs() > 1e-9
            {
                errs.push(cause(
                    "FieldValueInvalid",
                    path.into(),
                    format!("Invalid value: {v}: {p} in body should be a multiple of {}", fmt_num(m)),
                ));
            }
        }
        if let Some(s) = v.as_str() {
            let len = s.chars().count() as u64;
            if let Some(max) = self.max_length
                && len > max
            {
                errs.push(cause("FieldValueTooLong", path.into(), format!("Too long: may not be more than {max} bytes")));
            }
            if let Some(min) = self.min_length
                && len < min
            {
                errs.push(cause(
                    "FieldValueInvalid",
                    path.into(),
                    format!("Invalid value: {v}: {p} in body should be at least {min} chars long"),
                ));
            }
            if let Some((src, re)) = &self.pattern
                && !re.is_match(s)
            {
                errs.push(cause("FieldValueInvalid", path.into(), format!("Invalid value: {v}: {p} in body should match '{src}'")));
            }
            if let Some(f) = &self.format
                && !format_ok(f, s)
            {
                errs.push(cause("FieldValueInvalid", path.into(), format!("Invalid value: {v}: {p} in body must be of type {f}: {v}")));
            }
        }
        if let Some(items) = v.as_array() {
            let n = items.len() as u64;
            if let Some(max) = self.max_items
                && n > max
            {
                errs.push(cause("FieldValueTooMany", path.into(), format!("Too many: {n}: must have at most {max} items")));
            }
            if let Some(min) = self.min_items
                && n < min
            {
                errs.push(cause(
                    "FieldValueInvalid",
                    path.into(),
                    format!("Invalid value: {n}: {p} in body should have at least {min} items"),
                ));
            }
            if self.unique_items || self.is_set() {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].contains(a) {
                        errs.push(cause("FieldValueDuplicate", format!("{path}[{i}]"), format!("Duplicate value: {a}")));
                    }
                }
            }
            if let Some(keys) = self.map_keys() {
                for (i, a) in items.iter().enumerate() {
                    let key: Vec<Option<&Value>> = keys.iter().map(|k| a.get(k)).collect();
                    if items[..i].iter().any(|b| keys.iter().map(|k| b.get(k)).collect::<Vec<_>>() == key) {
                        errs.push(cause(
                            "FieldValueDuplicate",
                            format!("{path}[{i}]"),
                            format!("Duplicate value: {}", key_render(keys, a)),
                        ));
                    }
                }
            }
        }
        if let Some(m) = v.as_object() {
            let n = m.len() as u64;
            if let Some(max) = self.max_properties
                && n > max
            {
                errs.push(cause("FieldValueTooMany", path.into(), format!("Too many: {n}: must have at most {max} items")));
            }
            if let Some(min) = self.min_properties
                && n < min
            {
                errs.push(cause(
                    "FieldValueInvalid",
                    path.into(),
                    format!("Invalid value: {n}: {p} in body should have at least {min} properties"),
                ));
            }
        }
        for s in &self.all_of {
            s.validate_value(v, path, errs);
        }
        if !self.any_of.is_empty() && !self.any_of.iter().any(|s| s.matches_value(v, path)) {
            errs.push(cause(
                "FieldValueInvalid",
                path.into(),
                format!("Invalid value: {}: {p} in body must match at least one schema in anyOf", render(v)),
            ));
        }
        if !self.one_of.is_empty() && self.one_of.iter().filter(|s| s.matches_value(v, path)).count() != 1 {
            errs.push(cause(
                "FieldValueInvalid",
                path.into(),
                format!("Invalid value: {}: {p} in body must match exactly one schema in oneOf", render(v)),
            ));
        }
        if let Some(n) = &self.not
            && n.matches_value(v, path)
        {
            errs.push(cause(
                "FieldValueInvalid",
                path.into(),
                format!("Invalid value: {}: {p} in body must not validate the schema (not)", render(v)),
            ));
        }
    }

    fn matches_value(&self, v: &Value, path: &str) -> bool {
        let mut e = Vec::new();
        self.validate(v, None, path, &mut e);
        e.is_empty()
    }
}

fn cause(reason: &str, field: String, message: String) -> Cause {
    Cause { reason: reason.into(), message, field }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() { k.to_string() } else { format!("{path}.{k}") }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { n.to_string() }
}

/// How the real server prints a value in "Invalid value: X".
fn render(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn json_type_quoted(v: &Value) -> &'static str {
    match v {
        Value::Null => "\"null\"",
        Value::Bool(_) => "\"boolean\"",
        Value::Number(n) if n.is_f64() => "\"number\"",
        Value::Number(_) => "\"integer\"",
        Value::String(_) => "\"string\"",
        Value::Array(_) => "\"array\"",
        Value::Object(_) => "\"object\"",
    }
}

fn key_render(keys: &[String], v: &Value) -> String {
    let parts: Vec<String> = keys.iter().map(|k| format!("\"{k}\":{}", v.get(k).cloned().unwrap_or(Value::Null))).collect();
    format!("map[{}]", parts.join(" "))
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "uri" => url::Url::parse(s).is_ok(),
        "byte" => s.len().is_multiple_of(4) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='),
        // Unknown formats are informational, as on the real server.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(
            &json!({
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["image"],
                        "x-kubernetes-validations": [
                            {"rule": "self == oldSelf", "message": "spec is immutable"},
                            {"rule": "self.replicas.min <= self.replicas.max", "message": "min must not exceed max"}
                        ],
                        "properties": {
                            "image": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9./:-]+$"},
                            "mode": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"},
                            "replicas": {
                                "type": "object",
                                "default": {"min": 1, "max": 1},
                                "properties": {
                                    "min": {"type": "integer", "minimum": 0},
                                    "max": {"type": "integer", "maximum": 10}
                                }
                            },
                            "port": {"x-kubernetes-int-or-string": true},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}},
                            "note": {"type": "string", "nullable": true}
                        }
                    }
                }
            }),
            "openAPIV3Schema",
        )
        .unwrap()
    }

    fn check(v: Value, old: Option<Value>) -> Vec<Cause> {
        let s = schema();
        let mut v = v;
        s.prune(&mut v, true);
        s.apply_defaults(&mut v);
        let mut errs = Vec::new();
        s.validate(&v, old.as_ref(), "", &mut errs);
        errs
    }

    #[test]
    fn prune_and_default() {
        let s = schema();
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "weird": 1},
            "spec": {"image": "a", "junk": 1, "extra": {"keep": {"deep": true}}, "labels": {"k": "v"}}, "bogus": true});
        s.prune(&mut v, true);
        s.apply_defaults(&mut v);
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "weird": 1},
                "spec": {"image": "a", "mode": "cpu", "replicas": {"min": 1, "max": 1},
                    "extra": {"keep": {"deep": true}}, "labels": {"k": "v"}}})
        );
    }

    #[test]
    fn validation_errors() {
        let errs = check(
            json!({"spec": {"image": "UPPER", "mode": "tpu", "replicas": {"min": 5, "max": 11}, "port": true, "labels": {"a": "long"}}}),
            None,
        );
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.image"), "{errs:?}");
        assert!(fields.contains(&"spec.mode"), "{errs:?}");
        assert!(fields.contains(&"spec.replicas.max"), "{errs:?}");
        assert!(fields.contains(&"spec.port"), "{errs:?}");
        assert!(fields.contains(&"spec.labels.a"), "{errs:?}");
        assert!(check(json!({"spec": {"image": "ok", "port": "http", "note": null}}), None).is_empty());
        let errs = check(json!({"spec": {}}), None);
        assert_eq!(errs[0].field, "spec.image");
        assert_eq!(errs[0].reason, "FieldValueRequired");
    }

    #[test]
    fn cel_rules() {
        let errs = check(json!({"spec": {"image": "a", "replicas": {"min": 3, "max": 2}}}), None);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("min must not exceed max"));
        let old = json!({"spec": {"image": "a", "mode": "cpu", "replicas": {"min": 1, "max": 1}}});
        assert!(check(json!({"spec": {"image": "a"}}), Some(old.clone())).is_empty());
        let errs = check(json!({"spec": {"image": "b"}}), Some(old));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("spec is immutable"));
    }

    #[test]
    fn bad_cel_rejected_at_parse() {
        let e = Schema::parse(&json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.foo.bar()"}]}), "s").unwrap_err();
        assert!(e[0].message.contains("compilation failed"));
    }
}
