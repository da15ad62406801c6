//! What a provider is in the domain's terms (a parsed `providers` row), the built-in ones,
//! and the checks on what admins configure.

use purrify_store::ProviderRow;

use super::adapter::Protocol;
use crate::domain::{DomainError, DomainResult};

/// What a provider makes (seed 003's `type`, plus seed 001's workflows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Image,
    Video,
    Assistant,
    Workflow,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Self::Image, Self::Video, Self::Assistant, Self::Workflow];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Assistant => "assistant",
            Self::Workflow => "workflow",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Which protocols can serve this kind.
    pub fn protocols(self) -> &'static [Protocol] {
        match self {
            Self::Image => &[Protocol::Purrify, Protocol::Openai, Protocol::Stability],
            Self::Video => &[Protocol::Openai, Protocol::Runway],
            Self::Assistant => &[Protocol::Openai],
            Self::Workflow => &[Protocol::Webhook],
        }
    }
}

/// The built-in provider served by the enhancement engine.
pub const BUILTIN_ID: &str = "purrify";

/// An API key as stored: sealed by the key box. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey(pub String);

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedKey(<redacted>)")
    }
}

/// A configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub id: String,
    pub kind: Kind,
    pub name: String,
    pub protocol: Protocol,
    pub base_url: String,
    /// The first is the default.
    pub models: Vec<String>,
    pub enabled: bool,
    pub fallback: Option<String>,
    /// The stored API key, sealed (opened only to build one call's endpoint).
    pub sealed_key: Option<SealedKey>,
    pub options: serde_json::Map<String, serde_json::Value>,
    pub builtin: bool,
}

impl Provider {
    pub fn from_row(row: &ProviderRow) -> DomainResult<Self> {
        let corrupt = |what: &str| DomainError::Internal(format!("provider {}: bad {what}", row.id));
        Ok(Self {
            id: row.id.clone(),
            kind: Kind::parse(&row.kind).ok_or_else(|| corrupt("kind"))?,
            name: row.name.clone(),
            protocol: Protocol::parse(&row.protocol).ok_or_else(|| corrupt("protocol"))?,
            base_url: row.base_url.clone(),
            models: serde_json::from_str(&row.models).map_err(|_| corrupt("models"))?,
            enabled: row.enabled,
            fallback: row.fallback.clone(),
            sealed_key: row.api_key_sealed.clone().map(SealedKey),
            options: serde_json::from_str(&row.options).map_err(|_| corrupt("options"))?,
            builtin: row.builtin,
        })
    }

    /// Whether an API key is stored.
    pub fn has_key(&self) -> bool {
        self.sealed_key.is_some()
    }

    /// Whether calls can go to it now: enabled, and with a key when its protocol needs one.
    pub fn usable(&self) -> bool {
        self.enabled && (self.has_key() || self.protocol == Protocol::Purrify)
    }

    /// `model` when this provider serves it, else its default.
    pub fn model_or_default(&self, model: Option<&str>) -> String {
        match model {
            Some(m) if self.models.iter().any(|x| x == m) => m.to_string(),
            _ => self.models.first().cloned().unwrap_or_default(),
        }
    }
}

