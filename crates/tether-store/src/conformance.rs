//! The store conformance suite: one set of behaviours every [`Store`] must show.
//!
//! The engine relies on these guarantees (gap-free positions, refused writes taking no
//! position, consistent reads, resync after compaction) without knowing which store it
//! talks to, so they are written down once, here, and every implementation runs them:
//!
//! ```ignore
//! tether_store::conformance_tests!(async { make_fresh_store().await });
//! ```
//!
//! The macro expands to one `#[tokio::test]` per case (the calling crate needs tokio
//! with the `macros` and `rt-multi-thread` features). Each case takes a fresh, empty
//! store and panics on failure, so the functions can also be called directly.

use crate::{ConsistentRead, ReadTarget, Replay, ResourceInfo, Store, MAX_REPLAY};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tether_core::{
    Change, ChangeKind, Data, Error, ErrorCode, Order, Position, Query, RecordId, ResourceName,
    Result, Write, WriteKind,
};

/// Expands to one `#[tokio::test]` per conformance case. `$factory` is an expression
/// evaluating to a future of `Arc<dyn Store>`; it is evaluated once per test, and must
/// give a fresh, empty store each time.
///
/// `conformance_tests!(optional $factory)` takes a future of `Option<Arc<dyn Store>>`
/// instead: `None` skips the case, for stores that need a server the machine may not
/// have (the factory says why, once).
#[macro_export]
macro_rules! conformance_tests {
    (optional $factory:expr) => {
        $crate::conformance_tests!(@all ($factory.await));
    };
    ($factory:expr) => {
        $crate::conformance_tests!(@all (::std::option::Option::Some($factory.await)));
    };
    (@all $make:tt) => {
        $crate::conformance_tests!(@cases $make;
            empty_store,
            create_then_get,
            create_existing_is_refused,
            missing_records_are_not_found,
            versions_rise_by_one,
            tombstone_keeps_the_version,
            merge_patch,
            expected_version_conflict,
            refused_writes_take_no_position,
            same_id_twice_in_a_group,
            query_filter_order_limit,
            query_filter_on_id_and_version,
            changes_since_contents,
            consistent_read,
            read_is_one_snapshot_under_writes,
            replay_limits,
            compaction,
            resource_counts,
            concurrent_commits_are_gap_free,
            epoch_is_stable,
            logged_writes_only_take_a_position,
        );
    };
    (@cases $make:tt; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store: ::std::option::Option<::std::sync::Arc<dyn $crate::Store>> = $make;
                let ::std::option::Option::Some(store) = store else {
                    return;
                };
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

fn resource(name: &str) -> ResourceName {
    ResourceName::parse(name).expect("valid resource name")
}

fn rid(id: &str) -> RecordId {
    RecordId::parse(id).expect("valid record id")
}

fn body(value: Value) -> Data {
    match value {
        Value::Object(data) => data,
        other => panic!("a body must be a JSON object, not {other}"),
    }
}

fn write(kind: WriteKind, res: &str, id: &str, data: Value) -> Write {
    Write::new(kind, resource(res), rid(id), body(data), None).expect("valid write")
}

fn write_at(kind: WriteKind, res: &str, id: &str, data: Value, expected: u64) -> Write {
    Write::new(kind, resource(res), rid(id), body(data), Some(expected)).expect("valid write")
}

fn delete(res: &str, id: &str) -> Write {
    write(WriteKind::Delete, res, id, json!({}))
}

async fn commit(store: &dyn Store, writes: Vec<Write>) -> Vec<Result<Change>> {
    let n = writes.len();
    let outcomes = store.commit(writes).await.expect("the group commits");
    assert_eq!(outcomes.len(), n, "one outcome per write");
    outcomes
}

async fn ok(store: &dyn Store, w: Write) -> Change {
    let what = format!("{} {}/{}", w.kind.as_str(), w.resource, w.id);
    let mut outcomes = commit(store, vec![w]).await;
    match outcomes.pop() {
        Some(Ok(change)) => change,
        Some(Err(e)) => panic!("{what} was refused: {e}"),
        None => unreachable!("commit checked the outcome count"),
    }
}

async fn refused(store: &dyn Store, w: Write) -> Error {
    let what = format!("{} {}/{}", w.kind.as_str(), w.resource, w.id);
    let mut outcomes = commit(store, vec![w]).await;
    match outcomes.pop() {
        Some(Err(e)) => e,
        Some(Ok(change)) => panic!("{what} was accepted at {}", change.position),
        None => unreachable!("commit checked the outcome count"),
    }
}

async fn head(store: &dyn Store) -> u64 {
    store.head().await.expect("head").0
}

async fn get(store: &dyn Store, res: &str, id: &str) -> Option<(u64, Value)> {
    store
        .get(&resource(res), &rid(id))
        .await
        .expect("get")
        .map(|r| (r.version, Value::Object(r.data)))
}

async fn log(store: &dyn Store, after: u64, limit: usize) -> Vec<Change> {
    match store
        .changes_since(Position(after), limit)
        .await
        .expect("changes_since")
    {
        Replay::Changes(changes) => changes,
        Replay::Compacted => panic!("changes after {after} were reported compacted"),
    }
}

fn positions(changes: &[Change]) -> Vec<u64> {
    changes.iter().map(|c| c.position.0).collect()
}

/// A new store has nothing: head 0, no records, an empty log; an empty group commits
/// nothing.
pub async fn empty_store(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(head(s).await, 0);
    assert_eq!(get(s, "todos", "a").await, None);
    assert!(log(s, 0, 100).await.is_empty());
    assert!(store.resources().await.expect("resources").is_empty());
    assert!(commit(s, vec![]).await.is_empty());
    assert_eq!(head(s).await, 0);
}

/// A created record reads back with version 1, and its change is a PUT at position 1.
pub async fn create_then_get(store: Arc<dyn Store>) {
    let s = &*store;
    let change = ok(
        s,
        write(
            WriteKind::Create,
            "todos",
            "a",
            json!({"title": "milk", "n": 1.5}),
        ),
    )
    .await;
    assert_eq!(change.position, Position(1));
    assert_eq!(change.kind, ChangeKind::Put);
    assert_eq!(change.version, 1);
    assert_eq!(change.data, Some(body(json!({"title": "milk", "n": 1.5}))));
    assert_eq!(change.patch, None);
    let record = store
        .get(&resource("todos"), &rid("a"))
        .await
        .expect("get")
        .expect("the record exists");
    assert_eq!(record.resource, resource("todos"));
    assert_eq!(record.id, rid("a"));
    assert_eq!(record.version, 1);
    assert_eq!(
        Value::Object(record.data),
        json!({"title": "milk", "n": 1.5})
    );
    assert_eq!(head(s).await, 1);
    // The same id in another resource is another record.
    assert_eq!(get(s, "other", "a").await, None);
}

/// `create` of an existing id fails with `already_exists` and the stored version, and
/// commits nothing.
pub async fn create_existing_is_refused(store: Arc<dyn Store>) {
    let s = &*store;
    ok(s, write(WriteKind::Create, "todos", "a", json!({"v": 1}))).await;
    let e = refused(s, write(WriteKind::Create, "todos", "a", json!({"v": 2}))).await;
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    assert_eq!(e.current_version, Some(1));
    assert_eq!(head(s).await, 1);
    assert_eq!(get(s, "todos", "a").await, Some((1, json!({"v": 1}))));
    assert_eq!(positions(&log(s, 0, 100).await), [1]);
}

/// update, patch and delete of a record that never existed fail with `not_found`.
pub async fn missing_records_are_not_found(store: Arc<dyn Store>) {
    let s = &*store;
    for kind in [WriteKind::Update, WriteKind::Patch, WriteKind::Delete] {
        let e = refused(s, write(kind, "todos", "ghost", json!({"x": 1}))).await;
        assert_eq!(e.code, ErrorCode::NotFound, "{}", kind.as_str());
    }
    assert_eq!(head(s).await, 0);
    assert_eq!(get(s, "todos", "ghost").await, None);
}

/// Every accepted write raises the version by one, whatever its kind.
pub async fn versions_rise_by_one(store: Arc<dyn Store>) {
    let s = &*store;
    let steps = [
        write(WriteKind::Upsert, "todos", "a", json!({"n": 1})),
        write(WriteKind::Update, "todos", "a", json!({"n": 2})),
        write(WriteKind::Patch, "todos", "a", json!({"m": 3})),
        write(WriteKind::Upsert, "todos", "a", json!({"n": 4})),
    ];
    for (i, w) in steps.into_iter().enumerate() {
        let change = ok(s, w).await;
        assert_eq!(change.version, i as u64 + 1);
        assert_eq!(change.position, Position(i as u64 + 1));
    }
    assert_eq!(get(s, "todos", "a").await, Some((4, json!({"n": 4}))));
    let gone = ok(s, delete("todos", "a")).await;
    assert_eq!(
        (gone.kind, gone.version, gone.data),
        (ChangeKind::Delete, 5, None)
    );
}

/// A deleted record is gone from reads, but a recreate continues its version.
pub async fn tombstone_keeps_the_version(store: Arc<dyn Store>) {
    let s = &*store;
    ok(s, write(WriteKind::Create, "todos", "a", json!({"n": 1}))).await;
    ok(s, write(WriteKind::Update, "todos", "a", json!({"n": 2}))).await;
    ok(s, delete("todos", "a")).await;
    assert_eq!(get(s, "todos", "a").await, None);
    let all = store
        .query(&resource("todos"), &Query::default())
        .await
        .expect("query");
    assert!(all.is_empty(), "a tombstone is not a query result");
    assert!(store.resources().await.expect("resources").is_empty());
    for kind in [WriteKind::Update, WriteKind::Patch, WriteKind::Delete] {
        let e = refused(s, write(kind, "todos", "a", json!({}))).await;
        assert_eq!(
            e.code,
            ErrorCode::NotFound,
            "{} after delete",
            kind.as_str()
        );
    }
    let again = ok(s, write(WriteKind::Create, "todos", "a", json!({"n": 3}))).await;
    assert_eq!(again.version, 4);
    assert_eq!(again.position, Position(4));
    assert_eq!(get(s, "todos", "a").await, Some((4, json!({"n": 3}))));
}

/// Patches are RFC 7396 merge patches: nested objects merge, `null` removes. The change
/// carries both the result and the patch.
pub async fn merge_patch(store: Arc<dyn Store>) {
    let s = &*store;
    ok(
        s,
        write(
            WriteKind::Create,
            "docs",
            "d",
            json!({"title": "t", "meta": {"a": 1, "b": 2}, "tags": ["x"], "gone": true}),
        ),
    )
    .await;
    let patch = json!({"meta": {"b": null, "c": 3}, "gone": null, "tags": ["y"]});
    let change = ok(s, write(WriteKind::Patch, "docs", "d", patch.clone())).await;
    let expected = json!({"title": "t", "meta": {"a": 1, "c": 3}, "tags": ["y"]});
    assert_eq!(change.kind, ChangeKind::Patch);
    assert_eq!(change.version, 2);
    assert_eq!(change.data, Some(body(expected.clone())));
    assert_eq!(change.patch, Some(body(patch)));
    assert_eq!(get(s, "docs", "d").await, Some((2, expected)));
    // The log keeps the patch, not just the result.
    assert_eq!(log(s, 1, 10).await, [change]);
}

/// An expected version that is not the stored one fails with `version_conflict` and the
/// current version; `Some(0)` on upsert means "must not exist".
pub async fn expected_version_conflict(store: Arc<dyn Store>) {
    let s = &*store;
    ok(s, write(WriteKind::Create, "todos", "a", json!({"n": 1}))).await;
    ok(s, write(WriteKind::Update, "todos", "a", json!({"n": 2}))).await;
    for kind in [
        WriteKind::Update,
        WriteKind::Patch,
        WriteKind::Delete,
        WriteKind::Upsert,
    ] {
        let e = refused(s, write_at(kind, "todos", "a", json!({"n": 9}), 1)).await;
        assert_eq!(e.code, ErrorCode::VersionConflict, "{}", kind.as_str());
        assert_eq!(e.current_version, Some(2), "{}", kind.as_str());
    }
    let e = refused(s, write_at(WriteKind::Upsert, "todos", "a", json!({}), 0)).await;
    assert_eq!(
        (e.code, e.current_version),
        (ErrorCode::VersionConflict, Some(2))
    );
    assert_eq!(head(s).await, 2);
    let change = ok(
        s,
        write_at(WriteKind::Update, "todos", "a", json!({"n": 3}), 2),
    )
    .await;
    assert_eq!(change.version, 3);
    let fresh = ok(s, write_at(WriteKind::Upsert, "todos", "b", json!({}), 0)).await;
    assert_eq!(fresh.version, 1);
}

/// In a group with refused writes, the accepted ones take consecutive positions and the
/// refused ones take none.
pub async fn refused_writes_take_no_position(store: Arc<dyn Store>) {
    let s = &*store;
    ok(s, write(WriteKind::Create, "todos", "old", json!({}))).await;
    let outcomes = commit(
        s,
        vec![
            write(WriteKind::Create, "todos", "a", json!({"n": 1})),
            write(WriteKind::Create, "todos", "old", json!({})),
            write(WriteKind::Update, "todos", "ghost", json!({})),
            write(WriteKind::Create, "todos", "b", json!({"n": 2})),
            write_at(WriteKind::Update, "todos", "a", json!({}), 7),
            delete("todos", "old"),
        ],
    )
    .await;
    let got: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            Ok(c) => Ok(c.position.0),
            Err(e) => Err(e.code),
        })
        .collect();
    assert_eq!(
        got,
        [
            Ok(2),
            Err(ErrorCode::AlreadyExists),
            Err(ErrorCode::NotFound),
            Ok(3),
            Err(ErrorCode::VersionConflict),
            Ok(4),
        ]
    );
    assert_eq!(head(s).await, 4);
    let accepted: Vec<Change> = outcomes.into_iter().filter_map(|o| o.ok()).collect();
    assert_eq!(log(s, 1, 100).await, accepted);
    let next = ok(s, write(WriteKind::Create, "todos", "c", json!({}))).await;
    assert_eq!(next.position, Position(5));
}

