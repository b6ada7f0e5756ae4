//! `cloakroom audit [--user EMAIL] [--since DURATION] [--json]`: the security events of one
//! account or of every account, newest first.

use clap::Args;
use cloakroom::Auth;
use time::Duration;

use super::CliError;

/// `audit` options.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this account's events
    #[arg(long)]
    user: Option<String>,
    /// How far back: `90s`, `15m`, `24h`, `7d`, `2w` (default 7d)
    #[arg(long, default_value = "7d")]
    since: String,
    /// At most this many events
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

/// A span of time as `cloakroom audit` takes it: a whole number and a unit (s, m, h, d, w).
fn parse_span(text: &str) -> Result<Duration, CliError> {
    let usage = || {
        CliError::Usage(format!(
            "--since {text:?}: give a whole number and a unit, as 90s, 15m, 24h, 7d or 2w"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| usage())?;
    let unit = match unit {
        "s" => Duration::SECOND,
        "m" => Duration::MINUTE,
        "h" => Duration::HOUR,
        "d" => Duration::DAY,
        "w" => Duration::WEEK,
        _ => return Err(usage()),
    };
    unit.checked_mul(i32::try_from(n).map_err(|_| usage())?)
        .ok_or_else(usage)
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

pub(super) async fn run(args: AuditArgs, auth: &Auth) -> Result<(), CliError> {
    let since = auth.now() - parse_span(&args.since)?;
    let events = auth.audit(args.user.as_deref(), since, args.limit).await?;
    if !args.json {
        println!(
            "{:<20}  {:<20}  {:<15}  {:<30}  DETAIL",
            "AT", "EVENT", "IP", "EMAIL"
        );
    }
    for (e, email) in events {
        let email = email.map_or_else(|| "(deleted)".to_string(), |e| e.to_string());
        if args.json {
            let line = serde_json::json!({
                "at": rfc3339(e.at),
                "user_id": e.user_id.to_string(),
                "email": email,
                "kind": e.kind.as_str(),
                "ip": e.ip,
                "user_agent": e.user_agent,
                "detail": e.detail,
            });
            println!("{line}");
        } else {
            println!(
                "{:<20}  {:<20}  {:<15}  {:<30}  {}",
                rfc3339(e.at),
                e.kind.as_str(),
                e.ip.as_deref().unwrap_or("-"),
                email,
                e.detail.as_deref().unwrap_or("-"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_a_number_and_a_unit() {
        assert_eq!(parse_span("90s").ok(), Some(Duration::seconds(90)));
        assert_eq!(parse_span("15m").ok(), Some(Duration::minutes(15)));
        assert_eq!(parse_span("24h").ok(), Some(Duration::hours(24)));
        assert_eq!(parse_span("7d").ok(), Some(Duration::days(7)));
        assert_eq!(parse_span("2w").ok(), Some(Duration::weeks(2)));
        for bad in ["", "7", "d", "7 d", "-7d", "7y", "99999999999d"] {
            assert!(
                matches!(parse_span(bad), Err(CliError::Usage(_))),
                "{bad:?}"
            );
        }
    }
}
