//! MongoDB-backed resources (seed 002) against a MongoDB-wire server and the real
//! RabbitMQ: reads answered from documents another client inserted, writes through
//! Tether landing in the collection and reaching watchers, and changes the owning
//! application announces on RabbitMQ reaching watchers on `/ws` and `/monorail`.
//!
//! Needs `TETHER_TEST_MONGO` (a `mongodb://` URL; scripts/test.sh starts CongoDB and
//! sets it) and, for the announcement test, `TETHER_TEST_AMQP`; without them those
//! tests print a notice and pass without running. Each test uses its own database.
//! A MongoDB going away and coming back is a proxy in between being cut and restored.
//! The tests of an unreachable MongoDB and of bad configuration need no service.
//!
//! Not tested here, because no genuine MongoDB server installs on the machines this
//! runs on and CongoDB (the in-memory server from `@push.rocks/smartmongo` 2.2.0 that
//! stands in) lacks them: a unique index refusing a duplicate `_id` between Tether's
//! read and its insert (CongoDB does not enforce unique indexes), transactions and
//! their rollback (Tether uses none with MongoDB), and change streams (Tether does not
//! use them: announcements come through RabbitMQ).

mod common;

use common::amqp::Publisher;
use common::proxy::{reroute, Proxy};
use common::{unique, Client, TestServer};
use lapin::options::QueueDeleteOptions;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};
use mongodb::{Client as MongoClient, Collection};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

// Record ids of 24 hex digits are ObjectId `_id`s. CongoDB keeps only ObjectId `_id`s
// (it refuses a string one), so every id here is one; string ids go untested.
const N1: &str = "65a1b2c3d4e5f60718290001";
const N2: &str = "65a1b2c3d4e5f60718290002";
const N3: &str = "65a1b2c3d4e5f60718290003";
const A: &str = "65a1b2c3d4e5f6071829000a";
const B: &str = "65a1b2c3d4e5f6071829000b";
const O1: &str = "65a1b2c3d4e5f60718290011";
const PROBE: &str = "65a1b2c3d4e5f607182900ff";

fn oid(id: &str) -> ObjectId {
    ObjectId::parse_str(id).unwrap()
}

/// A whole number field, however the server typed it (CongoDB, in JavaScript, gives
/// back doubles).
fn whole(document: &Document, field: &str) -> i64 {
    match document.get(field) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) if n.fract() == 0.0 => *n as i64,
        other => panic!("{field} is {other:?} in {document}"),
    }
}

fn mongo() -> Option<String> {
    common::service("TETHER_TEST_MONGO", "MongoDB-backed resource tests")
}

/// A collection of its own, as the application that owns it sees it.
struct Owned {
    collection: Collection<Document>,
    spec: String,
}

impl Owned {
    async fn new(url: &str, resource: &str) -> Owned {
        let client = MongoClient::with_uri_str(url)
            .await
            .expect("the test connects to MongoDB");
        let database = unique("tt");
        let collection = client.database(&database).collection("items");
        Owned {
            collection,
            spec: format!("{resource}={url}#{database}/items"),
        }
    }

    async fn find(&self, id: &str) -> Option<Document> {
        self.collection
            .find_one(doc! {"_id": oid(id)})
            .await
            .unwrap()
    }
}

async fn server_for(owned: &[&Owned], changes: Vec<String>) -> TestServer {
    let specs: Vec<String> = owned.iter().map(|o| o.spec.clone()).collect();
    TestServer::start_with(|c| {
        c.mongo_resources = specs;
        c.mongo_changes = changes;
    })
    .await
}

async fn canonical(server: &TestServer) -> Client {
    Client::canonical(&server.url("/ws")).await.0
}

