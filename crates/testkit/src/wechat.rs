//! A local `jscode2session` that speaks WeChat's protocol (GET
//! `/sns/jscode2session?appid=…&secret=…&js_code=…&grant_type=authorization_code`, a JSON
//! body served as `text/plain`, errors as `{"errcode": …, "errmsg": …}`), so login tests run
//! the gateway's real client against the real request and response shapes.
//!
//! Codes are issued by the test and are good for one exchange, as WeChat's are.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;

/// What a code exchanges for.
#[derive(Debug, Clone)]
enum Outcome {
    User { openid: String, unionid: Option<String> },
    Error { errcode: i64, errmsg: &'static str },
}

#[derive(Default)]
struct Inner {
    codes: HashMap<String, Outcome>,
    used: std::collections::HashSet<String>,
    requests: usize,
    next: u64,
}

struct Shared {
    appid: String,
    secret: String,
    inner: Mutex<Inner>,
}

/// The fake; stopped when dropped.
pub struct FakeWeChat {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWeChat {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeWeChat {
    /// Serves on 127.0.0.1 for the app `appid` with its `secret`.
    pub async fn start(appid: &str, secret: &str) -> Self {
        let shared = Arc::new(Shared { appid: appid.into(), secret: secret.into(), inner: Mutex::default() });
        let app = axum::Router::new().route("/sns/jscode2session", axum::routing::get(jscode2session)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake WeChat");
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, server }
    }

    /// What the gateway's `WECHAT_API_BASE` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn issue(&self, outcome: Outcome) -> String {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.next += 1;
        let code = format!("0{:031x}", inner.next.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        inner.codes.insert(code.clone(), outcome);
        code
    }

    /// A fresh `wx.login()` code of the user `openid`.
    pub fn code_for(&self, openid: &str, unionid: Option<&str>) -> String {
        self.issue(Outcome::User { openid: openid.into(), unionid: unionid.map(Into::into) })
    }

    /// A code WeChat answers with one of its errors: 45011 (rate limited), 40226 (high-risk
    /// user) or -1 (busy).
    pub fn failing_code(&self, errcode: i64) -> String {
        let errmsg = match errcode {
            45011 => "api minute-quota reach limit  mustslower  retry next minute",
            40226 => "invalid scene, high risk user",
            -1 => "system error",
            _ => "error",
        };
        self.issue(Outcome::Error { errcode, errmsg })
    }

    /// Exchange requests received, valid or not.
    pub fn requests(&self) -> usize {
        self.shared.inner.lock().unwrap().requests
    }
}

async fn jscode2session(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let reply = answer(&shared, &q);
    ([(header::CONTENT_TYPE, "text/plain")], reply.to_string())
}

fn error(errcode: i64, errmsg: &str) -> serde_json::Value {
    serde_json::json!({ "errcode": errcode, "errmsg": format!("{errmsg}, rid: 6566c7a5-0f1e2d3c-4b5a6978") })
}

fn answer(shared: &Shared, q: &HashMap<String, String>) -> serde_json::Value {
    let mut inner = shared.inner.lock().unwrap();
    inner.requests += 1;
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if get("appid") != shared.appid {
        return error(40013, "invalid appid");
    }
    if get("secret") != shared.secret {
        return error(40125, "invalid appsecret");
    }
    if get("grant_type") != "authorization_code" {
        return error(40002, "invalid grant_type");
    }
    let code = get("js_code").to_owned();
    if inner.used.contains(&code) {
        return error(40163, "code been used");
    }
    let Some(outcome) = inner.codes.get(&code).cloned() else { return error(40029, "invalid code") };
    inner.used.insert(code);
    match outcome {
        Outcome::User { openid, unionid } => {
            let mut v = serde_json::json!({ "openid": openid, "session_key": "tiihtNczf5v6AKRyjwEUhQ==" });
            if let Some(u) = unionid {
                v["unionid"] = serde_json::Value::String(u);
            }
            v
        }
        Outcome::Error { errcode, errmsg } => error(errcode, errmsg),
    }
}
