//! Small files replaced atomically: write a temporary file, fsync it, rename
//! it over the old one, fsync the directory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces `path` with `contents` so that a crash leaves either the old or
/// the new file, never a mix.
///
/// # Errors
///
/// Any I/O error; the old file is then unchanged.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = File::create(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Forces a directory's entries (created, renamed, removed files) to disk.
///
/// # Errors
///
/// The open or fsync error.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
