//! Library integration tests: the store contract on every backend, and the engine's rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod change_log;
mod engine;
mod idle;
mod integration;
mod redis_store;
mod rules;
mod store_contract;
mod wycheproof;
