//! Plain types shared by every Tether layer.
//!
//! Nothing here does I/O or knows about tokio: the store, engine, dialect codecs and
//! transport all speak in these types, so a codec can be tested on byte slices and a
//! store can be tested without a server.
//!
//! Layout:
//! - [`name`]: validated resource names and record ids.
//! - [`record`]: a record and its version.
//! - [`position`]: change-log positions and the store epoch.
//! - [`write`]: the five writes (create, update, upsert, patch, delete).
//! - [`query`]: equality filters, order and limit, evaluated the same way everywhere.
//! - [`change`]: a committed write as it appears in the change log.
//! - [`op`]: what a client asks for, decoded by a dialect codec.
//! - [`event`]: what the server tells a client, encoded by a dialect codec.
//! - [`error`]: the one error type with stable codes.

pub mod change;
pub mod error;
pub mod event;
pub mod name;
pub mod op;
pub mod position;
pub mod query;
pub mod record;
pub mod write;

pub use change::{Change, ChangeKind};
pub use error::{Error, ErrorCode, Result};
pub use event::{Outbound, PushKind, Reply, ResyncReason};
pub use name::{RecordId, ResourceName};
pub use op::{Audience, ConfirmKind, Op, ResumeSub, Since, SubSpec, SubTarget, Tag};
pub use position::{Epoch, Position};
pub use query::{Order, Query};
pub use record::{Data, Record, Version};
pub use write::{Write, WriteKind};
