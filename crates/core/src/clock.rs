//! The core's clock: the system's, or a manual one that tests move.
//!
//! The core's state machines read time only from the node's [`Clock`]
//! (group sessions and rebalances, the initial rebalance delay, offsets
//! retention, transaction timeouts), never from the system directly, so a
//! unit test can hand the core a manual clock and drive time with
//! [`Clock::advance`] instead of sleeping. The core keeps no timers of its
//! own for these: the owner calls `tick` / `expire_*` on an interval (the
//! server every ~100 ms), and a test calls them right after advancing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the core reads the time. Cheap to clone; clones of a manual clock
/// share its time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    manual: Option<Arc<ManualTime>>,
}

#[derive(Debug)]
struct ManualTime {
    /// The system's monotonic and wall-clock readings when it was made.
    origin: Instant,
    origin_ms: i64,
    /// How far it was advanced since (nanoseconds).
    advanced_nanos: AtomicU64,
}

impl Clock {
    /// The system's clocks: monotonic for durations, wall-clock for timestamps.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that starts at the system's current time and moves only
    /// with [`Clock::advance`].
    pub fn manual() -> Clock {
        Clock {
            manual: Some(Arc::new(ManualTime {
                origin: Instant::now(),
                origin_ms: crate::now_ms(),
                advanced_nanos: AtomicU64::new(0),
            })),
        }
    }

    /// The monotonic time, for deadlines and durations.
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(manual) => manual.origin + manual.advanced(),
        }
    }

    /// Milliseconds since the Unix epoch, for timestamps that are stored.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            None => crate::now_ms(),
            Some(manual) => manual
                .origin_ms
                .saturating_add(manual.advanced().as_millis() as i64),
        }
    }

    /// Moves a manual clock forward.
    ///
    /// # Panics
    ///
    /// On the system clock: a test that means to drive time must not
    /// silently run on the real one.
    pub fn advance(&self, by: Duration) {
        let manual = self
            .manual
            .as_ref()
            .expect("only a manual clock can be advanced");
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        manual.advanced_nanos.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl ManualTime {
    fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_its_clones_follow() {
        let clock = Clock::manual();
        let (start, start_ms) = (clock.now(), clock.now_ms());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((clock.now(), clock.now_ms()), (start, start_ms));
        let clone = clock.clone();
        clone.advance(Duration::from_millis(1500));
        assert_eq!(clock.now() - start, Duration::from_millis(1500));
        assert_eq!(clock.now_ms() - start_ms, 1500);
    }

    #[test]
    fn the_system_clock_moves_by_itself() {
        let clock = Clock::system();
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock.now() > start);
        assert!(clock.now_ms() > 1_600_000_000_000);
    }
}
