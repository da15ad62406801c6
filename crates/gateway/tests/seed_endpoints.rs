//! Every endpoint the five seed documents (`docs/seeds/`, copies of the clients' contracts)
//! name is routed: the test reads each document, takes every `METHOD /path` it mentions, and
//! asks the router for it. A path the router does not know answers with the "no such
//! endpoint" fallback, a known path with a method it does not serve with 405: either fails.
//!
//! Endpoints whose issue is still open are listed in [`PENDING`]; the test also fails when one
//! of them starts being served, so the list only ever shrinks.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use purrify_gateway::app;
use tower::ServiceExt;

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "WS"];

/// Endpoints of the seeds that belong to an open issue: (method, path as the seed writes it).
const PENDING: &[(&str, &str)] = &[
    // Issue 13: generation through providers, the square, the assistant, provider settings,
    // postcards, and the task callbacks of webhook-driven processing.
];

/// `(method, path)` pairs a seed document names. Seed 003 writes its paths relative to its
/// base URL `/api/v1`, except the WebSocket.
fn endpoints_of(file: &str, text: &str) -> Vec<(String, String)> {
    let base = if file.starts_with("003_") { "/api/v1" } else { "" };
    let mut out = Vec::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split(|c: char| c.is_whitespace() || c == '`' || c == '*').filter(|t| !t.is_empty()).collect();
        for pair in tokens.windows(2) {
            let (method, path) = (pair[0], pair[1]);
            if !METHODS.contains(&method) || !path.starts_with('/') {
                continue;
            }
            let path = path.split('?').next().unwrap_or(path);
            let full = if path.starts_with("/ws") { path.to_owned() } else { format!("{base}{path}") };
            out.push((method.to_owned(), full));
        }
    }
    out
}

/// A concrete request path: `:id` and `{id}` segments become a made-up id.
fn concrete(path: &str) -> String {
    path.split('/').map(|s| if s.starts_with(':') || s.starts_with('{') { "x1" } else { s }).collect::<Vec<_>>().join("/")
}

fn seed_documents() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/seeds");
    let mut docs: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    docs.sort();
    docs
}

#[test]
fn the_seed_documents_are_read() {
    let docs = seed_documents();
    assert_eq!(docs.len(), 5, "five seed documents");
    let count = |prefix: &str| docs.iter().filter(|(f, _)| f.starts_with(prefix)).map(|(f, t)| endpoints_of(f, t).len()).sum::<usize>();
    // Lower bounds from the documents as they are: a parser that stops finding endpoints fails.
    for (seed, at_least) in [("000_", 11), ("001_", 40), ("002_", 29), ("003_", 28), ("004_", 6)] {
        assert!(count(seed) >= at_least, "seed {seed}: only {} endpoints found", count(seed));
    }
    let all: Vec<_> = docs.iter().flat_map(|(f, t)| endpoints_of(f, t)).collect();
    assert!(all.contains(&("GET".into(), "/api/v1/works/:id/download".into())), "seed 003 paths carry its base URL");
    assert!(all.contains(&("WS".into(), "/ws".into())), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_seed_endpoint_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let stack = app::build(support::config(dir.path(), None)).await.unwrap();
    let pending: BTreeSet<(String, String)> = PENDING.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    let mut seen = BTreeSet::new();
    let mut missing = Vec::new();
    let mut now_served = Vec::new();
    for (file, text) in seed_documents() {
        for (method, path) in endpoints_of(&file, &text) {
            if !seen.insert((method.clone(), path.clone())) {
                continue;
            }
            let http_method = if method == "WS" { Method::GET } else { Method::from_bytes(method.as_bytes()).unwrap() };
            let req = Request::builder().method(http_method).uri(concrete(&path)).body(Body::empty()).unwrap();
            let resp = app::router(stack.state.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let routed = status.as_u16() != 405 && !String::from_utf8_lossy(&body).contains("no such endpoint");
            let is_pending = pending.contains(&(method.clone(), path.clone()));
            match (routed, is_pending) {
                (false, false) => missing.push(format!("{file}: {method} {path} ({status})")),
                (true, true) => now_served.push(format!("{method} {path}")),
                _ => {}
            }
        }
    }
    assert!(missing.is_empty(), "seed endpoints the router does not serve:\n{}", missing.join("\n"));
    assert!(now_served.is_empty(), "served now, remove from PENDING:\n{}", now_served.join("\n"));
    let stale: Vec<_> = pending.difference(&seen).collect();
    assert!(stale.is_empty(), "PENDING names endpoints no seed document has: {stale:?}");
}

/// The README's API section names every operation of the OpenAPI document (`METHOD /path`,
/// as the document writes the path), so it cannot fall behind the router.
#[test]
fn the_readme_lists_every_documented_route() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let start = readme.find("\n## The API by seed").expect("README has a section \"## The API by seed\"");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let unlisted: Vec<String> =
        purrify_gateway::http::openapi::endpoints().into_iter().filter(|e| !section.contains(&format!("`{e}`"))).collect();
    assert!(unlisted.is_empty(), "routes missing from the README's API section:\n{}", unlisted.join("\n"));
}
