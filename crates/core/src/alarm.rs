//! Resource alarms: when free disk space under the data directory falls
//! below a limit, intake stops until it recovers (AMQP publishers are
//! blocked with `connection.blocked`, Kafka and HTTP produces are refused
//! with a retriable storage error), so a full disk stops intake before
//! writes fail.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::sync::watch;

/// Watches free disk space; its receivers see `true` while the alarm is on.
#[derive(Debug)]
pub struct DiskAlarm {
    dir: PathBuf,
    free_bytes_min: u64,
    state: watch::Sender<bool>,
}

impl DiskAlarm {
    /// An alarm for the file system holding `dir`, on below `free_bytes_min`.
    pub fn new(dir: &Path, free_bytes_min: u64) -> DiskAlarm {
        DiskAlarm {
            dir: dir.to_owned(),
            free_bytes_min,
            state: watch::Sender::new(false),
        }
    }

    /// A receiver of the alarm's state.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Whether the alarm is on now.
    pub fn is_on(&self) -> bool {
        *self.state.borrow()
    }

    /// Measures free space and sets or clears the alarm; returns the free bytes.
    pub fn check(&self) -> Option<u64> {
        let free = free_bytes(&self.dir)?;
        let on = free < self.free_bytes_min;
        let changed = self
            .state
            .send_if_modified(|current| std::mem::replace(current, on) != on);
        if changed && on {
            tracing::warn!(
                free,
                limit = self.free_bytes_min,
                "disk alarm: free space below the limit; publishers blocked, produces refused"
            );
        } else if changed {
            tracing::info!(free, "disk alarm cleared");
        }
        Some(free)
    }
}

/// Bytes available to unprivileged users on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let path = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a valid
    // out-pointer for the duration of the call.
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    (result == 0).then(|| stats.f_bavail as u64 * stats.f_frsize as u64)
}
