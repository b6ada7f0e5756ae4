//! An account's life over mail: confirming the address, and a forgotten password. Links carry
//! a 256-bit token that the store keeps by its hash, single-use, short-lived, for one purpose and
//! bound to the account's state when it was made (the address it confirms; the credentials
//! generation a reset replaces), so a change of that state voids it. Every message is queued in
//! the same transaction as what caused it, and the outbox's worker delivers it (see
//! [`crate::mail`]). Presenting a link's token is a throttled attempt on the client's address.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use time::Duration;
use tokio::sync::Notify;

use super::attempts::{ip_key, Attempt, Attempts};
use super::config::AuthConfig;
use super::error::AuthError;
use super::request::{Authenticated, ClientInfo};
use super::Auth;
use crate::clock::Clock;
use crate::events::{EventKind, SecurityEvent};
use crate::mail::{LinkPurpose, LinkToken, OutgoingMail, Templates};
use crate::session::TokenHash;
use crate::store::Store;
use crate::user::{Email, User};

/// Requests for a reset link one address may make in an hour, and one client address.
const FORGOT_PER_ADDRESS: u32 = 5;
const FORGOT_PER_CLIENT: u32 = 20;
/// Links a signed-in user may have mailed in an hour (a new confirmation link, an address
/// change): each goes to an inbox, and to someone else's if the address is not theirs.
const LINKS_PER_USER: u32 = 5;

/// The security events a new-device check reads: the user's newest.
const NEW_DEVICE_LOOKBACK: usize = 200;

/// How long the old address can undo a change of address, before or after it happens.
const CANCEL_EMAIL_CHANGE_FOR: Duration = Duration::days(7);

/// What the links of an address change are bound to: the old address and the new.
fn change_bound(old: &Email, new: &Email) -> String {
    format!("{old} {new}")
}

fn parse_change_bound(bound: &str) -> Option<(Email, Email)> {
    let (old, new) = bound.split_once(' ')?;
    Some((Email::parse(old).ok()?, Email::parse(new).ok()?))
}

/// A new link token and its hash.
fn new_link_token() -> (String, TokenHash) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = link_hash(&token).unwrap_or(TokenHash([0; 32]));
    (token, hash)
}

/// The stored hash of a presented link token; `None` for what cannot be one (never looked up).
fn link_hash(token: &str) -> Option<TokenHash> {
    let raw = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .filter(|r| r.len() == 32)?;
    let mut h = Sha256::new();
    h.update(b"cloakroom link:");
    h.update(&raw);
    Some(TokenHash(h.finalize().into()))
}

/// "30 minutes", "24 hours": how long a link works, for the message.
fn in_words(d: Duration) -> String {
    let (n, unit) = if d.whole_hours() >= 2 && d.whole_minutes() % 60 == 0 {
        (d.whole_hours(), "hours")
    } else {
        (d.whole_minutes(), "minutes")
    };
    format!("{n} {unit}")
}

/// The engine's mail: templates, links, and the worker's wake-up.
pub(crate) struct Mails {
    templates: Templates,
    config: Arc<AuthConfig>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    attempts: Arc<Attempts>,
    wake: Arc<Notify>,
}

impl Mails {
    pub(crate) fn new(
        config: Arc<AuthConfig>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        attempts: Arc<Attempts>,
    ) -> Result<Self, AuthError> {
        let templates = Templates::load(config.mail_templates.as_deref())
            .map_err(|e| AuthError::Keys(e.to_string()))?;
        Ok(Self {
            templates,
            config,
            store,
            clock,
            attempts,
            wake: Arc::new(Notify::new()),
        })
    }

    /// What wakes the outbox's worker.
    pub(crate) fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// A message of `kind` to `to`.
    pub(crate) fn message(
        &self,
        kind: &str,
        to: &Email,
        context: serde_json::Value,
    ) -> Result<OutgoingMail, AuthError> {
        let mut context = context;
        context["email"] = json!(to.as_str());
        let rendered = self
            .templates
            .render(kind, &context)
            .map_err(|e| AuthError::Keys(e.to_string()))?;
        Ok(OutgoingMail::new(
            to.as_str(),
            rendered,
            self.clock.now_secs(),
        ))
    }

