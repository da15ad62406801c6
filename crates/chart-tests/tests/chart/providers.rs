//! Outside AI providers (issue 13): the key that seals their API keys reaches the gateway only
//! as a Secret reference, the call-policy settings render with the gateway's defaults and
//! within its ranges, the public URL workflows call back at follows the Ingress unless set,
//! and the chart's NetworkPolicies leave the gateway's egress (HTTPS to providers) open.

use k8s_openapi::api::core::v1::Container;

use crate::objects::{Object, Release};
use crate::render::{env_of, pair, secret_ref, value};
use crate::support::{matrix, render, try_render, values_of};

fn gateway(r: &Release) -> Container {
    r.deployment("purrify-gateway").spec.template.spec.as_ref().unwrap().containers[0].clone()
}

/// The schema's refusal of these values (a values file, then `--set`s), which must name `expected`.
fn assert_refused(values: &str, sets: &[&str], expected: &str) {
    match try_render(&[values], sets, false) {
        Ok(_) => panic!("{values}{sets:?} was accepted"),
        Err(msg) => {
            assert!(msg.contains("values don't meet the specifications of the schema"), "{sets:?}: not a schema refusal:\n{msg}");
            assert!(msg.contains(expected), "{values}{sets:?}: the message does not say {expected:?}:\n{msg}");
        }
    }
}

/// The call-policy variables and the gateway's defaults (crates/gateway/src/config.rs,
/// `ProviderConfig`), which the chart's defaults must be.
const DEFAULTS: [(&str, &str); 8] = [
    ("PURRIFY_PROVIDER_ATTEMPTS", "3"),
    ("PURRIFY_PROVIDER_RETRY_BASE_MS", "500"),
    ("PURRIFY_PROVIDER_TIMEOUT_SECONDS", "120"),
    ("PURRIFY_PROVIDER_BREAKER_FAILURES", "5"),
    ("PURRIFY_PROVIDER_BREAKER_COOLDOWN_SECONDS", "30"),
    ("PURRIFY_PROVIDER_POLL_MS", "3000"),
    ("PURRIFY_PROVIDER_CONCURRENCY", "16"),
    ("PURRIFY_PROVIDER_MAX_RESULT_BYTES", "209715200"),
];

#[test]
fn the_provider_key_comes_only_from_its_secret() {
    // Not set by default: the gateway then stores no API key (only the built-in provider).
    let c = gateway(&Release::new(render(&[""], &[])));
    assert!(env_of(&c, "PURRIFY_PROVIDER_KEY").is_none(), "the provider key is set without its Secret");

    let r = Release::new(render(&[""], &["gateway.secrets.providerKey.name=purrify-provider-key"]));
    let c = gateway(&r);
    let var = env_of(&c, "PURRIFY_PROVIDER_KEY").expect("PURRIFY_PROVIDER_KEY with its Secret named");
    assert_eq!(var.value, None, "the key is never a plain value");
    assert_eq!(secret_ref(&c, "PURRIFY_PROVIDER_KEY"), pair("purrify-provider-key", "PURRIFY_PROVIDER_KEY"));
    assert_eq!(c.env.iter().flatten().filter(|e| e.name == "PURRIFY_PROVIDER_KEY").count(), 1);
    assert_eq!(r.count("Secret"), 0, "the chart never makes the Secret: the key never passes through helm");

    // Every case of the matrix that names the Secret refers to it, under its own name and key.
    for case in matrix() {
        let c = gateway(&Release::new(render(&values_of(&case), &[])));
        let expected = match case.name {
            "everything-on" | "no-ingress" => pair("purrify-providers", "sealing-key"),
            "external-database" => pair("purrify-provider-key", "PURRIFY_PROVIDER_KEY"),
            _ => None,
        };
        assert_eq!(secret_ref(&c, "PURRIFY_PROVIDER_KEY"), expected, "case {}", case.name);
        assert!(env_of(&c, "PURRIFY_PROVIDER_KEY").is_none_or(|e| e.value.is_none()), "case {}", case.name);
    }
}

