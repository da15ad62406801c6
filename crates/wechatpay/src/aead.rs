//! AEAD_AES_256_GCM, how WeChat encrypts notification resources (and downloaded platform
//! certificates): the APIv3 key as the AES-256 key, a 12-character nonce, the resource's
//! `associated_data` as AAD, base64 ciphertext with the 16-byte tag appended.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::ApiV3Key;
use crate::error::{Error, Result};

pub const ALGORITHM: &str = "AEAD_AES_256_GCM";

/// The `resource` object of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    /// WeChat may omit it; it then authenticates as empty.
    #[serde(default)]
    pub associated_data: String,
    pub nonce: String,
    /// `transaction` or `refund`.
    #[serde(default)]
    pub original_type: String,
}

fn cipher(key: &ApiV3Key) -> Aes256Gcm {
    Aes256Gcm::new(&(*key.as_bytes()).into())
}

fn nonce(nonce: &str) -> Result<aes_gcm::Nonce<aes_gcm::aead::consts::U12>> {
    let bytes: [u8; 12] = nonce.as_bytes().try_into().map_err(|_| Error::Decrypt)?;
    Ok(bytes.into())
}

/// Decrypts a resource. Any tampering with ciphertext, tag, nonce or associated data, or
/// the wrong key, is [`Error::Decrypt`]. The plaintext is wiped when dropped.
pub fn decrypt(key: &ApiV3Key, resource: &EncryptedResource) -> Result<Zeroizing<Vec<u8>>> {
    if resource.algorithm != ALGORITHM {
        return Err(Error::Malformed(format!(
            "unsupported resource algorithm {:?}",
            resource.algorithm.chars().take(32).collect::<String>()
        )));
    }
    let ciphertext = B64.decode(resource.ciphertext.trim()).map_err(|_| Error::Decrypt)?;
    let plain = cipher(key)
        .decrypt(&nonce(&resource.nonce)?, Payload { msg: &ciphertext, aad: resource.associated_data.as_bytes() })
        .map_err(|_| Error::Decrypt)?;
    Ok(Zeroizing::new(plain))
}

/// Encrypts as WeChat does, with a fresh random 12-character nonce: for test fakes and
/// round-trip tests.
pub fn encrypt(key: &ApiV3Key, original_type: &str, associated_data: &str, plaintext: &[u8]) -> EncryptedResource {
    let nonce_str: String = crate::sign::nonce().chars().take(12).collect();
    let ciphertext = cipher(key)
        .encrypt(&nonce(&nonce_str).expect("12 ASCII characters"), Payload { msg: plaintext, aad: associated_data.as_bytes() })
        // AES-GCM encryption fails only for messages over 64 GiB.
        .expect("AES-GCM encryption");
    EncryptedResource {
        algorithm: ALGORITHM.into(),
        ciphertext: B64.encode(ciphertext),
        associated_data: associated_data.into(),
        nonce: nonce_str,
        original_type: original_type.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiV3Key {
        ApiV3Key::new("0123456789abcdefghijklmnopqrstuv").unwrap()
    }

    #[test]
    fn round_trip() {
        let r = encrypt(&key(), "transaction", "transaction", br#"{"out_trade_no":"T1"}"#);
        assert_eq!(r.nonce.len(), 12);
        assert_eq!(decrypt(&key(), &r).unwrap().as_slice(), br#"{"out_trade_no":"T1"}"#);
    }

    #[test]
    fn known_answer() {
        // Computed independently with Python's `cryptography` AESGCM for this key, nonce
        // "0123456789ab", AAD "transaction" and plaintext "hello".
        let r = EncryptedResource {
            algorithm: ALGORITHM.into(),
            ciphertext: KNOWN_CIPHERTEXT.into(),
            associated_data: "transaction".into(),
            nonce: "0123456789ab".into(),
            original_type: "transaction".into(),
        };
        assert_eq!(decrypt(&key(), &r).unwrap().as_slice(), b"hello");
    }

    const KNOWN_CIPHERTEXT: &str = "iZX97QeqvfKksztVgSV7RZQP+W4G";

    #[test]
    fn tampering_is_refused() {
        let good = encrypt(&key(), "transaction", "transaction", b"{}");
        let mut bytes = B64.decode(&good.ciphertext).unwrap();
        bytes[0] ^= 1;
        let flipped = EncryptedResource { ciphertext: B64.encode(&bytes), ..good.clone() };
        assert!(matches!(decrypt(&key(), &flipped), Err(Error::Decrypt)));
        let other_aad = EncryptedResource { associated_data: "refund".into(), ..good.clone() };
        assert!(matches!(decrypt(&key(), &other_aad), Err(Error::Decrypt)));
        let other_nonce = EncryptedResource { nonce: "AAAAAAAAAAAA".into(), ..good.clone() };
        assert!(matches!(decrypt(&key(), &other_nonce), Err(Error::Decrypt)));
        let wrong_key = ApiV3Key::new("vutsrqponmlkjihgfedcba9876543210").unwrap();
        assert!(matches!(decrypt(&wrong_key, &good), Err(Error::Decrypt)));
        let other_algorithm = EncryptedResource { algorithm: "AEAD_AES_128_GCM".into(), ..good };
        assert!(matches!(decrypt(&key(), &other_algorithm), Err(Error::Malformed(_))));
    }
}