/// Writes in one group apply in order: a later write sees an earlier one to the same id.
pub async fn same_id_twice_in_a_group(store: Arc<dyn Store>) {
    let s = &*store;
    let outcomes = commit(
        s,
        vec![
            write(WriteKind::Create, "todos", "a", json!({"n": 1})),
            write(WriteKind::Patch, "todos", "a", json!({"m": 2})),
            write(WriteKind::Create, "todos", "a", json!({})),
            delete("todos", "a"),
            write(WriteKind::Create, "todos", "a", json!({"n": 5})),
        ],
    )
    .await;
    let got: Vec<_> = outcomes
        .iter()
        .map(|o| match o {
            Ok(c) => Ok((c.position.0, c.version, c.kind)),
            Err(e) => Err(e.code),
        })
        .collect();
    assert_eq!(
        got,
        [
            Ok((1, 1, ChangeKind::Put)),
            Ok((2, 2, ChangeKind::Patch)),
            Err(ErrorCode::AlreadyExists),
            Ok((3, 3, ChangeKind::Delete)),
            Ok((4, 4, ChangeKind::Put)),
        ]
    );
    assert_eq!(
        outcomes[1].as_ref().ok().and_then(|c| c.data.clone()),
        Some(body(json!({"n": 1, "m": 2})))
    );
    assert_eq!(get(s, "todos", "a").await, Some((4, json!({"n": 5}))));
}

