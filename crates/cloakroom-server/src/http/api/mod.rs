//! The JSON API, one module per group of routes, each exporting `router()`.

pub mod account;
pub mod auth;
pub mod dbsc;
pub mod events;
pub mod factors;
pub mod forward;
pub mod health;
pub mod passkeys;
pub mod revocations;
pub mod sessions;
pub mod token;
pub mod views;

#[cfg(test)]
mod schemas_test;
