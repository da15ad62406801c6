//! Every case of the values matrix renders, every manifest is a valid object of its kind, and
//! the objects fit together: pods are restricted and probed, selectors select, references
//! resolve, Secrets are only referred to.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{Object, Release};
use crate::support::{Case, NAMESPACE, app_version, matrix, render, values_of};

fn release(case: &Case) -> Release {
    Release::new(render(&values_of(case), &[]))
}

/// Runs `check` on every case, naming the case when it fails.
fn each_case(check: impl Fn(&Case, &Release)) {
    for case in matrix() {
        let r = release(&case);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&case, &r)));
        if let Err(e) = result {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            panic!("values case `{}`: {msg}", case.name);
        }
    }
}

/// Every pod the release runs: Deployment templates and bare Pods (the `helm test` hook),
/// with a name and whether it is a hook.
fn pod_specs(r: &Release) -> Vec<(String, &PodSpec, BTreeMap<String, String>, bool)> {
    let mut out = Vec::new();
    for d in r.deployments() {
        let spec = &d.spec;
        let t = &spec.template;
        let labels = t.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        out.push((format!("Deployment/{}", d.metadata.name.as_deref().unwrap()), t.spec.as_ref().unwrap(), labels, false));
    }
    for p in r.pods() {
        let hook = p.metadata.annotations.as_ref().is_some_and(|a| a.get("helm.sh/hook").is_some_and(|h| h == "test"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        out.push((format!("Pod/{}", p.metadata.name.as_deref().unwrap()), p.spec.as_ref().unwrap(), labels, hook));
    }
    out
}

fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_expressions.is_none(), "the chart selects by labels only");
    selector.match_labels.as_ref().is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn every_case_renders_into_objects_of_their_typed_kinds() {
    each_case(|case, r| {
        assert!(!r.objects.is_empty());
        // Kind/namespace/name is unique, namespaced objects are in the release namespace.
        let mut seen = BTreeSet::new();
        for d in &r.docs {
            let ns = d.value["metadata"]["namespace"].as_str().map(str::to_owned);
            assert!(seen.insert((d.kind().to_owned(), ns.clone(), d.name().to_owned())), "{} twice", d.id());
            let cluster_scoped = matches!(d.kind(), "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition");
            if cluster_scoped {
                assert_eq!(ns, None, "{} is cluster-scoped", d.id());
            } else {
                assert_eq!(ns.as_deref(), Some(NAMESPACE), "{} has no namespace", d.id());
            }
            let labels = &d.value["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/instance"], "purrify", "{} lacks the release labels", d.id());
            assert_eq!(labels["app.kubernetes.io/version"], app_version().as_str(), "{}", d.id());
        }
        // Secrets are referred to, never rendered: their values never pass through helm.
        assert_eq!(r.count("Secret"), 0, "case {}", case.name);
    });
}

