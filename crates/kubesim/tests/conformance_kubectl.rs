//! The real kubectl against a kubesim process: typed-client commands (protobuf bodies),
//! applying the project's CRDs and RBAC with default (server-side, Strict) validation,
//! server-side apply, `kubectl explain` from `/openapi/v3`, printer columns, delete.

mod common;

use common::kubectl::{Cluster, table_rows, yaml_docs};
use serde_json::{Value, json};

fn with_crds(c: &Cluster) {
    c.ok(&["create", "namespace", "purrify"]);
    let out = c.ok(&["apply", "-f", "crds/"]);
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/gpupools.purrify.io created"), "{out}");
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/enhancetasks.purrify.io created"), "{out}");
}

#[test]
fn typed_create_commands_send_protobuf_that_round_trips() {
    let c = Cluster::start();
    assert_eq!(c.ok(&["create", "namespace", "purrify"]).trim(), "namespace/purrify created");
    let ns = c.json(&["get", "namespace", "purrify"]);
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "purrify");

    c.ok(&["create", "configmap", "settings", "-n", "purrify", "--from-literal=mode=fast", "--from-literal=empty="]);
    assert_eq!(c.json(&["get", "configmap", "settings", "-n", "purrify"])["data"], json!({"mode": "fast", "empty": ""}));

    c.ok(&["create", "secret", "generic", "token", "-n", "purrify", "--from-literal=key=s3cr3t"]);
    let secret = c.json(&["get", "secret", "token", "-n", "purrify"]);
    assert_eq!(secret["data"]["key"], "czNjcjN0", "bytes are base64 in JSON");
    assert_eq!(secret["type"], "Opaque");

    // A pointer field set to zero must survive (replicas: 0 is not "unset").
    c.ok(&["create", "deployment", "web", "-n", "purrify", "--image=nginx:1.27", "--replicas=0", "--port=8080"]);
    let d = c.json(&["get", "deployment", "web", "-n", "purrify"]);
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}])
    );

    c.ok(&["create", "serviceaccount", "runner", "-n", "purrify"]);
    c.ok(&["create", "role", "reader", "-n", "purrify", "--verb=get,list", "--resource=pods,leases.coordination.k8s.io"]);
    let role = c.json(&["get", "role", "reader", "-n", "purrify"]);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
               {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}])
    );
    c.ok(&["create", "rolebinding", "reader", "-n", "purrify", "--role=reader", "--serviceaccount=purrify:runner"]);
    c.ok(&["create", "clusterrole", "watcher", "--verb=watch", "--resource=namespaces"]);
    c.ok(&["create", "clusterrolebinding", "watcher", "--clusterrole=watcher", "--group=ops"]);
    let crb = c.json(&["get", "clusterrolebinding", "watcher"]);
    assert_eq!(crb["roleRef"], json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "watcher"}));
    assert_eq!(crb["subjects"], json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "ops"}]));

    c.ok(&["create", "job", "once", "-n", "purrify", "--image=busybox", "--", "echo", "hi"]);
    let job = c.json(&["get", "job", "once", "-n", "purrify"]);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], json!(["echo", "hi"]));
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    c.ok(&["create", "poddisruptionbudget", "web", "-n", "purrify", "--selector=app=web", "--min-available=1"]);
    assert_eq!(c.json(&["get", "pdb", "web", "-n", "purrify"])["spec"]["minAvailable"], 1, "int-or-string as an int");
    c.ok(&["create", "ingress", "web", "-n", "purrify", "--rule=purrify.example/api*=web:8080"]);
    let ing = c.json(&["get", "ingress", "web", "-n", "purrify"]);
    assert_eq!(ing["spec"]["rules"][0]["host"], "purrify.example");
    assert_eq!(ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"], json!({"name": "web", "port": {"number": 8080}}));
    assert_eq!(ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"], "Prefix");
}

#[test]
fn crds_apply_with_default_validation_and_explain_shows_their_descriptions() {
    let c = Cluster::start();
    with_crds(&c);
    let out = c.ok(&["explain", "gpupool.spec"]);
    assert!(out.contains("KIND:       GpuPool") && out.contains("VERSION:    v1alpha1"), "{out}");
    let crd = &yaml_docs("crds/gpupools.purrify.io.yaml")[0];
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for (field, schema) in spec["properties"].as_object().unwrap() {
        assert!(out.contains(&format!("  {field}\t")), "explain lists {field}:\n{out}");
        // kubectl wraps descriptions at 80 columns: compare their first words.
        if let Some(d) = schema["description"].as_str() {
            let start: Vec<&str> = d.split_whitespace().take(3).collect();
            assert!(out.contains(&start.join(" ")), "explain shows the description of {field} ({d:?}):\n{out}");
        }
    }
    let words: Vec<&str> = spec["description"].as_str().unwrap().split_whitespace().take(4).collect();
    assert!(out.contains(&words.join(" ")), "{out}");
    let nested = c.ok(&["explain", "gpupool.spec.replicas.max"]);
    assert!(nested.contains("FIELD: max <integer>"), "{nested}");
    // Built-ins are explained too, from their protobuf layout (without descriptions).
    let deploy = c.ok(&["explain", "deployment.spec.template.spec.containers"]);
    assert!(deploy.contains("image\t<string>") && deploy.contains("ports\t<[]ContainerPort>"), "{deploy}");
}

#[test]
fn unknown_fields_fail_under_default_validation_and_warn_when_asked() {
    let c = Cluster::start();
    with_crds(&c);
    let pool = "apiVersion: purrify.io/v1alpha1\nkind: GpuPool\nmetadata: {name: typo, namespace: purrify}\nspec:\n  externall: []\n";
    let err = c.fails(&["apply", "-f", "-"], Some(pool));
    assert!(
        err.contains(
            "GpuPool in version \"v1alpha1\" cannot be handled as a GpuPool: strict decoding error: unknown field \"spec.externall\""
        ),
        "{err}"
    );
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: purrify}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx, imagePullPolicyy: Always}]\n";
    let err = c.fails(&["apply", "-f", "-"], Some(deploy));
    assert!(err.contains("unknown field \"spec.template.spec.containers[0].imagePullPolicyy\""), "{err}");

    let out = c.run(&["apply", "--validate=warn", "-f", "-"], Some(pool));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: unknown field \"spec.externall\""), "{out:?}");
    // The custom resource was pruned to its schema.
    let stored = c.json(&["get", "gpupool", "typo", "-n", "purrify"]);
    assert!(stored["spec"].get("externall").is_none(), "{stored}");
    assert_eq!(stored["spec"]["external"], json!([]), "defaulted");
}

