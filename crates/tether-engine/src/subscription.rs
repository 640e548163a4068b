//! Subscriptions: which connections want which changes, and how a change looks to each.
//!
//! The [`Index`] lets the hub find, for one change, only the subscriptions that could
//! care (by record, by resource, by topic) without scanning every connection. A
//! [`SubState`] lives in its connection's outbox and turns a change into the push that
//! subscription should see: a query subscription sees records enter (PUT), change
//! (PUT/PATCH) and leave (DELETE).

use crate::access::ReadGuard;
use crate::outbox::Outbox;
use std::collections::{hash_map, HashMap, HashSet};
use std::sync::Arc;
use tether_core::{
    Change, ChangeKind, Outbound, Position, PushKind, RecordId, ResourceName, SubSpec, SubTarget,
};

/// A buffered change waits while a snapshot is read; past this many the connection is
/// treated as a slow consumer rather than buffering without bound.
const MAX_PENDING: usize = 100_000;

#[derive(Debug)]
pub(crate) struct SubState {
    pub(crate) spec: Arc<SubSpec>,
    /// `Some` while the initial snapshot or replay is being read: changes wait here.
    /// Boxed, like `members`: a subscription is part of every idle connection, and
    /// most need neither for long.
    #[allow(clippy::box_collection)] // on purpose: 8 bytes inline rather than 24
    pub(crate) pending: Option<Box<Vec<Arc<Change>>>>,
    /// Changes at or below this position are already in the snapshot or replay.
    pub(crate) min_pos: Position,
    /// For filtered query subscriptions (and any subscription whose reads are
    /// checked record by record): ids the client currently holds. `None` for the
    /// rest, which push every change as it is and never look.
    #[allow(clippy::box_collection)] // on purpose: 8 bytes inline rather than 48
    members: Option<Box<HashSet<RecordId>>>,
    /// What the connection's identity may read here. A record it may not read is
    /// treated like one outside the query: never pushed, and a held one that stops
    /// being readable leaves with a DELETE.
    pub(crate) guard: ReadGuard,
    pub(crate) name: Arc<str>,
}

pub(crate) enum SubView {
    Buffered,
    Skip,
    Push(Outbound),
}

impl SubState {
    pub(crate) fn pending(name: Arc<str>, spec: Arc<SubSpec>) -> SubState {
        SubState {
            spec,
            pending: Some(Box::default()),
            min_pos: Position::ZERO,
            members: None,
            guard: ReadGuard::All,
            name,
        }
    }

    pub(crate) fn view(&mut self, change: &Arc<Change>) -> SubView {
        if let Some(buffer) = &mut self.pending {
            if buffer.len() >= MAX_PENDING {
                return SubView::Skip;
            }
            buffer.push(change.clone());
            return SubView::Buffered;
        }
        if change.position <= self.min_pos {
            return SubView::Skip;
        }
        match self.kind_for(change, true) {
            Some(kind) => SubView::Push(self.push(kind, change)),
            None => SubView::Skip,
        }
    }

    /// Records what the client holds after a snapshot, if this subscription needs to
    /// know (see `members`).
    pub(crate) fn set_members<'a>(&mut self, ids: impl Iterator<Item = &'a RecordId>) {
        let tracked = self.guard.filters()
            || matches!(&self.spec.target, SubTarget::Query { query, .. } if !query.filter.is_empty());
        self.members = tracked.then(|| Box::new(ids.cloned().collect()));
    }

    pub(crate) fn push(&self, kind: PushKind, change: &Arc<Change>) -> Outbound {
        Outbound::Push {
            sub: self.name.clone(),
            spec: self.spec.clone(),
            kind,
            change: change.clone(),
        }
    }

    /// How `change` looks to this subscription, updating query membership. With
    /// `members_known` false (a replay from a client position, whose holdings the
    /// server cannot know) a filtered query sends whole records and deletes for
    /// anything that does not match; deleting an id the client lacks is harmless.
    /// Not so for a record the client may not read: a DELETE would reveal its id, so
    /// a replay never sends one for a record it has not shown the client itself.
    pub(crate) fn kind_for(&mut self, change: &Change, members_known: bool) -> Option<PushKind> {
        let as_is = match change.kind {
            ChangeKind::Put => PushKind::Put,
            ChangeKind::Patch => PushKind::Patch,
            ChangeKind::Delete => PushKind::Delete,
        };
        let guarded = self.guard.filters();
        match &self.spec.target {
            SubTarget::Record { .. } if !guarded => Some(as_is),
            SubTarget::Query { query, .. } if query.filter.is_empty() && !guarded => Some(as_is),
            SubTarget::Record { .. } | SubTarget::Query { .. } => {
                let now = change.data.as_ref().is_some_and(|d| {
                    self.spec.target.matches(&change.id, change.version, d)
                        && self.guard.allows(&change.id, d)
                });
                let members = self.members.get_or_insert_with(Box::default);
                let was = members.contains(&change.id);
                if now {
                    members.insert(change.id.clone());
                } else {
                    members.remove(&change.id);
                }
                let maybe_held = !members_known && !guarded;
                match (was || maybe_held, now) {
                    (true, true) if members_known => Some(as_is),
                    (_, true) => Some(PushKind::Put),
                    (true, false) => Some(PushKind::Delete),
                    (false, false) => None,
                }
            }
            SubTarget::Topic { .. } => None,
        }
    }
}

