//! The controller's writes wait for disk space instead of failing.
//!
//! openraft takes every storage error as fatal: the node's raft stops for
//! good, and its controller never applies metadata again (nor heartbeats
//! the new leader, so the node stays fenced), even after space returns. A
//! full disk is the one write error that heals by itself, so the raft log
//! and the snapshot retry a write the disk refused — each leaves nothing
//! behind when it fails (see the callers) — until there is space again.
//! Meanwhile raft on this node waits, as if the process were stopped: the
//! other voters carry on without it, and it catches up afterwards. Every
//! other error stays fatal.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a write the disk refused for want of space waits before it
/// tries again.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Whether `error` says the file system is full.
pub(crate) fn is_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull
}

/// Runs `write` until it succeeds or fails for another reason than a full
/// disk. Once `closing` is set the full disk's error is returned too, so a
/// disk that stays full does not hold up shutting down. Blocks: call it
/// off the async threads.
///
/// # Errors
///
/// `write`'s error, when it is not a full disk or `closing` is set.
pub(crate) fn retry_while_full<T>(
    what: &str,
    closing: &AtomicBool,
    mut write: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut waited = false;
    loop {
        match write() {
            Err(error) if is_full(&error) && !closing.load(Ordering::Acquire) => {
                if !waited {
                    tracing::warn!(%error, what, "the disk is full: this node's controller waits for space");
                    waited = true;
                }
                std::thread::sleep(RETRY_INTERVAL);
            }
            result => {
                if waited && result.is_ok() {
                    tracing::info!(what, "space returned: the controller writes again");
                }
                return result;
            }
        }
    }
}
