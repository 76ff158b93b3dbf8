//! What a run cost: the broker's CPU seconds and memory from
//! `/proc/<pid>` (when `--broker-pid` is given), and this client's own CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How often the broker's RSS is sampled during a run.
pub const RSS_SAMPLE_INTERVAL_MS: u64 = 100;

/// Points kept of the RSS curve in a report (evenly thinned).
pub const RSS_CURVE_POINTS_MAX: usize = 200;

/// One reading of `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime of every thread, in seconds.
    pub cpu_s: f64,
    /// Resident set size now (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Peak resident set size since the process started (`VmHWM`), bytes.
    pub rss_high_water_bytes: u64,
}

/// Reads a process's CPU time and memory.
///
/// # Errors
///
/// When `/proc/<pid>` cannot be read or parsed (the process is gone).
pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|error| format!("/proc/{pid}/stat: {error}"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|error| format!("/proc/{pid}/status: {error}"))?;
    let cpu_s = parse_cpu_ticks(&stat).ok_or(format!("/proc/{pid}/stat: unexpected format"))?
        as f64
        / clock_ticks_per_s();
    Ok(ProcSample {
        cpu_s,
        rss_bytes: parse_status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        rss_high_water_bytes: parse_status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, counted
/// after the `)` that ends the command name, which may hold spaces.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `Key:   1234 kB` line of `/proc/<pid>/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// CPU time (user + system) of this whole process, all threads, in seconds.
pub fn client_cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the struct handed to it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer is always a defined call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// What the broker spent during a run.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerCost {
    /// The broker's process id.
    pub pid: u32,
    /// CPU seconds (user + system, all threads) during the run.
    pub cpu_s: f64,
    /// `cpu_s` per message of the run, in microseconds.
    pub cpu_us_per_msg: Option<f64>,
    /// Largest RSS sampled during the run, bytes.
    pub rss_peak_bytes: u64,
    /// RSS when the run started, bytes.
    pub rss_start_bytes: u64,
    /// RSS when the run ended, bytes.
    pub rss_end_bytes: u64,
    /// Peak RSS since the broker started (`VmHWM`), bytes.
    pub rss_high_water_bytes: u64,
    /// `[seconds since the start, RSS bytes]`, thinned to at most
    /// [`RSS_CURVE_POINTS_MAX`] points.
    pub rss_curve: Vec<(f64, u64)>,
}

/// Samples a broker process during a run.
pub struct BrokerWatch {
    pid: u32,
    first: ProcSample,
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<Vec<(f64, u64)>>,
}

impl BrokerWatch {
    /// Takes the first sample and starts sampling RSS every
    /// [`RSS_SAMPLE_INTERVAL_MS`].
    ///
    /// # Errors
    ///
    /// When the process cannot be read.
    pub fn start(pid: u32) -> Result<BrokerWatch, String> {
        let first = sample(pid)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let sampler = std::thread::spawn(move || sample_rss(pid, &stop_seen));
        Ok(BrokerWatch {
            pid,
            first,
            stop,
            sampler,
        })
    }

    /// Stops sampling and works out the cost of `messages` messages.
    pub fn finish(self, messages: u64) -> BrokerCost {
        let last = sample(self.pid).unwrap_or(self.first);
        self.stop.store(true, Ordering::Relaxed);
        let curve = self.sampler.join().unwrap_or_default();
        let cpu_s = (last.cpu_s - self.first.cpu_s).max(0.0);
        let rss_peak_bytes = curve
            .iter()
            .map(|&(_, rss)| rss)
            .chain([self.first.rss_bytes, last.rss_bytes])
            .max()
            .unwrap_or(0);
        BrokerCost {
            pid: self.pid,
            cpu_s,
            cpu_us_per_msg: (messages > 0).then(|| cpu_s / messages as f64 * 1e6),
            rss_peak_bytes,
            rss_start_bytes: self.first.rss_bytes,
            rss_end_bytes: last.rss_bytes,
            rss_high_water_bytes: last.rss_high_water_bytes,
            rss_curve: thin(curve, RSS_CURVE_POINTS_MAX),
        }
    }
}

fn sample_rss(pid: u32, stop: &AtomicBool) -> Vec<(f64, u64)> {
    let started = Instant::now();
    let mut curve = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match sample(pid) {
            Ok(now) => curve.push((started.elapsed().as_secs_f64(), now.rss_bytes)),
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(RSS_SAMPLE_INTERVAL_MS));
    }
    curve
}

/// Keeps at most `points_max` evenly spaced points, the last one included.
pub fn thin<T: Copy>(points: Vec<T>, points_max: usize) -> Vec<T> {
    if points.len() <= points_max || points_max < 2 {
        return points;
    }
    let step = (points.len() - 1) as f64 / (points_max - 1) as f64;
    (0..points_max)
        .map(|index| points[((index as f64 * step).round() as usize).min(points.len() - 1)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (weir server) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 200 300";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tweir\nVmHWM:\t   30720 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(30_720));
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(20_480));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn watches_this_process() {
        let watch = BrokerWatch::start(std::process::id()).expect("own /proc entry");
        let busy_until = Instant::now() + Duration::from_millis(250);
        let mut spins = 0u64;
        while Instant::now() < busy_until {
            spins = spins.wrapping_add(1);
        }
        let cost = watch.finish(1_000);
        assert!(spins > 0);
        assert!(cost.cpu_s > 0.05, "{cost:?}");
        assert!(cost.rss_peak_bytes > 0);
        assert!(!cost.rss_curve.is_empty());
        assert!(cost.cpu_us_per_msg.is_some());
    }

    #[test]
    fn thins_to_the_limit_keeping_both_ends() {
        let thinned = thin((0..1000).collect(), 10);
        assert_eq!(thinned.len(), 10);
        assert_eq!(thinned.first(), Some(&0));
        assert_eq!(thinned.last(), Some(&999));
    }
}
