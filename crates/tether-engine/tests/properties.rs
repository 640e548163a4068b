//! Property tests for the engine over a real SQLite store: for any sequence of writes
//! (some refused: missing records, existing ids, stale versions), some issued
//! concurrently so they share group commits,
//!
//! - the change log is gap-free: positions 1..=head, one per acknowledged write;
//! - versions are monotonic: each record's changes carry versions rising by one;
//! - replaying the log reproduces the store;
//! - every subscriber's view (its snapshot, then its pushes applied in order: PUT
//!   replaces, PATCH merge-patches, DELETE removes) equals what the store says it
//!   should see: a whole resource, a query whose matches come and go, one record, and
//!   a subscriber that joined half-way.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tether_bus::LocalBus;
use tether_core::{
    ChangeKind, Data, Outbound, Position, PushKind, Query, RecordId, ResourceName, SubSpec,
    SubTarget, Write, WriteKind,
};
use tether_engine::{Engine, Knobs, Outbox};
use tether_store::{Replay, SqliteStore, Store};

const IDS: &[&str] = &["a", "b", "c", "d"];

#[derive(Debug, Clone)]
struct Op {
    kind: WriteKind,
    id: &'static str,
    data: Data,
    expected_version: Option<u64>,
}

fn body() -> impl Strategy<Value = Data> {
    // "k" decides membership of the query subscription; null in a patch removes.
    (
        prop::option::of(0..3i64),
        prop::option::of(prop_oneof![
            Just(Value::Null),
            (0..100i64).prop_map(Value::from)
        ]),
    )
        .prop_map(|(k, v)| {
            let mut data = Map::new();
            if let Some(k) = k {
                data.insert("k".into(), json!(k));
            }
            if let Some(v) = v {
                data.insert("v".into(), v);
            }
            data
        })
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![
            Just(WriteKind::Create),
            Just(WriteKind::Update),
            Just(WriteKind::Upsert),
            Just(WriteKind::Patch),
            Just(WriteKind::Delete),
        ],
        prop::sample::select(IDS),
        body(),
        prop::option::weighted(0.2, 0..4u64),
    )
        .prop_map(|(kind, id, data, expected_version)| Op {
            kind,
            id,
            data: if kind == WriteKind::Delete {
                Map::new()
            } else {
                data
            },
            expected_version,
        })
}

/// RFC 7396, written out independently of the engine's, as the oracle.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(target) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// What one subscription holds: id -> (version, body).
#[derive(Debug, Default)]
struct View {
    records: BTreeMap<String, (u64, Value)>,
    position: u64,
}

impl View {
    fn apply(&mut self, event: Outbound) -> Result<(), TestCaseError> {
        match event {
            Outbound::Snapshot {
                records, position, ..
            } => {
                self.records = records
                    .into_iter()
                    .map(|r| (r.id.to_string(), (r.version, Value::Object(r.data))))
                    .collect();
                self.position = position.0;
            }
            Outbound::Push { kind, change, .. } => {
                prop_assert!(
                    change.position.0 > self.position,
                    "pushes arrive in log order"
                );
                self.position = change.position.0;
                let id = change.id.to_string();
                match kind {
                    PushKind::Put => {
                        let data = change.data.clone();
                        prop_assert!(data.is_some(), "a PUT carries the body");
                        self.records.insert(
                            id,
                            (change.version, Value::Object(data.unwrap_or_default())),
                        );
                    }
                    PushKind::Patch => {
                        let held = self.records.get_mut(&id);
                        prop_assert!(held.is_some(), "a PATCH only for a record held");
                        if let Some((version, body)) = held {
                            prop_assert!(change.version > *version);
                            let patch = Value::Object(change.patch.clone().unwrap_or_default());
                            merge_patch(body, &patch);
                            *version = change.version;
                            let after = change.data.clone().map(Value::Object);
                            prop_assert_eq!(
                                Some(&*body),
                                after.as_ref(),
                                "patch applied = body after"
                            );
                        }
                    }
                    PushKind::Delete => {
                        self.records.remove(&id);
                    }
                }
            }
            Outbound::Reply { .. } | Outbound::Resumed { .. } => {}
            other => prop_assert!(false, "unexpected event {other:?}"),
        }
        Ok(())
    }
}

struct Subscriber {
    outbox: Arc<Outbox>,
    view: View,
}

impl Subscriber {
    async fn new(engine: &Engine, target: SubTarget) -> Subscriber {
        let outbox = engine.new_outbox();
        engine
            .subscribe(&outbox, "s", SubSpec { target }, None, None)
            .await
            .expect("subscribes");
        Subscriber {
            outbox,
            view: View::default(),
        }
    }

