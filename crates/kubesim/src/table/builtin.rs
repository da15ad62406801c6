//! `kubectl get` columns of the built-in kinds, after the real server's printers (the
//! common columns; details such as pod readiness gates are left out).

use serde_json::{Value, json};

use super::{Cell, Column, plain};

fn path(p: &str) -> Cell {
    Cell::Path(p.to_string())
}

fn strs<'a>(v: &'a Value, p: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(p).and_then(Value::as_array).into_iter().flatten()
}

fn count(v: &Value, p: &str) -> usize {
    v.pointer(p).map(|x| x.as_object().map_or_else(|| x.as_array().map_or(0, Vec::len), serde_json::Map::len)).unwrap_or(0)
}

fn or_none(s: String) -> Value {
    json!(if s.is_empty() { "<none>".to_string() } else { s })
}

fn pod_ready(o: &Value) -> Value {
    let total = count(o, "/spec/containers");
    let ready = strs(o, "/status/containerStatuses").filter(|c| c["ready"] == true).count();
    json!(format!("{ready}/{total}"))
}

fn pod_restarts(o: &Value) -> Value {
    json!(strs(o, "/status/containerStatuses").filter_map(|c| c["restartCount"].as_i64()).sum::<i64>())
}

fn ports(o: &Value) -> Value {
    let p: Vec<String> = strs(o, "/spec/ports")
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(n) => format!("{}:{n}/{proto}", plain(&p["port"])),
                None => format!("{}/{proto}", plain(&p["port"])),
            }
        })
        .collect();
    or_none(p.join(","))
}

fn external_ip(o: &Value) -> Value {
    let mut ips: Vec<String> = strs(o, "/spec/externalIPs").map(plain).collect();
    ips.extend(strs(o, "/status/loadBalancer/ingress").map(|i| plain(if i["ip"].is_null() { &i["hostname"] } else { &i["ip"] })));
    match (o.pointer("/spec/type").and_then(Value::as_str), ips.is_empty()) {
        (Some("LoadBalancer"), true) => json!("<pending>"),
        (Some("ExternalName"), _) => json!(plain(&o["spec"]["externalName"])),
        _ => or_none(ips.join(",")),
    }
}

fn selector(o: &Value) -> Value {
    let sel = o
        .pointer("/spec/selector/matchLabels")
        .or_else(|| o.pointer("/spec/selector"))
        .or_else(|| o.pointer("/spec/podSelector/matchLabels"));
    let pairs: Vec<String> = sel
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.is_string())
        .map(|(k, v)| format!("{k}={}", plain(v)))
        .collect();
    or_none(pairs.join(","))
}

fn deploy_ready(o: &Value) -> Value {
    json!(format!(
        "{}/{}",
        o.pointer("/status/readyReplicas").and_then(Value::as_i64).unwrap_or(0),
        o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)
    ))
}

fn containers(o: &Value) -> Value {
    or_none(strs(o, "/spec/template/spec/containers").map(|c| plain(&c["name"])).collect::<Vec<_>>().join(","))
}

fn images(o: &Value) -> Value {
    or_none(strs(o, "/spec/template/spec/containers").map(|c| plain(&c["image"])).collect::<Vec<_>>().join(","))
}

fn data_count(o: &Value) -> Value {
    json!(count(o, "/data") + count(o, "/binaryData"))
}

fn secrets_count(o: &Value) -> Value {
    json!(count(o, "/secrets"))
}

fn role_ref(o: &Value) -> Value {
    json!(format!("{}/{}", plain(&o["roleRef"]["kind"]), plain(&o["roleRef"]["name"])))
}

fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = strs(o, "/subjects")
        .filter(|s| s["kind"] == kind)
        .map(|s| if kind == "ServiceAccount" { format!("{}/{}", plain(&s["namespace"]), plain(&s["name"])) } else { plain(&s["name"]) })
        .collect();
    json!(names.join(", "))
}

fn completions(o: &Value) -> Value {
    let want = o.pointer("/spec/completions").and_then(Value::as_i64).unwrap_or(1);
    json!(format!("{}/{want}", o.pointer("/status/succeeded").and_then(Value::as_i64).unwrap_or(0)))
}

fn hpa_ref(o: &Value) -> Value {
    json!(format!("{}/{}", plain(&o["spec"]["scaleTargetRef"]["kind"]), plain(&o["spec"]["scaleTargetRef"]["name"])))
}

fn hosts(o: &Value) -> Value {
    json!(strs(o, "/spec/rules").map(|r| r["host"].as_str().unwrap_or("*").to_string()).collect::<Vec<_>>().join(","))
}

fn event_object(o: &Value) -> Value {
    let r = if o.get("regarding").is_some() { &o["regarding"] } else { &o["involvedObject"] };
    json!(format!("{}/{}", plain(&r["kind"]).to_lowercase(), plain(&r["name"])))
}

