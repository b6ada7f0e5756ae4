//! Where mail goes: an SMTP relay (lettre, over STARTTLS or implicit TLS with rustls), or the
//! log when no relay is configured (so that one machine works end to end: the links are there).

use async_trait::async_trait;
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::OutgoingMail;

/// A delivery that failed, in words (never a password).
#[derive(Debug)]
pub struct SendError(pub String);

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SendError {}

/// Hands a message to whatever delivers it.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Delivers `mail`; an error means it should be tried again later.
    async fn send(&self, mail: &OutgoingMail) -> Result<(), SendError>;
}

/// Writes each message to the log, links and all: the default when no SMTP relay is set.
#[derive(Debug, Default)]
pub struct LogMailer;

#[async_trait]
impl Mailer for LogMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), SendError> {
        tracing::info!(
            to = %mail.to,
            subject = %mail.subject,
            message_id = %mail.id,
            body = %mail.text,
            "mail (no SMTP relay is configured, so it is only logged)"
        );
        Ok(())
    }
}

/// Delivers through an SMTP relay.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish()
    }
}

impl SmtpMailer {
    /// A relay at `url`: `smtp://host:587` (STARTTLS, required), `smtps://host:465` (implicit
    /// TLS), or `smtp://host:25?tls=none` for a relay on the same machine without TLS. User and
    /// password come from the URL, or `password` replaces the URL's. Mail is sent as `from`.
    pub fn new(url: &str, password: Option<&str>, from: &str) -> Result<Self, SendError> {
        let mut parsed = url::Url::parse(url).map_err(|e| SendError(format!("--smtp-url: {e}")))?;
        match parsed.scheme() {
            "smtp" => {
                let tls: Vec<(String, String)> = parsed
                    .query_pairs()
                    .filter(|(k, _)| k == "tls")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let rest: Vec<(String, String)> = parsed
                    .query_pairs()
                    .filter(|(k, _)| k != "tls")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let mode = match tls.first().map(|(_, v)| v.as_str()) {
                    None | Some("required") => Some("required"),
                    Some("none") => None,
                    Some(other) => {
                        return Err(SendError(format!(
                            "--smtp-url: tls={other} is not one of required, none"
                        )))
                    }
                };
                let mut query = parsed.query_pairs_mut();
                query.clear();
                for (k, v) in &rest {
                    query.append_pair(k, v);
                }
                if let Some(mode) = mode {
                    query.append_pair("tls", mode);
                }
                drop(query);
                if parsed.query() == Some("") {
                    parsed.set_query(None);
                }
            }
            "smtps" => {}
            other => {
                return Err(SendError(format!(
                    "--smtp-url: {other}:// is not smtp:// or smtps://"
                )))
            }
        }
        if let Some(password) = password {
            if parsed.username().is_empty() {
                return Err(SendError(
                    "--smtp-password-file needs a user in --smtp-url (smtp://user@host)".into(),
                ));
            }
            parsed
                .set_password(Some(password))
                .map_err(|()| SendError("--smtp-url: a password needs a user".into()))?;
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(parsed.as_str())
            .map_err(|e| SendError(format!("--smtp-url: {e}")))?
            .timeout(Some(std::time::Duration::from_secs(30)))
            .pool_config(
                lettre::transport::smtp::PoolConfig::new()
                    .max_size(u32::try_from(super::worker::PARALLEL).unwrap_or(32)),
            )
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| SendError(format!("--mail-from {from:?}: {e}")))?;
        let domain = from.email.domain().to_string();
        Ok(Self {
            transport,
            from,
            domain,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), SendError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| SendError(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{}@{}>", mail.id, self.domain)))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(mail.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(mail.html.clone()),
                    ),
            )
            .map_err(|e| SendError(format!("message: {e}")))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| SendError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The relay's connection pool starts a task: a runtime is needed.
    #[tokio::test]
    async fn relay_urls_are_starttls_unless_said_otherwise_and_bad_ones_are_refused() {
        for good in [
            "smtp://relay.example.test:587",
            "smtp://user:pw@relay.example.test",
            "smtps://relay.example.test:465",
            "smtp://127.0.0.1:2525?tls=none",
        ] {
            assert!(
                SmtpMailer::new(good, None, "auth@example.test").is_ok(),
                "{good}"
            );
        }
        for bad in [
            "http://relay.example.test",
            "smtp://relay.example.test?tls=maybe",
            "not a url",
        ] {
            assert!(
                SmtpMailer::new(bad, None, "auth@example.test").is_err(),
                "{bad}"
            );
        }
        assert!(SmtpMailer::new("smtp://relay.example.test", None, "not an address").is_err());
        assert!(
            SmtpMailer::new("smtp://relay.example.test", Some("pw"), "a@example.test").is_err()
        );
    }
}
