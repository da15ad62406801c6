//! Seed 003's provider settings (`/api/v1/config/providers`, `/config/current`,
//! `/config/providers/custom`), admin-only, plus `PUT /api/v1/config/providers/{id}` for
//! what the seed leaves out: giving a built-in provider its API key, a fallback, or turning
//! it off. API keys are write-only: a provider says only whether it has one (`hasKey`).

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::providers::adapter::ApiKey;
use crate::domain::providers::{BreakerState, Choice, CustomProvider, Kind, Protocol, Provider, ProviderUpdate, Selection};
use crate::http::auth::AdminUser;
use crate::http::envelope::{V1, V1Error};
use crate::http::error::{ApiError, ApiResult};
use crate::http::extract::ApiJson;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, select)).routes(routes!(current)).routes(routes!(add_custom)).routes(routes!(update))
}

/// One provider (seed 003's fields, plus what an admin needs to see).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct V1Provider {
    pub id: String,
    pub name: String,
    /// Enabled, and with a key when its protocol needs one.
    pub enabled: bool,
    pub models: Vec<String>,
    /// openai, stability, runway, webhook or purrify.
    pub protocol: &'static str,
    pub api_url: String,
    pub has_key: bool,
    pub fallback: Option<String>,
    pub builtin: bool,
    /// The circuit breaker: closed, open or half_open.
    pub circuit: &'static str,
}

impl V1Provider {
    fn of(p: &Provider, circuit: BreakerState) -> Self {
        Self {
            id: p.id.clone(),
            name: p.name.clone(),
            enabled: p.usable(),
            models: p.models.clone(),
            protocol: p.protocol.as_str(),
            api_url: p.base_url.clone(),
            has_key: p.has_key(),
            fallback: p.fallback.clone(),
            builtin: p.builtin,
            circuit: circuit.as_str(),
        }
    }
}

/// Providers by kind.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ProviderLists {
    pub image: Vec<V1Provider>,
    pub video: Vec<V1Provider>,
    pub assistant: Vec<V1Provider>,
    pub workflow: Vec<V1Provider>,
}

#[utoipa::path(get, path = "/api/v1/config/providers", tag = "generation", security(("bearer" = [])),
    responses((status = 200, body = V1<ProviderLists>), (status = 401, body = V1Error), (status = 403, body = V1Error)))]
pub async fn list(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<V1<ProviderLists>> {
    let mut out = ProviderLists::default();
    for (p, circuit) in state.providers.list().await? {
        let v = V1Provider::of(&p, circuit);
        match p.kind {
            Kind::Image => out.image.push(v),
            Kind::Video => out.video.push(v),
            Kind::Assistant => out.assistant.push(v),
            Kind::Workflow => out.workflow.push(v),
        }
    }
    Ok(V1::ok(out))
}

/// The chosen provider and model per kind (seed 003's fields; null when none is usable).
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentConfig {
    pub image_provider: Option<String>,
    pub image_model: Option<String>,
    pub video_provider: Option<String>,
    pub video_model: Option<String>,
    pub assistant_provider: Option<String>,
    pub assistant_model: Option<String>,
    pub workflow_provider: Option<String>,
    pub workflow_model: Option<String>,
}

impl From<&Selection> for CurrentConfig {
    fn from(s: &Selection) -> Self {
        let p = |k: Kind| s.get(&k).map(|c| c.provider.clone());
        let m = |k: Kind| s.get(&k).map(|c| c.model.clone());
        Self {
            image_provider: p(Kind::Image),
            image_model: m(Kind::Image),
            video_provider: p(Kind::Video),
            video_model: m(Kind::Video),
            assistant_provider: p(Kind::Assistant),
            assistant_model: m(Kind::Assistant),
            workflow_provider: p(Kind::Workflow),
            workflow_model: m(Kind::Workflow),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/config/current", tag = "generation", security(("bearer" = [])),
    responses((status = 200, body = V1<CurrentConfig>), (status = 401, body = V1Error), (status = 403, body = V1Error)))]
pub async fn current(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<V1<CurrentConfig>> {
    Ok(V1::ok(CurrentConfig::from(&state.providers.current().await?)))
}

#[utoipa::path(put, path = "/api/v1/config/providers", tag = "generation", security(("bearer" = [])), request_body = CurrentConfig,
    responses((status = 200, body = V1<CurrentConfig>), (status = 400, description = "An unknown provider or model, or one of another kind", body = V1Error),
              (status = 401, body = V1Error), (status = 403, body = V1Error)))]
pub async fn select(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiJson(body): ApiJson<CurrentConfig>,
) -> ApiResult<V1<CurrentConfig>> {
    let mut choices = Vec::new();
    for (kind, provider, model) in [
        (Kind::Image, body.image_provider, body.image_model),
        (Kind::Video, body.video_provider, body.video_model),
        (Kind::Assistant, body.assistant_provider, body.assistant_model),
        (Kind::Workflow, body.workflow_provider, body.workflow_model),
    ] {
        match (provider, model) {
            (Some(provider), model) => choices.push((kind, Choice { provider, model: model.unwrap_or_default() })),
            (None, Some(_)) => {
                return Err(ApiError::field("model", format!("name the {} provider along with its model", kind.as_str())));
            }
            (None, None) => {}
        }
    }
    if choices.is_empty() {
        return Err(ApiError::field("imageProvider", "name at least one provider to use"));
    }
    Ok(V1::ok(CurrentConfig::from(&state.providers.select(&choices).await?)))
}

/// A custom provider (seed 003's body). `config` carries `protocol` (openai, stability,
/// runway, webhook; default openai, or webhook for workflows), `models` (the first is the
/// default), `fallback` and protocol options.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewCustom {
    /// image, video, assistant or workflow.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub api_url: String,
    /// Write-only; sealed at rest.
    pub api_key: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Map<String, serde_json::Value>,
}

