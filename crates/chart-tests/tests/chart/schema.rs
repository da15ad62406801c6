//! values.schema.json refuses values that cannot work, before anything is rendered, and says
//! which field and why.

use serde_json::Value;

use crate::support::{chart_dir, try_render};

/// The renderer's refusal of these `--set`s (on top of the defaults).
fn refusal(sets: &[&str]) -> String {
    match try_render(&[""], sets, false) {
        Ok(_) => panic!("{sets:?} was accepted"),
        Err(e) => e,
    }
}

fn assert_refused(sets: &[&str], expected: &[&str]) {
    let msg = refusal(sets);
    assert!(msg.contains("values don't meet the specifications of the schema"), "{sets:?}: not a schema refusal:\n{msg}");
    for e in expected {
        assert!(msg.contains(e), "{sets:?}: the message does not say {e:?}:\n{msg}");
    }
}

#[test]
fn kubernetes_mode_without_a_database_url_secret_is_refused() {
    assert_refused(
        &["gateway.secrets.databaseUrl.name="],
        &["gateway.secrets.databaseUrl.name: String length must be greater than or equal to 1"],
    );
    assert_refused(
        &["gateway.secrets.databaseUrl.key="],
        &["gateway.secrets.databaseUrl.key: String length must be greater than or equal to 1"],
    );
    assert_refused(&["gateway.secrets.databaseUrl=null"], &["gateway.secrets.databaseUrl: Invalid type. Expected: object, given: null"]);
}

#[test]
fn kubernetes_mode_without_a_jwt_key_secret_is_refused() {
    assert_refused(&["gateway.secrets.jwtKey.name="], &["gateway.secrets.jwtKey.name: String length must be greater than or equal to 1"]);
    assert_refused(&["gateway.secrets.jwtKey.key="], &["gateway.secrets.jwtKey.key: String length must be greater than or equal to 1"]);
    assert_refused(&["gateway.secrets.jwtKey=null"], &["gateway.secrets.jwtKey: Invalid type. Expected: object, given: null"]);
    assert_refused(&["gateway.secrets.jwtKey.name=Purrify_JWT"], &["gateway.secrets.jwtKey.name: Does not match pattern"]);
}

#[test]
fn account_settings_outside_what_the_gateway_accepts_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (&["gateway.config.accessTokenSeconds=59"], "gateway.config.accessTokenSeconds: Must be greater than or equal to 60"),
        (&["gateway.config.accessTokenSeconds=86401"], "gateway.config.accessTokenSeconds: Must be less than or equal to 86400"),
        (&["gateway.config.refreshTokenDays=0"], "gateway.config.refreshTokenDays: Must be greater than or equal to 1"),
        (&["gateway.config.refreshTokenDays=366"], "gateway.config.refreshTokenDays: Must be less than or equal to 365"),
        (&["gateway.config.argon2MemoryKib=1023"], "gateway.config.argon2MemoryKib: Must be greater than or equal to 1024"),
        (&["gateway.config.argon2MemoryKib=1048577"], "gateway.config.argon2MemoryKib: Must be less than or equal to"),
        (&["gateway.config.argon2Iterations=0"], "gateway.config.argon2Iterations: Must be greater than or equal to 1"),
        (&["gateway.config.argon2Iterations=11"], "gateway.config.argon2Iterations: Must be less than or equal to 10"),
        (&["gateway.config.loginsPerMinutePerAddress=-1"], "gateway.config.loginsPerMinutePerAddress: Must be greater than or equal to 0"),
        (&["gateway.config.loginsPerMinutePerAccount=-1"], "gateway.config.loginsPerMinutePerAccount: Must be greater than or equal to 0"),
        (&["gateway.config.wechatApiBase=api.weixin.qq.com"], "gateway.config.wechatApiBase: Does not match pattern"),
        (&["gateway.config.allowAnonymousUploads=maybe"], "gateway.config.allowAnonymousUploads: Invalid type. Expected: boolean"),
        (
            &["gateway.secrets.wechat.name=purrify-wechat", "gateway.secrets.wechat.secretKey="],
            "gateway.secrets.wechat.secretKey: String length",
        ),
        (&["gateway.secrets.bootstrapAdmin.emailKey="], "gateway.secrets.bootstrapAdmin.emailKey: String length"),
        (&["gateway.secrets.jwtPreviousKeys.name=Old Keys"], "gateway.secrets.jwtPreviousKeys.name: Does not match pattern"),
    ];
    for (sets, expected) in cases {
        assert_refused(sets, &[expected]);
    }
}

