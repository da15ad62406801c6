//! The provider service: the admin's configuration (seed 003's `/api/v1/config/*`), which
//! provider serves each kind, and every outside call through the policy with the configured
//! fallback. Keys are opened only to build one call's [`Endpoint`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use purrify_store::{Db, ProviderChange, ProviderRow, StoreError};
use tokio::time::Instant;

use super::adapter::{Adapter, ApiKey, ChatMessage, Endpoint, Job, Protocol, Remote, Submitted, TokenStream};
use super::catalog::{self, BUILTIN_ID, Kind, Provider};
use super::keys::KeyBox;
use super::policy::{BreakerState, CallError, Policy, PolicySettings};
use crate::domain::{DomainError, DomainResult};

/// What the provider service needs from the configuration.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub policy: PolicySettings,
    /// How often a pending job is polled.
    pub poll_interval: Duration,
    /// Accept provider URLs on loopback and private networks (development and tests).
    pub allow_private: bool,
    /// `PURRIFY_PROVIDER_KEY`: seals API keys at rest. Without it no key can be stored.
    pub sealing_key: Option<String>,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        Self { policy: PolicySettings::default(), poll_interval: Duration::from_secs(3), allow_private: false, sealing_key: None }
    }
}

/// Which provider and model serve a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub provider: String,
    pub model: String,
}

/// The admin's choice per kind (seed 003's `/config/current`); `None`: not chosen.
pub type Selection = HashMap<Kind, Choice>;

/// A custom provider as an admin adds it (seed 003's `/config/providers/custom`).
#[derive(Debug, Clone)]
pub struct CustomProvider {
    pub kind: Kind,
    pub name: String,
    pub api_url: String,
    pub api_key: Option<ApiKey>,
    pub protocol: Protocol,
    pub models: Vec<String>,
    pub fallback: Option<String>,
    pub options: serde_json::Map<String, serde_json::Value>,
}

