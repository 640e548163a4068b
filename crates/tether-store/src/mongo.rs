//! MongoDB-backed resources (seed 002: "a resource can point to a MongoDB collection").
//!
//! Some resources belong to another application that keeps them in a MongoDB
//! collection. [`MongoStore`] wraps the store that holds Tether's change log and routes
//! each such resource to its collection:
//!
//! - **Reads** (`get`, `query`, the snapshot of a subscription) come from the collection.
//!   A document is a record: `_id` is the record id, `_v` its version (a document without
//!   `_v`, written by someone else, is at version 1), every other field is the body. A
//!   record id of 24 hex digits is an ObjectId `_id` (what most applications use), any
//!   other id a string `_id`; an integer `_id` reads as its digits but cannot be
//!   written through Tether.
//! - **Writes through Tether** are decided against the document as it stands (with
//!   [`Write::apply`], the same rules as every store), written to the collection only if
//!   the document's `_v` is still what was read (a compare-and-swap; a lost race is a
//!   `version_conflict` the client may retry), and then logged in the wrapped store as a
//!   [`Write::logged`] change, so they get a position and fan out like any other write.
//! - **Changes announced by the owning application** (see the `mongo_changes` source of
//!   the `tether` crate) arrive as logged writes already; they are logged and never
//!   written to the collection again.
//!
//! Everything else (head, epoch, change log, compaction, resources held in the wrapped
//! store) is the wrapped store's.
//!
//! What this cannot promise, and why:
//! - A write is applied to the collection, then logged. If logging fails (the change-log
//!   store is down) or the process dies in between, the collection has the write but the
//!   log does not: the client gets an error, and watchers see it at their next snapshot.
//! - A snapshot reads the log's head first and the collection after, so it may already
//!   hold a change that is then pushed again; a repeated PUT or DELETE is harmless.
//! - MongoDB keeps no tombstones: a record deleted and created again starts at version 1.
//! - A query's filter, order and limit run in MongoDB, then the order is applied again
//!   here, so the result is ordered exactly like every other store's. With mixed value
//!   types in the order field, MongoDB's type order can pick a different first `limit`.
//!   A filter on `id` or `version` matches `_id` or `_v` unless the body has that field;
//!   `"version": 1` is too many things in MongoDB terms (no `_v`, or an unusable one), so
//!   that query reads every candidate and applies its `limit` here.
//! - Filter fields with a `.` or a leading `$` mean something else to MongoDB, and a
//!   body may not use `_id` or `_v`; both are refused with `bad_request`. An object in
//!   a filter equals an embedded document only with its fields in the same order.
//!
//! When MongoDB is unreachable, calls fail within the server-selection timeout (2 s
//! unless the URL sets `serverSelectionTimeoutMS`) with `unavailable`, and the
//! collection is then marked down: later calls fail at once, without holding up the
//! single commit path, while a probe pings it every second until it answers. The driver
//! reconnects by itself. Other resources are not affected.

use crate::{ConsistentRead, ConsistentView, ReadTarget, Replay, ResourceInfo, Store};
use async_trait::async_trait;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_core::query::MAX_LIMIT;
use tether_core::write::Stored;
use tether_core::{
    Change, Data, Epoch, Error, ErrorCode, Position, Query, Record, RecordId, ResourceName, Result,
    Write,
};

