//! One connection's ordered, bounded queue of outbound messages, and the state of its
//! subscriptions.
//!
//! Replies and pushes share this one queue, so a client sees them in the order they
//! happened. The hub only ever `offer`s into it under a short lock and never waits: a
//! queue past its byte bound marks the connection as a slow consumer, and the
//! transport closes it (the client then resumes from its last position and loses
//! nothing). Subscription state lives under the same lock so that the switch from
//! "snapshot being read" to "live" cannot interleave with a push.

use crate::access::Identity;
use crate::subscription::{SubView, Subs};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tether_core::{Audience, Change, Outbound, Reply};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why an outbox stopped accepting messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client did not read fast enough; its queue passed the bound.
    SlowConsumer,
    /// The connection ended.
    Gone,
    /// A reload changed an access rule this connection's subscriptions were filtered
    /// by ([`crate::Engine::replace_access`]); it reconnects and resumes under the new
    /// rule.
    AccessChanged,
    /// The server is shutting down ([`crate::Engine::go_away`]). Unlike the others
    /// this does not stop the outbox: what is queued is taken first, and replies to
    /// writes still in flight may follow, so the client learns which of its writes
    /// landed before the connection closes.
    GoingAway,
}

#[derive(Debug)]
pub struct Outbox {
    id: u64,
    max_bytes: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    queue: VecDeque<(Outbound, usize)>,
    bytes: usize,
    closed: Option<Closed>,
    pub(crate) subs: Subs,
    /// The session the connection speaks for, so a topic message addressed to some
    /// sessions (`Audience::sessions`) finds them without a registry of its own.
    session: Option<Arc<str>>,
    /// The server asked the connection to close ([`Outbox::go_away`]).
    going_away: bool,
    /// Who the connection authenticated as; every subscription is checked against it.
    /// `None` until the session sets it, which counts as anonymous (deny by default).
    identity: Option<Arc<Identity>>,
    /// The connection's one task, parked in [`Outbox::poll_changed`], and whether
    /// something changed since it last looked. A waker under the lock every change
    /// already takes, rather than a `Notify`: its wait future would be part of every
    /// idle connection's state.
    waker: Option<Waker>,
    changed: bool,
}

impl State {
    /// Queues a message unless the queue is past its bound. A single message larger
    /// than the bound is still accepted into an empty queue, so one big snapshot
    /// does not make a connection unusable.
    pub(crate) fn enqueue(&mut self, max_bytes: usize, message: Outbound) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let size = approx_size(&message);
        if !self.queue.is_empty() && self.bytes + size > max_bytes {
            self.closed = Some(Closed::SlowConsumer);
            self.queue.clear();
            self.bytes = 0;
            metrics::counter!("tether_outbox_overflows_total").increment(1);
            return false;
        }
        self.bytes += size;
        self.queue.push_back((message, size));
        true
    }

    /// Records a change for the connection's task; the caller wakes what this returns
    /// once it has released the lock.
    #[must_use]
    pub(crate) fn signal(&mut self) -> Option<Waker> {
        self.changed = true;
        self.waker.take()
    }
}

