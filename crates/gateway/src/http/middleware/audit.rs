//! Seed 002's user actions from HTTP: every write (POST, PUT, PATCH, DELETE) of a logged-in
//! user, allowed or refused, is recorded with the user, the method, the route template (never
//! the raw path or query), the id the path names, the status and the client's address. The
//! record is queued after the response is ready, so the request pays a channel send.
//! Anonymous writes are not user actions; logins and payments are recorded by the domain,
//! where the user is known.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::domain::audit::{Action, write_action};
use crate::http::middleware::{RequestId, client_ip};

/// The value of the last `{param}` of `template` in `path`: the thing a write acts on
/// (`/api/works/{id}` and `/api/works/42` give `42`).
pub fn target_id(template: &str, path: &str) -> Option<String> {
    let params = template.split('/').zip(path.split('/'));
    params.filter(|(t, _)| t.starts_with('{') && t.ends_with('}')).map(|(_, v)| v).last().filter(|v| !v.is_empty()).map(str::to_owned)
}

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    if write_action(&method, false).is_none() {
        return next.run(req).await;
    }
    let Some(token) = crate::http::auth::bearer(req.headers()) else {
        return next.run(req).await;
    };
    // The same verification the extractors do, answered from the same caches.
    let Ok(user) = state.accounts.authenticate(token).await else {
        return next.run(req).await;
    };
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let target = route.as_deref().and_then(|r| target_id(r, req.uri().path()));
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let client_addr = client_ip(&req, &state.config).to_string();
    let resp = next.run(req).await;
    if let Some(action) = write_action(&method, user.is_admin()) {
        state.audit.record(Action {
            user_id: Some(user.user_id),
            action,
            method: Some(method),
            route,
            target_id: target,
            status: Some(resp.status().as_u16()),
            client_addr: Some(client_addr),
            request_id,
            ..Action::default()
        });
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_last_path_parameter() {
        assert_eq!(target_id("/api/works/{id}", "/api/works/42").as_deref(), Some("42"));
        assert_eq!(target_id("/api/admin/config/{key}", "/api/admin/config/maintenance_mode").as_deref(), Some("maintenance_mode"));
        assert_eq!(target_id("/api/tasks/{task_id}/cancel", "/api/tasks/t-1/cancel").as_deref(), Some("t-1"));
        assert_eq!(target_id("/api/works/batch/delete", "/api/works/batch/delete"), None);
    }
}
