//! Seed 001's credits (`/api/credits/*`): the balance, the ledger as records, and totals.
//! Amounts are stored in hundredths and shown as decimals.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::domain::accounts::PageRequest;
use crate::domain::credits::{LedgerEntry, LedgerKind};
use crate::http::auth::CurrentUser;
use crate::http::envelope::Envelope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::views::{PageView, decimal, iso};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(balance)).routes(routes!(records)).routes(routes!(stats))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceView {
    /// Spendable credits.
    pub balance: f64,
    /// Held for tasks still running.
    pub held: f64,
    /// Spent on finished tasks.
    pub spent: f64,
}

#[utoipa::path(get, path = "/api/credits/balance", tag = "credits", security(("bearer" = [])),
    responses((status = 200, body = Envelope<BalanceView>), (status = 401, body = ErrorBody)))]
pub async fn balance(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Envelope<BalanceView>> {
    let b = state.credits.balance(&user.user_id).await?;
    Ok(Envelope::ok("ok", BalanceView { balance: decimal(b.balance), held: decimal(b.held), spent: decimal(b.spent) }))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(default)]
pub struct RecordsQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// One kind: recharge, redeem, grant, hold, capture, release, refund, adjust.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// One ledger entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub id: String,
    /// recharge, redeem, grant, hold, capture, release, refund or adjust.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Credits added (positive) or taken (negative).
    pub amount: f64,
    pub balance_after: f64,
    /// The order, code, task or edit behind it.
    pub reference: String,
    pub description: Option<String>,
    pub created_at: String,
}

impl From<&LedgerEntry> for RecordView {
    fn from(e: &LedgerEntry) -> Self {
        Self {
            id: e.id.clone(),
            kind: e.kind.as_str(),
            amount: decimal(e.delta),
            balance_after: decimal(e.balance_after),
            reference: e.reference.clone(),
            description: e.note.clone(),
            created_at: iso(e.created_at),
        }
    }
}

#[utoipa::path(get, path = "/api/credits/records", tag = "credits", params(RecordsQuery), security(("bearer" = [])),
    responses((status = 200, body = Envelope<PageView<RecordView>>), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn records(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<RecordsQuery>,
) -> ApiResult<Envelope<PageView<RecordView>>> {
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => Some(LedgerKind::parse(k).ok_or_else(|| ApiError::field("type", format!("{k:?} is not a record type")))?),
    };
    let page = state.credits.records(&user.user_id, kind, PageRequest::new(q.page, q.page_size)).await?;
    Ok(Envelope::ok("ok", PageView::of(page, |e| RecordView::from(&e))))
}

/// Totals per kind of movement, from the ledger.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreditStats {
    pub balance: f64,
    pub total_recharged: f64,
    pub total_redeemed: f64,
    pub total_granted: f64,
    pub total_refunded: f64,
    pub total_adjusted: f64,
    /// Captured by finished tasks.
    pub total_spent: f64,
    /// Held by running tasks.
    pub held: f64,
    pub records: u64,
}

#[utoipa::path(get, path = "/api/credits/stats", tag = "credits", security(("bearer" = [])),
    responses((status = 200, body = Envelope<CreditStats>), (status = 401, body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>, CurrentUser(user): CurrentUser) -> ApiResult<Envelope<CreditStats>> {
    let t = state.credits.totals(&user.user_id).await?;
    let b = state.credits.balance(&user.user_id).await?;
    Ok(Envelope::ok(
        "ok",
        CreditStats {
            balance: decimal(b.balance),
            total_recharged: decimal(t.of(LedgerKind::Recharge)),
            total_redeemed: decimal(t.of(LedgerKind::Redeem)),
            total_granted: decimal(t.of(LedgerKind::Grant)),
            total_refunded: decimal(-t.of(LedgerKind::Refund)),
            total_adjusted: decimal(t.of(LedgerKind::Adjust)),
            total_spent: decimal(b.spent),
            held: decimal(b.held),
            records: t.entries,
        },
    ))
}
