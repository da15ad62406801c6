//! Field checks of account input. Every field is checked and every problem reported at once,
//! as seed 002's `field_errors` shows (`{"email": [...], "password": [...]}`).

use crate::domain::DomainError;

pub const MAX_EMAIL_LEN: usize = 254;
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
pub const MAX_FULL_NAME_CHARS: usize = 64;
pub const MAX_AVATAR_URL_LEN: usize = 512;

/// Collects problems per field.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<(&'static str, String)>);

impl FieldErrors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }

    pub fn into_result(self) -> Result<(), DomainError> {
        if self.0.is_empty() { Ok(()) } else { Err(DomainError::Fields(self.0)) }
    }
}

/// The case-folded email, or why it is not one.
pub fn email(raw: &str) -> Result<String, String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() {
        return Err("is required".into());
    }
    if e.len() > MAX_EMAIL_LEN {
        return Err(format!("must be at most {MAX_EMAIL_LEN} characters"));
    }
    let Some((local, domain)) = e.split_once('@') else { return Err("is not a valid email address".into()) };
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    let local_ok = !local.is_empty() && local.len() <= 64 && !local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@');
    if !domain_ok || !local_ok {
        return Err("is not a valid email address".into());
    }
    Ok(e)
}

/// The trimmed username, or why it is not acceptable: 3-32 letters, digits, `_`, `-`, `.`
/// (letters of any script: mini-program users write Chinese names).
pub fn username(raw: &str) -> Result<String, String> {
    let u = raw.trim();
    let n = u.chars().count();
    if !USERNAME_CHARS.contains(&n) {
        return Err(format!("must be {} to {} characters", USERNAME_CHARS.start(), USERNAME_CHARS.end()));
    }
    if !u.chars().all(|c| c.is_alphanumeric() || "_-.".contains(c)) {
        return Err("may contain only letters, digits, '_', '-' and '.'".into());
    }
    if u.contains('@') {
        return Err("must not look like an email address".into());
    }
    Ok(u.to_owned())
}

pub fn full_name(raw: &str) -> Result<String, String> {
    let n = raw.trim();
    if n.chars().count() > MAX_FULL_NAME_CHARS {
        return Err(format!("must be at most {MAX_FULL_NAME_CHARS} characters"));
    }
    if n.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(n.to_owned())
}

pub fn avatar_url(raw: &str) -> Result<String, String> {
    let u = raw.trim();
    if u.len() > MAX_AVATAR_URL_LEN {
        return Err(format!("must be at most {MAX_AVATAR_URL_LEN} characters"));
    }
    match url::Url::parse(u) {
        Ok(p) if p.scheme() == "https" || p.scheme() == "http" => Ok(u.to_owned()),
        _ => Err("must be an http(s) URL".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_folded_and_checked() {
        assert_eq!(email("  Alice@Example.COM ").unwrap(), "alice@example.com");
        for bad in ["", "alice", "alice@", "@example.com", "alice@example", "a b@example.com", "alice@exa..mple.com", "alice@.example.com"]
        {
            assert!(email(bad).is_err(), "{bad:?}");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn usernames_are_checked() {
        assert_eq!(username(" 喵喵_01 ").unwrap(), "喵喵_01");
        for bad in ["ab", "a b c", "x@y.z", "<script>", &"a".repeat(33)] {
            assert!(username(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn profile_fields_are_checked() {
        assert!(full_name("新用户").is_ok());
        assert!(full_name("a\u{0}b").is_err());
        assert!(avatar_url("https://cdn.example.com/a.png").is_ok());
        assert!(avatar_url("javascript:alert(1)").is_err());
    }
}
