//! Seed 002's logs (`/api/logs/*`): the gateway's own events and what users did (admins),
//! one task's timeline (its owner or an admin), and a day's file of either (admins).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::audit::actions;
use crate::domain::logs::{
    LogKind, PageRequest, SystemLog, SystemLogFilter, TaskEvent, UserAction, UserActionFilter, parse_date, parse_level,
};
use crate::http::auth::{AdminUser, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::views::{PageView, iso, status_word};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(system)).routes(routes!(user_actions)).routes(routes!(task)).routes(routes!(download))
}

fn json_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// `start_date` and `end_date` (days or RFC 3339 times) as `[from, until)`.
fn date_range(start: Option<&str>, end: Option<&str>) -> ApiResult<(Option<i64>, Option<i64>)> {
    let start = start.filter(|s| !s.trim().is_empty()).map(|s| parse_date("start_date", s, false)).transpose()?;
    let end = end.filter(|s| !s.trim().is_empty()).map(|s| parse_date("end_date", s, true)).transpose()?;
    Ok((start, end))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct SystemQuery {
    pub page: Option<u32>,
    /// At most 100 (default 20).
    pub page_size: Option<u32>,
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL.
    pub level: Option<String>,
    /// A day (2024-01-01, from its start) or an RFC 3339 time.
    pub start_date: Option<String>,
    /// A day (2024-01-31, to its end) or an RFC 3339 time.
    pub end_date: Option<String>,
    /// Case-insensitive text in the message, the module or the fields.
    pub search: Option<String>,
}

/// One event of the gateway's log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SystemLogView {
    pub id: String,
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL.
    pub level: String,
    /// The module that logged it.
    pub module: String,
    pub message: String,
    /// The event's structured fields; secrets never appear.
    #[schema(value_type = Object)]
    pub fields: Value,
    pub request_id: Option<String>,
    pub created_at: String,
}

impl From<SystemLog> for SystemLogView {
    fn from(l: SystemLog) -> Self {
        Self {
            fields: json_object(&l.fields),
            id: l.id,
            level: l.level,
            module: l.target,
            message: l.message,
            request_id: l.request_id,
            created_at: iso(l.created_at),
        }
    }
}

#[utoipa::path(get, path = "/api/logs/system", tag = "logs", params(SystemQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<SystemLogView>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn system(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<SystemQuery>,
) -> ApiResult<Envelope<PageView<SystemLogView>>> {
    let level = q.level.as_deref().filter(|l| !l.trim().is_empty()).map(parse_level).transpose()?;
    let (from, until) = date_range(q.start_date.as_deref(), q.end_date.as_deref())?;
    let filter = SystemLogFilter { level: level.map(str::to_owned), from, until, search: q.search };
    let page = state.logs.system_logs(&filter, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, SystemLogView::from)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct ActionsQuery {
    pub user_id: Option<String>,
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// login, login_failed, create, update, delete, admin_create, admin_update, admin_delete,
    /// order_paid or refund.
    pub action: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// Case-insensitive text in the route or the details.
    pub search: Option<String>,
}

/// One thing a user did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserActionView {
    pub id: String,
    /// None for a failed login of an unknown account.
    pub user_id: Option<String>,
    pub action: String,
    pub method: Option<String>,
    /// The route template, e.g. `/api/works/{id}`.
    pub route: Option<String>,
    /// The id the route names.
    pub target_id: Option<String>,
    pub status_code: Option<i64>,
    pub ip_address: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    pub request_id: Option<String>,
    pub created_at: String,
}

impl From<UserAction> for UserActionView {
    fn from(a: UserAction) -> Self {
        Self {
            details: json_object(&a.detail),
            id: a.id,
            user_id: a.user_id,
            action: a.action,
            method: a.method,
            route: a.route,
            target_id: a.target_id,
            status_code: a.status,
            ip_address: a.client_addr,
            request_id: a.request_id,
            created_at: iso(a.created_at),
        }
    }
}

#[utoipa::path(get, path = "/api/logs/user-actions", tag = "logs", params(ActionsQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<UserActionView>>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn user_actions(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<ActionsQuery>,
) -> ApiResult<Envelope<PageView<UserActionView>>> {
    let action = match q.action.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        None => None,
        Some(a) if actions::ALL.contains(&a) => Some(a.to_owned()),
        Some(a) => return Err(ApiError::field("action", format!("{a:?} is not one of {}", actions::ALL.join(", ")))),
    };
    let (from, until) = date_range(q.start_date.as_deref(), q.end_date.as_deref())?;
    let user_id = q.user_id.map(|u| u.trim().to_owned()).filter(|u| !u.is_empty());
    let filter = UserActionFilter { user_id, action, from, until, search: q.search };
    let page = state.logs.user_actions(&filter, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, UserActionView::from)))
}

/// One event of a task's timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskEventView {
    /// queued, dispatched, progress, completed, failed or cancelled.
    pub event: String,
    /// The attempt it belongs to (0 before the first dispatch).
    pub attempt: i64,
    /// The worker the attempt ran on.
    pub worker: Option<String>,
    /// Percent, for progress marks and completion.
    pub progress: Option<f64>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    pub created_at: String,
}

impl From<TaskEvent> for TaskEventView {
    fn from(e: TaskEvent) -> Self {
        Self {
            event: e.kind,
            attempt: e.attempt,
            worker: e.worker,
            progress: e.progress.map(|p| p * 100.0),
            error_code: e.error_code,
            message: e.message,
            created_at: iso(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskLogView {
    pub task_id: String,
    /// pending, running, completed, failed or cancelled.
    pub status: &'static str,
    /// Oldest first.
    pub events: Vec<TaskEventView>,
}

#[utoipa::path(get, path = "/api/logs/tasks/{task_id}", tag = "logs", params(("task_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<TaskLogView>), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn task(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    Path(task_id): Path<String>,
) -> ApiResult<Envelope<TaskLogView>> {
    let t = state.logs.task_timeline(&user, &task_id).await?;
    Ok(Envelope::ok(
        "ok",
        TaskLogView { task_id: t.task_id, status: status_word(t.status), events: t.events.into_iter().map(TaskEventView::from).collect() },
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct DownloadQuery {
    /// system or user_actions.
    pub log_type: Option<String>,
    /// The UTC day, YYYY-MM-DD.
    pub date: Option<String>,
}

#[utoipa::path(get, path = "/api/logs/download", tag = "logs", params(DownloadQuery), security(("bearer" = [])),
    responses((status = 200, description = "The day's rows as text lines, oldest first", content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn download(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<DownloadQuery>,
) -> ApiResult<Response> {
    let kind = match q.log_type.as_deref().map(str::trim) {
        None | Some("") => return Err(ApiError::field("log_type", "is required: system or user_actions")),
        Some(t) => LogKind::parse(t).ok_or_else(|| ApiError::field("log_type", format!("{t:?} is not one of system, user_actions")))?,
    };
    let day = match q.date.as_deref().map(str::trim) {
        None | Some("") => return Err(ApiError::field("date", "is required (YYYY-MM-DD)")),
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| ApiError::field("date", format!("{d:?} is not a day (YYYY-MM-DD)")))?,
    };
    let stream = state.logs.download(kind, day).inspect_err(|e| tracing::warn!(error = %e, "log download cut short"));
    let mut resp = Body::from_stream(stream).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    let name = format!("attachment; filename=\"{}-{}.log\"", kind.as_str(), day.format("%Y-%m-%d"));
    if let Ok(v) = header::HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
