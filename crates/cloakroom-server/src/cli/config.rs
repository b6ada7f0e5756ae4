//! `cloakroom config show`.

use clap::Subcommand;

use super::CliError;
use crate::settings::Settings;

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings (TOML), secrets redacted
    Show,
}

pub(super) fn run(cmd: ConfigCommand, settings: &Settings) -> Result<(), CliError> {
    match cmd {
        ConfigCommand::Show => {
            print!("{}", settings.show());
            Ok(())
        }
    }
}
