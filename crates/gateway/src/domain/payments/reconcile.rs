//! The reconciler: notifications can be lost (the gateway down for longer than WeChat's
//! retries, a network split), so orders still pending a while after creation are queried
//! (`GET /v3/pay/transactions/out-trade-no/…`) and applied when paid; expired unpaid ones are
//! closed at WeChat first (so no late payment can arrive) and then here. Refunds still
//! processing are queried the same way.

use std::time::Duration;

use purrify_store::SettledRefund;
use purrify_wechatpay::refund::refund_status;
use purrify_wechatpay::transaction::trade_state;
use tokio::task::JoinHandle;

use super::{Order, PaymentService, Refusal, ms, now_ms};
use crate::domain::{DomainError, DomainResult};

/// Orders (and refunds) looked at per round: a backlog drains over several rounds.
const BATCH: i64 = 100;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub checked: usize,
    pub applied: usize,
    pub closed: usize,
    pub refunds_settled: usize,
}

/// What querying one order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Synced {
    Paid,
    Closed,
    Unchanged,
}

impl PaymentService {
    /// Brings one pending order up to date with WeChat; closes it when it expired unpaid and
    /// `close_expired`.
    pub(super) async fn sync_order(&self, order: &Order, close_expired: bool) -> DomainResult<Synced> {
        let client = self.client()?;
        let expired = now_ms() >= order.expires_at;
        let state = match client.query_by_out_trade_no(&order.out_trade_no).await {
            Ok(t) if t.is_paid() => {
                return match self.apply_transaction(&t).await {
                    Ok(_) => Ok(Synced::Paid),
                    Err(Refusal::Internal(e)) => Err(DomainError::Internal(e)),
                    Err(why) => {
                        tracing::error!(out_trade_no = %order.out_trade_no, ?why, "WeChat Pay reports a payment that cannot be applied");
                        Ok(Synced::Unchanged)
                    }
                };
            }
            Ok(t) => t.trade_state,
            // Never placed (the prepay failed before reaching WeChat): nothing to close there.
            Err(e) if e.api_code() == Some("ORDER_NOT_EXIST") => trade_state::CLOSED.to_owned(),
            Err(e) => return Err(DomainError::Unavailable(format!("WeChat Pay order query: {}", e.category()))),
        };
        if state == trade_state::CLOSED {
            return Ok(if expired && close_expired && self.db.close_order(&order.out_trade_no).await? {
                Synced::Closed
            } else {
                Synced::Unchanged
            });
        }
        if !(expired && close_expired) {
            return Ok(Synced::Unchanged);
        }
        match client.close_order(&order.out_trade_no).await {
            Ok(()) => Ok(if self.db.close_order(&order.out_trade_no).await? { Synced::Closed } else { Synced::Unchanged }),
            // Paid between the query and the close: the next round (or the notification) applies it.
            Err(e) if e.api_code() == Some("ORDERPAID") => Ok(Synced::Unchanged),
            Err(e) => Err(DomainError::Unavailable(format!("WeChat Pay close: {}", e.category()))),
        }
    }

    /// One round over orders and refunds unsettled for longer than `reconcile_after`.
    pub async fn reconcile_once(&self) -> DomainResult<Round> {
        let client = self.client()?;
        let before = now_ms() - ms(self.settings.reconcile_after);
        let mut round = Round::default();
        for order in self.db.pending_orders(before, BATCH).await? {
            round.checked += 1;
            match self.sync_order(&order, true).await {
                Ok(Synced::Paid) => round.applied += 1,
                Ok(Synced::Closed) => round.closed += 1,
                Ok(Synced::Unchanged) => {}
                Err(e) => tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, "reconciling an order failed; next round retries"),
            }
        }
        for refund in self.db.processing_refunds(before, BATCH).await? {
            round.checked += 1;
            let succeeded = match client.query_refund(&refund.out_refund_no).await {
                Ok(r) if r.status == refund_status::SUCCESS => true,
                Ok(r) if r.status == refund_status::PROCESSING => continue,
                Ok(_) => false,
                // The request never reached WeChat.
                Err(e) if e.api_code() == Some("RESOURCE_NOT_EXISTS") => false,
                Err(e) => {
                    tracing::warn!(out_refund_no = %refund.out_refund_no, error = e.category(), "refund query failed; next round retries");
                    continue;
                }
            };
            if matches!(
                self.db.settle_refund(&refund.out_refund_no, succeeded).await?,
                SettledRefund::Refunded { .. } | SettledRefund::Failed
            ) {
                round.refunds_settled += 1;
            }
        }
        if round.applied + round.closed + round.refunds_settled > 0 {
            tracing::info!(?round, "payments reconciled");
        }
        Ok(round)
    }

    /// Runs [`Self::reconcile_once`] every `reconcile_interval` until `stop`; nothing when
    /// WeChat Pay is not configured.
    pub fn spawn_reconciler(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        if !self.configured() {
            return None;
        }
        let service = self.clone();
        let every = self.settings.reconcile_interval.max(Duration::from_millis(100));
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = service.reconcile_once().await {
                            tracing::warn!(error = %e, "payment reconciliation round failed");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        }))
    }
}
