//! The SQLite store against the shared conformance suite, plus what only a file-backed
//! store has: surviving a reopen, a new epoch per file, and clear errors for bad paths.

use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use tempfile::TempDir;
use tether_core::{
    Change, Epoch, ErrorCode, Position, Query, Record, RecordId, ResourceName, Result, Write,
    WriteKind,
};
use tether_store::{ConsistentRead, ConsistentView, Replay, ResourceInfo, SqliteStore, Store};

/// A store that deletes its temporary directory when the last handle goes away, so the
/// suite leaves nothing behind in /tmp. Fields drop in order: connections close first.
struct InTempDir {
    store: SqliteStore,
    _dir: TempDir,
}

#[async_trait]
impl Store for InTempDir {
    fn epoch(&self) -> &Epoch {
        self.store.epoch()
    }
    async fn head(&self) -> Result<Position> {
        self.store.head().await
    }
    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Result<Change>>> {
        self.store.commit(writes).await
    }
    async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
        self.store.get(resource, id).await
    }
    async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        self.store.query(resource, query).await
    }
    async fn read(&self, read: ConsistentRead) -> Result<ConsistentView> {
        self.store.read(read).await
    }
    async fn changes_since(&self, after: Position, limit: usize) -> Result<Replay> {
        self.store.changes_since(after, limit).await
    }
    async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        self.store.resources().await
    }
    async fn compact(&self, through: Position) -> Result<()> {
        self.store.compact(through).await
    }
}

async fn fresh() -> Arc<dyn Store> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("tether.db"))
        .await
        .expect("open a fresh store");
    Arc::new(InTempDir { store, _dir: dir })
}

tether_store::conformance_tests!(fresh());

fn create(resource: &str, id: &str, data: serde_json::Value) -> Write {
    let serde_json::Value::Object(data) = data else {
        panic!("body must be an object")
    };
    Write::new(
        WriteKind::Create,
        ResourceName::parse(resource).unwrap(),
        RecordId::parse(id).unwrap(),
        data,
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn reopen_keeps_records_head_and_epoch() {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet is created.
    let path = dir.path().join("nested/deeper/tether.db");
    let (epoch, head) = {
        let store = SqliteStore::open(&path).await.unwrap();
        let outcomes = store
            .commit(vec![
                create("todos", "a", json!({"n": 1})),
                create("todos", "b", json!({"n": 2})),
            ])
            .await
            .unwrap();
        assert!(outcomes.iter().all(|o| o.is_ok()));
        store.compact(Position(1)).await.unwrap();
        (store.epoch().clone(), store.head().await.unwrap())
    };
    assert_eq!(head, Position(2));

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.epoch(), &epoch);
    assert_eq!(store.head().await.unwrap(), head);
    let b = store
        .get(
            &ResourceName::parse("todos").unwrap(),
            &RecordId::parse("b").unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (b.version, serde_json::Value::Object(b.data)),
        (1, json!({"n": 2}))
    );
    assert_eq!(
        store.changes_since(Position(0), 10).await.unwrap(),
        Replay::Compacted,
        "compaction survives a reopen"
    );
    let next = store
        .commit(vec![create("todos", "c", json!({}))])
        .await
        .unwrap();
    assert_eq!(next[0].as_ref().unwrap().position, Position(3));
}

#[tokio::test]
async fn each_new_file_gets_its_own_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let one = SqliteStore::open(dir.path().join("one.db")).await.unwrap();
    let two = SqliteStore::open(dir.path().join("two.db")).await.unwrap();
    assert_ne!(one.epoch(), two.epoch());
    assert_eq!(one.epoch().0.len(), 16);
}

#[tokio::test]
async fn unwritable_location_is_a_clear_unavailable_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let path = file.join("tether.db");
    let Err(e) = SqliteStore::open(&path).await else {
        panic!("opening under a regular file must fail")
    };
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message.contains(&path.display().to_string()),
        "the message names the path: {}",
        e.message
    );
}

#[tokio::test]
async fn a_directory_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let Err(e) = SqliteStore::open(dir.path()).await else {
        panic!("opening a directory must fail")
    };
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message.contains(&dir.path().display().to_string()),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_file_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE meta SET value = '999' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);
    let Err(e) = SqliteStore::open(&path).await else {
        panic!("a newer schema must be refused")
    };
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("schema version 999"), "{}", e.message);
}

#[tokio::test]
async fn the_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tether.db");
    let _store = SqliteStore::open(&path).await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}
