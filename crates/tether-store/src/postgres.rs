//! The production store: PostgreSQL, shared by every Tether node that serves the same
//! data (`--store postgres://user@host:5432/db?schema=NAME`).
//!
//! It exists so several `tether serve` processes can hold one change log. The design
//! keeps the promises of the [`Store`] trait with many writers on many machines:
//!
//! - **Gap-free positions in commit order.** Positions come from one counter row
//!   (`tether_log.head`). A commit locks that row first (`SELECT ... FOR UPDATE`), and
//!   the lock is held until its transaction ends, so committers on every node take
//!   turns: position N+1 can only be handed out after the transaction holding N has
//!   committed (and become visible) or rolled back (and given N back). A reader that
//!   sees N+1 can therefore always see N too: nobody ever skips a position that would
//!   commit later. A sequence would not do: `nextval` is not transactional, so numbers
//!   would commit out of order and leave holes.
//! - **Few round trips per group.** A group commit reads every row it touches with one
//!   query, applies the writes in memory with [`Write::apply`] (the same semantics as
//!   SQLite), and writes records and log entries with one `unnest` insert each: six
//!   round trips whatever the group size, which keeps the time the counter row is
//!   locked short.
//! - **Consistent reads.** A read runs in one `REPEATABLE READ READ ONLY` transaction,
//!   so head, records, query results and replay come from one snapshot; readers never
//!   take the counter lock and never wait for writers.
//! - **Operable.** Tables live in one schema (`?schema=`, default `public`), are made on
//!   start under an advisory lock (so nodes starting together do not race), and are not
//!   touched again once at the current version, so a role with only
//!   `SELECT/INSERT/UPDATE/DELETE` rights can run a node on tables an administrator
//!   created. Unreachable servers and missing rights fail with one clear line.
//!
//! Bodies are stored as `jsonb`, which makes equality filters indexable (`@>` on a GIN
//! index) but cannot hold the character U+0000 in a string: such a write is refused on
//! its own with `bad_request` rather than failing the whole group.

use crate::sqlite::{data_text, kind_str, parse_data, parse_id, parse_kind, parse_resource};
use crate::{ConsistentRead, ConsistentView, ReadTarget, Replay, ResourceInfo, Store, MAX_REPLAY};
use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;
use tether_core::write::Stored;
use tether_core::{
    Change, ChangeKind, Data, Epoch, Error, ErrorCode, Position, Query, Record, RecordId,
    ResourceName, Result, Write, WriteKind,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls};

/// Bumped whenever the tables below change; a schema from a newer build is refused
/// rather than misread.
const SCHEMA_VERSION: i64 = 1;

/// Connections per node unless the URL says `pool_size=N`. Commits use one at a time
/// (the engine has one committer), so the rest serve reads and the hub.
const DEFAULT_POOL_SIZE: usize = 8;

/// How long opening a connection may take before the store reports it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call waits for a free pooled connection before failing as unavailable.
const POOL_WAIT: Duration = Duration::from_secs(30);

const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS tether_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
)";

/// The counter row. One row only; every commit locks it.
const CREATE_LOG_STATE: &str = "CREATE TABLE IF NOT EXISTS tether_log (
    id                smallint PRIMARY KEY CHECK (id = 1),
    head              bigint   NOT NULL,
    compacted_through bigint   NOT NULL
)";

const CREATE_RECORDS: &str = "CREATE TABLE IF NOT EXISTS tether_records (
    resource text   NOT NULL,
    id       text   NOT NULL,
    version  bigint NOT NULL,
    -- NULL: a tombstone. It keeps the last version so a recreate continues from it.
    data     jsonb  NULL,
    PRIMARY KEY (resource, id)
)";

/// Serves the `@>` pre-filter of equality queries.
const CREATE_RECORDS_INDEX: &str = "CREATE INDEX IF NOT EXISTS tether_records_data
    ON tether_records USING gin (data jsonb_path_ops)";

const CREATE_CHANGES: &str = "CREATE TABLE IF NOT EXISTS tether_changes (
    pos      bigint PRIMARY KEY,
    resource text   NOT NULL,
    id       text   NOT NULL,
    kind     text   NOT NULL CHECK (kind IN ('PUT', 'PATCH', 'DELETE')),
    version  bigint NOT NULL,
    -- The body after the change; NULL for a delete.
    data     jsonb  NULL,
    -- The merge patch a PATCH applied; NULL otherwise.
    patch    jsonb  NULL
)";

