//! Mail that is never lost: messages are written to an outbox in the store, in the same
//! transaction as what caused them, and [`MailWorker`] delivers them (SMTP with lettre, or the
//! log when no relay is configured), at least once, retrying with back-off. Each message keeps
//! its `Message-ID` across retries, so a receiver can drop a duplicate. Several instances lease
//! messages from the one outbox, so two never send the same message at the same time.
//!
//! Bodies come from templates ([`Templates`]): built in, or a deployment's own directory.

#[cfg(feature = "engine")]
mod templates;
#[cfg(feature = "engine")]
mod transport;
#[cfg(feature = "engine")]
mod worker;

#[cfg(feature = "engine")]
pub use templates::{Rendered, TemplateError, Templates, KINDS};
#[cfg(feature = "engine")]
pub use transport::{LogMailer, Mailer, SendError, SmtpMailer};
#[cfg(feature = "engine")]
pub use worker::{MailMetrics, MailWorker};

use time::OffsetDateTime;

/// A message to be queued: who gets it and what it says, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// Its id: the left part of its `Message-ID`, the same at every attempt.
    pub id: String,
    /// The recipient's address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
    /// When it was queued, by the engine's clock: it is due from then.
    pub queued_at: OffsetDateTime,
}

#[cfg(feature = "engine")]
impl OutgoingMail {
    /// A message with a new random id, queued at `at`.
    pub fn new(to: &str, rendered: Rendered, at: OffsetDateTime) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            to: to.to_string(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            queued_at: at,
        }
    }
}

/// A queued message as the worker leases it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMail {
    /// The message.
    pub mail: OutgoingMail,
    /// Attempts so far, this one included.
    pub attempts: i64,
}

/// What a link sent by mail is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Confirms the address it was sent to.
    VerifyEmail,
    /// Sets a new password.
    ResetPassword,
    /// Moves the account to the address it was sent to (bound to the old and new addresses).
    ChangeEmail,
    /// Sent to the old address: undoes an address change, before or after it happened.
    CancelEmailChange,
}

impl LinkPurpose {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::ChangeEmail => "change_email",
            Self::CancelEmailChange => "cancel_email_change",
        }
    }
}

/// A link's token as stored (by its hash): for one purpose, until a deadline, and bound to the
/// account's state when it was made (the address it confirms; the credentials generation a reset
/// replaces), so that a change of that state voids it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkToken {
    /// SHA-256 of the token.
    pub hash: crate::TokenHash,
    /// Whose.
    pub user_id: crate::UserId,
    /// What for.
    pub purpose: LinkPurpose,
    /// The state it is bound to.
    pub bound: String,
    /// Its deadline.
    pub expires_at: OffsetDateTime,
}
