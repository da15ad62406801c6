//! Accounts and auth (DESIGN section 11): one users table behind every surface; logins by
//! WeChat code or by email and password; a short access JWT verified without a database
//! read, and an opaque refresh token rotated on every use.

pub mod jwt;
mod model;
pub mod password;
mod sessions;
pub mod throttle;
mod validate;
mod verified;
mod versions;
pub mod wechat;

use std::sync::Arc;
use std::time::{Duration, Instant};

use purrify_store::users::{ProfileChange as StoreProfileChange, Taken, duplicate_field};
use purrify_store::{AdminChange, Db, NewUser, StoreError, UserFilter, WeChatIdentity};

pub use model::{Account, Page, PageRequest, Principal, Registration, Role, Session, UserTaskStats};
pub use versions::STALENESS as TOKEN_STATE_STALENESS;

use self::jwt::KeySet;
use self::password::{HashCost, Passwords};
use self::throttle::{LoginThrottle, Rate};
use self::validate::FieldErrors;
use self::versions::VersionCache;
use self::wechat::{WeChat, WeChatConfig};
use crate::domain::audit::{Action, AuditLog, actions};
use crate::domain::{DomainError, DomainResult};

/// Everything the account service is configured with.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub keys: KeySet,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub hash_cost: HashCost,
    pub wechat: Option<WeChatConfig>,
    pub login_per_address: Rate,
    pub login_per_account: Rate,
}

/// A profile edit as sent; `None` leaves a field unchanged.
#[derive(Debug, Clone, Default)]
pub struct ProfileEdit {
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub avatar_url: Option<String>,
}

/// Filters of the admin's user list.
pub type AccountFilter = UserFilter;
pub type AccountChange = AdminChange;

#[derive(Clone)]
pub struct AccountService {
    inner: Arc<Inner>,
    /// Where login attempts are recorded (seed 002's user actions).
    audit: Option<AuditLog>,
}

struct Inner {
    db: Db,
    settings: AccountSettings,
    passwords: Passwords,
    wechat: WeChat,
    throttle: LoginThrottle,
    versions: VersionCache,
    verified: verified::VerifiedTokens,
}

/// The one answer to a failed password login, whatever failed: no account, wrong password.
fn bad_login() -> DomainError {
    DomainError::Unauthorized("wrong email or password".into())
}

fn taken(e: StoreError) -> DomainError {
    match duplicate_field(&e) {
        Some(Taken::Email) => DomainError::Fields(vec![("email", "is already registered".into())]),
        Some(Taken::Username) => DomainError::Fields(vec![("username", "is already taken".into())]),
        _ => DomainError::Store(e),
    }
}