const META_EPOCH: &str = "epoch";
const META_SCHEMA: &str = "schema_version";

const TABLES_EXIST: &str = "SELECT to_regclass('tether_meta') IS NOT NULL";
const SCHEMA_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)";
/// Serializes migrations of one schema across nodes starting at the same time.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('tether.migrate.' || $1))";
const GET_META: &str = "SELECT value FROM tether_meta WHERE key = $1";
const INIT_META: &str = "INSERT INTO tether_meta (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO NOTHING";
const SET_META: &str = "INSERT INTO tether_meta (key, value) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const INIT_LOG: &str = "INSERT INTO tether_log (id, head, compacted_through) VALUES (1, 0, 0)
    ON CONFLICT (id) DO NOTHING";

const GET_HEAD: &str = "SELECT head FROM tether_log WHERE id = 1";
const GET_LOG_STATE: &str = "SELECT head, compacted_through FROM tether_log WHERE id = 1";
/// Taken first in every commit: the row lock is what orders committers.
const LOCK_HEAD: &str = "SELECT head FROM tether_log WHERE id = 1 FOR UPDATE";
const LOCK_LOG_STATE: &str =
    "SELECT head, compacted_through FROM tether_log WHERE id = 1 FOR UPDATE";
const SET_HEAD: &str = "UPDATE tether_log SET head = $1 WHERE id = 1";
const SET_COMPACTED: &str = "UPDATE tether_log SET compacted_through = $1 WHERE id = 1";

const GET_ROWS: &str = "SELECT r.resource, r.id, r.version, r.data::text
    FROM tether_records r
    JOIN unnest($1::text[], $2::text[]) AS k(resource, id)
      ON r.resource = k.resource AND r.id = k.id";
const PUT_ROWS: &str = "INSERT INTO tether_records (resource, id, version, data)
    SELECT r, i, v, d::jsonb FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[]) AS t(r, i, v, d)
    ON CONFLICT (resource, id) DO UPDATE SET version = excluded.version, data = excluded.data";
const INSERT_CHANGES: &str =
    "INSERT INTO tether_changes (pos, resource, id, kind, version, data, patch)
    SELECT p, r, i, k, v, d::jsonb, x::jsonb
    FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::text[])
      AS t(p, r, i, k, v, d, x)";

const GET_LIVE: &str = "SELECT version, data::text FROM tether_records
    WHERE resource = $1 AND id = $2 AND data IS NOT NULL";
const LIVE_ROWS: &str = "SELECT id, version, data::text FROM tether_records
    WHERE resource = $1 AND data IS NOT NULL";
/// The unfiltered, unordered read (`all`): ordered and limited by the database.
const LIVE_ROWS_BY_ID: &str = "SELECT id, version, data::text FROM tether_records
    WHERE resource = $1 AND data IS NOT NULL ORDER BY id COLLATE \"C\" LIMIT $2";
const CHANGES_BETWEEN: &str =
    "SELECT pos, resource, id, kind, version, data::text, patch::text FROM tether_changes
    WHERE pos > $1 AND pos <= $2 ORDER BY pos LIMIT $3";
const COUNT_LIVE: &str = "SELECT resource, count(*) FROM tether_records
    WHERE data IS NOT NULL GROUP BY resource ORDER BY resource COLLATE \"C\"";
const DELETE_CHANGES_THROUGH: &str = "DELETE FROM tether_changes WHERE pos <= $1";

/// The PostgreSQL store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct PostgresStore {
    epoch: Epoch,
    pool: Pool,
    /// `postgres://user@host:port/db (schema s)`, without the password; shown in every
    /// error so an operator knows which database failed.
    shown: String,
}

/// What a `postgres://` URL asks for, once Tether's own parameters are taken out.
#[derive(Debug, Clone)]
pub struct PostgresUrl {
    pub config: tokio_postgres::Config,
    pub schema: String,
    pub pool_size: usize,
}