/// Queries filter by equality, order by a field (ties by id) and limit, and see only
/// their resource's live records.
pub async fn query_filter_order_limit(store: Arc<dyn Store>) {
    let s = &*store;
    let rows = [
        ("a", json!({"owner": "ann", "rank": 3, "done": false})),
        ("b", json!({"owner": "bob", "rank": 1, "done": false})),
        ("c", json!({"owner": "ann", "rank": 1, "done": true})),
        ("d", json!({"owner": "ann", "rank": 2, "done": false})),
        ("e", json!({"owner": "ann", "rank": 5, "done": false})),
    ];
    let writes = rows
        .iter()
        .map(|(id, data)| write(WriteKind::Create, "tasks", id, data.clone()))
        .chain([write(
            WriteKind::Create,
            "other",
            "z",
            json!({"owner": "ann"}),
        )])
        .collect();
    assert!(commit(s, writes).await.iter().all(|o| o.is_ok()));
    ok(s, delete("tasks", "e")).await;

    let ids = |records: Vec<tether_core::Record>| {
        records
            .into_iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>()
    };
    let run = |filter: Value, order: Option<&str>, limit: Option<usize>| {
        let query = Query {
            filter: body(filter),
            order: order.and_then(Order::parse),
            limit,
        };
        async move { s.query(&resource("tasks"), &query).await.expect("query") }
    };

    assert_eq!(ids(run(json!({}), None, None).await), ["a", "b", "c", "d"]);
    assert_eq!(
        ids(run(json!({"owner": "ann"}), None, None).await),
        ["a", "c", "d"]
    );
    assert_eq!(
        ids(run(json!({"owner": "ann"}), Some("rank"), None).await),
        ["c", "d", "a"]
    );
    assert_eq!(
        ids(run(json!({"owner": "ann"}), Some("-rank"), None).await),
        ["a", "d", "c"]
    );
    assert_eq!(
        ids(run(json!({"owner": "ann"}), Some("-rank"), Some(2)).await),
        ["a", "d"]
    );
    assert_eq!(
        ids(run(json!({"done": false}), Some("rank"), None).await),
        ["b", "d", "a"]
    );
    assert_eq!(
        ids(run(json!({"owner": "ann", "done": false}), None, None).await),
        ["a", "d"]
    );
    assert_eq!(
        ids(run(json!({"rank": 1}), Some("-id"), None).await),
        ["c", "b"]
    );
    // `null` matches a missing field; a string never equals a number.
    assert_eq!(
        ids(run(json!({"missing": null}), None, Some(1)).await),
        ["a"]
    );
    assert!(run(json!({"rank": "1"}), None, None).await.is_empty());
    assert!(run(json!({"owner": "nobody"}), None, None).await.is_empty());
    let records = run(json!({"owner": "bob"}), None, None).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].version, 1);
    assert_eq!(Value::Object(records[0].data.clone()), rows[1].1);
}

