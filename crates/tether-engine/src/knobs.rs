//! Every engine tunable in one place, with the reason for its default.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Knobs {
    /// Bytes a connection's outbox may hold before the connection is cut as a slow
    /// consumer (close code 4008, then it resumes). Bounds memory per connection.
    pub outbox_max_bytes: usize,
    /// Subscriptions one connection may hold; the next subscribe gets `limit_exceeded`.
    pub max_subscriptions: usize,
    /// Writes committed together in one transaction (group commit): one fsync for many
    /// acknowledged writes.
    pub max_commit_batch: usize,
    /// Writes that may wait for the committer before writers wait in turn.
    pub commit_queue: usize,
    /// How often the hub compares its position with the store's head, so a change the
    /// bus lost reaches subscribers even if no later change reveals the gap.
    pub hub_check_interval: Duration,
    /// How long the server remembers a closed session's subscriptions for `resume`.
    pub session_retention: Duration,
    /// With several nodes: how often each sends its presence snapshot (its heartbeat).
    /// A node silent for three of these is taken as gone and its users leave, so this
    /// bounds how long a crashed node's users linger in member lists elsewhere.
    pub presence_heartbeat: Duration,
    /// Changes kept in the change log for resume. Older ones are compacted away; a
    /// client further behind gets a resync snapshot. Bounds the log's disk use.
    pub log_retention: u64,
    /// How often the log is compacted down to `log_retention`.
    pub compaction_interval: Duration,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            outbox_max_bytes: 4 << 20,
            max_subscriptions: 1_000,
            max_commit_batch: 512,
            commit_queue: 8_192,
            hub_check_interval: Duration::from_millis(500),
            session_retention: Duration::from_secs(300),
            presence_heartbeat: Duration::from_secs(2),
            log_retention: 1_000_000,
            compaction_interval: Duration::from_secs(60),
        }
    }
}
