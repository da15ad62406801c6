//! The payment service from configuration: the merchant from seed 000's variables (or the
//! settings an embedding program put in the configuration), loaded and checked at start, so
//! a missing key file or a wrong APIv3 key stops the gateway instead of failing a payment.

use std::time::Duration;

use purrify_store::Db;
use purrify_wechatpay::{Client, Settings};

use crate::config::Config;
use crate::domain::payments::{PaymentService, PaymentSettings};

pub fn service(config: &Config, db: Db) -> anyhow::Result<PaymentService> {
    let p = &config.payments;
    let settings = PaymentSettings {
        order_ttl: Duration::from_secs(p.order_ttl_seconds),
        reconcile_after: Duration::from_secs(p.reconcile_after_seconds),
        reconcile_interval: Duration::from_secs(p.reconcile_interval_seconds),
    };
    let merchant = match &p.wechat_pay {
        Some(s) => Some(s.clone()),
        None => Settings::from_env().map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let client = match merchant {
        None => {
            tracing::info!("WeChat Pay is not configured (WECHAT_MCH_ID unset): recharge orders are disabled");
            None
        }
        Some(s) => {
            let loaded = s.load().map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(mch_id = %s.mch_id, appid = %s.appid, base_url = %s.base_url, "WeChat Pay configured");
            Some(Client::new(loaded.merchant, loaded.verifier).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
    };
    Ok(PaymentService::new(db, client, settings))
}