/// How long a call waits for a reachable MongoDB server unless the URL says otherwise.
/// Short, because a write waits on the one commit path that every resource shares.
const SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a collection marked down is pinged.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One `RESOURCE=mongodb://...#DATABASE/COLLECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoResource {
    pub resource: ResourceName,
    /// The connection URL, password included (never shown: see [`MongoResource::shown`]).
    pub url: String,
    pub database: String,
    pub collection: String,
}

impl MongoResource {
    /// Parses `RESOURCE=mongodb://HOST:PORT/?OPTIONS#DATABASE/COLLECTION`.
    pub fn parse(spec: &str) -> Result<MongoResource> {
        let form = "expected RESOURCE=mongodb://HOST:PORT/?OPTIONS#DATABASE/COLLECTION";
        let bad = |why: &str| {
            Error::bad_request(format!(
                "--mongo-resource {}: {why}",
                crate::postgres::redact(spec)
            ))
        };
        let Some((name, rest)) = spec.split_once('=') else {
            return Err(bad(form));
        };
        let resource = ResourceName::parse(name).map_err(|e| bad(&e.message))?;
        let Some((url, place)) = rest.rsplit_once('#') else {
            return Err(bad(form));
        };
        if url.starts_with("mongodb+srv://") {
            return Err(bad(
                "mongodb+srv:// (DNS seed lists) is not in this build; list the hosts in a mongodb:// URL",
            ));
        }
        if !url.starts_with("mongodb://") {
            return Err(bad(form));
        }
        let Some((database, collection)) = place.split_once('/') else {
            return Err(bad(form));
        };
        // MongoDB's own naming rules, checked here so a typo fails at start, not later.
        if database.is_empty()
            || database.len() > 63
            || database.contains(['/', '\\', '.', ' ', '"', '$', '\0'])
        {
            return Err(bad(&format!("{database:?} is not a MongoDB database name")));
        }
        if collection.is_empty()
            || collection.contains(['$', '\0'])
            || collection.starts_with("system.")
        {
            return Err(bad(&format!(
                "{collection:?} is not a MongoDB collection name"
            )));
        }
        Ok(MongoResource {
            resource,
            url: url.to_owned(),
            database: database.to_owned(),
            collection: collection.to_owned(),
        })
    }

    /// For logs and errors: the URL without its password, and the collection.
    pub fn shown(&self) -> String {
        format!(
            "{}#{}/{}",
            crate::postgres::redact(&self.url),
            self.database,
            self.collection
        )
    }
}

/// A store whose MongoDB-backed resources live in their collections; see the module doc.
pub struct MongoStore {
    log: Arc<dyn Store>,
    collections: HashMap<ResourceName, Backend>,
}

struct Backend {
    collection: Collection<Document>,
    shown: String,
    health: Arc<Health>,
}

/// Whether a MongoDB deployment answers; shared by the collections of one URL.
struct Health {
    client: Client,
    down: AtomicBool,
}

impl MongoStore {
    /// Wraps `log` (the store for the change log and every other resource). Connects
    /// lazily: a MongoDB that is down at start only makes its resources unavailable.
    pub async fn open(log: Arc<dyn Store>, resources: &[MongoResource]) -> Result<MongoStore> {
        let mut clients: HashMap<&str, Arc<Health>> = HashMap::new();
        let mut collections = HashMap::new();
        for spec in resources {
            let health = match clients.get(spec.url.as_str()) {
                Some(health) => health.clone(),
                None => {
                    let health = Arc::new(Health::connect(spec).await?);
                    clients.insert(&spec.url, health.clone());
                    health
                }
            };
            let collection = health
                .client
                .database(&spec.database)
                .collection::<Document>(&spec.collection);
            let backend = Backend {
                collection,
                shown: spec.shown(),
                health,
            };
            if collections.insert(spec.resource.clone(), backend).is_some() {
                return Err(Error::bad_request(format!(
                    "--mongo-resource: {} is given twice",
                    spec.resource
                )));
            }
        }
        Ok(MongoStore { log, collections })
    }

    fn backend(&self, resource: &ResourceName) -> Option<&Backend> {
        self.collections.get(resource)
    }

    /// Applies one write to its collection and returns it as a logged write.
    async fn apply(&self, backend: &Backend, write: Write) -> Result<Write> {
        check_body(&write.data)?;
        let current = backend.find(&write.resource, &write.id).await?;
        let stored = current.as_ref().map(|(record, _)| Stored {
            version: record.version,
            data: Some(record.data.clone()),
        });
        let applied = write.apply(stored.as_ref())?;
        // Only if the document is still as read: `_v` as it was, or absent.
        let unchanged = |raw: &Option<Bson>| match raw {
            Some(v) => doc! { "_id": id_bson(&write.id), "_v": v.clone() },
            None => doc! { "_id": id_bson(&write.id), "_v": { "$exists": false } },
        };
        let changed = match (&applied.data, &current) {
            (Some(data), None) => {
                let document = to_document(&write.id, applied.version, data)?;
                match backend.collection.insert_one(document).await {
                    Ok(_) => true,
                    Err(e) if is_duplicate_key(&e) => false,
                    Err(e) => return Err(backend.failed("writing", e)),
                }
            }
            (Some(data), Some((_, raw))) => {
                let document = to_document(&write.id, applied.version, data)?;
                let filter = unchanged(raw);
                let result = backend.collection.replace_one(filter, document).await;
                result
                    .map_err(|e| backend.failed("writing", e))?
                    .matched_count
                    == 1
            }
            (None, Some((_, raw))) => {
                let result = backend.collection.delete_one(unchanged(raw)).await;
                result
                    .map_err(|e| backend.failed("deleting", e))?
                    .deleted_count
                    == 1
            }
            // `apply` refuses a delete of a missing record; never panic on the commit path.
            (None, None) => {
                return Err(Error::not_found(write.resource.as_str(), write.id.as_str()))
            }
        };
        if !changed {
            return Err(Error::new(
                ErrorCode::VersionConflict,
                format!(
                    "{}/{} changed in MongoDB while it was being written; read it and retry",
                    write.resource, write.id
                ),
            ));
        }
        Ok(Write::logged(write.resource, write.id, write.data, applied))
    }
}

