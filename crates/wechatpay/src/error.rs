//! One error type for the whole protocol. Variants say what went wrong without carrying
//! secrets, signatures' inputs or decrypted payloads: they end up in logs and API answers.

/// Why a WeChat Pay operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration that cannot work: a missing variable, an unreadable or malformed key
    /// file, an APIv3 key that is not 32 bytes.
    #[error("WeChat Pay configuration: {0}")]
    Config(String),
    /// A request the caller built that WeChat would refuse (e.g. an `out_trade_no` with
    /// characters outside `[0-9A-Za-z_-]`, a zero amount).
    #[error("invalid WeChat Pay request: {0}")]
    InvalidRequest(String),
    /// A response or notification lacks one of the `Wechatpay-*` headers.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `Wechatpay-Serial` names neither a configured platform certificate nor the configured
    /// WeChat Pay public key.
    #[error("unknown WeChat Pay key serial {0:?}")]
    UnknownSerial(String),
    /// The signature does not verify: forged, tampered with, or one of WeChat's deliberate
    /// `WECHATPAY/SIGNTEST/` probes.
    #[error("WeChat Pay signature does not verify")]
    BadSignature,
    /// `Wechatpay-Timestamp` is more than five minutes from now (a replay, or a wrong clock).
    #[error("WeChat Pay timestamp {timestamp} is {skew_secs} s away from now")]
    StaleTimestamp { timestamp: i64, skew_secs: i64 },
    /// AEAD_AES_256_GCM decryption failed: wrong APIv3 key or tampered ciphertext,
    /// nonce or associated data.
    #[error("WeChat Pay resource does not decrypt")]
    Decrypt,
    /// JSON that does not have the documented shape.
    #[error("malformed WeChat Pay message: {0}")]
    Malformed(String),
    /// WeChat answered with an error body `{code, message}`.
    #[error("WeChat Pay answered {status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    /// The request did not reach WeChat or no answer came back in time.
    #[error("WeChat Pay unreachable: {0}")]
    Transport(String),
}

impl Error {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::InvalidRequest(_) => "invalid_request",
            Error::MissingHeader(_) => "missing_header",
            Error::UnknownSerial(_) => "unknown_serial",
            Error::BadSignature => "bad_signature",
            Error::StaleTimestamp { .. } => "stale_timestamp",
            Error::Decrypt => "decrypt",
            Error::Malformed(_) => "malformed",
            Error::Api { .. } => "api",
            Error::Transport(_) => "transport",
        }
    }

    /// Whether this is a refusal of something that claimed to come from WeChat (a
    /// notification to answer with 401 rather than 500).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            Error::MissingHeader(_) | Error::UnknownSerial(_) | Error::BadSignature | Error::StaleTimestamp { .. } | Error::Decrypt
        )
    }

    /// WeChat's error code when it answered with one (`ORDER_NOT_EXIST`, `ORDERPAID`, …).
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
