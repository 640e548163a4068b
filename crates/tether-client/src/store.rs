//! The optional local store: the records the client's subscriptions hold, by resource
//! and id, kept current by every snapshot and push.
//!
//! Each subscription keeps its own copy of what it holds (as the TypeScript client's
//! `Subscription.records` does), because subscriptions resume from different positions
//! and a replayed push must be applied to the state *that subscription* had. The store
//! is the union: for a record held by several subscriptions it answers with the copy
//! of the highest version, and it forgets a record once no subscription holds it. So a
//! record that leaves one query but is still in another stays, and a deleted record
//! disappears once every subscription that held it has seen the delete.

use crate::types::{merge_patch, Data, Record};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// A read-only view of the records held by the client's subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    held: Mutex<Held>,
    /// Bumped after every applied change, for callers that re-render on change.
    revision: watch::Sender<u64>,
}

#[derive(Default)]
struct Held {
    /// Per subscription: id to record (a subscription covers one resource).
    subs: HashMap<Arc<str>, HashMap<String, Record>>,
    /// (resource, id) to the subscriptions holding it; ordered for `all`.
    holders: BTreeMap<(String, String), Vec<Arc<str>>>,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore")
            .field("records", &self.len())
            .finish()
    }
}

impl LocalStore {
    pub(crate) fn new() -> LocalStore {
        LocalStore {
            inner: Arc::new(Inner {
                held: Mutex::new(Held::default()),
                revision: watch::channel(0).0,
            }),
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Every critical section leaves the maps consistent; a poisoned lock (a panic
        // in a caller's thread) is safe to keep using.
        self.inner.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record, if a subscription holds it.
    pub fn get(&self, resource: &str, id: &str) -> Option<Record> {
        let held = self.held();
        held.best(resource, id).cloned()
    }

    /// Every held record of a resource, ordered by id.
    pub fn all(&self, resource: &str) -> Vec<Record> {
        let held = self.held();
        held.holders
            .range((resource.to_owned(), String::new())..)
            .take_while(|((r, _), _)| r == resource)
            .filter_map(|((r, id), _)| held.best(r, id).cloned())
            .collect()
    }

    /// How many distinct records are held.
    pub fn len(&self) -> usize {
        self.held().holders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that changes after every applied snapshot or push.
    pub fn changed(&self) -> watch::Receiver<u64> {
        self.inner.revision.subscribe()
    }

    fn bump(&self) {
        self.inner.revision.send_modify(|r| *r += 1);
    }

    /// The records subscription `sub` holds, ordered by id.
    pub(crate) fn sub_records(&self, sub: &str) -> Vec<Record> {
        let held = self.held();
        let mut records: Vec<Record> = held
            .subs
            .get(sub)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        records
    }

    /// A snapshot: `sub` now holds exactly `records`.
    pub(crate) fn replace(&self, sub: &Arc<str>, records: &[Record]) {
        let mut held = self.held();
        held.drop_sub(sub);
        let mut mine = HashMap::with_capacity(records.len());
        for r in records {
            held.hold(sub, &r.resource, &r.id);
            mine.insert(r.id.clone(), r.clone());
        }
        held.subs.insert(sub.clone(), mine);
        drop(held);
        self.bump();
    }

    pub(crate) fn put(&self, sub: &Arc<str>, record: &Record) {
        let mut held = self.held();
        held.hold(sub, &record.resource, &record.id);
        held.subs
            .entry(sub.clone())
            .or_default()
            .insert(record.id.clone(), record.clone());
        drop(held);
        self.bump();
    }

    /// Applies a merge patch to `sub`'s copy; returns the patched record, or `None` if
    /// the subscription did not hold it (the protocol only patches held records).
    pub(crate) fn patch(
        &self,
        sub: &Arc<str>,
        id: &str,
        version: u64,
        patch: &Data,
    ) -> Option<Record> {
        let mut held = self.held();
        let record = held.subs.get_mut(sub)?.get_mut(id)?;
        merge_patch(&mut record.data, patch);
        record.version = version;
        let record = record.clone();
        drop(held);
        self.bump();
        Some(record)
    }

    pub(crate) fn remove(&self, sub: &Arc<str>, resource: &str, id: &str) {
        let mut held = self.held();
        if let Some(mine) = held.subs.get_mut(sub) {
            mine.remove(id);
        }
        held.release(sub, resource, id);
        drop(held);
        self.bump();
    }

    /// The subscription ended: forget what only it held.
    pub(crate) fn drop_sub(&self, sub: &Arc<str>) {
        let mut held = self.held();
        held.drop_sub(sub);
        held.subs.remove(sub);
        drop(held);
        self.bump();
    }
}

impl Held {
    fn best(&self, resource: &str, id: &str) -> Option<&Record> {
        let holders = self.holders.get(&(resource.to_owned(), id.to_owned()))?;
        holders
            .iter()
            .filter_map(|s| self.subs.get(s)?.get(id))
            .filter(|r| r.resource == resource)
            .max_by_key(|r| r.version)
    }

    fn hold(&mut self, sub: &Arc<str>, resource: &str, id: &str) {
        let holders = self
            .holders
            .entry((resource.to_owned(), id.to_owned()))
            .or_default();
        if !holders.contains(sub) {
            holders.push(sub.clone());
        }
    }

    fn release(&mut self, sub: &Arc<str>, resource: &str, id: &str) {
        let key = (resource.to_owned(), id.to_owned());
        if let Some(holders) = self.holders.get_mut(&key) {
            holders.retain(|s| s != sub);
            if holders.is_empty() {
                self.holders.remove(&key);
            }
        }
    }

    fn drop_sub(&mut self, sub: &Arc<str>) {
        let Some(mine) = self.subs.get(sub) else {
            return;
        };
        let keys: Vec<(String, String)> = mine
            .values()
            .map(|r| (r.resource.clone(), r.id.clone()))
            .collect();
        for (resource, id) in keys {
            self.release(sub, &resource, &id);
        }
        if let Some(mine) = self.subs.get_mut(sub) {
            mine.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(id: &str, version: u64, data: serde_json::Value) -> Record {
        Record {
            resource: "todos".into(),
            id: id.into(),
            version,
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn union_of_subscriptions_with_the_newest_copy() {
        let store = LocalStore::new();
        let (open, all): (Arc<str>, Arc<str>) = ("open".into(), "all".into());
        store.replace(&open, &[rec("a", 1, json!({"done": false}))]);
        store.replace(
            &all,
            &[
                rec("a", 1, json!({"done": false})),
                rec("b", 1, json!({"done": true})),
            ],
        );
        assert_eq!(store.len(), 2);

        // "a" leaves the open query (DELETE there) but the resource subscription
        // patches it: it stays, at the new version.
        store.remove(&open, "todos", "a");
        let patched = store.patch(&all, "a", 2, json!({"done": true}).as_object().unwrap());
        assert_eq!(patched.unwrap().data["done"], true);
        assert_eq!(store.get("todos", "a").unwrap().version, 2);

        // A real delete reaches both; once every holder saw it, it is gone.
        store.remove(&all, "todos", "b");
        assert!(store.get("todos", "b").is_none());
        assert_eq!(
            store.all("todos").iter().map(|r| &r.id).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(store.all("other").is_empty());

        store.drop_sub(&all);
        assert!(store.is_empty());
        assert_eq!(*store.changed().borrow(), 6);
    }

    #[test]
    fn a_patch_of_a_record_not_held_is_not_applied() {
        let store = LocalStore::new();
        let s: Arc<str> = "s".into();
        assert!(store.patch(&s, "x", 2, &Data::new()).is_none());
        assert!(store.get("todos", "x").is_none());
    }
}
