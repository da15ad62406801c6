//! `deploy/operator-rbac.yaml` grants exactly what the operator's code calls: every
//! permission the controllers and leader election need, no wildcard, nothing unused.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::Deserialize;

/// The EnhanceTask controller's calls (src/task/): watch-fed index (list, watch), a re-read
/// after a conflicting write (get), guarded status patches, TTL deletes, Events.
const TASK_PERMISSIONS: &[(&str, &str, &[&str])] = &[
    ("purrify.io", "enhancetasks", &["get", "list", "watch", "delete"]),
    ("purrify.io", "enhancetasks/status", &["patch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

type Grants = BTreeMap<(String, String), BTreeSet<String>>;

#[derive(Default)]
struct Manifest {
    accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
}

fn manifest() -> Manifest {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/operator-rbac.yaml");
    let text = std::fs::read_to_string(path).expect("deploy/operator-rbac.yaml exists");
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
            other => panic!("unexpected kind {other:?}"),
        }
    }
    m
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml::Value, kind: &str) -> T {
    serde_yaml::from_value(value).unwrap_or_else(|e| panic!("{kind} does not parse into k8s-openapi's type: {e}"))
}

fn grants(rules: &[PolicyRule]) -> Grants {
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

fn needed(lists: &[&[(&str, &str, &[&str])]]) -> Grants {
    let mut out = Grants::new();
    for list in lists {
        for (g, r, verbs) in *list {
            out.entry(((*g).to_owned(), (*r).to_owned())).or_default().extend(verbs.iter().map(|v| (*v).to_owned()));
        }
    }
    out
}

#[test]
fn cluster_role_grants_exactly_what_the_controllers_use() {
    let m = manifest();
    assert_eq!(m.cluster_roles.len(), 1);
    let granted = grants(m.cluster_roles[0].rules.as_deref().unwrap_or_default());
    let needed = needed(&[purrify_operator::pool::PERMISSIONS, TASK_PERMISSIONS]);
    for (key, verbs) in &needed {
        let have = granted.get(key).cloned().unwrap_or_default();
        let missing: Vec<_> = verbs.difference(&have).collect();
        assert!(missing.is_empty(), "{key:?} lacks {missing:?}");
    }
    for (key, verbs) in &granted {
        let want = needed.get(key).unwrap_or_else(|| panic!("{key:?} is granted but nothing uses it"));
        let extra: Vec<_> = verbs.difference(want).collect();
        assert!(extra.is_empty(), "{key:?} grants unused {extra:?}");
    }
}

#[test]
fn lease_role_is_namespaced_and_exact() {
    let m = manifest();
    assert_eq!(m.roles.len(), 1);
    let role = &m.roles[0];
    let granted = grants(role.rules.as_deref().unwrap_or_default());
    assert_eq!(granted, needed(&[purrify_operator::leader::PERMISSIONS]));
    let cluster = grants(m.cluster_roles[0].rules.as_deref().unwrap_or_default());
    assert!(!cluster.keys().any(|(g, _)| g == "coordination.k8s.io"), "leases are not granted cluster-wide");
}

#[test]
fn bindings_tie_the_roles_to_the_service_account() {
    let m = manifest();
    assert_eq!(m.accounts.len(), 1);
    let sa = &m.accounts[0].metadata;
    let (sa_name, sa_ns) = (sa.name.clone().unwrap(), sa.namespace.clone().unwrap());
    let role = &m.roles[0].metadata;
    assert_eq!(role.namespace.as_deref(), Some(sa_ns.as_str()), "the Lease lives in the operator's namespace");

    let crb = &m.cluster_bindings[0];
    assert_eq!((crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()), ("ClusterRole", m.cluster_roles[0].metadata.name.as_deref().unwrap()));
    let rb = &m.bindings[0];
    assert_eq!((rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()), ("Role", role.name.as_deref().unwrap()));
    assert_eq!(rb.metadata.namespace, role.namespace);
    for subjects in [crb.subjects.as_deref(), rb.subjects.as_deref()] {
        let s = &subjects.unwrap()[0];
        assert_eq!((s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()), ("ServiceAccount", sa_name.as_str(), Some(sa_ns.as_str())));
    }
}