impl Health {
    async fn connect(spec: &MongoResource) -> Result<Health> {
        let bad = |e: mongodb::error::Error| {
            Error::bad_request(format!("--mongo-resource {}: {e}", spec.shown()))
        };
        let mut options = ClientOptions::parse(&spec.url).await.map_err(bad)?;
        options.server_selection_timeout =
            options.server_selection_timeout.or(Some(SELECTION_TIMEOUT));
        options.connect_timeout = options.connect_timeout.or(Some(SELECTION_TIMEOUT));
        options.app_name = options.app_name.or(Some("tether".into()));
        let client = Client::with_options(options).map_err(bad)?;
        Ok(Health {
            client,
            down: AtomicBool::new(false),
        })
    }

    /// Marks the deployment down and starts the probe that marks it up again.
    fn mark_down(self: &Arc<Self>, shown: &str) {
        if self.down.swap(true, Ordering::SeqCst) {
            return; // a probe is already running
        }
        tracing::warn!(collection = %shown, "MongoDB is unreachable; its resources answer unavailable until it is back");
        metrics::gauge!("tether_mongo_up").set(0.0);
        let health = Arc::downgrade(self);
        let shown = shown.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(health) = health.upgrade() else {
                    return;
                };
                let admin = health.client.database("admin");
                if admin.run_command(doc! { "ping": 1 }).await.is_ok() {
                    health.down.store(false, Ordering::SeqCst);
                    metrics::gauge!("tether_mongo_up").set(1.0);
                    tracing::info!(collection = %shown, "MongoDB is reachable again");
                    return;
                }
            }
        });
    }
}

impl Backend {
    /// Fails at once while the deployment is marked down.
    fn check(&self) -> Result<()> {
        if self.health.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable(format!(
                "MongoDB ({}) is unreachable; retry shortly",
                self.shown
            )));
        }
        Ok(())
    }

    /// A driver error as the client should see it; an unreachable server also marks
    /// the deployment down.
    fn failed(&self, what: &str, e: mongodb::error::Error) -> Error {
        let unreachable = matches!(
            *e.kind,
            ErrorKind::ServerSelection { .. }
                | ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
        );
        if unreachable {
            self.health.mark_down(&self.shown);
        }
        if let ErrorKind::Write(WriteFailure::WriteError(refused)) = &*e.kind {
            return Error::bad_request(format!(
                "MongoDB ({}) refused {what}: {}",
                self.shown, refused.message
            ));
        }
        Error::unavailable(format!("MongoDB ({}) failed {what}: {e}", self.shown))
    }

    /// The record and its raw `_v` (to compare-and-swap on), if the document exists.
    async fn find(
        &self,
        resource: &ResourceName,
        id: &RecordId,
    ) -> Result<Option<(Record, Option<Bson>)>> {
        self.check()?;
        let found = self
            .collection
            .find_one(doc! { "_id": id_bson(id) })
            .await
            .map_err(|e| self.failed("reading", e))?;
        found.map(|d| to_record(resource, d)).transpose()
    }

    async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        self.check()?;
        let mut filter = Document::new();
        let mut own = Vec::new();
        // Whether MongoDB keeps exactly what `Query::matches` keeps; if it may keep more,
        // the limit is applied only here, after the check, or it could cut matching
        // records (so such a query reads every candidate document).
        let mut exact = true;
        for (field, value) in &query.filter {
            if field.starts_with('$') || field.contains('.') {
                return Err(Error::bad_request(format!(
                    "{resource} is a MongoDB collection: cannot filter on {field:?} (a '.' or leading '$' means something else there)"
                )));
            }
            // `$eq` compares the value as a value, even an object with `$` keys.
            let bson = to_bson(value)?;
            match own_field(field, value) {
                Some((in_document, clause_exact)) => {
                    exact &= clause_exact;
                    own.push(doc! { "$or": [
                        { field.as_str(): { "$eq": bson, "$exists": true } },
                        in_document,
                    ] });
                }
                None => {
                    filter.insert(field.as_str(), doc! { "$eq": bson });
                }
            }
        }
        if !own.is_empty() {
            filter.insert("$and", own);
        }
        let mut find = self.collection.find(filter);
        if exact {
            let limit = query.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
            find = find.limit(limit as i64);
        }
        if let Some(order) = &query.order {
            let field = match order.field.as_str() {
                "id" => "_id",
                "version" => "_v",
                other => other,
            };
            let direction = if order.descending { -1 } else { 1 };
            find = find.sort(doc! { field: direction, "_id": 1 });
        } else {
            find = find.sort(doc! { "_id": 1 });
        }
        let mut cursor = find.await.map_err(|e| self.failed("querying", e))?;
        let mut records = Vec::new();
        while cursor
            .advance()
            .await
            .map_err(|e| self.failed("querying", e))?
        {
            let document = cursor
                .deserialize_current()
                .map_err(|e| self.failed("reading a document", e))?;
            match to_record(resource, document) {
                Ok((record, _)) if query.matches(&record.id, record.version, &record.data) => {
                    records.push(record)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(collection = %self.shown, error = %e, "skipping a document")
                }
            }
        }
        query.order_and_limit(&mut records);
        Ok(records)
    }
}