/// The providers every installation starts with (seed 003's list, where our protocols
/// speak the vendor's API). They need an API key (`PUT /api/v1/config/providers/{id}`)
/// before they are usable; `purrify` needs none.
pub fn builtins() -> Vec<ProviderRow> {
    let row = |id: &str, kind: Kind, name: &str, protocol: Protocol, base_url: &str, models: &[&str]| ProviderRow {
        id: id.into(),
        kind: kind.as_str().into(),
        name: name.into(),
        protocol: protocol.as_str().into(),
        base_url: base_url.into(),
        models: serde_json::to_string(models).expect("a list of strings serializes"),
        enabled: true,
        fallback: None,
        api_key_sealed: None,
        options: "{}".into(),
        builtin: true,
        created_at: 0,
        updated_at: 0,
    };
    vec![
        // Its models are the engine's quality levels (fast: seconds per photo on a CPU).
        row(BUILTIN_ID, Kind::Image, "Purrify (built-in restoration and upscaling)", Protocol::Purrify, "", &["fast", "medium", "high"]),
        row(
            "stability",
            Kind::Image,
            "Stability AI",
            Protocol::Stability,
            "https://api.stability.ai",
            &["stable-image-core", "sd3.5-large"],
        ),
        row("dalle", Kind::Image, "DALL-E", Protocol::Openai, "https://api.openai.com/v1", &["dall-e-3", "gpt-image-1"]),
        row("sora", Kind::Video, "SORA (OpenAI)", Protocol::Openai, "https://api.openai.com/v1", &["sora-2"]),
        row("runway", Kind::Video, "Runway ML", Protocol::Runway, "https://api.dev.runwayml.com", &["gen4.5", "gen4_turbo", "veo3.1"]),
        row("openai", Kind::Assistant, "OpenAI", Protocol::Openai, "https://api.openai.com/v1", &["gpt-4o-mini", "gpt-4o"]),
    ]
}

/// Longest id, name, URL and model name accepted.
const MAX_ID: usize = 40;
const MAX_NAME: usize = 100;
const MAX_MODELS: usize = 50;

/// A provider id from its name: lowercase letters, digits and dashes.
pub fn id_from_name(name: &str) -> DomainResult<String> {
    let mut id = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.ends_with('-') && !id.is_empty() {
            id.push('-');
        }
    }
    let id: String = id.trim_end_matches('-').chars().take(MAX_ID).collect();
    if id.is_empty() {
        return Err(DomainError::invalid("name", "must contain a letter or digit (it makes the provider's id)"));
    }
    Ok(id)
}

pub fn check_name(name: &str) -> DomainResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(DomainError::invalid("name", format!("must be 1 to {MAX_NAME} characters")));
    }
    Ok(name.to_string())
}

/// A provider's base URL: the outbound URL rules ([`crate::domain::outbound::check_url`];
/// `allow_private` lets loopback through, nothing else), no query or fragment. Returned
/// without a trailing slash.
pub fn check_base_url(url: &str, allow_private: bool) -> DomainResult<String> {
    let field = "apiUrl";
    let parsed = crate::domain::outbound::check_url(url, field, allow_private, "providers")?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(DomainError::invalid(field, "must not have a query or fragment"));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_string())
}

pub fn check_models(models: &[String]) -> DomainResult<Vec<String>> {
    let models: Vec<String> = models.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
    if models.is_empty() || models.len() > MAX_MODELS || models.iter().any(|m| m.len() > MAX_NAME) {
        return Err(DomainError::invalid("models", format!("must list 1 to {MAX_MODELS} model names of at most {MAX_NAME} characters")));
    }
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_names() {
        assert_eq!(id_from_name("  DeepSeek Chat (v3) ").unwrap(), "deepseek-chat-v3");
        assert!(id_from_name("   ").is_err());
        assert_eq!(id_from_name(&"x".repeat(100)).unwrap().len(), MAX_ID);
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(check_base_url("https://api.example.com/v1/", false).unwrap(), "https://api.example.com/v1");
        assert!(check_base_url("ftp://x", false).is_err());
        assert!(check_base_url("https://u:p@x.com", false).is_err());
        assert!(check_base_url("http://169.254.169.254/latest", true).is_err(), "metadata is never a provider");
        assert!(check_base_url("http://127.0.0.1:9/v1", false).is_err());
        assert!(check_base_url("http://127.0.0.1:9/v1", true).is_ok());
    }

    #[test]
    fn builtins_parse_and_only_purrify_works_without_a_key() {
        for row in builtins() {
            let p = Provider::from_row(&row).unwrap();
            assert!(p.kind.protocols().contains(&p.protocol), "{}", p.id);
            assert_eq!(p.usable(), p.id == BUILTIN_ID, "{}", p.id);
        }
    }
}
