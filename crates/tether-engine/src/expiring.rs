//! Maps of recently closed sessions (their subscriptions, their owners), pruned in
//! passing.
//!
//! Entries expire a while after their connection closed, and every lookup checks the
//! age itself, so pruning only bounds memory. It used to run on every close and scan
//! the whole map: when N connections closed together (a deploy, a network blip) that
//! was N² work with the map's lock held, seconds of CPU for 16,000 connections. Now a
//! prune runs at most once per [`PRUNE_EVERY`], so closing stays O(1) amortized and the
//! map holds at most what closed within the retention plus that interval.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two prunes.
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Expiring<V> {
    entries: HashMap<Arc<str>, V>,
    pruned: Option<Instant>,
}

impl<V> Default for Expiring<V> {
    fn default() -> Self {
        Expiring {
            entries: HashMap::new(),
            pruned: None,
        }
    }
}

impl<V> Expiring<V> {
    /// Drops the entries `expired` picks, unless the last prune was less than
    /// [`PRUNE_EVERY`] before `now`.
    pub(crate) fn prune(&mut self, now: Instant, mut expired: impl FnMut(&V) -> bool) {
        if self
            .pruned
            .is_some_and(|at| now.saturating_duration_since(at) < PRUNE_EVERY)
        {
            return;
        }
        self.pruned = Some(now);
        self.entries.retain(|_, v| !expired(v));
    }
}

impl<V> Deref for Expiring<V> {
    type Target = HashMap<Arc<str>, V>;

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl<V> DerefMut for Expiring<V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_at_most_once_per_interval() {
        let start = Instant::now();
        let mut map: Expiring<Instant> = Expiring::default();
        let old = |at: &Instant| *at < start;
        map.insert("a".into(), start);
        map.prune(start, old);
        assert_eq!(map.len(), 1, "a fresh entry stays");

        let later = start + Duration::from_millis(10);
        map.insert("b".into(), start - Duration::from_secs(5));
        map.prune(later, old);
        assert_eq!(
            map.len(),
            2,
            "too soon after the last prune: nothing dropped"
        );

        map.prune(start + PRUNE_EVERY, old);
        assert_eq!(map.keys().map(|k| &**k).collect::<Vec<_>>(), ["a"]);
    }
}
