//! The PostgreSQL store against the shared conformance suite, on a real server, plus
//! what only a shared database has: several stores (nodes) committing to one log,
//! readers that never skip a position, reopening, and clear errors.
//!
//! Needs `TETHER_TEST_POSTGRES` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it every test prints a notice and passes without running. Each test works in its own
//! schema (`tt_<time>_<pid>_<n>`), dropped when the test's store is dropped, so runs never
//! collide; schemas left by a killed run are dropped by a later run after an hour.

use async_trait::async_trait;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tether_core::{
    Change, Epoch, ErrorCode, Position, Query, Record, RecordId, ResourceName, Result, Write,
    WriteKind,
};
use tether_store::{ConsistentRead, ConsistentView, PostgresStore, Replay, ResourceInfo, Store};

const ENV: &str = "TETHER_TEST_POSTGRES";

/// The server URL, or `None` after a notice when the variable is unset.
fn server() -> Option<String> {
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("{ENV} is not set: skipping the PostgreSQL store tests");
            None
        }
    }
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A schema name no other test or run uses.
fn fresh_schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "tt_{secs}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs one SQL batch on the test server from a fresh thread and runtime, so it works
/// from `Drop` and from any test flavour.
fn admin(url: &str, sql: String) -> std::result::Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(conn);
            let out = client.batch_execute(&sql).await.map_err(|e| e.to_string());
            drop(client);
            let _ = task.await;
            out
        })
    })
    .join()
    .map_err(|_| "admin thread panicked".to_owned())?
}

/// Drops test schemas older than an hour (left by killed runs), once per process.
fn sweep_stale(url: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let sql = "DO $$ DECLARE s text; BEGIN
            FOR s IN SELECT nspname FROM pg_namespace
                WHERE nspname ~ '^tt_[0-9]+_[0-9]+_[0-9]+$'
                  AND split_part(nspname, '_', 2)::bigint < extract(epoch FROM now()) - 3600
            LOOP EXECUTE format('DROP SCHEMA %I CASCADE', s); END LOOP; END $$";
        if let Err(e) = admin(url, sql.to_owned()) {
            eprintln!("could not sweep stale test schemas: {e}");
        }
    });
}

/// A store in its own schema, dropped with the last handle.
struct InSchema {
    store: PostgresStore,
    server: String,
    schema: String,
}

impl Drop for InSchema {
    fn drop(&mut self) {
        if let Err(e) = admin(
            &self.server,
            format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
        ) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

#[async_trait]
impl Store for InSchema {
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

/// A fresh store in a new schema, and the URL that opens it again (as another node).
async fn fresh_in_schema() -> Option<(Arc<InSchema>, String)> {
    let server = server()?;
    sweep_stale(&server);
    let schema = fresh_schema();
    let url = with_param(&server, &format!("schema={schema}"));
    let store = PostgresStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("open a fresh store at {url}: {e}"));
    Some((
        Arc::new(InSchema {
            store,
            server,
            schema,
        }),
        url,
    ))
}

async fn fresh() -> Option<Arc<dyn Store>> {
    let (store, _) = fresh_in_schema().await?;
    Some(store)
}

tether_store::conformance_tests!(optional fresh());

fn write(kind: WriteKind, resource: &str, id: &str, data: serde_json::Value) -> Write {
    let serde_json::Value::Object(data) = data else {
        panic!("body must be an object")
    };
    Write::new(
        kind,
        ResourceName::parse(resource).unwrap(),
        RecordId::parse(id).unwrap(),
        data,
        None,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_records_head_and_epoch() {
    let Some((first, url)) = fresh_in_schema().await else {
        return;
    };
    let outcomes = first
        .commit(vec![
            write(WriteKind::Create, "todos", "a", json!({"n": 1})),
            write(WriteKind::Create, "todos", "b", json!({"n": 2})),
        ])
        .await
        .unwrap();
    assert!(outcomes.iter().all(|o| o.is_ok()));
    first.compact(Position(1)).await.unwrap();

    let again = PostgresStore::open(&url).await.unwrap();
    assert_eq!(again.epoch(), first.epoch());
    assert_eq!(again.head().await.unwrap(), Position(2));
    assert_eq!(
        again.changes_since(Position(0), 10).await.unwrap(),
        Replay::Compacted,
        "compaction survives a reopen"
    );
    let next = again
        .commit(vec![write(WriteKind::Create, "todos", "c", json!({}))])
        .await
        .unwrap();
    assert_eq!(next[0].as_ref().unwrap().position, Position(3));
}

/// Two stores on one schema are two nodes: their commits interleave on one log, and a
/// reader polling the log (as every node's hub does) never sees a position before all
/// lower ones are visible: each read continues exactly where the last one ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_gap_free_log_and_readers_never_skip() {
    const PER_WRITER: usize = 150;
    let Some((one, url)) = fresh_in_schema().await else {
        return;
    };
    let two: Arc<dyn Store> = Arc::new(PostgresStore::open(&url).await.unwrap());
    assert_eq!(one.epoch(), two.epoch(), "one log, one epoch");
    let nodes: Vec<Arc<dyn Store>> = vec![one.clone(), two.clone(), one.clone(), two.clone()];
    let writers: Vec<_> = nodes
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while i < PER_WRITER {
                    // Groups of 1-3 writes, one of them to a record all writers share.
                    let n = 1 + (i % 3).min(PER_WRITER - i - 1);
                    let group = (i..i + n)
                        .map(|k| {
                            if k.is_multiple_of(4) {
                                write(WriteKind::Upsert, "shared", "x", json!({"w": w, "k": k}))
                            } else {
                                write(
                                    WriteKind::Create,
                                    "items",
                                    &format!("w{w}-{k}"),
                                    json!({"w": w}),
                                )
                            }
                        })
                        .collect();
                    for outcome in store.commit(group).await.expect("commit") {
                        acked.push(outcome.expect("accepted"));
                    }
                    i += n;
                }
                acked
            })
        })
        .collect();
    let total = (4 * PER_WRITER) as u64;
    let reader = {
        let store = two.clone();
        tokio::spawn(async move {
            let mut seen: Vec<Change> = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while (seen.len() as u64) < total {
                assert!(tokio::time::Instant::now() < deadline, "reader timed out");
                let after = seen.last().map(|c| c.position).unwrap_or(Position::ZERO);
                let Replay::Changes(batch) = store.changes_since(after, 37).await.unwrap() else {
                    panic!("nothing was compacted")
                };
                for change in batch {
                    let want = seen.len() as u64 + 1;
                    assert_eq!(change.position.0, want, "the reader skipped a position");
                    seen.push(change);
                }
                tokio::task::yield_now().await;
            }
            seen
        })
    };
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    acked.sort_by_key(|c| c.position);
    let positions: Vec<u64> = acked.iter().map(|c| c.position.0).collect();
    assert_eq!(
        positions,
        (1..=total).collect::<Vec<_>>(),
        "gap-free, no duplicates"
    );
    let seen = reader.await.unwrap();
    assert_eq!(seen, acked, "the reader saw exactly what was acknowledged");
    // The shared record got every version once, across both nodes.
    let versions: Vec<u64> = acked
        .iter()
        .filter(|c| c.id.as_str() == "x")
        .map(|c| c.version)
        .collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
}

