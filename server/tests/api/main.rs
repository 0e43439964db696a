//! Integration tests: the gateway in-process on port 0, against the project's mock
//! upstream, on a fresh SQLite file and on a fresh PostgreSQL database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod access;
mod budgets;
mod config_cli;
mod console;
mod errors;
mod exactness;
mod keys;
mod ledger;
mod messages;
mod people;
mod provider_azure;
mod provider_bedrock;
mod provider_gemini;
mod proxy;
mod rate_limits;
mod routing;
mod server;
mod sso;
