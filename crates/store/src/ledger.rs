//! The credits ledger (DESIGN section 12): every change of a balance is one entry, written
//! in the same transaction as the balance, conditionally (`balance + delta >= 0`), and at
//! most once per (kind, ref). The sum of a user's entries therefore always equals the
//! balance, and a replayed event (a repeated payment notification, a double-clicked
//! redemption) changes nothing.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::page::{Page, PageRequest};
use crate::time::now_ms;
use crate::{Db, StoreError, WriteTx};

/// Why the balance moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Recharge,
    Redeem,
    Grant,
    Hold,
    Capture,
    Release,
    Refund,
    Adjust,
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] =
        [Self::Recharge, Self::Redeem, Self::Grant, Self::Hold, Self::Capture, Self::Release, Self::Refund, Self::Adjust];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recharge => "recharge",
            Self::Redeem => "redeem",
            Self::Grant => "grant",
            Self::Hold => "hold",
            Self::Capture => "capture",
            Self::Release => "release",
            Self::Refund => "refund",
            Self::Adjust => "adjust",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub user_id: String,
    /// Hundredths of a credit; negative spends.
    pub delta: i64,
    pub kind: EntryKind,
    /// The event's unique reference within its kind.
    pub reference: String,
    pub note: Option<String>,
    /// The admin behind an adjustment.
    pub actor: Option<String>,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub user_id: String,
    pub delta: i64,
    pub balance_after: i64,
    pub kind: EntryKind,
    pub reference: String,
    pub note: Option<String>,
    pub actor: Option<String>,
    pub created_at: i64,
}

/// What writing an entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written; the balance is now `entry.balance_after`.
    Written(Entry),
    /// This (kind, ref) was written before: the earlier entry, nothing changed.
    Duplicate(Entry),
    /// The balance would go negative: nothing changed.
    Insufficient { balance: i64 },
    /// No such user.
    NoUser,
}

/// Totals of a user's entries, per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    pub per_kind: Vec<(EntryKind, i64)>,
    pub entries: u64,
}

impl LedgerTotals {
    pub fn of(&self, kind: EntryKind) -> i64 {
        self.per_kind.iter().find(|(k, _)| *k == kind).map_or(0, |(_, v)| *v)
    }

    pub fn sum(&self) -> i64 {
        self.per_kind.iter().map(|(_, v)| v).sum()
    }
}

const COLUMNS: &str = "id, user_id, delta, balance_after, kind, ref, note, actor, created_at";

/// The write-lock scope of one account's balance.
pub fn account_scope(user_id: &str) -> String {
    format!("account:{user_id}")
}

impl Db {
    /// Writes one entry and moves the balance, in one transaction.
    pub async fn apply_entry(&self, entry: &NewEntry) -> Result<Applied, StoreError> {
        let mut tx = self.begin_write(&account_scope(&entry.user_id)).await?;
        let applied = apply_entry_in(&mut tx, entry).await?;
        match applied {
            Applied::Written(_) => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok(applied)
    }

    /// A user's entries, newest first, optionally of one kind.
    pub async fn ledger_page(&self, user_id: &str, kind: Option<EntryKind>, page: PageRequest) -> Result<Page<Entry>, StoreError> {
        let kind = kind.map(EntryKind::as_str);
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM ledger WHERE user_id = $1 AND ($2 IS NULL OR kind = $2)")
            .bind(user_id)
            .bind(kind)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM ledger WHERE user_id = $1 AND ($2 IS NULL OR kind = $2) ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
        )))
        .bind(user_id)
        .bind(kind)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(entry_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// Sums of a user's entries per kind.
    pub async fn ledger_totals(&self, user_id: &str) -> Result<LedgerTotals, StoreError> {
        // SUM over BIGINT is NUMERIC on PostgreSQL, which `Any` cannot decode: cast back.
        let rows =
            sqlx::query("SELECT kind, CAST(SUM(delta) AS BIGINT) AS total, COUNT(*) AS n FROM ledger WHERE user_id = $1 GROUP BY kind")
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
        let mut totals = LedgerTotals::default();
        for r in rows {
            let kind: String = r.try_get("kind")?;
            let kind = EntryKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("ledger kind {kind:?}")))?;
            totals.per_kind.push((kind, r.try_get("total")?));
            totals.entries += u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0);
        }
        Ok(totals)
    }

    /// The entry of an event, if it was written.
    pub async fn ledger_entry(&self, kind: EntryKind, reference: &str) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM ledger WHERE kind = $1 AND ref = $2")))
            .bind(kind.as_str())
            .bind(reference)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(entry_from_row).transpose()
    }

    /// Users whose balance differs from the sum of their ledger (an audit; empty when the
    /// invariant holds).
    pub async fn ledger_mismatches(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.id AS id, u.balance AS balance, CAST(COALESCE(SUM(l.delta), 0) AS BIGINT) AS total \
             FROM users u LEFT JOIN ledger l ON l.user_id = u.id GROUP BY u.id, u.balance \
             HAVING u.balance <> CAST(COALESCE(SUM(l.delta), 0) AS BIGINT)",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("balance")?, r.try_get("total")?))).collect()
    }
}