/// A filter on `id` or `version` matches the record's own id and version, which live
/// beside the body (a body's own `version` field wins, as it does for an order), and
/// combines with body fields, order and limit like any field.
pub async fn query_filter_on_id_and_version(store: Arc<dyn Store>) {
    let s = &*store;
    let writes = vec![
        write(WriteKind::Create, "tasks", "a", json!({"owner": "ann"})),
        write(WriteKind::Create, "tasks", "b", json!({"owner": "bob"})),
        write(WriteKind::Create, "tasks", "c", json!({"owner": "ann"})),
        write(WriteKind::Create, "tasks", "d", json!({"version": 7})),
        write(WriteKind::Create, "tasks", "e", json!({"owner": "ann"})),
        write(WriteKind::Create, "other", "a", json!({"owner": "ann"})),
    ];
    assert!(commit(s, writes).await.iter().all(|o| o.is_ok()));
    ok(
        s,
        write(WriteKind::Update, "tasks", "b", json!({"owner": "bob"})),
    )
    .await;
    ok(s, write(WriteKind::Patch, "tasks", "c", json!({"n": 1}))).await;
    ok(s, write(WriteKind::Patch, "tasks", "c", json!({"n": 2}))).await;
    ok(s, delete("tasks", "e")).await;

    let run = |filter: Value, order: Option<&str>, limit: Option<usize>| {
        let query = Query {
            filter: body(filter),
            order: order.and_then(Order::parse),
            limit,
        };
        async move {
            let records = s.query(&resource("tasks"), &query).await.expect("query");
            records
                .into_iter()
                .map(|r| (r.id.to_string(), r.version))
                .collect::<Vec<_>>()
        }
    };
    let v = |pairs: &[(&str, u64)]| {
        pairs
            .iter()
            .map(|(id, version)| (id.to_string(), *version))
            .collect::<Vec<_>>()
    };

    assert_eq!(run(json!({"id": "b"}), None, None).await, v(&[("b", 2)]));
    assert_eq!(
        run(json!({"id": "a", "owner": "ann"}), None, None).await,
        v(&[("a", 1)])
    );
    assert!(run(json!({"id": "a", "owner": "bob"}), None, None)
        .await
        .is_empty());
    assert!(run(json!({"id": "nope"}), None, None).await.is_empty());
    // A deleted record is gone for an id filter too.
    assert!(run(json!({"id": "e"}), None, None).await.is_empty());
    // A record always has an id; JSON equality: the id is a string.
    assert!(run(json!({"id": null}), None, None).await.is_empty());
    assert!(run(json!({"id": ["a"]}), None, None).await.is_empty());

    assert_eq!(run(json!({"version": 2}), None, None).await, v(&[("b", 2)]));
    assert_eq!(run(json!({"version": 3}), None, None).await, v(&[("c", 3)]));
    // `d` is at version 1 but its body says 7, and the body wins.
    assert_eq!(run(json!({"version": 1}), None, None).await, v(&[("a", 1)]));
    assert_eq!(run(json!({"version": 7}), None, None).await, v(&[("d", 1)]));
    assert!(run(json!({"version": "2"}), None, None).await.is_empty());
    assert!(run(json!({"version": 4}), None, None).await.is_empty());
    assert_eq!(
        run(json!({"id": "c", "version": 3}), None, None).await,
        v(&[("c", 3)])
    );
    assert!(run(json!({"id": "c", "version": 2}), None, None)
        .await
        .is_empty());

    // With an order and a limit: the limit counts matching records only.
    assert_eq!(
        run(json!({"owner": "ann"}), Some("-version"), Some(1)).await,
        v(&[("c", 3)])
    );
    assert_eq!(
        run(json!({"version": 1}), Some("-id"), Some(1)).await,
        v(&[("a", 1)])
    );
}

