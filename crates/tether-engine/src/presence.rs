//! Presence (seed 003): who has a room or document open, with join and leave events.
//!
//! A user may be connected several times (tabs); they join once and leave when their
//! last connection in the room leaves, so the member list is of distinct users.

use crate::outbox::Outbox;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tether_core::Outbound;

/// Room name to its members: each connection and the user it joined as.
type Rooms = HashMap<Arc<str>, Vec<(Arc<Outbox>, Arc<str>)>>;

#[derive(Debug, Default)]
pub struct Presence {
    rooms: Mutex<Rooms>,
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
        if members.iter().any(|(o, _)| o.id() == outbox.id()) {
            return distinct_users(members);
        }
        let new_user = !members.iter().any(|(_, u)| *u == user);
        members.push((outbox.clone(), user.clone()));
        let list = distinct_users(members);
        if new_user {
            announce(members, outbox, &room, &user, true, &list);
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
            let list = distinct_users(members);
            announce(members, outbox, &room, &user, false, &list);
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

    pub fn members(&self, room: &str) -> Vec<Arc<str>> {
        self.rooms()
            .get(room)
            .map(|m| distinct_users(m))
            .unwrap_or_default()
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

fn distinct_users(members: &[(Arc<Outbox>, Arc<str>)]) -> Vec<Arc<str>> {
    let mut users: Vec<Arc<str>> = members.iter().map(|(_, u)| u.clone()).collect();
    users.sort();
    users.dedup();
    users
}

fn announce(
    members: &[(Arc<Outbox>, Arc<str>)],
    except: &Arc<Outbox>,
    room: &Arc<str>,
    user: &Arc<str>,
    joined: bool,
    list: &[Arc<str>],
) {
    for (outbox, _) in members.iter().filter(|(o, _)| o.id() != except.id()) {
        outbox.push(Outbound::Presence {
            room: room.clone(),
            user: user.clone(),
            joined,
            members: list.to_vec(),
        });
    }
}