    /// Applies everything queued (the hub queues without waiting, so once the engine
    /// has delivered up to the head, everything is here).
    async fn drain(&mut self) -> Result<(), TestCaseError> {
        let mut events = Vec::new();
        while self.outbox.queued_bytes() > 0 {
            self.outbox
                .next_batch(&mut events)
                .await
                .map_err(|e| TestCaseError::fail(format!("outbox closed: {e:?}")))?;
            for event in events.drain(..) {
                self.view.apply(event)?;
            }
        }
        Ok(())
    }
}

fn records_of(records: Vec<tether_core::Record>) -> BTreeMap<String, (u64, Value)> {
    records
        .into_iter()
        .map(|r| (r.id.to_string(), (r.version, Value::Object(r.data))))
        .collect()
}

async fn check(ops: Vec<Op>, concurrency: usize) -> Result<(), TestCaseError> {
    // tmpfs where there is one: every commit fsyncs.
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
    let engine = Engine::start(store.clone(), Arc::new(LocalBus::new()), Knobs::default())
        .await
        .unwrap();
    let resource = ResourceName::parse("things").unwrap();
    let ones = Query {
        filter: [("k".to_owned(), json!(1))].into_iter().collect(),
        ..Query::default()
    };
    let mut whole = Subscriber::new(
        &engine,
        SubTarget::Query {
            resource: resource.clone(),
            query: Box::default(),
        },
    )
    .await;
    let mut query = Subscriber::new(
        &engine,
        SubTarget::Query {
            resource: resource.clone(),
            query: Box::new(ones.clone()),
        },
    )
    .await;
    let a = RecordId::parse("a").unwrap();
    let mut record = Subscriber::new(
        &engine,
        SubTarget::Record {
            resource: resource.clone(),
            id: a.clone(),
        },
    )
    .await;
    let mut late = None;

    let mut acknowledged = 0u64;
    let half = ops.len() / 2;
    for (i, chunk) in ops.chunks(concurrency.max(1)).enumerate() {
        if late.is_none() && i * concurrency >= half {
            late = Some(
                Subscriber::new(
                    &engine,
                    SubTarget::Query {
                        resource: resource.clone(),
                        query: Box::default(),
                    },
                )
                .await,
            );
        }
        // The chunk's writes are in flight together, so they can share a group commit.
        let writes: Vec<_> = chunk
            .iter()
            .map(|op| {
                let write = Write::new(
                    op.kind,
                    resource.clone(),
                    RecordId::parse(op.id).unwrap(),
                    op.data.clone(),
                    op.expected_version,
                )
                .unwrap();
                let engine = engine.clone();
                tokio::spawn(async move { engine.write(write).await })
            })
            .collect();
        for write in writes {
            if write.await.unwrap().is_ok() {
                acknowledged += 1;
            }
        }
    }

    let head = store.head().await.unwrap();
    prop_assert_eq!(head.0, acknowledged, "one position per acknowledged write");
    // Wait until the hub has fanned out up to the head (it never waits on anyone).
    while engine.position() < head {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }

    // The change log: gap-free, versions rising by one per record, and replaying it
    // gives the store.
    let Replay::Changes(log) = store.changes_since(Position(0), 100_000).await.unwrap() else {
        return Err(TestCaseError::fail("the log was compacted"));
    };
    let positions: Vec<u64> = log.iter().map(|c| c.position.0).collect();
    prop_assert_eq!(positions, (1..=head.0).collect::<Vec<_>>());
    let mut replayed: BTreeMap<String, (u64, Option<Value>)> = BTreeMap::new();
    for change in &log {
        let id = change.id.to_string();
        let before = replayed.get(&id).map(|(v, _)| *v).unwrap_or(0);
        prop_assert_eq!(
            change.version,
            before + 1,
            "versions rise by one: {:?}",
            change
        );
        prop_assert_eq!(change.kind == ChangeKind::Delete, change.data.is_none());
        replayed.insert(id, (change.version, change.data.clone().map(Value::Object)));
    }
    let everything = store.query(&resource, &Query::default()).await.unwrap();
    let live: BTreeMap<String, (u64, Value)> = replayed
        .into_iter()
        .filter_map(|(id, (v, d))| d.map(|d| (id, (v, d))))
        .collect();
    prop_assert_eq!(&live, &records_of(everything.clone()));

    // Every subscriber's view is the store's answer for its target.
    whole.drain().await?;
    prop_assert_eq!(&whole.view.records, &live);
    query.drain().await?;
    let matching = store.query(&resource, &ones).await.unwrap();
    prop_assert_eq!(&query.view.records, &records_of(matching));
    record.drain().await?;
    let one = store.get(&resource, &a).await.unwrap();
    prop_assert_eq!(&record.view.records, &records_of(one.into_iter().collect()));
    if let Some(mut late) = late {
        late.drain().await?;
        prop_assert_eq!(&late.view.records, &live);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // A failing case is shrunk, and every attempt opens a store: keep it bounded.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_is_gap_free_versions_monotonic_and_views_equal_the_store(
        ops in prop::collection::vec(op(), 1..40),
        concurrency in 1..6usize,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(check(ops, concurrency))?;
    }
}