impl PostgresUrl {
    /// Parses `postgres://` or `postgresql://` URLs. Tether's parameters are `schema`
    /// (default `public`) and `pool_size`; every other parameter goes to the driver
    /// (`connect_timeout`, `application_name`, ...). TLS is not in this build, so
    /// `sslmode=require` fails at connect time.
    pub fn parse(url: &str) -> Result<PostgresUrl> {
        let bad = |what: String| Error::bad_request(format!("--store {}: {what}", redact(url)));
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("expected postgres://...".into()));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut schema = String::from("public");
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", value)) => schema = value.to_owned(),
                Some(("pool_size", value)) => {
                    pool_size = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad(format!("pool_size={value} is not 1-1000")))?;
                }
                _ => rest.push(pair),
            }
        }
        if !valid_schema(&schema) {
            return Err(bad(format!(
                "schema={schema:?} must be 1-63 lowercase letters, digits or '_', starting with a letter or '_'"
            )));
        }
        let driver_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&driver_url)
            .map_err(|e| bad(format!("not a valid PostgreSQL URL: {}", describe(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("tether");
        }
        // Every table name below is unqualified: the schema comes from the search path,
        // set on the connection so pooled connections can never drift.
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c search_path={schema}"),
            _ => format!("-c search_path={schema}"),
        };
        config.options(&options);
        Ok(PostgresUrl {
            config,
            schema,
            pool_size,
        })
    }

    /// Where this URL points, without the password.
    pub fn shown(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let user = self.config.get_user().unwrap_or("");
        let db = self.config.get_dbname().unwrap_or(user);
        format!(
            "postgres://{user}@{host}:{port}/{db} (schema {})",
            self.schema
        )
    }
}

/// Lowercase only: an unquoted identifier is folded to lowercase by PostgreSQL, and
/// this one is used unquoted in `search_path`.
fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The URL with any password replaced, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                url.to_owned()
            }
        }
        None => url.to_owned(),
    }
}

/// One line describing a driver error: the server's message and SQLSTATE for database
/// errors, the cause chain otherwise.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(hint) = db.hint() {
            s.push_str(&format!("; hint: {hint}"));
        }
        return s.replace('\n', " ");
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s.replace('\n', " ")
}

/// Maps driver failures to `Unavailable` (nothing was acknowledged), naming what was
/// being done and, for missing rights, saying so plainly.
trait PgContext<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> PgContext<T> for std::result::Result<T, tokio_postgres::Error> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::unavailable(format!("{what}: {}", explain(&e))))
    }
}

fn explain(e: &tokio_postgres::Error) -> String {
    match e.code() {
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => format!(
            "the database user lacks the rights Tether needs ({}); grant CREATE on the \
             schema for the first start, then SELECT, INSERT, UPDATE, DELETE on its tether_* tables",
            describe(e)
        ),
        _ => describe(e),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> String {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => match e.code() {
            Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
                format!("the database does not exist ({})", describe(&e))
            }
            Some(c)
                if *c == SqlState::INVALID_PASSWORD
                    || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                format!("the server refused the login ({})", describe(&e))
            }
            _ => format!("cannot connect: {}", describe(&e)),
        },
        PoolError::Timeout(_) => "no connection became free or could be made in time".into(),
        other => other.to_string(),
    }
}

