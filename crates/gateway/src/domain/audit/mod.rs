//! What users did, for seed 002's `/api/logs/user-actions`: every write request of a logged-in
//! user (recorded by the HTTP audit middleware), and the actions no request user stands
//! behind, recorded where they happen: login attempts (domain/accounts) and payments
//! (domain/payments).
//!
//! Recording never waits: actions are queued and written in batches by a background writer
//! (see `logs::batch`), so a request pays for a channel send. An action the queue or the
//! database could not take is counted in `purrify_gateway_log_records_lost{table="user_actions"}`.

use std::sync::Arc;

use purrify_store::{Db, NewUserAction};
use serde_json::Value;
use tokio::sync::watch;

use crate::domain::logs::batch::{Queue, queue, row_id, spawn_writer};
use crate::domain::logs::redact::{REDACTED, is_secret_name};
use crate::metrics::Metrics;

/// Actions waiting for the writer at most.
pub const CAPACITY: usize = 16_384;

/// The action words stored (and filtered on).
pub mod actions {
    pub const LOGIN: &str = "login";
    pub const LOGIN_FAILED: &str = "login_failed";
    pub const CREATE: &str = "create";
    pub const UPDATE: &str = "update";
    pub const DELETE: &str = "delete";
    pub const ADMIN_CREATE: &str = "admin_create";
    pub const ADMIN_UPDATE: &str = "admin_update";
    pub const ADMIN_DELETE: &str = "admin_delete";
    pub const ORDER_PAID: &str = "order_paid";
    pub const REFUND: &str = "refund";

    /// Every word, for validating filters.
    pub const ALL: &[&str] = &[LOGIN, LOGIN_FAILED, CREATE, UPDATE, DELETE, ADMIN_CREATE, ADMIN_UPDATE, ADMIN_DELETE, ORDER_PAID, REFUND];
}

/// One action, as its recorder knows it.
#[derive(Debug, Clone, Default)]
pub struct Action {
    pub user_id: Option<String>,
    pub action: &'static str,
    pub method: Option<String>,
    /// The route template (`/api/works/{id}`), never the raw path or query.
    pub route: Option<String>,
    pub target_id: Option<String>,
    pub status: Option<u16>,
    pub client_addr: Option<String>,
    /// Details (a JSON object); fields named like secrets are replaced before storing.
    pub detail: Value,
    pub request_id: Option<String>,
}

/// The recorder. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: Queue<NewUserAction>,
}

impl AuditLog {
    /// The recorder and its writer, which runs until `stop` changes.
    pub fn start(db: Db, metrics: Arc<Metrics>, stop: watch::Receiver<bool>) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, feed) = queue(CAPACITY);
        let writer = spawn_writer(db, metrics, feed, stop);
        (Self { queue }, writer)
    }

    /// Queues `a` for writing; never waits.
    pub fn record(&self, a: Action) {
        let mut detail = if a.detail.is_object() { a.detail } else { Value::Object(Default::default()) };
        redact_value(&mut detail);
        let created_at = purrify_store::now_ms();
        self.queue.push(NewUserAction {
            id: row_id(created_at),
            created_at,
            user_id: a.user_id,
            action: a.action.to_owned(),
            method: a.method,
            route: a.route,
            target_id: a.target_id,
            status: a.status.map(i64::from),
            client_addr: a.client_addr,
            detail: detail.to_string(),
            request_id: a.request_id,
        });
    }

    /// Waits until every action recorded before this call is stored (or counted lost).
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

/// The action word of a write by `method`; an admin's writes are admin actions.
pub fn write_action(method: &str, admin: bool) -> Option<&'static str> {
    use actions::*;
    Some(match (method, admin) {
        ("POST", false) => CREATE,
        ("PUT" | "PATCH", false) => UPDATE,
        ("DELETE", false) => DELETE,
        ("POST", true) => ADMIN_CREATE,
        ("PUT" | "PATCH", true) => ADMIN_UPDATE,
        ("DELETE", true) => ADMIN_DELETE,
        _ => return None,
    })
}

/// Replaces the values of secret-named keys, at any depth.
pub(crate) fn redact_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_name(k) {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact_value(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_named_by_method_and_role() {
        assert_eq!(write_action("POST", false), Some("create"));
        assert_eq!(write_action("PATCH", false), Some("update"));
        assert_eq!(write_action("DELETE", true), Some("admin_delete"));
        assert_eq!(write_action("GET", true), None);
    }

    #[test]
    fn secret_details_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({"email": "a@example.com", "password": "p", "nested": [{"token": "t", "ok": 1}]});
        redact_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"email": "a@example.com", "password": "[REDACTED]", "nested": [{"token": "[REDACTED]", "ok": 1}]})
        );
    }
}