/// A connection's subscriptions, by name: a vector kept sorted by name rather than a
/// hash map. Most connections hold one or a few subscriptions, and a hash map's
/// smallest table holds four entries; here one costs its own size (the first slots
/// are reserved one at a time), which matters times every idle connection.
#[derive(Debug, Default)]
pub(crate) struct Subs(Vec<SubState>);

impl Subs {
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|s| (*s.name).cmp(name))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&SubState> {
        self.find(name).ok().map(|i| &self.0[i])
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut SubState> {
        self.find(name).ok().map(|i| &mut self.0[i])
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `sub`, replacing one of the same name.
    pub(crate) fn insert(&mut self, sub: SubState) {
        match self.find(&sub.name) {
            Ok(i) => self.0[i] = sub,
            Err(i) => {
                grow_one_while_small(&mut self.0);
                self.0.insert(i, sub);
            }
        }
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<SubState> {
        let removed = self.0.remove(self.find(name).ok()?);
        if self.0.is_empty() {
            self.0 = Vec::new();
        }
        Some(removed)
    }

    pub(crate) fn clear(&mut self) {
        self.0 = Vec::new();
    }

    /// In name order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &SubState)> {
        self.0.iter().map(|s| (&s.name, s))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &SubState> {
        self.0.iter()
    }
}

/// Makes room for one more element, one slot at a time while `v` is small: a
/// vector's first growth reserves four slots, and most of these vectors (a
/// connection's subscriptions, a record's watchers) hold one, times every idle
/// connection. Past four it grows as usual.
fn grow_one_while_small<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() && v.len() < 4 {
        v.reserve_exact(1);
    }
}

/// One registered subscription, as the hub sees it: the connection and the
/// subscription's name there, which together name it (a name is unique per connection).
/// Held by value in the index (two reference counts rather than an allocation of its
/// own per subscription) and cloned out for delivery.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) name: Arc<str>,
}

impl Entry {
    fn is(&self, outbox: &Arc<Outbox>, name: &str) -> bool {
        Arc::ptr_eq(&self.outbox, outbox) && *self.name == *name
    }
}

/// The subscriptions on one key. Most keys (a record) have one, held inline: a vector
/// would be an allocation of its own in every idle connection's share of the index.
#[derive(Debug)]
enum Watchers {
    One(Entry),
    Many(Vec<Entry>),
}

