//! The gateway server: configuration, start-up, the proxy API and its stages, the console's
//! server side, and the store. See ARCHITECTURE.md for the request flow.

// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod access;
pub mod admin;
pub mod auth;
pub mod config;
pub mod console;
pub mod dialect;
pub mod error;
pub mod keys;
pub mod meter;
pub mod providers;
pub mod proxy;
pub mod route;
pub mod router;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod testkit;
