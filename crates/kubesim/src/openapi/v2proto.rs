//! `/openapi/v2` in protobuf (gnostic's `openapi_v2.Document`), which client-go's
//! `OpenAPISchema()` asks for and cannot do without: kubectl 1.27 and 1.28 validate with it,
//! newer ones fall back to it (`kubectl explain --output plaintext-openapiv2`, client-side
//! apply of custom resources). Encoded from the JSON document; vendor extensions, defaults
//! and enums travel as YAML (JSON is YAML), as gnostic carries them.

use serde_json::{Map, Value};

/// A protobuf message being written (proto3: default values are left out).
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, v: Option<&Value>) {
        if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int(&mut self, field: u32, v: Option<&Value>) {
        if let Some(i) = v.and_then(Value::as_i64).filter(|i| *i != 0) {
            self.key(field, 0);
            self.varint(i as u64);
        }
    }

    fn double(&mut self, field: u32, v: Option<&Value>) {
        if let Some(f) = v.and_then(Value::as_f64) {
            self.key(field, 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    fn msg(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

/// `Any { yaml = 2 }`.
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.bytes(2, serde_json::to_string(v).unwrap_or_default().as_bytes());
    m
}

/// `repeated NamedAny` for every `x-` key of an object.
fn vendor_extensions(out: &mut Msg, field: u32, o: &Map<String, Value>) {
    for (k, v) in o.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Msg::default();
        named.bytes(1, k.as_bytes());
        named.msg(2, any(v));
        out.msg(field, named);
    }
}

fn named(name: &str, field: u32, value: Msg) -> Msg {
    let mut m = Msg::default();
    m.bytes(1, name.as_bytes());
    m.msg(field, value);
    m
}

fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = v.as_object() else { return m };
    m.string(1, o.get("$ref"));
    m.string(2, o.get("format"));
    m.string(3, o.get("title"));
    m.string(4, o.get("description"));
    if let Some(d) = o.get("default") {
        m.msg(5, any(d));
    }
    m.double(6, o.get("multipleOf"));
    m.double(7, o.get("maximum"));
    m.boolean(8, o.get("exclusiveMaximum"));
    m.double(9, o.get("minimum"));
    m.boolean(10, o.get("exclusiveMinimum"));
    m.int(11, o.get("maxLength"));
    m.int(12, o.get("minLength"));
    m.string(13, o.get("pattern"));
    m.int(14, o.get("maxItems"));
    m.int(15, o.get("minItems"));
    m.boolean(16, o.get("uniqueItems"));
    m.int(17, o.get("maxProperties"));
    m.int(18, o.get("minProperties"));
    m.strings(19, o.get("required"));
    for e in o.get("enum").and_then(Value::as_array).into_iter().flatten() {
        m.msg(20, any(e));
    }
    match o.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Msg::default();
            item.boolean(2, Some(&Value::Bool(*b)));
            m.msg(21, item);
        }
        Some(s @ Value::Object(_)) => {
            let mut item = Msg::default();
            item.msg(1, schema(s));
            m.msg(21, item);
        }
        _ => {}
    }
    match o.get("type") {
        Some(Value::String(t)) => {
            let mut ty = Msg::default();
            ty.bytes(1, t.as_bytes());
            m.msg(22, ty);
        }
        Some(ts @ Value::Array(_)) => {
            let mut ty = Msg::default();
            ty.strings(1, Some(ts));
            m.msg(22, ty);
        }
        _ => {}
    }
    if let Some(items) = o.get("items") {
        let mut it = Msg::default();
        match items {
            Value::Array(a) => a.iter().for_each(|s| it.msg(1, schema(s))),
            s => it.msg(1, schema(s)),
        }
        m.msg(23, it);
    }
    for s in o.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        m.msg(24, schema(s));
    }
    if let Some(props) = o.get("properties").and_then(Value::as_object) {
        let mut p = Msg::default();
        for (k, s) in props {
            p.msg(1, named(k, 2, schema(s)));
        }
        m.msg(25, p);
    }
    m.boolean(27, o.get("readOnly"));
    vendor_extensions(&mut m, 31, o);
    m
}

/// `ParametersItem { parameter = 1 { body_parameter = 1 | non_body_parameter = 2 } }`.
fn parameter(p: &Value) -> Msg {
    let mut param = Msg::default();
    if p["in"] == "body" {
        let mut body = Msg::default();
        body.string(1, p.get("description"));
        body.string(2, p.get("name"));
        body.string(3, p.get("in"));
        body.boolean(4, p.get("required"));
        body.msg(5, schema(&p["schema"]));
        param.msg(1, body);
    } else {
        // Query and path sub-schemas number their fields alike up to `type`.
        let (which, ty, unique) = if p["in"] == "path" { (4, 5, 19) } else { (3, 6, 20) };
        let mut sub = Msg::default();
        sub.boolean(1, p.get("required"));
        sub.string(2, p.get("in"));
        sub.string(3, p.get("description"));
        sub.string(4, p.get("name"));
        sub.string(ty, p.get("type"));
        sub.boolean(unique, p.get("uniqueItems"));
        let mut non_body = Msg::default();
        non_body.msg(which, sub);
        param.msg(2, non_body);
    }
    let mut item = Msg::default();
    item.msg(1, param);
    item
}

fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(o) = op.as_object() else { return m };
    m.strings(1, o.get("tags"));
    m.string(3, o.get("description"));
    m.string(5, o.get("operationId"));
    m.strings(6, o.get("produces"));
    m.strings(7, o.get("consumes"));
    for p in o.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        m.msg(8, parameter(p));
    }
    let mut responses = Msg::default();
    for (code, r) in o.get("responses").and_then(Value::as_object).into_iter().flatten() {
        let mut resp = Msg::default();
        resp.string(1, r.get("description"));
        if let Some(s) = r.get("schema") {
            let mut item = Msg::default();
            item.msg(1, schema(s));
            resp.msg(2, item);
        }
        let mut value = Msg::default();
        value.msg(1, resp);
        responses.msg(1, named(code, 2, value));
    }
    m.msg(9, responses);
    vendor_extensions(&mut m, 13, o);
    m
}

/// Encodes a Swagger 2.0 JSON document as `openapi_v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut d = Msg::default();
    d.string(1, doc.get("swagger"));
    let mut info = Msg::default();
    info.string(1, doc.pointer("/info/title"));
    info.string(2, doc.pointer("/info/version"));
    d.msg(2, info);
    let mut paths = Msg::default();
    for (path, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
        let mut pi = Msg::default();
        for (method, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
            if let Some(op) = item.get(method) {
                pi.msg(field, operation(op));
            }
        }
        for p in item.get("parameters").and_then(Value::as_array).into_iter().flatten() {
            pi.msg(9, parameter(p));
        }
        paths.msg(2, named(path, 2, pi));
    }
    d.msg(8, paths);
    let mut defs = Msg::default();
    for (name, s) in doc.get("definitions").and_then(Value::as_object).into_iter().flatten() {
        defs.msg(1, named(name, 2, schema(s)));
    }
    d.msg(9, defs);
    d.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_strings_encode_as_protobuf() {
        let mut m = Msg::default();
        m.string(1, Some(&Value::String("2.0".into())));
        m.int(11, Some(&serde_json::json!(300)));
        assert_eq!(m.0, b"\x0a\x032.0\x58\xac\x02");
        let doc = encode(&serde_json::json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}}));
        assert!(doc.starts_with(b"\x0a\x032.0\x12\x15\x0a\x0aKubernetes\x12\x07v1.33.0"), "{doc:?}");
    }
}
