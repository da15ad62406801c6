//! Watch streams: newline-delimited JSON events, replay from history, bookmarks,
//! watch-list (`sendInitialEvents`) and 410 Gone when history no longer reaches back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};

use crate::error::{ApiError, Cause};
use crate::http::{Presentation, Shared};
use crate::resource::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{EventType, present};

#[derive(Debug, Clone, Default)]
pub struct WatchParams {
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub send_initial_events: Option<bool>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

fn invalid_options(field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "ListOptions",
        "meta.k8s.io",
        "",
        vec![Cause { reason: "FieldValueForbidden".into(), message: format!("Forbidden: {message}"), field: field.into() }],
    )
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": metadata}))
}

fn expired(requested: u64, oldest: u64) -> Bytes {
    let status = ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status();
    line("ERROR", status)
}

/// Validates the parameters, takes the initial snapshot and returns the event stream.
pub fn start(
    shared: Arc<Shared>,
    info: Arc<ResourceInfo>,
    params: WatchParams,
    presentation: Presentation,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static, ApiError> {
    let send_initial = params.send_initial_events == Some(true);
    match (params.send_initial_events.is_some(), params.resource_version_match.as_deref()) {
        (false, Some(m)) if !m.is_empty() => {
            return Err(invalid_options(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        (true, m) if m != Some("NotOlderThan") => {
            return Err(invalid_options("resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"));
        }
        _ => {}
    }
    if send_initial && !params.bookmarks {
        return Err(invalid_options("allowWatchBookmarks", "sendInitialEvents requires setting allowWatchBookmarks to true"));
    }
    let requested = match params.resource_version.as_deref() {
        None | Some("") => None,
        Some(r) => Some(r.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {r:?}")))?),
    };
    let res = info.key();
    let visible = {
        let ns = params.namespace.clone();
        let namespaced = info.namespaced;
        let labels = params.labels.clone();
        let fields = params.fields.clone();
        move |o: &Value| {
            let ns_ok = match (&ns, namespaced) {
                (Some(ns), true) => o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns.as_str()),
                _ => true,
            };
            ns_ok && labels.matches(o) && fields.matches(o)
        }
    };
    let render = {
        let info = info.clone();
        move |o: &Value| presentation.object(present(o, &info))
    };

    // Under the lock: initial events and the version to resume from.
    let mut initial: Vec<Bytes> = Vec::new();
    let mut fail_at_start = false;
    let start_rv;
    {
        let st = shared.store.lock();
        let current = st.resource_version();
        // An explicit sendInitialEvents=false means "from now on" even without a version.
        let from_now = params.send_initial_events == Some(false);
        let synthetic = send_initial || (!from_now && matches!(requested, None | Some(0)));
        if from_now && matches!(requested, None | Some(0)) {
            start_rv = current;
        } else if synthetic {
            if let Some(r) = requested
                && r > current
            {
                return Err(ApiError::too_large_resource_version(r, current));
            }
            for o in st.current(&res) {
                if visible(&o) {
                    initial.push(line("ADDED", render(&o)));
                }
            }
            if send_initial {
                initial.push(bookmark(&info, current, true));
            }
            start_rv = current;
        } else {
            let r = requested.expect("non-synthetic watches have a version");
            if r < st.compacted() {
                initial.push(expired(r, st.compacted()));
                fail_at_start = true;
            }
            start_rv = r;
        }
    }

    let mut notify = shared.store.notify.subscribe();
    let mut expiry = shared.store.expiry.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let bookmark_every = shared.config.bookmark_interval;
    let deadline = params.timeout.map(|t| tokio::time::Instant::now() + t);

    Ok(async_stream::stream! {
        for b in initial {
            yield Ok(b);
        }
        if fail_at_start {
            return;
        }
        let mut last = start_rv;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
        // Mark the current values seen so only later changes wake us; then catch up
        // once in case writes landed between the snapshot and the subscription.
        notify.borrow_and_update();
        expiry.borrow_and_update();
        let mut catch_up = true;
        loop {
            if !catch_up {
                let sleep_until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400 * 365));
                tokio::select! {
                    r = notify.changed() => { if r.is_err() { return; } }
                    _ = ticker.tick(), if params.bookmarks => {
                        yield Ok(bookmark(&info, last, false));
                        continue;
                    }
                    _ = tokio::time::sleep_until(sleep_until) => { return; }
                    _ = expiry.changed() => {
                        yield Ok(expired(last, last + 1));
                        return;
                    }
                    _ = shutdown.changed() => { return; }
                }
            }
            catch_up = false;
            let batch = {
                let st = shared.store.lock();
                let global = st.resource_version();
                match st.events_after(&res, last) {
                    Ok(evs) => Ok((evs, global)),
                    Err(oldest) => Err(oldest),
                }
            };
            let (events, global) = match batch {
                Ok(b) => b,
                Err(oldest) => {
                    yield Ok(expired(last, oldest));
                    return;
                }
            };
            for ev in events {
                let now_visible = visible(&ev.obj);
                let was_visible = ev.prev.as_deref().is_some_and(&visible);
                let kind = match ev.kind {
                    EventType::Added if now_visible => Some("ADDED"),
                    EventType::Modified => match (was_visible, now_visible) {
                        (true, true) => Some("MODIFIED"),
                        (false, true) => Some("ADDED"),
                        (true, false) => Some("DELETED"),
                        (false, false) => None,
                    },
                    EventType::Deleted if was_visible => Some("DELETED"),
                    _ => None,
                };
                if let Some(k) = kind {
                    yield Ok(line(k, render(&ev.obj)));
                }
            }
            last = last.max(global);
        }
    })
}
