//! Credits (DESIGN section 12): balances, the ledger as users and admins see it, task
//! prices, and the holds that charge tasks: held when a logged-in user's task is accepted,
//! captured when it succeeds, released when it fails, is cancelled or times out, exactly
//! once whatever crashes in between (the settler finishes what a crash left open).

mod settler;

use purrify_store::settings::keys;
use purrify_store::{Applied, Db, Entry, EntryKind, HoldOutcome, NewEntry, Settlement};
pub use purrify_store::{EntryKind as LedgerKind, LedgerTotals};

use crate::domain::accounts::{Page, PageRequest};
use crate::domain::{DomainError, DomainResult};

/// Largest amount one entry may move (hundredths): ten million credits.
pub const MAX_AMOUNT: i64 = 1_000_000_000;

/// The task kinds with a price: every kind.
pub const PRICED_KINDS: &[&str] = crate::domain::tasks::TASK_KINDS;

#[derive(Clone)]
pub struct CreditService {
    db: Db,
}

/// A user's money, in hundredths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// Spendable now.
    pub balance: i64,
    /// Held for tasks still running (not spendable, not yet spent).
    pub held: i64,
    /// Captured by finished tasks: spent.
    pub spent: i64,
}

/// A ledger line as surfaces show it.
pub type LedgerEntry = Entry;

impl CreditService {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn balance(&self, user_id: &str) -> DomainResult<Balance> {
        let user = self.db.user(user_id).await?.ok_or_else(|| DomainError::NotFound(format!("no user {user_id}")))?;
        let (held, spent) = self.db.hold_totals(user_id).await?;
        Ok(Balance { balance: user.balance, held, spent })
    }

    pub async fn records(&self, user_id: &str, kind: Option<EntryKind>, page: PageRequest) -> DomainResult<Page<LedgerEntry>> {
        Ok(self.db.ledger_page(user_id, kind, page).await?)
    }

    pub async fn totals(&self, user_id: &str) -> DomainResult<LedgerTotals> {
        Ok(self.db.ledger_totals(user_id).await?)
    }

