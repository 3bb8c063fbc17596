//! Limits on password guessing: at most [`MAX_ATTEMPTS`] sign-in attempts per
//! email in a [`WINDOW`] unless one succeeds; after that, `429` with the time
//! left until the window ends.
//!
//! An attempt counts when it *starts*, not when it fails, so a burst of
//! parallel guesses cannot slip past the limit while the first ones are still
//! hashing; a success clears the count. The state is in memory: a restart
//! forgets it, which costs an attacker a restart per five guesses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sign-in attempts allowed per email and window.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long failed attempts are remembered, from the first one.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most emails tracked at once; past it the oldest windows are forgotten first.
const MAX_TRACKED: usize = 100_000;

/// Per-email attempt counts.
pub struct SignInThrottle {
    max_attempts: u32,
    window: Duration,
    /// A std mutex: it is held for a map lookup, never across an await.
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    attempts: u32,
    since: Instant,
}

impl Default for SignInThrottle {
    fn default() -> Self {
        SignInThrottle::new(MAX_ATTEMPTS, WINDOW)
    }
}

impl SignInThrottle {
    pub fn new(max_attempts: u32, window: Duration) -> SignInThrottle {
        SignInThrottle {
            max_attempts,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an attempt for `email`, or refuses it with how long to wait.
    pub fn begin(&self, email: &str) -> Result<(), Duration> {
        self.begin_at(email, Instant::now())
    }

    /// Forgets `email`'s attempts after a successful sign-in.
    pub fn succeeded(&self, email: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(email);
        }
    }

    fn begin_at(&self, email: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut entries) = self.entries.lock() else {
            return Ok(()); // A poisoned lock must not lock everyone out.
        };
        if entries.len() >= MAX_TRACKED && !entries.contains_key(email) {
            self.make_room(&mut entries, now);
        }
        let entry = entries.entry(email.to_string()).or_insert(Entry {
            attempts: 0,
            since: now,
        });
        let elapsed = now.saturating_duration_since(entry.since);
        if elapsed >= self.window {
            *entry = Entry {
                attempts: 0,
                since: now,
            };
        }
        if entry.attempts >= self.max_attempts {
            return Err(self.window - now.saturating_duration_since(entry.since));
        }
        entry.attempts += 1;
        Ok(())
    }

    fn make_room(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        entries.retain(|_, e| now.saturating_duration_since(e.since) < self.window);
        if entries.len() >= MAX_TRACKED {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.since)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_attempt_in_a_window_waits_for_its_end() {
        let t = SignInThrottle::default();
        let start = Instant::now();
        for _ in 0..MAX_ATTEMPTS {
            assert_eq!(t.begin_at("a@x.io", start), Ok(()));
        }
        let later = start + Duration::from_secs(60);
        assert_eq!(
            t.begin_at("a@x.io", later),
            Err(WINDOW - Duration::from_secs(60))
        );
        assert_eq!(
            t.begin_at("b@x.io", later),
            Ok(()),
            "other emails are not affected"
        );
        assert_eq!(
            t.begin_at("a@x.io", start + WINDOW),
            Ok(()),
            "a new window starts"
        );
    }

    #[test]
    fn a_success_clears_the_count() {
        let t = SignInThrottle::default();
        let now = Instant::now();
        for _ in 0..MAX_ATTEMPTS {
            assert_eq!(t.begin_at("a@x.io", now), Ok(()));
        }
        t.succeeded("a@x.io");
        assert_eq!(t.begin_at("a@x.io", now), Ok(()));
    }
}