/// [`Db::apply_entry`] inside a caller's write transaction (taken on the account's scope,
/// [`account_scope`]), for events that change other rows too (an order marked paid, a code
/// redeemed). On anything but `Written` the caller must roll back.
pub async fn apply_entry_in(tx: &mut WriteTx, entry: &NewEntry) -> Result<Applied, StoreError> {
    let existing = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM ledger WHERE kind = $1 AND ref = $2")))
        .bind(entry.kind.as_str())
        .bind(&entry.reference)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(row) = existing {
        return Ok(Applied::Duplicate(entry_from_row(&row)?));
    }
    let now = now_ms();
    let moved =
        sqlx::query("UPDATE users SET balance = balance + $2, updated_at = $3 WHERE id = $1 AND balance + $2 >= 0 RETURNING balance")
            .bind(&entry.user_id)
            .bind(entry.delta)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(moved) = moved else {
        let row = sqlx::query("SELECT balance FROM users WHERE id = $1").bind(&entry.user_id).fetch_optional(&mut **tx).await?;
        return Ok(match row {
            Some(r) => Applied::Insufficient { balance: r.try_get("balance")? },
            None => Applied::NoUser,
        });
    };
    let written = Entry {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: entry.user_id.clone(),
        delta: entry.delta,
        balance_after: moved.try_get("balance")?,
        kind: entry.kind,
        reference: entry.reference.clone(),
        note: entry.note.clone(),
        actor: entry.actor.clone(),
        created_at: now,
    };
    let inserted = sqlx::query(
        "INSERT INTO ledger (id, user_id, delta, balance_after, kind, ref, note, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&written.id)
    .bind(&written.user_id)
    .bind(written.delta)
    .bind(written.balance_after)
    .bind(written.kind.as_str())
    .bind(&written.reference)
    .bind(written.note.as_deref())
    .bind(written.actor.as_deref())
    .bind(written.created_at)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(Applied::Written(written)),
        // Another account's transaction wrote the same (kind, ref) first (scopes are per
        // account, the key is global): this one must roll back; report the earlier entry.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Duplicate(format!("{} {}", entry.kind.as_str(), entry.reference)))
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn entry_from_row(row: &AnyRow) -> Result<Entry, StoreError> {
    let kind: String = row.try_get("kind")?;
    Ok(Entry {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        delta: row.try_get("delta")?,
        balance_after: row.try_get("balance_after")?,
        kind: EntryKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("ledger kind {kind:?}")))?,
        reference: row.try_get("ref")?,
        note: row.try_get("note")?,
        actor: row.try_get("actor")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Db {
    /// Sets a balance to `target` with one `adjust` entry of the difference (an admin's
    /// edit), read and written under the account's write lock so a concurrent change cannot
    /// slip between the read and the write. `Duplicate` if `reference` was used before.
    pub async fn adjust_balance_to(
        &self,
        user_id: &str,
        target: i64,
        actor: &str,
        note: &str,
        reference: &str,
    ) -> Result<Applied, StoreError> {
        if target < 0 {
            return Err(StoreError::Invalid("a balance cannot be negative".into()));
        }
        let mut tx = self.begin_write(&account_scope(user_id)).await?;
        let Some(row) = sqlx::query("SELECT balance FROM users WHERE id = $1").bind(user_id).fetch_optional(&mut *tx).await? else {
            return Ok(Applied::NoUser);
        };
        let current: i64 = row.try_get("balance")?;
        let entry = NewEntry {
            user_id: user_id.into(),
            delta: target - current,
            kind: EntryKind::Adjust,
            reference: reference.into(),
            note: Some(note.into()),
            actor: Some(actor.into()),
        };
        let applied = apply_entry_in(&mut tx, &entry).await?;
        match applied {
            Applied::Written(_) => tx.commit().await?,
            _ => tx.rollback().await?,
        }
        Ok(applied)
    }
}
