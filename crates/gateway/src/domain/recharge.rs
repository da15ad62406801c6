//! Recharge codes (seed 002, DESIGN section 12): admins create batches of codes, users redeem
//! them for credits. The money rules live in the store's redemption transaction; this layer
//! validates what admins send, generates the codes, reads what users type, and rate-limits
//! redemption attempts so codes cannot be found by guessing.

use std::sync::Arc;
use std::time::Instant;

use purrify_store::{CodeFilter, Db, NewBatch, Redemption, StoreError};
use rand::{Rng, TryRngCore};

pub use purrify_store::{Batch, CodeStatus, Page, PageRequest, RechargeCode, RedemptionRecord};

use crate::domain::accounts::Principal;
use crate::domain::accounts::throttle::{Buckets, Rate};
use crate::domain::{DomainError, DomainResult};

/// Characters of a code: digits and capitals without 0/O, 1/I/L, which people misread when
/// they copy a code from a card. 31 symbols: 12 of them carry 12 * log2(31) = 59.4 bits.
pub const ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const PREFIX: &str = "OWL";
const GROUPS: usize = 3;
const GROUP_LEN: usize = 4;

/// Largest face value of a code: 1,000,000.00 credits, far from any overflow of a balance.
pub const MAX_AMOUNT: i64 = 100_000_000;
pub const MAX_BATCH: i64 = 1000;
pub const MAX_USES: i64 = 10_000;
const MAX_DESCRIPTION: usize = 200;

/// A new code from the operating system's RNG, `OWL-XXXX-XXXX-XXXX`.
pub fn generate_code() -> String {
    let mut rng = rand::rngs::OsRng.unwrap_err();
    let mut out = String::with_capacity(PREFIX.len() + GROUPS * (GROUP_LEN + 1));
    out.push_str(PREFIX);
    for _ in 0..GROUPS {
        out.push('-');
        for _ in 0..GROUP_LEN {
            // `random_range` is unbiased (rejection sampling), so every symbol is equally likely.
            out.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
        }
    }
    out
}

/// What a user typed, in canonical form: trimmed, upper-cased, with or without the dashes,
/// spaces and the `OWL` prefix. `None` when it cannot be a code.
pub fn normalize_code(input: &str) -> Option<String> {
    let compact: String = input.chars().filter(|c| *c != '-' && !c.is_whitespace()).flat_map(char::to_uppercase).collect();
    // O is not in the alphabet, so a 15-character string starting with OWL is unambiguous.
    let body = match compact.strip_prefix(PREFIX) {
        Some(rest) if rest.len() == GROUPS * GROUP_LEN => rest,
        _ if compact.len() == GROUPS * GROUP_LEN => compact.as_str(),
        _ => return None,
    };
    if !body.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    let mut out = String::from(PREFIX);
    for group in body.as_bytes().chunks(GROUP_LEN) {
        out.push('-');
        out.push_str(std::str::from_utf8(group).ok()?);
    }
    Some(out)
}

/// A decimal amount of credits (`100`, `100.5`, `100.50`) in hundredths, exactly: digits are
/// read as digits, never through floating point.
pub fn parse_amount(text: &str) -> Result<i64, &'static str> {
    const SHAPE: &str = "must be a decimal number with at most 2 decimal places";
    let text = text.trim();
    if text.starts_with('-') {
        return Err("must be greater than 0");
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SHAPE);
    }
    // Trailing zeros carry no value (`100.000` is 100.00).
    let frac = frac.trim_end_matches('0');
    if frac.len() > 2 {
        return Err(SHAPE);
    }
    let whole = whole.trim_start_matches('0');
    // More digits than any acceptable amount has: refuse before parsing could overflow.
    if whole.len() > 9 {
        return Err("must be at most 1000000");
    }
    let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| SHAPE)? };
    let cents: i64 = format!("{frac:0<2}").parse().map_err(|_| SHAPE)?;
    let amount = whole * 100 + cents;
    match amount {
        0 => Err("must be greater than 0"),
        a if a > MAX_AMOUNT => Err("must be at most 1000000"),
        a => Ok(a),
    }
}

