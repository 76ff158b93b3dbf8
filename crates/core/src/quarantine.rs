//! Start-up never fails because of one bad topic or queue: an entity whose
//! own files are unreadable, partial or not what they claim to be is moved
//! aside into `<data>/quarantine/`, with an `ERROR` line naming where it was,
//! where it went and why, and the rest of the data directory is served.
//!
//! Errors of the machine rather than of the entity (out of descriptors or
//! memory, a permission denied) are not reasons to quarantine: moving data
//! aside because the process hit its open-file limit would hide healthy
//! topics. Those stop the start-up with a message naming the path instead.

use std::fmt::Display;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use weir_log::checkpoint::sync_dir;

use crate::logging::Escaped;

/// Directory under the data directory that holds quarantined entities.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Whether an error opening an entity says the entity itself is bad (and so
/// should be quarantined) rather than the machine (descriptors, memory,
/// permissions, a full disk), which no amount of moving data aside fixes.
pub fn is_entity_fault(error: &io::Error) -> bool {
    const MACHINE_ERRNOS: [i32; 6] = [
        libc::EMFILE,
        libc::ENFILE,
        libc::ENOMEM,
        libc::EACCES,
        libc::EPERM,
        libc::ENOSPC,
    ];
    !error
        .raw_os_error()
        .is_some_and(|errno| MACHINE_ERRNOS.contains(&errno))
}

/// Moves `path` to `<data_dir>/quarantine/<kind>/<file name>.<unix ms>` and
/// logs why. Returns where it went.
///
/// # Errors
///
/// The rename or directory sync error; the entity then stays where it was.
pub fn quarantine(
    data_dir: &Path,
    kind: &str,
    path: &Path,
    reason: &dyn Display,
) -> io::Result<PathBuf> {
    let target_dir = data_dir.join(QUARANTINE_DIR).join(kind);
    fs::create_dir_all(&target_dir)?;
    let name = path
        .file_name()
        .map_or_else(|| "unnamed".into(), |name| name.to_string_lossy());
    let target = target_dir.join(format!("{name}.{}", crate::now_ms()));
    fs::rename(path, &target)?;
    sync_dir(&target_dir)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    tracing::error!(
        path = %Escaped(path.display()),
        moved_to = %Escaped(target.display()),
        reason = %Escaped(reason),
        "quarantined a {kind} entry that cannot be opened; the rest is served"
    );
    Ok(target)
}

/// `error` with `path` in its message, so start-up failures say where.
pub fn at_path(path: &Path, error: impl Display) -> io::Error {
    io::Error::other(format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_errors_are_not_entity_faults() {
        assert!(!is_entity_fault(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(!is_entity_fault(&io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        assert!(is_entity_fault(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(is_entity_fault(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(is_entity_fault(&io::Error::new(
            io::ErrorKind::InvalidData,
            "bad json"
        )));
    }

    #[test]
    fn quarantine_moves_aside_and_keeps_contents() {
        let data = tempfile::tempdir().expect("tempdir");
        let stray = data.path().join("topics").join("stray");
        fs::create_dir_all(&stray).expect("mkdir");
        fs::write(stray.join("file"), b"kept").expect("write");
        let moved = quarantine(data.path(), "topics", &stray, &"test").expect("quarantine");
        assert!(!stray.exists());
        assert_eq!(fs::read(moved.join("file")).expect("read"), b"kept");
        assert!(moved.starts_with(data.path().join(QUARANTINE_DIR).join("topics")));
    }
}
