//! The engine: applies commands to the store, orders committed changes, and routes them
//! to subscribers.
//!
//! - [`commit`]: the one write path and group commit.
//! - [`hub`]: fan-out in change-log order, filling bus gaps from the store.
//! - [`subscription`]: the subscriber index and how a change looks to a subscription.
//! - [`outbox`]: each connection's bounded, ordered queue.
//! - [`presence`]: who is in which room.
//! - [`access`]: identities and the access policy every read, write and push obeys.
//! - [`knobs`]: every tunable.
//!
//! The engine imports no dialect and no socket type, and never awaits a client.

pub mod access;
mod alarm;
pub mod commit;
mod expiring;
pub mod hub;
pub mod knobs;
pub mod outbox;
pub mod presence;
pub mod subscription;

use commit::PendingWrite;
use expiring::Expiring;
use hub::Hub;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Instant;
use subscription::{Entry, SubState, Watched};
use tether_bus::{Bus, BusMessage};
use tether_core::{
    Audience, Change, Epoch, Error, ErrorCode, Outbound, Position, Query, Record, RecordId,
    ResourceName, Result, ResyncReason, Since, SubSpec, SubTarget, Tag, Write,
};
use tether_store::{ConsistentRead, ReadTarget, Replay, ResourceInfo, Store};
use tokio::sync::{mpsc, oneshot, watch};

pub use access::{Access, Identity, ReadGuard};
pub use knobs::Knobs;
pub use outbox::{Closed, Outbox};
pub use presence::Presence;

/// A write handed to the committer ([`Engine::begin_write`]): resolves to its change
/// once durable, or to why it was refused. Dropping it does not undo the write.
#[derive(Debug)]
pub struct Committing(oneshot::Receiver<Result<Arc<Change>>>);

impl std::future::Future for Committing {
    type Output = Result<Arc<Change>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|answer| {
            answer.unwrap_or_else(|_| {
                Err(Error::unavailable("the committer stopped before answering"))
            })
        })
    }
}

/// A closed session's subscriptions, when it closed, and who it was (so another
/// caller cannot take them over with a resume).
type Retained = (Vec<(Arc<str>, Arc<SubSpec>)>, Instant, Option<Arc<str>>);

/// How often a checked write retries when the record changed between its access check
/// and its commit (see [`Engine::write_as`]).
const CHECKED_WRITE_ATTEMPTS: usize = 5;

/// How many replaced access policies are remembered for resumes from before a reload;
/// a resume older than all of them gets a fresh snapshot.
const MAX_REMEMBERED_POLICIES: usize = 16;

/// A cheap-clone handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    /// Dropped with the last Engine clone, which stops the hub and the compactor.
    _stop: watch::Sender<()>,
    /// Wake-ups for the connections' timers (see [`Engine::wake_at`]).
    alarms: Arc<alarm::Alarms>,
    /// Every open connection's outbox, for [`Engine::go_away`].
    connections: Mutex<HashMap<u64, Weak<Outbox>>>,
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    hub: Arc<Hub>,
    writes: mpsc::Sender<PendingWrite>,
    knobs: Knobs,
    presence: Arc<Presence>,
    /// The policy in force; replaced whole by [`Engine::replace_access`].
    access: RwLock<Policy>,
    /// Earlier policies and the position up to which pushes were filtered by them,
    /// newest last, so a resume from before a reload can be answered with a fresh
    /// snapshot where the rule that filtered it changed.
    replaced: Mutex<Vec<(Access, Position)>>,
    /// Subscriptions of closed sessions, for `resume` without a subscription list.
    retained: Mutex<Expiring<Retained>>,
    /// With access rules on: the subject each session id belongs to, and when its last
    /// connection closed (`None` while open), so only that subject can take it over.
    owners: Mutex<Expiring<SessionOwner>>,
}

/// Who holds a session id: its subject, and when it closed (`None` while it is open).
type SessionOwner = (Option<Arc<str>>, Option<Instant>);

/// An access policy and how many reloads came before it. A subscription notes the
/// generation it was checked under: a reload finds the subscriptions to close in the
/// hub's index, so one checked before the reload but registered after its scan would
/// otherwise keep what the old rules allowed (see [`Engine::register_checked`]).
#[derive(Clone)]
struct Policy {
    access: Access,
    generation: u64,
}

