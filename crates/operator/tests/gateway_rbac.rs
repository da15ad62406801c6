//! `deploy/gateway-rbac.yaml` grants exactly what the gateway's Kubernetes backend calls
//! (`crates/gateway/src/domain/tasks/kubernetes/`): no wildcard, nothing unused, one namespace.
//!
//! It lives with the operator's RBAC test because `deploy/` is kept by the same hands; the
//! gateway crate does not declare its permissions in code, so the list is pinned here and
//! checked against the calls found in the gateway's source. Adding a call there without its
//! grant (or the reverse) fails this test.

mod rbac_support;

use std::collections::BTreeSet;

use rbac_support::{Grants, Permissions, assert_same_grants, grants, manifest, needed};

const FILE: &str = "gateway-rbac.yaml";

/// The gateway's calls: uploads create EnhanceTasks, a watch (list, watch) feeds the status
/// hub, a relist re-reads a task it lost (get), cancel is a merge patch on an annotation; the
/// webhooks read, create and replace the default GpuPool, whose health comes from a
/// watch-fed cache.
const GATEWAY_PERMISSIONS: Permissions<'static> = &[
    ("purrify.io", "enhancetasks", &["create", "get", "list", "watch", "patch"]),
    ("purrify.io", "gpupools", &["get", "list", "watch", "create", "update"]),
];

#[test]
fn role_grants_exactly_what_the_gateway_uses() {
    let m = manifest(FILE);
    assert!(m.cluster_roles.is_empty() && m.cluster_bindings.is_empty(), "the gateway works in one namespace: no cluster-wide grants");
    assert_eq!(m.roles.len(), 1);
    let granted = grants(m.roles[0].rules.as_deref().unwrap_or_default());
    assert_same_grants(&granted, &needed(&[GATEWAY_PERMISSIONS]));
}

#[test]
fn binding_ties_the_role_to_the_gateway_service_account() {
    let m = manifest(FILE);
    assert_eq!((m.accounts.len(), m.bindings.len()), (1, 1));
    let sa = &m.accounts[0].metadata;
    let role = &m.roles[0].metadata;
    let rb = &m.bindings[0];
    assert_eq!(role.namespace, sa.namespace, "Role in the gateway's namespace");
    assert_eq!(rb.metadata.namespace, sa.namespace);
    assert_eq!((rb.role_ref.kind.as_str(), Some(rb.role_ref.name.as_str())), ("Role", role.name.as_deref()));
    let subjects = rb.subjects.as_deref().unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    let s = &subjects[0];
    assert_eq!(
        (s.kind.as_str(), Some(s.name.as_str()), s.namespace.as_ref()),
        ("ServiceAccount", sa.name.as_deref(), sa.namespace.as_ref())
    );
}

#[test]
fn pinned_permissions_match_the_calls_in_the_gateway_source() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/src/domain/tasks/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(path)
        .expect("the gateway's Kubernetes backend")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    // One text: the `Api` fields are declared in one file and called in others.
    let source: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect::<Vec<_>>().join("\n");
    let found = api_calls(&source);
    assert!(!found.is_empty(), "no Api calls found in {path}: has the backend moved?");
    let pinned = needed(&[GATEWAY_PERMISSIONS]);
    assert_eq!(found, pinned, "the gateway's calls changed: update GATEWAY_PERMISSIONS here and deploy/{FILE} (left: found in the source)");
}

/// `(group, resource)` of the kinds the gateway has an `Api` of.
fn resource_of(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "EnhanceTask" => Some(("purrify.io", "enhancetasks")),
        "GpuPool" => Some(("purrify.io", "gpupools")),
        _ => None,
    }
}