    /// The public URL of `path`, with `token` when given.
    fn link(&self, path: &str, token: Option<&str>) -> String {
        let base = self.config.public_url.trim_end_matches('/');
        match token {
            Some(token) => format!("{base}{path}?token={token}"),
            None => format!("{base}{path}"),
        }
    }

    /// Stores a link for `user` and queues the message that carries it to `to`, with `context`
    /// for its template besides the link.
    async fn send_link(
        &self,
        user: &User,
        to: &Email,
        purpose: LinkPurpose,
        bound: String,
        context: serde_json::Value,
    ) -> Result<(), AuthError> {
        let (kind, path, ttl) = match purpose {
            LinkPurpose::VerifyEmail => (
                "verify_email",
                "/verify-email",
                self.config.verify_email_ttl,
            ),
            LinkPurpose::ResetPassword => (
                "reset_password",
                "/reset-password",
                self.config.reset_password_ttl,
            ),
            LinkPurpose::ChangeEmail => (
                "change_email",
                "/confirm-email-change",
                self.config.verify_email_ttl,
            ),
            LinkPurpose::CancelEmailChange => (
                "email_change_requested",
                "/cancel-email-change",
                CANCEL_EMAIL_CHANGE_FOR,
            ),
        };
        let (token, hash) = new_link_token();
        let mut context = context;
        context["link"] = json!(self.link(path, Some(&token)));
        context["valid_for"] = json!(in_words(ttl));
        let mail = self.message(kind, to, context)?;
        let link = LinkToken {
            hash,
            user_id: user.id,
            purpose,
            bound,
            expires_at: self.clock.now_secs() + ttl,
        };
        self.store.issue_link(&link, &mail).await?;
        self.wake.notify_one();
        tracing::info!(user = %user.id, purpose = purpose.as_str(), "link sent");
        Ok(())
    }

    /// The notice that a password changed (`how`), to queue with the change.
    pub(crate) fn password_changed(
        &self,
        to: &Email,
        how: &str,
    ) -> Result<OutgoingMail, AuthError> {
        self.message(
            "password_changed",
            to,
            json!({"how": how, "link": self.link("/forgot-password", None)}),
        )
    }

    /// Tells `user` by mail that `what` happened (`event`), after it: a notice that cannot be
    /// queued is logged, never a failure of what happened.
    pub(crate) async fn notify(&self, user: &User, event: &SecurityEvent, what: &str) {
        let at = event
            .at
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        let context = json!({
            "what": what,
            "detail": event.detail,
            "at": at,
            "ip": event.ip,
            "device": event.user_agent,
            "link": self.link("/forgot-password", None),
        });
        let queued = match self.message("security_notice", &user.email, context) {
            Ok(mail) => self
                .store
                .enqueue_mail(&mail)
                .await
                .map_err(AuthError::from),
            Err(e) => Err(e),
        };
        match queued {
            Ok(()) => self.wake.notify_one(),
            Err(e) => tracing::warn!(user = %user.id, error = %e, "a notice was not queued"),
        }
    }

    /// Records `event` after its change, and tells `user` by mail when it is one they hear of
    /// at once ([`EventKind::notice`]).
    pub(crate) async fn record(&self, user: &User, event: &SecurityEvent) {
        crate::events::record_after(&*self.store, event).await;
        if let Some(what) = event.kind.notice() {
            self.notify(user, event, what).await;
        }
    }

