//! Tokens that passed [`super::SessionAuth`]'s check, remembered until what
//! they were checked against changes. A check costs a signature, a JSON
//! decode and a read of the session and user rows on a reader thread, and an
//! HTTP client sends its token with every call; a hit costs a hash lookup.
//!
//! An entry is answered only while both of these hold:
//!
//! - **No commit has written its session row or its user row since it was
//!   checked.** [`TokenCache::committed`] runs as a commit listener on the
//!   writer thread, which calls it before the commit's mutation is answered:
//!   once a sign-out, a revocation, a password reset or the expiry task's
//!   deletion has been answered, no call is let through by the token it
//!   ended.
//! - **Its time has not run out**: the earlier of the token's `exp` and its
//!   session's `expiresAt`, checked against the clock at every hit (the
//!   expiry task deletes the row too, but a hit must not depend on how soon).
//!
//! A check reads the rows at a snapshot and caches afterwards, so a commit
//! that ends the session can land between the two; its listener may even run
//! before the entry exists. So every commit that writes a session or a user
//! bumps a generation (under the same lock as the entries), and a check
//! caches only if the generation is still the one it saw before it read
//! ([`TokenCache::generation`], [`TokenCache::insert`]): whichever way the
//! two interleave, a stale entry is either never inserted or removed.
//!
//! Memory: at most [`MAX_CACHED`] tokens; a full cache is emptied (every
//! token is then checked once more).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::readset::{Commit, WriteKind};
use crate::registry::Identity;

use super::tables::{SESSIONS, USERS};

/// Most tokens remembered at once.
pub const MAX_CACHED: usize = 10_000;

/// Checked tokens and their identities; see the module docs.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, Entry>,
    /// Bumped by every commit that writes a session or a user.
    generation: u64,
}

struct Entry {
    user_id: String,
    session_id: String,
    /// Milliseconds since the epoch: the earlier of `exp` and `expiresAt`.
    valid_until_ms: f64,
}

