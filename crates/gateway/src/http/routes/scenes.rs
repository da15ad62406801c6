//! Seed 001's scenes: `GET /api/scenes` (active ones, in their order), `GET /api/scenes/{id}`,
//! and for admins `POST /api/scenes`, `PUT /api/scenes/{id}`, `DELETE /api/scenes/{id}`. A
//! scene is a named preset of task parameters with a price and a cover image.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use purrify_api::{EnhanceParams, OutputFormat, QualityLevel};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::tasks::Scene;
use crate::domain::tasks::scenes::SceneInput;
use crate::http::auth::{AdminUser, MaybeUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::views::{decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}

/// Enhancement parameters as 001/002 clients send them; missing ones take the defaults.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ParamsBody {
    /// high | medium | fast
    pub quality_level: Option<String>,
    /// 2 or 4
    pub scale: Option<u32>,
    pub face_enhance: Option<bool>,
    /// 32..1024 (0: the default 400)
    pub tile_size: Option<u32>,
}

impl ParamsBody {
    pub fn is_empty(&self) -> bool {
        self.quality_level.is_none() && self.scale.is_none() && self.face_enhance.is_none() && self.tile_size.is_none()
    }

    /// The parameters over `base` (a scene's, or the defaults), checked.
    pub fn apply(&self, base: EnhanceParams) -> ApiResult<EnhanceParams> {
        let mut p = base;
        if let Some(q) = &self.quality_level {
            p.quality_level = q.parse::<QualityLevel>().map_err(|e| ApiError::field("quality_level", e))?;
        }
        if let Some(s) = self.scale {
            p.scale = s;
        }
        if let Some(f) = self.face_enhance {
            p.face_enhance = f;
        }
        if let Some(t) = self.tile_size {
            p.tile_size = t;
        }
        p.output_format = OutputFormat::Jpeg;
        p.validate().map_err(|m| ApiError::field(if m.starts_with("scale") { "scale" } else { "tile_size" }, m))?;
        Ok(p)
    }
}

/// A scene as clients see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SceneView {
    pub id: String,
    pub scene_id: String,
    pub name: String,
    pub description: String,
    pub cover_url: Option<String>,
    pub task_type: String,
    /// quality_level, scale, face_enhance, tile_size.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Credits per task: the scene's own price, else the task kind's.
    pub price: f64,
    /// Whether the price is the scene's own (false: the kind's).
    pub own_price: bool,
    pub sort_order: i64,
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
}

async fn view(state: &AppState, s: &Scene) -> ApiResult<SceneView> {
    let price = match s.price {
        Some(p) => p,
        None => state.credits.price(&s.kind).await?,
    };
    Ok(SceneView {
        id: s.id.clone(),
        scene_id: s.id.clone(),
        name: s.name.clone(),
        description: s.description.clone(),
        cover_url: s.cover_url.clone(),
        task_type: s.kind.clone(),
        params: serde_json::json!({
            "quality_level": s.params.quality_level.as_str(),
            "scale": s.params.scale,
            "face_enhance": s.params.face_enhance,
            "tile_size": s.params.tile_size,
        }),
        price: decimal(price),
        own_price: s.price.is_some(),
        sort_order: s.sort_order,
        is_active: s.active,
        created_at: iso(s.created_at),
        updated_at: iso(s.updated_at),
    })
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct ListQuery {
    /// Admins only: include inactive scenes.
    pub include_inactive: Option<bool>,
}

#[utoipa::path(get, path = "/api/scenes", tag = "scenes", params(ListQuery), security((), ("bearer" = [])),
    responses((status = 200, description = "Active scenes in their order (all for admins asking include_inactive)", body = Envelope<Vec<SceneView>>)))]
pub async fn list(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Envelope<Vec<SceneView>>> {
    let all = q.include_inactive == Some(true) && viewer.as_ref().is_some_and(|v| v.is_admin());
    let mut out = Vec::new();
    for s in state.tasks.scenes(all).await? {
        out.push(view(&state, &s).await?);
    }
    Ok(Envelope::ok("ok", out))
}

#[utoipa::path(get, path = "/api/scenes/{scene_id}", tag = "scenes", params(("scene_id" = String, Path)), security((), ("bearer" = [])),
    responses((status = 200, body = Envelope<SceneView>), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    MaybeUser(viewer): MaybeUser,
    Path(scene_id): Path<String>,
) -> ApiResult<Envelope<SceneView>> {
    let admin = viewer.as_ref().is_some_and(|v| v.is_admin());
    let s = state.tasks.scene(&scene_id, admin).await?;
    Ok(Envelope::ok("ok", view(&state, &s).await?))
}

/// A scene as an admin writes it (PUT replaces every field).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct SceneBody {
    pub name: String,
    pub description: Option<String>,
    #[serde(alias = "cover_image")]
    pub cover_url: Option<String>,
    /// enhance
    pub task_type: Option<String>,
    pub params: ParamsBody,
    /// Credits per task (e.g. 1.50); absent or null: the task kind's price.
    #[schema(value_type = Option<f64>)]
    pub price: Option<Value>,
    pub sort_order: Option<i64>,
    #[serde(alias = "active")]
    pub is_active: Option<bool>,
}

impl SceneBody {
    fn input(self) -> ApiResult<SceneInput> {
        let price = match self.price {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err(ApiError::field("price", "must be a number of credits like 1.50")),
        };
        Ok(SceneInput {
            name: self.name,
            description: self.description,
            cover_url: self.cover_url,
            kind: self.task_type,
            params: self.params.apply(EnhanceParams::default())?,
            price,
            sort_order: self.sort_order,
            active: self.is_active,
        })
    }
}

#[utoipa::path(post, path = "/api/scenes", tag = "scenes", request_body = SceneBody, security(("bearer" = [])),
    responses((status = 201, body = Envelope<SceneView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<SceneBody>,
) -> ApiResult<(StatusCode, Envelope<SceneView>)> {
    let s = state.tasks.create_scene(body.input()?).await?;
    tracing::info!(admin = %admin.user_id, scene = %s.id, "scene created");
    Ok((StatusCode::CREATED, Envelope::ok("scene created", view(&state, &s).await?)))
}

#[utoipa::path(put, path = "/api/scenes/{scene_id}", tag = "scenes", request_body = SceneBody, params(("scene_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<SceneView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(scene_id): Path<String>,
    ApiJson(body): ApiJson<SceneBody>,
) -> ApiResult<Envelope<SceneView>> {
    let s = state.tasks.update_scene(&scene_id, body.input()?).await?;
    tracing::info!(admin = %admin.user_id, scene = %s.id, "scene updated");
    Ok(Envelope::ok("scene updated", view(&state, &s).await?))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SceneDeleted {
    pub id: String,
    pub deleted: bool,
}

#[utoipa::path(delete, path = "/api/scenes/{scene_id}", tag = "scenes", params(("scene_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<SceneDeleted>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(scene_id): Path<String>,
) -> ApiResult<Envelope<SceneDeleted>> {
    state.tasks.delete_scene(&scene_id).await?;
    tracing::info!(admin = %admin.user_id, scene = %scene_id, "scene deleted");
    Ok(Envelope::ok("scene deleted", SceneDeleted { id: scene_id, deleted: true }))
}