    /// After a login (its `event`, recorded): tells the user by mail when none of their
    /// recent logins came from this device (`User-Agent`), unless it is their first login.
    /// In the background: the login is answered without waiting.
    pub(crate) fn watch_for_new_device(self: &Arc<Self>, user: &User, event: SecurityEvent) {
        if !self.config.notify_new_device || event.user_agent.is_none() {
            return;
        }
        let (mails, user) = (Arc::clone(self), user.clone());
        tokio::spawn(async move {
            let recent = match mails.store.events(user.id, NEW_DEVICE_LOOKBACK).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(user = %user.id, error = %e, "new device check failed");
                    return;
                }
            };
            let logins: Vec<&SecurityEvent> = recent
                .iter()
                .filter(|e| e.kind == EventKind::Login)
                .collect();
            let from_here = logins
                .iter()
                .filter(|e| e.user_agent == event.user_agent)
                .count();
            // This login's own event is among them.
            if logins.len() > 1 && from_here <= 1 {
                mails
                    .notify(&user, &event, "A sign-in from a new device")
                    .await;
            }
        });
    }

    /// Wakes the worker after a message was queued.
    pub(crate) fn queued(&self) {
        self.wake.notify_one();
    }

    /// One of the few mails with a link `user` may ask for in an hour.
    async fn may_send_to(&self, user: &User) -> Result<(), AuthError> {
        let key = format!("mail-link:{}", user.id);
        match self
            .attempts
            .hit(
                &key,
                LINKS_PER_USER,
                Duration::hours(1),
                self.clock.now_secs(),
            )
            .await?
        {
            Some(wait) => Err(AuthError::TooManyAttempts { retry_after: wait }),
            None => Ok(()),
        }
    }

    /// Takes a presented link token for `purpose`: one throttled attempt on the client address.
    async fn take(
        &self,
        token: &str,
        purpose: LinkPurpose,
        client: &ClientInfo,
    ) -> Result<LinkToken, AuthError> {
        let ip = ip_key(client.ip);
        let keys = [Attempt::client(ip.as_deref(), &self.config.link_throttle)];
        let now = self.clock.now_secs();
        self.attempts
            .throttled(&keys, now, async {
                let hash = link_hash(token).ok_or(AuthError::InvalidLink)?;
                self.store
                    .take_link(&hash, purpose, now)
                    .await?
                    .ok_or(AuthError::InvalidLink)
            })
            .await
    }
}

impl Auth {
    /// Whether the caller must confirm their address before anything else: the deployment
    /// requires it (`require_verified_email`) and theirs is not. Such a session reaches only
    /// what confirming (or correcting) the address takes, and leaving.
    pub fn verification_due(&self, who: &Authenticated) -> bool {
        self.config.require_verified_email && !who.user.email_verified
    }

    /// Mails the caller a link that confirms their address.
    pub async fn request_email_verification(&self, who: &Authenticated) -> Result<(), AuthError> {
        if who.user.email_verified {
            return Err(AuthError::EmailAlreadyVerified);
        }
        self.mails.may_send_to(&who.user).await?;
        self.mails
            .send_link(
                &who.user,
                &who.user.email,
                LinkPurpose::VerifyEmail,
                who.user.email.to_string(),
                json!({}),
            )
            .await
    }

    /// Mails a new account the link that confirms its address.
    pub(crate) async fn send_verification(&self, user: &User) -> Result<(), AuthError> {
        self.mails
            .send_link(
                user,
                &user.email,
                LinkPurpose::VerifyEmail,
                user.email.to_string(),
                json!({}),
            )
            .await
    }

    /// Confirms the address a link was sent to, if it is still the account's.
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<User, AuthError> {
        let link = self
            .mails
            .take(token, LinkPurpose::VerifyEmail, client)
            .await?;
        let user = match self.store.find_user(link.user_id).await? {
            Some(user) if user.email.as_str() == link.bound => user,
            _ => return Err(AuthError::InvalidLink),
        };
        if !self
            .store
            .mark_email_verified(user.id, &user.email, self.now())
            .await?
        {
            return Err(AuthError::InvalidLink);
        }
        self.sessions.forget_user(user.id);
        self.record(
            user.id,
            crate::events::EventKind::EmailVerified,
            client.ip.map(|ip| ip.to_string()),
            None,
        )
        .await;
        tracing::info!(user = %user.id, "email address confirmed");
        Ok(User {
            email_verified: true,
            ..user
        })
    }

