//! Facts about the process and machine: resident memory, total memory,
//! free disk.

/// Share of physical memory treated as the high watermark (RabbitMQ's
/// default `vm_memory_high_watermark` of 0.4).
const MEMORY_HIGH_WATERMARK_FRACTION: f64 = 0.4;

/// Resident set size of this process, from `/proc/self/status`.
pub fn memory_rss_bytes() -> u64 {
    proc_kib("/proc/self/status", "VmRSS:").map_or(0, |kib| kib * 1024)
}

/// 40 % of physical memory, from `/proc/meminfo`.
pub fn memory_high_watermark_bytes() -> u64 {
    proc_kib("/proc/meminfo", "MemTotal:").map_or(0, |kib| {
        (kib as f64 * 1024.0 * MEMORY_HIGH_WATERMARK_FRACTION) as u64
    })
}

fn proc_kib(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Bytes free for unprivileged users on the file system of `dir`.
pub fn disk_free_bytes(dir: &std::path::Path) -> u64 {
    weir_core::alarm::free_bytes(dir).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_proc() {
        assert!(super::memory_rss_bytes() > 0);
        assert!(super::memory_high_watermark_bytes() > 0);
    }
}
