//! One process per data directory: an exclusive `flock` on `<data>/lock`,
//! held for as long as the broker is open.
//!
//! Two brokers on one directory would each believe they own every log and
//! metadata file, and corrupt them; on one machine running a test cluster
//! that is one mistyped `--data-dir` away. The kernel drops the lock when
//! the process dies, `kill -9` included, so a crash never leaves it stuck.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

const LOCK_FILE: &str = "lock";

/// The held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir`, writing this process's id into the
    /// file so that a refused start can say who holds it.
    ///
    /// # Errors
    ///
    /// `WouldBlock` naming the holder's pid when another process holds it;
    /// other I/O errors opening the file.
    pub(crate) fn acquire(data_dir: &Path) -> io::Result<DataDirLock> {
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is in use by another weir process (pid {}); \
                     every node needs its own --data-dir",
                    data_dir.display(),
                    holder.trim()
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let error = DataDirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(
            error
                .to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
