//! Second factors: enrolling an authenticator app (RFC 6238 TOTP), checking its codes (each time
//! step accepted once, RFC 6238 §5.2), recovery codes (single-use, stored hashed), and the
//! pending second step of a login (the `mfa_token`). Every code check is a throttled attempt on
//! the account (under a key apart from the password's) and the client address, like a password.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::Arc;
use time::Duration;
use totp_rs::{Algorithm, TOTP};

use super::attempts::{account_key, ip_key, Attempt, Attempts};
use super::config::AuthConfig;
use super::error::AuthError;
use super::passkeys::Passkeys;
use crate::clock::Clock;
use crate::factor::{Factor, FactorId, FactorKind, MfaChallenge};
use crate::sealing;
use crate::secret::{secrets_equal, Secret};
use crate::session::{TokenHash, Transport};
use crate::store::Store;
use crate::throttle::ThrottlePolicy;
use crate::user::{User, UserId};

/// The RFC 6238 parameters every authenticator app understands: SHA-1, 6 digits, 30 s.
const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
/// Codes of the previous and the next time step are accepted too (clock drift, typing time).
const SKEW_STEPS: i64 = 1;
/// A TOTP secret: 160 bits, as RFC 4226 recommends.
const SECRET_BYTES: usize = 20;
/// How many recovery codes a set has.
pub const RECOVERY_CODES: usize = 10;
/// Tries an `mfa_token` allows before it dies (each is also a throttled attempt).
const MFA_TRIES: u32 = 5;
/// How long an `mfa_token` lives.
const MFA_TTL: Duration = Duration::minutes(5);

/// What enrolling an authenticator app gives the user once: the secret, as text and as the
/// `otpauth://` URI a QR code carries.
#[derive(Debug)]
pub struct TotpEnrolment {
    /// The new (not yet confirmed) factor.
    pub factor: Factor,
    /// The secret in base32, for typing into an app.
    pub secret: Secret<String>,
    /// `otpauth://totp/…`, for a QR code.
    pub otpauth_uri: Secret<String>,
}

/// What a login's second step may be proved with.
#[derive(Debug, Clone)]
pub enum SecondFactor {
    /// A code from an authenticator app.
    Code(String),
    /// One of the user's recovery codes.
    RecoveryCode(String),
    /// A passkey's assertion (the `PublicKeyCredential` JSON a browser gives), made from the
    /// options `Auth::passkey_login_options` gave for this user.
    Passkey(serde_json::Value),
}

pub(crate) struct Factors {
    pub(crate) passkeys: Passkeys,
    store: Arc<dyn Store>,
    attempts: Arc<Attempts>,
    config: Arc<AuthConfig>,
    clock: Arc<dyn Clock>,
    mails: Arc<super::lifecycle::Mails>,
}

/// The sealing context of a TOTP secret: bound to its factor, so a sealed secret copied to
/// another row does not open.
fn secret_context(id: FactorId) -> Vec<u8> {
    format!("cloakroom totp secret:{id}").into_bytes()
}

fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> TOTP {
    // `new_unchecked`: the secret is always 160 random bits, and an email's `:` (legal in a
    // quoted local part) must not make enrolment fail; the URI is percent-encoded anyway.
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS,
        secret,
        Some(issuer.to_string()),
        account.to_string(),
    )
}

/// The digits of a code as typed: spaces dropped; anything but six digits is no code.
fn normalized_code(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// A recovery code as typed: case, spaces and hyphens do not matter.
fn normalized_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// How a recovery code is stored: bound to its user, so equal codes of two users differ.
fn recovery_hash(user: UserId, normalized: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"cloakroom recovery code:");
    h.update(user.to_string().as_bytes());
    h.update(b":");
    h.update(normalized.as_bytes());
    TokenHash(h.finalize().into())
}

