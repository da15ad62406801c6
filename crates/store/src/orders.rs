//! Recharge packages and orders (seeds 000 and 001, DESIGN section 12). An order is created
//! `pending` for a package's price; WeChat Pay's word that it was paid (a notification, or the
//! reconciler's query) marks it `paid` and credits the package's credits and bonus, in one
//! write transaction on the buyer's account scope: the conditional status `UPDATE` (which also
//! checks the amount paid) and the `recharge` ledger entry whose ref is the out_trade_no. A
//! repeated notification finds the order paid, or the entry written, and changes nothing.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::ledger::{Applied, Entry, EntryKind, NewEntry, account_scope, apply_entry_in};
use crate::page::{Page, PageRequest};
use crate::time::now_ms;
use crate::{Db, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub id: String,
    pub name: String,
    pub price_fen: i64,
    /// Hundredths of a credit.
    pub credits: i64,
    /// Hundredths of a credit on top of `credits`.
    pub bonus: i64,
    pub active: bool,
    pub sort: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderStatus {
    Pending,
    Paid,
    Closed,
    Refunding,
    Refunded,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 5] = [Self::Pending, Self::Paid, Self::Closed, Self::Refunding, Self::Refunded];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Closed => "closed",
            Self::Refunding => "refunding",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub out_trade_no: String,
    pub user_id: String,
    pub package_id: String,
    pub description: String,
    pub amount_fen: i64,
    pub credits: i64,
    pub bonus: i64,
    pub status: OrderStatus,
    pub prepay_id: Option<String>,
    pub transaction_id: Option<String>,
    pub created_at: i64,
    pub paid_at: Option<i64>,
    pub expires_at: i64,
}

impl Order {
    /// What paying it credits, in hundredths.
    pub fn total_credits(&self) -> i64 {
        self.credits + self.bonus
    }
}

/// An order to create, priced from its package by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub out_trade_no: String,
    pub user_id: String,
    pub package: Package,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// What marking an order paid did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkPaid {
    /// Paid now; the recharge entry written.
    Applied(Entry),
    /// It was paid (and credited) before: nothing changed.
    AlreadyApplied,
    /// The amount paid is not the order's: nothing changed.
    AmountMismatch {
        expected: i64,
    },
    Unknown,
}

const ORDER_COLUMNS: &str = "out_trade_no, user_id, package_id, description, amount_fen, credits, bonus, status, prepay_id, \
     transaction_id, created_at, paid_at, expires_at";

