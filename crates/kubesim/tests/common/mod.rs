//! Shared helpers for the conformance tests: an in-process server and a kube client
//! configured from the kubeconfig the server writes, as a user would.

#![allow(dead_code)]

pub mod kubectl;

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

pub struct Sim {
    pub handle: kubesim::ServerHandle,
    pub client: Client,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Sim {
    start_with(kubesim::ServerConfig { bookmark_interval: Duration::from_millis(200), ..Default::default() }).await
}

pub async fn start_with(config: kubesim::ServerConfig) -> Sim {
    let (addr, handle) = kubesim::Server::start_with(config).await.expect("server starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    kubesim::write_kubeconfig(&path, addr).expect("kubeconfig written");
    let client = client_from(&path).await;
    Sim { handle, client, _dir: dir }
}

pub async fn client_from(path: &std::path::Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("config from kubeconfig");
    Client::try_from(config).expect("client")
}

pub fn gadget_gvk() -> GroupVersionKind {
    GroupVersionKind::gvk("kubesim.test", "v1", "Gadget")
}

pub fn gadget_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(&gadget_gvk(), "gadgets")
}

/// A CRD exercising the schema features the project's own CRDs use.
pub fn gadget_crd() -> Value {
    // Built in pieces: one json! literal this deep exceeds the macro recursion limit.
    let spec_props = json!({
        "image": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9./:-]+$"},
        "mode": {"type": "string", "enum": ["cpu", "cuda", "tensorrt"], "default": "cpu"},
        "replicas": {
            "type": "object",
            "default": {"min": 1, "max": 1},
            "properties": {
                "min": {"type": "integer", "minimum": 0},
                "max": {"type": "integer", "minimum": 1, "maximum": 100}
            }
        },
        "input": {
            "type": "object",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "input is immutable"}],
            "properties": {"uri": {"type": "string"}, "bytes": {"type": "integer", "nullable": true}}
        },
        "port": {"x-kubernetes-int-or-string": true},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
        "workers": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "endpoint": {"type": "string"}
            }}
        }
    });
    let conditions = json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {"type": "object", "required": ["type", "status"], "properties": {
            "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}
        }}
    });
    let status_props = json!({
        "phase": {"type": "string", "enum": ["Queued", "Running", "Succeeded", "Failed"]},
        "observedGeneration": {"type": "integer"},
        "message": {"type": "string"},
        "conditions": conditions
    });
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["image"],
                "x-kubernetes-validations": [
                    {"rule": "self.replicas.min <= self.replicas.max", "message": "replicas.min must not exceed replicas.max"}
                ],
                "properties": spec_props
            },
            "status": {"type": "object", "properties": status_props}
        }
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.kubesim.test"},
        "spec": {
            "group": "kubesim.test",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": ["gd"]},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": schema}
            }]
        }
    })
}

pub async fn install_gadget_crd(client: &Client) -> Api<DynamicObject> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(gadget_crd()).expect("crd parses");
    crds.create(&PostParams::default(), &crd).await.expect("crd created");
    Api::namespaced_with(client.clone(), "default", &gadget_ar())
}

pub fn gadget(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "kubesim.test/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("gadget parses")
}

/// The `Status` of a failed call.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match r {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Polls `f` until it returns Some, for at most five seconds.
pub async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not reached within 5s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw HTTP/1.1 request (no client-side retries, unlike kube's client), returning
/// the status code and body.
pub async fn raw(method: &str, url: &str, body: Option<(&str, &str)>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).unwrap();
    let mut s = tokio::net::TcpStream::connect((u.host_str().unwrap(), u.port().unwrap())).await.unwrap();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: kubesim\r\nConnection: close\r\n");
    if let Some((ct, b)) = body {
        req.push_str(&format!("Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// A raw HTTP/1.1 request with extra headers and a byte body, returning the status code,
/// the response headers (lower-cased names, in order) and the body.
pub async fn raw_full(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).unwrap();
    let mut s = tokio::net::TcpStream::connect((u.host_str().unwrap(), u.port().unwrap())).await.unwrap();
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: kubesim\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or_default();
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let mut lines = head.lines();
    let code: u16 = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())).collect();
    (code, headers, body.to_string())
}

/// The value of a response header from `raw_full`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}