/// `data` may not hold the fields the document keeps the id and version in.
fn check_body(data: &Data) -> Result<()> {
    match ["_id", "_v"].into_iter().find(|f| data.contains_key(*f)) {
        Some(field) => Err(Error::bad_request(format!(
            "a body stored in MongoDB may not have a field {field:?}"
        ))),
        None => Ok(()),
    }
}

/// For a filter on `id` or `version`, which name the record's own id and version unless
/// the body has such a field: what a document whose body lacks the field must hold to
/// match (its `_id` or `_v`), and whether that condition is exact (else it keeps more,
/// and the in-memory check drops the rest). `None` for any other field.
fn own_field(field: &str, want: &Value) -> Option<(Document, bool)> {
    // Never true: the body lacks the field, and the record's own value differs.
    let nothing = || doc! { "_id": { "$exists": false } };
    let absent = |then: Document| {
        let mut clause = doc! { field: { "$exists": false } };
        clause.extend(then);
        clause
    };
    match field {
        "id" => {
            let Value::String(id) = want else {
                return Some((nothing(), true));
            };
            // Every `_id` `to_record` reads as this id: a string, an ObjectId, an integer.
            let mut ids = vec![Bson::String(id.clone())];
            // Only the spellings that read back as this very id (lower-case hex, no
            // leading zeros), so the condition stays exact.
            if let Some(oid) = ObjectId::parse_str(id).ok().filter(|o| o.to_hex() == *id) {
                ids.push(Bson::ObjectId(oid));
            }
            if let Some(n) = id.parse::<i64>().ok().filter(|n| n.to_string() == *id) {
                ids.push(Bson::Int64(n));
            }
            Some((absent(doc! { "_id": { "$in": ids } }), true))
        }
        "version" => match want.as_u64().and_then(|v| i64::try_from(v).ok()) {
            // Version 1 is also every document whose `_v` is missing or unusable: keep
            // them all rather than mirror `to_record`'s rules in a MongoDB filter.
            Some(1) => Some((absent(Document::new()), false)),
            Some(v) if v > 1 => Some((absent(doc! { "_v": { "$eq": v } }), true)),
            _ => Some((nothing(), true)),
        },
        _ => None,
    }
}

fn to_bson(value: &Value) -> Result<Bson> {
    Bson::try_from(value.clone())
        .map_err(|e| Error::bad_request(format!("not storable in MongoDB: {e}")))
}

fn to_document(id: &RecordId, version: u64, data: &Data) -> Result<Document> {
    let mut document = doc! { "_id": id_bson(id) };
    for (field, value) in data {
        document.insert(field.as_str(), to_bson(value)?);
    }
    let version = i64::try_from(version).map_err(|_| Error::internal("version overflow"))?;
    document.insert("_v", version);
    Ok(document)
}