    /// The price of one task of `kind`, in hundredths (0: free). Admin configuration.
    pub async fn price(&self, kind: &str) -> DomainResult<i64> {
        match self.db.get_setting(&keys::price(kind)).await? {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| DomainError::Internal(format!("setting {} is not an integer: {v:?}", keys::price(kind)))),
        }
    }

    pub async fn set_price(&self, kind: &str, hundredths: i64) -> DomainResult<()> {
        if !PRICED_KINDS.contains(&kind) {
            return Err(DomainError::invalid("kind", format!("no task kind {kind:?}; priced kinds: {}", PRICED_KINDS.join(", "))));
        }
        if !(0..=MAX_AMOUNT).contains(&hundredths) {
            return Err(DomainError::invalid("price", "must be between 0 and 10,000,000 credits"));
        }
        Ok(self.db.set_setting(&keys::price(kind), &hundredths.to_string()).await?)
    }

    /// Holds the price of a `kind` task for `user_id`; `None` when the kind is free. Not
    /// enough balance is `InsufficientBalance`.
    pub async fn hold_for_task(&self, user_id: &str, task_id: &str, kind: &str) -> DomainResult<Option<i64>> {
        let price = self.price(kind).await?;
        self.hold_price(user_id, task_id, price).await
    }

    /// Holds `price` hundredths for a task whose price is not its kind's (a scene's price);
    /// `None` when it is free.
    pub async fn hold_price(&self, user_id: &str, task_id: &str, price: i64) -> DomainResult<Option<i64>> {
        if price == 0 {
            return Ok(None);
        }
        match self.db.hold(task_id, user_id, price).await? {
            HoldOutcome::Held { .. } | HoldOutcome::Duplicate => Ok(Some(price)),
            HoldOutcome::Insufficient { balance, price } => Err(DomainError::InsufficientBalance { balance, price }),
            HoldOutcome::NoUser => Err(DomainError::Unauthorized("the account no longer exists".into())),
        }
    }

    /// Releases a task's hold now (the task could not be created after all).
    pub async fn release(&self, task_id: &str) -> DomainResult<bool> {
        Ok(self.db.settle(task_id, Settlement::Release).await?)
    }

    /// Settles a finished task's hold: captured if it completed, released otherwise.
    pub async fn settle_task(&self, task_id: &str, completed: bool) -> DomainResult<bool> {
        let how = if completed { Settlement::Capture } else { Settlement::Release };
        Ok(self.db.settle(task_id, how).await?)
    }

    /// An admin's edit of a balance to `target` hundredths, recorded as an `adjust` entry
    /// naming the admin. `reference` makes a retried edit a no-op.
    pub async fn set_balance(&self, actor: &str, user_id: &str, target: i64, reference: &str) -> DomainResult<Entry> {
        if !(0..=MAX_AMOUNT).contains(&target) {
            return Err(DomainError::invalid("balance", "must be between 0 and 10,000,000 credits"));
        }
        match self.db.adjust_balance_to(user_id, target, actor, "balance set by an admin", reference).await? {
            Applied::Written(e) | Applied::Duplicate(e) => Ok(e),
            Applied::NoUser => Err(DomainError::NotFound(format!("no user {user_id}"))),
            Applied::Insufficient { .. } => Err(DomainError::Conflict("the balance changed during the edit; try again".into())),
        }
    }

    /// A grant (sign-up gift, compensation): once per `reference`.
    pub async fn grant(&self, user_id: &str, amount: i64, reference: &str, note: &str) -> DomainResult<Entry> {
        if !(1..=MAX_AMOUNT).contains(&amount) {
            return Err(DomainError::invalid("amount", "must be between 0.01 and 10,000,000 credits"));
        }
        let entry = NewEntry {
            user_id: user_id.into(),
            delta: amount,
            kind: EntryKind::Grant,
            reference: reference.into(),
            note: Some(note.into()),
            actor: None,
        };
        match self.db.apply_entry(&entry).await? {
            Applied::Written(e) | Applied::Duplicate(e) => Ok(e),
            Applied::NoUser => Err(DomainError::NotFound(format!("no user {user_id}"))),
            Applied::Insufficient { .. } => Err(DomainError::Internal("a grant cannot overdraw".into())),
        }
    }
}

/// Hundredths from a decimal amount as clients send it (`100`, `100.5`, `"100.50"`), exactly:
/// never through floating point arithmetic on the value.
pub fn hundredths(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (whole, frac, dot) = match t.split_once('.') {
        Some((w, f)) => (w, f, true),
        None => (t, "", false),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (dot && !digits(frac)) {
        return Err(format!("{t:?} is not an amount like 100 or 100.50"));
    }
    if frac.len() > 2 {
        return Err("at most two decimals (hundredths of a credit)".into());
    }
    let whole: i64 = whole.parse().map_err(|_| "too large".to_string())?;
    let frac: i64 = format!("{frac:0<2}").parse().map_err(|_| "not a number".to_string())?;
    let value = whole.checked_mul(100).and_then(|w| w.checked_add(frac)).ok_or("too large")?;
    if value > MAX_AMOUNT {
        return Err("must be at most 10,000,000 credits".into());
    }
    Ok(value)
}

pub use settler::spawn_settler;

#[cfg(test)]
mod tests {
    use super::hundredths;

    #[test]
    fn amounts_convert_exactly() {
        assert_eq!(hundredths("100"), Ok(10_000));
        assert_eq!(hundredths("100.5"), Ok(10_050));
        assert_eq!(hundredths(" 0.07 "), Ok(7));
        assert_eq!(hundredths("0.1"), Ok(10), "0.1 is not 0.1000000000000000055 here");
        for bad in ["", "-1", "1.234", "1e3", "abc", "1.", ".5", "99999999999999999999"] {
            assert!(hundredths(bad).is_err(), "{bad:?}");
        }
        assert!(hundredths("10000001").is_err());
    }
}
