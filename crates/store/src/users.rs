//! The `users` table (DESIGN section 11): one row per person, whichever surface they came in
//! through (WeChat, email, an admin's CLI). Secrets are never stored in plain text: the
//! password is an argon2id PHC string computed by the caller.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::page::{Page, PageRequest};
use crate::time::now_ms;
use crate::{Db, StoreError, WriteTx};

/// `user` or `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// A WeChat mini-program identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeChatIdentity {
    pub appid: String,
    pub openid: String,
    pub unionid: Option<String>,
}

/// What creating an account needs; the email must already be case-folded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    pub id: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub wechat: Option<WeChatIdentity>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub role: Role,
}

/// One row of `users`.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    /// argon2id PHC string; never leaves the domain.
    pub password_hash: Option<String>,
    pub wechat: Option<WeChatIdentity>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub avatar_url: Option<String>,
    pub role: Role,
    pub vip_level: i64,
    pub vip_expires_at: Option<i64>,
    pub active: bool,
    pub token_version: i64,
    /// Hundredths of a credit.
    pub balance: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
}

/// Which unique field a conflicting write collided with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Email,
    Username,
    WeChat,
    Id,
}

/// A profile edit; `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileChange {
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// An admin's edit; `None` leaves the field as it is. Deactivating bumps the token version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminChange {
    pub role: Option<Role>,
    pub active: Option<bool>,
}

/// Filters of the admin's user list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    pub role: Option<Role>,
    pub active: Option<bool>,
    /// Substring of the email or username, case-insensitive.
    pub search: Option<String>,
}

/// The version and flag an access token is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    pub token_version: i64,
    pub active: bool,
    pub role: Role,
}

const COLUMNS: &str = "id, email, password_hash, wechat_appid, wechat_openid, wechat_unionid, username, full_name, avatar_url, \
     role, vip_level, vip_expires_at, is_active, token_version, balance, created_at, updated_at, last_login_at";

/// Which unique constraint a violation names (PostgreSQL gives the constraint, SQLite the
/// column list in its message).
fn taken(e: &dyn sqlx::error::DatabaseError) -> Taken {
    let text = format!("{} {}", e.constraint().unwrap_or_default(), e.message());
    if text.contains("username_key") {
        Taken::Username
    } else if text.contains("email") {
        Taken::Email
    } else if text.contains("wechat") {
        Taken::WeChat
    } else {
        Taken::Id
    }
}

fn duplicate(which: Taken) -> StoreError {
    StoreError::Duplicate(
        match which {
            Taken::Email => "email",
            Taken::Username => "username",
            Taken::WeChat => "wechat",
            Taken::Id => "user",
        }
        .into(),
    )
}

/// Which field a [`StoreError::Duplicate`] from this module names.
pub fn duplicate_field(e: &StoreError) -> Option<Taken> {
    match e {
        StoreError::Duplicate(f) => match f.as_str() {
            "email" => Some(Taken::Email),
            "username" => Some(Taken::Username),
            "wechat" => Some(Taken::WeChat),
            "user" => Some(Taken::Id),
            _ => None,
        },
        _ => None,
    }
}

fn map_unique(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => duplicate(taken(d.as_ref())),
        e => StoreError::Query(e),
    }
}

/// The unique key of a username.
pub fn username_key(username: &str) -> String {
    username.to_lowercase()
}