#[test]
fn deploy_rbac_applies_client_side_then_server_side() {
    let c = Cluster::start();
    with_crds(&c);
    let docs: Vec<Value> = ["deploy/gateway-rbac.yaml", "deploy/operator-rbac.yaml"].iter().flat_map(|f| yaml_docs(f)).collect();
    let files: Vec<String> = std::fs::read_dir(common::kubectl::workspace_root().join("deploy"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    let all_docs: usize = files.iter().map(|f| yaml_docs(&format!("deploy/{f}")).len()).sum();

    let out = c.ok(&["apply", "-f", "deploy/"]);
    assert_eq!(out.lines().filter(|l| l.ends_with(" created")).count(), all_docs, "every object in deploy/ is created:\n{out}");
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        let name = d["metadata"]["name"].as_str().unwrap();
        let mut args = vec!["get", kind, name];
        if let Some(ns) = d["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let live = c.json(&args);
        // Exactly what the file says, field for field.
        for field in ["rules", "roleRef", "subjects"] {
            assert_eq!(live.get(field), d.get(field), "{kind}/{name} {field}");
        }
        assert_eq!(live["metadata"]["namespace"], d["metadata"]["namespace"], "{kind}/{name} scope");
    }
    let again = c.ok(&["apply", "-f", "deploy/"]);
    assert_eq!(again.lines().filter(|l| l.ends_with(" unchanged")).count(), all_docs, "{again}");

    let ssa = c.ok(&["apply", "--server-side", "-f", "deploy/"]);
    assert_eq!(ssa.lines().filter(|l| l.ends_with(" serverside-applied")).count(), all_docs, "{ssa}");
    let role = c.json(&["get", "role", "purrify-gateway", "-n", "purrify", "--show-managed-fields"]);
    let managers: Vec<&str> = role["metadata"]["managedFields"].as_array().unwrap().iter().filter_map(|m| m["manager"].as_str()).collect();
    assert!(managers.contains(&"kubectl") && managers.contains(&"kubectl-client-side-apply"), "{managers:?}");

    // Server-side apply of the CRDs and an example too, then a forced re-apply.
    c.ok(&["apply", "--server-side", "-f", "crds/", "--force-conflicts"]);
    let out = c.ok(&["apply", "--server-side", "-f", "examples/gpupool-external.yaml"]);
    assert_eq!(out.trim(), "gpupool.purrify.io/default serverside-applied");
    assert_eq!(c.json(&["get", "gpupool", "default", "-n", "purrify"])["spec"]["external"][1]["url"], "http://203.0.113.8:8000");
}

#[test]
fn get_prints_the_crd_columns_and_delete_removes() {
    let c = Cluster::start();
    with_crds(&c);
    c.ok(&["apply", "-f", "examples/gpupool.yaml", "-f", "examples/enhancetask.yaml"]);
    c.ok(&[
        "patch", "gpupool", "default", "-n", "purrify", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"healthyWorkers":3,"queueDepth":7,"conditions":[{"type":"Ready","status":"True","reason":"WorkersHealthy","message":"3 healthy","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
    ]);
    let rows = table_rows(&c.ok(&["get", "gpupools", "-n", "purrify"]));
    assert_eq!(rows[0], ["NAME", "READY", "WORKERS", "QUEUE", "AGE"]);
    assert_eq!(rows[1][..4], ["default", "True", "3", "7"]);
    assert!(rows[1][4].ends_with('s'), "an age: {:?}", rows[1]);

    c.ok(&[
        "patch",
        "enhancetask",
        "cat-photo",
        "-n",
        "purrify",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","progress":0.5,"worker":"pod-a"}}"#,
    ]);
    let rows = table_rows(&c.ok(&["get", "enhancetasks", "-n", "purrify", "-o", "wide"]));
    assert_eq!(rows[0], ["NAME", "PHASE", "PROGRESS", "WORKER", "AGE"]);
    assert_eq!(rows[1][..4], ["cat-photo", "Running", "0.5", "pod-a"]);
    let all = table_rows(&c.ok(&["get", "gp", "--all-namespaces"]));
    assert_eq!(all[0][..2], ["NAMESPACE", "NAME"]);
    assert_eq!(all[1][..2], ["purrify", "default"]);
    let named = c.ok(&["get", "enhancetask", "cat-photo", "-n", "purrify", "-o", "name"]);
    assert_eq!(named.trim(), "enhancetask.purrify.io/cat-photo");

    assert_eq!(c.ok(&["delete", "-f", "examples/enhancetask.yaml"]).trim(), "enhancetask.purrify.io \"cat-photo\" deleted");
    assert_eq!(c.ok(&["delete", "gpupool", "default", "-n", "purrify"]).trim(), "gpupool.purrify.io \"default\" deleted");
    let out = c.run(&["get", "gpupools", "-n", "purrify"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found in purrify namespace."), "{out:?}");
    let err = c.fails(&["get", "gpupool", "default", "-n", "purrify"], None);
    assert!(err.contains("gpupools.purrify.io \"default\" not found"), "{err}");
    c.ok(&["delete", "-f", "crds/"]);
    // kubectl's discovery cache may still name the kind (a real cluster answers the same):
    // either way the list fails.
    let err = c.fails(&["get", "gpupools", "-n", "purrify"], None);
    assert!(
        err.contains("the server doesn't have a resource type \"gpupools\"")
            || err.contains("the server could not find the requested resource"),
        "{err}"
    );
    c.ok(&["delete", "namespace", "purrify"]);
    c.fails(&["get", "namespace", "purrify"], None);
}
