//! When each message is due: open loop (a fixed rate, message *i* at
//! `start + i / rate`) or closed loop (as fast as possible).

use std::time::{Duration, Instant};

use crate::payload::clock_ns;

/// The schedule shared by every sender of one run.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    start_ns: u64,
    /// Nanoseconds between two messages (all senders together), or `None`
    /// for a closed loop.
    interval_ns: Option<f64>,
}

impl Schedule {
    /// A schedule starting now; `rate_per_s` of `None` means closed loop.
    pub fn start(rate_per_s: Option<f64>) -> Schedule {
        Schedule {
            start: Instant::now(),
            start_ns: clock_ns(),
            interval_ns: rate_per_s.map(|rate| 1e9 / rate),
        }
    }

    /// Whether messages are paced (open loop).
    pub fn is_open_loop(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// The send time to stamp into message `index` and measure its latency
    /// from: its scheduled time in open loop, now in closed loop.
    pub fn send_ns(&self, index: u64) -> u64 {
        match self.interval_ns {
            Some(interval) => self.start_ns + (index as f64 * interval) as u64,
            None => clock_ns(),
        }
    }

    /// How long until message `index` is due (zero if it is due already or
    /// the loop is closed).
    pub fn wait_for(&self, index: u64) -> Duration {
        match self.interval_ns {
            Some(interval) => {
                let due = self.start + Duration::from_nanos((index as f64 * interval) as u64);
                due.saturating_duration_since(Instant::now())
            }
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_spaces_messages_by_the_rate() {
        let schedule = Schedule::start(Some(1_000.0));
        assert!(schedule.is_open_loop());
        let first = schedule.send_ns(0);
        assert_eq!(schedule.send_ns(1_000) - first, 1_000_000_000);
        assert!(schedule.wait_for(1_000) > Duration::from_millis(900));
        assert_eq!(schedule.wait_for(0), Duration::ZERO);
    }

    #[test]
    fn closed_loop_never_waits() {
        let schedule = Schedule::start(None);
        assert!(!schedule.is_open_loop());
        assert_eq!(schedule.wait_for(1_000_000), Duration::ZERO);
    }
}