/// An admin's edit of one provider; `None` leaves a field.
#[derive(Debug, Clone, Default)]
pub struct ProviderUpdate {
    pub name: Option<String>,
    pub api_url: Option<String>,
    /// `Some(None)` removes the key.
    pub api_key: Option<Option<ApiKey>>,
    pub models: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)` clears it.
    pub fallback: Option<Option<String>>,
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A started chat: who answers and the tokens as they come.
pub struct ChatReply {
    pub provider: String,
    pub model: String,
    pub tokens: TokenStream,
}

/// A job a provider accepted: who took it (the first of the chain or a fallback), with which
/// model, and its first answer.
#[derive(Debug)]
pub struct Accepted {
    pub provider: Provider,
    pub model: String,
    pub submitted: Submitted,
}

/// Why no provider of a chain took a job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChainError {
    /// The request was refused (not the provider's fault): no fallback is tried.
    #[error("{0}")]
    Refused(String),
    /// Every provider of the chain is down or failed; the message is client-safe.
    #[error("{0}")]
    Unavailable(String),
}

fn setting_provider(kind: Kind) -> String {
    format!("provider_{}", kind.as_str())
}

fn setting_model(kind: Kind) -> String {
    format!("provider_model_{}", kind.as_str())
}

/// Longest fallback chain followed (the first provider and its fallbacks).
const MAX_CHAIN: usize = 4;

struct Inner {
    db: Db,
    keys: Option<KeyBox>,
    adapters: HashMap<Protocol, Arc<dyn Adapter>>,
    policy: Policy,
    settings: ProviderSettings,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct ProviderService {
    inner: Arc<Inner>,
}

impl ProviderService {
    /// Ensures the built-in providers exist and makes the adapters; every attempt is counted
    /// in `calls`.
    pub async fn start(db: Db, settings: ProviderSettings, calls: super::policy::CallCounter) -> anyhow::Result<Self> {
        let keys = settings.sealing_key.as_deref().map(KeyBox::from_config).transpose().map_err(anyhow::Error::msg)?;
        for row in catalog::builtins() {
            db.ensure_provider(&row).await?;
        }
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none()).build()?;
        let adapters = Protocol::ALL.into_iter().filter_map(|p| super::adapters::for_protocol(p, http.clone()).map(|a| (p, a))).collect();
        Ok(Self { inner: Arc::new(Inner { policy: Policy::with_counter(settings.policy, calls), db, keys, adapters, settings }) })
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.inner.settings
    }

    /// Every provider with its breaker's state.
    pub async fn list(&self) -> DomainResult<Vec<(Provider, BreakerState)>> {
        let rows = self.inner.db.providers().await?;
        rows.iter().map(|r| Provider::from_row(r).map(|p| (self.inner.policy.state(&p.id), p)).map(|(s, p)| (p, s))).collect()
    }

    /// The provider's breaker now.
    pub fn circuit(&self, id: &str) -> BreakerState {
        self.inner.policy.state(id)
    }

    pub async fn provider(&self, id: &str) -> DomainResult<Provider> {
        match self.inner.db.provider(id).await? {
            Some(row) => Provider::from_row(&row),
            None => Err(DomainError::NotFound(format!("no provider {id:?}"))),
        }
    }

    /// The provider and model chosen for each kind: the admin's choice, else the built-in
    /// for images, else the first usable provider of the kind.
    pub async fn current(&self) -> DomainResult<Selection> {
        let providers: Vec<Provider> = self.list().await?.into_iter().map(|(p, _)| p).collect();
        let mut out = Selection::new();
        for kind in Kind::ALL {
            let chosen = self.inner.db.get_setting(&setting_provider(kind)).await?;
            let model = self.inner.db.get_setting(&setting_model(kind)).await?;
            let provider = chosen
                .and_then(|id| providers.iter().find(|p| p.id == id && p.kind == kind))
                .or_else(|| providers.iter().find(|p| p.kind == kind && p.usable()));
            if let Some(p) = provider {
                out.insert(kind, Choice { provider: p.id.clone(), model: p.model_or_default(model.as_deref()) });
            }
        }
        Ok(out)
    }

    /// Sets the provider (and model) of some kinds, all or none.
    pub async fn select(&self, choices: &[(Kind, Choice)]) -> DomainResult<Selection> {
        let mut errors = Vec::new();
        for (kind, choice) in choices {
            let field: &'static str = match kind {
                Kind::Image => "imageProvider",
                Kind::Video => "videoProvider",
                Kind::Assistant => "assistantProvider",
                Kind::Workflow => "workflowProvider",
            };
            match self.inner.db.provider(&choice.provider).await? {
                None => errors.push((field, format!("no provider {:?}", choice.provider))),
                Some(row) => {
                    let p = Provider::from_row(&row)?;
                    if p.kind != *kind {
                        errors.push((field, format!("{} makes {}, not {}", p.id, p.kind.as_str(), kind.as_str())));
                    } else if !choice.model.is_empty() && !p.models.contains(&choice.model) {
                        errors.push((field, format!("{} has no model {:?}; it has {}", p.id, choice.model, p.models.join(", "))));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(DomainError::Fields(errors));
        }
        let mut values = Vec::new();
        for (kind, choice) in choices {
            values.push((setting_provider(*kind), choice.provider.clone()));
            values.push((setting_model(*kind), choice.model.clone()));
        }
        self.inner.db.save_settings(&values, None).await?;
        self.current().await
    }

    fn seal(&self, id: &str, key: &ApiKey) -> DomainResult<String> {
        match &self.inner.keys {
            Some(kb) => Ok(kb.seal(id, key)),
            None => {
                Err(DomainError::invalid("apiKey", "API keys cannot be stored: the server has no PURRIFY_PROVIDER_KEY to seal them with"))
            }
        }
    }

    /// Adds a custom provider; its id comes from its name.
    pub async fn add_custom(&self, c: CustomProvider) -> DomainResult<Provider> {
        let name = catalog::check_name(&c.name)?;
        let id = catalog::id_from_name(&name)?;
        if !c.kind.protocols().contains(&c.protocol) || c.protocol == Protocol::Purrify {
            let served: Vec<&str> = c.kind.protocols().iter().filter(|p| **p != Protocol::Purrify).map(|p| p.as_str()).collect();
            return Err(DomainError::invalid("config.protocol", format!("{} providers speak {}", c.kind.as_str(), served.join(" or "))));
        }
        let base_url = catalog::check_base_url(&c.api_url, self.inner.settings.allow_private)?;
        let models = catalog::check_models(&c.models)?;
        if let Some(f) = &c.fallback {
            self.check_fallback(&id, c.kind, f).await?;
        }
        let sealed = c.api_key.as_ref().map(|k| self.seal(&id, k)).transpose()?;
        let row = ProviderRow {
            id: id.clone(),
            kind: c.kind.as_str().into(),
            name,
            protocol: c.protocol.as_str().into(),
            base_url,
            models: serde_json::to_string(&models).map_err(|e| DomainError::Internal(e.to_string()))?,
            enabled: true,
            fallback: c.fallback,
            api_key_sealed: sealed,
            options: serde_json::Value::Object(c.options).to_string(),
            builtin: false,
            created_at: 0,
            updated_at: 0,
        };
        self.inner.db.insert_provider(&row).await.map_err(|e| match e {
            StoreError::Duplicate(_) => DomainError::Conflict(format!("a provider with the id {id:?} exists; choose another name")),
            other => other.into(),
        })?;
        tracing::info!(provider = %id, kind = c.kind.as_str(), protocol = c.protocol.as_str(), "custom provider added");
        self.provider(&id).await
    }

    async fn check_fallback(&self, id: &str, kind: Kind, fallback: &str) -> DomainResult<()> {
        if fallback == id {
            return Err(DomainError::invalid("fallback", "a provider cannot be its own fallback"));
        }
        match self.inner.db.provider(fallback).await? {
            Some(row) if row.kind == kind.as_str() => Ok(()),
            Some(_) => Err(DomainError::invalid("fallback", format!("{fallback} does not make {}", kind.as_str()))),
            None => Err(DomainError::invalid("fallback", format!("no provider {fallback:?}"))),
        }
    }

    /// Changes one provider (built-in or custom).
    pub async fn update(&self, id: &str, u: ProviderUpdate) -> DomainResult<Provider> {
        let current = self.provider(id).await?;
        let mut change = ProviderChange::default();
        if let Some(name) = &u.name {
            change.name = Some(catalog::check_name(name)?);
        }
        if let Some(url) = &u.api_url {
            if current.protocol == Protocol::Purrify {
                return Err(DomainError::invalid("apiUrl", "the built-in provider has no URL"));
            }
            change.base_url = Some(catalog::check_base_url(url, self.inner.settings.allow_private)?);
        }
        if let Some(models) = &u.models {
            change.models = Some(serde_json::to_string(&catalog::check_models(models)?).map_err(|e| DomainError::Internal(e.to_string()))?);
        }
        if let Some(Some(f)) = &u.fallback {
            self.check_fallback(id, current.kind, f).await?;
        }
        change.fallback = u.fallback;
        change.enabled = u.enabled;
        change.api_key_sealed = match u.api_key {
            None => None,
            Some(None) => Some(None),
            Some(Some(key)) => Some(Some(self.seal(id, &key)?)),
        };
        change.options = u.options.map(|o| serde_json::Value::Object(o).to_string());
        match self.inner.db.update_provider(id, &change).await? {
            Some(row) => {
                tracing::info!(provider = %id, "provider updated");
                Provider::from_row(&row)
            }
            None => Err(DomainError::NotFound(format!("no provider {id:?}"))),
        }
    }

    /// The providers to try for `kind`, in order: `first` (or the admin's choice) and its
    /// fallbacks, usable ones only, each once.
    pub async fn chain(&self, kind: Kind, first: Option<&str>) -> DomainResult<Vec<Provider>> {
        let start = match first {
            Some(id) => Some(id.to_string()),
            None => self.current().await?.get(&kind).map(|c| c.provider.clone()),
        };
        let mut out: Vec<Provider> = Vec::new();
        let mut next = start;
        while let Some(id) = next.take() {
            if out.len() >= MAX_CHAIN || out.iter().any(|p| p.id == id) {
                break;
            }
            let Some(row) = self.inner.db.provider(&id).await? else { break };
            let p = Provider::from_row(&row)?;
            if p.kind != kind {
                break;
            }
            next = p.fallback.clone();
            if p.usable() {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// One call's endpoint: the provider's URL and options, its key opened.
    pub fn endpoint(&self, p: &Provider, model: &str) -> DomainResult<Endpoint> {
        let api_key = match &p.sealed_key {
            None => None,
            Some(sealed) => {
                let kb = self.inner.keys.as_ref().ok_or_else(|| {
                    DomainError::Unavailable(format!("provider {} has a key but the server has no PURRIFY_PROVIDER_KEY to open it", p.id))
                })?;
                Some(kb.open(&p.id, &sealed.0).ok_or_else(|| {
                    DomainError::Unavailable(format!("the key of provider {} does not open with PURRIFY_PROVIDER_KEY; set it again", p.id))
                })?)
            }
        };
        Ok(Endpoint {
            provider: p.id.clone(),
            base_url: p.base_url.clone(),
            api_key,
            model: model.to_string(),
            options: p.options.clone(),
            timeout: self.inner.policy.settings().call_timeout,
        })
    }

    fn adapter(&self, p: &Provider) -> Option<Arc<dyn Adapter>> {
        self.inner.adapters.get(&p.protocol).cloned()
    }

    /// Starts a chat answer on the assistant provider, falling back while nothing has
    /// streamed yet.
    pub async fn chat(&self, messages: Vec<ChatMessage>) -> DomainResult<ChatReply> {
        let selection = self.current().await?;
        let model = selection.get(&Kind::Assistant).map(|c| c.model.clone());
        let chain = self.chain(Kind::Assistant, None).await?;
        if chain.is_empty() {
            return Err(DomainError::Unavailable("no assistant provider is configured".into()));
        }
        let deadline = Instant::now() + self.inner.policy.settings().call_timeout;
        let mut last = String::from("the assistant is unavailable");
        for (i, p) in chain.iter().enumerate() {
            let Some(adapter) = self.adapter(p) else { continue };
            let model = if i == 0 { p.model_or_default(model.as_deref()) } else { p.model_or_default(None) };
            let ep = self.endpoint(p, &model)?;
            match self.inner.policy.call(&p.id, deadline, || adapter.chat(&ep, &messages)).await {
                Ok(tokens) => {
                    if i > 0 {
                        tracing::warn!(provider = %p.id, first = %chain[0].id, "assistant served by the fallback");
                    }
                    return Ok(ChatReply { provider: p.id.clone(), model, tokens });
                }
                Err(e) if e.allows_fallback() => {
                    tracing::warn!(provider = %p.id, error = %e, "assistant provider failed; trying the fallback");
                    last = e.to_string();
                }
                Err(CallError::Failed(e)) => return Err(DomainError::invalid("message", e.to_string())),
                Err(e) => return Err(DomainError::Unavailable(e.to_string())),
            }
        }
        Err(DomainError::Unavailable(format!("the assistant is unavailable: {last}")))
    }

    /// Hands `job` to the first provider of `chain` that takes it; the next one when a
    /// provider is down (its breaker open, or faults until its retries ran out).
    pub async fn submit(&self, chain: &[Provider], model: &str, job: &Job, deadline: Instant) -> Result<Accepted, ChainError> {
        let mut last = String::from("no provider is configured for this");
        for (i, p) in chain.iter().enumerate() {
            let Some(adapter) = self.adapter(p) else { continue };
            let model = if i == 0 { p.model_or_default(Some(model)) } else { p.model_or_default(None) };
            let ep = self.endpoint(p, &model).map_err(|e| ChainError::Unavailable(e.to_string()))?;
            match self.inner.policy.call(&p.id, deadline, || adapter.submit(&ep, job)).await {
                Ok(submitted) => {
                    if i > 0 {
                        tracing::warn!(provider = %p.id, first = %chain[0].id, "job taken by the fallback provider");
                    }
                    return Ok(Accepted { provider: p.clone(), model, submitted });
                }
                Err(e) if e.allows_fallback() => {
                    tracing::warn!(provider = %p.id, error = %e, "provider failed; trying the fallback");
                    last = format!("{}: {e}", p.name);
                }
                Err(e) => return Err(ChainError::Refused(e.to_string())),
            }
        }
        Err(ChainError::Unavailable(format!("every provider failed; last: {last}")))
    }

    /// A pending job's state at `provider`, through the policy.
    pub async fn poll(&self, provider: &Provider, model: &str, remote_id: &str, deadline: Instant) -> Result<Remote, CallError> {
        let adapter =
            self.adapter(provider).ok_or_else(|| CallError::Failed(super::adapter::ProviderError::Unsupported("no adapter".into())))?;
        let ep = self
            .endpoint(provider, model)
            .map_err(|e| CallError::Failed(super::adapter::ProviderError::Auth { status: 0, message: e.to_string() }))?;
        self.inner.policy.call(&provider.id, deadline, || adapter.poll(&ep, remote_id)).await
    }

    /// Whether `provider`'s pending jobs are polled (not finished by callback).
    pub fn polls(&self, provider: &Provider) -> bool {
        self.adapter(provider).is_some_and(|a| a.polls())
    }

    /// Asks the provider to stop a pending job; failures are logged, never raised (the task
    /// is cancelled on our side either way).
    pub async fn cancel(&self, provider: &Provider, model: &str, remote_id: &str) {
        let Some(adapter) = self.adapter(provider) else { return };
        let Ok(ep) = self.endpoint(provider, model) else { return };
        if let Err(e) = tokio::time::timeout(self.inner.policy.settings().call_timeout, adapter.cancel(&ep, remote_id))
            .await
            .unwrap_or(Err(super::adapter::ProviderError::Transient { status: None, retry_after: None, message: "timed out".into() }))
        {
            tracing::warn!(provider = %provider.id, error = %e, "cannot cancel the provider's job");
        }
    }

    /// Seconds a new task of `kind` on this provider and model is expected to take: the
    /// median of the last completed ones, else `default`.
    pub async fn estimate_seconds(&self, task_kind: &str, provider: &str, model: &str, default: u64) -> DomainResult<u64> {
        let mut ms = self.inner.db.provider_durations(provider, model, task_kind, 20).await?;
        if ms.is_empty() {
            return Ok(default);
        }
        ms.sort_unstable();
        let median = ms[ms.len() / 2].max(0) as u64;
        Ok(median.div_ceil(1000).max(1))
    }

    /// Whether `id` is the built-in provider (its tasks run on the engine).
    pub fn is_builtin(id: &str) -> bool {
        id == BUILTIN_ID
    }
}
