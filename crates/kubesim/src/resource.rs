//! What the server serves: built-in kinds plus kinds defined by CRDs, and the
//! discovery documents describing them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::schema::Schema;

/// Storage identity: objects of a kind are shared by all its served versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// Validation and pruning apply only to CRD-defined kinds; built-ins carry
    /// permissive schemas whose only job is list topology for apply/patch.
    pub validating: bool,
    pub schema: Arc<Schema>,
    /// For custom resources: the CRD's name, so CRD updates can find them.
    pub crd: Option<String>,
    /// For custom resources: the version's `openAPIV3Schema` as written, for `/openapi`.
    pub openapi_schema: Option<Arc<Value>>,
    /// For custom resources: the version's `additionalPrinterColumns`, for Table output.
    pub printer_columns: Vec<Value>,
}

impl ResourceInfo {
    pub fn key(&self) -> ResKey {
        ResKey { group: self.group.clone(), plural: self.plural.clone() }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn qualified(&self) -> crate::error::Qualified<'_> {
        crate::error::Qualified { plural: &self.plural, group: &self.group }
    }

    fn verbs(&self) -> Vec<&'static str> {
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }

    fn discovery_entries(&self) -> Vec<Value> {
        let mut main = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            main["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            main["categories"] = json!(self.categories);
        }
        let mut out = vec![main];
        if self.status_subresource {
            out.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        out
    }

    fn aggregated_entry(&self) -> Value {
        let mut e = json!({
            "resource": self.plural,
            "responseKind": {"group": self.group, "version": self.version, "kind": self.kind},
            "scope": if self.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": self.singular,
            "verbs": self.verbs(),
        });
        if !self.short_names.is_empty() {
            e["shortNames"] = json!(self.short_names);
        }
        if !self.categories.is_empty() {
            e["categories"] = json!(self.categories);
        }
        if self.status_subresource {
            e["subresources"] = json!([{
                "subresource": "status",
                "responseKind": {"group": self.group, "version": self.version, "kind": self.kind},
                "verbs": ["get", "patch", "update"],
            }]);
        }
        e
    }
}

/// Ordering of Kubernetes version strings: GA > beta > alpha, then by number.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (prefix, rank) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix)
            && let Ok(minor) = n.parse::<u32>()
        {
            return (rank, major, minor);
        }
    }
    (0, 0, 0)
}

#[derive(Debug, Default, Clone)]
pub struct Registry {
    /// (group, version, plural) -> info.
    by_gvr: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
}

impl Registry {
    pub fn with_builtins() -> Registry {
        let mut r = Registry::default();
        for b in crate::builtin::BUILTINS {
            r.insert(b.info());
        }
        r
    }

    pub fn insert(&mut self, info: ResourceInfo) {
        self.by_gvr.insert((info.group.clone(), info.version.clone(), info.plural.clone()), Arc::new(info));
    }

    pub fn remove_crd(&mut self, crd_name: &str) {
        self.by_gvr.retain(|_, v| v.crd.as_deref() != Some(crd_name));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.by_gvr.get(&(group.to_string(), version.to_string(), plural.to_string())).cloned()
    }

    /// Any served version of a kind (used for GC and namespace cleanup).
    pub fn any_version(&self, key: &ResKey) -> Option<Arc<ResourceInfo>> {
        self.versions_of(key).into_iter().next()
    }

    pub fn versions_of(&self, key: &ResKey) -> Vec<Arc<ResourceInfo>> {
        let mut v: Vec<Arc<ResourceInfo>> =
            self.by_gvr.values().filter(|i| i.group == key.group && i.plural == key.plural).cloned().collect();
        v.sort_by_key(|i| std::cmp::Reverse(version_priority(&i.version)));
        v
    }

    pub fn keys(&self) -> Vec<ResKey> {
        let mut keys: Vec<ResKey> = self.by_gvr.values().map(|i| i.key()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The kinds served in one group-version.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        self.by_gvr.iter().filter(|((g, v, _), _)| g == group && v == version).map(|(_, i)| i.clone()).collect()
    }

    /// Every served (group, version), core first.
    pub fn group_versions(&self) -> Vec<(String, String)> {
        let mut gvs: Vec<(String, String)> = self.by_gvr.keys().map(|(g, v, _)| (g.clone(), v.clone())).collect();
        gvs.dedup();
        gvs
    }

    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.by_gvr.keys().any(|(g, v, _)| g == group && v == version)
    }

    /// Groups (excluding core) and their versions, best version first.
    fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, v, _) in self.by_gvr.keys() {
            if g.is_empty() {
                continue;
            }
            let vs = out.entry(g.clone()).or_default();
            if !vs.contains(v) {
                vs.push(v.clone());
            }
        }
        for vs in out.values_mut() {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    pub fn api_versions(&self, server_addr: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_addr}],
        })
    }

    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self.groups().into_iter().map(|(g, vs)| self.api_group(&g, &vs)).collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn api_group(&self, g: &str, vs: &[String]) -> Value {
        let versions: Vec<Value> = vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
        json!({
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": g,
            "versions": versions,
            "preferredVersion": versions[0],
        })
    }

    pub fn api_group_doc(&self, group: &str) -> Option<Value> {
        self.groups().get(group).map(|vs| self.api_group(group, vs))
    }

    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let resources: Vec<Value> =
            self.by_gvr.iter().filter(|((g, v, _), _)| g == group && v == version).flat_map(|(_, i)| i.discovery_entries()).collect();
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }))
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (core) or `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let mut groups: Vec<(String, Vec<String>)> =
            if core { vec![(String::new(), vec!["v1".to_string()])] } else { self.groups().into_iter().collect() };
        groups.retain(|(g, _)| core == g.is_empty());
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> = vs
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> =
                            self.by_gvr.iter().filter(|((gg, vv, _), _)| gg == g && vv == v).map(|(_, i)| i.aggregated_entry()).collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g}, "versions": versions})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ordering() {
        let mut v = vec!["v1alpha1", "v2", "v1beta2", "v1", "v1beta1", "v10"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1"]);
    }
}
