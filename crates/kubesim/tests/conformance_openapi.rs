//! What kubectl negotiates with the server, at the HTTP level: `/openapi/v3` and
//! `/openapi/v2` (following CRDs), `fieldValidation`, Table output and protobuf bodies.

mod common;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

async fn get_json(url: &str, accept: &str) -> (u16, Vec<(String, String)>, Value) {
    let (code, headers, body) = raw_full("GET", url, &[("Accept", accept)], None).await;
    (code, headers, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn index_url(base: &str, gv: &str) -> Option<String> {
    let (_, _, index) = get_json(&format!("{base}/openapi/v3"), "application/json").await;
    index["paths"][gv]["serverRelativeURL"].as_str().map(str::to_string)
}

#[tokio::test]
async fn openapi_v3_documents_follow_the_crds() {
    let sim = start().await;
    let base = sim.handle.url();
    assert!(index_url(&base, "api/v1").await.is_some());
    assert!(index_url(&base, "apis/rbac.authorization.k8s.io/v1").await.is_some());
    assert!(index_url(&base, "apis/kubesim.test/v1").await.is_none());

    install_gadget_crd(&sim.client).await;
    let url = index_url(&base, "apis/kubesim.test/v1").await.expect("the CRD's group-version is listed");
    let (code, headers, doc) = get_json(&format!("{base}{url}"), "application/json").await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "cache-control"), Some("public, immutable"));
    let gadget = &doc["components"]["schemas"]["test.kubesim.v1.Gadget"];
    assert_eq!(gadget["x-kubernetes-group-version-kind"], json!([{"group": "kubesim.test", "version": "v1", "kind": "Gadget"}]));
    assert_eq!(gadget["properties"]["spec"]["properties"]["image"]["maxLength"], 64, "the CRD's own schema");
    assert!(gadget["properties"]["metadata"]["allOf"][0]["$ref"].as_str().unwrap().ends_with("meta.v1.ObjectMeta"));
    assert!(doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["labels"].is_object());
    let patch = &doc["paths"]["/apis/kubesim.test/v1/namespaces/{namespace}/gadgets/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Gadget");
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));
    assert!(patch["requestBody"]["content"].get("application/strategic-merge-patch+json").is_none(), "no strategic merge for CRs");
    assert!(doc["paths"].get("/apis/kubesim.test/v1/namespaces/{namespace}/gadgets/{name}/status").is_some());

    // A changed CRD gets a new hash; the old link redirects to it.
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    let add = json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"color": {"type": "string"}}}}}}}]}});
    crds.patch("gadgets.kubesim.test", &PatchParams::default(), &Patch::Merge(&add)).await.unwrap();
    let new_url = index_url(&base, "apis/kubesim.test/v1").await.unwrap();
    assert_ne!(new_url, url);
    let (code, headers, _) = raw_full("GET", &format!("{base}{url}"), &[], None).await;
    assert_eq!(code, 301);
    assert_eq!(header(&headers, "location"), Some(new_url.as_str()));
    let (_, _, doc) = get_json(&format!("{base}{new_url}"), "application/json").await;
    assert_eq!(doc["components"]["schemas"]["test.kubesim.v1.Gadget"]["properties"]["spec"]["properties"]["color"]["type"], "string");

    crds.delete("gadgets.kubesim.test", &DeleteParams::default()).await.unwrap();
    assert!(index_url(&base, "apis/kubesim.test/v1").await.is_none());
    assert_eq!(get_json(&format!("{base}/openapi/v3/apis/kubesim.test/v1"), "application/json").await.0, 404);
}