/// A batch as an admin sends it; every field is checked, and all problems reported at once.
#[derive(Debug, Clone, Default)]
pub struct BatchRequest {
    /// Credits per redemption, as decimal text.
    pub amount: Option<String>,
    pub description: Option<String>,
    /// Codes to create (seed 002's `batch_size`); 1 when absent.
    pub count: Option<i64>,
    /// Redemptions allowed per code, each by a different user; 1 when absent.
    pub max_uses: Option<i64>,
    /// RFC 3339.
    pub expires_at: Option<String>,
}

/// Redemption attempt limits, per user and per client address: spent on every attempt,
/// before the database is asked, so a guesser learns nothing faster than the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RechargeSettings {
    pub per_user: Rate,
    pub per_address: Rate,
}

impl Default for RechargeSettings {
    fn default() -> Self {
        // A person redeems a card or two; ten tries a minute leaves room for typos. An
        // address may be a campus NAT, so it gets more.
        Self { per_user: Rate { per_minute: 10.0, burst: 10.0 }, per_address: Rate { per_minute: 60.0, burst: 60.0 } }
    }
}

#[derive(Clone)]
pub struct RechargeService {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    by_user: Buckets,
    by_address: Buckets,
}

/// The first group of a code, enough to tell codes apart in logs without logging a usable
/// credential.
fn hint(code: &str) -> &str {
    code.get(..PREFIX.len() + 1 + GROUP_LEN).unwrap_or(code)
}

impl RechargeService {
    pub fn new(db: Db, settings: RechargeSettings) -> Self {
        Self { inner: Arc::new(Inner { db, by_user: Buckets::new(settings.per_user), by_address: Buckets::new(settings.per_address) }) }
    }

    /// Checks a batch request and creates the batch with freshly generated codes.
    pub async fn create_batch(&self, admin: &Principal, request: BatchRequest) -> DomainResult<Batch> {
        if !admin.is_admin() {
            return Err(DomainError::Forbidden("administrators only".into()));
        }
        let checked = check_batch(&request, chrono::Utc::now().timestamp_millis())?;
        // A collision with an existing code (59 bits: about one in 10^8 for a full batch among
        // a million codes) fails the batch as a whole; new codes make the next try succeed.
        for _ in 0..3 {
            let batch = NewBatch {
                name: checked.name.clone(),
                amount: checked.amount,
                max_uses: checked.max_uses,
                expires_at: checked.expires_at,
                created_by: admin.user_id.clone(),
                codes: (0..checked.count).map(|_| generate_code()).collect(),
            };
            match self.inner.db.create_recharge_batch(&batch).await {
                Ok(b) => {
                    tracing::info!(admin = %admin.user_id, batch = %b.id, count = b.codes.len(), amount = b.amount, "recharge codes created");
                    return Ok(b);
                }
                Err(StoreError::Duplicate(_)) => tracing::warn!("a generated recharge code already existed; generating the batch again"),
                Err(e) => return Err(e.into()),
            }
        }
        Err(DomainError::Internal("three batches of recharge codes in a row collided with existing codes".into()))
    }

