//! The gateway's layout rules, checked on its source and its router (DESIGN section 1):
//! `domain/` never imports axum, `http/` never reaches the database, only `domain/tasks`
//! looks at which task backend runs, and every route is in the OpenAPI document.

mod support;

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use purrify_gateway::app;
use tower::ServiceExt;

fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut out = Vec::new();
    walk(&root, &mut out);
    assert!(!out.is_empty(), "{} has sources", root.display());
    out
}

/// Lines of code (comments dropped) that mention `word`.
fn offending(files: &[(PathBuf, String)], word: &str) -> Vec<String> {
    files
        .iter()
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, l)| {
                    let code = l.split("//").next().unwrap_or("");
                    code.contains(word)
                })
                .map(move |(n, l)| format!("{}:{}: {}", path.display(), n + 1, l.trim()))
        })
        .collect()
}

#[test]
fn domain_never_imports_axum() {
    let hits = offending(&sources("domain"), "axum");
    assert!(hits.is_empty(), "domain/ must not depend on HTTP:\n{}", hits.join("\n"));
}

#[test]
fn http_never_reaches_the_database() {
    let files = sources("http");
    let mut hits = offending(&files, "purrify_store");
    hits.extend(offending(&files, "sqlx"));
    hits.extend(offending(&files, ".db()"));
    assert!(hits.is_empty(), "http/ goes through the domain's services:\n{}", hits.join("\n"));
}

#[test]
fn only_the_task_service_matches_the_backend_kind() {
    let mut files = sources("http");
    files.extend(sources("app"));
    files.push((
        PathBuf::from("domain/fleet.rs"),
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain/fleet.rs")).unwrap(),
    ));
    let mut hits = offending(&files, "Backend::Standalone");
    hits.extend(offending(&files, "Backend::Kubernetes"));
    // The app turns the configuration into the domain's backend choice, once, at start.
    hits.retain(|h| !h.contains("app/lifecycle.rs"));
    assert!(hits.is_empty(), "the backend kind is the task service's business:\n{}", hits.join("\n"));
}

#[test]
fn routes_are_declared_only_through_the_documented_list() {
    let hits = offending(&sources("http/routes"), ".route(");
    assert!(hits.is_empty(), "declare routes with utoipa_axum's routes!, so they are documented:\n{}", hits.join("\n"));
}

/// Every operation of the OpenAPI document is served (not the fallback), and the info
/// endpoint lists exactly the document's operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let stack = app::build(support::config(dir.path(), None)).await.unwrap();
    let doc = purrify_gateway::http::openapi::document();
    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        let concrete = path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/");
        for (method, op) in [(Method::GET, &item.get), (Method::POST, &item.post), (Method::PUT, &item.put), (Method::DELETE, &item.delete)]
        {
            let Some(op) = op else { continue };
            let req = Request::builder().method(method.clone()).uri(&concrete).body(Body::empty()).unwrap();
            let resp = app::router(stack.state.clone()).oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains("no such endpoint"), "{method} {path} is documented but not routed ({status}: {text})");
            assert_ne!(status.as_u16(), 405, "{method} {path} is documented with a method the router does not serve");
            // Asking for credentials means documenting which.
            if status.as_u16() == 401 {
                assert!(
                    op.security.as_ref().is_some_and(|s| !s.is_empty()),
                    "{method} {path} answers 401 without a token but documents no security scheme"
                );
            }
            checked += 1;
        }
    }
    // The seed 000 surface, probes, metrics and docs: 19 operations today; more, never fewer.
    assert!(checked >= 19, "only {checked} operations checked");
    let listed = purrify_gateway::http::openapi::endpoints();
    assert_eq!(listed.len(), checked, "the info endpoint lists every documented operation: {listed:?}");
    assert!(listed.iter().any(|e| e == "POST /api/v1/enhance"));
}