#[tokio::test]
async fn openapi_v2_in_json_or_protobuf_as_negotiated() {
    let sim = start().await;
    install_gadget_crd(&sim.client).await;
    let url = format!("{}/openapi/v2", sim.handle.url());
    for accept in ["application/json", "*/*", ""] {
        let (code, headers, doc) = get_json(&url, accept).await;
        assert_eq!(code, 200, "Accept {accept:?}");
        assert_eq!(header(&headers, "content-type"), Some("application/json"));
        assert_eq!(doc["swagger"], "2.0");
        let gadget = &doc["definitions"]["test.kubesim.v1.Gadget"];
        assert_eq!(gadget["x-kubernetes-group-version-kind"][0]["kind"], "Gadget");
        assert_eq!(
            doc["definitions"]["io.k8s.api.rbac.v1.ClusterRole"]["x-kubernetes-group-version-kind"][0]["group"],
            "rbac.authorization.k8s.io"
        );
        let params =
            doc["paths"]["/apis/kubesim.test/v1/namespaces/{namespace}/gadgets/{name}"]["patch"]["parameters"].as_array().unwrap().clone();
        assert!(params.iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query" && p["type"] == "string"));
    }
    // client-go's OpenAPISchema() asks for protobuf only (kubectl 1.27 and 1.28 validate with it).
    let pb = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let (code, headers, body) = raw_full("GET", &url, &[("Accept", pb)], None).await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf"));
    assert!(body.starts_with("\n\u{3}2.0\u{12}"), "Document.swagger then Document.info");
    assert!(
        body.contains("test.kubesim.v1.Gadget") && body.contains("x-kubernetes-group-version-kind") && body.contains("fieldValidation")
    );
    // v3 comes in JSON only: 406 for a client that accepts nothing else.
    let v3 = format!("{}/openapi/v3/api/v1", sim.handle.url());
    let (code, _, status) = get_json(&v3, "application/com.github.proto-openapi.spec.v3@v1.0+protobuf").await;
    assert_eq!(code, 406);
    assert_eq!(status["reason"], "NotAcceptable");
}

#[tokio::test]
async fn field_validation_strict_warn_and_ignore() {
    let sim = start().await;
    install_gadget_crd(&sim.client).await;
    let base = format!("{}/apis/kubesim.test/v1/namespaces/default/gadgets", sim.handle.url());
    let body = |name: &str| {
        json!({"apiVersion": "kubesim.test/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": {"image": "a", "bogus": 1, "workers": [{"name": "w", "typo": true}]}}).to_string()
    };
    let post = |q: &'static str, name: &'static str| {
        let base = base.clone();
        let b = body(name);
        async move { raw_full("POST", &format!("{base}{q}"), &[("Content-Type", "application/json")], Some(b.as_bytes())).await }
    };

    let (code, _, err) = post("?fieldValidation=Strict", "strict").await;
    assert_eq!(code, 400);
    assert!(
        err.contains(r#"Gadget in version \"v1\" cannot be handled as a Gadget: strict decoding error: unknown field \"spec.bogus\", unknown field \"spec.workers[0].typo\""#),
        "{err}"
    );
    let (code, headers, created) = post("", "warned").await;
    assert_eq!(code, 201);
    let warnings: Vec<&str> = headers.iter().filter(|(k, _)| k == "warning").map(|(_, v)| v.as_str()).collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.bogus\"""#, r#"299 - "unknown field \"spec.workers[0].typo\"""#]);
    let created: Value = serde_json::from_str(&created).unwrap();
    assert!(created["spec"].get("bogus").is_none(), "pruned: {created}");
    let (code, headers, _) = post("?fieldValidation=Ignore", "ignored").await;
    assert_eq!(code, 201);
    assert!(header(&headers, "warning").is_none());
    assert_eq!(post("?fieldValidation=Loose", "bad").await.0, 400);

    // Built-ins are checked against their protobuf layout.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labelz": {}}, "datum": {}}).to_string();
    let url = format!("{}/api/v1/namespaces/default/configmaps?fieldValidation=Strict", sim.handle.url());
    let (code, _, err) = raw_full("POST", &url, &[("Content-Type", "application/json")], Some(cm.as_bytes())).await;
    assert_eq!(code, 400);
    assert!(err.contains(r#"unknown field \"datum\", unknown field \"metadata.labelz\""#), "{err}");
}

#[tokio::test]
async fn tables_for_kubectl_get() {
    let sim = start().await;
    let gadgets = install_gadget_crd(&sim.client).await;
    gadgets.create(&Default::default(), &gadget("g1", json!({"image": "a"}))).await.unwrap();
    let url = format!("{}/apis/kubesim.test/v1/namespaces/default/gadgets", sim.handle.url());
    let (code, headers, table) = get_json(&url, TABLE).await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json;as=Table;g=meta.k8s.io;v=v1"));
    assert_eq!(table["kind"], "Table");
    let names: Vec<&str> = table["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Name", "Age"], "a CRD without printer columns");
    assert_eq!(table["rows"][0]["cells"][0], "g1");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert!(table["metadata"]["resourceVersion"].is_string());

    let (_, _, full) = get_json(&format!("{url}?includeObject=Object"), TABLE).await;
    assert_eq!(full["rows"][0]["object"]["spec"]["image"], "a");
    let (_, _, one) = get_json(&format!("{url}/g1?includeObject=None"), TABLE).await;
    assert_eq!(one["rows"].as_array().unwrap().len(), 1);
    assert!(one["rows"][0].get("object").is_none());

    let (_, _, ns) = get_json(&format!("{}/api/v1/namespaces/kube-system", sim.handle.url()), TABLE).await;
    assert_eq!(ns["columnDefinitions"][1]["name"], "Status");
    assert_eq!(ns["rows"][0]["cells"][1], "Active");
    // A plain JSON request still gets the object.
    let (_, _, plain) = get_json(&format!("{url}/g1"), "application/json").await;
    assert_eq!(plain["kind"], "Gadget");
}

#[tokio::test]
async fn protobuf_bodies_of_built_ins_are_decoded() {
    let sim = start().await;
    // What `kubectl create namespace purrify` sends.
    let body: &[u8] = b"k8s\x00\x0a\x0f\x0a\x02v1\x12\x09Namespace\x12\x1f\x0a\x17\x0a\x07purrify\x12\x00\x1a\x00\x22\x00\x2a\x00\x32\x00\x38\x00\x42\x00\x12\x00\x1a\x02\x0a\x00\x1a\x00\x22\x00";
    let url = format!("{}/api/v1/namespaces?fieldManager=kubectl-create&fieldValidation=Strict", sim.handle.url());
    let pb = [("Content-Type", "application/vnd.kubernetes.protobuf"), ("Accept", "application/vnd.kubernetes.protobuf,application/json")];
    let (code, headers, created) = raw_full("POST", &url, &pb, Some(body)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"), "answered in JSON, which the client also accepts");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["metadata"]["name"], "purrify");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "kubectl-create");

    let (code, _, err) = raw_full("POST", &url, &pb, Some(b"not protobuf")).await;
    assert_eq!(code, 400);
    assert!(err.contains("error decoding protobuf body"), "{err}");
}

#[tokio::test]
async fn aggregated_discovery_only_in_v2() {
    let sim = start().await;
    let url = format!("{}/apis", sim.handle.url());
    let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (_, headers, doc) = get_json(&url, v2).await;
    assert_eq!(header(&headers, "content-type"), Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"));
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    // kubectl 1.29 and older ask for v2beta1 first: they get the plain list they also accept.
    let v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let (_, headers, doc) = get_json(&url, v2beta1).await;
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(doc["kind"], "APIGroupList");
}
