//! Refunds of paid orders (DESIGN section 12). A refund is requested (`processing`, the
//! order `refunding`) before WeChat is asked, and settled once when WeChat reports it:
//! success takes the order's credits back with one `refund` ledger entry (ref: the
//! out_refund_no) and the order becomes `refunded`; failure puts the order back to `paid`.
//!
//! Policy on spent credits: a refund is refused up front when the balance no longer covers
//! the order's credits ([`BeginRefund::BalanceTooLow`]). If the user spends them between the
//! request and WeChat's report, the settlement takes what is left (never below zero, the
//! ledger's rule) and records how much in `credits_taken` and the entry's note: WeChat has
//! already returned the money by then, so refusing to settle would change nothing but the
//! books' accuracy.

use sqlx::Row;

use crate::ledger::{Applied, EntryKind, NewEntry, account_scope, apply_entry_in};
use crate::orders::{Order, OrderStatus};
use crate::time::now_ms;
use crate::{Db, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub amount_fen: i64,
    /// `processing`, `success` or `failed`.
    pub status: String,
    pub requested_by: String,
    pub reason: Option<String>,
    pub credits_taken: Option<i64>,
    pub created_at: i64,
    pub settled_at: Option<i64>,
}

/// What requesting a refund did. Everything but `Started` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginRefund {
    /// Recorded; ask WeChat now.
    Started {
        order: Box<Order>,
        refund: Box<RefundRow>,
    },
    Unknown,
    /// Only `paid` orders can be refunded.
    NotRefundable(OrderStatus),
    /// The user's balance no longer covers the order's credits.
    BalanceTooLow {
        balance: i64,
        needed: i64,
    },
}

/// What settling a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettledRefund {
    /// Succeeded: `taken` hundredths taken back (less than the order's credits when spent).
    Refunded {
        taken: i64,
        needed: i64,
    },
    /// Failed: the order is `paid` again.
    Failed,
    /// Settled before: nothing changed.
    AlreadySettled,
    Unknown,
}

const REFUND_COLUMNS: &str = "out_refund_no, out_trade_no, amount_fen, status, requested_by, reason, credits_taken, created_at, settled_at";

impl Db {
    /// Records a full refund of a paid order, checked and written under the buyer's account
    /// lock so no spending slips between the balance check and the order's change.
    pub async fn begin_refund(
        &self,
        out_trade_no: &str,
        out_refund_no: &str,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<BeginRefund, StoreError> {
        let Some(order) = self.order(out_trade_no).await? else { return Ok(BeginRefund::Unknown) };
        if order.status != OrderStatus::Paid {
            return Ok(BeginRefund::NotRefundable(order.status));
        }
        let mut tx = self.begin_write(&account_scope(&order.user_id)).await?;
        let row = sqlx::query("SELECT balance FROM users WHERE id = $1").bind(&order.user_id).fetch_one(&mut *tx).await?;
        let balance: i64 = row.try_get("balance")?;
        if balance < order.total_credits() {
            tx.rollback().await?;
            return Ok(BeginRefund::BalanceTooLow { balance, needed: order.total_credits() });
        }
        let moved = sqlx::query("UPDATE orders SET status = 'refunding' WHERE out_trade_no = $1 AND status = 'paid'")
            .bind(out_trade_no)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            let now = self.order(out_trade_no).await?.map_or(order.status, |o| o.status);
            return Ok(BeginRefund::NotRefundable(now));
        }
        let refund = RefundRow {
            out_refund_no: out_refund_no.into(),
            out_trade_no: out_trade_no.into(),
            amount_fen: order.amount_fen,
            status: "processing".into(),
            requested_by: actor.into(),
            reason: reason.map(Into::into),
            credits_taken: None,
            created_at: now_ms(),
            settled_at: None,
        };
        sqlx::query(
            "INSERT INTO refunds (out_refund_no, out_trade_no, amount_fen, status, requested_by, reason, created_at) \
             VALUES ($1, $2, $3, 'processing', $4, $5, $6)",
        )
        .bind(&refund.out_refund_no)
        .bind(out_trade_no)
        .bind(refund.amount_fen)
        .bind(actor)
        .bind(reason)
        .bind(refund.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BeginRefund::Started { order: Box::new(Order { status: OrderStatus::Refunding, ..order }), refund: Box::new(refund) })
    }