/// A subscription's access check: what it may see, and under which policy.
struct Checked {
    guard: ReadGuard,
    generation: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("epoch", self.epoch())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the committer and the hub on the current tokio runtime, with no access
    /// rules (everything allowed).
    pub async fn start(store: Arc<dyn Store>, bus: Arc<dyn Bus>, knobs: Knobs) -> Result<Engine> {
        Engine::start_with_access(store, bus, knobs, Access::open()).await
    }

    /// Like [`Engine::start`], enforcing `access` on every `*_as` call and subscription.
    pub async fn start_with_access(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        knobs: Knobs,
        access: Access,
    ) -> Result<Engine> {
        let head = store.head().await?;
        let hub = Arc::new(Hub::new(head));
        // The background tasks end when the last Engine clone is gone: the sender lives
        // in `Inner`, and its drop ends every receiver's wait. (The committer ends on
        // its own when the write queue's sender goes the same way.)
        let (stop, stopped) = watch::channel(());
        let (writes, queue) = mpsc::channel(knobs.commit_queue);
        tokio::spawn(commit::run_committer(
            store.clone(),
            bus.clone(),
            queue,
            knobs.max_commit_batch,
        ));
        tokio::spawn(hub.clone().run(
            store.clone(),
            bus.clone(),
            knobs.hub_check_interval,
            stopped.clone(),
        ));
        // Presence crosses nodes only on a shared bus; one node keeps it in memory.
        let presence = if bus.is_shared() {
            let (presence, outgoing) = Presence::networked();
            let presence = Arc::new(presence);
            tokio::spawn(presence::run_networked(
                Arc::downgrade(&presence),
                bus.clone(),
                outgoing,
                knobs.presence_heartbeat,
            ));
            presence
        } else {
            Arc::new(Presence::default())
        };
        let alarms = Arc::new(alarm::Alarms::new());
        tokio::spawn(alarm::run(Arc::downgrade(&alarms)));
        tokio::spawn(compact_periodically(
            store.clone(),
            knobs.log_retention,
            knobs.compaction_interval,
            stopped,
        ));
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                bus,
                hub,
                writes,
                knobs,
                presence,
                access: RwLock::new(Policy {
                    access,
                    generation: 0,
                }),
                replaced: Mutex::new(Vec::new()),
                retained: Mutex::default(),
                owners: Mutex::default(),
                _stop: stop,
                connections: Mutex::new(HashMap::new()),
                alarms,
            }),
        })
    }

    pub fn knobs(&self) -> &Knobs {
        &self.inner.knobs
    }

    pub fn epoch(&self) -> &Epoch {
        self.inner.store.epoch()
    }

    /// The last position the hub has delivered to subscribers.
    pub fn position(&self) -> Position {
        self.inner.hub.processed()
    }

    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    /// The access policy in force (a cheap handle; a reload does not change one
    /// already taken).
    pub fn access(&self) -> Access {
        self.policy().access
    }

    fn policy(&self) -> Policy {
        self.inner
            .access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new access policy in force (a reload of the rules file). Every later
    /// request is checked against it. Connections holding a subscription whose read or
    /// subscribe rule changed are closed with [`Closed::AccessChanged`]: their pushes
    /// were filtered by the old rule, and no push can take back a record the new rule
    /// hides. They reconnect and resume; a resume from before the reload gets a fresh
    /// snapshot under the new rule (resync reason `access_changed`), or `forbidden`.
    /// Returns how many connections were closed.
    ///
    /// A subscription checked under the old rules but registered only after the scan
    /// below is not missed: it sees the new generation and checks again.
    ///
    /// A server without auth stays open and one with rules keeps rules: that switch
    /// changes who may connect at all, so it needs a restart.
    pub fn replace_access(&self, new: Access) -> Result<usize> {
        let old = {
            // Swapped and counted under one lock, so two reloads cannot both replace
            // the same policy and a generation always names one policy.
            let mut policy = self.inner.access.write().unwrap_or_else(|p| p.into_inner());
            if policy.access.is_open() != new.is_open() {
                return Err(Error::bad_request(
                    "turning access rules on or off needs a restart; a reload can only change them",
                ));
            }
            policy.generation += 1;
            std::mem::replace(&mut policy.access, new.clone())
        };
        let affected: Vec<Arc<Outbox>> = {
            let index = self.inner.hub.index();
            index.outboxes_where(|watched| match watched {
                Watched::Resource(resource) => old.read_rule_differs(&new, resource.as_str()),
                Watched::Topic(topic) => old.subscribe_rule_differs(&new, topic),
            })
        };
        for outbox in &affected {
            outbox.close_because(Closed::AccessChanged);
        }
        // The affected outboxes take nothing more, so no push they hold is later than
        // what the hub has processed now.
        let mark = self.position();
        let mut replaced = self
            .inner
            .replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        replaced.push((old, mark));
        if replaced.len() > MAX_REMEMBERED_POLICIES {
            replaced.remove(0);
        }
        Ok(affected.len())
    }

    /// Whether a subscription resumed from `since` must be answered with a snapshot
    /// because a reload changed the rule that filtered what it was sent.
    fn access_changed_since(&self, since: Position, target: &SubTarget) -> bool {
        let replaced = self
            .inner
            .replaced
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(oldest) = replaced.first() else {
            return false;
        };
        if replaced.len() == MAX_REMEMBERED_POLICIES && since <= oldest.1 {
            return true; // older than what is remembered: be safe
        }
        let current = self.access();
        replaced.iter().any(|(old, mark)| {
            since <= *mark
                && match target {
                    SubTarget::Record { resource, .. } | SubTarget::Query { resource, .. } => {
                        old.read_rule_differs(&current, resource.as_str())
                    }
                    SubTarget::Topic { .. } => false,
                }
        })
    }

    pub fn new_outbox(&self) -> Arc<Outbox> {
        let outbox = Outbox::new(self.inner.knobs.outbox_max_bytes);
        self.connections()
            .insert(outbox.id(), Arc::downgrade(&outbox));
        outbox
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Weak<Outbox>>> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the task waiting on `outbox` at `at` (or up to a tenth of a second later),
    /// whatever else happens: the timers of a connection (ping, idle timeout, token
    /// expiry) without a timer of its own in every connection's state. The woken task
    /// reads its clock; asking again before then only adds a wake-up.
    pub fn wake_at(&self, outbox: &Arc<Outbox>, at: Instant) {
        self.inner.alarms.set(outbox, at);
    }

    /// Asks every connection to close with "going away" (shutdown): each answers its
    /// writes in flight, sends what is queued, then closes (1001).
    pub fn go_away(&self) {
        let outboxes: Vec<Arc<Outbox>> = self
            .connections()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for outbox in outboxes {
            outbox.go_away();
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.inner.hub.index().count()
    }

    // ---- reads and writes -------------------------------------------------------

    pub async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
        self.inner.store.get(resource, id).await
    }

    pub async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        self.inner.store.query(resource, query).await
    }

    pub async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        self.inner.store.resources().await
    }

    /// Commits one write; returns once it is durable. Its change then fans out.
    pub async fn write(&self, write: Write) -> Result<Arc<Change>> {
        self.begin_write(write).await?.await
    }

    /// Hands `write` to the committer and returns at once with what resolves when it
    /// is durable (or refused). Writes begun one after another commit in that order,
    /// so a connection can have several in flight (sharing a group commit) and still
    /// answer them in order. Waits only while the commit queue is full.
    pub async fn begin_write(&self, write: Write) -> Result<Committing> {
        let (done, outcome) = oneshot::channel();
        self.inner
            .writes
            .send(PendingWrite { write, done })
            .await
            .map_err(|_| Error::unavailable("the engine is shutting down"))?;
        Ok(Committing(outcome))
    }

    // ---- the same, as a caller (checked against the access rules) ----------------
    //
    // The plain calls above are for trusted code (sources, tools). Everything a client
    // asks for (every dialect and the HTTP API) goes through these.

    /// [`Engine::get`] as `who`. A record `who` may not read is `forbidden`, as is any
    /// record of a resource `who` may read nothing of.
    pub async fn get_as(
        &self,
        who: &Arc<Identity>,
        resource: &ResourceName,
        id: &RecordId,
    ) -> Result<Option<Record>> {
        let access = self.access();
        if access.is_open() {
            return self.get(resource, id).await;
        }
        let denied =
            || access::forbidden(format!("{} may not read {resource}/{id}", who.describe()));
        if let ReadGuard::None = access.read_guard(who, resource) {
            return Err(denied());
        }
        match self.get(resource, id).await? {
            Some(r) if !access.may_read(who, resource, id, &r.data) => Err(denied()),
            found => Ok(found),
        }
    }

    /// [`Engine::query`] as `who`: only the records `who` may read. The limit applies
    /// after that filter, so a caller gets up to `limit` records it may see.
    pub async fn query_as(
        &self,
        who: &Arc<Identity>,
        resource: &ResourceName,
        query: &Query,
    ) -> Result<Vec<Record>> {
        match self.access().read_guard(who, resource) {
            ReadGuard::All => self.query(resource, query).await,
            ReadGuard::None => Err(access::forbidden(format!(
                "{} may not read {resource}",
                who.describe()
            ))),
            guard @ ReadGuard::Check(_) => {
                let Some(narrowed) = guard.narrow(query) else {
                    return Ok(Vec::new());
                };
                let unlimited = Query {
                    limit: None,
                    ..narrowed
                };
                let mut records = self.query(resource, &unlimited).await?;
                records.retain(|r| guard.allows(&r.id, &r.data));
                if let Some(limit) = query.limit {
                    records.truncate(limit);
                }
                Ok(records)
            }
        }
    }

    /// [`Engine::write`] as `who`: allowed only if `who` may write the record as it
    /// stands (when it exists) and as the write leaves it (unless deleted). The check
    /// reads the record first; the write is then pinned to the version it checked, so
    /// a change slipping in between makes it re-check instead of writing past a rule
    /// (a client's own expected version, if any, is kept as it is).
    pub async fn write_as(&self, who: &Arc<Identity>, write: Write) -> Result<Arc<Change>> {
        let access = self.access();
        if access.is_open() {
            return self.write(write).await;
        }
        let mut attempt = 1;
        loop {
            let before = self.get(&write.resource, &write.id).await?;
            let (resource, id) = (&write.resource, &write.id);
            // Refuse before `apply` can answer with the stored version of a record the
            // caller may not touch.
            if let Some(b) = &before {
                if !access.may_write(who, resource, id, Some(&b.data)) {
                    return Err(access::forbidden(format!(
                        "{} may not write {resource}/{id}",
                        who.describe()
                    )));
                }
            }
            let stored = before.as_ref().map(|r| tether_core::write::Stored {
                version: r.version,
                data: Some(r.data.clone()),
            });
            let applied = write.apply(stored.as_ref())?;
            access::check_write(
                &access,
                who,
                resource,
                id,
                before.as_ref().map(|r| &r.data),
                applied.data.as_ref(),
            )?;
            let mut pinned = write.clone();
            if pinned.expected_version.is_none() {
                pinned.expected_version = Some(before.as_ref().map_or(0, |r| r.version));
            }
            match self.write(pinned).await {
                Err(e)
                    if e.code == ErrorCode::VersionConflict
                        && write.expected_version.is_none()
                        && attempt < CHECKED_WRITE_ATTEMPTS =>
                {
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// [`Engine::publish_to`] as `who`.
    pub async fn publish_as(
        &self,
        who: &Arc<Identity>,
        topic: &str,
        data: serde_json::Value,
        audience: Audience,
    ) -> Result<()> {
        if !self.access().may_publish(who, topic) {
            return Err(access::forbidden(format!(
                "{} may not publish to topic {topic:?}",
                who.describe()
            )));
        }
        self.publish_to(topic, data, audience).await
    }

    /// Whether `who` may join presence room `room`. A record's room (`<resource>/<id>`,
    /// seed 003's documents as rooms) needs read access to that record: its members
    /// see who edits it and what they relay. Any other room follows the rooms rule.
    pub async fn check_join(&self, who: &Arc<Identity>, room: &str) -> Result<()> {
        let access = self.access();
        if access.is_open() {
            return Ok(());
        }
        let allowed = match access::record_room(room) {
            Some((resource, id)) => self
                .get(&resource, &id)
                .await?
                .is_some_and(|r| access.may_read(who, &resource, &id, &r.data)),
            None => access.may_join_room(who, room),
        };
        if allowed {
            Ok(())
        } else {
            Err(access::forbidden(format!(
                "{} may not join room {room:?}",
                who.describe()
            )))
        }
    }

    /// Sends an ephemeral message to a topic's subscribers on every node.
    pub async fn publish(&self, topic: &str, data: serde_json::Value) -> Result<()> {
        self.publish_to(topic, data, Audience::default()).await
    }

    /// Like [`Engine::publish`], to the subscribers `audience` admits (seed 002's
    /// broadcast to a subset of connections).
    pub async fn publish_to(
        &self,
        topic: &str,
        data: serde_json::Value,
        audience: Audience,
    ) -> Result<()> {
        check_topic(topic)?;
        self.inner
            .bus
            .publish(BusMessage::Topic {
                topic: topic.into(),
                data: Arc::new(data),
                to: (!audience.is_everyone()).then(|| Arc::new(audience)),
            })
            .await
    }

    // ---- subscriptions ----------------------------------------------------------

    /// Subscribes `outbox` under `name`. Queues a snapshot (or, with a usable `since`,
    /// a `Resumed` marker and the missed changes), then live pushes in order.
    pub async fn subscribe(
        &self,
        outbox: &Arc<Outbox>,
        name: &str,
        spec: SubSpec,
        since: Option<Since>,
        tag: Option<Tag>,
    ) -> Result<()> {
        let name: Arc<str> = name.into();
        let spec = Arc::new(spec);
        let checked = self.check_subscription(outbox, &spec.target)?;
        let guard = self.register_checked(outbox, &name, &spec, checked)?;
        if let SubTarget::Topic { .. } = spec.target {
            outbox.push(Outbound::Snapshot {
                tag,
                sub: name,
                spec,
                position: self.position(),
                records: Vec::new(),
                resync: None,
            });
            return Ok(());
        }
        let target = match &spec.target {
            SubTarget::Record { resource, id } => ReadTarget::Record {
                resource: resource.clone(),
                id: id.clone(),
            },
            SubTarget::Query { resource, query } => ReadTarget::Query {
                resource: resource.clone(),
                // Read only what the caller may see, so its `limit` is filled with
                // records it can read (live changes are checked one by one anyway).
                query: guard.narrow(query).unwrap_or_else(|| (**query).clone()),
            },
            SubTarget::Topic { .. } => unreachable!("topics returned above"),
        };
        let (changes_after, mut resync) = match &since {
            Some(s) if s.epoch == *self.epoch() => {
                if self.access_changed_since(s.position, &spec.target) {
                    (None, Some(ResyncReason::AccessChanged))
                } else {
                    (Some(s.position), None)
                }
            }
            Some(_) => (None, Some(ResyncReason::EpochChanged)),
            None => (None, None),
        };
        let read = ConsistentRead {
            targets: vec![target],
            changes_after,
        };
        let view = match self.inner.store.read(read).await {
            Ok(view) => view,
            Err(e) => {
                self.unsubscribe(outbox, &name);
                return Err(e);
            }
        };
        let head = view.head;
        let mut records = view.results.into_iter().next().unwrap_or_default();
        if guard.filters() {
            let found = records.len();
            records.retain(|r| guard.allows(&r.id, &r.data));
            // Like `get_as`: watching one record the caller may not read is refused.
            if let SubTarget::Record { resource, id } = &spec.target {
                if found > records.len() {
                    self.unsubscribe(outbox, &name);
                    return Err(access::forbidden(format!(
                        "{} may not read {resource}/{id}",
                        outbox.identity().describe()
                    )));
                }
            }
        }
        let replay = match view.changes {
            Some(Replay::Changes(changes)) => Some(changes),
            Some(Replay::Compacted) => {
                resync = Some(ResyncReason::Compacted);
                None
            }
            None => None,
        };

        let mut state = outbox.lock();
        let max = outbox.max_bytes();
        let Some(sub) = state.subs.get_mut(&name) else {
            return Ok(()); // closed or unsubscribed meanwhile
        };
        let buffered = sub.pending.take().map(|b| *b).unwrap_or_default();
        let mut out = Vec::new();
        match replay {
            Some(changes) => {
                out.push(Outbound::Resumed {
                    tag,
                    sub: name.clone(),
                    spec: spec.clone(),
                    from: changes_after.unwrap_or_default(),
                });
                for change in changes.into_iter().filter(|c| concerns(&spec.target, c)) {
                    let change = Arc::new(change);
                    if let Some(kind) = sub.kind_for(&change, false) {
                        out.push(sub.push(kind, &change));
                    }
                }
                sub.set_members(records.iter().map(|r| &r.id));
            }
            None => {
                sub.set_members(records.iter().map(|r| &r.id));
                out.push(Outbound::Snapshot {
                    tag,
                    sub: name.clone(),
                    spec: spec.clone(),
                    position: head,
                    records,
                    resync,
                });
            }
        }
        sub.min_pos = head;
        for change in buffered.iter().filter(|c| c.position > head) {
            if let Some(kind) = sub.kind_for(change, true) {
                out.push(sub.push(kind, change));
            }
        }
        for message in out {
            state.enqueue(max, message);
        }
        let waker = state.signal();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// What the connection may see through a subscription to `target` under the policy
    /// in force; refused outright when that is nothing.
    fn check_subscription(&self, outbox: &Outbox, target: &SubTarget) -> Result<Checked> {
        let policy = self.policy();
        Ok(Checked {
            guard: guard_for(&policy.access, &outbox.identity(), target)?,
            generation: policy.generation,
        })
    }

    /// Registers a checked subscription with its guard, and returns the guard it holds.
    ///
    /// A reload between the check and the registration would not find the subscription
    /// in the hub's index, so it would keep the old rules' guard for good. Once it is
    /// registered every later reload sees it, so one look at the generation afterwards
    /// closes the gap: if the policy changed since the check, check again under the
    /// policy in force and replace the guard, or refuse the subscription. A record or
    /// query subscription has sent nothing under the old guard (its snapshot is not
    /// read yet and changes wait in its buffer); a topic's guard is all or nothing, so
    /// it either stays or is removed. A reload after the second look finds it in the
    /// index like any other.
    fn register_checked(
        &self,
        outbox: &Arc<Outbox>,
        name: &Arc<str>,
        spec: &Arc<SubSpec>,
        checked: Checked,
    ) -> Result<ReadGuard> {
        self.register(outbox, name, spec, checked.guard.clone())?;
        let policy = self.policy();
        if policy.generation == checked.generation {
            return Ok(checked.guard);
        }
        let guard = match guard_for(&policy.access, &outbox.identity(), &spec.target) {
            Ok(guard) => guard,
            Err(e) => {
                self.unsubscribe(outbox, name);
                return Err(e);
            }
        };
        if let Some(sub) = outbox.lock().subs.get_mut(name) {
            sub.guard = guard.clone();
        }
        Ok(guard)
    }

    fn register(
        &self,
        outbox: &Arc<Outbox>,
        name: &Arc<str>,
        spec: &Arc<SubSpec>,
        guard: ReadGuard,
    ) -> Result<()> {
        let mut state = outbox.lock();
        if state.subs.contains_key(name) {
            return Err(Error::bad_request(format!(
                "subscription {name:?} already exists on this connection; unsubscribe it or pick another name"
            )));
        }
        if state.subs.len() >= self.inner.knobs.max_subscriptions {
            return Err(Error::new(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} subscriptions per connection",
                    self.inner.knobs.max_subscriptions
                ),
            ));
        }
        if let SubTarget::Topic { topic } = &spec.target {
            check_topic(topic)?;
        }
        self.inner.hub.index_mut().insert(
            &spec.target,
            Entry {
                outbox: outbox.clone(),
                name: name.clone(),
            },
        );
        let mut sub = SubState::pending(name.clone(), spec.clone());
        sub.guard = guard;
        if let SubTarget::Topic { .. } = spec.target {
            sub.pending = None;
        }
        state.subs.insert(sub);
        Ok(())
    }

    /// Removes a subscription. Returns false if there was none by that name.
    pub fn unsubscribe(&self, outbox: &Arc<Outbox>, name: &str) -> bool {
        let removed = outbox.lock().subs.remove(name);
        match removed {
            Some(sub) => {
                self.inner
                    .hub
                    .index_mut()
                    .remove(&sub.spec.target, outbox, &sub.name);
                true
            }
            None => false,
        }
    }

    /// Removes every subscription on `resource` (and, with `id`, only those on that
    /// record). Returns their names.
    pub fn flush(
        &self,
        outbox: &Arc<Outbox>,
        resource: &ResourceName,
        id: Option<&RecordId>,
    ) -> Vec<Arc<str>> {
        let names: Vec<Arc<str>> = outbox
            .lock()
            .subs
            .iter()
            .filter(|(_, s)| match (&s.spec.target, id) {
                (SubTarget::Record { resource: r, id: i }, Some(want)) => {
                    r == resource && i == want
                }
                (
                    SubTarget::Record { resource: r, .. } | SubTarget::Query { resource: r, .. },
                    None,
                ) => r == resource,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            self.unsubscribe(outbox, name);
        }
        names
    }

    /// The subscriptions this connection holds, by name.
    pub fn subscriptions(&self, outbox: &Arc<Outbox>) -> Vec<(Arc<str>, Arc<SubSpec>)> {
        let mut subs: Vec<_> = outbox
            .lock()
            .subs
            .iter()
            .map(|(n, s)| (n.clone(), s.spec.clone()))
            .collect();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        subs
    }

    /// Ends a connection: drops its subscriptions (remembering them under `session`
    /// for a later resume) and its presence.
    pub fn close(&self, outbox: &Arc<Outbox>, session: &str) {
        let subs = self.subscriptions(outbox);
        for (name, _) in &subs {
            self.unsubscribe(outbox, name);
        }
        self.inner.presence.leave_all(outbox);
        outbox.close();
        self.connections().remove(&outbox.id());
        let who = outbox.identity().subject.clone();
        self.release_session(session);
        let mut retained = self
            .inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let keep = self.inner.knobs.session_retention;
        let now = Instant::now();
        retained.prune(now, |(_, at, _)| now.saturating_duration_since(*at) >= keep);
        if !subs.is_empty() {
            retained.insert(session.into(), (subs, now, who));
        }
    }

    /// Lets `who` speak for `session` (at connect, and when a resume takes a session
    /// over). With access rules on, a session id that another subject holds, or held
    /// within the session retention, is `forbidden`: a session id is handed to
    /// services to address broadcasts, so it must not be adoptable by anyone else.
    pub fn claim_session(&self, who: &Identity, session: &str) -> Result<()> {
        if self.access().is_open() {
            return Ok(());
        }
        let mut owners = self.owners();
        let keep = self.inner.knobs.session_retention;
        if let Some((owner, closed)) = owners.get(session) {
            let current = closed.is_none_or(|at| at.elapsed() < keep);
            if current && *owner != who.subject {
                return Err(access::forbidden(format!(
                    "session {session:?} belongs to someone else"
                )));
            }
        }
        owners.insert(session.into(), (who.subject.clone(), None));
        Ok(())
    }

    /// A connection speaking for `session` ended; its claim lapses after the session
    /// retention. Expired claims are dropped here, so the map stays bounded by open
    /// and recent sessions.
    pub fn release_session(&self, session: &str) {
        if self.access().is_open() {
            return;
        }
        let mut owners = self.owners();
        let keep = self.inner.knobs.session_retention;
        let now = Instant::now();
        owners.prune(now, |(_, closed)| {
            closed.is_some_and(|at| now.saturating_duration_since(at) >= keep)
        });
        if let Some((_, closed)) = owners.get_mut(session) {
            *closed = Some(now);
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, Expiring<SessionOwner>> {
        self.inner.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscriptions a closed session held, if it closed recently.
    pub fn recall(&self, session: &str) -> Option<Vec<(Arc<str>, Arc<SubSpec>)>> {
        let mut retained = self
            .inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let keep = self.inner.knobs.session_retention;
        retained
            .remove(session)
            .filter(|(_, at, _)| at.elapsed() < keep)
            .map(|(subs, _, _)| subs)
    }

    /// [`Engine::recall`] for `who`: only a session of the same subject is handed back
    /// (with access rules on), so a guessed session id reveals nothing.
    pub fn recall_as(
        &self,
        who: &Identity,
        session: &str,
    ) -> Option<Vec<(Arc<str>, Arc<SubSpec>)>> {
        if !self.access().is_open() {
            let retained = self
                .inner
                .retained
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let owner = retained.get(session).map(|(_, _, s)| s.clone());
            if owner.is_some_and(|owner| owner != who.subject) {
                return None;
            }
        }
        self.recall(session)
    }
}

/// Keeps the change log to the last `retention` changes. The hub lags the head by
/// moments, never by a million changes, so it is not cut off.
async fn compact_periodically(
    store: Arc<dyn Store>,
    retention: u64,
    every: std::time::Duration,
    mut stopped: watch::Receiver<()>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        let head = match store.head().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "compaction could not read the head");
                continue;
            }
        };
        if head.0 > retention {
            if let Err(e) = store.compact(Position(head.0 - retention)).await {
                tracing::warn!(error = %e, "compaction failed; will retry");
            }
        }
    }
}

/// What `who` may see through a subscription to `target` under `access`; refused
/// outright when that is nothing.
fn guard_for(access: &Access, who: &Arc<Identity>, target: &SubTarget) -> Result<ReadGuard> {
    let guard = match target {
        SubTarget::Topic { topic } => {
            if access.may_subscribe_topic(who, topic) {
                return Ok(ReadGuard::All);
            }
            ReadGuard::None
        }
        SubTarget::Record { resource, .. } | SubTarget::Query { resource, .. } => {
            access.read_guard(who, resource)
        }
    };
    match guard {
        ReadGuard::None => Err(access::forbidden(format!(
            "{} may not subscribe to {}",
            who.describe(),
            match target {
                SubTarget::Topic { topic } => format!("topic {topic:?}"),
                SubTarget::Record { resource, id } => format!("{resource}/{id}"),
                SubTarget::Query { resource, .. } => format!("{resource}"),
            }
        ))),
        guard => Ok(guard),
    }
}

/// Whether a change is on the resource or record a subscription covers.
fn concerns(target: &SubTarget, change: &Change) -> bool {
    match target {
        SubTarget::Record { resource, id } => *resource == change.resource && *id == change.id,
        SubTarget::Query { resource, .. } => *resource == change.resource,
        SubTarget::Topic { .. } => false,
    }
}

/// Topics follow the resource naming rules, plus `/` for hierarchy (`logs/node-1`).
pub fn check_topic(topic: &str) -> Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 128
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InvalidName,
            format!("topic {topic:?} must be 1-128 letters, digits or '_-.:/'"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use access::RuleSet;
    use serde_json::json;
    use tether_bus::LocalBus;
    use tether_core::Data;
    use tether_store::SqliteStore;

    fn rules(read: Option<&str>) -> Access {
        Access::with_rules(RuleSet {
            resources: vec![("notes".into(), read.map(Into::into), None)],
            ..RuleSet::default()
        })
        .unwrap()
    }

    fn data(v: serde_json::Value) -> Data {
        v.as_object().unwrap().clone()
    }

    /// An engine on a fresh store under `access`, and a connection speaking for ann.
    async fn engine_and_ann(
        dir: &tempfile::TempDir,
        access: Access,
    ) -> (Engine, Arc<Outbox>, Arc<SubSpec>) {
        let store = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
        let engine =
            Engine::start_with_access(store, Arc::new(LocalBus::new()), Knobs::default(), access)
                .await
                .unwrap();
        let outbox = engine.new_outbox();
        outbox.set_identity(Arc::new(Identity::from_claims(data(json!({"sub": "ann"})))));
        let spec = Arc::new(SubSpec {
            target: SubTarget::Query {
                resource: ResourceName::parse("notes").unwrap(),
                query: Box::default(),
            },
        });
        (engine, outbox, spec)
    }

    // The race this guards against cannot be timed from outside: `subscribe` awaits
    // nothing between its check and its registration. So these tests take the two
    // steps `subscribe` takes, with a reload in between, which is exactly what a
    // reload on another thread can do.

    #[tokio::test]
    async fn a_reload_between_check_and_registration_narrows_the_guard() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, outbox, spec) =
            engine_and_ann(&dir, rules(Some("token.sub == \"ann\""))).await;
        let name: Arc<str> = "s".into();
        let checked = engine.check_subscription(&outbox, &spec.target).unwrap();
        assert!(!checked.guard.filters(), "ann may read every note");
        // The reload's scan of the index cannot see the subscription yet.
        let closed = engine
            .replace_access(rules(Some("data.owner == token.sub")))
            .unwrap();
        assert_eq!(closed, 0);
        let guard = engine
            .register_checked(&outbox, &name, &spec, checked)
            .unwrap();
        let id = RecordId::parse("n1").unwrap();
        let bobs = data(json!({"owner": "bob"}));
        assert!(guard.filters() && !guard.allows(&id, &bobs));
        // The guard pushes are checked with is the new one too.
        let state = outbox.lock();
        let held = &state.subs.get(&name).expect("registered").guard;
        assert!(held.filters() && !held.allows(&id, &bobs));
    }

    #[tokio::test]
    async fn a_reload_between_check_and_registration_can_refuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, outbox, spec) =
            engine_and_ann(&dir, rules(Some("token.sub == \"ann\""))).await;
        let name: Arc<str> = "s".into();
        let checked = engine.check_subscription(&outbox, &spec.target).unwrap();
        engine.replace_access(rules(None)).unwrap();
        let refused = engine
            .register_checked(&outbox, &name, &spec, checked)
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert_eq!(engine.subscription_count(), 0);
        assert!(outbox.lock().subs.is_empty());
    }

    #[tokio::test]
    async fn without_a_reload_the_checked_guard_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, outbox, spec) =
            engine_and_ann(&dir, rules(Some("data.owner == token.sub"))).await;
        let name: Arc<str> = "s".into();
        let checked = engine.check_subscription(&outbox, &spec.target).unwrap();
        let guard = engine
            .register_checked(&outbox, &name, &spec, checked)
            .unwrap();
        assert!(guard.filters());
        assert_eq!(engine.subscription_count(), 1);
        // Registered, it is what a later reload's scan finds and closes.
        assert_eq!(engine.replace_access(rules(Some("true"))).unwrap(), 1);
        assert!(outbox.is_closed());
    }
}