#[test]
fn every_pod_is_restricted_probed_and_bounded() {
    each_case(|_, r| {
        let pods = pod_specs(r);
        assert!(pods.len() >= 3, "gateway, operator and the test pod");
        for (name, spec, _, hook) in pods {
            let psc = spec.security_context.as_ref().unwrap_or_else(|| panic!("{name}: no pod securityContext"));
            assert_eq!(psc.run_as_non_root, Some(true), "{name}");
            assert!(psc.run_as_user.is_some_and(|u| u > 0), "{name}: a fixed non-root UID");
            assert!(psc.run_as_group.is_some_and(|g| g > 0), "{name}");
            assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"), "{name}");
            assert_eq!(spec.enable_service_links, Some(false), "{name}: service links would add PURRIFY_* variables");
            assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none(), "{name}");
            let volumes: BTreeMap<&str, _> = spec.volumes.iter().flatten().map(|v| (v.name.as_str(), v)).collect();
            for v in volumes.values() {
                assert!(v.host_path.is_none(), "{name}: hostPath volume {}", v.name);
            }
            let all: Vec<&Container> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).collect();
            for c in all {
                let id = format!("{name} container {}", c.name);
                let sc = c.security_context.as_ref().unwrap_or_else(|| panic!("{id}: no securityContext"));
                assert_eq!(sc.allow_privilege_escalation, Some(false), "{id}");
                assert_eq!(sc.read_only_root_filesystem, Some(true), "{id}");
                assert_eq!(sc.run_as_non_root, Some(true), "{id}");
                assert_ne!(sc.privileged, Some(true), "{id}");
                let caps = sc.capabilities.as_ref().unwrap_or_else(|| panic!("{id}: no capabilities"));
                assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]), "{id}");
                assert!(caps.add.as_ref().is_none_or(Vec::is_empty), "{id}: adds capabilities");
                assert_eq!(sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"), "{id}");

                let res = c.resources.as_ref().unwrap_or_else(|| panic!("{id}: no resources"));
                let requests = res.requests.as_ref().unwrap_or_else(|| panic!("{id}: no requests"));
                assert!(requests.contains_key("cpu") && requests.contains_key("memory"), "{id}: requests {requests:?}");
                assert!(res.limits.as_ref().is_some_and(|l| l.contains_key("memory")), "{id}: no memory limit");

                // A one-shot hook pod is not probed: it runs to completion.
                if !hook {
                    for (what, probe) in [("liveness", &c.liveness_probe), ("readiness", &c.readiness_probe)] {
                        let probe = probe.as_ref().unwrap_or_else(|| panic!("{id}: no {what} probe"));
                        let get = probe.http_get.as_ref().unwrap_or_else(|| panic!("{id}: {what} probe is not httpGet"));
                        port_of(c, &get.port).unwrap_or_else(|| panic!("{id}: {what} probe port {:?} is not a container port", get.port));
                    }
                }
                // The root filesystem is read-only: /tmp is an emptyDir.
                let mounts: BTreeMap<&str, &str> =
                    c.volume_mounts.iter().flatten().map(|m| (m.mount_path.as_str(), m.name.as_str())).collect();
                let tmp = mounts.get("/tmp").unwrap_or_else(|| panic!("{id}: /tmp is not mounted"));
                assert!(volumes.get(tmp).is_some_and(|v| v.empty_dir.is_some()), "{id}: /tmp is not an emptyDir");
                for (path, vol) in &mounts {
                    assert!(volumes.contains_key(vol), "{id}: {path} mounts unknown volume {vol}");
                }
                let image = c.image.as_deref().unwrap_or_default();
                assert!(image.contains(':') || image.contains('@'), "{id}: image {image} has no tag or digest");
            }
        }
    });
}

fn port_of(c: &Container, port: &IntOrString) -> Option<i32> {
    let ports = c.ports.iter().flatten();
    match port {
        IntOrString::Int(p) => ports.clone().any(|cp| cp.container_port == *p).then_some(*p),
        IntOrString::String(name) => ports.clone().find(|cp| cp.name.as_deref() == Some(name)).map(|cp| cp.container_port),
    }
}

