//! The embedded store: one SQLite file, the default when no `--store` URL is given.
//!
//! It exists so a single Tether binary needs no database server: records, tombstones and
//! the change log live in one file next to the server. The design follows from three
//! promises the [`Store`] trait makes:
//!
//! - **Durable acknowledgements.** WAL mode with `synchronous=FULL` fsyncs the log on
//!   every commit, so a write acknowledged to a client survives `kill -9` and power loss.
//!   Group commit (many writes per [`Store::commit`]) is what keeps that affordable.
//! - **Gap-free positions in commit order.** Every commit is one `BEGIN IMMEDIATE`
//!   transaction on the single writer connection that reads and bumps `meta.head`, so
//!   positions are handed out one committer at a time and a rolled-back group gives its
//!   positions back.
//! - **Consistent reads.** WAL lets readers run beside the writer; each read runs in one
//!   read transaction on a pooled reader connection, so everything it returns (head,
//!   records, query results, replay) comes from one snapshot.
//!
//! SQLite calls block, so every call runs on tokio's blocking pool.

use crate::{ConsistentRead, ConsistentView, ReadTarget, Replay, ResourceInfo, Store, MAX_REPLAY};
use async_trait::async_trait;
use rusqlite::{
    params, params_from_iter, Connection, OpenFlags, OptionalExtension, TransactionBehavior,
};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;
use tether_core::write::Stored;
use tether_core::{
    Change, ChangeKind, Data, Epoch, Error, ErrorCode, Position, Query, Record, RecordId,
    ResourceName, Result, Write, WriteKind,
};

/// Bumped whenever the schema below changes; a file from a newer build is refused
/// rather than misread.
const SCHEMA_VERSION: u64 = 1;

/// Reader connections. Reads are short, and WAL readers never block the writer or each
/// other, so a few connections cover the two-to-eight cores Tether usually runs on.
const READERS: usize = 4;

/// How long a connection waits for a lock held by another connection (another
/// process on the same file, or a checkpoint) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)";

const CREATE_RECORDS: &str = "CREATE TABLE IF NOT EXISTS records (
    resource TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    version  INTEGER NOT NULL,
    -- NULL: a tombstone. It keeps the last version so a recreate continues from it.
    data     TEXT    NULL,
    PRIMARY KEY (resource, id)
)";

const CREATE_CHANGES: &str = "CREATE TABLE IF NOT EXISTS changes (
    pos      INTEGER PRIMARY KEY,
    resource TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    kind     TEXT    NOT NULL CHECK (kind IN ('PUT', 'PATCH', 'DELETE')),
    version  INTEGER NOT NULL,
    -- The body after the change; NULL for a delete.
    data     TEXT    NULL,
    -- The merge patch a PATCH applied; NULL otherwise.
    patch    TEXT    NULL
)";

const META_EPOCH: &str = "epoch";
const META_HEAD: &str = "head";
const META_COMPACTED: &str = "compacted_through";
const META_SCHEMA: &str = "schema_version";

const INIT_META: &str = "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)";
const GET_META: &str = "SELECT value FROM meta WHERE key = ?1";
const SET_META: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";

const GET_ROW: &str = "SELECT version, data FROM records WHERE resource = ?1 AND id = ?2";
/// `GET_ROW` for writes that replace the body: whether one exists, without copying it.
const GET_ROW_VERSION: &str =
    "SELECT version, data IS NOT NULL FROM records WHERE resource = ?1 AND id = ?2";
const PUT_ROW: &str = "INSERT INTO records (resource, id, version, data) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (resource, id) DO UPDATE SET version = excluded.version, data = excluded.data";
const INSERT_CHANGE: &str = "INSERT INTO changes (pos, resource, id, kind, version, data, patch)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const GET_LIVE: &str = "SELECT version, data FROM records
    WHERE resource = ?1 AND id = ?2 AND data IS NOT NULL";
