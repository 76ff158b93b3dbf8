//! The open-file budget: creating partitions that would exhaust the
//! process's descriptors is refused up front, never left half done.

use std::io;

/// Descriptors a partition keeps open: its `.log`, `.index` and `.timeindex`.
pub const DESCRIPTORS_PER_PARTITION: u64 = 3;
/// Descriptors always left for connections, segment rolls and metadata
/// files, however low the limit.
const DESCRIPTORS_RESERVED_MIN: u64 = 64;
/// Above the minimum, this fraction (1/n) of the limit is left free.
const DESCRIPTORS_RESERVED_FRACTION: u64 = 8;

/// What the budget allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft `RLIMIT_NOFILE`.
    pub limit: u64,
    /// Descriptors open now.
    pub open: u64,
    /// Descriptors kept free for everything but new partitions.
    pub reserved: u64,
}

impl DescriptorBudget {
    /// The process's budget now; `None` when the limit is infinite or
    /// `/proc/self/fd` cannot be read (then nothing is refused).
    pub fn now() -> Option<DescriptorBudget> {
        let limit = soft_limit()?;
        let open = open_descriptors().ok()?;
        Some(DescriptorBudget::new(limit, open))
    }

    /// A budget for a limit and a count of open descriptors.
    pub fn new(limit: u64, open: u64) -> DescriptorBudget {
        let reserved = DESCRIPTORS_RESERVED_MIN.max(limit / DESCRIPTORS_RESERVED_FRACTION);
        DescriptorBudget {
            limit,
            open,
            reserved,
        }
    }

    /// How many more partitions fit.
    pub fn partitions_available(&self) -> u64 {
        self.limit.saturating_sub(self.open + self.reserved) / DESCRIPTORS_PER_PARTITION
    }

    /// Why `partitions` new partitions do not fit, or `None` if they do.
    pub fn refusal(&self, partitions: u64) -> Option<String> {
        let available = self.partitions_available();
        (partitions > available).then(|| {
            format!(
                "{partitions} new partitions need {} file descriptors, but only {available} \
                 more partitions fit: {} of the open-file limit of {} are in use and {} are \
                 kept for connections (raise `ulimit -n`)",
                partitions * DESCRIPTORS_PER_PARTITION,
                self.open,
                self.limit,
                self.reserved
            )
        })
    }
}

fn soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid, owned rlimit.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

fn open_descriptors() -> io::Result<u64> {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        entry?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_leaves_the_reserve_free() {
        let budget = DescriptorBudget::new(1024, 100);
        assert_eq!(budget.reserved, 128);
        assert_eq!(budget.partitions_available(), (1024 - 100 - 128) / 3);
        assert!(budget.refusal(265).is_none());
        let refusal = budget.refusal(266).expect("too many");
        assert!(refusal.contains("ulimit -n"), "{refusal}");
    }

    #[test]
    fn small_limits_keep_the_minimum_reserve() {
        let budget = DescriptorBudget::new(200, 150);
        assert_eq!(budget.reserved, 64);
        assert_eq!(budget.partitions_available(), 0);
        assert!(budget.refusal(1).is_some());
    }

    #[test]
    fn the_process_has_a_budget() {
        let budget = DescriptorBudget::now().expect("linux with a finite limit");
        assert!(budget.open > 0 && budget.open <= budget.limit);
    }
}
