//! Presence (seed 003): who has a room or document open, with join and leave events.
//!
//! A user may be connected several times (tabs); they join once and leave when their
//! last connection in the room leaves, so the member list is of distinct users.
//!
//! Across nodes (a shared bus): each node tells the others when a user first opens or
//! last closes a room on it, relays to its rooms, and every few seconds sends all it
//! has (a snapshot, which doubles as its heartbeat). Other nodes keep those members per
//! sending node and drop them when its heartbeats stop, so a crashed node's users leave
//! everywhere. Member lists and join/leave events are cluster-wide; each node only
//! ever pushes to its own connections.

use crate::outbox::Outbox;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tether_bus::{Bus, BusMessage, PresenceEvent, PresenceKind};
use tether_core::Outbound;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// Room name to its members: each connection and the user it joined as.
type Rooms = HashMap<Arc<str>, Vec<(Arc<Outbox>, Arc<str>)>>;

#[derive(Debug, Default)]
pub struct Presence {
    rooms: Mutex<Rooms>,
    /// Members on other nodes; always locked after `rooms`, never before.
    remote: Mutex<Remote>,
    /// Where this node's own events go out (to [`run_networked`]); `None` on one node.
    outgoing: Option<mpsc::UnboundedSender<PresenceKind>>,
}

/// A room's users on other nodes, each with the nodes it is on.
type RemoteUsers = HashMap<Arc<str>, HashSet<Arc<str>>>;

/// What other nodes have: room -> user -> the nodes they are on, and when each node
/// was last heard from.
#[derive(Debug, Default)]
struct Remote {
    rooms: HashMap<Arc<str>, RemoteUsers>,
    heard: HashMap<Arc<str>, Instant>,
}

impl Remote {
    fn has(&self, room: &str, user: &str) -> bool {
        self.rooms
            .get(room)
            .and_then(|users| users.get(user))
            .is_some_and(|nodes| !nodes.is_empty())
    }

    fn users(&self, room: &str) -> impl Iterator<Item = &Arc<str>> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|users| users.keys())
    }

    /// What `node` is known to have.
    fn of(&self, node: &str) -> BTreeSet<(Arc<str>, Arc<str>)> {
        let mut out = BTreeSet::new();
        for (room, users) in &self.rooms {
            for (user, nodes) in users {
                if nodes.contains(node) {
                    out.insert((room.clone(), user.clone()));
                }
            }
        }
        out
    }
}

impl Presence {
    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the connection to the room as `user` and returns who is there now. Others
    /// in the room are told, unless the user was already there on another connection.
    pub fn join(&self, outbox: &Arc<Outbox>, room: &str, user: &str) -> Vec<Arc<str>> {
        let mut rooms = self.rooms();
        let room: Arc<str> = room.into();
        let user: Arc<str> = user.into();
        let members = rooms.entry(room.clone()).or_default();
        let remote = self.remote();
        if members.iter().any(|(o, _)| o.id() == outbox.id()) {
            return merged(members, &remote, &room);
        }
        let new_user = !members.iter().any(|(_, u)| *u == user);
        members.push((outbox.clone(), user.clone()));
        let list = merged(members, &remote, &room);
        // Users already here through another node were announced when they came.
        if new_user && !remote.has(&room, &user) {
            announce(members, Some(outbox), &room, &user, true, &list);
        }
        drop(remote);
        if new_user {
            self.emit(PresenceKind::Join { room, user });
        }
        list
    }

    /// Removes the connection from the room. Returns false if it was not there.
    pub fn leave(&self, outbox: &Arc<Outbox>, room: &str) -> bool {
        let mut rooms = self.rooms();
        let room: Arc<str> = room.into();
        let Some(members) = rooms.get_mut(&room) else {
            return false;
        };
        let Some(at) = members.iter().position(|(o, _)| o.id() == outbox.id()) else {
            return false;
        };
        let (_, user) = members.remove(at);
        if !members.iter().any(|(_, u)| *u == user) {
            let remote = self.remote();
            // Still there through another node: not a leave for anyone.
            if !remote.has(&room, &user) {
                let list = merged(members, &remote, &room);
                announce(members, Some(outbox), &room, &user, false, &list);
            }
            drop(remote);
            self.emit(PresenceKind::Leave {
                room: room.clone(),
                user,
            });
        }
        if members.is_empty() {
            rooms.remove(&room);
        }
        true
    }