#[test]
fn a_provider_key_given_as_a_value_is_refused() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    // No value field anywhere in the chart takes the key itself.
    assert_refused(
        "",
        &[&format!("gateway.secrets.providerKey.value={hex}")],
        "gateway.secrets.providerKey: Additional property value is not allowed",
    );
    assert_refused("", &[&format!("gateway.config.providerKey={hex}")], "gateway.config: Additional property providerKey is not allowed");
    // Nor through the plain extra environment; a Secret reference there is fine.
    let plain =
        format!("gateway:\n  extraEnv:\n    - {{name: RUST_LOG, value: info}}\n    - {{name: PURRIFY_PROVIDER_KEY, value: \"{hex}\"}}\n");
    assert_refused(&plain, &[], "gateway.extraEnv.1: Must not validate the schema (not)");
    let by_ref = "gateway:\n  extraEnv:\n    - {name: PURRIFY_PROVIDER_KEY, valueFrom: {secretKeyRef: {name: elsewhere, key: k}}}\n";
    let c = gateway(&Release::new(render(&[by_ref], &[])));
    assert_eq!(secret_ref(&c, "PURRIFY_PROVIDER_KEY"), pair("elsewhere", "k"));
    // The Secret's name and key are Kubernetes names.
    assert_refused("", &["gateway.secrets.providerKey.name=Provider Key"], "gateway.secrets.providerKey.name: Does not match pattern");
    assert_refused(
        "",
        &["gateway.secrets.providerKey.key="],
        "gateway.secrets.providerKey.key: String length must be greater than or equal to 1",
    );
    assert_refused("", &["gateway.secrets.providerKey.key=a/b"], "gateway.secrets.providerKey.key: Does not match pattern");
}

#[test]
fn the_call_policy_renders_with_the_gateways_defaults_and_as_set() {
    let c = gateway(&Release::new(render(&[""], &[])));
    for (name, expected) in DEFAULTS {
        assert_eq!(value(&c, name).as_deref(), Some(expected), "{name}");
    }
    let everything = matrix().into_iter().find(|c| c.name == "everything-on").unwrap();
    let c = gateway(&Release::new(render(&values_of(&everything), &[])));
    for (name, expected) in [
        ("PURRIFY_PROVIDER_ATTEMPTS", "4"),
        ("PURRIFY_PROVIDER_RETRY_BASE_MS", "250"),
        ("PURRIFY_PROVIDER_TIMEOUT_SECONDS", "600"),
        ("PURRIFY_PROVIDER_BREAKER_FAILURES", "8"),
        ("PURRIFY_PROVIDER_BREAKER_COOLDOWN_SECONDS", "45"),
        ("PURRIFY_PROVIDER_POLL_MS", "1500"),
        ("PURRIFY_PROVIDER_CONCURRENCY", "64"),
        ("PURRIFY_PROVIDER_MAX_RESULT_BYTES", "524288000"),
    ] {
        assert_eq!(value(&c, name).as_deref(), Some(expected), "{name}");
    }
    // The bounds are accepted, and large numbers are printed as integers, not 1.073741824e+10.
    let c = gateway(&Release::new(render(
        &[""],
        &[
            "gateway.config.providerAttempts=10",
            "gateway.config.providerTimeoutSeconds=3600",
            "gateway.config.providerConcurrency=1024",
            "gateway.config.providerPollMs=10",
            "gateway.config.providerBreakerFailures=4294967295",
            "gateway.config.providerMaxResultBytes=10737418240",
        ],
    )));
    for (name, expected) in [
        ("PURRIFY_PROVIDER_ATTEMPTS", "10"),
        ("PURRIFY_PROVIDER_TIMEOUT_SECONDS", "3600"),
        ("PURRIFY_PROVIDER_CONCURRENCY", "1024"),
        ("PURRIFY_PROVIDER_POLL_MS", "10"),
        ("PURRIFY_PROVIDER_BREAKER_FAILURES", "4294967295"),
        ("PURRIFY_PROVIDER_MAX_RESULT_BYTES", "10737418240"),
    ] {
        assert_eq!(value(&c, name).as_deref(), Some(expected), "{name}");
    }
    let c = gateway(&Release::new(render(&[""], &["gateway.config.providerAttempts=1", "gateway.config.providerMaxResultBytes=1024"])));
    assert_eq!(value(&c, "PURRIFY_PROVIDER_ATTEMPTS").as_deref(), Some("1"));
    assert_eq!(value(&c, "PURRIFY_PROVIDER_MAX_RESULT_BYTES").as_deref(), Some("1024"));
}

