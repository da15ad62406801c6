//! Recharge codes (seed 002, `/api/recharge/*`): admins create and list batches of codes,
//! users redeem them and see their redemptions. Amounts are rendered as decimals and read
//! exactly (a JSON number or a string, never through floating point arithmetic).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::recharge::{BatchRequest, PageRequest, RechargeCode, RedemptionRecord};
use crate::http::auth::{AdminUser, ClientAddr, CurrentUser};
use crate::http::envelope::Envelope;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::views::{PageView, decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_codes, create_codes)).routes(routes!(redeem)).routes(routes!(records))
}

/// A batch to create (seed 002).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct CreateCodes {
    /// Credits per redemption, at most 2 decimals: a JSON number (`100.0`) or a string
    /// (`"100.00"`).
    #[schema(value_type = f64, example = 100.0)]
    pub amount: Option<Value>,
    pub description: Option<String>,
    /// Codes to create, 1 to 1000 (default 1).
    #[serde(alias = "count")]
    pub batch_size: Option<i64>,
    /// RFC 3339, in the future.
    #[schema(example = "2026-12-31T23:59:59Z")]
    pub expires_at: Option<String>,
    /// Redemptions per code, each by a different user, 1 to 10000 (default 1).
    pub max_uses: Option<i64>,
}

/// A code as admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CodeView {
    pub id: String,
    /// `OWL-XXXX-XXXX-XXXX`.
    pub code: String,
    pub amount: f64,
    pub max_uses: i64,
    pub used_count: i64,
    /// `active`, `used` (no uses left), `expired` or `disabled`.
    pub status: String,
    pub expires_at: String,
    pub created_at: String,
    pub batch_id: String,
    pub description: String,
}

impl CodeView {
    fn new(c: &RechargeCode, now_ms: i64) -> Self {
        Self {
            id: c.id.clone(),
            code: c.code.clone(),
            amount: decimal(c.amount),
            max_uses: c.max_uses,
            used_count: c.used_count,
            status: c.status(now_ms).as_str().to_owned(),
            expires_at: iso(c.expires_at),
            created_at: iso(c.created_at),
            batch_id: c.batch_id.clone(),
            description: c.batch_name.clone(),
        }
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedCodes {
    pub batch_id: String,
    pub codes: Vec<CodeView>,
    pub total_generated: usize,
    /// Face value of the batch: amount times the number of codes.
    pub total_amount: f64,
}

/// The JSON amount as decimal text: a number as serde_json prints it (the shortest text that
/// reads back as the same double, i.e. what the client wrote for any amount a code can
/// have), a string as sent; anything else is left for the domain to refuse.
fn amount_text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[utoipa::path(post, path = "/api/recharge/codes", tag = "recharge", request_body = CreateCodes, security(("bearer" = [])),
    responses((status = 201, body = Envelope<CreatedCodes>),
              (status = 422, description = "Bad amount, batch size, uses or expiry (every problem in field_errors)", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)))]
pub async fn create_codes(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<CreateCodes>,
) -> ApiResult<(StatusCode, Envelope<CreatedCodes>)> {
    let request = BatchRequest {
        amount: amount_text(body.amount),
        description: body.description,
        count: body.batch_size,
        max_uses: body.max_uses,
        expires_at: body.expires_at,
    };
    let batch = state.recharge.create_batch(&admin, request).await?;
    let now = now_ms();
    let total = batch.amount.saturating_mul(i64::try_from(batch.codes.len()).unwrap_or(i64::MAX));
    let data = CreatedCodes {
        batch_id: batch.id.clone(),
        total_generated: batch.codes.len(),
        total_amount: decimal(total),
        codes: batch.codes.iter().map(|c| CodeView::new(c, now)).collect(),
    };
    Ok((StatusCode::CREATED, Envelope::ok("recharge codes created", data)))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct CodeQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// `active`, `used`, `expired` or `disabled`.
    pub status: Option<String>,
    pub batch_id: Option<String>,
}

#[utoipa::path(get, path = "/api/recharge/codes", tag = "recharge", params(CodeQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<CodeView>>),
              (status = 422, description = "Unknown status", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody)))]
pub async fn list_codes(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(q): ApiQuery<CodeQuery>,
) -> ApiResult<Envelope<PageView<CodeView>>> {
    let batch_id = q.batch_id.filter(|b| !b.trim().is_empty());
    let page = state.recharge.list_codes(q.status.as_deref(), batch_id, PageRequest::new(q.page, q.page_size)).await?;
    let now = now_ms();
    Ok(Envelope::ok("ok", PageView::of(page, |c| CodeView::new(&c, now))))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct RedeemCode {
    /// Case-insensitive; dashes and spaces optional.
    #[schema(example = "OWL-ABCD-2345-EFGH")]
    pub code: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redeemed {
    pub amount: f64,
    pub new_balance: f64,
    pub recharge_record_id: String,
    pub code: String,
}

#[utoipa::path(post, path = "/api/recharge/redeem", tag = "recharge", request_body = RedeemCode, security(("bearer" = [])),
    responses((status = 200, body = Envelope<Redeemed>),
              (status = 404, description = "No such code", body = ErrorBody),
              (status = 422, description = "Malformed, expired, used-up or disabled code, or already redeemed by this account", body = ErrorBody),
              (status = 429, description = "Too many attempts (per user and per address); see Retry-After", body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn redeem(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<RedeemCode>,
) -> ApiResult<Envelope<Redeemed>> {
    let r = state.recharge.redeem(&user, body.code.as_deref().unwrap_or(""), &addr).await?;
    Ok(Envelope::ok(
        "recharge code redeemed",
        Redeemed { amount: decimal(r.amount), new_balance: decimal(r.balance_after), recharge_record_id: r.id, code: r.code },
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct RecordQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub id: String,
    pub code: String,
    pub amount: f64,
    /// The balance right after this redemption.
    pub balance_after: f64,
    pub created_at: String,
}

impl From<&RedemptionRecord> for RecordView {
    fn from(r: &RedemptionRecord) -> Self {
        Self {
            id: r.id.clone(),
            code: r.code.clone(),
            amount: decimal(r.amount),
            balance_after: decimal(r.balance_after),
            created_at: iso(r.created_at),
        }
    }
}

#[utoipa::path(get, path = "/api/recharge/records", tag = "recharge", params(RecordQuery), security(("bearer" = [])),
    responses((status = 200, description = "The user's own redemptions, newest first", body = Envelope<PageView<RecordView>>),
              (status = 401, body = ErrorBody)))]
pub async fn records(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<RecordQuery>,
) -> ApiResult<Envelope<PageView<RecordView>>> {
    let page = state.recharge.records(&user, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, |r| RecordView::from(&r))))
}
