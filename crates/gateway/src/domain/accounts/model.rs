//! What the account service hands out: accounts without their secrets, sessions (the token
//! pair of a login), and the principal an access token proves.

use purrify_store::User;
pub use purrify_store::{Page, PageRequest, Role, UserTaskStats};

/// An account as every surface may show it: no password hash, no WeChat identifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub full_name: Option<String>,
    pub avatar_url: Option<String>,
    pub role: Role,
    pub vip_level: i64,
    pub vip_expires_at: Option<i64>,
    pub active: bool,
    /// Whether the account logs in through WeChat.
    pub wechat: bool,
    /// Hundredths of a credit.
    pub balance: i64,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
}

impl From<User> for Account {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            username: u.username,
            full_name: u.full_name,
            avatar_url: u.avatar_url,
            role: u.role,
            vip_level: u.vip_level,
            vip_expires_at: u.vip_expires_at,
            active: u.active,
            wechat: u.wechat.is_some(),
            balance: u.balance,
            created_at: u.created_at,
            last_login_at: u.last_login_at,
        }
    }
}

/// The tokens of a login or a refresh.
#[derive(Debug, Clone)]
pub struct Session {
    /// A JWT, valid for `expires_in` seconds.
    pub access_token: String,
    pub expires_in: u64,
    /// Opaque; exchanged once at the refresh endpoint for a new pair.
    pub refresh_token: String,
    pub account: Account,
    /// The login created the account (first WeChat login, registration).
    pub is_new_user: bool,
}

/// Who an access token belongs to, as of at most [`super::versions::STALENESS`] ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A new email account's fields, as sent.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub email: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub full_name: Option<String>,
}