/// A new recovery code: 10 characters of an alphabet without look-alikes (50 bits), shown as
/// `xxxxx-xxxxx`.
fn new_recovery_code() -> String {
    // Crockford's base32 alphabet, lower case: no i, l, o or u.
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

impl Factors {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        attempts: Arc<Attempts>,
        config: Arc<AuthConfig>,
        clock: Arc<dyn Clock>,
        challenge_key: &[u8],
        mails: Arc<super::lifecycle::Mails>,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            mails,
            passkeys: Passkeys::new(
                &config,
                Arc::clone(&store),
                Arc::clone(&clock),
                challenge_key,
            )?,
            store,
            attempts,
            config,
            clock,
        })
    }

    /// The user's factors.
    pub(crate) async fn list(&self, user: UserId) -> Result<Vec<Factor>, AuthError> {
        Ok(self.store.list_factors(user).await?)
    }

    /// The ways `user` can prove a second step now (`totp`, `recovery_code`); empty when the
    /// user has no confirmed authenticator app (recovery codes alone ask for nothing).
    pub(crate) async fn methods(&self, user: UserId) -> Result<Vec<&'static str>, AuthError> {
        let factors = self.store.list_factors(user).await?;
        let mut methods = Vec::new();
        if factors
            .iter()
            .any(|f| f.kind == FactorKind::Totp && f.confirmed)
        {
            methods.push("totp");
        }
        if factors.iter().any(|f| f.kind == FactorKind::Passkey) {
            methods.push("passkey");
        }
        // Recovery codes stand in for a second factor; alone, they are not one.
        if methods.is_empty() {
            return Ok(methods);
        }
        if factors.iter().any(|f| f.kind == FactorKind::RecoveryCodes)
            && self.store.recovery_codes_left(user).await? > 0
        {
            methods.push("recovery_code");
        }
        Ok(methods)
    }

    /// Starts enrolling an authenticator app: a new secret, sealed in the store, and an
    /// unconfirmed factor that counts once a first code confirms it.
    pub(crate) async fn enroll_totp(
        &self,
        user: &User,
        name: Option<String>,
    ) -> Result<TotpEnrolment, AuthError> {
        let mut secret = vec![0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let factor = Factor {
            id: FactorId::random(),
            user_id: user.id,
            kind: FactorKind::Totp,
            name,
            confirmed: false,
            created_at: self.clock.now_secs(),
            last_used_at: None,
        };
        let sealed = sealing::seal_stored(
            self.config.sealing.as_deref(),
            &secret_context(factor.id),
            &secret,
        )
        .map_err(|e| AuthError::Keys(e.to_string()))?;
        let generator = totp(secret, &self.config.totp_issuer, user.email.as_str());
        self.store.insert_factor(&factor, Some(&sealed)).await?;
        Ok(TotpEnrolment {
            factor,
            secret: Secret::new(generator.get_secret_base32()),
            otpauth_uri: Secret::new(generator.get_url()),
        })
    }

    /// Confirms an enrolment with a first code from the app.
    pub(crate) async fn confirm_totp(
        &self,
        user: &User,
        id: FactorId,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), AuthError> {
        if self.store.totp_secret(user.id, id).await?.is_none() {
            return Err(AuthError::NotFound);
        }
        self.throttled(user, ip, self.accept_code(user, Some(id), code))
            .await
            .map(|_| ())
    }

    /// Removes one of the user's factors.
    pub(crate) async fn delete(&self, user: UserId, id: FactorId) -> Result<(), AuthError> {
        if self.store.delete_factor(user, id).await? {
            Ok(())
        } else {
            Err(AuthError::NotFound)
        }
    }

    /// Removes every factor of the user (an administrator's reset); returns how many.
    pub(crate) async fn reset(&self, user: UserId) -> Result<u64, AuthError> {
        Ok(self.store.delete_factors(user).await?)
    }

    /// A new set of recovery codes, shown once; the old set is void.
    pub(crate) async fn new_recovery_codes(&self, user: &User) -> Result<Vec<String>, AuthError> {
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let hashes: Vec<TokenHash> = codes
            .iter()
            .map(|c| recovery_hash(user.id, &normalized_recovery_code(c)))
            .collect();
        let factor = Factor {
            id: FactorId::random(),
            user_id: user.id,
            kind: FactorKind::RecoveryCodes,
            name: None,
            confirmed: true,
            created_at: self.clock.now_secs(),
            last_used_at: None,
        };
        self.store.replace_recovery_codes(&factor, &hashes).await?;
        Ok(codes)
    }

    /// Checks a second factor of `user`, and says what it proves (`otp`, or a passkey's `hwk`
    /// or `swk` with `user`). A code is one throttled attempt on the account and the client
    /// address; a TOTP code's time step is accepted once; a recovery code is spent. A passkey's
    /// assertion must be the user's (it cannot be guessed: it is not throttled).
    pub(crate) async fn verify(
        &self,
        user: &User,
        proof: &SecondFactor,
        ip: Option<IpAddr>,
    ) -> Result<crate::Amr, AuthError> {
        match proof {
            SecondFactor::Code(code) => self
                .throttled(user, ip, self.accept_code(user, None, code))
                .await
                .map(|_| crate::Amr::OTP),
            SecondFactor::Passkey(credential) => {
                let assertion = self.passkeys.verify_and_use(credential, user.id).await?;
                Ok(assertion.amr)
            }
            SecondFactor::RecoveryCode(code) => {
                let work = async {
                    let hash = recovery_hash(user.id, &normalized_recovery_code(code));
                    if self
                        .store
                        .use_recovery_code(user.id, &hash, self.clock.now_secs())
                        .await?
                    {
                        tracing::warn!(user = %user.id, "recovery code used");
                        self.mails
                            .record(
                                user,
                                &crate::events::SecurityEvent {
                                    user_id: user.id,
                                    kind: crate::events::EventKind::RecoveryCodeUsed,
                                    at: self.clock.now_secs(),
                                    ip: ip.map(|ip| ip.to_string()),
                                    user_agent: None,
                                    detail: None,
                                },
                            )
                            .await;
                        Ok(crate::Amr::OTP)
                    } else {
                        Err(AuthError::InvalidCode)
                    }
                };
                self.throttled(user, ip, work).await
            }
        }
    }

    async fn throttled<T>(
        &self,
        user: &User,
        ip: Option<IpAddr>,
        work: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        // A key of its own for the account: a right password clears the account's password
        // failures, and must not give a code guesser fresh tries.
        let acct = format!("mfa:{}", account_key(&user.email));
        let ip = ip_key(ip);
        // The account's policy, one failure stricter: a throttle evaluates one attempt beyond
        // its free failures, and the sixth wrong code of the default policy must not be.
        let policy = ThrottlePolicy {
            free_failures: self.config.account_throttle.free_failures.saturating_sub(1),
            ..self.config.account_throttle
        };
        let keys = [
            Attempt::account(Some(&acct), &policy),
            Attempt::client(ip.as_deref(), &self.config.ip_throttle),
        ];
        self.attempts
            .throttled(&keys, self.clock.now_secs(), work)
            .await
    }

    /// Accepts `code` for one of the user's TOTP factors (`only`, or any confirmed one): the
    /// code of the current time step or one step either side, whose step is later than the
    /// last one the factor accepted.
    async fn accept_code(
        &self,
        user: &User,
        only: Option<FactorId>,
        code: &str,
    ) -> Result<FactorKind, AuthError> {
        let Some(code) = normalized_code(code) else {
            return Err(AuthError::InvalidCode);
        };
        let now = self.clock.now_secs();
        let current = now.unix_timestamp().div_euclid(STEP_SECS as i64);
        let factors = self.store.list_factors(user.id).await?;
        let candidates = factors.iter().filter(|f| {
            f.kind == FactorKind::Totp
                && match only {
                    Some(id) => f.id == id,
                    None => f.confirmed,
                }
        });
        for factor in candidates {
            let Some((sealed, last)) = self.store.totp_secret(user.id, factor.id).await? else {
                continue;
            };
            let secret = sealing::open_stored(
                self.config.sealing.as_deref(),
                &secret_context(factor.id),
                &sealed,
            )
            .map_err(|e| AuthError::Keys(e.to_string()))?;
            let generator = totp(secret, &self.config.totp_issuer, user.email.as_str());
            let matched = (current - SKEW_STEPS..=current + SKEW_STEPS).find(|step| {
                let at = u64::try_from(*step).unwrap_or(0) * STEP_SECS;
                secrets_equal(generator.generate(at).as_bytes(), code.as_bytes())
            });
            let Some(step) = matched else { continue };
            // RFC 6238 §5.2: a code (a step) is accepted once. The store's compare-and-set
            // settles a race between two requests with the same code.
            if last.is_some_and(|l| l >= step)
                || !self
                    .store
                    .accept_step(user.id, factor.id, step, now)
                    .await?
            {
                tracing::warn!(user = %user.id, "a TOTP code was used twice");
                return Err(AuthError::InvalidCode);
            }
            return Ok(FactorKind::Totp);
        }
        Err(AuthError::InvalidCode)
    }

    /// Counts a passkey ceremony started by `ip` (each stores its state for a few minutes):
    /// more than 120 a minute from one client address are refused.
    pub(crate) async fn ceremony_allowed(&self, ip: Option<IpAddr>) -> Result<(), AuthError> {
        let Some(key) = ip_key(ip) else {
            return Ok(());
        };
        let key = format!("passkey:{key}");
        match self
            .attempts
            .hit(&key, 120, Duration::minutes(1), self.clock.now_secs())
            .await?
        {
            Some(wait) => Err(AuthError::TooManyAttempts { retry_after: wait }),
            None => Ok(()),
        }
    }

    /// Seals with the current key-encryption key every TOTP secret in clear and, if `all`, every
    /// one sealed with another key; returns how many. Without keys, nothing.
    pub(crate) async fn reseal(&self, all: bool) -> Result<usize, AuthError> {
        let Some(keys) = self.config.sealing.as_deref() else {
            return Ok(0);
        };
        let mut done = 0;
        for (id, stored) in self.store.totp_secrets().await? {
            if !sealing::needs_resealing(keys, &stored, all) {
                continue;
            }
            let context = secret_context(id);
            let sealed = sealing::open_stored(Some(keys), &context, &stored)
                .and_then(|clear| sealing::seal_stored(Some(keys), &context, &clear))
                .map_err(|e| AuthError::Keys(format!("TOTP secret {id}: {e}")))?;
            if self.store.replace_totp_secret(id, &stored, &sealed).await? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Starts the second step of a login: a new `mfa_token`, stored hashed.
    pub(crate) async fn challenge(
        &self,
        user: &User,
        transport: Transport,
        remember: bool,
    ) -> Result<Secret<String>, AuthError> {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let token = URL_SAFE_NO_PAD.encode(raw);
        self.store
            .insert_mfa_challenge(&MfaChallenge {
                token_hash: challenge_hash(&token),
                user_id: user.id,
                credentials_gen: user.credentials_gen,
                transport,
                remember,
                attempts: 0,
                expires_at: self.clock.now_secs() + MFA_TTL,
            })
            .await?;
        Ok(Secret::new(token))
    }

    /// The login an `mfa_token` stands for, counting one try: unknown, expired, spent or worn
    /// out (too many tries) tokens are [`AuthError::InvalidMfaToken`].
    pub(crate) async fn pending(&self, token: &str) -> Result<MfaChallenge, AuthError> {
        if token.len() != 43 {
            return Err(AuthError::InvalidMfaToken);
        }
        self.store
            .try_mfa_challenge(&challenge_hash(token), self.clock.now_secs(), MFA_TRIES)
            .await?
            .ok_or(AuthError::InvalidMfaToken)
    }

    /// Spends an `mfa_token`: true for the one caller that did.
    pub(crate) async fn spend(&self, challenge: &MfaChallenge) -> Result<bool, AuthError> {
        Ok(self
            .store
            .consume_mfa_challenge(&challenge.token_hash)
            .await?)
    }

    /// Deletes expired login challenges.
    pub(crate) async fn sweep(&self) -> Result<u64, AuthError> {
        Ok(self
            .store
            .delete_expired_challenges(self.clock.now_secs())
            .await?)
    }
}

fn challenge_hash(token: &str) -> TokenHash {
    let mut h = Sha256::new();
    h.update(b"cloakroom mfa token:");
    h.update(token.as_bytes());
    TokenHash(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_leniently_and_strictly() {
        assert_eq!(normalized_code(" 123 456 ").as_deref(), Some("123456"));
        for bad in ["12345", "1234567", "12345a", "", "１２３４５６"] {
            assert_eq!(normalized_code(bad), None, "{bad}");
        }
        assert_eq!(normalized_recovery_code("AbCde-FGhjk"), "abcdefghjk");
    }

    #[test]
    fn recovery_codes_are_fifty_random_bits_bound_to_their_user() {
        let code = new_recovery_code();
        assert_eq!(code.len(), 11);
        assert_eq!(&code[5..6], "-");
        let a = UserId::random();
        let b = UserId::random();
        let n = normalized_recovery_code(&code);
        assert_ne!(recovery_hash(a, &n), recovery_hash(b, &n));
        let all: std::collections::HashSet<String> =
            (0..1000).map(|_| new_recovery_code()).collect();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 Appendix B, SHA-1, truncated to six digits.
        let generator = TOTP::new_unchecked(
            Algorithm::SHA1,
            8,
            0,
            30,
            b"12345678901234567890".to_vec(),
            None,
            "test".into(),
        );
        for (t, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(generator.generate(t), code, "t={t}");
        }
    }
}
