//! WeChat mini-program login: the client's `wx.login()` code is exchanged at
//! `GET {base}/sns/jscode2session?appid=…&secret=…&js_code=…&grant_type=authorization_code`
//! for the user's `openid` (and `unionid` when the app belongs to an open-platform account).
//!
//! A code is good for one exchange, so an exchange is never retried: a retry after a timeout
//! could only fail with "code been used". The app secret travels in the query string, so no
//! URL of this request is ever logged (reqwest's errors carry the URL; it is stripped).

use std::time::Duration;

use serde::Deserialize;

use crate::domain::{DomainError, DomainResult};

/// Configuration: the base URL is configurable so tests run a local server that speaks
/// the same protocol.
#[derive(Clone)]
pub struct WeChatConfig {
    pub appid: String,
    pub secret: String,
    pub api_base: String,
}

impl std::fmt::Debug for WeChatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeChatConfig").field("appid", &self.appid).field("secret", &"<redacted>").field("api_base", &self.api_base).finish()
    }
}

/// Who the code belongs to. The session key is deliberately dropped: nothing here decrypts
/// user data, and a secret not kept cannot leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeChatSession {
    pub openid: String,
    pub unionid: Option<String>,
}

#[derive(Deserialize)]
struct Reply {
    openid: Option<String>,
    unionid: Option<String>,
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
}

#[derive(Clone)]
pub struct WeChat {
    config: Option<WeChatConfig>,
    http: reqwest::Client,
}

/// Longest code accepted; WeChat's are 32 characters.
const MAX_CODE_LEN: usize = 128;

impl WeChat {
    pub fn new(config: Option<WeChatConfig>) -> DomainResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| DomainError::Internal(format!("HTTP client: {e}")))?;
        Ok(Self { config, http })
    }

    pub fn appid(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.appid.as_str())
    }

    /// Exchanges a login code, once.
    pub async fn exchange(&self, code: &str) -> DomainResult<WeChatSession> {
        let Some(config) = &self.config else {
            return Err(DomainError::Unavailable("WeChat login is not configured on this server (WECHAT_APPID, WECHAT_SECRET)".into()));
        };
        let code = code.trim();
        if code.is_empty() || code.len() > MAX_CODE_LEN || !code.chars().all(|c| c.is_ascii_graphic()) {
            return Err(DomainError::invalid("code", "a wx.login() code is required"));
        }
        let mut url = url::Url::parse(&format!("{}/sns/jscode2session", config.api_base.trim_end_matches('/')))
            .map_err(|_| DomainError::Unavailable("WeChat login is misconfigured on this server".into()))?;
        url.query_pairs_mut()
            .append_pair("appid", &config.appid)
            .append_pair("secret", &config.secret)
            .append_pair("js_code", code)
            .append_pair("grant_type", "authorization_code");
        let sent = self.http.get(url).send().await;
        let body = match sent {
            Ok(r) if r.status().is_success() => r.text().await.map_err(|e| unreachable_wechat(e.without_url()))?,
            Ok(r) => {
                tracing::warn!(status = r.status().as_u16(), "jscode2session answered with an HTTP error");
                return Err(busy());
            }
            Err(e) => return Err(unreachable_wechat(e.without_url())),
        };
        // WeChat answers JSON with a text/plain content type.
        let reply: Reply = serde_json::from_str(&body).map_err(|e| {
            tracing::warn!(error = %e, "jscode2session answered something that is not its JSON");
            busy()
        })?;
        outcome(reply)
    }
}

fn busy() -> DomainError {
    DomainError::Unavailable("WeChat is busy; try logging in again in a moment".into())
}

fn unreachable_wechat(e: reqwest::Error) -> DomainError {
    tracing::warn!(error = %e, "cannot reach jscode2session");
    busy()
}

/// WeChat's documented error codes, as answers a client can act on.
fn outcome(reply: Reply) -> DomainResult<WeChatSession> {
    match (reply.errcode, reply.openid) {
        (0, Some(openid)) if !openid.is_empty() => Ok(WeChatSession { openid, unionid: reply.unionid.filter(|u| !u.is_empty()) }),
        (0, _) => {
            tracing::warn!("jscode2session answered without an openid");
            Err(busy())
        }
        (40029 | 40163, _) => {
            Err(DomainError::Unauthorized("the WeChat login code is invalid, expired or already used; call wx.login() again".into()))
        }
        (45011, _) => Err(DomainError::RateLimited {
            message: "WeChat is limiting logins for this user; try again in a minute".into(),
            retry_after: 60,
        }),
        (40226, _) => Err(DomainError::Forbidden("WeChat marks this account as high-risk; login is refused".into())),
        (-1, _) => Err(busy()),
        (code, _) => {
            // 40013 (invalid appid), 40125 (invalid secret) and the like: ours to fix.
            tracing::error!(errcode = code, errmsg = %reply.errmsg, "jscode2session refused the server's credentials or request");
            Err(DomainError::Unavailable("WeChat login is unavailable on this server".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(json: &str) -> DomainResult<WeChatSession> {
        outcome(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn wechat_error_codes_become_answers() {
        assert_eq!(
            reply(r#"{"openid":"o1","session_key":"k","unionid":"u1"}"#).unwrap(),
            WeChatSession { openid: "o1".into(), unionid: Some("u1".into()) }
        );
        assert!(matches!(reply(r#"{"errcode":40029,"errmsg":"invalid code"}"#), Err(DomainError::Unauthorized(_))));
        assert!(matches!(reply(r#"{"errcode":40163,"errmsg":"code been used"}"#), Err(DomainError::Unauthorized(_))));
        assert!(matches!(reply(r#"{"errcode":45011,"errmsg":"api minute-quota reach limit"}"#), Err(DomainError::RateLimited { .. })));
        assert!(matches!(reply(r#"{"errcode":40226,"errmsg":"high risk"}"#), Err(DomainError::Forbidden(_))));
        assert!(matches!(reply(r#"{"errcode":-1,"errmsg":"system error"}"#), Err(DomainError::Unavailable(_))));
        assert!(matches!(reply(r#"{"errcode":40125,"errmsg":"invalid appsecret"}"#), Err(DomainError::Unavailable(_))));
        assert!(matches!(reply(r#"{"errcode":0}"#), Err(DomainError::Unavailable(_))));
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let c = WeChatConfig { appid: "wx1".into(), secret: "s3cr3t".into(), api_base: "http://x".into() };
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