/// The log holds exactly the committed changes, in order, and `limit` cuts it.
pub async fn changes_since_contents(store: Arc<dyn Store>) {
    let s = &*store;
    let mut expected = Vec::new();
    expected.push(ok(s, write(WriteKind::Create, "todos", "a", json!({"n": 1}))).await);
    expected.push(ok(s, write(WriteKind::Create, "notes", "b", json!({"t": "x"}))).await);
    expected.push(
        ok(
            s,
            write(WriteKind::Patch, "todos", "a", json!({"n": null, "m": 2})),
        )
        .await,
    );
    refused(s, write(WriteKind::Update, "todos", "ghost", json!({}))).await;
    expected.push(ok(s, delete("notes", "b")).await);
    expected.push(ok(s, write(WriteKind::Upsert, "notes", "b", json!({"t": "y"}))).await);

    let want = [
        (
            1,
            ChangeKind::Put,
            "todos",
            "a",
            1,
            Some(json!({"n": 1})),
            None,
        ),
        (
            2,
            ChangeKind::Put,
            "notes",
            "b",
            1,
            Some(json!({"t": "x"})),
            None,
        ),
        (
            3,
            ChangeKind::Patch,
            "todos",
            "a",
            2,
            Some(json!({"m": 2})),
            Some(json!({"n": null, "m": 2})),
        ),
        (4, ChangeKind::Delete, "notes", "b", 2, None, None),
        (
            5,
            ChangeKind::Put,
            "notes",
            "b",
            3,
            Some(json!({"t": "y"})),
            None,
        ),
    ];
    let want: Vec<Change> = want
        .into_iter()
        .map(|(pos, kind, res, id, version, data, patch)| {
            Change::new(
                Position(pos),
                kind,
                resource(res),
                rid(id),
                version,
                data.map(body),
                patch.map(body),
            )
        })
        .collect();
    assert_eq!(expected, want, "acknowledged changes");
    assert_eq!(log(s, 0, 100).await, want, "the log");
    assert_eq!(log(s, 2, 100).await, want[2..]);
    assert_eq!(log(s, 0, 2).await, want[..2]);
    assert_eq!(log(s, 3, 1).await, want[3..4]);
    assert!(log(s, 5, 100).await.is_empty());
    assert!(log(s, 0, 0).await.is_empty());
}