impl TokenCache {
    /// The identity `token` was checked for, if it is still valid at
    /// `now_ms` and nothing it was checked against has been written since.
    pub fn get(&self, token: &str, now_ms: f64) -> Option<Identity> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner.tokens.get(token)?;
        if now_ms >= entry.valid_until_ms {
            inner.tokens.remove(token);
            return None;
        }
        Some(Identity::User {
            user_id: entry.user_id.clone(),
            session_id: entry.session_id.clone(),
        })
    }

    /// The generation to pass to [`TokenCache::insert`], taken before the
    /// rows are read.
    pub fn generation(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// Remembers that `token` passed a check of the rows read after
    /// `generation` was taken — unless a session or a user has been written
    /// since then, which that read may not have seen.
    pub fn insert(
        &self,
        generation: u64,
        token: &str,
        user_id: &str,
        session_id: &str,
        valid_until_ms: f64,
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.generation != generation {
            return;
        }
        if inner.tokens.len() >= MAX_CACHED {
            inner.tokens.clear();
        }
        inner.tokens.insert(
            token.to_string(),
            Entry {
                user_id: user_id.to_string(),
                session_id: session_id.to_string(),
                valid_until_ms,
            },
        );
    }

    /// The commit listener: forgets every token whose session or user
    /// `commit` updated or deleted, and bumps the generation if it wrote any
    /// session or user at all (an insert included: a check running now may
    /// have read before it).
    pub fn committed(&self, commit: &Commit) {
        if commit.writes.is_everything() {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.generation += 1;
            inner.tokens.clear();
            return;
        }
        let mut sessions = HashSet::new();
        let mut users = HashSet::new();
        let mut touched = false;
        for write in commit.writes.documents() {
            let ended = match write.table.as_str() {
                SESSIONS => &mut sessions,
                USERS => &mut users,
                _ => continue,
            };
            touched = true;
            if write.kind != WriteKind::Insert {
                ended.insert(write.id.as_str());
            }
        }
        if !touched {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.generation += 1;
        if !sessions.is_empty() || !users.is_empty() {
            inner.tokens.retain(|_, e| {
                !sessions.contains(e.session_id.as_str()) && !users.contains(e.user_id.as_str())
            });
        }
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tokens
            .len()
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use livebase_schema::Timestamp;

    use super::*;
    use crate::readset::{DocumentWrite, WriteSet};

    const NOW: f64 = 1_000_000.0;

    fn commit(writes: &[(&str, &str, WriteKind)]) -> Commit {
        let mut set = WriteSet::new();
        for (table, id, kind) in writes {
            let write = DocumentWrite {
                table: table.to_string(),
                id: id.to_string(),
                kind: *kind,
            };
            set.record(write, &[], &[]);
        }
        Commit {
            ts: Timestamp::new(1),
            writes: Arc::new(set),
        }
    }

    fn cached(tokens: &[(&str, &str, &str)]) -> TokenCache {
        let cache = TokenCache::default();
        for (token, user, session) in tokens {
            cache.insert(cache.generation(), token, user, session, NOW + 1_000.0);
        }
        cache
    }

    fn ada() -> Option<Identity> {
        Some(Identity::User {
            user_id: "users_ada".into(),
            session_id: "sessions_1".into(),
        })
    }

    #[test]
    fn a_token_is_answered_until_its_session_is_updated_or_deleted() {
        for kind in [WriteKind::Delete, WriteKind::Update] {
            let cache = cached(&[
                ("t1", "users_ada", "sessions_1"),
                ("t2", "users_bob", "sessions_2"),
            ]);
            assert_eq!(cache.get("t1", NOW), ada());
            cache.committed(&commit(&[("sessions", "sessions_1", kind)]));
            assert_eq!(cache.get("t1", NOW), None, "{kind:?} of its session");
            assert!(cache.get("t2", NOW).is_some(), "another session is kept");
        }
    }

    #[test]
    fn every_token_of_a_user_goes_when_the_user_is_written() {
        let cache = cached(&[
            ("t1", "users_ada", "sessions_1"),
            ("t3", "users_ada", "sessions_3"),
            ("t2", "users_bob", "sessions_2"),
        ]);
        cache.committed(&commit(&[("users", "users_ada", WriteKind::Update)]));
        assert_eq!((cache.get("t1", NOW), cache.get("t3", NOW)), (None, None));
        assert!(cache.get("t2", NOW).is_some());
    }

    #[test]
    fn other_tables_and_new_sessions_forget_nothing() {
        let cache = cached(&[("t1", "users_ada", "sessions_1")]);
        cache.committed(&commit(&[
            ("items", "sessions_1", WriteKind::Delete),
            ("sessions", "sessions_9", WriteKind::Insert),
        ]));
        assert_eq!(cache.get("t1", NOW), ada());
    }

    #[test]
    fn a_token_is_not_answered_once_its_time_has_run_out() {
        let cache = TokenCache::default();
        cache.insert(cache.generation(), "t1", "users_ada", "sessions_1", NOW);
        assert_eq!(cache.get("t1", NOW - 1.0), ada());
        assert_eq!(cache.get("t1", NOW), None);
        assert!(cache.is_empty(), "an expired entry is dropped");
    }

    #[test]
    fn a_check_that_raced_a_session_write_is_not_cached() {
        let cache = TokenCache::default();
        // The check takes the generation and reads the rows; meanwhile a
        // commit writes a session (its listener runs before the insert).
        let generation = cache.generation();
        cache.committed(&commit(&[("sessions", "sessions_1", WriteKind::Delete)]));
        cache.insert(generation, "t1", "users_ada", "sessions_1", NOW + 1_000.0);
        assert_eq!(cache.get("t1", NOW), None);
        // Checked again afterwards, it is cached.
        cache.insert(
            cache.generation(),
            "t1",
            "users_ada",
            "sessions_1",
            NOW + 1_000.0,
        );
        assert_eq!(cache.get("t1", NOW), ada());
    }

    #[test]
    fn a_full_cache_is_emptied_before_it_grows() {
        let cache = TokenCache::default();
        for i in 0..MAX_CACHED {
            cache.insert(0, &format!("t{i}"), "users_ada", "sessions_1", NOW + 1.0);
        }
        assert_eq!(cache.len(), MAX_CACHED);
        cache.insert(0, "one more", "users_ada", "sessions_1", NOW + 1.0);
        assert_eq!(cache.len(), 1);
    }
}