    /// Codes, newest first; `status` is one of [`CodeStatus`]'s words.
    pub async fn list_codes(&self, status: Option<&str>, batch_id: Option<String>, page: PageRequest) -> DomainResult<Page<RechargeCode>> {
        let status = match status.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(CodeStatus::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
                let words: Vec<&str> = CodeStatus::ALL.iter().map(|s| s.as_str()).collect();
                DomainError::invalid("status", format!("must be one of {}", words.join(", ")))
            })?),
        };
        Ok(self.inner.db.recharge_codes(&CodeFilter { status, batch_id }, page).await?)
    }

    /// Redeems a code for the user; the record says the new balance.
    pub async fn redeem(&self, user: &Principal, input: &str, address: &str) -> DomainResult<RedemptionRecord> {
        let now = Instant::now();
        let wait = self.inner.by_user.take(&user.user_id, now).err().or_else(|| self.inner.by_address.take(address, now).err());
        if let Some(wait) = wait {
            tracing::warn!(user = %user.user_id, %address, "recharge code attempts rate-limited");
            return Err(DomainError::RateLimited {
                message: "too many recharge code attempts; wait before trying again".into(),
                retry_after: wait.as_secs().max(1),
            });
        }
        if input.trim().is_empty() {
            return Err(DomainError::invalid("code", "is required"));
        }
        let code = normalize_code(input).ok_or_else(|| DomainError::invalid("code", "is not a recharge code (OWL-XXXX-XXXX-XXXX)"))?;
        let outcome = self.inner.db.redeem_recharge_code(&code, &user.user_id).await?;
        let refused = |why: &'static str| {
            tracing::info!(user = %user.user_id, code = hint(&code), why, "recharge code refused");
            DomainError::invalid("code", why)
        };
        match outcome {
            Redemption::Redeemed(r) => {
                tracing::info!(user = %user.user_id, code = hint(&code), amount = r.amount, balance = r.balance_after, "recharge code redeemed");
                Ok(r)
            }
            Redemption::Unknown => {
                tracing::info!(user = %user.user_id, code = hint(&code), "unknown recharge code");
                Err(DomainError::NotFound("no such recharge code".into()))
            }
            Redemption::Expired => Err(refused("has expired")),
            Redemption::Exhausted => Err(refused("has been used up")),
            Redemption::Disabled => Err(refused("has been disabled")),
            Redemption::AlreadyRedeemed => Err(refused("was already redeemed by this account")),
            Redemption::NoUser => Err(DomainError::Unauthorized("the account no longer exists".into())),
        }
    }

    /// The user's own redemptions, newest first.
    pub async fn records(&self, user: &Principal, page: PageRequest) -> DomainResult<Page<RedemptionRecord>> {
        Ok(self.inner.db.recharge_redemptions(&user.user_id, page).await?)
    }

    /// Drops rate-limit buckets that have refilled (memory stays bounded).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.inner.by_user.sweep(now);
        self.inner.by_address.sweep(now);
    }
}

#[derive(Debug, PartialEq)]
struct CheckedBatch {
    name: String,
    amount: i64,
    count: i64,
    max_uses: i64,
    expires_at: i64,
}