/// One read returns several targets and the replay, all at one head.
pub async fn consistent_read(store: Arc<dyn Store>) {
    let s = &*store;
    ok(
        s,
        write(WriteKind::Create, "todos", "a", json!({"done": false})),
    )
    .await;
    ok(
        s,
        write(WriteKind::Create, "todos", "b", json!({"done": true})),
    )
    .await;
    ok(
        s,
        write(WriteKind::Create, "todos", "c", json!({"done": false})),
    )
    .await;
    ok(s, write(WriteKind::Patch, "todos", "a", json!({"x": 1}))).await;

    let targets = vec![
        ReadTarget::Record {
            resource: resource("todos"),
            id: rid("a"),
        },
        ReadTarget::Record {
            resource: resource("todos"),
            id: rid("missing"),
        },
        ReadTarget::Query {
            resource: resource("todos"),
            query: Query {
                filter: body(json!({"done": false})),
                ..Query::default()
            },
        },
    ];
    let view = store
        .read(ConsistentRead {
            targets: targets.clone(),
            changes_after: Some(Position(1)),
        })
        .await
        .expect("read");
    assert_eq!(view.head, Position(4));
    assert_eq!(view.results.len(), 3);
    assert_eq!(view.results[0].len(), 1);
    assert_eq!(view.results[0][0].version, 2);
    assert_eq!(
        Value::Object(view.results[0][0].data.clone()),
        json!({"done": false, "x": 1})
    );
    assert!(view.results[1].is_empty());
    let ids: Vec<_> = view.results[2].iter().map(|r| r.id.to_string()).collect();
    assert_eq!(ids, ["a", "c"]);
    match view.changes {
        Some(Replay::Changes(changes)) => {
            assert_eq!(positions(&changes), [2, 3, 4]);
            assert_eq!(changes, log(s, 1, 100).await);
        }
        other => panic!("expected a replay, got {other:?}"),
    }

    let view = store
        .read(ConsistentRead {
            targets,
            changes_after: None,
        })
        .await
        .expect("read");
    assert_eq!(view.changes, None);
    let at_head = store
        .read(ConsistentRead {
            targets: vec![],
            changes_after: Some(Position(4)),
        })
        .await
        .expect("read");
    assert_eq!(at_head.changes, Some(Replay::Changes(vec![])));
}