impl Watchers {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Watchers::One(entry) => std::slice::from_ref(entry),
            Watchers::Many(entries) => entries,
        }
    }

    fn add(&mut self, entry: Entry) {
        match self {
            Watchers::Many(entries) => {
                grow_one_while_small(entries);
                entries.push(entry);
            }
            Watchers::One(first) => {
                *self = Watchers::Many(vec![first.clone(), entry]);
            }
        }
    }

    /// Removes the subscription `name` of `outbox`; true if none is left.
    fn remove(&mut self, outbox: &Arc<Outbox>, name: &str) -> bool {
        match self {
            Watchers::One(entry) => entry.is(outbox, name),
            Watchers::Many(entries) => {
                if let Some(at) = entries.iter().position(|e| e.is(outbox, name)) {
                    entries.swap_remove(at);
                }
                match entries.len() {
                    0 => true,
                    1 => {
                        *self = Watchers::One(entries.remove(0));
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Record(ResourceName, RecordId),
    Resource(ResourceName),
    Topic(Arc<str>),
}

fn key(target: &SubTarget) -> Key {
    match target {
        SubTarget::Record { resource, id } => Key::Record(resource.clone(), id.clone()),
        SubTarget::Query { resource, .. } => Key::Resource(resource.clone()),
        SubTarget::Topic { topic } => Key::Topic(topic.as_str().into()),
    }
}

/// What a subscription watches, as far as access rules are concerned.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Watched<'a> {
    Resource(&'a ResourceName),
    Topic(&'a str),
}

/// Who might care about what.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Per key, its subscriptions. Not a map per key: most keys (a record) have one or
    /// a few, and an inner map's smallest table would cost every idle connection about
    /// a hundred bytes; removal scans, which only a key with very many watchers
    /// notices (about 30 ms for 10,000 of them closing).
    by_key: HashMap<Key, Watchers>,
}

impl Index {
    pub(crate) fn insert(&mut self, target: &SubTarget, entry: Entry) {
        match self.by_key.entry(key(target)) {
            hash_map::Entry::Occupied(mut watchers) => watchers.get_mut().add(entry),
            hash_map::Entry::Vacant(slot) => {
                slot.insert(Watchers::One(entry));
            }
        }
    }

    /// Removes the subscription `name` of `outbox` on `target`.
    pub(crate) fn remove(&mut self, target: &SubTarget, outbox: &Arc<Outbox>, name: &str) {
        let k = key(target);
        if let Some(watchers) = self.by_key.get_mut(&k) {
            if watchers.remove(outbox, name) {
                self.by_key.remove(&k);
            }
        }
    }

    /// Subscriptions that may care about a change to this record.
    pub(crate) fn for_record(&self, resource: &ResourceName, id: &RecordId) -> Vec<Entry> {
        let by_record = self.by_key.get(&Key::Record(resource.clone(), id.clone()));
        let by_resource = self.by_key.get(&Key::Resource(resource.clone()));
        by_record
            .into_iter()
            .chain(by_resource)
            .flat_map(|w| w.as_slice().iter().cloned())
            .collect()
    }

    pub(crate) fn for_topic(&self, topic: &str) -> Vec<Entry> {
        self.by_key
            .get(&Key::Topic(topic.into()))
            .map(|w| w.as_slice().to_vec())
            .unwrap_or_default()
    }

    /// The connections holding a subscription whose target passes `pick`, each once.
    pub(crate) fn outboxes_where(&self, pick: impl Fn(Watched<'_>) -> bool) -> Vec<Arc<Outbox>> {
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for (key, entries) in &self.by_key {
            let watched = match key {
                Key::Record(resource, _) | Key::Resource(resource) => Watched::Resource(resource),
                Key::Topic(topic) => Watched::Topic(topic),
            };
            if !pick(watched) {
                continue;
            }
            for entry in entries.as_slice() {
                if seen.insert(entry.outbox.id()) {
                    found.push(entry.outbox.clone());
                }
            }
        }
        found
    }

    pub(crate) fn count(&self) -> usize {
        self.by_key.values().map(|w| w.as_slice().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> SubTarget {
        SubTarget::Record {
            resource: ResourceName::parse("todos").unwrap(),
            id: RecordId::parse(id).unwrap(),
        }
    }

    fn entry(outbox: &Arc<Outbox>, name: &str) -> Entry {
        Entry {
            outbox: outbox.clone(),
            name: name.into(),
        }
    }

    /// Who the index finds for a change to `todos/<id>`, as (outbox id, name).
    fn found(index: &Index, id: &str) -> Vec<(u64, String)> {
        let resource = ResourceName::parse("todos").unwrap();
        let mut found: Vec<_> = index
            .for_record(&resource, &RecordId::parse(id).unwrap())
            .iter()
            .map(|e| (e.outbox.id(), e.name.to_string()))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_key_keeps_its_watchers_as_they_come_and_go() {
        let (a, b) = (Outbox::new(1024), Outbox::new(1024));
        let mut index = Index::default();
        index.insert(&record("x"), entry(&a, "s1"));
        index.insert(&record("x"), entry(&b, "s1"));
        index.insert(&record("x"), entry(&a, "s2"));
        index.insert(&record("y"), entry(&b, "s2"));
        assert_eq!(index.count(), 4);
        assert_eq!(
            found(&index, "x"),
            [
                (a.id(), "s1".into()),
                (a.id(), "s2".into()),
                (b.id(), "s1".into())
            ]
        );

        // By connection and name: b's s1 is not a's s1.
        index.remove(&record("x"), &b, "s1");
        assert_eq!(
            found(&index, "x"),
            [(a.id(), "s1".into()), (a.id(), "s2".into())]
        );
        // A name the key does not have, or the wrong key, removes nothing.
        index.remove(&record("x"), &b, "s2");
        index.remove(&record("y"), &a, "s1");
        assert_eq!(index.count(), 3);

        index.remove(&record("x"), &a, "s1");
        assert_eq!(found(&index, "x"), [(a.id(), "s2".into())]);
        index.remove(&record("x"), &a, "s2");
        index.remove(&record("y"), &b, "s2");
        assert!(found(&index, "x").is_empty());
        assert_eq!(index.count(), 0);
        assert!(index.by_key.is_empty(), "a key without watchers is dropped");
    }
}
