//! The gateway's own events into `system_logs`: a `tracing` layer that turns every event at
//! INFO and above into a row (level, target, message, structured fields, the request id of
//! the enclosing request span) and queues it without waiting; the stack's writer stores them
//! in batches.
//!
//! The layer and its queue belong to whoever creates them: the binary installs one in the
//! process's subscriber and hands its [`SystemLogFeed`] to its one stack; a test installs
//! its own as a scoped subscriber and hands the feed to its own stack. No global sink: stacks
//! built side by side in one process never see each other's rows.

use std::fmt::Write as _;

use purrify_store::NewSystemLog;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::batch::{Feed, Queue, queue, row_id};
use super::redact::{REDACTED, is_secret_name, scrub_text};

/// Rows waiting for the writer at most; past that, events are dropped and counted.
pub const CAPACITY: usize = 8192;

/// Events of these targets are not stored: the log writer's own (a failing database would
/// feed its failures back into itself) and the database driver's.
const SKIPPED_TARGETS: &[&str] = &["purrify_gateway::domain::logs", "sqlx"];

/// The receiving end, handed to a stack (`LogService::attach_system_logs`).
pub type SystemLogFeed = Feed<NewSystemLog>;

/// The layer; install it in a subscriber.
#[derive(Clone)]
pub struct SystemLogCapture {
    queue: Queue<NewSystemLog>,
}

/// A capture layer and the feed of what it captures.
pub fn system_log_channel() -> (SystemLogCapture, SystemLogFeed) {
    let (queue, feed) = queue(CAPACITY);
    (SystemLogCapture { queue }, feed)
}

impl SystemLogCapture {
    /// Waits until every event captured before this call is stored (or counted lost).
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

/// Seed 002's level word of a `tracing` level.
pub fn level_word(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

/// The request id a span carries, kept in its extensions for the events inside it.
struct SpanRequestId(String);

#[derive(Default)]
struct Fields {
    message: String,
    fields: Map<String, Value>,
    request_id: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            if let Value::String(s) = value {
                self.message = scrub_text(&s).into_owned();
            } else {
                self.message = value.to_string();
            }
            return;
        }
        if name == "request_id" {
            self.request_id = value.as_str().map(str::to_owned);
        }
        let value = match value {
            _ if is_secret_name(name) => Value::String(REDACTED.into()),
            Value::String(s) => Value::String(scrub_text(&s).into_owned()),
            v => v,
        };
        self.fields.insert(name.to_owned(), value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, Value::String(s));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
}

/// Only `request_id` is read from spans.
#[derive(Default)]
struct RequestIdVisitor(Option<String>);

impl Visit for RequestIdVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "request_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "request_id" {
            self.0 = Some(value.to_owned());
        }
    }
}

impl<S> Layer<S> for SystemLogCapture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = RequestIdVisitor::default();
        attrs.record(&mut v);
        if let (Some(rid), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanRequestId(rid));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO || SKIPPED_TARGETS.iter().any(|t| meta.target().starts_with(t)) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let request_id = f
            .request_id
            .take()
            .or_else(|| ctx.event_scope(event)?.find_map(|span| span.extensions().get::<SpanRequestId>().map(|r| r.0.clone())));
        let created_at = purrify_store::now_ms();
        self.queue.push(NewSystemLog {
            id: row_id(created_at),
            created_at,
            level: level_word(meta.level()).to_owned(),
            target: meta.target().to_owned(),
            message: f.message,
            fields: Value::Object(f.fields).to_string(),
            request_id,
        });
    }
}