    pub async fn refund(&self, out_refund_no: &str) -> Result<Option<RefundRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1")))
            .bind(out_refund_no)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(refund_from_row).transpose()
    }

    /// Refunds still `processing` that were requested before `created_before` (ms).
    pub async fn processing_refunds(&self, created_before: i64, limit: i64) -> Result<Vec<RefundRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE status = 'processing' AND created_at < $1 ORDER BY created_at LIMIT $2"
        )))
        .bind(created_before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(refund_from_row).collect()
    }

    /// Settles a refund once: `succeeded` takes the credits back (see the module's policy),
    /// otherwise the order is paid again.
    pub async fn settle_refund(&self, out_refund_no: &str, succeeded: bool) -> Result<SettledRefund, StoreError> {
        let Some(refund) = self.refund(out_refund_no).await? else { return Ok(SettledRefund::Unknown) };
        if refund.status != "processing" {
            return Ok(SettledRefund::AlreadySettled);
        }
        let order =
            self.order(&refund.out_trade_no).await?.ok_or_else(|| StoreError::Corrupt(format!("refund {out_refund_no} has no order")))?;
        let mut tx = self.begin_write(&account_scope(&order.user_id)).await?;
        let now = now_ms();
        // Re-read under the lock: a concurrent delivery may have settled it meanwhile.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE out_refund_no = $1")))
            .bind(out_refund_no)
            .fetch_one(&mut *tx)
            .await?;
        if refund_from_row(&row)?.status != "processing" {
            tx.rollback().await?;
            return Ok(SettledRefund::AlreadySettled);
        }
        if !succeeded {
            sqlx::query("UPDATE refunds SET status = 'failed', settled_at = $2 WHERE out_refund_no = $1")
                .bind(out_refund_no)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE orders SET status = 'paid' WHERE out_trade_no = $1 AND status = 'refunding'")
                .bind(&order.out_trade_no)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(SettledRefund::Failed);
        }
        let balance: i64 =
            sqlx::query("SELECT balance FROM users WHERE id = $1").bind(&order.user_id).fetch_one(&mut *tx).await?.try_get("balance")?;
        let needed = order.total_credits();
        let taken = needed.min(balance);
        if taken > 0 {
            let note = if taken < needed {
                format!("WeChat Pay refund of {}: {taken} of {needed} hundredths left to take back", order.out_trade_no)
            } else {
                format!("WeChat Pay refund of {}", order.out_trade_no)
            };
            let entry = NewEntry {
                user_id: order.user_id.clone(),
                delta: -taken,
                kind: EntryKind::Refund,
                reference: out_refund_no.into(),
                note: Some(note),
                actor: Some(refund.requested_by.clone()),
            };
            match apply_entry_in(&mut tx, &entry).await? {
                Applied::Written(_) => {}
                Applied::Duplicate(_) => {
                    tx.rollback().await?;
                    return Ok(SettledRefund::AlreadySettled);
                }
                other => return Err(StoreError::Corrupt(format!("refund entry of {taken} under the account lock: {other:?}"))),
            }
        }
        sqlx::query("UPDATE refunds SET status = 'success', credits_taken = $2, settled_at = $3 WHERE out_refund_no = $1")
            .bind(out_refund_no)
            .bind(taken)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE orders SET status = 'refunded' WHERE out_trade_no = $1").bind(&order.out_trade_no).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(SettledRefund::Refunded { taken, needed })
    }
}

fn refund_from_row(row: &sqlx::any::AnyRow) -> Result<RefundRow, StoreError> {
    Ok(RefundRow {
        out_refund_no: row.try_get("out_refund_no")?,
        out_trade_no: row.try_get("out_trade_no")?,
        amount_fen: row.try_get("amount_fen")?,
        status: row.try_get("status")?,
        requested_by: row.try_get("requested_by")?,
        reason: row.try_get("reason")?,
        credits_taken: row.try_get("credits_taken")?,
        created_at: row.try_get("created_at")?,
        settled_at: row.try_get("settled_at")?,
    })
}