/// A document as a record, and its raw `_v`.
fn to_record(resource: &ResourceName, mut document: Document) -> Result<(Record, Option<Bson>)> {
    let id = match document.remove("_id") {
        Some(Bson::String(s)) => s,
        Some(Bson::ObjectId(oid)) => oid.to_hex(),
        Some(Bson::Int32(n)) => n.to_string(),
        Some(Bson::Int64(n)) => n.to_string(),
        other => {
            return Err(Error::internal(format!(
                "a document's _id {other:?} cannot be a record id"
            )))
        }
    };
    let id = RecordId::parse(&id)?;
    let raw = document.remove("_v");
    let version = match &raw {
        Some(Bson::Int32(n)) if *n > 0 => *n as u64,
        Some(Bson::Int64(n)) if *n > 0 => *n as u64,
        // JavaScript applications (and CongoDB) write whole numbers as doubles.
        Some(Bson::Double(n)) if *n >= 1.0 && n.fract() == 0.0 && *n < 9.0e15 => *n as u64,
        // Written by someone other than Tether: it exists, so it is at version 1.
        _ => 1,
    };
    let Value::Object(data) = Bson::Document(document).into_relaxed_extjson() else {
        return Err(Error::internal("a BSON document became a non-object"));
    };
    let record = Record {
        resource: resource.clone(),
        id,
        version,
        data,
    };
    Ok((record, raw))
}

/// The `_id` of a record: an ObjectId for 24 hex digits, else the string.
fn id_bson(id: &RecordId) -> Bson {
    let text = id.as_str();
    match ObjectId::parse_str(text) {
        Ok(oid) if text.len() == 24 => Bson::ObjectId(oid),
        _ => Bson::String(text.to_owned()),
    }
}

/// An insert refused because the `_id` exists (someone inserted it since the read).
/// Code 11000 alone is not enough: CongoDB, the test stand-in, gives it to every
/// refused insert.
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w))
        if w.code == 11000 && w.message.to_ascii_lowercase().contains("duplicate key"))
}

#[async_trait]
impl Store for MongoStore {
    fn epoch(&self) -> &Epoch {
        self.log.epoch()
    }

    async fn head(&self) -> Result<Position> {
        self.log.head().await
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Result<Change>>> {
        // Apply the MongoDB writes first, then log everything in one group, in order.
        let mut refusals: Vec<Option<Error>> = Vec::with_capacity(writes.len());
        let mut to_log = Vec::with_capacity(writes.len());
        for write in writes {
            let prepared = match self.backend(&write.resource) {
                Some(backend) if write.keeps_record() => self.apply(backend, write).await,
                _ => Ok(write),
            };
            match prepared {
                Ok(write) => {
                    to_log.push(write);
                    refusals.push(None);
                }
                Err(e) => refusals.push(Some(e)),
            }
        }
        let mut logged = self.log.commit(to_log).await?.into_iter();
        Ok(refusals
            .into_iter()
            .map(|refused| match refused {
                Some(e) => Err(e),
                None => logged
                    .next()
                    .unwrap_or_else(|| Err(Error::internal("the log lost an outcome"))),
            })
            .collect())
    }

    async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
        match self.backend(resource) {
            Some(backend) => Ok(backend.find(resource, id).await?.map(|(r, _)| r)),
            None => self.log.get(resource, id).await,
        }
    }