/// While another task writes, every read's head, record and replay agree.
pub async fn read_is_one_snapshot_under_writes(store: Arc<dyn Store>) {
    const WRITES: u64 = 60;
    ok(
        &*store,
        write(WriteKind::Create, "counters", "c", json!({"n": 0})),
    )
    .await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 1..=WRITES {
                ok(
                    &*store,
                    write(WriteKind::Update, "counters", "c", json!({"n": n})),
                )
                .await;
            }
        })
    };
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let view = store
            .read(ConsistentRead {
                targets: vec![
                    ReadTarget::Record {
                        resource: resource("counters"),
                        id: rid("c"),
                    },
                    ReadTarget::Query {
                        resource: resource("counters"),
                        query: Query::default(),
                    },
                ],
                changes_after: Some(Position::ZERO),
            })
            .await
            .expect("read");
        let Some(Replay::Changes(changes)) = view.changes else {
            panic!("expected a replay from 0");
        };
        assert_eq!(positions(&changes), (1..=view.head.0).collect::<Vec<_>>());
        let last = changes.last().expect("at least the create");
        let record = &view.results[0][0];
        assert_eq!(record.version, last.version, "record and replay disagree");
        assert_eq!(Some(&record.data), last.data.as_ref());
        assert_eq!(view.results[1], view.results[0], "query and get disagree");
        reads += 1;
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer task");
    assert!(reads >= 1);
    assert_eq!(head(&*store).await, WRITES + 1);
}

/// A replay from beyond the head, or needing more than [`MAX_REPLAY`] changes, asks for
/// a resync.
pub async fn replay_limits(store: Arc<dyn Store>) {
    let s = &*store;
    let total = MAX_REPLAY + 1;
    let mut n = 0;
    while n < total {
        let group: Vec<Write> = (n..(n + 1000).min(total))
            .map(|i| write(WriteKind::Create, "bulk", &format!("r{i}"), json!({"i": i})))
            .collect();
        n += group.len();
        assert!(commit(s, group).await.iter().all(|o| o.is_ok()));
    }
    let head = head(s).await;
    assert_eq!(head, total as u64);
    let replay = |after: u64| async move {
        s.read(ConsistentRead {
            targets: vec![],
            changes_after: Some(Position(after)),
        })
        .await
        .expect("read")
        .changes
        .expect("a replay was asked for")
    };
    assert_eq!(
        replay(0).await,
        Replay::Compacted,
        "more than MAX_REPLAY changes"
    );
    match replay(1).await {
        Replay::Changes(changes) => {
            assert_eq!(changes.len(), MAX_REPLAY);
            assert_eq!(changes.last().map(|c| c.position.0), Some(head));
        }
        Replay::Compacted => panic!("exactly MAX_REPLAY changes must replay"),
    }
    assert_eq!(
        replay(head + 1).await,
        Replay::Compacted,
        "a position beyond the head"
    );
}

/// Compaction drops the log through a position: replays from before it resync, later
/// ones still work, and it never goes backwards or beyond the head.
pub async fn compaction(store: Arc<dyn Store>) {
    let s = &*store;
    for i in 0..5 {
        ok(
            s,
            write(
                WriteKind::Upsert,
                "todos",
                &format!("t{i}"),
                json!({"i": i}),
            ),
        )
        .await;
    }
    store.compact(Position(3)).await.expect("compact");
    let replay = |after: u64| async move {
        s.read(ConsistentRead {
            targets: vec![ReadTarget::Record {
                resource: resource("todos"),
                id: rid("t0"),
            }],
            changes_after: Some(Position(after)),
        })
        .await
        .expect("read")
    };
    let view = replay(1).await;
    assert_eq!(view.changes, Some(Replay::Compacted));
    assert_eq!(view.results[0].len(), 1, "records survive compaction");
    assert_eq!(replay(2).await.changes, Some(Replay::Compacted));
    match replay(3).await.changes {
        Some(Replay::Changes(changes)) => assert_eq!(positions(&changes), [4, 5]),
        other => panic!("expected changes 4 and 5, got {other:?}"),
    }
    assert_eq!(
        s.changes_since(Position(0), 100)
            .await
            .expect("changes_since"),
        Replay::Compacted
    );
    assert_eq!(positions(&log(s, 3, 100).await), [4, 5]);

    // Compacting lower than before changes nothing.
    store.compact(Position(1)).await.expect("compact");
    assert_eq!(replay(2).await.changes, Some(Replay::Compacted));
    assert_eq!(positions(&log(s, 3, 100).await), [4, 5]);

    // Beyond the head, compaction stops at the head, so new changes still replay.
    store.compact(Position(100)).await.expect("compact");
    assert!(log(s, 5, 100).await.is_empty());
    assert_eq!(head(s).await, 5);
    let next = ok(s, write(WriteKind::Create, "todos", "new", json!({}))).await;
    assert_eq!(next.position, Position(6));
    assert_eq!(log(s, 5, 100).await, [next]);
    assert_eq!(get(s, "todos", "t4").await, Some((1, json!({"i": 4}))));
}

