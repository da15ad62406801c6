//! The account service from configuration: signing keys (generated and kept for standalone
//! trials, required in Kubernetes mode), WeChat, login limits, and the first admin.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use purrify_store::Db;
use rand::RngCore;

use crate::config::Config;
use crate::domain::accounts::jwt::{Key, KeySet};
use crate::domain::accounts::password::HashCost;
use crate::domain::accounts::throttle::Rate;
use crate::domain::accounts::wechat::WeChatConfig;
use crate::domain::accounts::{AccountService, AccountSettings};

/// Where standalone mode keeps the key it generated.
pub const DEV_KEY_FILE: &str = "jwt-dev.key";

pub fn settings(config: &Config) -> anyhow::Result<AccountSettings> {
    let signing = match (&config.jwt_key, config.replicated()) {
        (Some(spec), _) => Key::parse(spec).map_err(|e| anyhow::anyhow!("PURRIFY_JWT_KEY: {e}"))?,
        (None, true) => anyhow::bail!(
            "PURRIFY_JWT_KEY is required in Kubernetes mode (<key id>:<secret of at least 32 bytes>): \
             replicas must share the key that signs access tokens"
        ),
        (None, false) => dev_key(&config.data_dir)?,
    };
    let previous = config
        .jwt_previous_keys
        .iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| Key::parse(s).map_err(|e| anyhow::anyhow!("PURRIFY_JWT_PREVIOUS_KEYS: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keys = KeySet::new(signing, previous).map_err(|e| anyhow::anyhow!("signing keys: {e}"))?;
    let wechat = match (&config.wechat_appid, &config.wechat_secret) {
        (Some(appid), Some(secret)) if !appid.is_empty() && !secret.is_empty() => {
            Some(WeChatConfig { appid: appid.clone(), secret: secret.clone(), api_base: config.wechat_api_base.clone() })
        }
        (None, None) => None,
        _ => anyhow::bail!("WECHAT_APPID and WECHAT_SECRET go together: set both or neither"),
    };
    let per_minute = |n: f64| Rate { per_minute: n, burst: n };
    Ok(AccountSettings {
        keys,
        access_ttl: Duration::from_secs(config.access_token_seconds),
        refresh_ttl: Duration::from_secs(config.refresh_token_days * 86400),
        hash_cost: HashCost { memory_kib: config.argon2_memory_kib, iterations: config.argon2_iterations },
        wechat,
        login_per_address: per_minute(config.logins_per_minute_per_address),
        login_per_account: per_minute(config.logins_per_minute_per_account),
    })
}

/// The service, with the configured first admin created if the database has no admin.
pub async fn start(config: &Config, db: Db) -> anyhow::Result<AccountService> {
    let service = AccountService::new(db, settings(config)?).map_err(|e| anyhow::anyhow!("accounts: {e}"))?;
    match (&config.bootstrap_admin_email, &config.bootstrap_admin_password) {
        (Some(email), Some(password)) => {
            service
                .ensure_admin(email, password)
                .await
                .map_err(|e| anyhow::anyhow!("first admin from PURRIFY_BOOTSTRAP_ADMIN_*: {e:?}"))?;
        }
        (None, None) => {}
        _ => anyhow::bail!("PURRIFY_BOOTSTRAP_ADMIN_EMAIL and PURRIFY_BOOTSTRAP_ADMIN_PASSWORD go together"),
    }
    Ok(service)
}

/// The standalone key: read from the data directory, or generated there (owner-only) once,
/// so tokens survive restarts of `make run`.
fn dev_key(data_dir: &Path) -> anyhow::Result<Key> {
    let path = data_dir.join(DEV_KEY_FILE);
    if let Ok(spec) = std::fs::read_to_string(&path) {
        return Key::parse(&spec).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let mut secret = [0u8; 48];
    rand::rng().fill_bytes(&mut secret);
    let mut id = [0u8; 4];
    rand::rng().fill_bytes(&mut id);
    let spec = format!(
        "dev-{}:{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    write_private(&path, &spec)?;
    tracing::info!(path = %path.display(), "generated a development signing key for access tokens (set PURRIFY_JWT_KEY in production)");
    Key::parse(&spec).map_err(|e| anyhow::anyhow!("generated key: {e}"))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_mode_needs_a_key_and_standalone_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::for_tests(dir.path().to_path_buf());
        c.backend = clap::ValueEnum::from_str("kubernetes", false).unwrap();
        let e = settings(&c).unwrap_err().to_string();
        assert!(e.contains("PURRIFY_JWT_KEY is required"), "{e}");
        c.backend = clap::ValueEnum::from_str("standalone", false).unwrap();
        let first = settings(&c).unwrap().keys.signing_key_id().to_owned();
        assert_eq!(settings(&c).unwrap().keys.signing_key_id(), first, "the generated key is kept");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        c.jwt_key = Some("k1:short".into());
        assert!(settings(&c).unwrap_err().to_string().contains("at least 32"));
        c.jwt_key = Some("k1:0123456789abcdef0123456789abcdef".into());
        c.wechat_appid = Some("wx1".into());
        assert!(settings(&c).unwrap_err().to_string().contains("go together"));
    }
}
