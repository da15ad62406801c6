//! `deploy/operator-rbac.yaml` grants exactly what the operator's code calls: every
//! permission the controllers and leader election need, no wildcard, nothing unused. The
//! lists live next to the calls (`pool::PERMISSIONS`, `task::PERMISSIONS`,
//! `leader::PERMISSIONS`), so a new call and its grant change in the same place.

mod rbac_support;

use rbac_support::{assert_same_grants, grants, manifest, needed};

const FILE: &str = "operator-rbac.yaml";

#[test]
fn cluster_role_grants_exactly_what_the_controllers_use() {
    let m = manifest(FILE);
    assert_eq!(m.cluster_roles.len(), 1);
    let granted = grants(m.cluster_roles[0].rules.as_deref().unwrap_or_default());
    assert_same_grants(&granted, &needed(&[purrify_operator::pool::PERMISSIONS, purrify_operator::task::PERMISSIONS]));
}

#[test]
fn lease_role_is_namespaced_and_exact() {
    let m = manifest(FILE);
    assert_eq!(m.roles.len(), 1);
    let role = &m.roles[0];
    let granted = grants(role.rules.as_deref().unwrap_or_default());
    assert_eq!(granted, needed(&[purrify_operator::leader::PERMISSIONS]));
    let cluster = grants(m.cluster_roles[0].rules.as_deref().unwrap_or_default());
    assert!(!cluster.keys().any(|(g, _)| g == "coordination.k8s.io"), "leases are not granted cluster-wide");
}

#[test]
fn bindings_tie_the_roles_to_the_service_account() {
    let m = manifest(FILE);
    assert_eq!(m.accounts.len(), 1);
    let sa = &m.accounts[0].metadata;
    let (sa_name, sa_ns) = (sa.name.clone().unwrap(), sa.namespace.clone().unwrap());
    let role = &m.roles[0].metadata;
    assert_eq!(role.namespace.as_deref(), Some(sa_ns.as_str()), "the Lease lives in the operator's namespace");

    let crb = &m.cluster_bindings[0];
    assert_eq!(
        (crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()),
        ("ClusterRole", m.cluster_roles[0].metadata.name.as_deref().unwrap())
    );
    let rb = &m.bindings[0];
    assert_eq!((rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()), ("Role", role.name.as_deref().unwrap()));
    assert_eq!(rb.metadata.namespace, role.namespace);
    for subjects in [crb.subjects.as_deref(), rb.subjects.as_deref()] {
        let s = &subjects.unwrap()[0];
        assert_eq!((s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()), ("ServiceAccount", sa_name.as_str(), Some(sa_ns.as_str())));
    }
}
