//! The Tether server: transport and sessions over the engine, and the CLI's wiring.
//!
//! Layout (data flows one way, see ARCHITECTURE.md):
//! - [`transport`]: HTTP routes and WebSocket upgrades (`ws`, `http`).
//! - [`session`]: one per connection; decodes with the dialect codec, executes ops on
//!   the engine, writes the outbox.
//! - [`server`]: opens the store and bus, starts the engine, serves.
//! - [`sources`]: live streams from RabbitMQ relayed to topics.
//! - [`config`]: flags and defaults; [`close_codes`]: the close codes we send.
//! - [`auth`]: who is calling (bearer tokens); [`security`]: the auth, origin and TLS
//!   settings; [`reload`]: the auth file applied again on SIGHUP or when it changes.
//!   The access rules themselves are `tether_engine::access`.
//! - [`inspector`]: the web page at `/`.
//! - [`telemetry`]: the Prometheus recorder behind `/metrics`, request ids in logs.
//!
//! The engine, store, bus, dialects and core types live in their own crates.

pub mod auth;
pub mod close_codes;
pub mod config;
pub mod inspector;
pub mod reload;
pub mod security;
pub mod server;
pub mod session;
pub mod sources;
pub mod telemetry;
pub mod transport;

pub use config::Config;
pub use server::{start, Server};
