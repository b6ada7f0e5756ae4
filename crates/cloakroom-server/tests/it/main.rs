//! Integration tests: the real server on an ephemeral port, driven over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod attacks_cookie;
mod attacks_http;
mod attacks_jwt;
mod attacks_login;
mod browser;
mod cli;
mod dbsc;
mod dpop;
mod forward;
mod full_disk;
mod hardening;
mod interop;
mod lifecycle;
mod mail;
mod mfa;
mod mfa_instances;
mod multihost;
mod openapi;
mod pages;
mod passkeys;
mod postgres;
mod proxies;
mod return_urls;
mod sealing;
mod stepup;
mod support;
mod tokens;
mod with_redis;