impl Outbox {
    pub fn new(max_bytes: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            max_bytes,
            state: Mutex::new(State::default()),
        })
    }

    /// Unique for the life of the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock (a
        // panic elsewhere) is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bound on queued bytes past which the connection counts as a slow consumer.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Queues a message for the client. Returns false if the outbox is closed or just
    /// overflowed.
    pub fn push(&self, message: Outbound) -> bool {
        let mut state = self.lock();
        let accepted = state.enqueue(self.max_bytes, message);
        let waker = state.signal();
        drop(state);
        wake(waker);
        accepted
    }

    /// Offers a committed change to subscription `sub` (called by the hub).
    pub(crate) fn offer_change(&self, sub: &Arc<str>, change: &Arc<Change>) {
        let mut state = self.lock();
        let Some(sub_state) = state.subs.get_mut(sub) else {
            return;
        };
        let message = match sub_state.view(change) {
            SubView::Buffered | SubView::Skip => return,
            SubView::Push(message) => message,
        };
        state.enqueue(self.max_bytes, message);
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    /// Moves everything queued into `into`, waiting until there is something. Returns
    /// `Err` once the outbox is closed (after the queue is drained, for `Gone`; at once
    /// otherwise). One task at a time may wait on an outbox.
    pub async fn next_batch(&self, into: &mut Vec<Outbound>) -> Result<(), Closed> {
        loop {
            if let Some(batch) = self.try_take()? {
                into.extend(batch);
                return Ok(());
            }
            std::future::poll_fn(|cx| self.poll_changed(cx)).await;
        }
    }

    /// Takes everything queued without waiting: `Ok(None)` when nothing is. `Err` once
    /// the outbox is closed, as for [`Outbox::next_batch`]. The queue is handed over
    /// whole, so a connection keeps no queue buffer between batches.
    pub fn try_take(&self) -> Result<Option<impl Iterator<Item = Outbound>>, Closed> {
        let mut state = self.lock();
        // What follows reports everything there is, so earlier changes need no
        // wake-up of their own.
        state.changed = false;
        if let Some(why @ (Closed::SlowConsumer | Closed::AccessChanged)) = state.closed {
            return Err(why);
        }
        if !state.queue.is_empty() {
            // Taken rather than drained: an idle connection then keeps no queue buffer
            // (a few hundred bytes, times every connection), and the hub waits on this
            // lock for a swap, not for a copy.
            let queue = std::mem::take(&mut state.queue);
            state.bytes = 0;
            return Ok(Some(queue.into_iter().map(|(m, _)| m)));
        }
        match state.closed {
            Some(closed) => Err(closed),
            None if state.going_away => Err(Closed::GoingAway),
            None => Ok(None),
        }
    }

    /// Asks the connection to close because the server is shutting down: its next
    /// [`Outbox::try_take`] after the queue is empty says [`Closed::GoingAway`]. One
    /// signal through the outbox the session already waits on, rather than a shutdown
    /// receiver (and its wait) in every idle connection's state.
    pub fn go_away(&self) {
        let mut state = self.lock();
        state.going_away = true;
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    /// Why the connection must end now whatever is queued: a slow consumer, changed
    /// access rules, or shutdown.
    pub fn closing(&self) -> Option<Closed> {
        let state = self.lock();
        match state.closed {
            Some(Closed::Gone) => None,
            Some(why) => Some(why),
            None => state.going_away.then_some(Closed::GoingAway),
        }
    }

    /// Ready once something was queued, or the outbox closed or was asked to go
    /// away, since the last time it was ready (a wake-up may find nothing new: take
    /// with [`Outbox::try_take`]). Only the connection's own task polls this: the
    /// outbox remembers one waker.
    pub fn poll_changed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if std::mem::take(&mut state.changed) {
            return Poll::Ready(());
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Wakes the connection's task with nothing new: its timers are due (see
    /// [`crate::alarm`]).
    pub(crate) fn wake_up(&self) {
        let waker = self.lock().signal();
        wake(waker);
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn close(&self) {
        self.close_because(Closed::Gone);
    }

    /// Stops taking messages and wakes the writer to close the connection. The first
    /// reason sticks. `Gone` lets the writer send what is queued first; any other
    /// reason drops it.
    pub fn close_because(&self, why: Closed) {
        let mut state = self.lock();
        if why == Closed::Gone {
            state.subs.clear();
        } else if state.closed.is_none() {
            // The subscriptions stay until the session ends them through the engine,
            // which also takes them out of the hub's index and keeps them for a resume.
            state.queue.clear();
            state.bytes = 0;
        }
        state.closed.get_or_insert(why);
        let waker = state.signal();
        drop(state);
        wake(waker);
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Names the session this connection speaks for (at connect, and again when it
    /// takes over another session with `resume`).
    pub fn set_session(&self, session: &Arc<str>) {
        self.lock().session = Some(session.clone());
    }

    /// Sets who the connection speaks for (once, at connect, from its token).
    pub fn set_identity(&self, identity: Arc<Identity>) {
        self.lock().identity = Some(identity);
    }

    /// Who the connection speaks for; anonymous if the session never said.
    pub fn identity(&self) -> Arc<Identity> {
        self.lock()
            .identity
            .clone()
            .unwrap_or_else(Identity::shared_anonymous)
    }
}

/// A rough size for accounting; exactness does not matter, proportionality does.
pub fn approx_size(message: &Outbound) -> usize {
    let records = |rs: &[tether_core::Record]| -> usize {
        rs.iter().map(tether_core::Record::approx_size).sum()
    };
    match message {
        Outbound::Push { change, .. } => change.approx_size(),
        Outbound::Snapshot { records: rs, .. } => 128 + records(rs),
        Outbound::Reply {
            result: Ok(Reply::Records(rs)),
            ..
        } => 128 + records(rs),
        Outbound::Reply {
            result: Ok(Reply::Written(c)),
            ..
        } => c.approx_size(),
        Outbound::Message { data, .. } => 128 + tether_core::record::json_size(data),
        Outbound::Presence { members, .. } => 128 + members.len() * 32,
        Outbound::Relay { data, .. } => 128 + tether_core::record::json_size(data),
        _ => 128,
    }
}

impl Outbox {
    /// Offers an ephemeral topic message to subscription `sub` (called by the hub),
    /// unless `to` leaves this connection out.
    pub(crate) fn offer_message(
        &self,
        sub: &Arc<str>,
        topic: &Arc<str>,
        data: &Arc<serde_json::Value>,
        to: Option<&Audience>,
    ) {
        let mut state = self.lock();
        if state.subs.get(sub).is_none_or(|s| s.pending.is_some()) {
            return;
        }
        if let Some(to) = to {
            let admitted = to.admits_session(state.session.as_deref())
                && state
                    .subs
                    .values()
                    .any(|s| to.admits_watch(topic, &s.spec.target));
            if !admitted {
                return;
            }
        }
        let message = Outbound::Message {
            sub: sub.clone(),
            topic: topic.clone(),
            data: data.clone(),
        };
        state.enqueue(self.max_bytes, message);
        let waker = state.signal();
        drop(state);
        wake(waker);
    }
}

/// Wakes a connection's task, outside the outbox's lock.
fn wake(waker: Option<Waker>) {
    if let Some(waker) = waker {
        waker.wake();
    }
}