#[test]
fn selectors_and_references_resolve() {
    each_case(|case, r| {
        let pods = pod_specs(r);
        for d in r.deployments() {
            let spec = &d.spec;
            let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
            assert!(selects(&spec.selector, &labels), "Deployment {:?} does not select its own pods", d.metadata.name);
            let sa = spec.template.spec.as_ref().unwrap().service_account_name.clone().expect("a ServiceAccount of its own");
            assert!(r.has("ServiceAccount", &sa), "ServiceAccount {sa} is not rendered");
        }
        // Each Deployment's selector selects only its own pods.
        for d in r.deployments() {
            let sel = &d.spec.selector;
            let hits: Vec<&String> = pods.iter().filter(|p| selects(sel, &p.2)).map(|p| &p.0).collect();
            assert_eq!(hits.len(), 1, "Deployment {:?} selects {hits:?}", d.metadata.name);
        }
        for s in r.services() {
            let sel = LabelSelector { match_labels: s.spec.as_ref().unwrap().selector.clone(), ..LabelSelector::default() };
            let targets: Vec<_> = pods.iter().filter(|p| !p.3 && selects(&sel, &p.2)).collect();
            assert_eq!(targets.len(), 1, "Service {:?} selects {} pod templates", s.metadata.name, targets.len());
            for port in s.spec.as_ref().unwrap().ports.iter().flatten() {
                let target = port.target_port.as_ref().expect("targetPort");
                assert!(
                    targets[0].1.containers.iter().any(|c| port_of(c, target).is_some()),
                    "Service {:?} targets port {target:?}, which its pods do not have",
                    s.metadata.name
                );
            }
        }
        for o in &r.objects {
            match o {
                Object::Ingress(i) => {
                    let spec = i.spec.as_ref().unwrap();
                    let rule = &spec.rules.as_ref().unwrap()[0];
                    let host = rule.host.clone().expect("the Ingress has a host");
                    let tls = spec.tls.as_ref().expect("TLS is on");
                    assert!(tls[0].hosts.as_ref().unwrap().contains(&host), "TLS covers {host}");
                    assert!(tls[0].secret_name.is_some());
                    let paths: Vec<&str> = rule.http.as_ref().unwrap().paths.iter().map(|p| p.path.as_deref().unwrap()).collect();
                    assert!(!paths.contains(&"/"), "only the public API is routed, not /metrics: {paths:?}");
                    assert!(paths.contains(&"/api") && paths.contains(&"/ws"), "{paths:?}");
                    for p in &rule.http.as_ref().unwrap().paths {
                        let svc = p.backend.service.as_ref().unwrap();
                        let s = r.services().find(|s| s.metadata.name.as_deref() == Some(&svc.name)).expect("the backend Service");
                        let name = svc.port.as_ref().unwrap().name.clone().unwrap();
                        assert!(s.spec.as_ref().unwrap().ports.iter().flatten().any(|sp| sp.name.as_deref() == Some(&name)));
                    }
                }
                Object::Hpa(h) => {
                    let target = &h.spec.scale_target_ref;
                    let d = r.deployment(&target.name);
                    assert_eq!(d.spec.replicas, None, "with an HPA the Deployment leaves replicas to it");
                    assert!(h.spec.min_replicas.is_some_and(|m| m >= 1));
                }
                Object::Pdb(p) => {
                    let sel = p.spec.as_ref().unwrap().selector.as_ref().unwrap();
                    assert_eq!(pods.iter().filter(|x| selects(sel, &x.2)).count(), 1, "the PDB selects the gateway");
                }
                Object::NetworkPolicy(n) => {
                    let spec = n.spec.as_ref().unwrap();
                    let worker = purrify_operator::pool::builder::labels("default");
                    let matched = pods.iter().filter(|x| selects(spec.pod_selector.as_ref().unwrap(), &x.2)).count()
                        + usize::from(selects(spec.pod_selector.as_ref().unwrap(), &worker));
                    assert_eq!(matched, 1, "NetworkPolicy {:?} selects one kind of pod", n.metadata.name);
                    for rule in spec.ingress.iter().flatten() {
                        for port in rule.ports.iter().flatten() {
                            assert!(port.port.is_some(), "{:?}", n.metadata.name);
                        }
                    }
                }
                Object::ServiceMonitor(m) => {
                    // It scrapes a Service of the release that has the port it names.
                    let svc: Vec<_> =
                        r.services().filter(|s| selects(&m.spec.selector, &s.metadata.labels.clone().unwrap_or_default())).collect();
                    assert_eq!(svc.len(), 1, "ServiceMonitor {:?} selects {} Services", m.metadata.name, svc.len());
                    let ports = svc[0].spec.as_ref().unwrap().ports.clone().unwrap_or_default();
                    for e in &m.spec.endpoints {
                        assert!(ports.iter().any(|p| p.name.as_deref() == Some(e.port.as_str())), "{:?}: port {}", m.metadata.name, e.port);
                        assert_eq!(e.path, "/metrics");
                    }
                    assert_eq!(m.spec.namespace_selector.match_names, [NAMESPACE]);
                }
                Object::RoleBinding(b) => {
                    assert!(r.has(&b.role_ref.kind, &b.role_ref.name), "{:?} refers to a missing role", b.metadata.name);
                    for s in b.subjects.iter().flatten() {
                        assert!(r.has("ServiceAccount", &s.name), "{:?} binds a missing ServiceAccount", b.metadata.name);
                    }
                }
                Object::ClusterRoleBinding(b) => {
                    assert!(r.has(&b.role_ref.kind, &b.role_ref.name), "{:?} refers to a missing role", b.metadata.name);
                    for s in b.subjects.iter().flatten() {
                        assert_eq!(s.namespace.as_deref(), Some(NAMESPACE));
                        assert!(r.has("ServiceAccount", &s.name), "{:?} binds a missing ServiceAccount", b.metadata.name);
                    }
                }
                _ => {}
            }
        }
        // The Secrets the pods refer to are exactly the ones the values name.
        let mut referred = BTreeSet::new();
        for (_, spec, _, _) in &pods {
            for c in &spec.containers {
                for e in c.env.iter().flatten() {
                    if let Some(k) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
                        referred.insert((k.name.clone(), Some(k.key.clone())));
                    }
                }
                for e in c.env_from.iter().flatten() {
                    if let Some(s) = &e.secret_ref {
                        referred.insert((s.name.clone(), None));
                    }
                }
            }
            // Secrets mounted as files (the WeChat Pay certificates).
            for v in spec.volumes.iter().flatten() {
                if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                    referred.insert((name, None));
                }
            }
        }
        let named: BTreeSet<&str> = case.secrets.iter().map(|(n, _)| *n).collect();
        let referred_names: BTreeSet<&str> = referred.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(referred_names, named, "Secrets referred to");
        for (name, key) in &referred {
            if let Some(key) = key {
                let keys = case.secrets.iter().find(|(n, _)| n == name).unwrap().1;
                assert!(keys.contains(&key.as_str()), "Secret {name} key {key}");
            }
        }
    });
}

