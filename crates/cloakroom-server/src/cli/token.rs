//! `cloakroom token inspect`: decode a JWT, verify it, and audit it against RFC 8725 and RFC 9068.

use clap::Subcommand;
use cloakroom::jwt::{self, Algorithm, ClaimsPolicy, KeyRing, VerifyError, MAX_TOKEN_BYTES};
use cloakroom::{Clock, SystemClock, ACCESS_TOKEN_TYPE};
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Read;
use std::path::PathBuf;

use super::CliError;
use crate::settings::Settings;

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Decode, verify and audit an access token; exit 0 if sound, 1 if not
    Inspect {
        /// The token, or - (or nothing) to read it from standard input
        token: Option<String>,
        /// Verify against this JWKS file instead of this server's keys
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
}

fn check(checks: &mut Vec<Check>, check: &'static str, ok: bool, detail: impl Into<String>) {
    checks.push(Check {
        check,
        ok,
        detail: detail.into(),
    });
}

fn read_token(arg: Option<String>) -> Result<String, CliError> {
    match arg.as_deref() {
        Some(t) if t != "-" => Ok(t.trim().to_string()),
        _ => {
            let mut buf = String::new();
            std::io::stdin()
                .take(1 << 20)
                .read_to_string(&mut buf)
                .map_err(|e| CliError::Usage(format!("cannot read the token from stdin: {e}")))?;
            Ok(buf.trim().to_string())
        }
    }
}

const REQUIRED: [&str; 8] = ["iss", "exp", "aud", "sub", "client_id", "iat", "jti", "sid"];

/// Audits `token`; returns the checks, the decoded header and claims.
fn audit(token: &str, ring: &KeyRing, policy: &ClaimsPolicy) -> (Vec<Check>, Value, Value) {
    let mut checks = Vec::new();
    check(
        &mut checks,
        "size",
        token.len() <= MAX_TOKEN_BYTES,
        format!("{} bytes (limit {MAX_TOKEN_BYTES})", token.len()),
    );
    let (header, payload) = match jwt::insecure_decode_without_verifying(token) {
        Ok(hp) => hp,
        Err(e) => {
            check(&mut checks, "structure", false, e.to_string());
            return (checks, Value::Null, Value::Null);
        }
    };
    check(
        &mut checks,
        "structure",
        true,
        "compact JWS, strict base64url, header of alg/typ/kid only",
    );
    let alg_ok = header.alg.parse::<Algorithm>().is_ok();
    check(
        &mut checks,
        "alg",
        alg_ok,
        format!(
            "{} (allowed: EdDSA, ES256, RS256, HS256; never none)",
            header.alg
        ),
    );
    let typ_ok = header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || t.eq_ignore_ascii_case("application/at+jwt")
    });
    check(
        &mut checks,
        "typ",
        typ_ok,
        format!("{:?} (RFC 9068 wants at+jwt)", header.typ),
    );
    let known = header.kid.as_deref().and_then(|k| ring.get(k));
    check(
        &mut checks,
        "kid",
        known.is_some(),
        format!("{:?}", header.kid),
    );
    match jwt::verify(token, ring) {
        Ok(_) => check(
            &mut checks,
            "signature",
            true,
            "verified with the key named by kid and its own algorithm",
        ),
        Err(e) => check(&mut checks, "signature", false, e.to_string()),
    }
    let claims: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|c| claims.get(*c).is_none())
        .collect();
    check(
        &mut checks,
        "required claims",
        missing.is_empty(),
        if missing.is_empty() {
            "all of iss exp aud sub client_id iat jti sid".to_string()
        } else {
            format!("missing: {}", missing.join(" "))
        },
    );
    match policy.validate(&header, &payload, SystemClock.now()) {
        Ok(_) => check(
            &mut checks,
            "claims",
            true,
            format!(
                "iss {}, aud, lifetime ≤ {} s, not expired",
                policy.issuer, policy.max_lifetime_secs
            ),
        ),
        Err(VerifyError::Claims(e)) => {
            check(&mut checks, "claims", false, format!("claim types: {e}"))
        }
        Err(e) => check(&mut checks, "claims", false, e.to_string()),
    }
    let header = serde_json::to_value(&header).unwrap_or(Value::Null);
    (checks, header, claims)
}

/// Inspects a token; with `--jwks` it reads nothing but that file and the settings.
pub(super) async fn run(cmd: TokenCommand, settings: &Settings) -> Result<(), CliError> {
    let TokenCommand::Inspect { token, jwks, json } = cmd;
    let token = read_token(token)?;
    if token.is_empty() {
        return Err(CliError::Usage("no token given".into()));
    }
    let ring = match jwks {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", path.display())))?;
            KeyRing::from_jwks(&doc)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?
        }
        None => (*super::admin_engine(settings).await?.key_ring()).clone(),
    };
    let policy = settings.auth_config(settings.listen.port()).jwt.policy();
    let (checks, header, claims) = audit(&token, &ring, &policy);
    let sound = checks.iter().all(|c| c.ok);
    if json {
        let out = json!({"valid": sound, "header": header, "claims": claims, "checks": checks});
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| CliError::Failed(e.to_string()))?
        );
    } else {
        println!("header: {header}");
        println!("claims: {claims}");
        for c in &checks {
            println!(
                "{} {:<16} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.check,
                c.detail
            );
        }
        println!(
            "{}",
            if sound {
                "the token is sound"
            } else {
                "the token is NOT acceptable"
            }
        );
    }
    if sound {
        Ok(())
    } else {
        Err(CliError::Failed("the token failed the audit".into()))
    }
}
