//! HTTP routing: Kubernetes API paths, verbs, content types and the Status error body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::builtin::proto;
use crate::error::{ApiError, ApiResult};
use crate::fieldcheck;
use crate::metrics::Metrics;
pub use crate::presentation::Presentation;
use crate::resource::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOpts, ListOpts, PatchKind, Propagation, Store, WriteCtx};
use crate::watch::{self, WatchParams};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    /// How many events the watch history keeps; older resource versions get 410 Gone.
    pub watch_history: usize,
    /// How often open watches with `allowWatchBookmarks=true` get a BOOKMARK.
    pub bookmark_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { addr: SocketAddr::from(([127, 0, 0, 1], 0)), watch_history: 10_000, bookmark_interval: Duration::from_secs(30) }
    }
}

pub struct Shared {
    pub store: Store,
    pub metrics: Metrics,
    pub config: ServerConfig,
    pub addr: SocketAddr,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).layer(DefaultBodyLimit::max(16 * 1024 * 1024)).with_state(shared)
}

fn json_response(code: StatusCode, v: &Value, content_type: &str) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (code, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")));
    r
}

/// `Warning: 299 - "..."` headers, as the real server sends for unknown fields under
/// `fieldValidation=Warn`.
fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = serde_json::to_string(w).unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {text}")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.to_status(), "application/json")
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn truthy(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

/// A parsed resource path.
struct Target {
    info: Arc<ResourceInfo>,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    watch_path: bool,
}

fn parse_target(shared: &Shared, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
    let mut rest = rest;
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let st = shared.store.lock();
    let reg = &st.registry;
    let (namespace, plural, name, sub) =
        if rest.first() == Some(&"namespaces") && rest.len() >= 3 && reg.get(group, version, rest[2]).is_some_and(|i| i.namespaced) {
            (Some(rest[1].to_string()), rest[2], rest.get(3), rest.get(4))
        } else {
            (None, *rest.first().ok_or_else(ApiError::no_route)?, rest.get(1), rest.get(2))
        };
    if rest.len() > if namespace.is_some() { 5 } else { 3 } {
        return Err(ApiError::no_route());
    }
    let info = reg.get(group, version, plural).ok_or_else(ApiError::no_route)?;
    let status = match sub {
        None => false,
        Some(&"status") if info.status_subresource => true,
        Some(_) => return Err(ApiError::no_route()),
    };
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::no_route());
    }
    Ok(Target { info, namespace, name: name.map(|s| s.to_string()), status, watch_path })
}

fn manager_name(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    // The real server derives a manager name from the user agent's first segment.
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
}

/// JSON, YAML when the content type says so (JSON is valid YAML, so apply bodies in
/// either form work), or protobuf for built-in kinds (kubectl's typed clients send it).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if ct.split(';').next().is_some_and(|m| m.trim() == proto::MEDIA_TYPE) {
        return proto::decode(body).map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")));
    }
    if !ct.contains("yaml") {
        return parse_json(body);
    }
    if let Ok(v) = serde_json::from_slice(body) {
        return Ok(v);
    }
    serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

fn list_opts(q: &HashMap<String, String>) -> ApiResult<ListOpts> {
    Ok(ListOpts {
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or_default())?,
        fields: FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or_default())?,
        limit: match q.get("limit") {
            Some(l) => Some(l.parse().map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?),
            None => None,
        },
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").filter(|m| !m.is_empty()).cloned(),
    })
}

fn delete_opts(q: &HashMap<String, String>, headers: &HeaderMap, body: &[u8]) -> ApiResult<DeleteOpts> {
    let b: Value = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_body(headers, body)? };
    let policy = b.get("propagationPolicy").and_then(Value::as_str).map(str::to_string).or_else(|| q.get("propagationPolicy").cloned());
    let propagation = match policy.as_deref() {
        None | Some("") => None,
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    };
    // `orphanDependents` predates propagationPolicy and still works.
    let propagation = propagation.or(match b.get("orphanDependents").and_then(Value::as_bool) {
        Some(true) => Some(Propagation::Orphan),
        _ => None,
    });
    let dry_run = b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All"))
        || q.get("dryRun").is_some_and(|d| d == "All");
    Ok(DeleteOpts {
        propagation,
        precondition_uid: b.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string),
        precondition_rv: b.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string),
        dry_run,
    })
}

fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0+kubesim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The verb and resource label for metrics, decided before the request runs.
fn classify(method: &Method, t: &Target, q: &HashMap<String, String>, headers: &HeaderMap) -> &'static str {
    let is_watch = t.watch_path || truthy(q, "watch");
    match *method {
        Method::GET if is_watch => "watch",
        Method::GET if t.name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            if ct.starts_with("application/apply-patch") { "apply" } else { "patch" }
        }
        Method::DELETE if t.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_matches('/');
    let segs: Vec<&str> = if path.is_empty() { Vec::new() } else { path.split('/').collect() };
    let q = query_map(&uri);
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Aggregated discovery only in the version served (v2); a client that accepts only
    // v2beta1 (kubectl 1.29 and older) gets the plain documents it also accepts.
    let aggregated = accept.split(',').any(|m| m.contains("as=APIGroupDiscoveryList") && m.split(';').any(|p| p.trim() == "v=v2"));
    let aggregated_ct = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let ok = |v: Value| json_response(StatusCode::OK, &v, "application/json");
    let is_get = method == Method::GET;
    match segs.as_slice() {
        [] if is_get => {
            return ok(
                json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]}),
            );
        }
        ["version"] if is_get => return ok(version_doc()),
        ["healthz" | "livez" | "readyz"] if is_get => {
            return (StatusCode::OK, "ok").into_response();
        }
        ["metrics"] if is_get => {
            let rv = shared.store.lock().resource_version();
            let mut r = (StatusCode::OK, shared.metrics.render(rv)).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            return r;
        }
        ["openapi", rest @ ..] if is_get => {
            let st = shared.store.lock();
            if let Some(r) = crate::openapi::serve::respond(&st.registry, rest, q.get("hash").map(String::as_str), accept) {
                return r;
            }
        }
        ["api"] if is_get => {
            let st = shared.store.lock();
            return if aggregated {
                json_response(StatusCode::OK, &st.registry.aggregated(true), aggregated_ct)
            } else {
                ok(st.registry.api_versions(&shared.addr.to_string()))
            };
        }
        ["apis"] if is_get => {
            let st = shared.store.lock();
            return if aggregated {
                json_response(StatusCode::OK, &st.registry.aggregated(false), aggregated_ct)
            } else {
                ok(st.registry.api_group_list())
            };
        }
        ["api", "v1"] if is_get => {
            let doc = shared.store.lock().registry.resource_list("", "v1");
            return doc.map(ok).unwrap_or_else(|| error_response(&ApiError::no_route()));
        }
        ["apis", g] if is_get => {
            let doc = shared.store.lock().registry.api_group_doc(g);
            return doc.map(ok).unwrap_or_else(|| error_response(&ApiError::no_route()));
        }
        ["apis", g, v] if is_get => {
            let doc = shared.store.lock().registry.resource_list(g, v);
            return doc.map(ok).unwrap_or_else(|| error_response(&ApiError::no_route()));
        }
        _ => {}
    }
    let parsed = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => parse_target(&shared, "", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => parse_target(&shared, g, v, rest),
        _ => Err(ApiError::no_route()),
    };
    let target = match parsed {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let verb = classify(&method, &target, &q, &headers);
    let resource = if target.status { format!("{}/status", target.info.plural) } else { target.info.plural.clone() };
    let response = match resource_request(&shared, &method, &target, &q, &headers, &body) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    shared.metrics.record(verb, &resource, response.status().as_u16());
    tracing::debug!(verb, resource = %resource, code = response.status().as_u16(), "request");
    response
}

