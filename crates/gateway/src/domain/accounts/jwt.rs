//! Access tokens: compact JWS with HS256 (RFC 7515/7519), written here rather than pulled in
//! with a JOSE library because exactly one algorithm is ever accepted. Verification needs no
//! database: the signature, the key id, the algorithm, the issuer and the expiry are checked
//! against configuration alone.
//!
//! Keys have ids (`kid`): the first key signs, the others only verify, so a key can be
//! rotated by adding the new one first and dropping the old one after the token lifetime.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const ISSUER: &str = "purrify";
/// Shortest accepted secret: HS256 keys shorter than the hash add nothing but risk.
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock difference tolerated on `iat` between gateway replicas.
const CLOCK_SKEW_SECONDS: i64 = 60;

/// One signing key: an id and a secret.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

impl Key {
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let (id, secret) = (id.into(), secret.into());
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err("a key id is 1-64 characters of letters, digits, '-', '_' or '.'".into());
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!("the secret of key {id:?} is {} bytes; at least {MIN_SECRET_BYTES} are needed", secret.len()));
        }
        Ok(Self { id, secret })
    }

    /// `<kid>:<secret>` as configured.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (id, secret) = spec.trim().split_once(':').ok_or("expected <key id>:<secret>")?;
        Self::new(id, secret.as_bytes().to_vec())
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }
}

/// The signing key and the keys still accepted.
#[derive(Debug, Clone)]
pub struct KeySet {
    signing: Key,
    verifying: Vec<Key>,
}

impl KeySet {
    pub fn new(signing: Key, previous: Vec<Key>) -> Result<Self, String> {
        let mut ids = vec![signing.id.as_str()];
        for k in &previous {
            if ids.contains(&k.id.as_str()) {
                return Err(format!("key id {:?} is configured twice", k.id));
            }
            ids.push(&k.id);
        }
        let mut verifying = vec![signing.clone()];
        verifying.extend(previous);
        Ok(Self { signing, verifying })
    }

    pub fn signing_key_id(&self) -> &str {
        &self.signing.id
    }
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub role: String,
    /// The user's token version when it was issued.
    pub ver: i64,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    kid: Option<String>,
}

/// Why a token was refused (logged at debug level; clients get one generic answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("not a compact JWS")]
    Malformed,
    #[error("algorithm other than HS256")]
    Algorithm,
    #[error("unknown key id")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("issued in the future or by another issuer")]
    Claims,
}

impl KeySet {
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { alg: "HS256".into(), typ: Some("JWT".into()), kid: Some(self.signing.id.clone()) };
        let mut token = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).expect("header serialises")),
            B64.encode(serde_json::to_vec(claims).expect("claims serialise"))
        );
        let mut mac = self.signing.mac();
        mac.update(token.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        token.push('.');
        token.push_str(&sig);
        token
    }

    /// The claims of a valid token at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, Rejected> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(Rejected::Malformed);
        };
        let header: Header = B64.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(Rejected::Malformed)?;
        // Only HS256: "none", the RS/HS confusion and every other algorithm are refused
        // before any key is touched.
        if header.alg != "HS256" {
            return Err(Rejected::Algorithm);
        }
        let kid = header.kid.ok_or(Rejected::UnknownKey)?;
        let key = self.verifying.iter().find(|k| k.id == kid).ok_or(Rejected::UnknownKey)?;
        let sig = B64.decode(s).map_err(|_| Rejected::Malformed)?;
        let mut mac = key.mac();
        mac.update(&token.as_bytes()[..h.len() + 1 + p.len()]);
        // Constant time.
        mac.verify_slice(&sig).map_err(|_| Rejected::Signature)?;
        let claims: Claims = B64.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(Rejected::Malformed)?;
        if claims.exp <= now {
            return Err(Rejected::Expired);
        }
        if claims.iss != ISSUER || claims.iat > now + CLOCK_SKEW_SECONDS {
            return Err(Rejected::Claims);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> KeySet {
        KeySet::new(Key::new("k2", vec![7u8; 32]).unwrap(), vec![Key::new("k1", vec![9u8; 32]).unwrap()]).unwrap()
    }

    fn claims(iat: i64, exp: i64) -> Claims {
        Claims { sub: "u1".into(), role: "user".into(), ver: 3, iat, exp, iss: ISSUER.into() }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let k = keys();
        let t = k.sign(&claims(1000, 2800));
        assert_eq!(k.verify(&t, 1500).unwrap(), claims(1000, 2800));
        assert_eq!(k.verify(&t, 2800), Err(Rejected::Expired));
        assert_eq!(k.verify(&t, 1000 - CLOCK_SKEW_SECONDS), Ok(claims(1000, 2800)), "iat within the clock skew");
        assert_eq!(k.verify(&t, 1000 - CLOCK_SKEW_SECONDS - 1), Err(Rejected::Claims));
    }

    #[test]
    fn previous_keys_verify_and_unknown_ones_do_not() {
        let old = KeySet::new(Key::new("k1", vec![9u8; 32]).unwrap(), vec![]).unwrap();
        let t = old.sign(&claims(1000, 2800));
        assert!(keys().verify(&t, 1500).is_ok(), "a token of the previous key still verifies");
        let other = KeySet::new(Key::new("k9", vec![9u8; 32]).unwrap(), vec![]).unwrap();
        assert_eq!(other.verify(&t, 1500), Err(Rejected::UnknownKey));
    }

    #[test]
    fn tampering_and_other_algorithms_are_refused() {
        let k = keys();
        let t = k.sign(&claims(1000, 2800));
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged = B64.encode(serde_json::to_vec(&Claims { role: "admin".into(), ..claims(1000, 2800) }).unwrap());
        assert_eq!(k.verify(&format!("{head}.{forged}.{sig}"), 1500), Err(Rejected::Signature));
        let none = B64.encode(br#"{"alg":"none","kid":"k2"}"#);
        assert_eq!(k.verify(&format!("{none}.{forged}."), 1500), Err(Rejected::Algorithm));
        let hs512 = B64.encode(br#"{"alg":"HS512","kid":"k2"}"#);
        assert_eq!(k.verify(&format!("{hs512}.{forged}.{sig}"), 1500), Err(Rejected::Algorithm));
        let no_kid = B64.encode(br#"{"alg":"HS256"}"#);
        assert_eq!(k.verify(&format!("{no_kid}.{forged}.{sig}"), 1500), Err(Rejected::UnknownKey));
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(k.verify(junk, 1500), Err(Rejected::Malformed), "{junk:?}");
        }
    }

    #[test]
    fn weak_or_odd_keys_are_refused() {
        assert!(Key::parse("k1:short").unwrap_err().contains("at least 32"));
        assert!(Key::parse("no-colon").is_err());
        assert!(Key::parse("bad id:0123456789abcdef0123456789abcdef").is_err());
        assert_eq!(Key::parse("k-1:0123456789abcdef0123456789abcdef").unwrap().id, "k-1");
        assert!(format!("{:?}", Key::parse("k-1:0123456789abcdef0123456789abcdef").unwrap()).contains("redacted"));
        let k = Key::new("same", vec![1u8; 32]).unwrap();
        assert!(KeySet::new(k.clone(), vec![k]).is_err());
    }
}
