//! Reading the RBAC manifests in `deploy/` into typed k8s-openapi objects and flattening their
//! rules to `(apiGroup, resource) -> verbs`, for tests that compare them with what the code
//! calls.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;

/// `(apiGroup, resource)` -> verbs.
pub type Grants = BTreeMap<(String, String), BTreeSet<String>>;

/// `(apiGroup, resource, verbs)`, as the operator's `PERMISSIONS` constants write them.
pub type Permissions<'a> = &'a [(&'a str, &'a str, &'a [&'a str])];

#[derive(Default)]
pub struct Manifest {
    pub accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub bindings: Vec<RoleBinding>,
}

/// `deploy/{file}`, every document parsed into its k8s-openapi type.
pub fn manifest(file: &str) -> Manifest {
    let path = format!("{}/../../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut m = Manifest::default();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc).expect("YAML parses");
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        match kind.as_str() {
            "ServiceAccount" => m.accounts.push(typed(value, &kind)),
            "ClusterRole" => m.cluster_roles.push(typed(value, &kind)),
            "ClusterRoleBinding" => m.cluster_bindings.push(typed(value, &kind)),
            "Role" => m.roles.push(typed(value, &kind)),
            "RoleBinding" => m.bindings.push(typed(value, &kind)),
            other => panic!("unexpected kind {other:?} in {file}"),
        }
    }
    m
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml::Value, kind: &str) -> T {
    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{kind} does not parse into k8s-openapi's type: {e}"))
}

/// The rules flattened; plain rules only, no wildcards.
pub fn grants(rules: &[PolicyRule]) -> Grants {
    let mut out = Grants::new();
    for r in rules {
        let groups = r.api_groups.clone().unwrap_or_default();
        let resources = r.resources.clone().unwrap_or_default();
        assert!(r.resource_names.is_none() && r.non_resource_urls.is_none(), "plain rules only: {r:?}");
        for g in &groups {
            for res in &resources {
                for v in &r.verbs {
                    assert!(g != "*" && res != "*" && v != "*", "no wildcards: {r:?}");
                    out.entry((g.clone(), res.clone())).or_default().insert(v.clone());
                }
            }
        }
    }
    out
}

pub fn needed(lists: &[Permissions<'_>]) -> Grants {
    let mut out = Grants::new();
    for list in lists {
        for (g, r, verbs) in *list {
            out.entry(((*g).to_owned(), (*r).to_owned())).or_default().extend(verbs.iter().map(|v| (*v).to_owned()));
        }
    }
    out
}

/// Panics naming every verb one side has and the other lacks.
pub fn assert_same_grants(granted: &Grants, needed: &Grants) {
    for (key, verbs) in needed {
        let have = granted.get(key).cloned().unwrap_or_default();
        let missing: Vec<_> = verbs.difference(&have).collect();
        assert!(missing.is_empty(), "{key:?} lacks {missing:?}");
    }
    for (key, verbs) in granted {
        let want = needed.get(key).unwrap_or_else(|| panic!("{key:?} is granted but nothing uses it"));
        let extra: Vec<_> = verbs.difference(want).collect();
        assert!(extra.is_empty(), "{key:?} grants unused {extra:?}");
    }
}