fn resource_request(
    shared: &Arc<Shared>,
    method: &Method,
    t: &Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let info = t.info.clone();
    let presentation = Presentation::negotiate(headers, &t.info, q);
    let ns = t.namespace.clone();
    let is_watch = t.watch_path || truthy(q, "watch");
    let ctx = || WriteCtx {
        info: info.clone(),
        namespace: ns.clone(),
        status: t.status,
        manager: manager_name(q, headers),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
    };
    let obj_response = |code: StatusCode, v: Value| json_response(code, &presentation.object(v), presentation.content_type(false));
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, name) if is_watch => {
            let mut fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or_default())?;
            if let Some(n) = name {
                // The legacy single-object watch path is a name field selector.
                fields = FieldSelector::parse(&format!("metadata.name={n}"))?;
            }
            let params = WatchParams {
                namespace: ns,
                resource_version: q.get("resourceVersion").cloned(),
                resource_version_match: q.get("resourceVersionMatch").filter(|m| !m.is_empty()).cloned(),
                send_initial_events: q.get("sendInitialEvents").map(|v| v == "true" || v == "1"),
                bookmarks: truthy(q, "allowWatchBookmarks"),
                timeout: q.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).map(Duration::from_secs),
                labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or_default())?,
                fields,
            };
            let stream = watch::start(shared.clone(), info, params, presentation.clone())?;
            let mut r = Response::new(Body::from_stream(stream));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(r)
        }
        (Method::GET, Some(name)) => {
            let v = shared.store.lock().get(&info, ns.as_deref(), name)?;
            Ok(obj_response(StatusCode::OK, v))
        }
        (Method::GET, None) => {
            let opts = list_opts(q)?;
            let l = shared.store.lock().list(&info, ns.as_deref(), &opts)?;
            Ok(json_response(StatusCode::OK, &presentation.list(l), presentation.content_type(true)))
        }
        (Method::POST, None) => {
            if info.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed("create of a namespaced resource needs a namespace in the path"));
            }
            let v = parse_body(headers, body)?;
            let warnings = fieldcheck::check(&info, &v, fieldcheck::Directive::from_query(q)?)?;
            let c = ctx();
            let out = shared.store.write(|st| st.create(&c, v))?;
            Ok(with_warnings(obj_response(StatusCode::CREATED, out), &warnings))
        }
        (Method::PUT, Some(name)) => {
            let v = parse_body(headers, body)?;
            let warnings = fieldcheck::check(&info, &v, fieldcheck::Directive::from_query(q)?)?;
            let c = ctx();
            let out = shared.store.write(|st| st.update(&c, name, v))?;
            Ok(with_warnings(obj_response(StatusCode::OK, out), &warnings))
        }
        (Method::PATCH, Some(name)) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let media = ct.split(';').next().unwrap_or_default().trim();
            let kind = match media {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/json-patch+json" => PatchKind::Json,
                "application/strategic-merge-patch+json" => {
                    if info.validating {
                        // As on a real server: custom resources have no strategic merge keys.
                        return Err(ApiError::unsupported_media_type(ct));
                    }
                    PatchKind::Strategic
                }
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    if q.get("fieldManager").is_none_or(String::is_empty) {
                        return Err(ApiError::bad_request(
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    PatchKind::Apply { force: truthy(q, "force") }
                }
                _ => return Err(ApiError::unsupported_media_type(ct)),
            };
            if truthy(q, "force") && !matches!(kind, PatchKind::Apply { .. }) {
                return Err(ApiError::bad_request("force: Forbidden: may not be specified for non-apply patch"));
            }
            let v = parse_body(headers, body)?;
            let directive = fieldcheck::Directive::from_query(q)?;
            // A JSON patch is a list of operations, not an object to check.
            let warnings = if matches!(kind, PatchKind::Json) { Vec::new() } else { fieldcheck::check(&info, &v, directive)? };
            let c = ctx();
            let (out, created) = shared.store.write(|st| st.patch(&c, name, kind, &v))?;
            Ok(with_warnings(obj_response(if created { StatusCode::CREATED } else { StatusCode::OK }, out), &warnings))
        }
        (Method::DELETE, Some(name)) => {
            let opts = delete_opts(q, headers, body)?;
            let c = ctx();
            let out = shared.store.write(|st| st.delete(&c, name, &opts))?;
            let still_there = shared.store.lock().get(&info, ns.as_deref(), name).is_ok();
            Ok(obj_response(if still_there && !opts.dry_run { StatusCode::ACCEPTED } else { StatusCode::OK }, out))
        }
        (Method::DELETE, None) => {
            let opts = list_opts(q)?;
            let del = delete_opts(q, headers, body)?;
            let c = ctx();
            let out = shared.store.write(|st| st.delete_collection(&c, &opts, &del))?;
            Ok(json_response(StatusCode::OK, &presentation.list(out), presentation.content_type(true)))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!("the server does not allow this method on the requested resource: {m}"))),
    }
}
