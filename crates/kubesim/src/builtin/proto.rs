//! The protobuf wire format of the built-in kinds, as kubectl's typed clients send it
//! (`kubectl create namespace` posts `application/vnd.kubernetes.protobuf` whatever the
//! server advertises, and does not fall back to JSON on a 415), decoded into the JSON the
//! real server would store.
//!
//! The layout of every message comes from `proto_table.txt`, generated from k8s.io/api and
//! k8s.io/apimachinery by `tools/gen_proto_table.py`. Decoding keeps what the Go types
//! keep: zero scalars and empty structs are dropped unless the Go field is a pointer
//! (where `replicas: 0` means something), so the JSON decodes to the same Go object.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Message(String),
    Map(Box<Ty>, Box<Ty>),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub json: String,
    pub num: u64,
    pub ty: Ty,
    pub repeated: bool,
    pub pointer: bool,
    /// A Go embedded struct: its fields appear in the parent's JSON object.
    pub inline: bool,
    pub list_type: Option<String>,
    pub list_keys: Vec<String>,
    pub patch_strategy: Option<String>,
    pub patch_key: Option<String>,
}

#[derive(Debug, Default)]
pub struct Table {
    pub messages: HashMap<String, Vec<Field>>,
    /// Message names in table order (roots first).
    pub order: Vec<String>,
}

fn expand(short: &str) -> String {
    if let Some(rest) = short.strip_prefix("A.") {
        format!("k8s.io.api.{rest}")
    } else if let Some(rest) = short.strip_prefix("M.") {
        format!("k8s.io.apimachinery.pkg.{rest}")
    } else {
        short.to_string()
    }
}

fn parse_ty(s: &str) -> Ty {
    match s {
        "string" => Ty::String,
        "bytes" => Ty::Bytes,
        "bool" => Ty::Bool,
        "int32" => Ty::Int32,
        "int64" => Ty::Int64,
        _ => match s.strip_prefix("map<").and_then(|m| m.strip_suffix('>')).and_then(|m| m.split_once(',')) {
            Some((k, v)) => Ty::Map(Box::new(parse_ty(k)), Box::new(parse_ty(v))),
            None => Ty::Message(expand(s)),
        },
    }
}

fn parse_field(spec: &str) -> Option<Field> {
    let (json, rest) = spec.split_once('=')?;
    let mut parts = rest.split(':');
    let num = parts.next()?.parse().ok()?;
    let ty = parse_ty(parts.next()?);
    let mut f = Field {
        json: json.to_string(),
        num,
        ty,
        repeated: false,
        pointer: false,
        inline: false,
        list_type: None,
        list_keys: Vec::new(),
        patch_strategy: None,
        patch_key: None,
    };
    for flag in parts {
        match flag.split_once('=') {
            None if flag == "r" => f.repeated = true,
            None if flag == "p" => f.pointer = true,
            None if flag == "i" => f.inline = true,
            Some(("lt", v)) => f.list_type = Some(v.to_string()),
            Some(("lk", v)) => f.list_keys = v.split(',').map(str::to_string).collect(),
            Some(("ps", v)) => f.patch_strategy = Some(v.to_string()),
            Some(("pk", v)) => f.patch_key = Some(v.to_string()),
            _ => {}
        }
    }
    Some(f)
}

/// The generated table, parsed once.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Table::default();
        for line in include_str!("proto_table.txt").lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            let Some(name) = words.next() else { continue };
            let name = expand(name);
            t.messages.insert(name.clone(), words.filter_map(parse_field).collect());
            t.order.push(name);
        }
        t
    })
}