    /// Mails a password reset link to `email` if it is an account's. Known and unknown
    /// addresses get the same answer in the same time: the work happens after it, in the
    /// background. Each address and each client may ask a few times an hour.
    pub async fn forgot_password(
        self: &Arc<Self>,
        email: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let now = self.now();
        let address = format!("forgot:{}", email.trim().to_lowercase());
        let mut keys = vec![(address, FORGOT_PER_ADDRESS)];
        if let Some(ip) = ip_key(client.ip) {
            keys.push((format!("forgot-ip:{ip}"), FORGOT_PER_CLIENT));
        }
        for (key, limit) in keys {
            if let Some(wait) = self
                .mails
                .attempts
                .hit(&key, limit, Duration::hours(1), now)
                .await?
            {
                return Err(AuthError::TooManyAttempts { retry_after: wait });
            }
        }
        let this = Arc::clone(self);
        let email = email.to_string();
        tokio::spawn(async move {
            let user = match this.accounts.find_user(&email).await {
                Ok(user) if !user.disabled => user,
                Ok(_) | Err(AuthError::NotFound | AuthError::InvalidEmail(_)) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "no reset link could be sent");
                    return;
                }
            };
            let bound = user.credentials_gen.to_string();
            if let Err(e) = this
                .mails
                .send_link(
                    &user,
                    &user.email,
                    LinkPurpose::ResetPassword,
                    bound,
                    json!({}),
                )
                .await
            {
                tracing::warn!(error = %e, "no reset link could be sent");
            }
        });
        Ok(())
    }

    /// Sets a new password with a reset link: the link must be for the password the account has
    /// now (any change voids it). Every session and token of the user ends, on every instance;
    /// a second factor is still asked at the next login. The user is told by mail.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        // The policy's general rules first, so that a refused password does not spend the link.
        self.accounts.check_new_password(new_password, "")?;
        let link = self
            .mails
            .take(token, LinkPurpose::ResetPassword, client)
            .await?;
        let user = match self.store.find_user(link.user_id).await? {
            Some(user) if !user.disabled && user.credentials_gen.to_string() == link.bound => user,
            _ => return Err(AuthError::InvalidLink),
        };
        let notice = self
            .mails
            .password_changed(&user.email, "with a reset link")?;
        self.accounts
            .set_password(&user, new_password, Some(&notice))
            .await?;
        self.mails.queued();
        self.sessions.forget_user(user.id);
        self.sessions.end_all(user.id, None).await?;
        self.record(
            user.id,
            crate::events::EventKind::PasswordChanged,
            client.ip.map(|ip| ip.to_string()),
            Some("with a reset link"),
        )
        .await;
        tracing::info!(user = %user.id, "password reset");
        Ok(())
    }
}

impl Auth {
    /// Deletes the caller's account: it needs the password or a second factor in the request
    /// (a recent login is not enough). Every session and token ends on every instance, then the
    /// account and everything of it goes, but for its id and the time (`deleted_accounts`).
    pub async fn delete_account(
        &self,
        who: &Authenticated,
        reauth: super::Reauth,
    ) -> Result<(), AuthError> {
        if matches!(reauth, super::Reauth::None) {
            return Err(AuthError::ReauthRequired);
        }
        self.require_fresh(who, reauth).await?;
        self.sessions.end_all(who.user.id, None).await?;
        self.store.delete_user(who.user.id, self.now()).await?;
        self.sessions.forget_user(who.user.id);
        tracing::info!(user = %who.user.id, "account deleted");
        Ok(())
    }
}

impl Auth {
    /// Starts moving the caller's account to `new_email` (fresh authentication needed). The new
    /// address gets a link that confirms the move; the old one a notice with a link that
    /// cancels it, before or after it happens. Nothing changes until the new address confirms.
    pub async fn request_email_change(
        &self,
        who: &Authenticated,
        new_email: &str,
        reauth: super::Reauth,
    ) -> Result<(), AuthError> {
        let new = Email::parse(new_email)?;
        if new == who.user.email {
            return Err(AuthError::SameEmail);
        }
        self.require_fresh(who, reauth).await?;
        if self.store.find_user_by_email(&new).await?.is_some() {
            return Err(AuthError::EmailTaken);
        }
        self.mails.may_send_to(&who.user).await?;
        let bound = change_bound(&who.user.email, &new);
        // The old address first: no move can be confirmed that its owner was not told of.
        self.mails
            .send_link(
                &who.user,
                &who.user.email,
                LinkPurpose::CancelEmailChange,
                bound.clone(),
                json!({"new_email": new.as_str()}),
            )
            .await?;
        self.mails
            .send_link(
                &who.user,
                &new,
                LinkPurpose::ChangeEmail,
                bound,
                json!({"old_email": who.user.email.as_str()}),
            )
            .await?;
        self.record(
            who.user.id,
            EventKind::EmailChangeRequested,
            who.session.ip.clone(),
            None,
        )
        .await;
        tracing::info!(user = %who.user.id, "address change asked for");
        Ok(())
    }