impl Db {
    /// Inserts an account; a taken email, username or WeChat identity is
    /// [`StoreError::Duplicate`] naming it (see [`duplicate_field`]).
    pub async fn create_user(&self, user: &NewUser) -> Result<User, StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_user(&mut conn, user).await
    }

    /// [`create_user`](Self::create_user) inside a write transaction.
    pub async fn create_user_in(&self, tx: &mut WriteTx, user: &NewUser) -> Result<User, StoreError> {
        insert_user(tx, user).await
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// By case-folded email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE email = $1")))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn user_by_wechat(&self, appid: &str, openid: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE wechat_appid = $1 AND wechat_openid = $2")))
            .bind(appid)
            .bind(openid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The WeChat user, created on first sight. Returns the user and whether it was created.
    /// Two first logins racing for one openid both end with the same row.
    pub async fn user_for_wechat(&self, new: &NewUser) -> Result<(User, bool), StoreError> {
        let id = new.wechat.as_ref().ok_or_else(|| StoreError::Invalid("a WeChat user needs its identity".into()))?;
        if let Some(u) = self.user_by_wechat(&id.appid, &id.openid).await? {
            return Ok((u, false));
        }
        match self.create_user(new).await {
            Ok(u) => Ok((u, true)),
            Err(e) if duplicate_field(&e) == Some(Taken::WeChat) => {
                let u =
                    self.user_by_wechat(&id.appid, &id.openid).await?.ok_or_else(|| StoreError::Corrupt("WeChat user vanished".into()))?;
                Ok((u, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Records a successful login (and a WeChat unionid that appeared since).
    pub async fn touch_login(&self, id: &str, unionid: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_login_at = $2, wechat_unionid = COALESCE($3, wechat_unionid) WHERE id = $1")
            .bind(id)
            .bind(now_ms())
            .bind(unionid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The fields an access token is checked against, in one indexed read.
    pub async fn token_state(&self, id: &str) -> Result<Option<TokenState>, StoreError> {
        let row = sqlx::query("SELECT token_version, is_active, role FROM users WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.map(|r| {
            let role: String = r.try_get("role")?;
            Ok(TokenState {
                token_version: r.try_get("token_version")?,
                active: r.try_get::<i64, _>("is_active")? == 1,
                role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
            })
        })
        .transpose()
    }

    /// Edits the profile; a taken username is [`StoreError::Duplicate`].
    pub async fn update_profile(&self, id: &str, change: &ProfileChange) -> Result<Option<User>, StoreError> {
        let key = change.username.as_deref().map(username_key);
        let done = sqlx::query(
            "UPDATE users SET username = COALESCE($2, username), username_key = COALESCE($3, username_key), \
             full_name = COALESCE($4, full_name), avatar_url = COALESCE($5, avatar_url), updated_at = $6 WHERE id = $1",
        )
        .bind(id)
        .bind(change.username.as_deref())
        .bind(key.as_deref())
        .bind(change.full_name.as_deref())
        .bind(change.avatar_url.as_deref())
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(map_unique)?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.user(id).await
    }

    /// Replaces the password hash if the stored one is still `expected` (a concurrent change
    /// wins once), bumps the token version and revokes every refresh token, in one
    /// transaction. Returns the new version, or `None` when the hash had changed.
    pub async fn change_password(&self, id: &str, expected: &str, new_hash: &str) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write(&format!("user:{id}")).await?;
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE users SET password_hash = $3, token_version = token_version + 1, updated_at = $4 \
             WHERE id = $1 AND password_hash = $2 RETURNING token_version",
        )
        .bind(id)
        .bind(expected)
        .bind(new_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        crate::refresh_tokens::revoke_user_in(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(Some(row.try_get("token_version")?))
    }

    /// Bumps the token version (sign out everywhere) and revokes every refresh token.
    pub async fn revoke_all_sessions(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let mut tx = self.begin_write(&format!("user:{id}")).await?;
        let now = now_ms();
        let row = sqlx::query("UPDATE users SET token_version = token_version + 1, updated_at = $2 WHERE id = $1 RETURNING token_version")
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        crate::refresh_tokens::revoke_user_in(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(Some(row.try_get("token_version")?))
    }

    /// An admin's edit. Deactivation bumps the token version and revokes the user's refresh
    /// tokens in the same transaction. Demoting or deactivating the last active admin is
    /// refused ([`StoreError::Invalid`]): nobody could administer the service afterwards.
    pub async fn admin_update_user(&self, id: &str, change: AdminChange) -> Result<Option<User>, StoreError> {
        // One scope for every admin edit: the last-admin check reads what other edits write.
        let mut tx = self.begin_write("users:admin-edit").await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = row.as_ref().map(user_from_row).transpose()? else { return Ok(None) };
        let role = change.role.unwrap_or(current.role);
        let active = change.active.unwrap_or(current.active);
        let loses_admin = current.role == Role::Admin && current.active && (role != Role::Admin || !active);
        if loses_admin {
            let admins: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND is_active = 1")
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            if admins <= 1 {
                return Err(StoreError::Invalid("the last active admin cannot be demoted or deactivated".into()));
            }
        }
        let now = now_ms();
        let bump = i64::from(current.active && !active);
        sqlx::query("UPDATE users SET role = $2, is_active = $3, token_version = token_version + $4, updated_at = $5 WHERE id = $1")
            .bind(id)
            .bind(role.as_str())
            .bind(i64::from(active))
            .bind(bump)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if bump == 1 {
            crate::refresh_tokens::revoke_user_in(&mut tx, id, now).await?;
        }
        let row =
            sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1"))).bind(id).fetch_one(&mut *tx).await?;
        let user = user_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(user))
    }

    /// Whether any active admin exists.
    pub async fn has_admin(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND is_active = 1").fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The admin's list, newest first.
    pub async fn list_users(&self, filter: &UserFilter, page: PageRequest) -> Result<Page<User>, StoreError> {
        let pattern = filter.search.as_deref().map(|s| format!("%{}%", escape_like(&s.to_lowercase())));
        let role = filter.role.map(Role::as_str);
        let active = filter.active.map(i64::from);
        let cond = "($1 IS NULL OR role = $1) AND ($2 IS NULL OR is_active = $2) \
                    AND ($3 IS NULL OR email LIKE $3 ESCAPE '\\' OR username_key LIKE $3 ESCAPE '\\')";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) AS n FROM users WHERE {cond}")))
            .bind(role)
            .bind(active)
            .bind(pattern.as_deref())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM users WHERE {cond} ORDER BY created_at DESC, id LIMIT $4 OFFSET $5"
        )))
        .bind(role)
        .bind(active)
        .bind(pattern.as_deref())
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(user_from_row).collect::<Result<_, _>>()?;
        Ok(Page::new(items, u64::try_from(total).unwrap_or(0), page))
    }
}

async fn insert_user(conn: &mut sqlx::AnyConnection, user: &NewUser) -> Result<User, StoreError> {
    let now = now_ms();
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, email, password_hash, wechat_appid, wechat_openid, wechat_unionid, username, username_key, \
         full_name, role, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {COLUMNS}"
    )))
    .bind(&user.id)
    .bind(user.email.as_deref())
    .bind(user.password_hash.as_deref())
    .bind(user.wechat.as_ref().map(|w| w.appid.as_str()))
    .bind(user.wechat.as_ref().map(|w| w.openid.as_str()))
    .bind(user.wechat.as_ref().and_then(|w| w.unionid.as_deref()))
    .bind(user.username.as_deref())
    .bind(user.username.as_deref().map(username_key))
    .bind(user.full_name.as_deref())
    .bind(user.role.as_str())
    .bind(now)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_unique)?;
    user_from_row(&row)
}

/// `%`, `_` and the escape character itself, escaped for `LIKE ... ESCAPE '\'`.
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn user_from_row(row: &AnyRow) -> Result<User, StoreError> {
    let role: String = row.try_get("role")?;
    let appid: Option<String> = row.try_get("wechat_appid")?;
    let openid: Option<String> = row.try_get("wechat_openid")?;
    let wechat = match (appid, openid) {
        (Some(appid), Some(openid)) => Some(WeChatIdentity { appid, openid, unionid: row.try_get("wechat_unionid")? }),
        _ => None,
    };
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        wechat,
        username: row.try_get("username")?,
        full_name: row.try_get("full_name")?,
        avatar_url: row.try_get("avatar_url")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role:?}")))?,
        vip_level: row.try_get("vip_level")?,
        vip_expires_at: row.try_get("vip_expires_at")?,
        active: row.try_get::<i64, _>("is_active")? == 1,
        token_version: row.try_get("token_version")?,
        balance: row.try_get("balance")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        last_login_at: row.try_get("last_login_at")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(super::escape_like("a%b_c\\d"), "a\\%b\\_c\\\\d");
    }
}
