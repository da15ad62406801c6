//! Loading a merchant from seed 000's environment and certificate directory:
//! `WECHAT_MCH_ID`, `WECHAT_APPID`, `WECHAT_API_KEY` (the APIv3 key), `WECHAT_NOTIFY_URL`,
//! and `certificates/` with `apiclient_key.pem`, `apiclient_cert.pem` and `wechatpay_*.pem`
//! platform certificates, plus the WeChat Pay public key (`pub_key.pem`) with its id.
//! Every path is configurable; the names below are the variables [`Settings::from_env`] reads.

use std::path::{Path, PathBuf};

use crate::config::{ApiV3Key, DEFAULT_BASE_URL, MerchantConfig};
use crate::error::{Error, Result};
use crate::keys::{MerchantKey, PublicKey};
use crate::verify::Verifier;

pub const ENV_MCH_ID: &str = "WECHAT_MCH_ID";
pub const ENV_APPID: &str = "WECHAT_APPID";
pub const ENV_API_KEY: &str = "WECHAT_API_KEY";
pub const ENV_NOTIFY_URL: &str = "WECHAT_NOTIFY_URL";
/// Default `https://api.mch.weixin.qq.com`.
pub const ENV_BASE_URL: &str = "WECHAT_PAY_API_BASE";
/// Default `certificates`.
pub const ENV_CERT_DIR: &str = "WECHAT_CERT_DIR";
/// Default `<cert dir>/apiclient_key.pem`.
pub const ENV_PRIVATE_KEY: &str = "WECHAT_PRIVATE_KEY_PATH";
/// Default `<cert dir>/apiclient_cert.pem`; only read for its serial.
pub const ENV_MERCHANT_CERT: &str = "WECHAT_CERT_PATH";
/// The merchant certificate serial, when `apiclient_cert.pem` is not deployed.
pub const ENV_CERT_SERIAL: &str = "WECHAT_CERT_SERIAL";
/// Default `<cert dir>/pub_key.pem` when the id is set.
pub const ENV_PUBLIC_KEY: &str = "WECHAT_PAY_PUBLIC_KEY_PATH";
/// `PUB_KEY_ID_…`.
pub const ENV_PUBLIC_KEY_ID: &str = "WECHAT_PAY_PUBLIC_KEY_ID";

/// Where a merchant's settings and files are. Secrets stay in files or the environment
/// until [`Settings::load`] reads them.
#[derive(Clone)]
pub struct Settings {
    pub mch_id: String,
    pub appid: String,
    pub api_v3_key: String,
    pub notify_url: String,
    pub base_url: String,
    pub cert_dir: PathBuf,
    pub private_key: Option<PathBuf>,
    pub merchant_cert: Option<PathBuf>,
    pub cert_serial: Option<String>,
    pub public_key: Option<PathBuf>,
    pub public_key_id: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("mch_id", &self.mch_id)
            .field("appid", &self.appid)
            .field("api_v3_key", &"<redacted>")
            .field("notify_url", &self.notify_url)
            .field("base_url", &self.base_url)
            .field("cert_dir", &self.cert_dir)
            .field("public_key_id", &self.public_key_id)
            .finish_non_exhaustive()
    }
}

/// A merchant ready to sign and verify.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub merchant: MerchantConfig,
    pub verifier: Verifier,
}

impl Settings {
    /// From the process environment; `Ok(None)` when `WECHAT_MCH_ID` is unset (payments
    /// not configured).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any name → value lookup (tests, or a configuration layer that has the values).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let Some(mch_id) = get(ENV_MCH_ID) else { return Ok(None) };
        let need = |name: &str| get(name).ok_or_else(|| Error::Config(format!("{ENV_MCH_ID} is set, so {name} is required")));
        Ok(Some(Self {
            mch_id,
            appid: need(ENV_APPID)?,
            api_v3_key: need(ENV_API_KEY)?,
            notify_url: need(ENV_NOTIFY_URL)?,
            base_url: get(ENV_BASE_URL).unwrap_or_else(|| DEFAULT_BASE_URL.into()),
            cert_dir: get(ENV_CERT_DIR).unwrap_or_else(|| "certificates".into()).into(),
            private_key: get(ENV_PRIVATE_KEY).map(Into::into),
            merchant_cert: get(ENV_MERCHANT_CERT).map(Into::into),
            cert_serial: get(ENV_CERT_SERIAL),
            public_key: get(ENV_PUBLIC_KEY).map(Into::into),
            public_key_id: get(ENV_PUBLIC_KEY_ID),
        }))
    }

    /// Reads the key files and builds the merchant and the verifier. Fails unless at least
    /// one way to verify WeChat (a platform certificate or the public key) is configured.
    pub fn load(&self) -> Result<Loaded> {
        let key_path = self.private_key.clone().unwrap_or_else(|| self.cert_dir.join("apiclient_key.pem"));
        let key = MerchantKey::from_pem(&read(&key_path)?)?;
        let serial = match &self.cert_serial {
            Some(s) => s.clone(),
            None => {
                let cert_path = self.merchant_cert.clone().unwrap_or_else(|| self.cert_dir.join("apiclient_cert.pem"));
                let (serial, cert_key) = PublicKey::from_certificate_pem(&read(&cert_path)?)?;
                if cert_key != key.public_key() {
                    return Err(Error::Config(format!("{} does not belong to {}", cert_path.display(), key_path.display())));
                }
                serial
            }
        };
        let merchant = MerchantConfig::new(&self.mch_id, &self.appid, &serial, key, ApiV3Key::new(&self.api_v3_key)?, &self.notify_url)?
            .with_base_url(&self.base_url);

        let mut verifier = Verifier::new();
        for path in platform_certificates(&self.cert_dir)? {
            verifier.add_platform_certificate_pem(&read(&path)?).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        }
        match (&self.public_key_id, &self.public_key) {
            (Some(id), path) => {
                let path = path.clone().unwrap_or_else(|| self.cert_dir.join("pub_key.pem"));
                verifier.add_public_key(id, PublicKey::from_pem(&read(&path)?)?)?;
            }
            (None, Some(_)) => return Err(Error::Config(format!("{ENV_PUBLIC_KEY} needs {ENV_PUBLIC_KEY_ID} (PUB_KEY_ID_…)"))),
            (None, None) => {}
        }
        if verifier.is_empty() {
            return Err(Error::Config(format!(
                "nothing to verify WeChat Pay with: put wechatpay_*.pem platform certificates in {} or set {ENV_PUBLIC_KEY_ID}",
                self.cert_dir.display()
            )));
        }
        Ok(Loaded { merchant, verifier })
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// `wechatpay_*.pem` in `dir`, sorted; a missing directory has none.
fn platform_certificates(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Config(format!("{}: {e}", dir.display()))),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("wechatpay_") && n.ends_with(".pem")))
        .collect();
    paths.sort();
    Ok(paths)
}
