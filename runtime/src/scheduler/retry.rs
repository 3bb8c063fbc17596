//! Retryable actions (`docs/reference/invariants.md`, invariant 7 and "Side effects"): an action
//! declared with a [`RetryPolicy`] (see [`crate::registry::Registry::retryable`])
//! is run again when an attempt fails transiently or is cut short by a crash,
//! instead of being marked failed. The action makes its effect safe to repeat
//! with an idempotency key derived from its job ([`JobContext::id`]; an
//! email's `Message-ID`), so a repeat inside the window between the remote's
//! acknowledgement and our commit is recognisably the same effect.
//!
//! Which errors are transient is the action's word: it marks them with
//! [`transient`]. Server errors (a failing store, a panic) count as transient
//! too; every other error is permanent and fails the job at once.

use std::time::Duration;

use livebase_schema::{DocumentId, Value};

use crate::error::Error;

/// The `errorData` field that marks an error transient.
pub const TRANSIENT_FIELD: &str = "transient";
/// The most attempts a policy may allow: the job row keeps one record per
/// attempt, and that list must stay small.
pub const MAX_ATTEMPTS_LIMIT: u32 = 50;

/// How a retryable action is retried: at most `max_attempts` attempts (the
/// first included), the `n`th retry `initial_backoff × 2ⁿ⁻¹` after the failed
/// attempt (at most `max_backoff`), jittered down by up to half so that many
/// jobs failing together do not retry together; and no attempt starts more
/// than `deadline` after the first one did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub deadline: Duration,
}

impl RetryPolicy {
    /// The policy with its values checked: at least one and at most
    /// [`MAX_ATTEMPTS_LIMIT`] attempts, backoffs no shorter than a
    /// millisecond, `max_backoff >= initial_backoff`.
    pub fn validated(self) -> Result<RetryPolicy, String> {
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS_LIMIT {
            return Err(format!(
                "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}, not {}",
                self.max_attempts
            ));
        }
        if self.initial_backoff < Duration::from_millis(1) {
            return Err("initial_backoff must be at least 1ms".into());
        }
        if self.max_backoff < self.initial_backoff {
            return Err("max_backoff must be at least initial_backoff".into());
        }
        Ok(self)
    }

    /// The backoff before attempt `failed + 1`, after `failed` attempts
    /// failed, before jitter: `initial_backoff × 2^(failed-1)`, capped.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// [`RetryPolicy::backoff`] scaled by `jitter` in `[0, 1]`: between half
    /// of it (`jitter = 0`) and all of it (`jitter = 1`).
    pub fn jittered_backoff(&self, failed: u32, jitter: f64) -> Duration {
        self.backoff(failed)
            .mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// When attempt `attempts + 1` may start, in ms since the epoch, after
    /// `attempts` attempts, the first started at `first_ms`, the last ended at
    /// `now_ms`: `None` when the policy allows no more.
    pub fn next_attempt(&self, attempts: u32, first_ms: f64, now_ms: f64) -> Option<f64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let wait = self.jittered_backoff(attempts, rand::random::<f64>());
        let next = now_ms + wait.as_secs_f64() * 1e3;
        (next <= first_ms + self.deadline.as_secs_f64() * 1e3).then_some(next)
    }
}

/// What a retryable action knows about the job it runs for
/// ([`crate::registry::ActionCtx::job`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobContext {
    /// The `_scheduled_functions` row: the same on every attempt, so an
    /// idempotency key derived from it is too.
    pub id: DocumentId,
    /// This attempt's number, from 1, interrupted attempts included (past
    /// [`crate::scheduler::worker::MAX_ATTEMPT_RECORDS`] it stays there).
    pub attempt: u32,
}

/// Marks `error` transient: a retryable action that returns it is run again
/// (within its policy). Only application errors carry the mark; server
/// errors are transient anyway.
pub fn transient(error: Error) -> Error {
    match error {
        Error::App {
            code,
            message,
            mut data,
        } => {
            data.insert(TRANSIENT_FIELD.into(), Value::Boolean(true));
            Error::App {
                code,
                message,
                data,
            }
        }
        other => other,
    }
}

/// Whether a retryable action's `error` allows another attempt: it was
/// marked [`transient`], or it is a server error.
pub fn is_transient(error: &Error) -> bool {
    match error {
        Error::App { data, .. } => data.get(TRANSIENT_FIELD) == Some(&Value::Boolean(true)),
        // Internal and server errors, and any kind added later.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_jitter_takes_at_most_half() {
        let p = policy();
        let secs: Vec<u64> = (1..=5).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 5, 5]);
        assert_eq!(p.jittered_backoff(2, 0.0), Duration::from_secs(1));
        assert_eq!(p.jittered_backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(5));
        for _ in 0..100 {
            let next = p.next_attempt(2, 0.0, 10_000.0).expect("a third attempt");
            assert!((11_000.0..=12_000.0).contains(&next), "{next}");
        }
    }

    #[test]
    fn no_attempt_past_the_count_or_the_deadline() {
        let p = policy();
        assert_eq!(p.next_attempt(5, 0.0, 1_000.0), None);
        // The next attempt would start past first + 60 s.
        assert_eq!(p.next_attempt(1, 0.0, 59_900.0), None);
        assert!(p.next_attempt(1, 0.0, 1_000.0).is_some());
    }

    #[test]
    fn policies_are_checked() {
        let zero = RetryPolicy {
            max_attempts: 0,
            ..policy()
        };
        assert!(zero.validated().is_err());
        let inverted = RetryPolicy {
            max_backoff: Duration::from_millis(1),
            ..policy()
        };
        assert!(inverted.validated().is_err());
        assert!(policy().validated().is_ok());
    }

    #[test]
    fn only_marked_and_server_errors_are_transient() {
        assert!(!is_transient(&Error::invalid("bad address")));
        assert!(is_transient(&transient(Error::conflict("try later"))));
        assert!(is_transient(&Error::internal("the store failed")));
        let marked = transient(Error::conflict("try later"));
        assert_eq!(
            marked.error_data().unwrap().get(TRANSIENT_FIELD),
            Some(&Value::Boolean(true))
        );
    }
}
