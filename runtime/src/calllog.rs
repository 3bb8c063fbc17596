//! The recent function calls, kept in memory for the dev dashboard: a ring of
//! the last [`CALL_LOG_CAPACITY`] calls (path, kind, duration, outcome), fed by
//! the executor at the same place it writes its one log line per call, and by
//! the HTTP routes (`server::routes`) at theirs.
//!
//! Only `livebase dev` keeps one (see [`crate::server::ServerOptions`]'s
//! `dashboard`); without it the executor records nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::registry::FunctionKind;

/// How many calls the log keeps; older ones are forgotten.
pub const CALL_LOG_CAPACITY: usize = 500;

/// What was called: a function of a kind, or an HTTP route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    Function(FunctionKind),
    /// An application's HTTP route; its `path` is `METHOD /path`.
    Route,
}

impl CallKind {
    /// `query`, `mutation`, `action` or `http`.
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Function(kind) => kind.name(),
            CallKind::Route => "http",
        }
    }
}

impl From<FunctionKind> for CallKind {
    fn from(kind: FunctionKind) -> CallKind {
        CallKind::Function(kind)
    }
}

/// How one call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    Success,
    /// Failed, with the error as the server log shows it (not redacted: the
    /// log is a developer's, like the terminal).
    Failed(String),
}

/// One function call.
#[derive(Clone, Debug)]
pub struct CallRecord {
    /// Position in the log, from 1, strictly increasing: a reader asks for
    /// what came after the last one it saw.
    pub seq: u64,
    /// When the call ended, in ms since the epoch.
    pub ended_ms: f64,
    pub path: String,
    pub kind: CallKind,
    pub duration: Duration,
    pub outcome: CallOutcome,
}

/// The log; cheap to clone.
#[derive(Clone)]
pub struct CallLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// A `std` mutex, not tokio's: it is held only to push or copy, never
    /// across an `.await`.
    ring: Mutex<Ring>,
    /// The `seq` of the newest call, for readers that wait for the next one.
    latest: watch::Sender<u64>,
}

struct Ring {
    calls: VecDeque<CallRecord>,
    capacity: usize,
    next_seq: u64,
}

impl Default for CallLog {
    fn default() -> Self {
        CallLog::with_capacity(CALL_LOG_CAPACITY)
    }
}

impl CallLog {
    /// A log keeping the last `capacity` calls (at least one).
    pub fn with_capacity(capacity: usize) -> CallLog {
        let capacity = capacity.max(1);
        CallLog {
            inner: Arc::new(Inner {
                ring: Mutex::new(Ring {
                    calls: VecDeque::with_capacity(capacity),
                    capacity,
                    next_seq: 1,
                }),
                latest: watch::Sender::new(0),
            }),
        }
    }

    /// Adds a call that just ended, forgetting the oldest if the log is full.
    pub fn record(
        &self,
        path: &str,
        kind: impl Into<CallKind>,
        duration: Duration,
        outcome: CallOutcome,
    ) {
        let kind = kind.into();
        let ended_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let seq = {
            let Ok(mut ring) = self.inner.ring.lock() else {
                return;
            };
            let seq = ring.next_seq;
            ring.next_seq += 1;
            if ring.calls.len() == ring.capacity {
                ring.calls.pop_front();
            }
            ring.calls.push_back(CallRecord {
                seq,
                ended_ms,
                path: path.to_string(),
                kind,
                duration,
                outcome,
            });
            seq
        };
        self.inner.latest.send_replace(seq);
    }

    /// The calls still kept whose `seq` is greater than `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<CallRecord> {
        let Ok(ring) = self.inner.ring.lock() else {
            return Vec::new();
        };
        // Sequence numbers are consecutive, so the first one wanted is found
        // by arithmetic rather than by a scan.
        let first = ring.calls.front().map_or(0, |c| c.seq);
        let skip = after.saturating_add(1).saturating_sub(first);
        ring.calls
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// A receiver that sees the `seq` of the newest call change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.latest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(log: &CallLog, path: &str) {
        log.record(
            path,
            FunctionKind::Query,
            Duration::from_millis(1),
            CallOutcome::Success,
        );
    }

    fn paths(calls: &[CallRecord]) -> Vec<&str> {
        calls.iter().map(|c| c.path.as_str()).collect()
    }

    #[test]
    fn keeps_the_newest_calls_and_answers_what_came_after_a_seq() {
        let log = CallLog::with_capacity(3);
        let mut latest = log.subscribe();
        for path in ["a:1", "b:2", "c:3", "d:4"] {
            record(&log, path);
        }
        assert_eq!(paths(&log.since(0)), ["b:2", "c:3", "d:4"]);
        assert_eq!(paths(&log.since(2)), ["c:3", "d:4"]);
        assert_eq!(paths(&log.since(4)), Vec::<&str>::new());
        assert_eq!(paths(&log.since(u64::MAX)), Vec::<&str>::new());
        assert!(latest.has_changed().unwrap());
        assert_eq!(*latest.borrow_and_update(), 4);
        let seqs: Vec<u64> = log.since(0).iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
    }
}
