//! `cloakroom user …`: add, list, disable, enable, set-roles, factors, reset-factors.

use clap::Subcommand;
use cloakroom::{Auth, Role};
use std::io::{IsTerminal, Read};

use super::CliError;

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (prompts for the password on a terminal)
    Add {
        /// Email address
        email: String,
        /// A role (repeatable); default: user
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from standard input (one line) instead of prompting
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Disable a user and end their sessions
    Disable {
        /// Email address
        email: String,
    },
    /// Enable a disabled user
    Enable {
        /// Email address
        email: String,
    },
    /// Replace a user's roles
    SetRoles {
        /// Email address
        email: String,
        /// The new roles (none to clear them)
        roles: Vec<String>,
    },
    /// List a user's second factors (never their secrets)
    Factors {
        /// Email address
        email: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove all of a user's second factors and end their sessions (a lost phone); the
    /// next login asks for the password only
    ResetFactors {
        /// Email address
        email: String,
    },
}

fn read_password(from_stdin: bool) -> Result<String, CliError> {
    if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut buf)
            .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
        let line = buf.strip_suffix('\n').unwrap_or(&buf);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.contains('\n') {
            return Err(CliError::Usage(
                "--password-stdin takes one line; the input has several".into(),
            ));
        }
        return Ok(line.to_string());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "no terminal to ask for the password on; pass --password-stdin".into(),
        ));
    }
    let first = rpassword::prompt_password("Password: ")
        .map_err(|e| CliError::Failed(format!("cannot read the password: {e}")))?;
    let again = rpassword::prompt_password("Password (again): ")
        .map_err(|e| CliError::Failed(format!("cannot read the password: {e}")))?;
    if first != again {
        return Err(CliError::Usage("the passwords differ".into()));
    }
    Ok(first)
}

fn roles_line(roles: &[Role]) -> String {
    roles.iter().map(Role::as_str).collect::<Vec<_>>().join(",")
}

pub(super) async fn run(cmd: UserCommand, auth: &Auth) -> Result<(), CliError> {
    match cmd {
        UserCommand::Add {
            email,
            roles,
            password_stdin,
        } => {
            let roles = if roles.is_empty() {
                vec![Role::default_role()]
            } else {
                roles
                    .iter()
                    .map(|r| Role::parse(r).map_err(|e| CliError::Usage(format!("{r:?}: {e}"))))
                    .collect::<Result<_, _>>()?
            };
            let password = read_password(password_stdin)?;
            let user = auth.create_user(&email, &password, roles).await?;
            println!("created {} ({})", user.email, user.id);
        }
        UserCommand::List { json } => {
            let users = auth.list_users().await?;
            if json {
                let out = serde_json::to_string_pretty(&users)
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                println!("{out}");
            } else {
                println!("{:<36}  {:<8}  {:<20}  EMAIL", "ID", "STATUS", "ROLES");
                for u in users {
                    let status = if u.disabled { "disabled" } else { "active" };
                    println!(
                        "{:<36}  {:<8}  {:<20}  {}",
                        u.id,
                        status,
                        roles_line(&u.roles),
                        u.email
                    );
                }
            }
        }
        UserCommand::Disable { email } => {
            let user = auth.set_disabled(&email, true).await?;
            println!("disabled {} and ended their sessions", user.email);
        }
        UserCommand::Enable { email } => {
            let user = auth.set_disabled(&email, false).await?;
            println!("enabled {}", user.email);
        }
        UserCommand::SetRoles { email, roles } => {
            let user = auth.set_roles(&email, &roles).await?;
            println!("{} now has roles [{}]", user.email, roles_line(&user.roles));
        }
        UserCommand::Factors { email, json } => {
            let factors = auth.admin_factors(&email).await?;
            let stamp = |t: Option<time::OffsetDateTime>| {
                t.and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
            };
            if json {
                let list: Vec<serde_json::Value> = factors
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "id": f.id.to_string(),
                            "kind": f.kind.as_str(),
                            "name": f.name,
                            "confirmed": f.confirmed,
                            "created_at": stamp(Some(f.created_at)),
                            "last_used_at": stamp(f.last_used_at),
                        })
                    })
                    .collect();
                let out = serde_json::to_string_pretty(&list)
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                println!("{out}");
            } else {
                println!(
                    "{:<36}  {:<14}  {:<9}  {:<20}  NAME",
                    "ID", "KIND", "STATUS", "LAST USED"
                );
                for f in factors {
                    let status = if f.confirmed { "active" } else { "pending" };
                    println!(
                        "{:<36}  {:<14}  {:<9}  {:<20}  {}",
                        f.id,
                        f.kind.as_str(),
                        status,
                        stamp(f.last_used_at).unwrap_or_else(|| "never".into()),
                        f.name.unwrap_or_default()
                    );
                }
            }
        }
        UserCommand::ResetFactors { email } => {
            let removed = auth.admin_reset_factors(&email).await?;
            println!(
                "removed {removed} second factor{} of {email} and ended their sessions",
                if removed == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}
