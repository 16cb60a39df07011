//! The embedded engine: sled. Everything sled-specific lives here — opening
//! with lock waiting and move-aside of damaged files, and durability
//! beyond sled's own flush (fdatasync of its data file and of the blob
//! files it writes for large values and never syncs).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::{Backend, Batch, FlushMode, Updater};
use crate::error::{Error, Result};

/// The memory sled may keep for its page cache. sled's default (1 GiB)
/// would grow a server's resident memory with its store; what sled does
/// not cache, the operating system's page cache still serves.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// sled under a directory (or in memory, deleted on drop).
pub struct SledBackend {
    db: sled::Db,
    path: PathBuf,
    /// sled's data file, for fdatasync (none when temporary).
    data_file: Option<File>,
    /// Blob files already synced.
    synced_blobs: Mutex<BTreeSet<OsString>>,
}

impl std::fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn storage(e: sled::Error) -> Error {
    match e {
        sled::Error::Io(io) => Error::Io(io),
        e => Error::Storage(e.to_string()),
    }
}

/// sled errors that mean the files are damaged, as opposed to transient
/// trouble (a held lock, a full disk) that must never cost local data.
fn is_corruption(e: &sled::Error) -> bool {
    matches!(
        e,
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
    )
}

/// sled reports a held file lock as an `Other` I/O error whose message
/// names the lock (wrapping the `WouldBlock` from the OS).
fn is_lock_contention(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().starts_with("could not acquire lock")
        }
        _ => false,
    }
}

fn move_aside(path: &Path, reason: String) -> Error {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".damaged-{stamp}"));
    let target = PathBuf::from(target);
    match std::fs::rename(path, &target) {
        Ok(()) => Error::StoreMovedAside {
            path: path.display().to_string(),
            moved_to: target.display().to_string(),
            reason,
        },
        Err(e) => Error::Io(e),
    }
}

impl SledBackend {
    /// Opens (or creates) sled at `path`.
    ///
    /// If sled reports the files as corrupt, the directory is renamed to
    /// `<path>.damaged-<time>` and [`Error::StoreMovedAside`] is returned;
    /// the next open starts afresh. Transient errors (the directory is open
    /// in another process, the disk is full) are returned as they are and
    /// touch nothing.
    pub fn open(path: &Path, temporary: bool) -> Result<SledBackend> {
        let db = if temporary {
            sled::Config::new()
                .temporary(true)
                .cache_capacity(CACHE_BYTES)
                .open()
                .map_err(storage)?
        } else {
            std::fs::create_dir_all(path)?;
            // A store closed a moment ago in this process may still be held
            // by sled's background threads for a few milliseconds; wait for
            // the lock briefly before reporting it as held elsewhere.
            let mut attempts = 0;
            loop {
                let opened = catch_unwind(|| {
                    sled::Config::new()
                        .path(path)
                        .cache_capacity(CACHE_BYTES)
                        .open()
                });
                match opened {
                    Ok(Ok(db)) => break db,
                    Ok(Err(e)) if is_corruption(&e) => {
                        return Err(move_aside(path, e.to_string()));
                    }
                    Ok(Err(e)) if is_lock_contention(&e) && attempts < 100 => {
                        // sled releases its file lock when the last handle to
                        // the file is dropped, and some are dropped only by
                        // epoch-based deferred clean-up: help it along.
                        attempts += 1;
                        for _ in 0..4 {
                            crossbeam_epoch::pin().flush();
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Ok(Err(e)) => return Err(storage(e)),
                    Err(_) => {
                        return Err(move_aside(
                            path,
                            "the storage engine crashed while opening".into(),
                        ));
                    }
                }
            }
        };
        let data_file = if temporary {
            None
        } else {
            File::open(path.join("db")).ok()
        };
        let backend = SledBackend {
            db,
            path: path.to_path_buf(),
            data_file,
            synced_blobs: Mutex::new(BTreeSet::new()),
        };
        *backend.synced() = backend.blob_names();
        Ok(backend)
    }

    fn synced(&self) -> std::sync::MutexGuard<'_, BTreeSet<OsString>> {
        self.synced_blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn blob_names(&self) -> BTreeSet<OsString> {
        std::fs::read_dir(self.path.join("blobs"))
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    }

    /// sled writes values too large for a log segment to separate blob
    /// files and never syncs them; we do.
    fn sync_new_blobs(&self) -> Result<()> {
        let names = self.blob_names();
        let fresh: Vec<_> = names.difference(&self.synced()).cloned().collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let dir = self.path.join("blobs");
        for name in &fresh {
            match File::open(dir.join(name)) {
                Ok(f) => f.sync_data()?,
                // sled may have collected it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        File::open(&dir)?.sync_all()?;
        *self.synced() = names;
        Ok(())
    }
}

fn sled_batch(batch: Batch) -> sled::Batch {
    let mut b = sled::Batch::default();
    for (k, v) in batch.ops {
        match v {
            Some(v) => b.insert(k, v),
            None => b.remove(k),
        }
    }
    b
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key).map_err(storage)?.map(|v| v.to_vec()))
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let iter = self.db.range(start..end);
        let pair = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(storage)
        };
        if reverse {
            iter.rev().take(limit).map(pair).collect()
        } else {
            iter.take(limit).map(pair).collect()
        }
    }

    fn begin_turn(&self) -> Result<()> {
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        self.db.apply_batch(sled_batch(batch)).map_err(storage)
    }

    fn flush(&self, mode: FlushMode) -> Result<()> {
        if mode == FlushMode::Lazy {
            // sled writes it out within its flush interval.
            return Ok(());
        }
        self.db.flush().map_err(storage)?;
        if mode == FlushMode::Sync {
            if let Some(f) = &self.data_file {
                f.sync_data()?;
            }
            if self.data_file.is_some() {
                self.sync_new_blobs()?;
            }
        }
        Ok(())
    }

    fn update(&self, key: &[u8], mode: FlushMode, f: Updater<'_>) -> Result<Option<Vec<u8>>> {
        let old = self.db.fetch_and_update(key, f).map_err(storage)?;
        self.flush(mode)?;
        Ok(old.map(|v| v.to_vec()))
    }

    fn write_now(&self, batch: Batch, mode: FlushMode) -> Result<()> {
        self.apply(batch)?;
        self.flush(mode)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}