    /// Removes the connection from every room (on disconnect).
    pub fn leave_all(&self, outbox: &Arc<Outbox>) {
        let rooms: Vec<Arc<str>> = self
            .rooms()
            .iter()
            .filter(|(_, m)| m.iter().any(|(o, _)| o.id() == outbox.id()))
            .map(|(r, _)| r.clone())
            .collect();
        for room in rooms {
            self.leave(outbox, &room);
        }
    }

    /// The distinct users in the room, on every node.
    pub fn members(&self, room: &str) -> Vec<Arc<str>> {
        let rooms = self.rooms();
        let remote = self.remote();
        merged(
            rooms.get(room).map(Vec::as_slice).unwrap_or(&[]),
            &remote,
            room,
        )
    }

    /// Sends `data` from `user` (on connection `from`) to everyone else in the room, on
    /// this node and the others.
    pub fn relay(
        &self,
        room: &str,
        from: &Arc<Outbox>,
        user: &Arc<str>,
        data: Arc<serde_json::Value>,
    ) {
        let room: Arc<str> = room.into();
        for other in self.others(&room, from) {
            other.push(Outbound::Relay {
                room: room.clone(),
                from: user.clone(),
                data: data.clone(),
            });
        }
        self.emit(PresenceKind::Relay {
            room,
            from: user.clone(),
            data,
        });
    }