impl PostgresStore {
    /// Connects, creates or checks the tables, and returns the store. Fails with one
    /// line naming the server when it cannot be reached or the user lacks rights.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        let parsed = PostgresUrl::parse(url)?;
        let shown = parsed.shown();
        let fail = |what: String| {
            Error::unavailable(format!(
                "cannot open the PostgreSQL store at {shown}: {what}"
            ))
        };
        let manager = Manager::from_config(
            parsed.config.clone(),
            NoTls,
            ManagerConfig {
                // Fast: a pooled connection is reused unless it is closed. A dead server
                // shows up as an error on the next statement, which the caller reports;
                // the broken connection is then dropped and a new one made.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(parsed.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT + Duration::from_secs(1)))
            .build()
            .map_err(|e| fail(format!("cannot build the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| fail(pool_error(e)))?;
        let (epoch, head) = migrate(&mut client, &parsed.schema)
            .await
            .map_err(|e| fail(e.message))?;
        drop(client);
        tracing::info!(store = %shown, %epoch, %head, "opened the PostgreSQL store");
        Ok(PostgresStore { epoch, pool, shown })
    }

    /// Where the store lives, without the password.
    pub fn location(&self) -> &str {
        &self.shown
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            Error::unavailable(format!(
                "PostgreSQL store {}: {}",
                self.shown,
                pool_error(e)
            ))
        })
    }

    /// Names the database in an unavailability error.
    fn located(&self, mut e: Error) -> Error {
        if e.code == ErrorCode::Unavailable {
            e.message = format!("PostgreSQL store {}: {}", self.shown, e.message);
        }
        e
    }
}

/// Creates or upgrades the tables; a no-op (and no DDL rights needed) when they are
/// already at this build's version. Returns the epoch and head.
async fn migrate(
    client: &mut deadpool_postgres::Object,
    schema: &str,
) -> Result<(Epoch, Position)> {
    let exists: bool = client
        .query_one(TABLES_EXIST, &[])
        .await
        .ctx("looking for the tables")?
        .get(0);
    if exists {
        let found = schema_version(client).await?;
        if found > SCHEMA_VERSION {
            return Err(newer_schema(found));
        }
        if found == SCHEMA_VERSION {
            return epoch_and_head(client).await;
        }
    }
    let tx = client
        .transaction()
        .await
        .ctx("starting the schema transaction")?;
    tx.execute(MIGRATION_LOCK, &[&schema])
        .await
        .ctx("waiting for the migration lock")?;
    let schema_exists: bool = tx
        .query_one(SCHEMA_EXISTS, &[&schema])
        .await
        .ctx("looking for the schema")?
        .get(0);
    if !schema_exists {
        // The name was validated as a plain lowercase identifier.
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .ctx(&format!("creating schema {schema}"))?;
    }
    tx.batch_execute(CREATE_META)
        .await
        .ctx("creating table tether_meta")?;
    if let Some(found) = meta_opt(&tx, META_SCHEMA).await? {
        let found = parse_i64(META_SCHEMA, &found)?;
        if found > SCHEMA_VERSION {
            return Err(newer_schema(found));
        }
    }
    for (sql, what) in [
        (CREATE_LOG_STATE, "creating table tether_log"),
        (CREATE_RECORDS, "creating table tether_records"),
        (CREATE_RECORDS_INDEX, "creating index tether_records_data"),
        (CREATE_CHANGES, "creating table tether_changes"),
    ] {
        tx.batch_execute(sql).await.ctx(what)?;
    }
    // ON CONFLICT DO NOTHING: the epoch is made once, when the schema is created.
    let fresh_epoch = format!("{:016x}", rand::random::<u64>());
    tx.execute(INIT_META, &[&META_EPOCH, &fresh_epoch])
        .await
        .ctx("initializing tether_meta")?;
    tx.execute(INIT_LOG, &[])
        .await
        .ctx("initializing tether_log")?;
    tx.execute(SET_META, &[&META_SCHEMA, &SCHEMA_VERSION.to_string()])
        .await
        .ctx("recording the schema version")?;
    tx.commit().await.ctx("committing the schema")?;
    epoch_and_head(client).await
}

fn newer_schema(found: i64) -> Error {
    Error::unavailable(format!(
        "the tables have schema version {found}, newer than this build's {SCHEMA_VERSION}; \
         upgrade Tether or use another schema"
    ))
}

async fn schema_version<C: GenericClient>(client: &C) -> Result<i64> {
    match meta_opt(client, META_SCHEMA).await? {
        Some(v) => parse_i64(META_SCHEMA, &v),
        None => Ok(0),
    }
}

async fn epoch_and_head<C: GenericClient>(client: &C) -> Result<(Epoch, Position)> {
    let epoch = meta_opt(client, META_EPOCH).await?.unwrap_or_default();
    if epoch.is_empty() {
        return Err(Error::unavailable("tether_meta.epoch is missing"));
    }
    let head: i64 = client
        .query_one(GET_HEAD, &[])
        .await
        .ctx("reading the log head")?
        .get(0);
    Ok((Epoch(epoch), Position(to_u64(head))))
}

async fn meta_opt<C: GenericClient>(client: &C, key: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt(GET_META, &[&key])
        .await
        .ctx(&format!("reading tether_meta.{key}"))?
        .map(|row| row.get(0)))
}

fn parse_i64(key: &str, value: &str) -> Result<i64> {
    value
        .parse()
        .map_err(|_| Error::unavailable(format!("tether_meta.{key} is {value:?}, not a number")))
}

/// Positions and versions are `bigint`; they never go negative.
fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::internal(format!("{n} does not fit a bigint")))
}