#[test]
fn wechat_pay_enabled_without_its_merchant_or_secrets_is_refused() {
    let complete = [
        "gateway.wechatPay.enabled=true",
        "gateway.wechatPay.appid=wx0123456789abcdef",
        "gateway.wechatPay.apiV3Key.name=purrify-wechatpay",
        "gateway.wechatPay.certificatesSecret=purrify-wechatpay-certs",
        "gateway.wechatPay.notifyUrl=https://api.example.com/api/wechat/pay/notify/",
    ];
    // Enabled without the merchant id.
    assert_refused(&complete, &["gateway.wechatPay.mchId: String length must be greater than or equal to 1"]);
    // Enabled with nothing: every missing field is named.
    assert_refused(
        &["gateway.wechatPay.enabled=true"],
        &[
            "gateway.wechatPay.mchId: String length must be greater than or equal to 1",
            "gateway.wechatPay.appid: String length must be greater than or equal to 1",
            "gateway.wechatPay.apiV3Key.name: String length must be greater than or equal to 1",
            "gateway.wechatPay.certificatesSecret: String length must be greater than or equal to 1",
        ],
    );
    let with_mch = [&complete[..], &["gateway.wechatPay.mchId=1900000109"]].concat();
    try_render(&[""], &with_mch, false).unwrap_or_else(|e| panic!("a complete WeChat Pay is refused:\n{e}"));
    assert_refused(
        &[&with_mch[..], &["gateway.wechatPay.notifyUrl=http://api.example.com/notify"]].concat(),
        &["gateway.wechatPay.notifyUrl: Does not match pattern"],
    );
    assert_refused(
        &[&with_mch[..], &["gateway.wechatPay.mchId=0"]].concat(),
        &["gateway.wechatPay.mchId: Must be greater than or equal to 1"],
    );
    // Off, the empty defaults are fine.
    try_render(&[""], &["gateway.wechatPay.enabled=false"], false).unwrap();
}

#[test]
fn fewer_than_one_replica_is_refused() {
    assert_refused(&["gateway.replicas=0"], &["gateway.replicas: Must be greater than or equal to 1"]);
    assert_refused(&["operator.replicas=0"], &["operator.replicas: Must be greater than or equal to 1"]);
    assert_refused(
        &["gateway.autoscaling.enabled=true", "gateway.autoscaling.minReplicas=0"],
        &["gateway.autoscaling.minReplicas: Must be greater than or equal to 1"],
    );
}

#[test]
fn a_bad_image_tag_or_digest_is_refused() {
    for tag in ["v1:2", "-rc1", ".hidden", "has space", &"x".repeat(129)] {
        assert_refused(&[&format!("images.gateway.tag={tag}")], &["images.gateway.tag: Does not match pattern"]);
    }
    assert_refused(&["images.inference.digest=sha256:abc"], &["images.inference.digest: Does not match pattern"]);
    assert_refused(&["tests.image.tag=a/b"], &["tests.image.tag: Does not match pattern"]);
    // What a tag may be is accepted.
    for tag in ["0.1.0", "0.1.0-rc.1", "latest", "v2_build.7", "_x"] {
        try_render(&[""], &[&format!("images.gateway.tag={tag}")], false).unwrap_or_else(|e| panic!("tag {tag} refused:\n{e}"));
    }
}

#[test]
fn an_unknown_execution_provider_is_refused() {
    assert_refused(
        &["gpuPool.create=true", "gpuPool.executionProvider=rocm"],
        &[r#"gpuPool.executionProvider must be one of the following: "cuda", "tensorrt", "cpu", "openvino""#],
    );
}

/// The chart offers exactly the providers the GpuPool CRD admits.
#[test]
fn the_execution_providers_are_the_crds() {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap()).unwrap();
    let chart = &schema["properties"]["gpuPool"]["properties"]["executionProvider"]["enum"];
    let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(chart_dir().join("crds/gpupools.purrify.io.yaml")).unwrap()).unwrap();
    let from_crd =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["executionProvider"]["enum"];
    assert!(from_crd.is_array());
    assert_eq!(chart, from_crd);
}

#[test]
fn other_values_that_cannot_work_are_refused_with_their_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["ingress.enabled=true"], "ingress.host: String length must be greater than or equal to 1"),
        (&["ingress.enabled=true", "ingress.host=Not A Host"], "ingress.host: Does not match pattern"),
        (&["gpuPool.mode=both"], "gpuPool.mode must be one of the following"),
        (&["gpuPool.replicas.max=101"], "gpuPool.replicas.max: Must be less than or equal to 100"),
        (&["securityContext.runAsUser=0"], "securityContext.runAsUser: Must be greater than or equal to 1"),
        (&["storage.bucket="], "storage.bucket: String length must be greater than or equal to 3"),
        (&["storage.s3.endpoint=minio:9000"], "storage.s3.endpoint: Does not match pattern"),
        (&["gateway.config.logFormat=xml"], "gateway.config.logFormat must be one of the following"),
        (&["gateway.config.trustedProxyHops=0"], "gateway.config.trustedProxyHops: Must be greater than or equal to 1"),
        (&["gateway.port=70000"], "gateway.port: Must be less than or equal to 65535"),
        (&["gpuPool.name=Default"], "gpuPool.name: Does not match pattern"),
        (&["gateway.replicaCount=3"], "Additional property replicaCount is not allowed"),
    ];
    for (sets, expected) in cases {
        assert_refused(sets, &[expected]);
    }
}

#[test]
fn the_defaults_and_every_matrix_case_pass_the_schema() {
    for case in crate::support::matrix() {
        try_render(&crate::support::values_of(&case), &[], true).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    }
}