#[test]
fn call_policy_settings_outside_what_the_gateway_accepts_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("gateway.config.providerAttempts=0", "gateway.config.providerAttempts: Must be greater than or equal to 1"),
        ("gateway.config.providerAttempts=11", "gateway.config.providerAttempts: Must be less than or equal to 10"),
        ("gateway.config.providerRetryBaseMs=0", "gateway.config.providerRetryBaseMs: Must be greater than or equal to 1"),
        ("gateway.config.providerTimeoutSeconds=0", "gateway.config.providerTimeoutSeconds: Must be greater than or equal to 1"),
        ("gateway.config.providerTimeoutSeconds=3601", "gateway.config.providerTimeoutSeconds: Must be less than or equal to 3600"),
        ("gateway.config.providerBreakerFailures=0", "gateway.config.providerBreakerFailures: Must be greater than or equal to 1"),
        ("gateway.config.providerBreakerFailures=4294967296", "gateway.config.providerBreakerFailures: Must be less than or equal to"),
        (
            "gateway.config.providerBreakerCooldownSeconds=0",
            "gateway.config.providerBreakerCooldownSeconds: Must be greater than or equal to 1",
        ),
        ("gateway.config.providerPollMs=9", "gateway.config.providerPollMs: Must be greater than or equal to 10"),
        ("gateway.config.providerConcurrency=0", "gateway.config.providerConcurrency: Must be greater than or equal to 1"),
        ("gateway.config.providerConcurrency=1025", "gateway.config.providerConcurrency: Must be less than or equal to 1024"),
        ("gateway.config.providerMaxResultBytes=1023", "gateway.config.providerMaxResultBytes: Must be greater than or equal to 1024"),
        ("gateway.config.providerAttempts=three", "gateway.config.providerAttempts: Invalid type. Expected: integer"),
        ("gateway.config.publicUrl=api.example.com", "gateway.config.publicUrl: Does not match pattern"),
        ("gateway.config.publicUrl=ftp://api.example.com", "gateway.config.publicUrl: Does not match pattern"),
        ("gateway.config.publicUrl=https://api.example.com/?x=1", "gateway.config.publicUrl: Does not match pattern"),
        ("gateway.config.publicUrl=https://", "gateway.config.publicUrl: Does not match pattern"),
    ];
    for (set, expected) in cases {
        assert_refused("", &[set], expected);
    }
    // A fraction in a values file is a number, not an integer.
    assert_refused(
        "gateway:\n  config:\n    providerPollMs: 2.5\n",
        &[],
        "gateway.config.providerPollMs: Invalid type. Expected: integer, given: number",
    );
}

#[test]
fn the_public_url_is_the_one_set_or_the_ingress_host_and_absent_without_either() {
    let url = |values: &[&str], sets: &[&str]| value(&gateway(&Release::new(render(values, sets))), "PURRIFY_PUBLIC_URL");
    assert_eq!(url(&[""], &[]), None, "no Ingress, nothing set: workflows have nowhere to call back");
    let ingress = ["ingress.enabled=true", "ingress.host=api.example.com"];
    assert_eq!(url(&[""], &ingress).as_deref(), Some("https://api.example.com"), "the Ingress with its TLS");
    assert_eq!(url(&[""], &[&ingress[..], &["ingress.tls.enabled=false"]].concat()).as_deref(), Some("http://api.example.com"));
    // Set, it wins over the Ingress (e.g. TLS ends at a load balancer in front of it) and
    // stands without one.
    let set = "gateway.config.publicUrl=https://purrify.example.com/gateway";
    assert_eq!(
        url(&[""], &[&ingress[..], &["ingress.tls.enabled=false", set]].concat()).as_deref(),
        Some("https://purrify.example.com/gateway")
    );
    assert_eq!(url(&[""], &[set]).as_deref(), Some("https://purrify.example.com/gateway"));
    assert_eq!(url(&[""], &["gateway.config.publicUrl=http://10.0.0.5:8080"]).as_deref(), Some("http://10.0.0.5:8080"));
    // The matrix: everything on derives it from its host, the same without the Ingress has none.
    for case in matrix() {
        let expected = match case.name {
            "everything-on" => Some("https://api.purrify.example.com"),
            _ => None,
        };
        assert_eq!(url(&values_of(&case), &[]).as_deref(), expected, "case {}", case.name);
    }
}

/// The providers are outside the cluster (HTTPS, port 443): the chart's NetworkPolicies
/// restrict who may connect to its pods, never where the gateway may connect.
#[test]
fn the_network_policies_leave_the_gateways_egress_open() {
    let everything = matrix().into_iter().find(|c| c.name == "everything-on").unwrap();
    let r = Release::new(render(&values_of(&everything), &[]));
    let policies: Vec<_> = r
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::NetworkPolicy(n) => Some(n),
            _ => None,
        })
        .collect();
    assert!(policies.iter().any(|n| n.metadata.name.as_deref() == Some("purrify-gateway")), "the case turns the policies on");
    for n in policies {
        let spec = n.spec.as_ref().unwrap();
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_owned()][..]), "{:?} restricts egress", n.metadata.name);
        assert!(spec.egress.is_none(), "{:?} has egress rules", n.metadata.name);
    }
}