    async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        match self.backend(resource) {
            Some(backend) => backend.query(resource, query).await,
            None => self.log.query(resource, query).await,
        }
    }

    async fn read(&self, read: ConsistentRead) -> Result<ConsistentView> {
        let in_mongo = |t: &ReadTarget| match t {
            ReadTarget::Record { resource, .. } | ReadTarget::Query { resource, .. } => {
                self.collections.contains_key(resource)
            }
        };
        if !read.targets.iter().any(in_mongo) {
            return self.log.read(read).await;
        }
        // The log first, then the collections: what they return is at least as new as
        // the head, so nothing after the head can be missed (only repeated).
        let (mongo, local): (Vec<_>, Vec<_>) = read
            .targets
            .iter()
            .cloned()
            .enumerate()
            .partition(|(_, t)| in_mongo(t));
        let view = self
            .log
            .read(ConsistentRead {
                targets: local.iter().map(|(_, t)| t.clone()).collect(),
                changes_after: read.changes_after,
            })
            .await?;
        let mut results = vec![Vec::new(); read.targets.len()];
        for ((i, _), result) in local.into_iter().zip(view.results) {
            results[i] = result;
        }
        for (i, target) in mongo {
            results[i] = match target {
                ReadTarget::Record { resource, id } => {
                    self.get(&resource, &id).await?.into_iter().collect()
                }
                ReadTarget::Query { resource, query } => self.query(&resource, &query).await?,
            };
        }
        Ok(ConsistentView {
            head: view.head,
            results,
            changes: view.changes,
        })
    }

    async fn changes_since(&self, after: Position, limit: usize) -> Result<Replay> {
        self.log.changes_since(after, limit).await
    }

    async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        let mut all: Vec<ResourceInfo> = self
            .log
            .resources()
            .await?
            .into_iter()
            .filter(|r| !self.collections.contains_key(&r.name))
            .collect();
        for (name, backend) in &self.collections {
            // An unreachable collection is left out rather than failing the whole list.
            let counted = match backend.check() {
                Ok(()) => backend
                    .collection
                    .count_documents(doc! {})
                    .await
                    .map_err(|e| backend.failed("counting", e)),
                Err(e) => Err(e),
            };
            match counted {
                Ok(records) => all.push(ResourceInfo {
                    name: name.clone(),
                    records,
                }),
                Err(e) => tracing::warn!(error = %e, "leaving a MongoDB resource out of the list"),
            }
        }
        all.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        Ok(all)
    }

    async fn compact(&self, through: Position) -> Result<()> {
        self.log.compact(through).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let s = MongoResource::parse(
            "todos=mongodb://u:pw@127.0.0.1:27017/?directConnection=true#app/todo_items",
        )
        .unwrap();
        assert_eq!(s.resource.as_str(), "todos");
        assert_eq!(
            s.url,
            "mongodb://u:pw@127.0.0.1:27017/?directConnection=true"
        );
        assert_eq!(
            (s.database.as_str(), s.collection.as_str()),
            ("app", "todo_items")
        );
        assert!(!s.shown().contains("pw"));
        for bad in [
            "todos",
            "mongodb://u:pw@h/#db/c",
            "bad name=mongodb://u:pw@h/#db/c",
            "todos=postgres://u:pw@h/#db/c",
            "todos=mongodb://u:pw@h/",
            "todos=mongodb://u:pw@h/#db",
            "todos=mongodb://u:pw@h/#d.b/c",
            "todos=mongodb://u:pw@h/#db/",
            "todos=mongodb://u:pw@h/#db/system.users",
            "todos=mongodb+srv://u:pw@h/#db/c",
        ] {
            let e = MongoResource::parse(bad).unwrap_err();
            assert!(!e.message.contains("pw"), "{}", e.message);
            assert!(e.message.starts_with("--mongo-resource "), "{}", e.message);
            assert!(!e.message.contains('\n'), "{}", e.message);
        }
    }

    #[test]
    fn documents_and_records() {
        let res = ResourceName::parse("t").unwrap();
        let id = RecordId::parse("a").unwrap();
        let data = serde_json::json!({"n": 1, "s": "x", "o": {"k": [true, null]}});
        let Value::Object(data) = data else { panic!() };
        let document = to_document(&id, 3, &data).unwrap();
        let (record, raw) = to_record(&res, document).unwrap();
        assert_eq!((record.id, record.version, record.data), (id, 3, data));
        assert_eq!(raw, Some(Bson::Int64(3)));
        let (foreign, raw) = to_record(&res, doc! { "_id": "b", "x": 1 }).unwrap();
        assert_eq!((foreign.version, raw), (1, None));
        let (js, _) = to_record(&res, doc! { "_id": "c", "_v": 4.0 }).unwrap();
        assert_eq!(js.version, 4);
        assert!(check_body(&serde_json::from_str(r#"{"_v": 1}"#).unwrap()).is_err());
        let oid = RecordId::parse("65a1b2c3d4e5f60718293a4b").unwrap();
        assert!(matches!(id_bson(&oid), Bson::ObjectId(_)));
        let (back, _) = to_record(&res, doc! { "_id": id_bson(&oid) }).unwrap();
        assert_eq!(back.id, oid);
        assert_eq!(
            id_bson(&RecordId::parse("abc").unwrap()),
            Bson::String("abc".into())
        );
    }
}