fn parse_kind(kind: &str) -> ApiResult<Kind> {
    Kind::parse(kind).ok_or_else(|| ApiError::field("type", "must be image, video, assistant or workflow"))
}

fn string_list(v: &serde_json::Value, field: &str) -> ApiResult<Vec<String>> {
    v.as_array()
        .and_then(|a| a.iter().map(|m| m.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| ApiError::field(field, "must be a list of names"))
}

#[utoipa::path(post, path = "/api/v1/config/providers/custom", tag = "generation", security(("bearer" = [])), request_body = NewCustom,
    responses((status = 201, body = V1<V1Provider>), (status = 400, body = V1Error), (status = 401, body = V1Error),
              (status = 403, body = V1Error), (status = 409, description = "A provider with that id exists", body = V1Error)))]
pub async fn add_custom(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiJson(body): ApiJson<NewCustom>,
) -> ApiResult<V1<V1Provider>> {
    let kind = parse_kind(&body.kind)?;
    let mut options = body.config;
    let default_protocol = if kind == Kind::Workflow { "webhook" } else { "openai" };
    let protocol = match options.remove("protocol") {
        None => default_protocol.to_string(),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(ApiError::field("config.protocol", "must be a string")),
    };
    let protocol =
        Protocol::parse(&protocol).ok_or_else(|| ApiError::field("config.protocol", "must be openai, stability, runway or webhook"))?;
    let models = match options.remove("models") {
        Some(v) => string_list(&v, "config.models")?,
        None => match options.remove("model") {
            Some(serde_json::Value::String(m)) => vec![m],
            _ => return Err(ApiError::field("config.models", "list the provider's models (the first is the default)")),
        },
    };
    let fallback = match options.remove("fallback") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::field("config.fallback", "must be a provider id")),
    };
    let custom = CustomProvider {
        kind,
        name: body.name,
        api_url: body.api_url,
        api_key: body.api_key.filter(|k| !k.is_empty()).map(ApiKey::new),
        protocol,
        models,
        fallback,
        options,
    };
    let p = state.providers.add_custom(custom).await?;
    Ok(V1::created(V1Provider::of(&p, BreakerState::Closed)))
}

/// An edit of one provider; absent fields stay. `apiKey: ""` removes the key, `fallback:
/// ""` clears it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderEdit {
    pub name: Option<String>,
    pub api_url: Option<String>,
    pub api_key: Option<String>,
    pub models: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub fallback: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

#[utoipa::path(put, path = "/api/v1/config/providers/{id}", tag = "generation", security(("bearer" = [])), request_body = ProviderEdit,
    params(("id" = String, Path)),
    responses((status = 200, body = V1<V1Provider>), (status = 400, body = V1Error), (status = 401, body = V1Error),
              (status = 403, body = V1Error), (status = 404, body = V1Error)))]
pub async fn update(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProviderEdit>,
) -> ApiResult<V1<V1Provider>> {
    let edit = ProviderUpdate {
        name: body.name,
        api_url: body.api_url,
        api_key: body.api_key.map(|k| if k.is_empty() { None } else { Some(ApiKey::new(k)) }),
        models: body.models,
        enabled: body.enabled,
        fallback: body.fallback.map(|f| if f.is_empty() { None } else { Some(f) }),
        options: body.config,
    };
    let p = state.providers.update(&id, edit).await?;
    let circuit = state.providers.circuit(&p.id);
    Ok(V1::ok(V1Provider::of(&p, circuit)))
}
