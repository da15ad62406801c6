//! Sealing providers' API keys at rest: AES-256-GCM under a key from configuration
//! (`PURRIFY_PROVIDER_KEY`, 32 bytes as 64 hex digits or base64), a random 96-bit nonce per
//! seal, and the provider's id as associated data, so a sealed key copied onto another
//! provider's row does not open. Stored as base64 of `nonce | ciphertext+tag`.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore as _;

use super::adapter::ApiKey;

const NONCE_LEN: usize = 12;

/// The configured sealing key. Its `Debug` never shows it.
#[derive(Clone)]
pub struct KeyBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for KeyBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBox(<redacted>)")
    }
}

impl KeyBox {
    /// Reads the configured key: 64 hex digits or base64 of 32 bytes.
    pub fn from_config(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32).map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16)).collect::<Result<Vec<u8>, _>>().map_err(|e| e.to_string())?
        } else {
            B64.decode(text).map_err(|_| "PURRIFY_PROVIDER_KEY must be 32 bytes as 64 hex digits or base64".to_string())?
        };
        let key: [u8; 32] =
            bytes.try_into().map_err(|_| "PURRIFY_PROVIDER_KEY must be exactly 32 bytes (64 hex digits or base64)".to_string())?;
        Ok(Self { cipher: Aes256Gcm::new(&key.into()) })
    }

    /// Seals `key` for the provider `id`.
    pub fn seal(&self, id: &str, key: &ApiKey) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&nonce.into(), Payload { msg: key.expose().as_bytes(), aad: id.as_bytes() })
            .expect("AES-GCM encryption of a short key cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// Opens a key sealed for `id`; `None` when it was sealed under another key or for
    /// another provider, or was altered.
    pub fn open(&self, id: &str, sealed: &str) -> Option<ApiKey> {
        let raw = B64.decode(sealed).ok()?;
        if raw.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, body) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let plain = self.cipher.decrypt(&nonce.into(), Payload { msg: body, aad: id.as_bytes() }).ok()?;
        String::from_utf8(plain).ok().map(ApiKey::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keybox(byte: u8) -> KeyBox {
        KeyBox::from_config(&format!("{byte:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn sealed_keys_open_only_for_their_provider_and_key() {
        let kb = keybox(7);
        let sealed = kb.seal("stability", &ApiKey::new("sk-secret"));
        assert!(!sealed.contains("sk-secret"));
        assert_eq!(kb.open("stability", &sealed).unwrap().expose(), "sk-secret");
        assert!(kb.open("dalle", &sealed).is_none(), "another provider's row");
        assert!(keybox(8).open("stability", &sealed).is_none(), "another sealing key");
        let mut raw = B64.decode(&sealed).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(kb.open("stability", &B64.encode(raw)).is_none(), "altered");
        assert_ne!(kb.seal("stability", &ApiKey::new("sk-secret")), sealed, "a fresh nonce per seal");
    }

    #[test]
    fn configured_keys_are_32_bytes_in_hex_or_base64() {
        assert!(KeyBox::from_config(&B64.encode([1u8; 32])).is_ok());
        assert!(KeyBox::from_config("abcd").is_err());
        assert!(KeyBox::from_config(&B64.encode([1u8; 16])).is_err());
        let debug = format!("{:?}", keybox(1));
        assert!(!debug.contains("01"), "{debug}");
    }
}
