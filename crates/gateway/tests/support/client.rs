//! The router driven with `oneshot`: a stack on SQLite or a throwaway PostgreSQL database,
//! requests with and without a Bearer token, and the envelope checks every test shares.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use purrify_gateway::app::{self, Stack};
use serde_json::Value;
use tower::ServiceExt;

use super::{BOUNDARY, Backend, TestDb, config, multipart};

pub struct Api {
    pub stack: Stack,
    pub _dir: tempfile::TempDir,
    pub _pg: Option<TestDb>,
}

pub async fn api_with(backend: Backend, tweak: impl FnOnce(&mut purrify_gateway::config::Config)) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDb::postgres().await),
    };
    let mut c = config(dir.path(), pg.as_ref().map(|p| p.url.clone()));
    tweak(&mut c);
    let stack = app::build(c).await.expect("gateway stack builds");
    Api { stack, _dir: dir, _pg: pg }
}

pub async fn api(backend: Backend) -> Api {
    api_with(backend, |_| {}).await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Api {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = app::router(self.stack.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply { status, headers, body, raw }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub async fn post_json(&self, uri: &str, body: Value, headers: &[(&str, &str)]) -> Reply {
        let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::from(body.to_string())).unwrap()).await
    }

    pub async fn upload(&self, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
        let body = multipart(parts);
        let req = Request::post("/api/v1/enhance")
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }

    /// A `/metrics` sample's value (0 when absent).
    pub async fn metric(&self, sample: &str) -> f64 {
        let m = self.get("/metrics").await;
        let text = String::from_utf8_lossy(&m.raw).to_string();
        text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
    }

    pub fn stored_uploads(&self) -> usize {
        let dir = self._dir.path().join("storage").join("uploads");
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }
}

pub fn assert_envelope(r: &Reply, status: StatusCode, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.raw));
    assert_eq!(r.body["success"], false, "{what}");
    assert_eq!(r.body["error_code"], code, "{what}: {}", r.body);
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
    assert!(r.body["details"].is_object(), "{what}");
}

#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Postgres).await } )* }
    };
}

impl Api {
    /// A request with `Authorization: Bearer <token>`.
    pub async fn call(&self, method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    /// An upload with a Bearer token.
    pub async fn upload_as(&self, token: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Reply {
        let body = multipart(parts);
        let req = Request::post("/api/v1/enhance")
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={BOUNDARY}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(body))
            .unwrap();
        self.send(req).await
    }
}

/// A stack on SQLite in `dir` with exactly `config`.
pub async fn api_with_dir(dir: tempfile::TempDir, config: purrify_gateway::config::Config) -> Api {
    let stack = app::build(config).await.expect("gateway stack builds");
    Api { stack, _dir: dir, _pg: None }
}

pub use purrify_store::testing::job_result;
