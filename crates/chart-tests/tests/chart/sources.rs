//! What the chart copies has one source: RBAC from `deploy/`, CRDs from `crds/` (generated
//! from `crates/api`), appVersion from the workspace version.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::objects::{Release, typed};
use crate::support::{Doc, app_version, chart_dir, matrix, parse_stream, render, try_render, values_of, workspace_root};

/// The YAML files of a directory, by file name.
fn yaml_files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            out.insert(p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn the_chart_crds_are_the_generated_ones_byte_for_byte() {
    let generated = yaml_files(&workspace_root().join("crds"));
    let chart = yaml_files(&chart_dir().join("crds"));
    assert!(!generated.is_empty());
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        generated.keys().collect::<Vec<_>>(),
        "charts/purrify/crds/ must hold exactly crds/*.yaml (cp crds/*.yaml charts/purrify/crds/)"
    );
    for (name, bytes) in &generated {
        assert!(chart[name] == *bytes, "charts/purrify/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/purrify/crds/");
    }
    // And `--include-crds` puts them first, as typed CRDs.
    let docs = try_render(&[""], &[], true).unwrap();
    assert_eq!(docs[0].kind(), "CustomResourceDefinition");
    assert_eq!(docs.iter().filter(|d| d.kind() == "CustomResourceDefinition").count(), generated.len());
    for d in docs.iter().filter(|d| d.kind() == "CustomResourceDefinition") {
        typed(d);
    }
}

#[test]
fn the_rbac_files_the_templates_read_are_deploys_byte_for_byte() {
    for f in ["operator-rbac.yaml", "gateway-rbac.yaml"] {
        let source = std::fs::read(workspace_root().join("deploy").join(f)).unwrap();
        let copy = std::fs::read(chart_dir().join("files").join(f)).unwrap();
        assert!(copy == source, "charts/purrify/files/{f} differs from deploy/{f}: cp deploy/{f} charts/purrify/files/");
    }
}

/// What RBAC grants, without labels and comments.
fn rbac_essence(d: &Doc) -> Value {
    let v = &d.value;
    let mut out = serde_json::json!({"kind": v["kind"], "name": v["metadata"]["name"], "namespace": v["metadata"]["namespace"]});
    for k in ["rules", "roleRef", "subjects"] {
        if !v[k].is_null() {
            out[k] = v[k].clone();
        }
    }
    out
}

const RBAC_KINDS: [&str; 5] = ["ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// The RBAC objects of deploy/*.yaml, parsed (they are typed objects too).
fn deploy_rbac() -> Vec<Value> {
    let mut out = Vec::new();
    for f in ["operator-rbac.yaml", "gateway-rbac.yaml"] {
        let text = std::fs::read_to_string(workspace_root().join("deploy").join(f)).unwrap();
        for mut d in parse_stream(&text) {
            d.source = format!("deploy/{f}");
            typed(&d);
            out.push(rbac_essence(&d));
        }
    }
    out.sort_by_key(|v| v.to_string());
    out
}

#[test]
fn the_rendered_rbac_is_deploys() {
    let expected = deploy_rbac();
    assert_eq!(expected.len(), 8, "deploy/ has 2 ServiceAccounts, 2 Roles, 1 ClusterRole and 3 bindings");
    // Release `purrify` in namespace `purrify` has deploy/'s names: the whole objects match.
    for case in matrix() {
        let docs = render(&values_of(&case), &[]);
        let mut rendered: Vec<Value> = docs.iter().filter(|d| RBAC_KINDS.contains(&d.kind())).map(rbac_essence).collect();
        rendered.sort_by_key(|v| v.to_string());
        assert_eq!(
            serde_json::to_string_pretty(&rendered).unwrap(),
            serde_json::to_string_pretty(&expected).unwrap(),
            "case {}: the chart's RBAC differs from deploy/",
            case.name
        );
    }
    // Another release name changes the names, never the rules.
    let out = std::process::Command::new(crate::support::helm_template())
        .arg(chart_dir())
        .args(["--name", "photos", "--namespace", "prod"])
        .output()
        .unwrap();
    let other = Release::new(parse_stream(&String::from_utf8(out.stdout).unwrap()));
    let rules = |docs: &[Doc]| -> Vec<Value> {
        let mut r: Vec<Value> = docs.iter().filter(|d| d.kind().ends_with("Role")).map(|d| d.value["rules"].clone()).collect();
        r.sort_by_key(|v| v.to_string());
        r
    };
    let mut deploy_rules: Vec<Value> = expected.iter().filter(|v| !v["rules"].is_null()).map(|v| v["rules"].clone()).collect();
    deploy_rules.sort_by_key(|v| v.to_string());
    assert_eq!(rules(&other.docs), deploy_rules);
    assert!(other.has("ClusterRole", "photos-purrify-operator"));
    let binding = other.docs.iter().find(|d| d.kind() == "ClusterRoleBinding").unwrap();
    assert_eq!(binding.value["subjects"][0]["namespace"], "prod");
}

#[test]
fn the_app_version_is_the_workspace_version() {
    let cargo = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let mut in_package = false;
    let mut version = None;
    for line in cargo.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(v) = line.strip_prefix("version") {
            version = Some(v.trim_start().trim_start_matches('=').trim().trim_matches('"').to_owned());
        }
    }
    let version = version.expect("[workspace.package] version in Cargo.toml");
    assert_eq!(app_version(), version, "Chart.yaml appVersion must be the workspace version (Cargo.toml [workspace.package])");
    // And the image tags default to it.
    let docs = render(&[""], &[]);
    let image = docs.iter().find(|d| d.kind() == "Deployment").unwrap().value["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert!(image.as_str().unwrap().ends_with(&format!(":{version}")), "{image}");
}