/// Prefix of a query read; string-equality filters are appended as `json_extract` terms.
const LIVE_ROWS: &str =
    "SELECT id, version, data FROM records WHERE resource = ?1 AND data IS NOT NULL";
const CHANGES_BETWEEN: &str = "SELECT pos, resource, id, kind, version, data, patch FROM changes
    WHERE pos > ?1 AND pos <= ?2 ORDER BY pos LIMIT ?3";
const COUNT_LIVE: &str = "SELECT resource, COUNT(*) FROM records
    WHERE data IS NOT NULL GROUP BY resource ORDER BY resource";
const DELETE_CHANGES_THROUGH: &str = "DELETE FROM changes WHERE pos <= ?1";

/// The embedded SQLite store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct SqliteStore {
    epoch: Epoch,
    inner: Arc<Inner>,
}

struct Inner {
    /// Shown in every error so an operator knows which file failed.
    path: String,
    /// The only connection that writes: SQLite allows one writer at a time anyway, and
    /// owning it in-process avoids busy-waiting on the file lock.
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`, creating its directory, and
    /// brings the schema up to date.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || open_blocking(&path))
            .await
            .map_err(|e| Error::internal(format!("opening the SQLite store stopped: {e}")))?
    }

    /// Runs `f` on the writer connection on the blocking pool.
    async fn with_writer<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        self.blocking(move || f(&mut lock(&inner.writer))).await
    }

    /// Runs `f` on a reader connection on the blocking pool.
    async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        self.blocking(move || f(&mut inner.reader())).await
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let result = tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::internal(format!("a SQLite store task stopped: {e}")))?;
        result.map_err(|e| self.located(e))
    }

    /// Names the database file in a store failure, for the operator.
    fn located(&self, mut e: Error) -> Error {
        if e.code == ErrorCode::Unavailable {
            e.message = format!("SQLite store {}: {}", self.inner.path, e.message);
        }
        e
    }
}

impl Inner {
    /// A free reader if there is one, else waits for one in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        if let Some(guard) = self.free_reader() {
            return guard;
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        lock(&self.readers[i])
    }

    /// A reader no one is using right now, without waiting.
    fn free_reader(&self) -> Option<MutexGuard<'_, Connection>> {
        self.readers.iter().find_map(|conn| match conn.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        })
    }
}

/// A panic while a connection was locked unwound through its `Transaction`, which rolls
/// back on drop, so the connection is still usable.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_blocking(path: &Path) -> Result<SqliteStore> {
    let shown = path.display().to_string();
    let fail = |what: String| {
        Error::unavailable(format!("cannot open the SQLite store at {shown}: {what}"))
    };

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            fail(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    // No SQLITE_OPEN_URI: a path is always a file name, never a `file:` URI.
    let writer = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(e.to_string()))?;
    configure_writer(&writer).map_err(|e| fail(e.message))?;
    let mut writer = writer;
    let (epoch, head) = migrate(&mut writer).map_err(|e| fail(e.message))?;

    // Readers open after the writer switched the file to WAL, which is persistent.
    let readers = (0..READERS)
        .map(|_| {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| fail(format!("reader connection: {e}")))?;
            configure_reader(&conn).map_err(|e| fail(e.message))?;
            Ok(Mutex::new(conn))
        })
        .collect::<Result<Vec<_>>>()?;

    tracing::info!(path = %shown, epoch = %epoch, %head, "opened the SQLite store");
    Ok(SqliteStore {
        epoch,
        inner: Arc::new(Inner {
            path: shown,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        }),
    })
}

fn configure_writer(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .ctx("setting busy_timeout")?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .ctx("switching to WAL")?;
    // Without WAL, readers would block the writer and see no stable snapshot beside it.
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::unavailable(format!(
            "the file stays in journal mode {mode:?}; WAL is required (is it on a network file system?)"
        )));
    }
    // FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and
    // those are writes clients were told are saved.
    conn.pragma_update(None, "synchronous", "FULL")
        .ctx("setting synchronous=FULL")?;
    Ok(())
}

fn configure_reader(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .ctx("setting busy_timeout")?;
    // A reader that wrote would race the writer connection for positions.
    conn.pragma_update(None, "query_only", true)
        .ctx("setting query_only")?;
    Ok(())
}

/// Creates or upgrades the schema; safe to run on every open. Returns the epoch and head.
fn migrate(conn: &mut Connection) -> Result<(Epoch, Position)> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("starting the schema transaction")?;
    tx.execute_batch(CREATE_META).ctx("creating table meta")?;
    if let Some(found) = meta_opt(&tx, META_SCHEMA)? {
        let found = parse_u64(META_SCHEMA, &found)?;
        if found > SCHEMA_VERSION {
            return Err(Error::unavailable(format!(
                "the file has schema version {found}, newer than this build's {SCHEMA_VERSION}; \
                 upgrade Tether or use another file"
            )));
        }
    }
    tx.execute_batch(CREATE_RECORDS)
        .ctx("creating table records")?;
    tx.execute_batch(CREATE_CHANGES)
        .ctx("creating table changes")?;
    // INSERT OR IGNORE: the epoch is made once, when the file is created, and never again.
    let fresh_epoch = format!("{:016x}", rand::random::<u64>());
    for (key, value) in [
        (META_EPOCH, fresh_epoch.as_str()),
        (META_HEAD, "0"),
        (META_COMPACTED, "0"),
    ] {
        tx.execute(INIT_META, params![key, value])
            .ctx("initializing meta")?;
    }
    tx.execute(SET_META, params![META_SCHEMA, SCHEMA_VERSION.to_string()])
        .ctx("recording the schema version")?;
    let epoch = meta_opt(&tx, META_EPOCH)?.unwrap_or_default();
    if epoch.is_empty() {
        return Err(Error::unavailable("meta.epoch is empty"));
    }
    let head = meta_u64(&tx, META_HEAD)?;
    tx.commit().ctx("committing the schema")?;
    Ok((Epoch(epoch), Position(head)))
}

/// Maps SQLite failures to `Unavailable`: the store could not do its job, and nothing
/// was acknowledged.
trait SqlContext<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::unavailable(format!("{what}: {e}")))
    }
}

fn meta_opt(conn: &Connection, key: &str) -> Result<Option<String>> {
    conn.prepare_cached(GET_META)
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .ctx(&format!("reading meta.{key}"))
}

fn meta_u64(conn: &Connection, key: &str) -> Result<u64> {
    match meta_opt(conn, key)? {
        Some(value) => parse_u64(key, &value),
        None => Err(Error::unavailable(format!("meta.{key} is missing"))),
    }
}

fn set_meta_u64(conn: &Connection, key: &str, value: u64) -> Result<()> {
    conn.prepare_cached(SET_META)
        .and_then(|mut stmt| stmt.execute(params![key, value.to_string()]))
        .ctx(&format!("writing meta.{key}"))?;
    Ok(())
}

fn parse_u64(key: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| Error::unavailable(format!("meta.{key} is {value:?}, not a number")))
}

pub(crate) fn parse_data(text: &str) -> Result<Data> {
    serde_json::from_str(text)
        .map_err(|e| Error::unavailable(format!("a stored body is not a JSON object: {e}")))
}

pub(crate) fn data_text(data: &Data) -> Result<String> {
    serde_json::to_string(data)
        .map_err(|e| Error::internal(format!("cannot serialize a body: {e}")))
}

pub(crate) fn parse_resource(s: &str) -> Result<ResourceName> {
    ResourceName::parse(s)
        .map_err(|e| Error::unavailable(format!("stored resource name: {}", e.message)))
}

pub(crate) fn parse_id(s: &str) -> Result<RecordId> {
    RecordId::parse(s).map_err(|e| Error::unavailable(format!("stored record id: {}", e.message)))
}

pub(crate) fn kind_str(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Put => "PUT",
        ChangeKind::Patch => "PATCH",
        ChangeKind::Delete => "DELETE",
    }
}

pub(crate) fn parse_kind(s: &str) -> Result<ChangeKind> {
    match s {
        "PUT" => Ok(ChangeKind::Put),
        "PATCH" => Ok(ChangeKind::Patch),
        "DELETE" => Ok(ChangeKind::Delete),
        other => Err(Error::unavailable(format!(
            "stored change kind {other:?} is unknown"
        ))),
    }
}

/// Commits one group. Refused writes are outcomes, not errors; any SQL error returns
/// `Err` and the dropped transaction rolls the whole group back.
fn commit_group(conn: &mut Connection, writes: &[Write]) -> Result<Vec<Result<Change>>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("starting a commit")?;
    let start = meta_u64(&tx, META_HEAD)?;
    let mut head = start;
    let mut outcomes = Vec::with_capacity(writes.len());
    {
        let mut get = tx.prepare_cached(GET_ROW).ctx("preparing a read")?;
        let mut get_version = tx.prepare_cached(GET_ROW_VERSION).ctx("preparing a read")?;
        let mut put = tx.prepare_cached(PUT_ROW).ctx("preparing a write")?;
        let mut log = tx
            .prepare_cached(INSERT_CHANGE)
            .ctx("preparing a log append")?;
        for write in writes {
            let (resource, id) = (write.resource.as_str(), write.id.as_str());
            // Read inside the transaction, so an earlier write in this group to the same
            // id is what this one sees.
            // Only a patch reads the stored body; every other write needs to know that
            // one exists, and copying and parsing it was a measurable share of a group
            // commit.
            let stored = if write.kind == WriteKind::Patch {
                let row: Option<(u64, Option<String>)> = get
                    .query_row(params![resource, id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .ctx("reading a record")?;
                match row {
                    Some((version, data)) => Some(Stored {
                        version,
                        data: data.map(|text| parse_data(&text)).transpose()?,
                    }),
                    None => None,
                }
            } else {
                let row: Option<(u64, bool)> = get_version
                    .query_row(params![resource, id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .ctx("reading a record")?;
                row.map(|(version, live)| Stored {
                    version,
                    data: live.then(Data::new),
                })
            };
            let applied = match write.apply(stored.as_ref()) {
                Ok(applied) => applied,
                Err(refused) => {
                    outcomes.push(Err(refused));
                    continue;
                }
            };
            let position = Position(head + 1);
            let body = applied.data.as_ref().map(data_text).transpose()?;
            let patch = (applied.kind == ChangeKind::Patch).then(|| write.data.clone());
            let patch_text = patch.as_ref().map(data_text).transpose()?;
            if write.keeps_record() {
                put.execute(params![resource, id, applied.version, body])
                    .ctx("writing a record")?;
            }
            log.execute(params![
                position.0,
                resource,
                id,
                kind_str(applied.kind),
                applied.version,
                body,
                patch_text
            ])
            .ctx("appending to the change log")?;
            head = position.0;
            outcomes.push(Ok(Change::new(
                position,
                applied.kind,
                write.resource.clone(),
                write.id.clone(),
                applied.version,
                applied.data,
                patch,
            )));
        }
    }
    if head != start {
        set_meta_u64(&tx, META_HEAD, head)?;
    }
    tx.commit().ctx("committing")?;
    Ok(outcomes)
}

fn get_record(conn: &Connection, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
    let row: Option<(u64, String)> = conn
        .prepare_cached(GET_LIVE)
        .and_then(|mut stmt| {
            stmt.query_row(params![resource.as_str(), id.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .ctx("reading a record")?;
    row.map(|(version, data)| {
        Ok(Record {
            resource: resource.clone(),
            id: id.clone(),
            version,
            data: parse_data(&data)?,
        })
    })
    .transpose()
}

/// Whether a filter field can go into a `json_extract` path without quoting.
fn plain_field(field: &str) -> bool {
    let mut chars = field.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Loads the resource's live rows and lets [`Query`] filter, order and limit them, so
/// the answer is exactly what a query subscription would compute.
///
/// Performance limit: without a string-equality filter this reads every live record of
/// the resource, and ordering always happens in memory. That is fine for the resource
/// sizes the embedded store targets; larger data sets want indexes on extracted fields.
fn query_records(conn: &Connection, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
    let mut sql = String::from(LIVE_ROWS);
    let mut args = vec![resource.as_str().to_owned()];
    // A pre-filter only: `json_extract` yields the same SQL text for a JSON string as for
    // its value, so it keeps every row `Query::matches` would accept (and maybe more,
    // which the check below drops). `id` is the record's own unless the body has one,
    // so either may hold it; `version` (a number) is left to the check below.
    for (field, want) in &query.filter {
        if let (serde_json::Value::String(want), true) = (want, plain_field(field)) {
            args.push(format!("$.{field}"));
            args.push(want.clone());
            let (path, value) = (args.len() - 1, args.len());
            if field == "id" {
                sql.push_str(&format!(
                    " AND (id = ?{value} OR json_extract(data, ?{path}) = ?{value})"
                ));
            } else {
                sql.push_str(&format!(" AND json_extract(data, ?{path}) = ?{value}"));
            }
        }
    }
    let mut stmt = conn.prepare_cached(&sql).ctx("preparing a query")?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .ctx("running a query")?;
    let mut records = Vec::new();
    for row in rows {
        let (id, version, data) = row.ctx("reading a query row")?;
        let (id, data) = (parse_id(&id)?, parse_data(&data)?);
        if query.matches(&id, version, &data) {
            records.push(Record {
                resource: resource.clone(),
                id,
                version,
                data,
            });
        }
    }
    query.order_and_limit(&mut records);
    Ok(records)
}

/// Changes with `after < pos <= until`, at most `limit`, in order.
fn changes_between(conn: &Connection, after: u64, until: u64, limit: usize) -> Result<Vec<Change>> {
    type Row = (
        u64,
        String,
        String,
        String,
        u64,
        Option<String>,
        Option<String>,
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(CHANGES_BETWEEN)
        .ctx("preparing a log read")?;
    let rows = stmt
        .query_map(params![after, until, limit], |r| {
            Ok::<Row, _>((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .ctx("reading the change log")?;
    let mut changes = Vec::new();
    for row in rows {
        let (pos, resource, id, kind, version, data, patch) = row.ctx("reading a change")?;
        changes.push(Change::new(
            Position(pos),
            parse_kind(&kind)?,
            parse_resource(&resource)?,
            parse_id(&id)?,
            version,
            data.as_deref().map(parse_data).transpose()?,
            patch.as_deref().map(parse_data).transpose()?,
        ));
    }
    Ok(changes)
}

/// The replay for a consistent read at `head`. A client claiming a position beyond the
/// head holds state this log never produced (e.g. the file was restored from a backup),
/// so it is sent to resync like a compacted one.
fn replay(conn: &Connection, after: Position, head: u64) -> Result<Replay> {
    let compacted = meta_u64(conn, META_COMPACTED)?;
    if after.0 < compacted || after.0 > head || head - after.0 > MAX_REPLAY as u64 {
        return Ok(Replay::Compacted);
    }
    Ok(Replay::Changes(changes_between(
        conn, after.0, head, MAX_REPLAY,
    )?))
}

fn consistent_read(conn: &mut Connection, read: ConsistentRead) -> Result<ConsistentView> {
    // One read transaction: SQLite pins the WAL snapshot at its first read, so every
    // statement below sees the same committed state.
    let tx = conn.transaction().ctx("starting a read")?;
    let head = meta_u64(&tx, META_HEAD)?;
    let mut results = Vec::with_capacity(read.targets.len());
    for target in &read.targets {
        results.push(match target {
            ReadTarget::Record { resource, id } => {
                get_record(&tx, resource, id)?.into_iter().collect()
            }
            ReadTarget::Query { resource, query } => query_records(&tx, resource, query)?,
        });
    }
    let changes = read
        .changes_after
        .map(|after| replay(&tx, after, head))
        .transpose()?;
    tx.finish().ctx("ending a read")?;
    Ok(ConsistentView {
        head: Position(head),
        results,
        changes,
    })
}

fn changes_since(conn: &mut Connection, after: Position, limit: usize) -> Result<Replay> {
    let tx = conn.transaction().ctx("starting a log read")?;
    let compacted = meta_u64(&tx, META_COMPACTED)?;
    let replay = if after.0 < compacted {
        Replay::Compacted
    } else {
        let head = meta_u64(&tx, META_HEAD)?;
        Replay::Changes(changes_between(&tx, after.0, head, limit)?)
    };
    tx.finish().ctx("ending a log read")?;
    Ok(replay)
}

fn resources(conn: &Connection) -> Result<Vec<ResourceInfo>> {
    let mut stmt = conn
        .prepare_cached(COUNT_LIVE)
        .ctx("preparing resource counts")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))
        .ctx("counting records")?;
    let mut out = Vec::new();
    for row in rows {
        let (name, records) = row.ctx("reading a resource count")?;
        out.push(ResourceInfo {
            name: parse_resource(&name)?,
            records,
        });
    }
    Ok(out)
}

fn compact(conn: &mut Connection, through: Position) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("starting a compaction")?;
    let head = meta_u64(&tx, META_HEAD)?;
    let old = meta_u64(&tx, META_COMPACTED)?;
    // Never past the head: positions not yet handed out must stay replayable.
    let through = through.0.min(head);
    if through > old {
        tx.execute(DELETE_CHANGES_THROUGH, [through])
            .ctx("deleting old changes")?;
        set_meta_u64(&tx, META_COMPACTED, through)?;
    }
    tx.commit().ctx("committing a compaction")?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    async fn head(&self) -> Result<Position> {
        self.with_reader(|conn| meta_u64(conn, META_HEAD).map(Position))
            .await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Result<Change>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        self.with_writer(move |conn| commit_group(conn, &writes))
            .await
    }

    async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
        // A read by primary key is microseconds of SQLite on cached pages, less than the
        // two thread hand-offs of the blocking pool (bench: reqresp-get, BENCHMARKS.md),
        // so it runs right here when a reader is free. Everything that can take longer
        // (queries, snapshots, the change log) stays on the blocking pool.
        if let Some(conn) = self.inner.free_reader() {
            return get_record(&conn, resource, id).map_err(|e| self.located(e));
        }
        let (resource, id) = (resource.clone(), id.clone());
        self.with_reader(move |conn| get_record(conn, &resource, &id))
            .await
    }

    async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        let (resource, query) = (resource.clone(), query.clone());
        self.with_reader(move |conn| query_records(conn, &resource, &query))
            .await
    }

    async fn read(&self, read: ConsistentRead) -> Result<ConsistentView> {
        // A subscription to records by id reads a few rows by primary key: inline when
        // a reader is free, as `get` does. It is what every connection that watches a
        // record does first, so it sets how fast a crowd of clients can reconnect.
        let by_id = read.changes_after.is_none()
            && read
                .targets
                .iter()
                .all(|t| matches!(t, ReadTarget::Record { .. }));
        if by_id {
            if let Some(mut conn) = self.inner.free_reader() {
                return consistent_read(&mut conn, read).map_err(|e| self.located(e));
            }
        }
        self.with_reader(move |conn| consistent_read(conn, read))
            .await
    }

    async fn changes_since(&self, after: Position, limit: usize) -> Result<Replay> {
        self.with_reader(move |conn| changes_since(conn, after, limit))
            .await
    }

    async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        self.with_reader(|conn| resources(conn)).await
    }

    async fn compact(&self, through: Position) -> Result<()> {
        self.with_writer(move |conn| compact(conn, through)).await
    }
}
