//! The use cases of second factors, on the [`Auth`] facade: the second step of a login (both
//! transports), step-up (proving oneself again), and the user's own management of their factors
//! (adding and removing need fresh authentication), with an administrator's view and reset.

use super::factors::{SecondFactor, TotpEnrolment};
use super::sessions::NewSession;
use super::TokenPair;
use super::{Auth, AuthError, Authenticated, ClientInfo, LoginOutcome, LoginRequest, Reauth};
use crate::events::{EventKind, SecurityEvent};
use crate::factor::{Factor, FactorId, FactorKind};
use crate::session::Transport;
use crate::Amr;

/// The second step of a login: the `mfa_token` the first step gave, and the proof.
#[derive(Debug, Clone)]
pub struct MfaLogin {
    /// The token from [`AuthError::MfaRequired`].
    pub mfa_token: String,
    /// An authenticator app's code or a recovery code.
    pub proof: SecondFactor,
    /// Who is asking.
    pub client: ClientInfo,
    /// The session token the client already holds, if any; that session ends on success.
    pub current_token: Option<String>,
    /// For the token transport: the DPoP key the tokens are to be bound to.
    pub dpop_jkt: Option<String>,
}

impl Auth {
    /// Completes a login whose password was right ([`AuthError::MfaRequired`]) with a second
    /// factor, for a cookie session. A wrong code is [`AuthError::InvalidCode`] (the token allows
    /// a few tries, each throttled like a password); a token that is unknown, expired, spent,
    /// worn out, of a user whose password changed since, or of a token login is
    /// [`AuthError::InvalidMfaToken`].
    pub async fn login_mfa(&self, req: MfaLogin) -> Result<LoginOutcome, AuthError> {
        self.second_step(req, Transport::Cookie).await
    }