/// The verbs (on the resource or a subresource) a `kube::Api` method costs.
fn verbs_of(method: &str) -> Option<(&'static str, &'static [&'static str])> {
    Some(match method {
        "get" | "get_opt" | "get_metadata" | "get_metadata_opt" => ("", &["get"]),
        "list" | "list_metadata" => ("", &["list"]),
        "watch" | "watch_metadata" => ("", &["watch"]),
        "create" => ("", &["create"]),
        "replace" => ("", &["update"]),
        "patch" | "patch_metadata" => ("", &["patch"]),
        "delete" => ("", &["delete"]),
        "delete_collection" => ("", &["deletecollection"]),
        "get_status" => ("/status", &["get"]),
        "patch_status" => ("/status", &["patch"]),
        "replace_status" => ("/status", &["update"]),
        "entry" | "get_subresource" | "patch_subresource" | "replace_subresource" | "create_subresource" => {
            panic!("`{method}` needs its verbs worked out by hand in this test")
        }
        _ => return None,
    })
}

/// Every `Api<Kind>` binding (`name: Api<Kind>`) and each method called on it, plus watchers
/// started on it (list + watch). A textual scan, enough for a file that names its `Api`s.
fn api_calls(source: &str) -> Grants {
    let code: String = source.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let mut apis: Vec<(String, &'static str, &'static str)> = Vec::new();
    for (i, _) in code.match_indices("Api<") {
        let kind: String = code[i + 4..].chars().take_while(|c| c.is_alphanumeric()).collect();
        let Some((group, resource)) = resource_of(&kind) else { continue };
        // `name: Api<Kind>`
        let before = code[..i].trim_end().strip_suffix(':').map(str::trim_end);
        if let Some(before) = before {
            let name: String =
                before.chars().rev().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<Vec<_>>().into_iter().rev().collect();
            if !name.is_empty() && !apis.iter().any(|(n, _, _)| *n == name) {
                apis.push((name, group, resource));
            }
        }
    }
    assert!(!apis.is_empty(), "no `name: Api<EnhanceTask|GpuPool>` binding found");

    let mut out = Grants::new();
    let mut grant = |group: &str, resource: String, verbs: &[&str]| {
        out.entry((group.to_owned(), resource)).or_default().extend(verbs.iter().map(|v| (*v).to_owned()));
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    for (name, group, resource) in &apis {
        for (i, _) in code.match_indices(name.as_str()) {
            if code[..i].chars().next_back().is_some_and(ident) {
                continue;
            }
            let rest = code[i + name.len()..].trim_start();
            if let Some(rest) = rest.strip_prefix('.') {
                let rest = rest.trim_start();
                let method: String = rest.chars().take_while(|c| ident(*c)).collect();
                if rest[method.len()..].trim_start().starts_with('(')
                    && let Some((sub, verbs)) = verbs_of(&method)
                {
                    grant(group, format!("{resource}{sub}"), verbs);
                }
            }
        }
        // `watcher(pools, ..)`, `watcher::watcher(self.tasks.clone(), ..)`, metadata watchers.
        for start in ["watcher(", "metadata_watcher("] {
            for (i, _) in code.match_indices(start) {
                let arg = code[i + start.len()..].trim_start();
                let arg = arg.strip_prefix("self.").unwrap_or(arg);
                if arg.starts_with(name.as_str()) && !arg[name.len()..].starts_with(ident) {
                    grant(group, (*resource).to_owned(), &["list", "watch"]);
                }
            }
        }
    }
    out
}

#[test]
fn the_source_scan_sees_calls_across_lines_and_ignores_comments() {
    let src = r#"
        struct B { tasks: Api<EnhanceTask>, pools: Api<GpuPool> }
        // self.tasks.delete("x") in a comment is no call
        fn f(b: &B) {
            b.tasks
                .list(&lp);
            let pools = b.pools.clone();
            let s = watcher::watcher(pools, cfg);
            b.pools.replace("p", &pp, &p);
            b.pools.patch_status("p", &pp, &patch);
            b.poolsx.delete("p");
        }
    "#;
    let found = api_calls(src);
    let verbs = |r: &str| found.get(&("purrify.io".to_owned(), r.to_owned())).cloned().unwrap_or_default();
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(verbs("enhancetasks"), set(&["list"]));
    assert_eq!(verbs("gpupools"), set(&["list", "watch", "update"]));
    assert_eq!(verbs("gpupools/status"), set(&["patch"]));
}