impl AccountService {
    pub fn new(db: Db, settings: AccountSettings) -> DomainResult<Self> {
        // Two hashes at once: on a small machine more would only queue for the cores.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
        let passwords = Passwords::new(settings.hash_cost, parallel)?;
        let wechat = WeChat::new(settings.wechat.clone())?;
        let throttle = LoginThrottle::new(settings.login_per_address, settings.login_per_account);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                settings,
                passwords,
                wechat,
                throttle,
                versions: VersionCache::default(),
                verified: Default::default(),
            }),
            audit: None,
        })
    }

    /// Records every login attempt, successful or not, in `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    fn audit_login(&self, result: &DomainResult<Session>, method: &str, address: &str, email: Option<&str>) {
        let Some(audit) = &self.audit else { return };
        let (user_id, action, detail) = match result {
            Ok(s) => (Some(s.account.id.clone()), actions::LOGIN, serde_json::json!({ "method": method, "email": email })),
            Err(e) => (None, actions::LOGIN_FAILED, serde_json::json!({ "method": method, "email": email, "reason": e.category() })),
        };
        audit.record(Action { user_id, action, client_addr: Some(address.to_owned()), detail, ..Action::default() });
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// Creates an email account and logs it in.
    pub async fn register(&self, r: Registration, address: &str) -> DomainResult<Session> {
        self.inner.throttle.check(address, None)?;
        let new = self.checked_new_user(r, Role::User).await?;
        let user = self.db().create_user(&new).await.map_err(taken)?;
        tracing::info!(user_id = %user.id, "account registered");
        self.open_session(user, true).await
    }

    /// Checks a registration and hashes its password.
    async fn checked_new_user(&self, r: Registration, role: Role) -> DomainResult<NewUser> {
        let mut errors = FieldErrors::default();
        let email = match r.email.as_deref().map(validate::email) {
            None => {
                errors.add("email", "is required");
                None
            }
            Some(Err(m)) => {
                errors.add("email", m);
                None
            }
            Some(Ok(e)) => Some(e),
        };
        let username = match r.username.as_deref().filter(|u| !u.trim().is_empty()).map(validate::username) {
            Some(Err(m)) => {
                errors.add("username", m);
                None
            }
            other => other.and_then(Result::ok),
        };
        let full_name = match r.full_name.as_deref().map(validate::full_name) {
            Some(Err(m)) => {
                errors.add("full_name", m);
                None
            }
            other => other.and_then(Result::ok).filter(|n| !n.is_empty()),
        };
        match r.password.as_deref() {
            None | Some("") => errors.add("password", "is required"),
            Some(p) => {
                let ids = [email.as_deref().unwrap_or(""), username.as_deref().unwrap_or("")];
                if let Some(m) = password::weakness(p, &ids) {
                    errors.add("password", m);
                }
            }
        }
        errors.into_result()?;
        let hash = self.inner.passwords.hash(r.password.as_deref().unwrap_or_default()).await?;
        Ok(NewUser { id: uuid::Uuid::new_v4().to_string(), email, password_hash: Some(hash), wechat: None, username, full_name, role })
    }

    /// Email and password. The same answer, in the same time, for an unknown email and a
    /// wrong password. `admin_only` refuses (403) accounts that are not admins.
    pub async fn login(&self, email: &str, password: &str, address: &str, admin_only: bool) -> DomainResult<Session> {
        let result = self.password_login(email, password, address, admin_only).await;
        let method = if admin_only { "admin_password" } else { "password" };
        self.audit_login(&result, method, address, Some(email.trim()).filter(|e| !e.is_empty() && e.len() <= 254));
        result
    }

    async fn password_login(&self, email: &str, password: &str, address: &str, admin_only: bool) -> DomainResult<Session> {
        let folded = email.trim().to_lowercase();
        self.inner.throttle.check(address, Some(&folded))?;
        if folded.is_empty() || password.is_empty() {
            let missing = [("email", folded.is_empty()), ("password", password.is_empty())];
            return Err(DomainError::Fields(missing.into_iter().filter(|(_, m)| *m).map(|(f, _)| (f, "is required".to_owned())).collect()));
        }
        // Overlong input is refused after the same work as any other wrong password.
        let password = if password.len() > password::MAX_PASSWORD_BYTES { "" } else { password };
        let user = if folded.len() <= validate::MAX_EMAIL_LEN { self.db().user_by_email(&folded).await? } else { None };
        let ok = self.inner.passwords.verify(password, user.as_ref().and_then(|u| u.password_hash.as_deref())).await?;
        let Some(user) = user.filter(|_| ok && !password.is_empty()) else {
            tracing::info!(admin_only, "password login refused");
            return Err(bad_login());
        };
        if !user.active {
            return Err(DomainError::Forbidden("this account is deactivated".into()));
        }
        if admin_only && user.role != Role::Admin {
            return Err(DomainError::Forbidden("this account is not an administrator".into()));
        }
        self.db().touch_login(&user.id, None).await?;
        tracing::info!(user_id = %user.id, admin_only, "password login");
        let mut user = user;
        user.last_login_at = Some(purrify_store::now_ms());
        self.open_session(user, false).await
    }

    /// A mini-program's `wx.login()` code; the first login creates the account.
    pub async fn login_wechat(&self, code: &str, address: &str) -> DomainResult<Session> {
        let result = self.wechat_login(code, address).await;
        self.audit_login(&result, "wechat", address, None);
        result
    }

    async fn wechat_login(&self, code: &str, address: &str) -> DomainResult<Session> {
        self.inner.throttle.check(address, None)?;
        let session = self.inner.wechat.exchange(code).await?;
        let appid = self.inner.wechat.appid().unwrap_or_default().to_owned();
        let new = NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            email: None,
            password_hash: None,
            wechat: Some(WeChatIdentity { appid, openid: session.openid, unionid: session.unionid.clone() }),
            username: None,
            full_name: None,
            role: Role::User,
        };
        let (user, created) = self.db().user_for_wechat(&new).await?;
        if !user.active {
            return Err(DomainError::Forbidden("this account is deactivated".into()));
        }
        self.db().touch_login(&user.id, session.unionid.as_deref()).await?;
        tracing::info!(user_id = %user.id, new_user = created, "WeChat login");
        self.open_session(user, created).await
    }

    /// Exchanges a refresh token for a new pair. A token used before revokes its family.
    pub async fn refresh(&self, refresh_token: &str) -> DomainResult<Session> {
        let (next, pair) = sessions::RefreshToken::generate();
        let rotated = self.db().rotate_refresh_token(&sessions::digest(refresh_token), &next.stored("", "", self.refresh_expiry())).await?;
        match rotated {
            purrify_store::Rotation::Rotated { user_id, .. } => {
                let user =
                    self.db().user(&user_id).await?.ok_or_else(|| DomainError::Unauthorized("the account no longer exists".into()))?;
                if !user.active {
                    return Err(DomainError::Forbidden("this account is deactivated".into()));
                }
                let version = user.token_version;
                Ok(self.session_for(user.into(), pair, version, false))
            }
            purrify_store::Rotation::Replayed { user_id } => {
                tracing::warn!(user_id = %user_id, "a rotated refresh token was presented again: its family is revoked");
                Err(DomainError::Unauthorized(
                    "this refresh token was already used; every session of that login is revoked, log in again".into(),
                ))
            }
            purrify_store::Rotation::Invalid => Err(DomainError::Unauthorized("the refresh token is invalid, expired or revoked".into())),
        }
    }

    /// Revokes the refresh token's family; `everywhere` also ends every other session and
    /// every access token of the user at once.
    pub async fn logout(&self, principal: &Principal, refresh_token: Option<&str>, everywhere: bool) -> DomainResult<()> {
        if let Some(t) = refresh_token.filter(|t| !t.is_empty()) {
            self.db().revoke_refresh_family(&sessions::digest(t)).await?;
        }
        if everywhere {
            self.db().revoke_all_sessions(&principal.user_id).await?;
            self.inner.versions.forget(&principal.user_id);
        }
        Ok(())
    }

    /// Who an access token belongs to. The signature and expiry are checked from
    /// configuration; the version and active flag against a cache at most
    /// [`TOKEN_STATE_STALENESS`] old.
    pub async fn authenticate(&self, access_token: &str) -> DomainResult<Principal> {
        let now = purrify_store::now_ms() / 1000;
        let claims = match self.inner.verified.get(access_token, now) {
            Some(c) => c,
            None => {
                let c = Arc::new(self.inner.settings.keys.verify(access_token, now).map_err(|e| {
                    tracing::debug!(reason = %e, "access token refused");
                    DomainError::Unauthorized(
                        if e == jwt::Rejected::Expired { "the access token has expired" } else { "invalid access token" }.into(),
                    )
                })?);
                self.inner.verified.put(access_token, c.clone(), now);
                c
            }
        };
        let at = Instant::now();
        let state = match self.inner.versions.get(&claims.sub, at) {
            Some(s) => s,
            None => {
                let s = self
                    .db()
                    .token_state(&claims.sub)
                    .await?
                    .ok_or_else(|| DomainError::Unauthorized("the account no longer exists".into()))?;
                self.inner.versions.put(&claims.sub, s, at);
                s
            }
        };
        if !state.active {
            return Err(DomainError::Forbidden("this account is deactivated".into()));
        }
        if state.token_version != claims.ver {
            return Err(DomainError::Unauthorized("this access token was revoked; log in again".into()));
        }
        Ok(Principal { user_id: claims.sub.clone(), role: state.role })
    }

    pub async fn account(&self, user_id: &str) -> DomainResult<Account> {
        self.db().user(user_id).await?.map(Account::from).ok_or_else(|| DomainError::NotFound(format!("no user {user_id}")))
    }

    pub async fn update_profile(&self, user_id: &str, edit: ProfileEdit) -> DomainResult<Account> {
        let mut errors = FieldErrors::default();
        let mut change = StoreProfileChange::default();
        let mut check = |field: &'static str, value: Option<String>, f: fn(&str) -> Result<String, String>| match value.map(|v| f(&v)) {
            Some(Ok(v)) => Some(v),
            Some(Err(m)) => {
                errors.add(field, m);
                None
            }
            None => None,
        };
        change.username = check("username", edit.username, validate::username);
        change.full_name = check("full_name", edit.full_name, validate::full_name);
        change.avatar_url = check("avatar_url", edit.avatar_url, validate::avatar_url);
        errors.into_result()?;
        let user = self.db().update_profile(user_id, &change).await.map_err(taken)?;
        user.map(Account::from).ok_or_else(|| DomainError::NotFound(format!("no user {user_id}")))
    }

    /// Checks the current password, sets the new one, and signs out every session (this
    /// one's access token included).
    pub async fn change_password(&self, user_id: &str, current: &str, new: &str, address: &str) -> DomainResult<()> {
        self.inner.throttle.check(address, Some(user_id))?;
        let user = self.db().user(user_id).await?.ok_or_else(|| DomainError::NotFound(format!("no user {user_id}")))?;
        let Some(stored) = user.password_hash.as_deref() else {
            return Err(DomainError::Conflict("this account logs in with WeChat and has no password".into()));
        };
        if !self.inner.passwords.verify(current, Some(stored)).await? {
            return Err(DomainError::Fields(vec![("current_password", "is wrong".into())]));
        }
        let ids = [user.email.as_deref().unwrap_or(""), user.username.as_deref().unwrap_or("")];
        if let Some(m) = password::weakness(new, &ids) {
            return Err(DomainError::Fields(vec![("new_password", m)]));
        }
        if new == current {
            return Err(DomainError::Fields(vec![("new_password", "must differ from the current password".into())]));
        }
        let hash = self.inner.passwords.hash(new).await?;
        match self.db().change_password(user_id, stored, &hash).await? {
            Some(_) => {
                self.inner.versions.forget(user_id);
                tracing::info!(user_id, "password changed; every session revoked");
                Ok(())
            }
            None => Err(DomainError::Conflict("the password was changed by another request; try again".into())),
        }
    }

    pub async fn task_stats(&self, user_id: &str) -> DomainResult<UserTaskStats> {
        Ok(self.db().user_task_stats(user_id).await?)
    }

    pub async fn list(&self, filter: &AccountFilter, page: PageRequest) -> DomainResult<Page<Account>> {
        Ok(self.db().list_users(filter, page).await?.map(Account::from))
    }

    /// An admin's edit of another account (or their own). Takes effect at once here.
    pub async fn admin_update(&self, actor: &Principal, id: &str, change: AccountChange) -> DomainResult<Account> {
        let user = self.db().admin_update_user(id, change).await.map_err(|e| match e {
            StoreError::Invalid(m) => DomainError::Conflict(m),
            e => DomainError::Store(e),
        })?;
        let user = user.ok_or_else(|| DomainError::NotFound(format!("no user {id}")))?;
        self.inner.versions.forget(id);
        tracing::info!(admin = %actor.user_id, user_id = %id, role = user.role.as_str(), active = user.active, "account changed by an admin");
        Ok(user.into())
    }

    /// An account made by an operator (CLI or start-up configuration), no login.
    pub async fn create_account(&self, r: Registration, role: Role) -> DomainResult<Account> {
        let new = self.checked_new_user(r, role).await?;
        Ok(self.db().create_user(&new).await.map_err(taken)?.into())
    }

    /// The first admin, from configuration, when the database has none. Two replicas starting
    /// together create it once (the email is unique).
    pub async fn ensure_admin(&self, email: &str, password: &str) -> DomainResult<Option<Account>> {
        if self.db().has_admin().await? {
            return Ok(None);
        }
        let r = Registration { email: Some(email.into()), password: Some(password.into()), username: None, full_name: None };
        match self.create_account(r, Role::Admin).await {
            Ok(a) => {
                tracing::info!(user_id = %a.id, "first admin created from configuration");
                Ok(Some(a))
            }
            Err(DomainError::Fields(f)) if f.iter().any(|(field, m)| *field == "email" && m.contains("already")) => {
                tracing::warn!("the configured first admin's email belongs to an existing non-admin account; no admin created");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Periodic upkeep: forget refilled rate-limit buckets, delete long-expired tokens.
    pub async fn housekeeping(&self) {
        self.inner.throttle.sweep();
        if let Err(e) = self.db().purge_refresh_tokens(Duration::from_secs(7 * 86400).as_millis() as i64).await {
            tracing::warn!(error = %e, "cannot purge expired refresh tokens");
        }
    }

    fn refresh_expiry(&self) -> i64 {
        purrify_store::now_ms() + self.inner.settings.refresh_ttl.as_millis() as i64
    }

    /// A new login: a new refresh-token family and an access token.
    async fn open_session(&self, user: purrify_store::User, is_new_user: bool) -> DomainResult<Session> {
        let (token, pair) = sessions::RefreshToken::generate();
        let family = uuid::Uuid::new_v4().to_string();
        self.db().store_refresh_token(&token.stored(&user.id, &family, self.refresh_expiry())).await?;
        let version = user.token_version;
        Ok(self.session_for(user.into(), pair, version, is_new_user))
    }

    fn session_for(&self, account: Account, refresh_token: String, version: i64, is_new_user: bool) -> Session {
        let now = purrify_store::now_ms() / 1000;
        let ttl = self.inner.settings.access_ttl.as_secs();
        let claims = jwt::Claims {
            sub: account.id.clone(),
            role: account.role.as_str().into(),
            ver: version,
            iat: now,
            exp: now + ttl as i64,
            iss: jwt::ISSUER.into(),
        };
        Session { access_token: self.inner.settings.keys.sign(&claims), expires_in: ttl, refresh_token, account, is_new_user }
    }
}