/// The protobuf message of a kind: `apps/v1` `Deployment` -> `k8s.io.api.apps.v1.Deployment`.
pub fn message_for(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    [format!("k8s.io.api.{package}.{version}.{kind}"), format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}")]
        .into_iter()
        .find(|m| table().messages.contains_key(m))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("truncated field")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn delimited(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
        self.bytes(n)
    }

    /// Reads one field: (number, wire type, the varint value or the bytes).
    fn field(&mut self) -> Result<(u64, Raw<'a>), String> {
        let key = self.varint()?;
        let raw = match key & 7 {
            0 => Raw::Varint(self.varint()?),
            1 => Raw::Fixed(self.bytes(8).map(drop)?),
            2 => Raw::Delimited(self.delimited()?),
            5 => Raw::Fixed(self.bytes(4).map(drop)?),
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok((key >> 3, raw))
    }
}

enum Raw<'a> {
    Varint(u64),
    Delimited(&'a [u8]),
    /// A fixed32/fixed64 field: no Kubernetes type has one, so it is skipped.
    Fixed(()),
}

/// Each field of a message as (number, raw value), in wire order.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Raw<'_>)>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.field()?);
    }
    Ok(out)
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// Go's `time.Duration.String()`: `1h0m0s`, `1.5s`, `300ms`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    let frac = |v: u64, unit: u64, digits: usize| {
        let (whole, rest) = (v / unit, v % unit);
        if rest == 0 { whole.to_string() } else { format!("{whole}.{}", format!("{rest:0digits$}").trim_end_matches('0')) }
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000, 3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000, 6));
    }
    let secs = n / 1_000_000_000;
    let s = frac(n % 60_000_000_000, 1_000_000_000, 9);
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn varint_of(raw: &Raw<'_>) -> Result<u64, String> {
    match raw {
        Raw::Varint(v) => Ok(*v),
        _ => Err("expected a varint".into()),
    }
}

fn delimited_of<'a>(raw: &Raw<'a>) -> Result<&'a [u8], String> {
    match raw {
        Raw::Delimited(b) => Ok(b),
        _ => Err("expected a length-delimited field".into()),
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in a string field".into())
}