/// Whether a JSON value holds U+0000 in a string or key, which `jsonb` cannot store.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn data_has_nul(data: &Data) -> bool {
    data.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
}

type Key = (ResourceName, RecordId);

/// The columns of the records and log entries a group writes, as arrays for `unnest`.
#[derive(Default)]
struct Columns {
    resources: Vec<String>,
    ids: Vec<String>,
    versions: Vec<i64>,
    data: Vec<Option<String>>,
}

/// Commits one group. Refused writes are outcomes, not errors; any SQL error returns
/// `Err` and the dropped transaction rolls the whole group back.
async fn commit_group(
    client: &mut deadpool_postgres::Object,
    writes: &[Write],
) -> Result<Vec<Result<Change>>> {
    let tx = client.transaction().await.ctx("starting a commit")?;
    let stmt = tx
        .prepare_cached(LOCK_HEAD)
        .await
        .ctx("preparing the head lock")?;
    let start: i64 = tx
        .query_one(&stmt, &[])
        .await
        .ctx("locking the log head")?
        .get(0);
    let start = to_u64(start);

    // Every row the group touches, read after the lock, so no other committer can
    // change them until this transaction ends.
    let mut keys: Vec<&Write> = Vec::new();
    let mut seen = HashSet::new();
    for w in writes {
        if seen.insert((w.resource.as_str(), w.id.as_str())) {
            keys.push(w);
        }
    }
    let resources: Vec<&str> = keys.iter().map(|w| w.resource.as_str()).collect();
    let ids: Vec<&str> = keys.iter().map(|w| w.id.as_str()).collect();
    let stmt = tx.prepare_cached(GET_ROWS).await.ctx("preparing a read")?;
    let mut rows: HashMap<Key, Stored> = HashMap::new();
    for row in tx
        .query(&stmt, &[&resources, &ids])
        .await
        .ctx("reading records")?
    {
        let data: Option<String> = row.get(3);
        rows.insert(
            (parse_resource(row.get(0))?, parse_id(row.get(1))?),
            Stored {
                version: to_u64(row.get(2)),
                data: data.as_deref().map(parse_data).transpose()?,
            },
        );
    }

    let mut head = start;
    let mut outcomes = Vec::with_capacity(writes.len());
    let mut log = Columns::default();
    let mut kinds = Vec::new();
    let mut positions = Vec::new();
    let mut patches = Vec::new();
    // Touched records in first-touch order, each once.
    let mut dirty: Vec<Key> = Vec::new();
    let mut dirty_set: HashSet<Key> = HashSet::new();
    for write in writes {
        if write.kind != WriteKind::Delete && data_has_nul(&write.data) {
            outcomes.push(Err(Error::bad_request(format!(
                "{}/{}: the PostgreSQL store cannot hold the character U+0000 in a string",
                write.resource, write.id
            ))));
            continue;
        }
        let key = (write.resource.clone(), write.id.clone());
        // An earlier write in this group to the same id is what this one sees.
        let applied = match write.apply(rows.get(&key)) {
            Ok(applied) => applied,
            Err(refused) => {
                outcomes.push(Err(refused));
                continue;
            }
        };
        let position = Position(head + 1);
        let body = applied.data.as_ref().map(data_text).transpose()?;
        let patch = (applied.kind == ChangeKind::Patch).then(|| write.data.clone());
        positions.push(to_i64(position.0)?);
        log.resources.push(write.resource.as_str().to_owned());
        log.ids.push(write.id.as_str().to_owned());
        kinds.push(kind_str(applied.kind));
        log.versions.push(to_i64(applied.version)?);
        log.data.push(body);
        patches.push(patch.as_ref().map(data_text).transpose()?);
        if write.keeps_record() {
            if dirty_set.insert(key.clone()) {
                dirty.push(key.clone());
            }
            rows.insert(
                key,
                Stored {
                    version: applied.version,
                    data: applied.data.clone(),
                },
            );
        }
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

    if head != start {
        // Each touched record once, in its final state: one statement may not update
        // the same row twice.
        let mut records = Columns::default();
        for key in &dirty {
            let Some(stored) = rows.get(key) else {
                continue;
            };
            records.resources.push(key.0.as_str().to_owned());
            records.ids.push(key.1.as_str().to_owned());
            records.versions.push(to_i64(stored.version)?);
            records
                .data
                .push(stored.data.as_ref().map(data_text).transpose()?);
        }
        let stmt = tx.prepare_cached(PUT_ROWS).await.ctx("preparing a write")?;
        tx.execute(
            &stmt,
            &[
                &records.resources,
                &records.ids,
                &records.versions,
                &records.data,
            ],
        )
        .await
        .ctx("writing records")?;
        let stmt = tx
            .prepare_cached(INSERT_CHANGES)
            .await
            .ctx("preparing a log append")?;
        tx.execute(
            &stmt,
            &[
                &positions,
                &log.resources,
                &log.ids,
                &kinds,
                &log.versions,
                &log.data,
                &patches,
            ],
        )
        .await
        .ctx("appending to the change log")?;
        let stmt = tx
            .prepare_cached(SET_HEAD)
            .await
            .ctx("preparing the head update")?;
        tx.execute(&stmt, &[&to_i64(head)?])
            .await
            .ctx("moving the log head")?;
    }
    // A failure here may come after the server committed (the connection died while
    // the answer was on its way): say so, as the writes may in fact be in the log.
    tx.commit().await.map_err(|e| {
        Error::unavailable(format!(
            "committing (the outcome is unknown if the connection failed: read before retrying): {}",
            explain(&e)
        ))
    })?;
    Ok(outcomes)
}

async fn get_record<C: GenericClient>(
    client: &C,
    resource: &ResourceName,
    id: &RecordId,
) -> Result<Option<Record>> {
    let stmt = client
        .prepare_cached(GET_LIVE)
        .await
        .ctx("preparing a read")?;
    let row = client
        .query_opt(&stmt, &[&resource.as_str(), &id.as_str()])
        .await
        .ctx("reading a record")?;
    row.map(|row| {
        Ok(Record {
            resource: resource.clone(),
            id: id.clone(),
            version: to_u64(row.get(0)),
            data: parse_data(row.get(1))?,
        })
    })
    .transpose()
}

/// Loads the candidate rows and lets [`Query`] filter, order and limit them, so the
/// answer is exactly what a query subscription would compute. Non-null filter values
/// go into a `jsonb @>` pre-filter (GIN-indexed): containment keeps every row JSON
/// equality keeps (and perhaps a few more, e.g. `1.0` for `1`, dropped below).
/// Ordering happens in memory, so an ordered query reads every candidate row.
///
/// `id` and `version` name the record's own unless the body has such a field, so they
/// stay out of the containment (it would drop every record whose body lacks them): a
/// string `id` is pre-filtered against the id column or a body that has an `id`, and
/// `version` is left to the check.
async fn query_records<C: GenericClient>(
    client: &C,
    resource: &ResourceName,
    query: &Query,
) -> Result<Vec<Record>> {
    let mut containing = Data::new();
    let mut id = None;
    for (field, want) in &query.filter {
        match (field.as_str(), want) {
            ("id", Value::String(want)) if !want.contains('\0') => id = Some(want),
            ("id" | "version", _) => {}
            _ if !want.is_null() && !field.contains('\0') && !has_nul(want) => {
                containing.insert(field.clone(), want.clone());
            }
            _ => {}
        }
    }
    let rows = if query.filter.is_empty() && query.order.is_none() {
        let limit = query
            .limit
            .unwrap_or(tether_core::query::MAX_LIMIT)
            .min(tether_core::query::MAX_LIMIT);
        let stmt = client
            .prepare_cached(LIVE_ROWS_BY_ID)
            .await
            .ctx("preparing a query")?;
        client
            .query(&stmt, &[&resource.as_str(), &(limit as i64)])
            .await
    } else {
        let name = resource.as_str();
        let contained = if containing.is_empty() {
            None
        } else {
            Some(data_text(&containing)?)
        };
        let mut sql = String::from(LIVE_ROWS);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&name];
        if let Some(contained) = &contained {
            params.push(contained);
            sql.push_str(&format!(" AND data @> ${}::text::jsonb", params.len()));
        }
        if let Some(id) = &id {
            params.push(id);
            sql.push_str(&format!(" AND (id = ${} OR data ? 'id')", params.len()));
        }
        let stmt = client.prepare_cached(&sql).await.ctx("preparing a query")?;
        client.query(&stmt, &params).await
    }
    .ctx("running a query")?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let (id, version) = (parse_id(row.get(0))?, to_u64(row.get(1)));
        let data = parse_data(row.get(2))?;
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
async fn changes_between<C: GenericClient>(
    client: &C,
    after: u64,
    until: u64,
    limit: usize,
) -> Result<Vec<Change>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt = client
        .prepare_cached(CHANGES_BETWEEN)
        .await
        .ctx("preparing a log read")?;
    let rows = client
        .query(&stmt, &[&to_i64(after)?, &to_i64(until)?, &limit])
        .await
        .ctx("reading the change log")?;
    let mut changes = Vec::with_capacity(rows.len());
    for row in rows {
        let data: Option<&str> = row.get(5);
        let patch: Option<&str> = row.get(6);
        changes.push(Change::new(
            Position(to_u64(row.get(0))),
            parse_kind(row.get(3))?,
            parse_resource(row.get(1))?,
            parse_id(row.get(2))?,
            to_u64(row.get(4)),
            data.map(parse_data).transpose()?,
            patch.map(parse_data).transpose()?,
        ));
    }
    Ok(changes)
}

