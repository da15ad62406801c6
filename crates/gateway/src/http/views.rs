//! JSON views of the domain shared by several surfaces: accounts and sessions in seeds
//! 001/002's snake_case. Money is stored in hundredths and rendered here as decimals
//! (seed 002: `"balance": 100.50`); times as RFC 3339 UTC.

use serde::Serialize;

use purrify_api::TaskStatus;

use crate::domain::accounts::{Account, Page, Session};

/// Unix milliseconds as `2024-01-15T10:30:00Z`.
pub fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default()
}

/// Seeds 001/002's page of a list: `{items, total, page, page_size, total_pages}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PageView<T> {
    pub items: Vec<T>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
    pub total_pages: u64,
}

impl<T> PageView<T> {
    /// The page with each row shown by `view`.
    pub fn of<R>(page: Page<R>, view: impl FnMut(R) -> T) -> Self {
        let total_pages = page.total_pages();
        let (total, number, size) = (page.total, page.page, page.page_size);
        Self { items: page.items.into_iter().map(view).collect(), total, page: number, page_size: size, total_pages }
    }
}

/// Seed 002's word for a task's (or a work's) status.
pub fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Queued => "pending",
        TaskStatus::Processing => "running",
        TaskStatus::Completed => "completed",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// Hundredths as a decimal number for display (never used for arithmetic).
pub fn decimal(hundredths: i64) -> f64 {
    hundredths as f64 / 100.0
}

/// An account (seeds 001/002).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub avatar_url: Option<String>,
    /// `user` or `admin`.
    pub role: &'static str,
    pub is_active: bool,
    pub vip_level: i64,
    pub vip_expires_at: Option<String>,
    /// Whether the account logs in with WeChat.
    pub wechat: bool,
    /// Credits, as a decimal.
    pub balance: f64,
    pub created_at: String,
    pub last_login: Option<String>,
}

impl From<&Account> for UserView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id.clone(),
            email: a.email.clone(),
            username: a.username.clone(),
            full_name: a.full_name.clone(),
            avatar_url: a.avatar_url.clone(),
            role: a.role.as_str(),
            is_active: a.active,
            vip_level: a.vip_level,
            vip_expires_at: a.vip_expires_at.map(iso),
            wechat: a.wechat,
            balance: decimal(a.balance),
            created_at: iso(a.created_at),
            last_login: a.last_login_at.map(iso),
        }
    }
}

/// A login's tokens (seed 002's shape, plus the refresh token and seed 001/004's `token`
/// alias and `is_new_user`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub access_token: String,
    /// `bearer`.
    pub token_type: &'static str,
    /// Seconds the access token is valid (1800).
    pub expires_in: u64,
    /// Exchange at `POST /api/auth/refresh`; each use returns a new one.
    pub refresh_token: String,
    /// The access token again, under the name seeds 001 and 004 use.
    pub token: String,
    pub is_new_user: bool,
    pub user: UserView,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> Self {
        Self {
            token: s.access_token.clone(),
            access_token: s.access_token,
            token_type: "bearer",
            expires_in: s.expires_in,
            refresh_token: s.refresh_token,
            is_new_user: s.is_new_user,
            user: UserView::from(&s.account),
        }
    }
}