/// A scalar field's JSON value.
fn scalar(ty: &Ty, raw: &Raw<'_>) -> Result<Value, String> {
    Ok(match ty {
        Ty::String => json!(utf8(delimited_of(raw)?)?),
        Ty::Bytes => json!(base64(delimited_of(raw)?)),
        Ty::Bool => json!(varint_of(raw)? != 0),
        // Negative int32s are sign-extended to ten bytes on the wire.
        Ty::Int32 => json!(varint_of(raw)? as i64 as i32),
        Ty::Int64 => json!(varint_of(raw)? as i64),
        Ty::Message(_) | Ty::Map(..) => unreachable!("not a scalar"),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The messages with a JSON form of their own; None when the value is Go's zero.
fn special(name: &str, buf: &[u8]) -> Result<Option<Value>, String> {
    let fs = fields(buf)?;
    let int = |n: u64| fs.iter().find(|(k, _)| *k == n).map(|(_, r)| varint_of(r)).transpose().map(|v| v.unwrap_or(0) as i64);
    let bytes = |n: u64| fs.iter().find(|(k, _)| *k == n).map(|(_, r)| delimited_of(r)).transpose().map(Option::unwrap_or_default);
    let embedded = |b: &[u8]| if b.is_empty() { Ok(None) } else { serde_json::from_slice(b).map(Some).map_err(|e| e.to_string()) };
    Ok(match name.rsplit('.').next().unwrap_or_default() {
        "Time" | "MicroTime" => {
            let (secs, nanos) = (int(1)?, int(2)?);
            if secs == 0 && nanos == 0 {
                return Ok(None);
            }
            let t = chrono::DateTime::from_timestamp(secs, nanos as u32).ok_or("time out of range")?;
            let format = if name.ends_with("MicroTime") { chrono::SecondsFormat::Micros } else { chrono::SecondsFormat::Secs };
            Some(json!(t.to_rfc3339_opts(format, true)))
        }
        "Duration" => Some(json!(go_duration(int(1)?))),
        "Quantity" => Some(json!(utf8(bytes(1)?)?)),
        "IntOrString" => Some(if int(1)? == 1 { json!(utf8(bytes(3)?)?) } else { json!(int(2)? as i32) }),
        _ => embedded(bytes(1)?)?,
    })
}

const SPECIAL: &[&str] = &[
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
    "k8s.io.apimachinery.pkg.api.resource.Quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
    "k8s.io.apimachinery.pkg.runtime.RawExtension",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
];

/// Whether a message is one of the types with their own JSON form (a timestamp, a
/// quantity, int-or-string, embedded JSON).
pub fn is_special(name: &str) -> bool {
    SPECIAL.contains(&name)
}

/// One value of type `ty` (a map entry's value, a list element or a field).
fn value(ty: &Ty, raw: &Raw<'_>) -> Result<Option<Value>, String> {
    match ty {
        Ty::Message(name) if is_special(name) => special(name, delimited_of(raw)?),
        Ty::Message(name) => Ok(Some(Value::Object(message(name, delimited_of(raw)?)?))),
        Ty::Map(..) => Err("nested map".into()),
        _ => scalar(ty, raw).map(Some),
    }
}

fn map_entry(k: &Ty, v: &Ty, buf: &[u8]) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut val = None;
    for (n, raw) in fields(buf)? {
        match n {
            1 => {
                key = match scalar(k, &raw)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            2 => val = value(v, &raw)?,
            _ => {}
        }
    }
    let zero = match v {
        Ty::String | Ty::Bytes => json!(""),
        _ => Value::Null,
    };
    Ok((key, val.unwrap_or(zero)))
}

/// Decodes one message into the JSON object its Go type would encode to.
pub fn message(name: &str, buf: &[u8]) -> Result<Map<String, Value>, String> {
    let Some(layout) = table().messages.get(name) else {
        return Err(format!("no protobuf layout for {name}"));
    };
    let mut out = Map::new();
    for (n, raw) in fields(buf)? {
        let Some(f) = layout.iter().find(|f| f.num == n) else { continue };
        match &f.ty {
            Ty::Map(k, v) => {
                let (key, val) = map_entry(k, v, delimited_of(&raw)?)?;
                out.entry(f.json.clone()).or_insert_with(|| json!({}))[key] = val;
            }
            // Packed repeated scalars (not what gogo writes, but valid protobuf).
            Ty::Int32 | Ty::Int64 | Ty::Bool if f.repeated && matches!(raw, Raw::Delimited(_)) => {
                let mut r = Reader { buf: delimited_of(&raw)?, pos: 0 };
                while !r.done() {
                    let v = scalar(&f.ty, &Raw::Varint(r.varint()?))?;
                    push(&mut out, &f.json, v);
                }
            }
            ty if f.repeated => push(&mut out, &f.json, value(ty, &raw)?.unwrap_or(Value::Null)),
            ty => match value(ty, &raw)? {
                Some(Value::Object(sub)) if f.inline => out.extend(sub),
                Some(v) if f.pointer || !is_zero(&v) => {
                    out.insert(f.json.clone(), v);
                }
                _ => {
                    out.remove(&f.json);
                }
            },
        }
    }
    Ok(out)
}

fn push(out: &mut Map<String, Value>, key: &str, v: Value) {
    if let Some(a) = out.entry(key.to_string()).or_insert_with(|| json!([])).as_array_mut() {
        a.push(v);
    }
}

/// Decodes a `application/vnd.kubernetes.protobuf` body: the `k8s\0` magic, then a
/// `runtime.Unknown` envelope naming the kind and carrying the encoded object.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("the protobuf body does not start with the k8s magic number")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, r) in fields(rest)? {
        match n {
            1 => {
                for (m, t) in fields(delimited_of(&r)?)? {
                    match m {
                        1 => api_version = utf8(delimited_of(&t)?)?,
                        2 => kind = utf8(delimited_of(&t)?)?,
                        _ => {}
                    }
                }
            }
            2 => raw = delimited_of(&r)?,
            _ => {}
        }
    }
    let name = message_for(&api_version, &kind).ok_or_else(|| format!("no protobuf decoding for {kind} in {api_version:?}"))?;
    let mut obj = message(&name, raw)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_create_namespace_body() {
        // The bytes `kubectl create namespace purrify` (1.32 and 1.33) sends.
        let body: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1f\x0a\x17\x0a\x07purrify\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";
        let v = decode(body).unwrap();
        assert_eq!(v, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "purrify"}}));
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(-2_000), "-2µs");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn every_referenced_message_is_in_the_table() {
        let t = table();
        for fields in t.messages.values() {
            for f in fields {
                let mut ty = &f.ty;
                if let Ty::Map(_, v) = ty {
                    ty = v;
                }
                if let Ty::Message(m) = ty {
                    assert!(is_special(m) || t.messages.contains_key(m), "{m}");
                }
            }
        }
        assert_eq!(message_for("rbac.authorization.k8s.io/v1", "ClusterRole").as_deref(), Some("k8s.io.api.rbac.v1.ClusterRole"));
        assert_eq!(message_for("v1", "DeleteOptions").as_deref(), Some("k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"));
    }
}