pub(crate) fn env_of<'a>(c: &'a Container, name: &str) -> Option<&'a k8s_openapi::api::core::v1::EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

fn field_ref(c: &Container, name: &str) -> Option<String> {
    env_of(c, name)?.value_from.as_ref()?.field_ref.as_ref().map(|f| f.field_path.clone())
}

pub(crate) fn value(c: &Container, name: &str) -> Option<String> {
    env_of(c, name)?.value.clone()
}

/// The Secret and key a variable comes from.
pub(crate) fn secret_ref(c: &Container, name: &str) -> Option<(String, String)> {
    let r = env_of(c, name)?.value_from.as_ref()?.secret_key_ref.as_ref()?;
    Some((r.name.clone(), r.key.clone()))
}

pub(crate) fn pair(name: &str, key: &str) -> Option<(String, String)> {
    Some((name.to_owned(), key.to_owned()))
}

#[test]
fn the_pods_know_their_namespace_and_name_from_the_downward_api() {
    each_case(|_, r| {
        let gw = &r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(field_ref(gw, "PURRIFY_NAMESPACE").as_deref(), Some("metadata.namespace"));
        assert_eq!(field_ref(gw, "POD_NAME").as_deref(), Some("metadata.name"));
        assert_eq!(gw.args.as_deref(), Some(&["--backend".to_owned(), "kubernetes".to_owned()][..]));
        let op = &r.deployment("purrify-operator").spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(field_ref(op, "POD_NAMESPACE").as_deref(), Some("metadata.namespace"), "the Lease's namespace");
        assert_eq!(field_ref(op, "POD_NAME").as_deref(), Some("metadata.name"), "the leader identity");
        // No variable is set twice (the later one would silently win).
        for c in [gw, op] {
            let mut names = BTreeSet::new();
            for e in c.env.iter().flatten() {
                assert!(names.insert(&e.name), "{} sets {} twice", c.name, e.name);
            }
        }
    });
}

#[test]
fn defaults_run_two_gateways_and_two_leader_elected_operators_from_the_app_version_images() {
    let case = &matrix()[0];
    let r = release(case);
    let version = app_version();
    let gw = &r.deployment("purrify-gateway").spec;
    let op = &r.deployment("purrify-operator").spec;
    assert_eq!((gw.replicas, op.replicas), (Some(2), Some(2)));
    let image = |s: &k8s_openapi::api::apps::v1::DeploymentSpec| s.template.spec.as_ref().unwrap().containers[0].image.clone().unwrap();
    assert_eq!(image(gw), format!("ghcr.io/purrify/purrify-gateway:{version}"));
    assert_eq!(image(op), format!("ghcr.io/purrify/purrify-operator:{version}"));
    // The operator's rollout replaces every old pod at once (a new pod cannot become Ready
    // while an old one holds the Lease).
    let strategy = op.strategy.as_ref().unwrap().rolling_update.as_ref().unwrap();
    assert_eq!(strategy.max_unavailable, Some(IntOrString::String("100%".into())));
    assert_eq!(strategy.max_surge, Some(IntOrString::Int(0)));
    // The gateway follows the leader's progress stream through the operator's Service.
    let gwc = &gw.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(value(gwc, "PURRIFY_OPERATOR_URL").as_deref(), Some("http://purrify-operator.purrify.svc:9090"));
    assert_eq!(value(gwc, "PURRIFY_STORAGE").as_deref(), Some("s3://purrify/tasks"));
    // No Ingress without a host; then X-Forwarded-For is not trusted.
    assert_eq!(r.count("Ingress"), 0);
    assert_eq!(value(gwc, "PURRIFY_TRUST_FORWARDED_FOR").as_deref(), Some("false"));
    assert_eq!((r.count("HorizontalPodAutoscaler"), r.count("PodDisruptionBudget"), r.count("GpuPool")), (0, 1, 0));
    assert_eq!((r.count("NetworkPolicy"), r.count("ServiceMonitor")), (0, 0));
    // Accounts: the signing key from its required Secret, nothing optional, anonymous
    // uploads off (the binary's default is on), the binary's other defaults.
    assert_eq!(secret_ref(gwc, "PURRIFY_JWT_KEY"), pair("purrify-jwt", "PURRIFY_JWT_KEY"));
    for name in [
        "PURRIFY_JWT_PREVIOUS_KEYS",
        "WECHAT_APPID",
        "WECHAT_SECRET",
        "PURRIFY_BOOTSTRAP_ADMIN_EMAIL",
        "PURRIFY_BOOTSTRAP_ADMIN_PASSWORD",
        "PURRIFY_CALLBACK_SECRET",
    ] {
        assert!(env_of(gwc, name).is_none(), "{name} is set without its Secret");
    }
    for (name, expected) in [
        ("PURRIFY_ALLOW_ANONYMOUS_UPLOADS", "false"),
        ("PURRIFY_ACCESS_TOKEN_SECONDS", "1800"),
        ("PURRIFY_REFRESH_TOKEN_DAYS", "30"),
        ("WECHAT_API_BASE", "https://api.weixin.qq.com"),
        ("PURRIFY_LOGINS_PER_MINUTE_PER_ADDRESS", "20"),
        ("PURRIFY_LOGINS_PER_MINUTE_PER_ACCOUNT", "5"),
        ("PURRIFY_ARGON2_MEMORY_KIB", "19456"),
        ("PURRIFY_ARGON2_ITERATIONS", "2"),
        ("PURRIFY_UPLOAD_QUOTA_BYTES", "1073741824"),
        ("PURRIFY_LOG_RETENTION_DAYS", "30"),
        ("PURRIFY_WS_PING_INTERVAL_MS", "30000"),
        ("PURRIFY_WS_AUTH_TIMEOUT_MS", "10000"),
        ("PURRIFY_CALLBACK_MAX_ATTEMPTS", "8"),
        ("PURRIFY_CALLBACK_RETRY_BASE_MS", "10000"),
        ("PURRIFY_CALLBACK_TIMEOUT_SECONDS", "10"),
    ] {
        assert_eq!(value(gwc, name).as_deref(), Some(expected), "{name}");
    }
    assert!(gwc.env_from.is_none());
    // The helm test pod runs the gateway image (bash, no curl).
    let test = r.pods().next().expect("the helm test pod");
    assert_eq!(test.spec.as_ref().unwrap().containers[0].image, Some(image(gw)));
    assert_eq!(test.spec.as_ref().unwrap().automount_service_account_token, Some(false));
}

