//! RSA keys in the forms WeChat hands out: the merchant's PKCS#8 private key
//! (`apiclient_key.pem`), platform certificates (`wechatpay_*.pem`, named by their serial)
//! and the WeChat Pay public key (`pub_key.pem`, named by its `PUB_KEY_ID_…`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::der::zeroize::Zeroizing;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};
use sha2::Sha256;
use x509_cert::der::{DecodePem, Encode};

use crate::error::{Error, Result};

/// WeChat's keys are RSA 2048; 4096 is accepted so a future rotation is not refused.
const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 4096;

/// The merchant's private key: signs API requests and `paySign`.
#[derive(Clone)]
pub struct MerchantKey {
    signing: SigningKey<Sha256>,
    public: RsaPublicKey,
}

impl std::fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantKey(<redacted>)")
    }
}

impl MerchantKey {
    /// From `apiclient_key.pem` (PKCS#8 `PRIVATE KEY`, what the merchant platform issues);
    /// PKCS#1 `RSA PRIVATE KEY` is accepted too, as older tooling converts to it.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            // The parser's message may quote key bytes; say only what kind of failure it was.
            .map_err(|_| Error::Config("the merchant private key is not an RSA PKCS#8 or PKCS#1 PEM".into()))?;
        Self::from_key(key)
    }

    fn from_key(key: RsaPrivateKey) -> Result<Self> {
        check_size(key.size() * 8)?;
        let public = key.to_public_key();
        Ok(Self { signing: SigningKey::<Sha256>::new(key), public })
    }

    /// A fresh 2048-bit key from the OS RNG: for tests and local fakes (WeChat issues the
    /// real one).
    pub fn generate() -> Result<Self> {
        let key = RsaPrivateKey::new(&mut getrandom::SysRng, 2048).map_err(|e| Error::Config(format!("RSA key generation: {e}")))?;
        Self::from_key(key)
    }

    /// The private key as PKCS#8 PEM, the format of `apiclient_key.pem` (for writing test
    /// fixtures; the returned buffer is zeroed on drop).
    pub fn to_pkcs8_pem(&self) -> Result<SecretPem> {
        let key: &RsaPrivateKey = self.signing.as_ref();
        key.to_pkcs8_pem(LineEnding::LF).map(SecretPem).map_err(|e| Error::Config(format!("PKCS#8 encoding: {e}")))
    }

    /// The public half, for the party that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from_rsa(self.public.clone())
    }

    /// SHA256withRSA (PKCS#1 v1.5) over `message`, base64: WeChat's `signature` and `paySign`.
    pub fn sign_base64(&self, message: &[u8]) -> String {
        let sig: Signature = self.signing.sign(message);
        B64.encode(sig.to_bytes())
    }
}

/// A PEM string that is wiped from memory when dropped.
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

/// A key that verifies WeChat's signatures (a platform certificate's, or the WeChat Pay
/// public key), or the merchant's public key on the fake's side.
#[derive(Clone, Debug)]
pub struct PublicKey {
    verifying: VerifyingKey<Sha256>,
    rsa: RsaPublicKey,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.rsa == other.rsa
    }
}

impl PublicKey {
    fn from_rsa(rsa: RsaPublicKey) -> Self {
        Self { verifying: VerifyingKey::<Sha256>::new(rsa.clone()), rsa }
    }

    /// From a `PUBLIC KEY` (SubjectPublicKeyInfo) PEM, the format of WeChat's `pub_key.pem`;
    /// `RSA PUBLIC KEY` (PKCS#1) is accepted too.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let rsa = RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|_| Error::Config("not an RSA public key PEM".into()))?;
        check_size(rsa.size() * 8)?;
        Ok(Self::from_rsa(rsa))
    }

    /// From an X.509 certificate PEM (a `wechatpay_*.pem` platform certificate or
    /// `apiclient_cert.pem`): the certificate's serial as WeChat writes it (upper-case hex,
    /// no leading zero bytes) and its public key. The certificate's own signature and
    /// validity are not checked: WeChat's documented trust model for platform certificates
    /// is the download channel (or the serial they are pinned by), not a CA chain.
    pub fn from_certificate_pem(pem: &str) -> Result<(String, Self)> {
        let cert =
            x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(|e| Error::Config(format!("not an X.509 certificate PEM: {e}")))?;
        let serial = serial_hex(cert.tbs_certificate().serial_number().as_bytes());
        let spki = cert.tbs_certificate().subject_public_key_info().to_der().map_err(|e| Error::Config(format!("certificate key: {e}")))?;
        let rsa = RsaPublicKey::from_public_key_der(&spki).map_err(|_| Error::Config("the certificate's key is not RSA".into()))?;
        check_size(rsa.size() * 8)?;
        Ok((serial, Self::from_rsa(rsa)))
    }

    /// As a `PUBLIC KEY` PEM (what WeChat's merchant platform offers for download).
    pub fn to_pem(&self) -> String {
        // Encoding a valid in-memory key cannot fail.
        self.rsa.to_public_key_pem(LineEnding::LF).expect("encode an RSA public key")
    }

    /// Checks a base64 SHA256withRSA signature over `message`. Any failure, malformed base64
    /// included, is [`Error::BadSignature`]: the caller must not learn more than "no".
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> Result<()> {
        let bytes = B64.decode(signature_b64.trim()).map_err(|_| Error::BadSignature)?;
        let sig = Signature::try_from(bytes.as_slice()).map_err(|_| Error::BadSignature)?;
        self.verifying.verify(message, &sig).map_err(|_| Error::BadSignature)
    }
}

/// Upper-case hex of a certificate serial without the DER sign byte.
fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len().saturating_sub(1));
    bytes[start..].iter().map(|b| format!("{b:02X}")).collect()
}

fn check_size(bits: usize) -> Result<()> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::Config(format!("RSA keys must be 2048 to 4096 bits, this one has {bits}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_upper_hex_without_the_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x9F, 0x0a]), "9F0A");
        assert_eq!(serial_hex(&[0x51, 0x57]), "5157");
        assert_eq!(serial_hex(&[0x00]), "00");
    }
}
