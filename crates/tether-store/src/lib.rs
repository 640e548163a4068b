//! Records and the change log, behind one trait.
//!
//! A store commits writes, gives each committed write the next gap-free position in its
//! change log, and answers reads. It knows nothing of subscriptions, sessions, dialects
//! or the bus: it never publishes anything. The engine is its only caller.
//!
//! Implementations: [`sqlite::SqliteStore`] (embedded, the default) and
//! [`postgres::PostgresStore`] (shared by several nodes). [`mongo::MongoStore`] wraps
//! either and serves chosen resources from MongoDB collections (seed 002). Every
//! implementation must pass [`conformance`], one suite of tests any store can run:
//! `tether_store::conformance_tests!(factory)` expands to one `#[tokio::test]` per case.
//!
//! ## Ordering with several writers
//! Positions come from one counter row (`meta.head`) that a commit increments inside its
//! own transaction. The row lock serializes committers, so positions are handed out in
//! commit order and a rolled-back transaction gives its position back: a reader that
//! sees position N committed has already been able to see every position below N. This
//! holds for one SQLite writer and for many PostgreSQL writers alike.

pub mod conformance;
pub mod mongo;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use tether_core::{Change, Epoch, Position, Query, Record, RecordId, ResourceName, Result, Write};

pub use mongo::{MongoResource, MongoStore};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Most changes a replay returns; a client further behind gets a resync instead.
pub const MAX_REPLAY: usize = 10_000;

/// One part of a consistent read: a single record, or a query over a resource.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadTarget {
    Record {
        resource: ResourceName,
        id: RecordId,
    },
    Query {
        resource: ResourceName,
        query: Query,
    },
}

/// Several reads and optionally a change-log replay, all at one position.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsistentRead {
    pub targets: Vec<ReadTarget>,
    /// Also return the changes after this position (up to `head`).
    pub changes_after: Option<Position>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsistentView {
    /// Every result below reflects exactly the changes up to and including `head`.
    pub head: Position,
    /// One entry per target, in order: the record (0 or 1 entries) or the query result.
    pub results: Vec<Vec<Record>>,
    /// Present when `changes_after` was asked for.
    pub changes: Option<Replay>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Replay {
    /// Exactly the changes after the asked position, in order, ending at `head`.
    Changes(Vec<Change>),
    /// The log no longer holds the changes right after the asked position (compacted),
    /// or more than [`MAX_REPLAY`] of them would be needed.
    Compacted,
}

/// A resource and how many live records it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceInfo {
    pub name: ResourceName,
    pub records: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The identity of this store's change log, fixed when the store was created.
    fn epoch(&self) -> &Epoch;

    /// The position of the last committed change (0 for an empty log).
    async fn head(&self) -> Result<Position>;

    /// Commits a group of independent writes in one durable transaction (group commit).
    /// Each write gets its own outcome, in order; a refused write (not found, conflict)
    /// takes no position and does not affect the others. `Err` means the group as a
    /// whole was not committed. When this returns, every `Ok` change is durable.
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Result<Change>>>;

    async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>>;

    /// Records matching the query, ordered and limited by it.
    async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>>;

    /// Reads several targets and optionally the changes since a position, consistently.
    async fn read(&self, read: ConsistentRead) -> Result<ConsistentView>;

    /// Changes after `after`, at most `limit` of them, in position order.
    async fn changes_since(&self, after: Position, limit: usize) -> Result<Replay>;

    /// Resources with at least one live record, by name.
    async fn resources(&self) -> Result<Vec<ResourceInfo>>;

    /// Drops change-log entries at or below `through`; resumes from before it resync.
    async fn compact(&self, through: Position) -> Result<()>;
}