#[test]
fn everything_on_renders_each_optional_object_with_its_settings() {
    let case = matrix().into_iter().find(|c| c.name == "everything-on").unwrap();
    let r = release(&case);
    for (kind, n) in [
        ("Ingress", 1),
        ("HorizontalPodAutoscaler", 1),
        ("PodDisruptionBudget", 1),
        ("ServiceMonitor", 2),
        ("NetworkPolicy", 3),
        ("GpuPool", 1),
        ("ConfigMap", 1),
        ("ClusterRole", 1),
        ("Role", 2),
    ] {
        assert_eq!(r.count(kind), n, "{kind}");
    }
    let gw = r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap();
    let c = &gw.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example.com/purrify/purrify-gateway:0.1.0-rc.1"));
    let op = r.deployment("purrify-operator").spec.template.spec.as_ref().unwrap();
    assert_eq!(
        op.containers[0].image.as_deref(),
        Some("ghcr.io/purrify/purrify-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(gw.image_pull_secrets.as_ref().unwrap()[0].name, "regcred");
    assert_eq!(value(c, "PURRIFY_STORAGE").as_deref(), Some("s3://photos.example/purrify/tasks"));
    assert_eq!(value(c, "PURRIFY_S3_ENDPOINT").as_deref(), Some("http://minio.storage.svc:9000"));
    assert_eq!(value(c, "PURRIFY_S3_ALLOW_HTTP").as_deref(), Some("true"));
    assert_eq!(value(c, "PURRIFY_MAX_UPLOAD_BYTES").as_deref(), Some("52428800"), "large numbers are not printed as 5.24288e+07");
    assert_eq!(value(c, "PURRIFY_MAX_PIXELS").as_deref(), Some("40000000"));
    assert_eq!(value(c, "PURRIFY_CORS_ORIGINS").as_deref(), Some("https://servicewechat.com,https://admin.example.com"));
    assert_eq!(value(c, "PURRIFY_TRUST_FORWARDED_FOR").as_deref(), Some("true"), "behind the Ingress");
    assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "purrify-pay");
    // The account Secrets under their own names and keys, and the account settings.
    assert_eq!(secret_ref(c, "PURRIFY_JWT_KEY"), pair("purrify-signing", "current"));
    assert_eq!(secret_ref(c, "PURRIFY_JWT_PREVIOUS_KEYS"), pair("purrify-signing", "previous"));
    assert_eq!(secret_ref(c, "PURRIFY_CALLBACK_SECRET"), pair("purrify-callbacks", "hmac"));
    // WeChat Pay's app id is the one WECHAT_APPID (login's too); the login secret stays.
    assert_eq!(value(c, "WECHAT_APPID").as_deref(), Some("wx0123456789abcdef"));
    assert_eq!(c.env.iter().flatten().filter(|e| e.name == "WECHAT_APPID").count(), 1);
    assert_eq!(secret_ref(c, "WECHAT_SECRET"), pair("purrify-wechat", "secret"));
    // WeChat Pay: seed 000's variables, the APIv3 key by Secret reference, the key files
    // mounted read-only from their Secret where WECHAT_CERT_DIR points.
    for (name, expected) in [
        ("WECHAT_MCH_ID", "1900000109"),
        ("WECHAT_NOTIFY_URL", "https://api.purrify.example.com/api/wechat/pay/notify/"),
        ("WECHAT_CERT_DIR", "/etc/purrify/wechatpay"),
        ("WECHAT_PAY_PUBLIC_KEY_ID", "PUB_KEY_ID_0114232134912410000000000000"),
        ("WECHAT_PAY_API_BASE", "https://wechatpay-proxy.example.com"),
        ("PURRIFY_PAY_ORDER_TTL_SECONDS", "900"),
        ("PURRIFY_PAY_RECONCILE_AFTER_SECONDS", "120"),
        ("PURRIFY_PAY_RECONCILE_INTERVAL_SECONDS", "60"),
    ] {
        assert_eq!(value(c, name).as_deref(), Some(expected), "{name}");
    }
    assert_eq!(secret_ref(c, "WECHAT_API_KEY"), pair("purrify-wechatpay", "api-v3-key"));
    assert!(env_of(c, "WECHAT_CERT_SERIAL").is_none(), "read from apiclient_cert.pem");
    let mount = c.volume_mounts.iter().flatten().find(|m| m.mount_path == "/etc/purrify/wechatpay").expect("the certificates mount");
    assert_eq!(mount.read_only, Some(true));
    let vol = gw.volumes.iter().flatten().find(|v| v.name == mount.name).unwrap();
    let secret = vol.secret.as_ref().expect("a Secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("purrify-wechatpay-certs"));
    assert_eq!(secret.default_mode, Some(0o440), "readable by the pod's group only");
    assert_eq!(secret_ref(c, "PURRIFY_BOOTSTRAP_ADMIN_EMAIL"), pair("purrify-first-admin", "email"));
    assert_eq!(secret_ref(c, "PURRIFY_BOOTSTRAP_ADMIN_PASSWORD"), pair("purrify-first-admin", "password"));
    for (name, expected) in [
        ("PURRIFY_ALLOW_ANONYMOUS_UPLOADS", "true"),
        ("PURRIFY_ACCESS_TOKEN_SECONDS", "900"),
        ("PURRIFY_REFRESH_TOKEN_DAYS", "7"),
        ("WECHAT_API_BASE", "https://wechat-proxy.example.com"),
        ("PURRIFY_LOGINS_PER_MINUTE_PER_ADDRESS", "12.5"),
        ("PURRIFY_LOGINS_PER_MINUTE_PER_ACCOUNT", "3"),
        ("PURRIFY_ARGON2_MEMORY_KIB", "32768"),
        ("PURRIFY_ARGON2_ITERATIONS", "3"),
        ("PURRIFY_UPLOAD_QUOTA_BYTES", "5368709120"),
        ("PURRIFY_LOG_RETENTION_DAYS", "90"),
        ("PURRIFY_WS_PING_INTERVAL_MS", "20000"),
        ("PURRIFY_WS_AUTH_TIMEOUT_MS", "5000"),
        ("PURRIFY_CALLBACK_MAX_ATTEMPTS", "5"),
        ("PURRIFY_CALLBACK_RETRY_BASE_MS", "2000"),
        ("PURRIFY_CALLBACK_TIMEOUT_SECONDS", "15"),
    ] {
        assert_eq!(value(c, name).as_deref(), Some(expected), "{name}");
    }
    // The largest values are printed as integers, not 1.048576e+06.
    let big = Release::new(render(
        &values_of(&case),
        &["gateway.config.argon2MemoryKib=1048576", "gateway.config.accessTokenSeconds=86400", "gateway.config.refreshTokenDays=365"],
    ));
    let bc = &big.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(value(bc, "PURRIFY_ARGON2_MEMORY_KIB").as_deref(), Some("1048576"));
    assert_eq!(value(bc, "PURRIFY_ACCESS_TOKEN_SECONDS").as_deref(), Some("86400"));
    assert_eq!(value(bc, "PURRIFY_REFRESH_TOKEN_DAYS").as_deref(), Some("365"));
    // SIGTERM grace plus the preStop pause plus a margin.
    assert_eq!(gw.termination_grace_period_seconds, Some(20 + 5 + 10));
    assert_eq!(c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap().sleep.as_ref().unwrap().seconds, 5);
    // The workers get the same storage through the ConfigMap the operator names.
    let opc = &op.containers[0];
    assert_eq!(value(opc, "PURRIFY_WORKER_CONFIG_MAP").as_deref(), Some("purrify-worker"));
    assert_eq!(value(opc, "PURRIFY_WORKER_SECRET").as_deref(), Some("purrify-s3"));
    assert_eq!(value(opc, "PURRIFY_WATCH_NAMESPACE").as_deref(), Some("purrify"));
    let cm = r.objects.iter().find_map(|o| if let Object::ConfigMap(c) = o { Some(c) } else { None }).and_then(|c| c.data.clone()).unwrap();
    assert_eq!(cm["PURRIFY_STORAGE"], "s3://photos.example/purrify/tasks");
    assert_eq!(cm["PURRIFY_S3_ENDPOINT"], "http://minio.storage.svc:9000");
    assert_eq!(cm["PURRIFY_S3_REGION"], "cn-north-1");
    assert_eq!(cm["PURRIFY_S3_ALLOW_HTTP"], "true");
    assert_eq!(cm["PURRIFY_MAX_PIXELS"], "40000000");
    assert_eq!(cm["PURRIFY_JPEG_QUALITY"], "95");
    // The default pool runs the inference image of the same release.
    let pool = r.gpu_pools().next().unwrap();
    assert_eq!(pool.metadata.name.as_deref(), Some("default"));
    assert_eq!(pool.spec.image.as_deref(), Some("ghcr.io/purrify/purrify-inference:0.1.0"));
    assert_eq!(pool.spec.execution_provider, purrify_api::ExecutionProvider::Tensorrt);
    assert_eq!(pool.spec.gpus_per_replica, 2);
    assert_eq!(pool.spec.external.len(), 1);
    // The helm test pod's image is configurable; it is let through the gateway's policy.
    let test = r.pods().next().unwrap();
    assert_eq!(test.spec.as_ref().unwrap().containers[0].image.as_deref(), Some("docker.io/library/bash:5.2"));
    let np = r
        .objects
        .iter()
        .find_map(|o| match o {
            Object::NetworkPolicy(n) if n.metadata.name.as_deref() == Some("purrify-gateway") => Some(n),
            _ => None,
        })
        .unwrap();
    let from = np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0].from.clone().unwrap();
    let test_labels = test.metadata.labels.clone().unwrap();
    assert!(from.iter().any(|p| p.pod_selector.as_ref().is_some_and(|s| selects(s, &test_labels))), "{from:?}");
}

#[test]
fn wechat_pay_notify_url_is_explicit_or_from_the_ingress_host_and_off_by_default() {
    let gateway = |r: &Release| r.deployment("purrify-gateway").spec.template.spec.clone().unwrap();
    let on = [
        "gateway.wechatPay.enabled=true",
        "gateway.wechatPay.mchId=1230000109",
        "gateway.wechatPay.appid=wx0123456789abcdef",
        "gateway.wechatPay.apiV3Key.name=pay-key",
        "gateway.wechatPay.certificatesSecret=pay-certs",
    ];
    let r = Release::new(render(&[""], &[&on[..], &["gateway.wechatPay.notifyUrl=https://pay.example.com/notify/"]].concat()));
    let spec = gateway(&r);
    let c = &spec.containers[0];
    assert_eq!(value(c, "WECHAT_NOTIFY_URL").as_deref(), Some("https://pay.example.com/notify/"));
    assert_eq!(value(c, "WECHAT_MCH_ID").as_deref(), Some("1230000109"), "an integer --set prints as one");
    assert_eq!(secret_ref(c, "WECHAT_API_KEY"), pair("pay-key", "WECHAT_API_KEY"));
    assert_eq!(value(c, "WECHAT_PAY_API_BASE").as_deref(), Some("https://api.mch.weixin.qq.com"));
    assert!(env_of(c, "WECHAT_PAY_PUBLIC_KEY_ID").is_none());
    // Neither a notification URL nor a host: the render says which value to set.
    let err = crate::support::try_render(&[""], &on, false).expect_err("no notify URL");
    assert!(err.contains("gateway.wechatPay.notifyUrl: set it, or ingress.host"), "{err}");
    // Off (the default): none of it.
    let spec = gateway(&Release::new(render(&[""], &[])));
    let c = &spec.containers[0];
    for name in ["WECHAT_MCH_ID", "WECHAT_API_KEY", "WECHAT_NOTIFY_URL", "WECHAT_CERT_DIR", "PURRIFY_PAY_ORDER_TTL_SECONDS"] {
        assert!(env_of(c, name).is_none(), "{name} without WeChat Pay");
    }
    assert!(spec.volumes.iter().flatten().all(|v| v.secret.is_none()));
}

#[test]
fn the_gpu_pool_cases_render_a_managed_and_an_external_only_pool() {
    let cases = matrix();
    let managed = release(cases.iter().find(|c| c.name == "gpu-pool-managed").unwrap());
    let pool = managed.gpu_pools().next().unwrap();
    assert_eq!(pool.spec.replicas.as_ref().map(|r| (r.min, r.max)), Some((1, 2)));
    assert_eq!(pool.spec.execution_provider, purrify_api::ExecutionProvider::Cpu);
    assert!(pool.spec.image.is_some());

    let external = release(cases.iter().find(|c| c.name == "gpu-pool-external").unwrap());
    let pool = external.gpu_pools().next().unwrap();
    assert_eq!((pool.spec.image.as_ref(), pool.spec.replicas.as_ref()), (None, None), "external-only: neither image nor replicas");
    let urls: Vec<&str> = pool.spec.external.iter().map(|e| e.url.as_str()).collect();
    assert_eq!(urls, ["http://203.0.113.7:8000", "https://gpu-2.example.com"]);
}

#[test]
fn no_ingress_leaves_out_the_ingress_and_the_forwarded_for_trust() {
    let case = matrix().into_iter().find(|c| c.name == "no-ingress").unwrap();
    let r = release(&case);
    assert_eq!(r.count("Ingress"), 0);
    let c = &r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(value(c, "PURRIFY_TRUST_FORWARDED_FOR").as_deref(), Some("false"));
    // An explicit setting wins.
    let r = Release::new(render(&values_of(&case), &["gateway.config.trustForwardedFor=true"]));
    let c = &r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(value(c, "PURRIFY_TRUST_FORWARDED_FOR").as_deref(), Some("true"));
}

#[test]
fn the_operator_can_be_left_out_and_the_gateway_pointed_elsewhere() {
    let r = Release::new(render(&[""], &["operator.enabled=false", "gateway.config.operatorUrl=http://operator.ops.svc:9090"]));
    for kind in ["ClusterRole", "ClusterRoleBinding", "ConfigMap"] {
        assert_eq!(r.count(kind), 0, "{kind}");
    }
    assert_eq!(r.deployments().count(), 1);
    let c = &r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(value(c, "PURRIFY_OPERATOR_URL").as_deref(), Some("http://operator.ops.svc:9090"));
}

#[test]
fn names_follow_the_release_and_fit_kubernetes_limits() {
    let r = Release::new(render(&[""], &[]));
    assert!(r.has("Deployment", "purrify-gateway"), "release `purrify` keeps deploy/'s names");
    let long = "a-release-name-that-is-rather-long-for-kubernetes-names";
    let out = crate::support::try_render(&[""], &[&format!("fullnameOverride={}", &long[..40])], false).unwrap();
    for d in out {
        if matches!(d.kind(), "Service" | "Deployment") {
            assert!(d.name().len() <= 63, "{} is longer than a DNS label", d.id());
        }
    }
}

#[test]
fn a_pool_with_min_above_max_is_refused_with_its_reason() {
    let err = crate::support::try_render(&[""], &["gpuPool.create=true", "gpuPool.replicas.min=3", "gpuPool.replicas.max=2"], false)
        .expect_err("min > max");
    assert!(err.contains("gpuPool.replicas: min (3) must not exceed max (2)"), "{err}");
}

#[test]
fn the_preparation_pause_is_left_out_on_clusters_before_1_30() {
    let out = std::process::Command::new(crate::support::helm_template())
        .arg(crate::support::chart_dir())
        .args(["--name", "purrify", "--namespace", "purrify", "--kube-version", "1.29"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = Release::new(crate::support::parse_stream(&String::from_utf8(out.stdout).unwrap()));
    let c = &r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0];
    assert!(c.lifecycle.is_none(), "the preStop sleep action needs Kubernetes 1.30");
}
