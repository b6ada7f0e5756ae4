//! The JSON shapes of users and sessions in answers. Nothing here carries a token or a hash.

use cloakroom::{Authenticated, Role, Session, User};
use serde::Serialize;
use time::OffsetDateTime;

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// Email.
    pub email: String,
    /// Roles.
    pub roles: Vec<String>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            roles: u.roles.iter().map(Role::to_string).collect(),
        }
    }
}

/// The current session, as `login` and `whoami` show it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// Id.
    pub id: String,
    /// `cookie` or `token`.
    pub transport: &'static str,
    /// Login time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it ends unless used again.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl SessionView {
    /// The view of `s`, ending at `expires_at`.
    pub fn new(s: &Session, expires_at: OffsetDateTime) -> Self {
        Self {
            id: s.id.to_string(),
            transport: s.transport.as_str(),
            created_at: s.created_at,
            expires_at,
        }
    }
}

/// `whoami`'s answer.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// The user.
    pub user: UserView,
    /// The session.
    pub session: SessionView,
}

impl From<&Authenticated> for WhoAmI {
    fn from(a: &Authenticated) -> Self {
        Self {
            user: UserView::from(&*a.user),
            session: SessionView::new(&a.session, a.expires_at),
        }
    }
}

/// One entry of `GET /auth/sessions`.
#[derive(Debug, Serialize)]
pub struct SessionListEntry {
    /// Id.
    pub id: String,
    /// `cookie` or `token`.
    pub transport: &'static str,
    /// Login time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last activity.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// When it ends unless used again.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Client IP at login.
    pub ip: Option<String>,
    /// Client user agent at login.
    pub user_agent: Option<String>,
    /// Whether this is the session making the request.
    pub current: bool,
}