    /// [`Auth::login_mfa`] for a login of the token transport (the password grant's
    /// `mfa_required`): a token session and its first access token.
    pub async fn login_tokens_mfa(&self, mut req: MfaLogin) -> Result<TokenPair, AuthError> {
        req.current_token = None;
        let out = self.second_step(req, Transport::Token).await?;
        let (access_token, expires_in) = self.tokens.mint(&out.user, &out.session)?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token: out.token,
            session: out.session,
            user: out.user,
        })
    }

    async fn second_step(
        &self,
        req: MfaLogin,
        transport: Transport,
    ) -> Result<LoginOutcome, AuthError> {
        let pending = self.factors.pending(&req.mfa_token).await?;
        let user = match self.store.find_user(pending.user_id).await? {
            Some(user)
                if !user.disabled
                    && user.credentials_gen == pending.credentials_gen
                    && pending.transport == transport =>
            {
                user
            }
            _ => {
                self.factors.spend(&pending).await?;
                return Err(AuthError::InvalidMfaToken);
            }
        };
        let proven = self
            .factors
            .verify(&user, &req.proof, req.client.ip)
            .await?;
        // Of two right answers to one challenge, one starts a session.
        if !self.factors.spend(&pending).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        tracing::info!(user = %user.id, amr = %proven.encode(), "second factor accepted");
        let login = LoginRequest {
            email: String::new(),
            password: String::new(),
            remember: pending.remember,
            transport,
            client: req.client,
            current_token: req.current_token,
            dpop_jkt: req.dpop_jkt,
        };
        self.start_session(user, &login, Amr::PWD.with(proven).with(Amr::MFA), None)
            .await
    }

    /// Request options for a passkey login (as `PublicKeyCredential.parseRequestOptionsFromJSON`
    /// takes the `publicKey` member): for any discoverable passkey (passwordless; `conditional`
    /// for autofill), or, with the `mfa_token` of a login's second step, for that user's
    /// passkeys (the token counts one try). Each client address may start 120 a minute.
    pub async fn passkey_login_options(
        &self,
        mfa_token: Option<&str>,
        conditional: bool,
        client: &ClientInfo,
    ) -> Result<serde_json::Value, AuthError> {
        self.factors.ceremony_allowed(client.ip).await?;
        let user = match mfa_token {
            Some(token) => Some(self.factors.pending(token).await?.user_id),
            None => None,
        };
        self.factors.passkeys.login_options(user, conditional).await
    }

    /// A passwordless login with a passkey (a discoverable credential, user verification): a
    /// cookie session of `aal2`, as [`Auth::login`] starts one. A refused assertion is
    /// [`AuthError::PasskeyRefused`], whatever was wrong with it.
    pub async fn login_passkey(
        &self,
        credential: &serde_json::Value,
        remember: bool,
        client: ClientInfo,
        current_token: Option<String>,
    ) -> Result<LoginOutcome, AuthError> {
        let passkeys = &self.factors.passkeys;
        let mut assertion = passkeys.verify(credential, None, false).await?;
        let user = match self.sessions.user(assertion.user).await {
            Ok(user) if !user.disabled => (*user).clone(),
            Ok(_) | Err(AuthError::Unauthenticated) => return Err(AuthError::PasskeyRefused),
            Err(e) => return Err(e),
        };
        tracing::info!(user = %user.id, "passkey login");
        let login = LoginRequest {
            email: String::new(),
            password: String::new(),
            remember,
            transport: Transport::Cookie,
            client,
            current_token,
            dpop_jkt: None,
        };
        // The passkey's use is stored with the session (`Store::store_login`).
        let outcome = match self
            .start_session(user.clone(), &login, assertion.amr, Some(&assertion.used))
            .await
        {
            // Checked against this instance's copy, which another instance's use (or the
            // passkey's removal) may have made stale: checked again against the store's.
            Err(AuthError::PasskeyRefused) if assertion.from_memory => {
                passkeys.forget(&assertion);
                assertion = passkeys.verify(credential, None, true).await?;
                self.start_session(user, &login, assertion.amr, Some(&assertion.used))
                    .await
            }
            other => other,
        }?;
        passkeys.remember(&assertion);
        Ok(outcome)
    }

    /// The creation options of a new passkey for the caller (fresh authentication needed).
    pub async fn passkey_register_options(
        &self,
        who: &Authenticated,
        reauth: Reauth,
    ) -> Result<serde_json::Value, AuthError> {
        self.require_fresh(who, reauth).await?;
        self.factors.passkeys.register_options(&who.user).await
    }

    /// Registers the passkey a browser made from [`Auth::passkey_register_options`].
    pub async fn register_passkey(
        &self,
        who: &Authenticated,
        credential: &serde_json::Value,
        name: Option<String>,
    ) -> Result<Factor, AuthError> {
        let factor = self
            .factors
            .passkeys
            .register(&who.user, credential, name)
            .await?;
        tracing::info!(user = %who.user.id, factor = %factor.id, "passkey added");
        self.record(
            who.user.id,
            EventKind::FactorAdded,
            who.session.ip.clone(),
            Some("passkey"),
        )
        .await;
        Ok(factor)
    }

    /// Step-up: proves the caller again, with their password, a second factor or both, and
    /// continues in a new session (new id and secret, as on any change of privilege) whose
    /// `auth_time` is now and whose `amr` adds what was proven; the old session ends everywhere.
    /// Nothing proven is [`AuthError::ReauthRequired`].
    pub async fn reauthenticate(
        &self,
        who: &Authenticated,
        password: Option<&str>,
        second: Option<SecondFactor>,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        if password.is_none() && second.is_none() {
            return Err(AuthError::ReauthRequired);
        }
        let mut amr = who.session.amr;
        if let Some(password) = password {
            self.accounts.check_password(&who.user, password).await?;
            amr = amr.with(Amr::PWD);
        }
        if let Some(proof) = second {
            let proven = self.factors.verify(&who.user, &proof, client.ip).await?;
            amr = amr.with(proven).with(Amr::MFA);
        }
        let outcome = self.continue_session(who, amr).await?;
        tracing::info!(user = %who.user.id, session = %outcome.session.id, acr = %amr.acr(), "stepped up");
        Ok(outcome)
    }

    /// Continues the caller in a new session proven with `amr` at this moment (new id and
    /// secret, the same transport and lifetime choice); the old session ends everywhere.
    async fn continue_session(
        &self,
        who: &Authenticated,
        amr: Amr,
    ) -> Result<LoginOutcome, AuthError> {
        let old = &who.session;
        let (session, token) = self.sessions.new_session(NewSession {
            user: who.user.id,
            transport: old.transport,
            remember: old.remember,
            ip: old.ip.clone(),
            user_agent: old.user_agent.clone(),
            credentials_gen: old.credentials_gen,
            amr,
            dpop_jkt: old.dpop_jkt.clone(),
            dbsc_key: old.dbsc_key.clone(),
        });
        self.sessions.open(&session).await?;
        self.sessions.end_session_record(old.id).await?;
        Ok(LoginOutcome {
            user: (*who.user).clone(),
            session,
            token,
        })
    }

    /// Whether the caller must add a second factor before going further: the deployment
    /// requires one of this user (`AuthConfig::mfa_required_roles`, or of everyone) and the
    /// session has not proven one (it is not `aal2`). Such a session may only enrol.
    pub fn second_factor_due(&self, who: &Authenticated) -> bool {
        let covered = self.config.mfa_required_for_everyone
            || who
                .user
                .roles
                .iter()
                .any(|r| self.config.mfa_required_roles.contains(r));
        covered && who.session.amr.acr() < crate::Acr::Aal2
    }

    /// Records a security event after its change (see [`crate::events::record_after`]), and
    /// tells the user by mail when it is one they hear of at once.
    pub(super) async fn record(
        &self,
        user: crate::UserId,
        kind: EventKind,
        ip: Option<String>,
        detail: Option<&str>,
    ) {
        let event = SecurityEvent {
            user_id: user,
            kind,
            at: self.now(),
            ip,
            user_agent: None,
            detail: detail.map(String::from),
        };
        if kind.notice().is_none() {
            return crate::events::record_after(&*self.store, &event).await;
        }
        match self.sessions.user(user).await {
            Ok(user) => self.mails.record(&user, &event).await,
            Err(e) => {
                tracing::warn!(error = %e, "no notice for an account that cannot be read");
                crate::events::record_after(&*self.store, &event).await
            }
        }
    }

    /// The caller's newest security events (factors added or removed, recovery codes made or
    /// used), newest first.
    pub async fn security_events(
        &self,
        who: &Authenticated,
        limit: usize,
    ) -> Result<Vec<SecurityEvent>, AuthError> {
        Ok(self.store.events(who.user.id, limit).await?)
    }

    /// Security events at or after `since`, of the user with this address or of everyone,
    /// newest first, at most `limit`, each with its account's address when the account still
    /// exists (`cloakroom audit`).
    pub async fn audit(
        &self,
        email: Option<&str>,
        since: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<(SecurityEvent, Option<crate::Email>)>, AuthError> {
        let user = match email {
            Some(email) => Some(self.find_user(email).await?),
            None => None,
        };
        let events = self
            .store
            .events_since(user.as_ref().map(|u| u.id), since, limit)
            .await?;
        let users = match user {
            Some(user) => vec![user],
            None => self.list_users().await?,
        };
        let emails: std::collections::HashMap<crate::UserId, crate::Email> =
            users.into_iter().map(|u| (u.id, u.email)).collect();
        Ok(events
            .into_iter()
            .map(|e| {
                let email = emails.get(&e.user_id).cloned();
                (e, email)
            })
            .collect())
    }

    /// The caller's factors.
    pub async fn factors(&self, who: &Authenticated) -> Result<Vec<Factor>, AuthError> {
        self.factors.list(who.user.id).await
    }

    /// Starts adding an authenticator app (fresh authentication needed); it counts once
    /// [`Auth::confirm_totp`] saw a first code.
    pub async fn enroll_totp(
        &self,
        who: &Authenticated,
        name: Option<String>,
        reauth: Reauth,
    ) -> Result<TotpEnrolment, AuthError> {
        self.require_fresh(who, reauth).await?;
        let enrolment = self.factors.enroll_totp(&who.user, name).await?;
        tracing::info!(user = %who.user.id, factor = %enrolment.factor.id, "authenticator app added");
        Ok(enrolment)
    }

    /// Confirms an authenticator app with a code from it. The code proves the factor, so the
    /// caller continues in a new session that counts it (`aal2`), as after a step-up.
    pub async fn confirm_totp(
        &self,
        who: &Authenticated,
        id: FactorId,
        code: &str,
        client: &ClientInfo,
    ) -> Result<LoginOutcome, AuthError> {
        self.factors
            .confirm_totp(&who.user, id, code, client.ip)
            .await?;
        tracing::info!(user = %who.user.id, factor = %id, "authenticator app confirmed");
        self.record(
            who.user.id,
            EventKind::FactorAdded,
            client.ip.map(|ip| ip.to_string()),
            Some("authenticator app"),
        )
        .await;
        self.continue_session(who, who.session.amr.with(Amr::OTP).with(Amr::MFA))
            .await
    }

    /// A new set of recovery codes (fresh authentication needed), shown once; the old set is
    /// void.
    pub async fn new_recovery_codes(
        &self,
        who: &Authenticated,
        reauth: Reauth,
    ) -> Result<Vec<String>, AuthError> {
        self.require_fresh(who, reauth).await?;
        let codes = self.factors.new_recovery_codes(&who.user).await?;
        tracing::info!(user = %who.user.id, "recovery codes made");
        self.record(
            who.user.id,
            EventKind::RecoveryCodesMade,
            who.session.ip.clone(),
            None,
        )
        .await;
        Ok(codes)
    }

    /// Removes one of the caller's factors (fresh authentication needed). Another user's
    /// factor is [`AuthError::NotFound`], like one that does not exist.
    pub async fn delete_factor(
        &self,
        who: &Authenticated,
        id: FactorId,
        reauth: Reauth,
    ) -> Result<(), AuthError> {
        self.require_fresh(who, reauth).await?;
        let kind = self
            .factors
            .list(who.user.id)
            .await?
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.kind);
        self.factors.delete(who.user.id, id).await?;
        tracing::info!(user = %who.user.id, factor = %id, "factor removed");
        let detail = match kind {
            Some(FactorKind::Totp) => "authenticator app",
            Some(FactorKind::Passkey) => "passkey",
            _ => "recovery codes",
        };
        self.record(
            who.user.id,
            EventKind::FactorRemoved,
            who.session.ip.clone(),
            Some(detail),
        )
        .await;
        Ok(())
    }

    /// A user's factors, for an administrator.
    pub async fn admin_factors(&self, email: &str) -> Result<Vec<Factor>, AuthError> {
        let user = self.accounts.find_user(email).await?;
        self.factors.list(user.id).await
    }

    /// Removes every factor of a user and ends their sessions everywhere (an administrator's
    /// answer to a lost phone); returns how many factors went.
    pub async fn admin_reset_factors(&self, email: &str) -> Result<u64, AuthError> {
        let user = self.accounts.find_user(email).await?;
        let removed = self.factors.reset(user.id).await?;
        self.sessions.end_all(user.id, None).await?;
        self.record(user.id, EventKind::FactorsReset, None, None)
            .await;
        tracing::warn!(user = %user.id, removed, "second factors reset by an administrator");
        Ok(removed)
    }
}
