//! One callback POST: the signature, the address policy and the HTTP client.
//!
//! Every address a callback host resolves to is checked with
//! [`refuse_address`](crate::domain::fleet::refuse_address) (the `/webhook/register` policy)
//! inside the client's own resolver, so the connection goes to exactly the addresses that were
//! checked: a DNS answer that changes between a check and the connection (DNS rebinding)
//! cannot reach a refused address. IP-literal hosts, which no resolver sees, are checked
//! before sending. Redirects are not followed and no proxy is used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::domain::fleet::refuse_address;

/// Header carrying the unix time (seconds) the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Purrify-Timestamp";
/// Header carrying `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-Purrify-Signature";

/// The `X-Purrify-Signature` value of `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + digest.len() * 2);
    hex.push_str("sha256=");
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// Why a callback was not sent to an address: permanent, so the delivery is given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The resolver of the callback client: the system's, then the address policy over every
/// address it returned.
struct CheckedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why a host gave no address to connect to.
#[derive(Debug, thiserror::Error)]
enum Unresolved {
    /// The lookup failed (maybe for a while): worth retrying.
    #[error("{0}")]
    Lookup(String),
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// The addresses of `host`, if every one of them passes the policy.
async fn resolve_checked(host: &str, allow_private: bool) -> Result<Vec<SocketAddr>, Unresolved> {
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host, 0)).await {
        Ok(a) => a.collect(),
        Err(e) => return Err(Unresolved::Lookup(format!("{host} does not resolve: {e}"))),
    };
    if addrs.is_empty() {
        return Err(Unresolved::Lookup(format!("{host} has no address")));
    }
    for a in &addrs {
        check(a.ip(), allow_private).map_err(|e| Refused(format!("{host}: {}", e.0)))?;
    }
    Ok(addrs)
}

fn check(ip: IpAddr, allow_private: bool) -> Result<(), Refused> {
    match refuse_address(ip, allow_private) {
        Some(why) => Err(Refused(format!(
            "address {ip} refused: {}",
            why.replace("GPU servers", "callback targets").replace("a GPU server", "a callback target")
        ))),
        None => Ok(()),
    }
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The client answered with this status (2xx: delivered).
    Answered(u16),
    /// Not sent, and never will be: the URL or its addresses are refused.
    Refused(String),
    /// No answer (connection error, timeout): worth retrying.
    Failed(String),
}

/// The HTTP side of callbacks. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    pub fn new(timeout: Duration, allow_private: bool) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver { allow_private }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(2)
            .user_agent(concat!("purrify-callbacks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("callback client: {e}"))?;
        Ok(Self { client, allow_private })
    }

    /// POSTs `body` to `url`, signed with `secret` at `timestamp`.
    pub async fn post(&self, url: &str, secret: &[u8], timestamp: i64, body: Vec<u8>) -> Sent {
        let parsed = match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Sent::Refused("the callback URL is not an http(s) URL".into()),
        };
        let checked = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => check(IpAddr::V4(v4), self.allow_private).map_err(Unresolved::from),
            Some(url::Host::Ipv6(v6)) => check(IpAddr::V6(v6), self.allow_private).map_err(Unresolved::from),
            // Checked here to give a refused host up at once; the client's resolver checks
            // again what it connects to, so an answer that changes in between is refused too.
            Some(url::Host::Domain(host)) => resolve_checked(host, self.allow_private).await.map(drop),
            None => Err(Refused("the callback URL has no host".into()).into()),
        };
        match checked {
            Ok(()) => {}
            Err(Unresolved::Refused(why)) => return Sent::Refused(why.0),
            Err(Unresolved::Lookup(why)) => return Sent::Failed(why),
        }
        let sent = self
            .client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature(secret, timestamp, &body))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) => Sent::Answered(r.status().as_u16()),
            Err(e) => Sent::Failed(describe(e.without_url())),
        }
    }
}

/// A client error for the delivery record: its kind and innermost cause, never the URL's
/// query (which may hold the client's own secrets).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut inner: &(dyn std::error::Error + 'static) = &e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    format!("{kind}: {inner}").chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hex_hmac_sha256_of_timestamp_dot_body() {
        // The documented construction, computed independently: HMAC over "<timestamp>.<body>".
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signature(b"key", 1_700_000_000, br#"{"a":1}"#), format!("sha256={want}"));
        assert_ne!(signature(b"key", 1_700_000_001, br#"{"a":1}"#), signature(b"key", 1_700_000_000, br#"{"a":1}"#));
        assert_eq!(signature(b"key", 1, b"").len(), 7 + 64);
    }

    #[tokio::test]
    async fn refused_addresses_are_not_contacted() {
        let sender = Sender::new(Duration::from_secs(2), false).unwrap();
        for url in ["http://127.0.0.1:9/hook", "http://[::1]:9/", "http://169.254.169.254/latest", "http://[::ffff:127.0.0.1]/"] {
            assert!(matches!(sender.post(url, b"k", 1, b"{}".to_vec()).await, Sent::Refused(_)), "{url}");
        }
        match sender.post("http://localhost:9/hook", b"k", 1, b"{}".to_vec()).await {
            Sent::Refused(why) => assert!(why.contains("localhost") && why.contains("refused"), "{why}"),
            other => panic!("a name resolving to loopback is refused, got {other:?}"),
        }
        assert!(matches!(sender.post("ftp://example.com/x", b"k", 1, vec![]).await, Sent::Refused(_)));
        // Allowed for local testing: a closed port is a failure worth retrying, described
        // without the URL (its query may carry the client's secrets).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let local = Sender::new(Duration::from_secs(2), true).unwrap();
        match local.post(&format!("http://127.0.0.1:{port}/hook?key=s3cr3t"), b"k", 1, b"{}".to_vec()).await {
            Sent::Failed(why) => assert!(why.starts_with("connection failed") && !why.contains("s3cr3t"), "{why}"),
            other => panic!("a closed port is a retryable failure, got {other:?}"),
        }
        assert!(matches!(sender.post("not a url", b"k", 1, vec![]).await, Sent::Refused(_)));
    }
}