impl Db {
    /// Packages by their sort order; only those on sale when `active_only`.
    pub async fn packages(&self, active_only: bool) -> Result<Vec<Package>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, price_fen, credits, bonus, active, sort FROM packages WHERE ($1 = 0 OR active = 1) ORDER BY sort, id",
        )
        .bind(i64::from(active_only))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(package_from_row).collect()
    }

    pub async fn package(&self, id: &str) -> Result<Option<Package>, StoreError> {
        let row = sqlx::query("SELECT id, name, price_fen, credits, bonus, active, sort FROM packages WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(package_from_row).transpose()
    }

    /// Records a pending order. `Duplicate` when the out_trade_no exists (the caller draws
    /// another).
    pub async fn create_order(&self, new: &NewOrder) -> Result<Order, StoreError> {
        let p = &new.package;
        let order = Order {
            out_trade_no: new.out_trade_no.clone(),
            user_id: new.user_id.clone(),
            package_id: p.id.clone(),
            description: p.name.clone(),
            amount_fen: p.price_fen,
            credits: p.credits,
            bonus: p.bonus,
            status: OrderStatus::Pending,
            prepay_id: None,
            transaction_id: None,
            created_at: now_ms(),
            paid_at: None,
            expires_at: new.expires_at,
        };
        let inserted = sqlx::query(
            "INSERT INTO orders (out_trade_no, user_id, package_id, description, amount_fen, credits, bonus, status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
        )
        .bind(&order.out_trade_no)
        .bind(&order.user_id)
        .bind(&order.package_id)
        .bind(&order.description)
        .bind(order.amount_fen)
        .bind(order.credits)
        .bind(order.bonus)
        .bind(order.created_at)
        .bind(order.expires_at)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => Ok(order),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Duplicate(format!("order {}", new.out_trade_no))),
            Err(e) => Err(e.into()),
        }
    }

    /// Keeps the prepay id WeChat gave a pending order (so the payment parameters can be
    /// signed again without a second prepay).
    pub async fn set_order_prepay_id(&self, out_trade_no: &str, prepay_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE orders SET prepay_id = $2 WHERE out_trade_no = $1")
            .bind(out_trade_no)
            .bind(prepay_id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn order(&self, out_trade_no: &str) -> Result<Option<Order>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ORDER_COLUMNS} FROM orders WHERE out_trade_no = $1")))
            .bind(out_trade_no)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Orders newest first, of one user and/or one status.
    pub async fn orders(&self, user_id: Option<&str>, status: Option<OrderStatus>, page: PageRequest) -> Result<Page<Order>, StoreError> {
        let status = status.map(OrderStatus::as_str);
        let filter = "($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2)";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM orders WHERE {filter}")))
            .bind(user_id)
            .bind(status)
            .fetch_one(self.pool())
            .await?
            .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE {filter} ORDER BY created_at DESC, out_trade_no DESC LIMIT $3 OFFSET $4"
        )))
        .bind(user_id)
        .bind(status)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(self.pool())
        .await?;
        let items = rows.iter().map(order_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }

    /// Pending orders created before `created_before` (ms), oldest first: the reconciler's
    /// work list.
    pub async fn pending_orders(&self, created_before: i64, limit: i64) -> Result<Vec<Order>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'pending' AND created_at < $1 ORDER BY created_at LIMIT $2"
        )))
        .bind(created_before)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(order_from_row).collect()
    }

    /// Marks the order paid with WeChat's `transaction_id` and credits it, if `amount_fen` is
    /// its amount; at most once, however many times WeChat reports the payment.
    ///
    /// A `closed` order may still become paid: an order is only closed after WeChat confirmed
    /// the close, so a payment reported for it anyway is money received and is credited.
    pub async fn mark_order_paid(&self, out_trade_no: &str, transaction_id: &str, amount_fen: i64) -> Result<MarkPaid, StoreError> {
        let Some(order) = self.order(out_trade_no).await? else { return Ok(MarkPaid::Unknown) };
        // Cheap answers without the write lock: WeChat's duplicates arrive in bursts.
        if matches!(order.status, OrderStatus::Paid | OrderStatus::Refunding | OrderStatus::Refunded) {
            return Ok(MarkPaid::AlreadyApplied);
        }
        if order.amount_fen != amount_fen {
            return Ok(MarkPaid::AmountMismatch { expected: order.amount_fen });
        }
        let mut tx = self.begin_write(&account_scope(&order.user_id)).await?;
        let now = now_ms();
        let updated = sqlx::query(
            "UPDATE orders SET status = 'paid', transaction_id = $2, paid_at = $3 \
             WHERE out_trade_no = $1 AND status IN ('pending', 'closed') AND amount_fen = $4",
        )
        .bind(out_trade_no)
        .bind(transaction_id)
        .bind(now)
        .bind(amount_fen)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Another delivery got there between the read above and the lock.
            tx.rollback().await?;
            return Ok(MarkPaid::AlreadyApplied);
        }
        let entry = NewEntry {
            user_id: order.user_id.clone(),
            delta: order.total_credits(),
            kind: EntryKind::Recharge,
            reference: out_trade_no.into(),
            note: Some(format!("WeChat Pay order: {}", order.description)),
            actor: None,
        };
        match apply_entry_in(&mut tx, &entry).await? {
            Applied::Written(e) => {
                tx.commit().await?;
                Ok(MarkPaid::Applied(e))
            }
            // The entry exists though the order was not paid: only if a row was edited by
            // hand. Crediting again would double the money.
            Applied::Duplicate(_) => {
                tx.rollback().await?;
                Ok(MarkPaid::AlreadyApplied)
            }
            Applied::NoUser => Err(StoreError::Corrupt(format!("order {out_trade_no} belongs to no user"))),
            Applied::Insufficient { .. } => Err(StoreError::Corrupt("a recharge was refused as overdrawing".into())),
        }
    }

    /// Closes a pending order (WeChat confirmed it can no longer be paid); false when it is
    /// not pending.
    pub async fn close_order(&self, out_trade_no: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE orders SET status = 'closed' WHERE out_trade_no = $1 AND status = 'pending'")
            .bind(out_trade_no)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Makes the packages on sale exactly `packages` (an admin's edit): each is inserted or
/// updated, and packages not in the list are taken off sale (kept: orders name them).
pub(crate) async fn replace_packages_in(tx: &mut crate::WriteTx, packages: &[Package]) -> Result<(), StoreError> {
    for p in packages {
        sqlx::query(
            "INSERT INTO packages (id, name, price_fen, credits, bonus, active, sort) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, price_fen = excluded.price_fen, credits = excluded.credits, \
             bonus = excluded.bonus, active = excluded.active, sort = excluded.sort",
        )
        .bind(&p.id)
        .bind(&p.name)
        .bind(p.price_fen)
        .bind(p.credits)
        .bind(p.bonus)
        .bind(i64::from(p.active))
        .bind(p.sort)
        .execute(&mut **tx)
        .await?;
    }
    let ids: Vec<String> =
        sqlx::query("SELECT id FROM packages").fetch_all(&mut **tx).await?.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
    for id in ids.iter().filter(|id| !packages.iter().any(|p| &p.id == *id)) {
        sqlx::query("UPDATE packages SET active = 0 WHERE id = $1").bind(id).execute(&mut **tx).await?;
    }
    Ok(())
}

fn package_from_row(row: &AnyRow) -> Result<Package, StoreError> {
    Ok(Package {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        price_fen: row.try_get("price_fen")?,
        credits: row.try_get("credits")?,
        bonus: row.try_get("bonus")?,
        active: row.try_get::<i64, _>("active")? != 0,
        sort: row.try_get("sort")?,
    })
}

fn order_from_row(row: &AnyRow) -> Result<Order, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(Order {
        out_trade_no: row.try_get("out_trade_no")?,
        user_id: row.try_get("user_id")?,
        package_id: row.try_get("package_id")?,
        description: row.try_get("description")?,
        amount_fen: row.try_get("amount_fen")?,
        credits: row.try_get("credits")?,
        bonus: row.try_get("bonus")?,
        status: OrderStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("order status {status:?}")))?,
        prepay_id: row.try_get("prepay_id")?,
        transaction_id: row.try_get("transaction_id")?,
        created_at: row.try_get("created_at")?,
        paid_at: row.try_get("paid_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}
