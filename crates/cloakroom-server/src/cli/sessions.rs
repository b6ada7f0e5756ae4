//! `cloakroom sessions …`: list, revoke, revoke-all.

use clap::Subcommand;
use cloakroom::{Auth, SessionId};

use super::CliError;

/// `sessions` subcommands.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions, of one user or of everyone
    List {
        /// Only this user's sessions
        email: Option<String>,
    },
    /// End one session
    Revoke {
        /// Session id
        id: String,
    },
    /// End every session of a user
    RevokeAll {
        /// Email address
        email: String,
    },
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

pub(super) async fn run(cmd: SessionsCommand, auth: &Auth) -> Result<(), CliError> {
    match cmd {
        SessionsCommand::List { email } => {
            let rows = auth.admin_sessions(email.as_deref()).await?;
            println!(
                "{:<36}  {:<6}  {:<20}  {:<20}  {:<15}  EMAIL",
                "ID", "KIND", "CREATED", "LAST SEEN", "IP"
            );
            for (user, s, seen) in rows {
                println!(
                    "{:<36}  {:<6}  {:<20}  {:<20}  {:<15}  {}",
                    s.id,
                    s.transport.as_str(),
                    rfc3339(s.created_at),
                    rfc3339(seen),
                    s.ip.as_deref().unwrap_or("-"),
                    user.email
                );
            }
        }
        SessionsCommand::Revoke { id } => {
            let id: SessionId = id
                .parse()
                .map_err(|_| CliError::Usage(format!("{id:?} is not a session id")))?;
            auth.admin_revoke(id).await?;
            println!("ended session {id}");
        }
        SessionsCommand::RevokeAll { email } => {
            let ended = auth.admin_revoke_all(&email).await?;
            println!("ended {} session(s) of {email}", ended.len());
        }
    }
    Ok(())
}