    /// Moves the account to the address a change link was sent to, if it still has the address
    /// the change was asked from; the new address counts as confirmed. Other links of the
    /// account die with the old address, but for the old address's link that cancels the move.
    pub async fn confirm_email_change(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        let link = self
            .mails
            .take(token, LinkPurpose::ChangeEmail, client)
            .await?;
        let (old, new) = parse_change_bound(&link.bound).ok_or(AuthError::InvalidLink)?;
        let user = match self.store.find_user(link.user_id).await? {
            Some(user) if !user.disabled && user.email == old => user,
            _ => return Err(AuthError::InvalidLink),
        };
        if !self.move_address(&user, &old, &new).await? {
            return Err(AuthError::InvalidLink);
        }
        self.record(
            user.id,
            EventKind::EmailChanged,
            client.ip.map(|ip| ip.to_string()),
            None,
        )
        .await;
        tracing::info!(user = %user.id, "address changed");
        Ok(User {
            email: new,
            email_verified: true,
            ..user
        })
    }

    /// Undoes a change of address with the old address's link: a move still pending is voided,
    /// one that happened is reverted. Either way every session of the account ends, since
    /// whoever asked for the move may hold one.
    pub async fn cancel_email_change(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let link = self
            .mails
            .take(token, LinkPurpose::CancelEmailChange, client)
            .await?;
        let (old, new) = parse_change_bound(&link.bound).ok_or(AuthError::InvalidLink)?;
        let user = self
            .store
            .find_user(link.user_id)
            .await?
            .ok_or(AuthError::InvalidLink)?;
        let detail = if user.email == new {
            if !self.move_address(&user, &new, &old).await? {
                return Err(AuthError::InvalidLink);
            }
            "after the change, which was reverted"
        } else if user.email == old {
            self.store
                .void_links(user.id, LinkPurpose::ChangeEmail)
                .await?;
            "before the change"
        } else {
            return Err(AuthError::InvalidLink);
        };
        self.sessions.forget_user(user.id);
        self.sessions.end_all(user.id, None).await?;
        self.record(
            user.id,
            EventKind::EmailChangeCancelled,
            client.ip.map(|ip| ip.to_string()),
            Some(detail),
        )
        .await;
        tracing::warn!(user = %user.id, detail, "address change cancelled");
        Ok(())
    }

    /// Moves `user` from `from` to `to`, confirmed now; false if the address is not `from`.
    async fn move_address(&self, user: &User, from: &Email, to: &Email) -> Result<bool, AuthError> {
        let moved = match self.store.change_email(user.id, from, to, self.now()).await {
            Err(crate::store::StoreError::Conflict) => return Err(AuthError::EmailTaken),
            other => other?,
        };
        self.sessions.forget_user(user.id);
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tokens_are_256_bits_and_only_those_are_looked_up() {
        let (token, hash) = new_link_token();
        assert_eq!(token.len(), 43);
        assert_eq!(link_hash(&token), Some(hash));
        assert_ne!(new_link_token().0, token);
        for bad in ["", "short", &token[..42], &format!("{token}A"), "!!!"] {
            assert_eq!(link_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_address_change_is_bound_to_both_addresses() {
        let (old, new) = (
            Email::parse("old@example.com").unwrap(),
            Email::parse("new@example.com").unwrap(),
        );
        let bound = change_bound(&old, &new);
        assert_eq!(parse_change_bound(&bound), Some((old, new)));
        for bad in [
            "",
            "old@example.com",
            "old@example.com nobody",
            " new@example.com",
        ] {
            assert_eq!(parse_change_bound(bad), None, "{bad}");
        }
    }

    #[test]
    fn lifetimes_read_well() {
        assert_eq!(in_words(Duration::minutes(30)), "30 minutes");
        assert_eq!(in_words(Duration::hours(24)), "24 hours");
        assert_eq!(in_words(Duration::minutes(90)), "90 minutes");
    }
}
