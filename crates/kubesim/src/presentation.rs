//! The shape of a read's answer, chosen by `Accept`: full objects, `PartialObjectMetadata`
//! (`as=PartialObjectMetadata[List]`), or a `Table` (`as=Table`, what `kubectl get` asks for).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::resource::ResourceInfo;
use crate::table::{self, Include};

#[derive(Debug, Clone)]
pub enum Presentation {
    Full,
    Metadata,
    Table(Arc<ResourceInfo>, Include),
}

impl Presentation {
    pub fn negotiate(headers: &HeaderMap, info: &Arc<ResourceInfo>, q: &HashMap<String, String>) -> Presentation {
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
        // The first acceptable form wins, as in the real server's negotiation.
        for media in accept.split(',') {
            if media.contains("as=Table") {
                return Presentation::Table(info.clone(), Include::from_query(q.get("includeObject").map(String::as_str)));
            }
            if media.contains("as=PartialObjectMetadata") {
                return Presentation::Metadata;
            }
            if media.split(';').next().is_some_and(|m| matches!(m.trim(), "application/json" | "application/yaml" | "*/*")) {
                return Presentation::Full;
            }
        }
        Presentation::Full
    }

    pub fn object(&self, o: Value) -> Value {
        match self {
            Presentation::Full => o,
            Presentation::Metadata => json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadata",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
            }),
            Presentation::Table(info, include) => {
                let rv = o.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
                table::table(info, &[o], json!({"resourceVersion": rv}), *include)
            }
        }
    }

    pub fn list(&self, mut l: Value) -> Value {
        match self {
            Presentation::Full => l,
            Presentation::Metadata => {
                if let Some(items) = l.get_mut("items").and_then(Value::as_array_mut) {
                    for i in items.iter_mut() {
                        *i = self.object(std::mem::take(i));
                    }
                }
                l["apiVersion"] = json!("meta.k8s.io/v1");
                l["kind"] = json!("PartialObjectMetadataList");
                l
            }
            Presentation::Table(info, include) => {
                let items = l.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
                table::table(info, &items, l.get("metadata").cloned().unwrap_or(json!({})), *include)
            }
        }
    }

    pub fn content_type(&self, list: bool) -> &'static str {
        match (self, list) {
            (Presentation::Full, _) => "application/json",
            (Presentation::Metadata, false) => "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            (Presentation::Metadata, true) => "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            (Presentation::Table(..), _) => "application/json;as=Table;g=meta.k8s.io;v=v1",
        }
    }
}
