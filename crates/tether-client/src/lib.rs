//! An async Rust client for Tether's canonical protocol (`/ws`, PROTOCOL.md).
//!
//! For services that read, write and watch Tether data without thinking about the
//! socket:
//!
//! - **Typed requests** ([`Client::get`], [`Client::query`], [`Client::create`],
//!   [`Client::patch`], ...) return `Result<_, ClientError>`; a refusal carries the
//!   server's stable [`ErrorCode`].
//! - **Subscriptions are [`Stream`](futures_util::Stream)s** of [`Event`]s: the
//!   snapshot first, then `Put`/`Patch`/`Delete` in change-log order.
//! - **Reconnects are invisible**: the client reconnects with backoff and jitter and
//!   resumes every subscription from the last position it applied, so nothing is missed
//!   and nothing is applied twice. Every server message's number is checked; a gap
//!   drops the connection and resumes.
//! - **An optional local store** ([`ClientBuilder::local_store`]) keeps the records the
//!   subscriptions hold, by resource and id, current.
//! - **Bearer tokens** for a server with auth on: [`ClientBuilder::token`], replaced
//!   with [`Client::set_token`] before one expires.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use serde_json::json;
//! use tether_client::{Client, Event, Query, Target};
//!
//! # async fn demo() -> Result<(), tether_client::ClientError> {
//! let client = Client::connect("ws://127.0.0.1:7070/ws").await?;
//! let mut open = client
//!     .subscribe(Target::query("todos", Query::new().filter("done", false)))
//!     .await?;
//! client.create("todos", Some("milk"), json!({"title": "Buy milk", "done": false})).await?;
//! while let Some(event) = open.next().await {
//!     match event? {
//!         Event::Snapshot { records, .. } => println!("{} open", records.len()),
//!         Event::Put { record, .. } => println!("open: {}", record.id),
//!         Event::Delete { id, .. } => println!("done or gone: {id}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Only `ws://` is built in; put TLS in front with a proxy, or enable a TLS feature of
//! `tokio-tungstenite` in your own build.

mod client;
mod driver;
mod error;
mod store;
mod types;

pub use client::{
    normalize_url, Backoff, Client, ClientBuilder, ConnectionEvent, ConnectionState, Options,
    Status, Subscription,
};
pub use error::{ClientError, ErrorCode, Result};
pub use store::LocalStore;
pub use types::{merge_patch, Data, Event, Query, Record, Target, Write, WriteKind, Written};
