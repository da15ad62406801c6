//! Errors: the crate's own (`Error`) and the API errors it sends to clients as
//! `Status` objects (`ApiError`).

use serde_json::{Value, json};

/// Failures of the server process itself (not of a request).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
    #[error("writing kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One cause inside a `Status.details.causes` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// `Status.details`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Details {
    pub name: Option<String>,
    pub group: Option<String>,
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
}

/// An error as the Kubernetes API reports it: an HTTP code plus a `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// Boxed: errors travel through every `Result` of the request path.
    pub details: Box<Details>,
}

/// The "resource" part of messages like `deployments.apps "web" not found`.
#[derive(Debug, Clone)]
pub struct Qualified<'a> {
    pub plural: &'a str,
    pub group: &'a str,
}

impl std::fmt::Display for Qualified<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() { f.write_str(self.plural) } else { write!(f, "{}.{}", self.plural, self.group) }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: Box::default() }
    }

    fn with_target(mut self, q: &Qualified<'_>, name: &str) -> Self {
        self.details.name = Some(name.to_string());
        if !q.group.is_empty() {
            self.details.group = Some(q.group.to_string());
        }
        self.details.kind = Some(q.plural.to_string());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(q: &Qualified<'_>, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{q} \"{name}\" not found")).with_target(q, name)
    }

    /// 404 for a path the server has no handler for.
    pub fn no_route() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource")
    }

    pub fn already_exists(q: &Qualified<'_>, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{q} \"{name}\" already exists")).with_target(q, name)
    }

    pub fn conflict(q: &Qualified<'_>, name: &str, why: &str) -> Self {
        Self::new(409, "Conflict", format!("Operation cannot be fulfilled on {q} \"{name}\": {why}")).with_target(q, name)
    }

    pub fn stale(q: &Qualified<'_>, name: &str) -> Self {
        Self::conflict(q, name, "the object has been modified; please apply your changes to the latest version and try again")
    }

    /// A 422 whose message lists every cause, the way the real server words it.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified_kind = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let list: Vec<String> =
            causes.iter().map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) }).collect();
        let body = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let mut e = Self::new(422, "Invalid", format!("{qualified_kind} \"{name}\" is invalid: {body}"));
        e.details.name = Some(name.to_string());
        if !group.is_empty() {
            e.details.group = Some(group.to_string());
        }
        e.details.kind = Some(kind.to_string());
        e.details.causes = causes;
        e
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        // The real server says "Expired" for compacted resource versions and continue tokens.
        Self::new(410, "Expired", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(accept: &str, offered: &[&str]) -> Self {
        Self::new(406, "NotAcceptable", format!("only the following media types are accepted: {}; got {accept:?}", offered.join(", ")))
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {ct:?}"
            ),
        )
    }

    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut e = Self::new(504, "Timeout", format!("Too large resource version: {requested}, current: {current}"));
        e.details.causes.push(Cause {
            reason: "ResourceVersionTooLarge".into(),
            message: "Too large resource version".into(),
            field: String::new(),
        });
        e
    }

    pub fn apply_conflicts(q: &Qualified<'_>, name: &str, conflicts: Vec<(String, String)>) -> Self {
        let message = if conflicts.len() == 1 {
            format!("Apply failed with 1 conflict: conflict with \"{}\": {}", conflicts[0].0, conflicts[0].1)
        } else {
            let lines: Vec<String> = conflicts.iter().map(|(m, f)| format!("conflict with \"{m}\": {f}")).collect();
            format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
        };
        let mut e = Self::new(409, "Conflict", message).with_target(q, name);
        e.details.causes = conflicts
            .into_iter()
            .map(|(m, f)| Cause { reason: "FieldManagerConflict".into(), message: format!("conflict with \"{m}\""), field: f })
            .collect();
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        let mut details_json = serde_json::Map::new();
        if let Some(n) = &self.details.name {
            details_json.insert("name".into(), json!(n));
        }
        if let Some(g) = &self.details.group {
            details_json.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.details.kind {
            details_json.insert("kind".into(), json!(k));
        }
        if !self.details.causes.is_empty() {
            let causes: Vec<Value> = self
                .details
                .causes
                .iter()
                .map(|c| {
                    let mut m = serde_json::Map::new();
                    m.insert("reason".into(), json!(c.reason));
                    m.insert("message".into(), json!(c.message));
                    if !c.field.is_empty() {
                        m.insert("field".into(), json!(c.field));
                    }
                    Value::Object(m)
                })
                .collect();
            details_json.insert("causes".into(), Value::Array(causes));
        }
        if !details_json.is_empty() {
            status["details"] = Value::Object(details_json);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;
