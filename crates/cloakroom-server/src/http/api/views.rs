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
    /// Whether the owner of the address confirmed it.
    pub email_verified: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            roles: u.roles.iter().map(Role::to_string).collect(),
            email_verified: u.email_verified,
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
    /// When the user last proved who they are.
    #[serde(with = "time::serde::rfc3339")]
    pub auth_time: OffsetDateTime,
    /// How they proved it (RFC 8176).
    pub amr: Vec<&'static str>,
    /// The assurance level: `aal1` or `aal2`.
    pub acr: &'static str,
}

impl SessionView {
    /// The view of `s`, ending at `expires_at`.
    pub fn new(s: &Session, expires_at: OffsetDateTime) -> Self {
        Self {
            id: s.id.to_string(),
            transport: s.transport.as_str(),
            created_at: s.created_at,
            expires_at,
            auth_time: s.authenticated_at,
            amr: s.amr.names(),
            acr: s.amr.acr().as_str(),
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

impl WhoAmI {
    /// The JSON of `a`'s `whoami` answer, written straight into one buffer. It is the same text
    /// `serde_json` makes of [`WhoAmI`] (a test holds them equal), without building the view's
    /// strings first: this is the answer on the hottest route.
    pub fn json(a: &Authenticated) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.extend_from_slice(b"{\"user\":{\"id\":");
        push_uuid(&mut out, &a.user.id.0);
        out.extend_from_slice(b",\"email\":");
        push_str(&mut out, a.user.email.as_str());
        out.extend_from_slice(b",\"roles\":[");
        for (i, role) in a.user.roles.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Role names are a-z, 0-9 and `_-:.` (`Role::parse`): nothing to escape.
            push_quoted(&mut out, role.as_str());
        }
        out.extend_from_slice(if a.user.email_verified {
            b"],\"email_verified\":true},\"session\":{\"id\":"
        } else {
            b"],\"email_verified\":false},\"session\":{\"id\":"
        });
        push_uuid(&mut out, &a.session.id.0);
        out.extend_from_slice(b",\"transport\":");
        push_quoted(&mut out, a.session.transport.as_str());
        out.extend_from_slice(b",\"created_at\":");
        push_time(&mut out, a.session.created_at);
        out.extend_from_slice(b",\"expires_at\":");
        push_time(&mut out, a.expires_at);
        out.extend_from_slice(b",\"auth_time\":");
        push_time(&mut out, a.session.authenticated_at);
        out.extend_from_slice(b",\"amr\":[");
        for (i, name) in a.session.amr.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_quoted(&mut out, name);
        }
        out.extend_from_slice(b"],\"acr\":");
        push_quoted(&mut out, a.session.amr.acr().as_str());
        out.extend_from_slice(b"}}");
        out
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping, else escaped by serde_json.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        push_quoted(out, s);
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; an empty string keeps the document valid regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// A string known to need no escaping.
fn push_quoted(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn push_uuid(out: &mut Vec<u8>, id: &uuid::Uuid) {
    let mut buf = uuid::Uuid::encode_buffer();
    push_quoted(out, id.as_hyphenated().encode_lower(&mut buf));
}

/// RFC 3339 as `time::serde::rfc3339` writes it. Times here are whole seconds in UTC, which
/// take the short path; anything else goes through `time`'s formatter.
fn push_time(out: &mut Vec<u8>, t: OffsetDateTime) {
    // Seconds since 0000-03-01, day 0 of the calendar below (earlier times take the formatter).
    let since = t.unix_timestamp() + 719_468 * 86_400;
    match u64::try_from(since) {
        Ok(since) if t.offset().is_utc() && t.nanosecond() == 0 && t.year() <= 9999 => {
            let (year, month, day) = civil_from_days(since / 86_400);
            let of_day = since % 86_400;
            let mut text = *b"\"0000-00-00T00:00:00Z\"";
            for (at, n) in [
                (1, year / 100),
                (3, year % 100),
                (6, month),
                (9, day),
                (12, of_day / 3600),
                (15, of_day / 60 % 60),
                (18, of_day % 60),
            ] {
                // Every n is 0..=99.
                text[at] = b'0' + (n / 10 % 10) as u8;
                text[at + 1] = b'0' + (n % 10) as u8;
            }
            out.extend_from_slice(&text);
        }
        _ => match t.format(&time::format_description::well_known::Rfc3339) {
            Ok(s) => push_str(out, &s),
            Err(_) => out.extend_from_slice(b"null"),
        },
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since 0000-03-01: Howard
/// Hinnant's `civil_from_days`, a handful of integer operations (a test holds it to `time`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let era = days / 146_097;
    let doe = days % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
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
    /// What its credentials are bound to: `none`, `dpop` (a token session's key) or `dbsc` (a
    /// browser session's key).
    pub binding: &'static str,
}

impl SessionListEntry {
    /// `s`, last seen at `seen`, as listed to the session `current`.
    pub fn of(s: cloakroom::Session, seen: OffsetDateTime, current: cloakroom::SessionId) -> Self {
        Self {
            id: s.id.to_string(),
            transport: s.transport.as_str(),
            created_at: s.created_at,
            last_seen_at: seen,
            expires_at: s.expires_at(seen),
            current: s.id == current,
            binding: if s.dpop_jkt.is_some() {
                "dpop"
            } else if s.dbsc_key.is_some() {
                "dbsc"
            } else {
                "none"
            },
            ip: s.ip,
            user_agent: s.user_agent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom::{Email, Role, Session, SessionId, TokenHash, Transport, User, UserId};
    use std::sync::Arc;
    use time::macros::datetime;

    fn sample(email: &str, roles: &[&str], created: OffsetDateTime) -> Authenticated {
        let user = User {
            id: UserId::random(),
            email: Email::parse(email).unwrap_or_else(|e| panic!("{email}: {e}")),
            roles: roles
                .iter()
                .map(|r| Role::parse(r).unwrap_or_else(|e| panic!("{r}: {e}")))
                .collect(),
            disabled: false,
            created_at: created,
            email_verified: false,
            credentials_gen: 0,
        };
        let session = Session {
            id: SessionId::random(),
            user_id: user.id,
            transport: Transport::Token,
            secret_hash: TokenHash([7; 32]),
            remember: false,
            created_at: created,
            authenticated_at: created,
            last_seen_at: created,
            idle_timeout: time::Duration::minutes(30),
            absolute_expires_at: created + time::Duration::days(1),
            ip: None,
            user_agent: None,
            credentials_gen: 0,
            refresh_family: None,
            amr: cloakroom::Amr::PWD,
            dpop_jkt: None,
            dbsc_key: None,
        };
        Authenticated {
            user: Arc::new(user),
            session: Arc::new(session),
            expires_at: created + time::Duration::minutes(30),
        }
    }

    #[test]
    fn the_direct_whoami_json_is_what_serde_json_writes() {
        let cases = [
            sample(
                "a@example.com",
                &["user"],
                datetime!(2026-11-24 20:23:05 UTC),
            ),
            sample(
                "o'brien+x@example.com",
                &[],
                datetime!(0001-01-01 00:00:00 UTC),
            ),
            sample(
                "zoë@exämple.com",
                &["user", "admin"],
                datetime!(9999-12-30 23:00:00 UTC),
            ),
            sample(
                "a@example.com",
                &["user"],
                datetime!(2026-01-02 03:04:05.5 UTC),
            ),
            sample(
                "a@example.com",
                &["user"],
                datetime!(2026-01-02 03:04:05 +01:00),
            ),
        ];
        for a in cases {
            let want = serde_json::to_vec(&WhoAmI::from(&a)).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&WhoAmI::json(&a)),
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn times_are_written_as_time_writes_them() {
        let first = datetime!(0000-01-01 00:00:00 UTC).unix_timestamp();
        let last = datetime!(9999-12-31 23:59:59 UTC).unix_timestamp();
        // Every 1 000 003 seconds across the range, and the edges of every day near 1970.
        let samples = (first..=last).step_by(1_000_003).chain([
            first,
            last,
            -1,
            0,
            1,
            86_399,
            86_400,
            951_782_400,
            4_107_456_000,
        ]);
        for secs in samples {
            let t = OffsetDateTime::from_unix_timestamp(secs).unwrap_or_else(|e| panic!("{e}"));
            let mut out = Vec::new();
            push_time(&mut out, t);
            let want = format!(
                "\"{}\"",
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            );
            assert_eq!(String::from_utf8_lossy(&out), want, "{secs}");
        }
    }

    #[test]
    fn strings_that_need_escaping_are_escaped() {
        for s in [
            "plain",
            "\"q\"",
            "back\\slash",
            "ctl\u{1}\n\t",
            "del\u{7f}",
            "é√😀",
            "",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap_or_default(), "{s:?}");
        }
    }
}
