//! The `refresh_tokens` table: opaque refresh tokens, stored only as digests, rotated on every
//! use. A token presented after it was rotated was copied: its whole family (every token
//! descended from one login) is revoked, so the thief and the victim both have to log in
//! again, and the victim notices.

use sqlx::Row;

use crate::time::now_ms;
use crate::{Db, StoreError, WriteTx};

/// A token to store: its digest (the caller hashes; this table never sees a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub id: String,
    pub user_id: String,
    /// The login this token descends from.
    pub family_id: String,
    pub token_hash: String,
    pub expires_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was current: it is now used, and `next` was stored in its family.
    Rotated { user_id: String, family_id: String },
    /// It had been used already (or another request used it at the same moment): the
    /// family is now revoked.
    Replayed { user_id: String },
    /// Unknown, expired or revoked.
    Invalid,
}

impl Db {
    /// Stores the first token of a new family (a login).
    pub async fn store_refresh_token(&self, token: &NewRefreshToken) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert(&mut conn, token).await
    }

    /// Rotates `token_hash`: if it is current, marks it used and stores `next` in the same
    /// family, in one transaction. `next.user_id` and `next.family_id` are taken from the
    /// presented token.
    pub async fn rotate_refresh_token(&self, token_hash: &str, next: &NewRefreshToken) -> Result<Rotation, StoreError> {
        let row = sqlx::query("SELECT user_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(Rotation::Invalid) };
        let user_id: String = row.try_get("user_id")?;
        let family_id: String = row.try_get("family_id")?;
        let now = now_ms();
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() || row.try_get::<i64, _>("expires_at")? <= now {
            return Ok(Rotation::Invalid);
        }
        let mut tx = self.begin_write(&format!("refresh:{family_id}")).await?;
        // Conditional: of two requests presenting the same token at once, one rotates it and
        // the other finds it used, exactly as a replay.
        let used = sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL")
            .bind(token_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() == 0 {
            revoke_family_in(&mut tx, &family_id, now).await?;
            tx.commit().await?;
            return Ok(Rotation::Replayed { user_id });
        }
        let next = NewRefreshToken { user_id: user_id.clone(), family_id: family_id.clone(), ..next.clone() };
        insert(&mut tx, &next).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id, family_id })
    }

    /// Revokes the family of `token_hash` (logout). Returns whether a live token was found.
    pub async fn revoke_refresh_family(&self, token_hash: &str) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT family_id FROM refresh_tokens WHERE token_hash = $1").bind(token_hash).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(false) };
        let family: String = row.try_get("family_id")?;
        let mut tx = self.begin_write(&format!("refresh:{family}")).await?;
        let n = revoke_family_in(&mut tx, &family, now_ms()).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Deletes tokens that expired more than `keep_ms` ago.
    pub async fn purge_refresh_tokens(&self, keep_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1").bind(now_ms() - keep_ms).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Live (unused, unrevoked, unexpired) tokens of a user.
    pub async fn live_refresh_tokens(&self, user_id: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM refresh_tokens WHERE user_id = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(user_id)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }
}

async fn insert(conn: &mut sqlx::AnyConnection, t: &NewRefreshToken) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.family_id)
        .bind(&t.token_hash)
        .bind(now_ms())
        .bind(t.expires_at)
        .execute(conn)
        .await?;
    Ok(())
}

async fn revoke_family_in(tx: &mut WriteTx, family_id: &str, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// Revokes every token of a user (password change, deactivation, sign out everywhere).
pub(crate) async fn revoke_user_in(tx: &mut WriteTx, user_id: &str, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}