fn check_batch(r: &BatchRequest, now_ms: i64) -> DomainResult<CheckedBatch> {
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    let amount = match r.amount.as_deref().map(parse_amount) {
        None => {
            errors.push(("amount", "is required".into()));
            0
        }
        Some(Err(m)) => {
            errors.push(("amount", m.into()));
            0
        }
        Some(Ok(a)) => a,
    };
    let mut in_range = |field: &'static str, value: Option<i64>, max: i64| {
        let v = value.unwrap_or(1);
        if !(1..=max).contains(&v) {
            errors.push((field, format!("must be between 1 and {max}")));
        }
        v
    };
    let count = in_range("batch_size", r.count, MAX_BATCH);
    let max_uses = in_range("max_uses", r.max_uses, MAX_USES);
    let expires_at = match r.expires_at.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => {
            errors.push(("expires_at", "is required".into()));
            0
        }
        Some(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Err(_) => {
                errors.push(("expires_at", "must be an RFC 3339 time such as 2026-12-31T23:59:59Z".into()));
                0
            }
            Ok(t) if t.timestamp_millis() <= now_ms => {
                errors.push(("expires_at", "must be in the future".into()));
                0
            }
            Ok(t) => t.timestamp_millis(),
        },
    };
    let name = r.description.as_deref().unwrap_or("").trim().to_owned();
    if name.chars().count() > MAX_DESCRIPTION {
        errors.push(("description", format!("must be at most {MAX_DESCRIPTION} characters")));
    }
    if !errors.is_empty() {
        return Err(DomainError::Fields(errors));
    }
    Ok(CheckedBatch { name, amount, count, max_uses, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_format_and_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            let code = generate_code();
            assert_eq!(code.len(), 18, "{code}");
            assert_eq!(normalize_code(&code).as_deref(), Some(code.as_str()), "canonical already");
            seen.extend(code[4..].bytes().filter(|b| *b != b'-'));
        }
        // 24,000 draws from 31 symbols: each appears (missing one has probability ~1e-333).
        assert_eq!(seen.len(), ALPHABET.len());
        assert!(!seen.iter().any(|b| b"01OIL".contains(b)));
        assert_ne!(generate_code(), generate_code());
    }

    #[test]
    fn typed_codes_are_normalised() {
        let canonical = Some("OWL-ABCD-2345-EFGH".to_owned());
        for typed in ["OWL-ABCD-2345-EFGH", "  owl-abcd-2345-efgh\t", "OWLABCD2345EFGH", "abcd 2345 efgh", "ABCD-2345-EFGH"] {
            assert_eq!(normalize_code(typed), canonical, "{typed:?}");
        }
        for bad in ["", "OWL-ABCD-2345-EFG", "OWL-ABCD-2345-EFGHJ", "OWL-AB0D-2345-EFGH", "OWL-ABCD-2345-EFGI", "ÖWL-ABCD-2345-EFGH"] {
            assert_eq!(normalize_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn amounts_are_read_exactly() {
        for (text, hundredths) in [
            ("100", 10_000),
            ("100.0", 10_000),
            ("100.00", 10_000),
            ("0.01", 1),
            ("0.1", 10),
            ("100.5", 10_050),
            ("19.99", 1_999),
            ("1000000", MAX_AMOUNT),
            ("007.50", 750),
            ("2.500", 250),
        ] {
            assert_eq!(parse_amount(text), Ok(hundredths), "{text}");
        }
        assert_eq!(parse_amount("0"), Err("must be greater than 0"));
        assert_eq!(parse_amount("-5"), Err("must be greater than 0"));
        assert_eq!(parse_amount("1000000.01"), Err("must be at most 1000000"));
        assert_eq!(parse_amount("99999999999999999999999"), Err("must be at most 1000000"));
        for bad in ["0.001", "1e2", "abc", ".5", "1.2.3", "", "１００"] {
            assert!(parse_amount(bad).is_err(), "{bad}");
        }
        // JSON numbers reach the parser as serde_json prints them: the shortest text that reads
        // back as the same double, which for these is what the client wrote.
        for (n, hundredths) in [(0.1, 10), (19.99, 1_999), (100.0, 10_000), (0.29, 29)] {
            assert_eq!(parse_amount(&serde_json::json!(n).to_string()), Ok(hundredths), "{n}");
        }
    }

    #[test]
    fn batch_requests_report_every_problem() {
        let now = 1_800_000_000_000;
        let ok = BatchRequest { amount: Some("100.00".into()), expires_at: Some("2030-01-01T00:00:00Z".into()), ..Default::default() };
        let c = check_batch(&ok, now).unwrap();
        assert_eq!((c.amount, c.count, c.max_uses, c.name.as_str()), (10_000, 1, 1, ""));
        let bad = BatchRequest {
            amount: Some("1.234".into()),
            description: Some("x".repeat(201)),
            count: Some(1001),
            max_uses: Some(0),
            expires_at: Some("2020-01-01T00:00:00Z".into()),
        };
        let Err(DomainError::Fields(f)) = check_batch(&bad, now) else { panic!() };
        let fields: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(fields, ["amount", "batch_size", "max_uses", "expires_at", "description"]);
        let Err(DomainError::Fields(f)) = check_batch(&BatchRequest::default(), now) else { panic!() };
        assert_eq!(f, [("amount", "is required".to_owned()), ("expires_at", "is required".to_owned())]);
    }
}
