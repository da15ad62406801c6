//! The OpenAPI document: its frame (info, shared schemas, security schemes, tags) here, its
//! paths collected from the handlers' annotations by [`super::routes::all`].

use std::sync::LazyLock;

use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::error::{ErrorBody, ErrorCode};
use super::routes::tasks::LiveMessage;

#[derive(OpenApi)]
#[openapi(
    info(title = "Purrify API", description = "喵喵美颜 photo enhancement gateway (seed 000 contract)"),
    components(schemas(ErrorBody, ErrorCode, LiveMessage)),
    modifiers(&AdminTokenScheme),
    tags(
        (name = "enhance", description = "Uploads"),
        (name = "tasks", description = "Status, live progress and downloads"),
        (name = "system", description = "Health, info, configuration, probes and metrics"),
        (name = "webhook", description = "GPU-server registration"),
        (name = "docs", description = "This document and Swagger UI"),
        (name = "auth", description = "Logins and tokens (seeds 001 and 002)"),
        (name = "users", description = "The logged-in user's account (seed 002)"),
        (name = "admin", description = "Administration (seeds 001 and 002)"),
        (name = "credits", description = "Balances and the ledger (seed 001)"),
        (name = "recharge", description = "Recharge codes: admin batches, redemption, records (seed 002)"),
        (name = "payments", description = "Packages, recharge orders and WeChat Pay API v3 (seeds 000 and 001)"),
        (name = "generation", description = "The generation app (seed 003): camelCase in the {code, message, data, timestamp} envelope"),
        (name = "postcards", description = "The postcard mini-program (seed 004)"),
    )
)]
pub struct ApiDoc;

struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("admin_token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme(
            "webhook_secret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Webhook-Secret",
                "The shared secret GPU servers present (or the body's `secret` field)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from a login (30 minutes); renew it at /api/auth/refresh"))
                    .build(),
            ),
        );
    }
}

/// The whole document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(|| super::routes::all(0).split_for_parts().1);
    &DOC
}

/// `METHOD /path` of every operation in the document (`/api/v1/info`'s endpoint list).
pub fn endpoints() -> Vec<String> {
    let mut out = Vec::new();
    for (path, item) in &document().paths.paths {
        let methods = [
            ("GET", item.get.is_some()),
            ("POST", item.post.is_some()),
            ("PUT", item.put.is_some()),
            ("PATCH", item.patch.is_some()),
            ("DELETE", item.delete.is_some()),
        ];
        out.extend(methods.iter().filter(|(_, present)| *present).map(|(m, _)| format!("{m} {path}")));
    }
    out
}
