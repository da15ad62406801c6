//! get, list and the data behind watch: label and field selectors, pagination with
//! continue tokens, and resourceVersion semantics (rebuilding older states from the
//! watch history until it is compacted).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{EventType, HistoryEvent, ListOpts, ObjKey, State, meta_str, present};
use crate::error::{ApiError, ApiResult};
use crate::resource::{ResKey, ResourceInfo};

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

impl State {
    fn objects_of(&self, res: &ResKey) -> Option<&BTreeMap<ObjKey, Arc<Value>>> {
        self.objects.get(res)
    }

    pub fn get(&self, info: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        self.lookup(&info.key(), &Self::obj_key(info, ns, name))
            .map(|o| present(&o, info))
            .ok_or_else(|| ApiError::not_found(&info.qualified(), name))
    }

    /// The objects of `res` as they were at `rv`, rebuilt from history (borrowed when
    /// `rv` is the present, which is the common case).
    fn snapshot(&self, res: &ResKey, rv: u64) -> ApiResult<std::borrow::Cow<'_, BTreeMap<ObjKey, Arc<Value>>>> {
        static EMPTY: BTreeMap<ObjKey, Arc<Value>> = BTreeMap::new();
        let current = self.objects_of(res).unwrap_or(&EMPTY);
        if rv >= self.rv {
            return Ok(std::borrow::Cow::Borrowed(current));
        }
        if rv < self.compacted {
            return Err(ApiError::gone(format!(
                "The resourceVersion for the provided list is too old: {rv} (compacted at {})",
                self.compacted
            )));
        }
        let mut objs = current.clone();
        for ev in self.history.iter().rev() {
            if ev.rv <= rv {
                break;
            }
            if ev.res != *res {
                continue;
            }
            let key =
                (meta_str(&ev.obj, "namespace").unwrap_or_default().to_string(), meta_str(&ev.obj, "name").unwrap_or_default().to_string());
            match (ev.kind, &ev.prev) {
                (EventType::Added, _) => {
                    objs.remove(&key);
                }
                (_, Some(p)) => {
                    objs.insert(key, p.clone());
                }
                (_, None) => {}
            }
        }
        Ok(std::borrow::Cow::Owned(objs))
    }

    pub fn list(&self, info: &ResourceInfo, ns: Option<&str>, opts: &ListOpts) -> ApiResult<Value> {
        let res = info.key();
        let rv_param = opts.resource_version.as_deref().filter(|r| !r.is_empty());
        let parse_rv = |r: &str| r.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resource version {r:?}")));
        let (snapshot_rv, start_after) = if let Some(tok) = &opts.continue_token {
            if rv_param.is_some_and(|r| r != "0") {
                return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
            }
            let bad =
                || ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)");
            let (rv, rest) = tok.split_once(':').ok_or_else(bad)?;
            let rv: u64 = rv.parse().map_err(|_| bad())?;
            let (nsx, name) = rest.split_once(':').ok_or_else(bad)?;
            (rv, Some((unhex(nsx).ok_or_else(bad)?, unhex(name).ok_or_else(bad)?)))
        } else {
            let rv = match (rv_param, opts.resource_version_match.as_deref()) {
                (None, Some("Exact")) | (Some("0"), Some("Exact")) => {
                    return Err(ApiError::bad_request("resourceVersionMatch \"Exact\" requires a non-zero resourceVersion"));
                }
                (None, Some(m)) if !m.is_empty() => {
                    return Err(ApiError::bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided"));
                }
                (None | Some("0"), _) => self.rv,
                (Some(r), m) => {
                    let n = parse_rv(r)?;
                    let exact = m == Some("Exact") || (m.is_none() && opts.limit.is_some());
                    if n > self.rv {
                        return Err(ApiError::too_large_resource_version(n, self.rv));
                    }
                    match m {
                        Some("Exact") | Some("NotOlderThan") | None => {}
                        Some(other) => {
                            return Err(ApiError::bad_request(format!("unknown resourceVersionMatch {other:?}")));
                        }
                    }
                    if exact { n } else { self.rv }
                }
            };
            (rv, None)
        };
        let objs = self.snapshot(&res, snapshot_rv)?;
        let mut items = Vec::new();
        let mut next = None;
        let mut remaining = 0usize;
        let iter = objs.iter().filter(|((n, _), _)| match ns {
            Some(ns) if info.namespaced => n == ns,
            _ => true,
        });
        let iter = iter.filter(|(k, _)| start_after.as_ref().is_none_or(|s| *k > s));
        for (k, o) in iter {
            if !opts.labels.matches(o) || !opts.fields.matches(o) {
                continue;
            }
            if let Some(limit) = opts.limit
                && limit > 0
                && items.len() >= limit
            {
                if next.is_none() {
                    next = Some(k.clone());
                }
                remaining += 1;
                continue;
            }
            items.push(present(o, info));
        }
        let mut list_meta = json!({"resourceVersion": snapshot_rv.to_string()});
        if next.is_some() {
            let last = items
                .last()
                .map(|i| (meta_str(i, "namespace").unwrap_or_default().to_string(), meta_str(i, "name").unwrap_or_default().to_string()));
            if let Some((lns, lname)) = last {
                // An empty namespace for cluster-scoped kinds matches the storage key.
                let lns = if info.namespaced { lns } else { String::new() };
                list_meta["continue"] = json!(format!("{snapshot_rv}:{}:{}", hex(&lns), hex(&lname)));
                list_meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": info.list_kind,
            "apiVersion": info.api_version(),
            "metadata": list_meta,
            "items": items,
        }))
    }

    /// Current objects for a watch's initial events.
    pub fn current(&self, res: &ResKey) -> Vec<Arc<Value>> {
        self.objects_of(res).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Events of `res` after `after`, or Err when history no longer reaches back that far.
    pub fn events_after(&self, res: &ResKey, after: u64) -> Result<Vec<Arc<HistoryEvent>>, u64> {
        if after < self.compacted {
            return Err(self.compacted);
        }
        let start = self.history.partition_point(|e| e.rv <= after);
        Ok(self.history.range(start..).filter(|e| e.res == *res).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::store::{ListOpts, PatchKind, Store, test_ctx as ctx};

    #[test]
    fn snapshot_rebuilds_old_state() {
        let store = Store::new(100);
        let mut st = store.lock();
        let c = ctx(&st, "", "v1", "configmaps", Some("default"));
        st.create(&c, json!({"metadata": {"name": "a"}, "data": {"k": "1"}})).unwrap();
        let rv1 = st.resource_version();
        st.patch(&c, "a", PatchKind::Merge, &json!({"data": {"k": "2"}})).unwrap();
        st.create(&c, json!({"metadata": {"name": "b"}})).unwrap();
        let info = c.info.clone();
        let old = st
            .list(
                &info,
                Some("default"),
                &ListOpts { resource_version: Some(rv1.to_string()), resource_version_match: Some("Exact".into()), ..Default::default() },
            )
            .unwrap();
        let items = old["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["data"]["k"], "1");
    }
}