    /// Every connection in the room except `from`.
    pub fn others(&self, room: &str, from: &Arc<Outbox>) -> Vec<Arc<Outbox>> {
        self.rooms()
            .get(room)
            .map(|m| {
                m.iter()
                    .filter(|(o, _)| o.id() != from.id())
                    .map(|(o, _)| o.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The user this connection joined `room` as, if it is in the room.
    pub fn user_in(&self, room: &str, outbox: &Arc<Outbox>) -> Option<Arc<str>> {
        self.rooms()
            .get(room)?
            .iter()
            .find(|(o, _)| o.id() == outbox.id())
            .map(|(_, u)| u.clone())
    }

    pub fn rooms_of(&self, outbox: &Arc<Outbox>) -> Vec<Arc<str>> {
        self.rooms()
            .iter()
            .filter(|(_, m)| m.iter().any(|(o, _)| o.id() == outbox.id()))
            .map(|(r, _)| r.clone())
            .collect()
    }
}

impl Presence {
    /// A presence whose own events go out on the returned receiver, for
    /// [`run_networked`] to publish.
    pub(crate) fn networked() -> (Presence, mpsc::UnboundedReceiver<PresenceKind>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Presence {
                outgoing: Some(tx),
                ..Presence::default()
            },
            rx,
        )
    }

    fn remote(&self) -> std::sync::MutexGuard<'_, Remote> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, kind: PresenceKind) {
        if let Some(tx) = &self.outgoing {
            let _ = tx.send(kind);
        }
    }

    /// Every (room, user) on this node.
    fn snapshot(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.rooms()
            .iter()
            .flat_map(|(room, members)| {
                distinct_users(members)
                    .into_iter()
                    .map(move |user| (room.clone(), user))
            })
            .collect()
    }

    /// Applies another node's event.
    fn on_remote(&self, event: &PresenceEvent, now: Instant) {
        let node = &event.node;
        self.remote().heard.insert(node.clone(), now);
        match &event.kind {
            PresenceKind::Hello => self.emit(PresenceKind::Snapshot {
                members: self.snapshot(),
            }),
            PresenceKind::Join { room, user } => self.remote_join(node, room, user),
            PresenceKind::Leave { room, user } => self.remote_leave(node, room, user),
            PresenceKind::Snapshot { members } => {
                let want: BTreeSet<(Arc<str>, Arc<str>)> = members.iter().cloned().collect();
                let have = self.remote().of(node);
                for (room, user) in have.difference(&want) {
                    self.remote_leave(node, room, user);
                }
                for (room, user) in want.difference(&have) {
                    self.remote_join(node, room, user);
                }
            }
            PresenceKind::Relay { room, from, data } => {
                let rooms = self.rooms();
                for (outbox, _) in rooms.get(room).into_iter().flatten() {
                    outbox.push(Outbound::Relay {
                        room: room.clone(),
                        from: from.clone(),
                        data: data.clone(),
                    });
                }
            }
        }
    }

    fn remote_join(&self, node: &Arc<str>, room: &Arc<str>, user: &Arc<str>) {
        let rooms = self.rooms();
        let mut remote = self.remote();
        let local = rooms.get(room);
        let present =
            local.is_some_and(|m| m.iter().any(|(_, u)| u == user)) || remote.has(room, user);
        remote
            .rooms
            .entry(room.clone())
            .or_default()
            .entry(user.clone())
            .or_default()
            .insert(node.clone());
        if let (false, Some(members)) = (present, local) {
            let list = merged(members, &remote, room);
            announce(members, None, room, user, true, &list);
        }
    }

    fn remote_leave(&self, node: &Arc<str>, room: &Arc<str>, user: &Arc<str>) {
        let rooms = self.rooms();
        let mut remote = self.remote();
        let Some(users) = remote.rooms.get_mut(room) else {
            return;
        };
        let Some(nodes) = users.get_mut(user) else {
            return;
        };
        if !nodes.remove(node) {
            return;
        }
        if nodes.is_empty() {
            users.remove(user);
        }
        if users.is_empty() {
            remote.rooms.remove(room);
        }
        let local = rooms.get(room);
        let still =
            local.is_some_and(|m| m.iter().any(|(_, u)| u == user)) || remote.has(room, user);
        if let (false, Some(members)) = (still, local) {
            let list = merged(members, &remote, room);
            announce(members, None, room, user, false, &list);
        }
    }

    /// Forgets the members of nodes not heard from since `cutoff` (crashed or cut off):
    /// their users leave wherever they were.
    fn expire(&self, cutoff: Instant) {
        let gone: Vec<Arc<str>> = {
            let mut remote = self.remote();
            let gone: Vec<Arc<str>> = remote
                .heard
                .iter()
                .filter(|(_, at)| **at < cutoff)
                .map(|(node, _)| node.clone())
                .collect();
            for node in &gone {
                remote.heard.remove(node);
            }
            gone
        };
        for node in gone {
            tracing::warn!(%node, "a node stopped sending presence; its users leave");
            let pairs = self.remote().of(&node);
            for (room, user) in pairs {
                self.remote_leave(&node, &room, &user);
            }
        }
    }
}

/// Exchanges presence with the other nodes on a shared bus until the presence is
/// dropped: publishes this node's joins, leaves and relays, applies the others', and
/// every `heartbeat` sends a snapshot and forgets nodes silent for three heartbeats.
pub(crate) async fn run_networked(
    presence: Weak<Presence>,
    bus: Arc<dyn Bus>,
    mut outgoing: mpsc::UnboundedReceiver<PresenceKind>,
    heartbeat: Duration,
) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let node: Arc<str> = format!("{nanos:x}-{:x}", std::process::id()).into();
    let mut incoming = bus.subscribe();
    let send = |kind: PresenceKind| {
        BusMessage::Presence(Arc::new(PresenceEvent {
            node: node.clone(),
            kind,
        }))
    };
    // A failed publish is healed by the next snapshot.
    let _ = bus.publish(send(PresenceKind::Hello)).await;
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            kind = outgoing.recv() => match kind {
                Some(kind) => {
                    let _ = bus.publish(send(kind)).await;
                }
                None => break, // the presence was dropped
            },
            message = incoming.recv() => match message {
                Ok(BusMessage::Presence(event)) if event.node != node => {
                    let Some(presence) = presence.upgrade() else { break };
                    presence.on_remote(&event, Instant::now());
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {} // snapshots repair what lagged
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                let Some(presence) = presence.upgrade() else { break };
                if let Some(cutoff) = Instant::now().checked_sub(heartbeat * 3) {
                    presence.expire(cutoff);
                }
                let members = presence.snapshot();
                let _ = bus.publish(send(PresenceKind::Snapshot { members })).await;
            }
        }
    }
}

/// The distinct users of a room: this node's members and the other nodes'.
fn merged(members: &[(Arc<Outbox>, Arc<str>)], remote: &Remote, room: &str) -> Vec<Arc<str>> {
    let mut users = distinct_users(members);
    users.extend(remote.users(room).cloned());
    users.sort();
    users.dedup();
    users
}

fn distinct_users(members: &[(Arc<Outbox>, Arc<str>)]) -> Vec<Arc<str>> {
    let mut users: Vec<Arc<str>> = members.iter().map(|(_, u)| u.clone()).collect();
    users.sort();
    users.dedup();
    users
}

fn announce(
    members: &[(Arc<Outbox>, Arc<str>)],
    except: Option<&Arc<Outbox>>,
    room: &Arc<str>,
    user: &Arc<str>,
    joined: bool,
    list: &[Arc<str>],
) {
    for (outbox, _) in members
        .iter()
        .filter(|(o, _)| except.is_none_or(|e| o.id() != e.id()))
    {
        outbox.push(Outbound::Presence {
            room: room.clone(),
            user: user.clone(),
            joined,
            members: list.to_vec(),
        });
    }
}