fn last_seen(o: &Value) -> Value {
    let t = ["/lastTimestamp", "/eventTime", "/deprecatedLastTimestamp", "/metadata/creationTimestamp"]
        .iter()
        .find_map(|p| o.pointer(p).and_then(Value::as_str));
    json!(t.and_then(super::age).unwrap_or_else(|| "<unknown>".into()))
}

pub fn columns(group: &str, plural: &str) -> Vec<Column> {
    let c = Column::new;
    let age = || c("Age", "date", 0, path(".metadata.creationTimestamp"));
    let created_at = || c("Created At", "string", 0, path(".metadata.creationTimestamp"));
    let mut cols = vec![c("Name", "string", 0, Cell::Name)];
    cols[0].description = "Name must be unique within a namespace.".into();
    let rest: Vec<Column> = match (group, plural) {
        ("", "namespaces") => vec![c("Status", "string", 0, path(".status.phase")), age()],
        ("", "pods") => vec![
            c("Ready", "string", 0, Cell::Computed(pod_ready)),
            c("Status", "string", 0, path(".status.phase")),
            c("Restarts", "integer", 0, Cell::Computed(pod_restarts)),
            age(),
            c("IP", "string", 1, path(".status.podIP")),
            c("Node", "string", 1, path(".spec.nodeName")),
        ],
        ("", "services") => vec![
            c("Type", "string", 0, path(".spec.type")),
            c("Cluster-IP", "string", 0, path(".spec.clusterIP")),
            c("External-IP", "string", 0, Cell::Computed(external_ip)),
            c("Port(s)", "string", 0, Cell::Computed(ports)),
            age(),
            c("Selector", "string", 1, Cell::Computed(selector)),
        ],
        ("", "configmaps") => vec![c("Data", "integer", 0, Cell::Computed(data_count)), age()],
        ("", "secrets") => vec![c("Type", "string", 0, path(".type")), c("Data", "integer", 0, Cell::Computed(data_count)), age()],
        ("", "serviceaccounts") => vec![c("Secrets", "integer", 0, Cell::Computed(secrets_count)), age()],
        ("", "events") | ("events.k8s.io", "events") => {
            cols.clear();
            vec![
                c("Last Seen", "string", 0, Cell::Computed(last_seen)),
                c("Type", "string", 0, path(".type")),
                c("Reason", "string", 0, path(".reason")),
                c("Object", "string", 0, Cell::Computed(event_object)),
                c("Message", "string", 0, if group.is_empty() { path(".message") } else { path(".note") }),
            ]
        }
        ("apps", "deployments") => vec![
            c("Ready", "string", 0, Cell::Computed(deploy_ready)),
            c("Up-to-date", "integer", 0, path(".status.updatedReplicas")),
            c("Available", "integer", 0, path(".status.availableReplicas")),
            age(),
            c("Containers", "string", 1, Cell::Computed(containers)),
            c("Images", "string", 1, Cell::Computed(images)),
            c("Selector", "string", 1, Cell::Computed(selector)),
        ],
        ("batch", "jobs") => vec![
            c("Completions", "string", 0, Cell::Computed(completions)),
            age(),
            c("Containers", "string", 1, Cell::Computed(containers)),
            c("Images", "string", 1, Cell::Computed(images)),
        ],
        ("autoscaling", _) => vec![
            c("Reference", "string", 0, Cell::Computed(hpa_ref)),
            c("MinPods", "integer", 0, path(".spec.minReplicas")),
            c("MaxPods", "integer", 0, path(".spec.maxReplicas")),
            c("Replicas", "integer", 0, path(".status.currentReplicas")),
            age(),
        ],
        ("policy", _) => vec![
            c("Min Available", "string", 0, path(".spec.minAvailable")),
            c("Max Unavailable", "string", 0, path(".spec.maxUnavailable")),
            c("Allowed Disruptions", "integer", 0, path(".status.disruptionsAllowed")),
            age(),
        ],
        ("networking.k8s.io", "ingresses") => {
            vec![c("Class", "string", 0, path(".spec.ingressClassName")), c("Hosts", "string", 0, Cell::Computed(hosts)), age()]
        }
        ("networking.k8s.io", "networkpolicies") => vec![c("Pod-Selector", "string", 0, Cell::Computed(selector)), age()],
        ("rbac.authorization.k8s.io", "roles" | "clusterroles") | ("apiextensions.k8s.io", _) => vec![created_at()],
        ("rbac.authorization.k8s.io", _) => vec![
            c("Role", "string", 0, Cell::Computed(role_ref)),
            age(),
            c("Users", "string", 1, Cell::Computed(|o| subjects(o, "User"))),
            c("Groups", "string", 1, Cell::Computed(|o| subjects(o, "Group"))),
            c("ServiceAccounts", "string", 1, Cell::Computed(|o| subjects(o, "ServiceAccount"))),
        ],
        ("coordination.k8s.io", _) => vec![c("Holder", "string", 0, path(".spec.holderIdentity")), age()],
        _ => vec![age()],
    };
    cols.extend(rest);
    cols
}
