//! The cloakroom server: settings, the HTTP API, and the admin CLI, on top of the `cloakroom`
//! library. The binary (`src/main.rs`) only parses the command line and calls [`cli::run`].

pub mod app;
pub mod cli;
pub mod header_timer;
pub mod http;
pub mod settings;
