//! What never reaches a log table: values of fields named like secrets (passwords, tokens,
//! keys, cookies, WeChat login codes, signatures, payers' WeChat identities), and bearer
//! tokens written into free text. Names are judged, not values: a secret's value looks like
//! any other string, while the code that logs it names it for what it is.

/// The value stored in place of a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Parts of a name that make it a secret wherever they appear (`db_password`, `x-api-token`).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "credential",
    "signature",
    "private",
    "apikey",
    "api_key",
    "session_key",
    "ciphertext",
    "plaintext",
    "openid",
    "unionid",
];

/// Names whose last segment is `code` but that are not login codes.
const PUBLIC_CODES: &[&str] = &["error_code", "status_code", "http_code", "exit_code", "err_code", "api_code", "country_code"];

/// Whether a field called `name` may hold a secret.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if SECRET_PARTS.iter().any(|p| lower.contains(p)) {
        return true;
    }
    let last = lower.rsplit(['_', '.', '-']).next().unwrap_or(&lower);
    // `key`, `api-key`, `apiv3key`, `signing_key`; `sign`, `pay_sign`; `code`, `js_code`.
    lower.ends_with("key")
        || matches!(last, "sign" | "paysign" | "nonce" | "otp" | "pin")
        || (last == "code" && !PUBLIC_CODES.contains(&lower.as_str()))
}

/// `text` with every `Bearer <token>` (any case) replaced by `Bearer [REDACTED]`.
pub fn scrub_text(text: &str) -> std::borrow::Cow<'_, str> {
    const SCHEME: &str = "bearer ";
    let lower = text.to_ascii_lowercase();
    if !lower.contains(SCHEME) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    let mut from = 0;
    while let Some(at) = lower[from..].find(SCHEME).map(|i| i + from) {
        let token_start = at + SCHEME.len();
        let token_end =
            text[token_start..].find(|c: char| c.is_whitespace() || c == '"' || c == ',').map_or(text.len(), |i| i + token_start);
        out.push_str(&text[rest..token_start]);
        if token_end > token_start {
            out.push_str(REDACTED);
        }
        rest = token_end;
        from = token_end.max(token_start);
    }
    out.push_str(&text[rest..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "password",
            "new_password",
            "token",
            "access_token",
            "refresh_token",
            "authorization",
            "Cookie",
            "set-cookie",
            "secret",
            "webhook_secret",
            "key",
            "api_key",
            "apiv3_key",
            "private_key_pem",
            "code",
            "js_code",
            "login_code",
            "paySign",
            "session_key",
            "openid",
            "nonce",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["user_id", "task", "error_code", "status_code", "status", "route", "message", "worker", "out_trade_no", "amount_fen"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn bearer_tokens_are_scrubbed_from_text() {
        assert_eq!(scrub_text("no secrets here"), "no secrets here");
        assert_eq!(scrub_text("Authorization: Bearer abc.def.ghi sent"), "Authorization: Bearer [REDACTED] sent");
        assert_eq!(scrub_text("bearer x, BEARER y"), "bearer [REDACTED], BEARER [REDACTED]");
        assert_eq!(scrub_text("ends with bearer "), "ends with bearer ");
    }
}