/// A string holding U+0000 cannot go into `jsonb`: that write alone is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_a_string_refuses_only_that_write() {
    let Some(store) = fresh().await else {
        return;
    };
    let outcomes = store
        .commit(vec![
            write(WriteKind::Create, "t", "a", json!({"s": "ok"})),
            write(WriteKind::Create, "t", "b", json!({"s": "bad\u{0}"})),
            write(WriteKind::Create, "t", "c", json!({"s": "ok"})),
        ])
        .await
        .unwrap();
    assert_eq!(outcomes[0].as_ref().unwrap().position, Position(1));
    let e = outcomes[1].as_ref().unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("U+0000"), "{}", e.message);
    assert_eq!(outcomes[2].as_ref().unwrap().position, Position(2));
    // A filter on such a string matches nothing, rather than failing.
    let q = Query {
        filter: json!({"s": "bad\u{0}"}).as_object().unwrap().clone(),
        ..Query::default()
    };
    assert!(store
        .query(&ResourceName::parse("t").unwrap(), &q)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn unreachable_server_is_one_clear_line() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let Err(e) = PostgresStore::open("postgres://tether:secret@127.0.0.1:1/test").await else {
        panic!("nothing listens on port 1")
    };
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message
            .starts_with("cannot open the PostgreSQL store at postgres://tether@127.0.0.1:1/test"),
        "{}",
        e.message
    );
    assert!(!e.message.contains('\n'), "{}", e.message);
    assert!(!e.message.contains("secret"), "{}", e.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_and_missing_rights_are_named() {
    let Some(server) = server() else {
        return;
    };
    let no_db = server.replace("/test", "/tether_no_such_database");
    if no_db != server {
        let Err(e) = PostgresStore::open(&no_db).await else {
            panic!("the database does not exist")
        };
        assert!(e.message.contains("does not exist"), "{}", e.message);
    }

    // A role that may log in but create nothing, on a schema it does not own.
    let role = format!("tt_norights_{}", std::process::id());
    let schema = fresh_schema();
    admin(
        &server,
        format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN;
             CREATE SCHEMA {schema}; GRANT USAGE ON SCHEMA {schema} TO {role};"
        ),
    )
    .expect("set up a role without rights (needs a superuser URL)");
    let as_role = with_param(&replace_user(&server, &role), &format!("schema={schema}"));
    let outcome = PostgresStore::open(&as_role).await;
    admin(
        &server,
        format!("DROP SCHEMA {schema} CASCADE; DROP ROLE {role};"),
    )
    .expect("clean up");
    let Err(e) = outcome else {
        panic!("a role without CREATE must not be able to make the tables")
    };
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("lacks the rights"), "{}", e.message);
    assert!(e.message.contains(&schema), "{}", e.message);
    assert!(!e.message.contains('\n'), "{}", e.message);
}

/// `postgres://user@host/...` with another user.
fn replace_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let rest = match rest.split_once('@') {
        Some((_, host)) => host,
        None => rest,
    };
    format!("{scheme}://{user}@{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some((store, url)) = fresh_in_schema().await else {
        return;
    };
    admin(
        &store.server,
        format!(
            "UPDATE {}.tether_meta SET value = '999' WHERE key = 'schema_version'",
            store.schema
        ),
    )
    .unwrap();
    let Err(e) = PostgresStore::open(&url).await else {
        panic!("a newer schema must be refused")
    };
    assert!(e.message.contains("schema version 999"), "{}", e.message);
}
