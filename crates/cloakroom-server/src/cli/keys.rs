//! `cloakroom keys list`, `keys rotate` and `keys rekey`.

use clap::Subcommand;
use cloakroom::Auth;

use super::CliError;

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys: active, retired (still verifying) or expired
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Make a new signing key; running servers use it within seconds, and old public keys stay
    /// published until every token they signed has expired
    Rotate,
    /// Seal every signing key with the first key-encryption key (after putting a new one first
    /// in the key file); then the old key-encryption key can be removed
    Rekey,
}

pub(super) async fn run(cmd: KeysCommand, auth: &Auth) -> Result<(), CliError> {
    match cmd {
        KeysCommand::List { json } => {
            let keys = auth.list_keys().await?;
            if json {
                let out = serde_json::to_string_pretty(&keys)
                    .map_err(|e| CliError::Failed(e.to_string()))?;
                println!("{out}");
            } else {
                println!("{:<32}  {:<6}  {:<8}  CREATED", "KID", "ALG", "STATUS");
                for k in keys {
                    println!(
                        "{:<32}  {:<6}  {:<8}  {}",
                        k.kid, k.alg, k.status, k.created_at
                    );
                }
            }
        }
        KeysCommand::Rekey => {
            let count = auth.rekey().await?;
            println!("{count} signing key(s) sealed with the current key-encryption key");
        }
        KeysCommand::Rotate => {
            let kid = auth.rotate_keys().await?;
            println!("new signing key {kid}");
        }
    }
    Ok(())
}