/// Head and compaction point, as one snapshot sees them.
async fn log_state<C: GenericClient>(client: &C) -> Result<(u64, u64)> {
    let stmt = client
        .prepare_cached(GET_LOG_STATE)
        .await
        .ctx("preparing a log-state read")?;
    let row = client
        .query_one(&stmt, &[])
        .await
        .ctx("reading the log state")?;
    Ok((to_u64(row.get(0)), to_u64(row.get(1))))
}

async fn read_only(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>> {
    // REPEATABLE READ: the snapshot is taken at the first statement and kept, so every
    // statement of the read agrees with the head it read.
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .ctx("starting a read")
}

#[async_trait]
impl Store for PostgresStore {
    fn epoch(&self) -> &Epoch {
        &self.epoch
    }

    async fn head(&self) -> Result<Position> {
        let client = self.client().await?;
        let head: i64 = client
            .query_one(GET_HEAD, &[])
            .await
            .ctx("reading the log head")
            .map_err(|e| self.located(e))?
            .get(0);
        Ok(Position(to_u64(head)))
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Result<Change>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        commit_group(&mut client, &writes)
            .await
            .map_err(|e| self.located(e))
    }

    async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
        let client = self.client().await?;
        get_record(&client, resource, id)
            .await
            .map_err(|e| self.located(e))
    }

    async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        let client = self.client().await?;
        query_records(&client, resource, query)
            .await
            .map_err(|e| self.located(e))
    }

    async fn read(&self, read: ConsistentRead) -> Result<ConsistentView> {
        let mut client = self.client().await?;
        let run = async {
            let tx = read_only(&mut client).await?;
            let (head, compacted) = log_state(&tx).await?;
            let mut results = Vec::with_capacity(read.targets.len());
            for target in &read.targets {
                results.push(match target {
                    ReadTarget::Record { resource, id } => {
                        get_record(&tx, resource, id).await?.into_iter().collect()
                    }
                    ReadTarget::Query { resource, query } => {
                        query_records(&tx, resource, query).await?
                    }
                });
            }
            let changes = match read.changes_after {
                None => None,
                // A position beyond the head holds state this log never produced (a
                // restored backup), so it resyncs like a compacted one.
                Some(after)
                    if after.0 < compacted
                        || after.0 > head
                        || head - after.0 > MAX_REPLAY as u64 =>
                {
                    Some(Replay::Compacted)
                }
                Some(after) => Some(Replay::Changes(
                    changes_between(&tx, after.0, head, MAX_REPLAY).await?,
                )),
            };
            tx.commit().await.ctx("ending a read")?;
            Ok(ConsistentView {
                head: Position(head),
                results,
                changes,
            })
        };
        run.await.map_err(|e| self.located(e))
    }

    async fn changes_since(&self, after: Position, limit: usize) -> Result<Replay> {
        let mut client = self.client().await?;
        let run = async {
            let tx = read_only(&mut client).await?;
            let (head, compacted) = log_state(&tx).await?;
            let replay = if after.0 < compacted {
                Replay::Compacted
            } else {
                Replay::Changes(changes_between(&tx, after.0, head, limit).await?)
            };
            tx.commit().await.ctx("ending a log read")?;
            Ok(replay)
        };
        run.await.map_err(|e| self.located(e))
    }

    async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        let client = self.client().await?;
        let rows = client
            .query(COUNT_LIVE, &[])
            .await
            .ctx("counting records")
            .map_err(|e| self.located(e))?;
        rows.iter()
            .map(|row| {
                Ok(ResourceInfo {
                    name: parse_resource(row.get(0))?,
                    records: to_u64(row.get(1)),
                })
            })
            .collect()
    }

    async fn compact(&self, through: Position) -> Result<()> {
        let mut client = self.client().await?;
        let run = async {
            // Move the compaction point under the counter lock (briefly), then delete
            // outside it, so commits never wait for a large delete. A read sees either
            // the old point with every old change, or the new point.
            let tx = client.transaction().await.ctx("starting a compaction")?;
            let row = tx
                .query_one(LOCK_LOG_STATE, &[])
                .await
                .ctx("locking the log state")?;
            let (head, old) = (to_u64(row.get(0)), to_u64(row.get(1)));
            // Never past the head: positions not yet handed out must stay replayable.
            let through = through.0.min(head);
            if through <= old {
                tx.commit().await.ctx("ending a compaction")?;
                return Ok(());
            }
            tx.execute(SET_COMPACTED, &[&to_i64(through)?])
                .await
                .ctx("moving the compaction point")?;
            tx.commit().await.ctx("committing a compaction")?;
            client
                .execute(DELETE_CHANGES_THROUGH, &[&to_i64(through)?])
                .await
                .ctx("deleting old changes")?;
            Ok(())
        };
        run.await.map_err(|e| self.located(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters() {
        let u = PostgresUrl::parse(
            "postgres://tether:secret@db.example:6543/app?schema=tenant_1&pool_size=3&connect_timeout=2",
        )
        .unwrap();
        assert_eq!(u.schema, "tenant_1");
        assert_eq!(u.pool_size, 3);
        assert_eq!(
            u.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
        assert_eq!(u.config.get_options(), Some("-c search_path=tenant_1"));
        assert_eq!(
            u.shown(),
            "postgres://tether@db.example:6543/app (schema tenant_1)"
        );
        let d = PostgresUrl::parse("postgresql://postgres@127.0.0.1/test").unwrap();
        assert_eq!(d.schema, "public");
        assert_eq!(d.pool_size, DEFAULT_POOL_SIZE);
        assert_eq!(d.config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    }

    #[test]
    fn bad_urls_are_one_clear_line_without_the_password() {
        for url in [
            "postgres://u:hunter2@h/db?schema=Bad-Name",
            "postgres://u:hunter2@h/db?pool_size=0",
            "postgres://u:hunter2@h/db?bogus_option=1",
        ] {
            let e = PostgresUrl::parse(url).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{url}");
            assert!(!e.message.contains("hunter2"), "{}", e.message);
            assert!(e.message.contains("***"), "{}", e.message);
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
    }

    #[test]
    fn schema_names() {
        assert!(valid_schema("public"));
        assert!(valid_schema("_t1"));
        assert!(!valid_schema("1t"));
        assert!(!valid_schema("T"));
        assert!(!valid_schema("a;drop"));
        assert!(!valid_schema(&"a".repeat(64)));
    }

    #[test]
    fn nul_detection() {
        let v: Value = serde_json::json!({"a": [1, {"b": "x\u{0}y"}]});
        assert!(has_nul(&v));
        assert!(!has_nul(&serde_json::json!({"a": "\\u0000"})));
    }
}