/// `resources()` counts live records per resource, by name, omitting empty ones.
pub async fn resource_counts(store: Arc<dyn Store>) {
    let s = &*store;
    let writes = vec![
        write(WriteKind::Create, "zebra", "1", json!({})),
        write(WriteKind::Create, "apple", "1", json!({})),
        write(WriteKind::Create, "apple", "2", json!({})),
        write(WriteKind::Create, "apple", "3", json!({})),
        write(WriteKind::Create, "gone", "1", json!({})),
        write(WriteKind::Create, "mid", "1", json!({})),
    ];
    assert!(commit(s, writes).await.iter().all(|o| o.is_ok()));
    ok(s, delete("gone", "1")).await;
    ok(s, delete("apple", "2")).await;
    let got = store.resources().await.expect("resources");
    let want = [("apple", 2), ("mid", 1), ("zebra", 1)].map(|(name, records)| ResourceInfo {
        name: resource(name),
        records,
    });
    assert_eq!(got, want);
}

/// Many tasks committing at once get positions 1..=N exactly, each change as
/// acknowledged is in the log, and a record they all write gets every version once.
pub async fn concurrent_commits_are_gap_free(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 50;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    // Every fifth write goes to one shared record, so commits contend
                    // on a row as well as on the position counter.
                    let w = if i % 5 == 0 {
                        write(
                            WriteKind::Upsert,
                            "shared",
                            "counter",
                            json!({"task": t, "i": i}),
                        )
                    } else {
                        write(
                            WriteKind::Create,
                            "conc",
                            &format!("t{t}-{i}"),
                            json!({"task": t, "i": i}),
                        )
                    };
                    acked.push(ok(&*store, w).await);
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::with_capacity(TASKS * PER_TASK);
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    acked.sort_by_key(|c| c.position);
    let n = (TASKS * PER_TASK) as u64;
    assert_eq!(
        positions(&acked),
        (1..=n).collect::<Vec<_>>(),
        "gap-free, no duplicates"
    );
    assert_eq!(head(&*store).await, n);
    assert_eq!(
        log(&*store, 0, 10_000).await,
        acked,
        "every acknowledged change is in the log"
    );
    let shared: Vec<u64> = acked
        .iter()
        .filter(|c| c.id.as_str() == "counter")
        .map(|c| c.version)
        .collect();
    assert_eq!(
        shared,
        (1..=(TASKS * PER_TASK / 5) as u64).collect::<Vec<_>>()
    );
    let counts: BTreeMap<String, u64> = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .map(|r| (r.name.to_string(), r.records))
        .collect();
    assert_eq!(counts.get("conc"), Some(&(n - n / 5)));
    assert_eq!(counts.get("shared"), Some(&1));
}

/// The epoch is non-empty and does not change as the log grows or shrinks.
pub async fn epoch_is_stable(store: Arc<dyn Store>) {
    let s = &*store;
    let epoch = store.epoch().clone();
    assert!(!epoch.0.is_empty());
    ok(s, write(WriteKind::Create, "todos", "a", json!({}))).await;
    store.compact(Position(1)).await.expect("compact");
    assert_eq!(store.epoch(), &epoch);
}

/// A logged write (its outcome decided where the records live, as for a MongoDB-backed
/// resource) gets the next position with its kind, version and body as given, in group
/// order with ordinary writes, and leaves the store's own records alone.
pub async fn logged_writes_only_take_a_position(store: Arc<dyn Store>) {
    use tether_core::write::Applied;
    let s = &*store;
    let put = Write::logged(
        resource("ext"),
        rid("a"),
        body(json!({"x": 1})),
        Applied {
            kind: ChangeKind::Put,
            version: 7,
            data: Some(body(json!({"x": 1}))),
        },
    );
    let gone = Write::logged(
        resource("ext"),
        rid("b"),
        Data::new(),
        Applied {
            kind: ChangeKind::Delete,
            version: 3,
            data: None,
        },
    );
    let outcomes = commit(
        s,
        vec![put, write(WriteKind::Create, "own", "c", json!({})), gone],
    )
    .await;
    let changes: Vec<Change> = outcomes
        .into_iter()
        .map(|o| o.expect("committed"))
        .collect();
    assert_eq!(positions(&changes), vec![1, 2, 3]);
    assert_eq!((changes[0].kind, changes[0].version), (ChangeKind::Put, 7));
    assert_eq!(
        (changes[2].kind, changes[2].version),
        (ChangeKind::Delete, 3)
    );
    assert_eq!(log(s, 0, 10).await, changes);
    assert_eq!(
        get(s, "ext", "a").await,
        None,
        "a logged write keeps no record"
    );
    assert_eq!(get(s, "own", "c").await, Some((1, json!({}))));
}
