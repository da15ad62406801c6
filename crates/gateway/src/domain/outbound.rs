//! The one check of a URL the gateway will call on someone's say-so: task callbacks, provider
//! base URLs, provider result downloads. An http(s) URL without credentials whose host is a
//! name or an address `/webhook/register` accepts without its development switch (no
//! metadata, link-local, loopback, unspecified, multicast or broadcast addresses);
//! `allow_loopback` lets loopback through for local development and tests. Names are checked
//! again where the call resolves them (callbacks pin the checked address).

use crate::domain::{DomainError, DomainResult};

/// Longest URL accepted.
pub const MAX_URL: usize = 2048;

/// The checked URL; errors name `field`. `what` says what the URL is for in a refusal
/// ("callback targets", "providers").
pub fn check_url(url: &str, field: &'static str, allow_loopback: bool, what: &str) -> DomainResult<url::Url> {
    let url = url.trim();
    if url.len() > MAX_URL {
        return Err(DomainError::invalid(field, format!("must be at most {MAX_URL} characters")));
    }
    let parsed = url::Url::parse(url).map_err(|e| DomainError::invalid(field, format!("not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DomainError::invalid(field, "must be an http or https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(DomainError::invalid(field, "must not carry credentials"));
    }
    let ip = match parsed.host() {
        None => return Err(DomainError::invalid(field, "must name a host")),
        Some(url::Host::Domain(_)) => None,
        Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
    };
    if let Some(ip) = ip
        && let Some(why) = crate::domain::fleet::refuse_address(ip, false)
        && !(allow_loopback && ip.is_loopback())
    {
        return Err(DomainError::invalid(field, format!("{ip} is refused: {}", why.replace("GPU servers", what))));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_public_http_urls_pass() {
        assert!(check_url("https://api.example.com/v1", "u", false, "x").is_ok());
        for bad in ["ftp://example.com", "https://u:p@example.com", "not a url", "http://169.254.169.254/", "http://127.0.0.1/"] {
            assert!(check_url(bad, "u", false, "x").is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9/", "u", true, "x").is_ok(), "loopback for development");
        assert!(check_url("http://169.254.169.254/", "u", true, "x").is_err(), "never metadata");
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL)), "u", false, "x").is_err());
    }
}
