//! One clock for every connection's own timers: when to ping the client, when a
//! silent one has gone, when its token runs out.
//!
//! A tokio timer per connection is 112 bytes of every idle connection's state, for
//! deadlines seconds away that need no better than a tenth of a second. Here a
//! connection asks for a wake-up at a time; one task rounds the times up to ticks of
//! [`TICK`] and, at each tick, wakes the connections that are due through their
//! outboxes, the wake-up a push uses. A wake-up carries no meaning of its own: the
//! session reads its clock and does what is due, so asking again before one fires
//! only adds a spurious wake-up, and a connection that has gone is skipped.

use crate::outbox::Outbox;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How finely wake-ups are timed: they come up to one tick late, never early.
pub const TICK: Duration = Duration::from_millis(100);

/// The furthest ahead a wake-up is kept: one further away (a token valid for days,
/// with pings off) is set for this, and the connection asks again then, so a closed
/// connection's entry never waits longer than this to be dropped.
const HORIZON: Duration = Duration::from_secs(3600);

pub(crate) struct Alarms {
    start: Instant,
    /// Outboxes to wake, by the tick (since `start`) at which they are due.
    due: Mutex<BTreeMap<u64, Vec<Weak<Outbox>>>>,
}

impl Alarms {
    pub(crate) fn new() -> Alarms {
        Alarms {
            start: Instant::now(),
            due: Mutex::new(BTreeMap::new()),
        }
    }

    /// Wakes `outbox`'s task at `at` or up to a tick later.
    pub(crate) fn set(&self, outbox: &Arc<Outbox>, at: Instant) {
        let at = at.min(Instant::now() + HORIZON);
        let since = at.saturating_duration_since(self.start);
        let tick = since.as_nanos().div_ceil(TICK.as_nanos());
        let tick = u64::try_from(tick).unwrap_or(u64::MAX);
        self.lock()
            .entry(tick)
            .or_default()
            .push(Arc::downgrade(outbox));
    }

    /// Wakes every connection due by `now`.
    fn ring(&self, now: Instant) {
        let now_tick = now.saturating_duration_since(self.start).as_nanos() / TICK.as_nanos();
        let now_tick = u64::try_from(now_tick).unwrap_or(u64::MAX);
        let mut rung = Vec::new();
        {
            let mut due = self.lock();
            while let Some(entry) = due.first_entry() {
                if *entry.key() > now_tick {
                    break;
                }
                rung.push(entry.remove());
            }
        }
        // Outside the lock: a woken session may ask for its next wake-up at once.
        for outbox in rung.into_iter().flatten() {
            if let Some(outbox) = outbox.upgrade() {
                outbox.wake_up();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<Weak<Outbox>>>> {
        // The map stays consistent whatever panicked while holding it.
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Rings the alarms every tick until the engine that owns them is gone.
pub(crate) async fn run(alarms: Weak<Alarms>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(alarms) = alarms.upgrade() else {
            return;
        };
        alarms.ring(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Waker};

    /// Whether the outbox's task was woken since it last looked.
    fn woken(outbox: &Outbox) -> bool {
        outbox
            .poll_changed(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    #[test]
    fn a_connection_is_woken_at_its_time_and_not_before() {
        let alarms = Alarms::new();
        let soon = Outbox::new(1024);
        let later = Outbox::new(1024);
        let at = alarms.start + Duration::from_millis(250);
        alarms.set(&soon, at);
        alarms.set(&later, at + Duration::from_secs(5));

        alarms.ring(at - Duration::from_millis(1));
        assert!(!woken(&soon), "not before its time");
        alarms.ring(at + TICK);
        assert!(woken(&soon));
        assert!(!woken(&later));
        assert_eq!(alarms.lock().len(), 1, "rung entries are dropped");

        drop(later);
        alarms.ring(at + Duration::from_secs(6));
        assert!(
            alarms.lock().is_empty(),
            "a closed connection's entry goes too"
        );
    }
}
