//! What a query's run costs: the time it held its thread, running or
//! blocked (on a disk read, say), but not the time it waited for a core
//! after being preempted.
//!
//! The worker runs a light tenant's cheap queries itself and hands the rest
//! to the evaluators, which yield to everything else. Measured by the wall
//! clock, a cheap query that was preempted on a contended machine looks
//! expensive and goes to the evaluators, where it waits behind the heavy
//! tenant that made the machine contended. Measured by CPU time alone, a
//! query blocked on the disk looks cheap and would stall the worker. So a
//! run's cost is its wall time less the time it spent in the run queue,
//! which Linux reports per thread (`/proc/thread-self/schedstat`); where it
//! does not, the cost is the wall time.

use std::time::{Duration, Instant};

/// Off-CPU time below which a run's wall time is its cost as it is (the
/// run queue is not read).
const OFF_CPU_NOTICED: Duration = Duration::from_micros(100);

/// Measures the runs of one job, on the thread that runs them.
pub struct JobMeter {
    /// Run-queue wait of this thread when last read.
    queued: Option<Duration>,
}

/// Where one run started.
pub struct Mark {
    wall: Instant,
    cpu: Duration,
}

impl JobMeter {
    pub fn start() -> JobMeter {
        JobMeter {
            queued: run_queue_wait(),
        }
    }

    pub fn mark(&self) -> Mark {
        Mark {
            wall: Instant::now(),
            cpu: cpu_time(),
        }
    }

    /// The cost of the run started at `mark`. (When several runs of one job
    /// were preempted, the run-queue time since the last reading counts
    /// against this one: a cost errs on the low side only then.)
    pub fn cost(&mut self, mark: Mark) -> Duration {
        let wall = mark.wall.elapsed();
        let cpu = cpu_time().saturating_sub(mark.cpu);
        let off_cpu = wall.saturating_sub(cpu);
        if off_cpu < OFF_CPU_NOTICED {
            return wall;
        }
        let (Some(before), Some(now)) = (self.queued, run_queue_wait()) else {
            return wall;
        };
        self.queued = Some(now);
        wall - now.saturating_sub(before).min(off_cpu)
    }
}

/// The CPU time the calling thread has used.
pub fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

thread_local! {
    /// This thread's `/proc/thread-self/schedstat`, kept open: each read
    /// from its start is one system call with the current figures.
    static SCHEDSTAT: Option<std::fs::File> =
        std::fs::File::open("/proc/thread-self/schedstat").ok();
}

/// The time the calling thread has spent runnable but waiting for a core
/// (the second field of `/proc/thread-self/schedstat`), if the kernel says.
fn run_queue_wait() -> Option<Duration> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 128];
    let n = SCHEDSTAT.with(|f| f.as_ref().and_then(|f| f.read_at(&mut buf, 0).ok()))?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let ns: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;

    use super::*;

    fn busy_for(cpu: Duration) {
        let (start, wall) = (cpu_time(), Instant::now());
        let mut x = 0u64;
        while cpu_time().saturating_sub(start) < cpu && wall.elapsed() < Duration::from_secs(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn a_blocked_run_costs_its_wall_time() {
        let mut meter = JobMeter::start();
        let mark = meter.mark();
        thread::sleep(Duration::from_millis(30));
        assert!(meter.cost(mark) >= Duration::from_millis(30));
    }

    #[test]
    fn a_preempted_run_costs_about_its_cpu_time() {
        // This thread and a spinner share one core, so a run of 40 ms of CPU
        // takes about twice as long by the wall clock.
        let cpu = rustix::thread::sched_getcpu();
        let mut one = rustix::thread::CpuSet::new();
        one.set(cpu);
        rustix::thread::sched_setaffinity(None, &one).expect("pinned");
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let (stop, one) = (stop.clone(), one);
            thread::spawn(move || {
                rustix::thread::sched_setaffinity(None, &one).expect("pinned");
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let mut meter = JobMeter::start();
        let mark = meter.mark();
        let wall = Instant::now();
        busy_for(Duration::from_millis(40));
        let (cost, wall) = (meter.cost(mark), wall.elapsed());
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert!(
            wall >= Duration::from_millis(60),
            "the spinner took its share of the core ({wall:?})"
        );
        assert!(
            cost < Duration::from_millis(55),
            "the run's cost ({cost:?}) leaves out its wait for the core (wall {wall:?})"
        );
    }
}
