//! Time, as the parts of livebase that wait for it see it: the commit
//! timestamps of [`crate::database::Database`], and in the runtime the
//! scheduler's worker (when a job is due, and the sleep until then) and the
//! WebSocket liveness timers. Each takes a [`Clock`] instead of asking the
//! operating system, so that a test can move time forward instead of
//! sleeping through it.
//!
//! [`Clock::real`] (the default) is the system's clock. A [`TestClock`] is the
//! real clock plus an offset that only [`TestClock::advance`] changes: time
//! still passes as it does for everything else in the process (locks, socket
//! timeouts, a test's own guards), and a test can skip ahead — a ping due in
//! 15 s, a job due in a minute — and wake every sleeper whose deadline it
//! passed. Because it never goes back and never stands still, every ordering
//! the code relies on (strictly increasing commit timestamps, a deadline in
//! the future stays in the future until it passes) holds on it too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the runtime reads the time. Cheap to clone; clones share the time.
#[derive(Clone, Default)]
pub struct Clock {
    test: Option<TestClock>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.test {
            None => f.write_str("Clock::real"),
            Some(t) => write!(f, "Clock::test(+{:?})", t.offset()),
        }
    }
}

impl Clock {
    /// The system's clock.
    pub fn real() -> Clock {
        Clock::default()
    }

    /// The monotonic time now (for deadlines).
    pub fn now(&self) -> Instant {
        Instant::now() + self.offset()
    }

    /// The wall-clock time now.
    pub fn wall(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// The wall-clock time now, in milliseconds since the Unix epoch (how
    /// documents store time).
    pub fn now_ms(&self) -> f64 {
        self.since_epoch().as_secs_f64() * 1e3
    }

    /// The wall-clock time now, in nanoseconds since the Unix epoch.
    pub fn now_nanos(&self) -> u64 {
        self.since_epoch().as_nanos() as u64
    }

    /// Waits until [`Clock::now`] reaches `deadline`.
    pub async fn sleep_until(&self, deadline: Instant) {
        let Some(test) = &self.test else {
            return tokio::time::sleep_until(deadline).await;
        };
        let mut moved = test.moved.subscribe();
        loop {
            // The real instant at which this clock shows `deadline`, as long
            // as nobody advances it.
            let offset = test.offset();
            let real = deadline.checked_sub(offset).unwrap_or_else(Instant::now);
            tokio::select! {
                _ = tokio::time::sleep_until(real) => return,
                changed = moved.changed() => {
                    if changed.is_err() {
                        // No TestClock handle is left to advance it.
                        return tokio::time::sleep_until(real).await;
                    }
                }
            }
        }
    }

    fn offset(&self) -> Duration {
        self.test.as_ref().map_or(Duration::ZERO, TestClock::offset)
    }

    fn since_epoch(&self) -> Duration {
        self.wall()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock for tests: the real clock plus an offset that [`TestClock::advance`]
/// moves forward. Hand [`TestClock::clock`] to the server (its options'
/// `clock`); keep this handle to move time.
#[derive(Clone)]
pub struct TestClock {
    offset: Arc<Mutex<Duration>>,
    moved: Arc<watch::Sender<()>>,
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock::new()
    }
}

impl TestClock {
    /// A clock that shows the real time until it is advanced.
    pub fn new() -> TestClock {
        TestClock {
            offset: Arc::default(),
            moved: Arc::new(watch::Sender::new(())),
        }
    }

    /// The [`Clock`] that shows this clock's time.
    pub fn clock(&self) -> Clock {
        Clock {
            test: Some(self.clone()),
        }
    }

    /// Moves time forward by `by`, waking every sleeper whose deadline that
    /// passes.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut offset) = self.offset.lock() {
            *offset += by;
        }
        self.moved.send_replace(());
    }

    /// How far this clock has been advanced.
    pub fn offset(&self) -> Duration {
        self.offset.lock().map_or(Duration::ZERO, |o| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_clock_shows_the_system_time() {
        let before = SystemTime::now();
        let shown = Clock::real().wall();
        assert!(shown >= before && shown <= SystemTime::now());
    }

    #[test]
    fn a_test_clock_moves_by_what_it_is_advanced() {
        let test = TestClock::new();
        let clock = test.clock();
        let before = clock.now_ms();
        test.advance(Duration::from_secs(3600));
        let after = clock.now_ms();
        assert!(after - before >= 3_600_000.0, "{before} → {after}");
        assert_eq!(test.offset(), Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn advancing_wakes_a_sleeper_whose_deadline_it_passes() {
        let test = TestClock::new();
        let clock = test.clock();
        let deadline = clock.now() + Duration::from_secs(3600);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(deadline).await }
        });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        test.advance(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(30), sleeper)
            .await
            .expect("woken by the advance")
            .unwrap();
        assert!(clock.now() >= deadline);
    }
}
