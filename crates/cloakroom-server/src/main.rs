//! The `cloakroom` binary: the server and its admin CLI.

use clap::Parser;
use cloakroom_server::cli::{self, Cli};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cli::run(Cli::parse()).await
}