/// The next push of a `/ws` subscription, skipping nothing but other frames' kinds.
async fn push(c: &mut Client) -> Value {
    loop {
        let m = c.recv().await;
        if ["PUT", "PATCH", "DELETE"].contains(&m["type"].as_str().unwrap_or("")) {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_answered_from_the_collection() {
    let Some(url) = mongo() else {
        return;
    };
    let owned = Owned::new(&url, "nodes").await;
    // Written by another application: one without `_v` (version 1), one with.
    owned
        .collection
        .insert_many([
            doc! {"_id": oid(N1), "name": "compute-1", "state": "up", "rack": 2},
            doc! {"_id": oid(N2), "name": "compute-2", "state": "down", "rack": 1, "_v": 3_i64},
            doc! {"_id": oid(N3), "name": "compute-3", "state": "up", "rack": 1},
        ])
        .await
        .unwrap();
    let server = server_for(&[&owned], Vec::new()).await;

    let mut c = canonical(&server).await;
    let r = c
        .request(json!({"type": "get", "resource": "nodes", "id": N2}))
        .await;
    assert_eq!(r["record"]["version"], 3, "{r}");
    assert_eq!(
        r["record"]["data"],
        json!({"name": "compute-2", "state": "down", "rack": 1})
    );
    let r = c
        .request(json!({"type": "get", "resource": "nodes", "id": N1}))
        .await;
    assert_eq!(r["record"]["version"], 1, "{r}");
    let r = c
        .request(json!({"type": "get", "resource": "nodes", "id": "nope"}))
        .await;
    assert_eq!(r["record"], Value::Null, "{r}");
    let r = c
        .request(json!({"type": "query", "resource": "nodes", "where": {"state": "up"}, "order": "-rack", "limit": 1}))
        .await;
    let ids: Vec<&Value> = r["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids, [&json!(N1)], "{r}");
    let r = c.request(json!({"type": "all", "resource": "nodes"})).await;
    assert_eq!(r["records"].as_array().unwrap().len(), 3, "{r}");
    // A filter MongoDB would read as a path or an operator is refused, not run.
    let r = c
        .request(json!({"type": "query", "resource": "nodes", "where": {"$where": "1"}}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");

    // Seed 002's own dialect, on the channel named like the resource.
    let mut m = Client::connect(&server.url("/monorail/nodes")).await;
    m.send(json!({"handler": "query", "params": {"state": "down"}}))
        .await;
    assert_eq!(
        m.recv().await["items"],
        json!([{"id": N2, "name": "compute-2", "state": "down", "rack": 1}])
    );
    m.send(json!({"handler": "all"})).await;
    assert_eq!(m.recv().await["items"].as_array().unwrap().len(), 3);
    m.send(json!({"handler": "get", "params": {"id": N3}}))
        .await;
    let item = m.recv().await;
    assert_eq!(
        (item["handler"].clone(), item["data"]["name"].clone()),
        (json!("item"), json!("compute-3"))
    );

    // And the HTTP API, which lists the resource with its document count.
    let all: Value = reqwest::get(server.http("/api/nodes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    server.server.stop().await.unwrap();
}

/// The ids a `/ws` query answers with, in order.
async fn ids(
    c: &mut Client,
    filter: Value,
    order: Option<&str>,
    limit: Option<u64>,
) -> Vec<String> {
    let mut q = json!({"type": "query", "resource": "nodes", "where": filter});
    if let Some(order) = order {
        q["order"] = json!(order);
    }
    if let Some(limit) = limit {
        q["limit"] = json!(limit);
    }
    let r = c.request(q).await;
    let records = r["records"].as_array().unwrap_or_else(|| panic!("{r}"));
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_on_id_and_version_read_the_documents_own() {
    let Some(url) = mongo() else {
        return;
    };
    let owned = Owned::new(&url, "nodes").await;
    // The record's id is `_id` and its version `_v` (version 1 without a usable one),
    // unless the body has an `id` or `version` field of its own, which then wins.
    owned
        .collection
        .insert_many([
            doc! {"_id": oid(N1), "state": "up"},
            doc! {"_id": oid(N2), "state": "up", "_v": 3_i64},
            doc! {"_id": oid(N3), "state": "down", "_v": 2_i64, "version": 3_i64},
            doc! {"_id": oid(A), "state": "up", "id": "x"},
            doc! {"_id": oid(B), "state": "up", "_v": "junk"},
        ])
        .await
        .unwrap();
    let server = server_for(&[&owned], Vec::new()).await;
    let mut c = canonical(&server).await;
    assert_eq!(ids(&mut c, json!({"id": N2}), None, None).await, [N2]);
    assert!(ids(&mut c, json!({"id": N2, "state": "down"}), None, None)
        .await
        .is_empty());
    assert_eq!(ids(&mut c, json!({"id": "x"}), None, None).await, [A]);
    assert!(ids(&mut c, json!({"id": A}), None, None).await.is_empty());
    assert!(ids(&mut c, json!({"id": N1.to_uppercase()}), None, None)
        .await
        .is_empty());
    assert_eq!(
        ids(&mut c, json!({"version": 3}), None, None).await,
        [N2, N3]
    );
    assert!(ids(&mut c, json!({"version": 2}), None, None)
        .await
        .is_empty());
    assert_eq!(
        ids(&mut c, json!({"version": 1}), None, None).await,
        [N1, A, B]
    );
    // Version 1 is too many things to say in a MongoDB filter, so the limit is applied
    // after Tether's own check: MongoDB's first two by `_id` would be N1 and N2.
    assert_eq!(
        ids(&mut c, json!({"version": 1, "state": "up"}), None, Some(2)).await,
        [N1, A]
    );
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_land_in_the_collection_and_reach_watchers() {
    let Some(url) = mongo() else {
        return;
    };
    let owned = Owned::new(&url, "todos").await;
    let server = server_for(&[&owned], Vec::new()).await;
    let mut watcher = canonical(&server).await;
    let snap = watcher
        .request(json!({"type": "subscribe", "sub": "all", "resource": "todos"}))
        .await;
    assert_eq!(snap["records"], json!([]), "{snap}");
    let mut monorail = Client::connect(&server.url("/monorail/todos")).await;
    monorail
        .send(json!({"handler": "watch", "params": {}}))
        .await;
    assert_eq!(monorail.recv().await["handler"], "list");

    let mut writer = canonical(&server).await;
    let r = writer
        .request(json!({"type": "create", "resource": "todos", "id": A, "data": {"title": "milk", "n": 1}}))
        .await;
    assert_eq!(r["version"], 1, "{r}");
    let stored = owned
        .find(A)
        .await
        .expect("the create is in the collection");
    assert_eq!(stored.get_str("title").unwrap(), "milk");
    assert_eq!(whole(&stored, "_v"), 1);

    let r = writer
        .request(
            json!({"type": "patch", "resource": "todos", "id": A, "data": {"n": 2}, "version": 1}),
        )
        .await;
    assert_eq!(r["version"], 2, "{r}");
    let stored = owned.find(A).await.unwrap();
    assert_eq!((whole(&stored, "n"), whole(&stored, "_v")), (2, 2));

    // Create refuses an existing id; a stale expected version is a conflict.
    let r = writer
        .request(json!({"type": "create", "resource": "todos", "id": A, "data": {}}))
        .await;
    assert_eq!(r["code"], "already_exists", "{r}");
    let r = writer
        .request(json!({"type": "update", "resource": "todos", "id": A, "data": {}, "version": 1}))
        .await;
    assert_eq!(r["code"], "version_conflict", "{r}");
    // A body may not use the fields the document keeps its id and version in.
    let r = writer
        .request(json!({"type": "create", "resource": "todos", "id": B, "data": {"_v": 9}}))
        .await;
    assert_eq!(r["code"], "bad_request", "{r}");

    let r = writer
        .request(json!({"type": "delete", "resource": "todos", "id": A}))
        .await;
    assert_eq!(r["version"], 3, "{r}");
    assert!(
        owned.find(A).await.is_none(),
        "the delete reached the collection"
    );

    // The watcher saw each write, in order, with the collection's versions.
    let seen: Vec<(Value, Value)> = [
        push(&mut watcher).await,
        push(&mut watcher).await,
        push(&mut watcher).await,
    ]
    .iter()
    .map(|p| (p["type"].clone(), p["version"].clone()))
    .collect();
    assert_eq!(
        seen,
        [
            (json!("PUT"), json!(1)),
            (json!("PATCH"), json!(2)),
            (json!("DELETE"), json!(3))
        ]
    );
    // Seed 002's watcher: item, item, remove.
    let handlers: Vec<Value> = [
        monorail.recv().await,
        monorail.recv().await,
        monorail.recv().await,
    ]
    .iter()
    .map(|m| m["handler"].clone())
    .collect();
    assert_eq!(handlers, [json!("item"), json!("item"), json!("remove")]);

    // The changes are in Tether's log: a resume from the snapshot replays all three.
    let mut later = canonical(&server).await;
    let resumed = later
        .request(
            json!({"type": "subscribe", "sub": "again", "resource": "todos",
                        "since": {"epoch": snap["epoch"], "pos": snap["pos"]}}),
        )
        .await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");
    assert_eq!(push(&mut later).await["type"], "PUT");
    server.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_changes_reach_watchers() {
    let Some(url) = mongo() else {
        return;
    };
    let Some(amqp) = common::service("TETHER_TEST_AMQP", "announced-changes test") else {
        return;
    };
    let owned = Owned::new(&url, "orders").await;
    let app = Publisher::new(&amqp).await;
    let publish = |body: Value| {
        let app = &app;
        async move {
            app.publish("orders.changed", body.to_string().as_bytes())
                .await
        }
    };
    let changes = format!("orders={amqp}#{}/orders.*", app.exchange);
    let server = server_for(&[&owned], vec![changes]).await;

    let mut watcher = canonical(&server).await;
    let snap = watcher
        .request(json!({"type": "subscribe", "sub": "all", "resource": "orders"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    let mut monorail = Client::connect(&server.url("/monorail/orders")).await;
    monorail
        .send(json!({"handler": "watch", "params": {}}))
        .await;
    assert_eq!(monorail.recv().await["handler"], "list");

    // Until the server has bound its queue, announcements have nowhere to go: announce
    // a probe until one arrives.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "announcements never arrived");
        publish(json!({"op": "put", "id": PROBE, "data": {}, "version": 1})).await;
        if tokio::time::timeout(Duration::from_millis(300), push(&mut watcher))
            .await
            .is_ok()
        {
            break;
        }
    }
    // Drain any further probes at both watchers.
    publish(json!({"op": "delete", "id": PROBE, "version": 2})).await;
    while push(&mut watcher).await["type"] != "DELETE" {}
    while monorail.recv().await["handler"] != "remove" {}

    // The application writes the document itself, then announces it.
    owned
        .collection
        .insert_one(doc! {"_id": oid(O1), "item": "tea", "qty": 2, "_v": 1_i64})
        .await
        .unwrap();
    publish(json!({"op": "put", "id": O1, "data": {"_id": O1, "item": "tea", "qty": 2, "_v": 1}}))
        .await;
    let put = push(&mut watcher).await;
    assert_eq!(
        (
            put["type"].clone(),
            put["id"].clone(),
            put["version"].clone(),
            put["data"].clone()
        ),
        (
            json!("PUT"),
            json!(O1),
            json!(1),
            json!({"item": "tea", "qty": 2})
        )
    );
    let item = monorail.recv().await;
    assert_eq!(
        item,
        json!({"msg": item["msg"], "handler": "item", "data": {"id": O1, "item": "tea", "qty": 2}})
    );

    // An announcement is logged, not written back: the document is as the app left it.
    let stored = owned.find(O1).await.unwrap();
    assert_eq!(whole(&stored, "_v"), 1);
    // A get is answered from the collection.
    let r = watcher
        .request(json!({"type": "get", "resource": "orders", "id": O1}))
        .await;
    assert_eq!(r["record"]["data"]["item"], "tea", "{r}");

    owned
        .collection
        .delete_one(doc! {"_id": oid(O1)})
        .await
        .unwrap();
    publish(json!({"op": "delete", "id": O1, "version": 2})).await;
    let gone = push(&mut watcher).await;
    assert_eq!(
        (gone["type"].clone(), gone["id"].clone()),
        (json!("DELETE"), json!(O1))
    );
    let remove = monorail.recv().await;
    assert_eq!(remove["handler"], "remove", "{remove}");

    // The queue is durable (announcements wait for a node); remove this test's.
    let queue = format!(
        "tether.{}.mongo-changes:orders.{}.orders.*",
        server.server.engine.epoch().0,
        app.exchange
    );
    server.server.stop().await.unwrap();
    let _ = app
        .channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    app.delete().await;
}

/// A MongoDB that goes away (a proxy in between is cut) makes its resource
/// unavailable, promptly, while other resources keep working; once it is back, the
/// resource serves again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_going_away_and_coming_back() {
    let Some(url) = mongo() else {
        return;
    };
    let (upstream, _) = reroute(&url, "unused", 27017);
    let proxy = Proxy::start(upstream).await;
    let (_, through_proxy) = reroute(&url, &proxy.addr, 27017);
    let owned = Owned::new(&url, "flaky").await;
    owned
        .collection
        .insert_one(doc! {"_id": oid(N1), "x": 1})
        .await
        .unwrap();
    let spec = owned.spec.replace(&url, &through_proxy);
    let server = TestServer::start_with(|c| c.mongo_resources = vec![spec]).await;
    let mut c = canonical(&server).await;
    let get = json!({"type": "get", "resource": "flaky", "id": N1});
    assert_eq!(
        c.request(get.clone()).await["record"]["data"],
        json!({"x": 1})
    );

    proxy.cut();
    let started = Instant::now();
    let r = c.request(get.clone()).await;
    assert_eq!(r["code"], "unavailable", "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let r = c
        .request(json!({"type": "patch", "resource": "flaky", "id": N1, "data": {"x": 2}}))
        .await;
    assert_eq!(r["code"], "unavailable", "{r}");
    let r = c
        .request(json!({"type": "create", "resource": "local", "id": "a", "data": {}}))
        .await;
    assert_eq!(r["version"], 1, "other resources keep working: {r}");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.request(get.clone()).await;
        if r["record"]["data"] == json!({"x": 1}) {
            break;
        }
        assert_eq!(r["code"], "unavailable", "{r}");
        assert!(Instant::now() < deadline, "MongoDB never came back: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c
        .request(json!({"type": "patch", "resource": "flaky", "id": N1, "data": {"x": 2}}))
        .await;
    assert_eq!(r["version"], 2, "{r}");
    assert_eq!(whole(&owned.find(N1).await.unwrap(), "x"), 2);
    server.server.stop().await.unwrap();
}

/// A MongoDB that does not answer makes its resource unavailable, promptly and in the
/// protocol's own error form, while every other resource keeps working. Needs no
/// MongoDB: nothing listens on the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mongodb_only_fails_its_own_resource() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let spec = format!("gone=mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=500#db/items");
    let server = TestServer::start_with(|c| c.mongo_resources = vec![spec]).await;
    let mut c = canonical(&server).await;
    for request in [
        json!({"type": "get", "resource": "gone", "id": A}),
        json!({"type": "create", "resource": "gone", "id": A, "data": {}}),
        json!({"type": "subscribe", "sub": "s", "resource": "gone"}),
    ] {
        let started = Instant::now();
        let r = c.request(request.clone()).await;
        assert_eq!(r["code"], "unavailable", "{request} -> {r}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{request} took {:?}",
            started.elapsed()
        );
    }
    let r = c
        .request(json!({"type": "create", "resource": "local", "id": A, "data": {"ok": true}}))
        .await;
    assert_eq!(r["version"], 1, "other resources keep working: {r}");
    let r = c.request(json!({"type": "all", "resource": "local"})).await;
    assert_eq!(r["records"].as_array().unwrap().len(), 1, "{r}");
    server.server.stop().await.unwrap();
}

/// Bad values stop the start with one line that names the flag and hides passwords.
#[tokio::test]
async fn bad_configuration_is_one_line() {
    let cases = [
        (vec!["todos"], vec![]),
        (vec!["todos=mongodb://u:secret@h/#db"], vec![]),
        (vec!["todos=http://u:secret@h/#db/c"], vec![]),
        (vec!["todos=mongodb+srv://u:secret@h/#db/c"], vec![]),
        (vec!["bad name=mongodb://u:secret@h/#db/c"], vec![]),
        (vec![], vec!["todos=amqp://u:secret@h/%2f#ex/k"]),
        (
            vec!["todos=mongodb://u:secret@h/#db/c"],
            vec!["todos=amqp://u:secret@h/%2f"],
        ),
        (
            vec!["todos=mongodb://u:secret@h/#db/c"],
            vec!["other=amqp://u:secret@h/%2f#ex/k"],
        ),
    ];
    for (resources, changes) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            tether::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        config.mongo_resources = resources.iter().map(|s| s.to_string()).collect();
        config.mongo_changes = changes.iter().map(|s| s.to_string()).collect();
        let e = match tether::start(config).await {
            Ok(server) => {
                server.stop().await.unwrap();
                panic!("{resources:?} {changes:?} started");
            }
            Err(e) => e.message,
        };
        assert!(!e.contains('\n') && !e.contains("secret"), "{e}");
        assert!(e.starts_with("--mongo-"), "{e}");
    }
}
