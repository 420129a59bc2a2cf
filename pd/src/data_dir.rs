//! PD's data directory on disk: its lock (one PD per directory) and atomic file writes
//! (a crash leaves the old file or the new one, never a torn one).

use crate::error::Error;
use std::io::Write;
use std::path::Path;

/// Takes the exclusive lock of `<dir>/LOCK` (an advisory `flock`, as RocksDB locks a
/// store's directory), released when the returned file is dropped or the process dies.
/// A second PD on the same directory would resume the same TSO high water and hand out
/// timestamps the first also hands out: refused with [`Error::DataDirLocked`].
pub(crate) fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, Error> {
    let path = dir.join("LOCK");
    let persist = |source| Error::Persist {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(persist)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::DataDirLocked {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(persist(source)),
    }
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Persist {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}
