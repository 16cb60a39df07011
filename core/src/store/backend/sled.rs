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
/// not cache, the operating system's page cache still serves. The bound
/// holds in memory: the vendored sled charges a cached page its size
/// decompressed, allocations included (`vendor/sled/PATCHED.md`, 4).
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Whether sled at `path` compresses what it writes (zstd). A directory
/// sled has not written yet is created compressed; one it has keeps how
/// it was created, because sled refuses to open a store with the other
/// setting (it records it in its `conf` file). Stores created before
/// compression was chosen have no `use_compression: true` there.
///
/// Compressed, a store takes about 0.6 of the space on disk (see
/// ARCHITECTURE.md, "Storage on sled"); an encrypted store's values are
/// sealed and do not compress, but its keys and pages' structure do.
fn compressed(path: &Path) -> bool {
    match std::fs::read(path.join("conf")) {
        Ok(conf) => conf
            .split(|b| *b == b'\n')
            .any(|line| line == b"use_compression: true"),
        // No settings yet: new, unless sled's data file already exists
        // (a store whose settings file was lost was created before
        // compression, which the data file cannot tell us otherwise).
        Err(_) => !path.join("db").exists(),
    }
}

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
    /// zstd's level for sled's pages: the fastest. At level 5 (sled's
    /// default) the first sync of 10,000 records took 2.1× as long as
    /// uncompressed, against 1.4× at level 1, for no clear gain on disk
    /// (`cargo bench -p gridsync-tests --bench store --
    /// --compression-only`). Not recorded by sled: it may change freely.
    pub const COMPRESSION_LEVEL: i32 = 1;

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
                .use_compression(true)
                .compression_factor(Self::COMPRESSION_LEVEL)
                .open()
                .map_err(storage)?
        } else {
            std::fs::create_dir_all(path)?;
            let compress = compressed(path);
            // A store closed a moment ago in this process may still be held
            // by sled's background threads for a few milliseconds; wait for
            // the lock briefly before reporting it as held elsewhere.
            let mut attempts = 0;
            loop {
                let opened = catch_unwind(|| {
                    sled::Config::new()
                        .path(path)
                        .cache_capacity(CACHE_BYTES)
                        .use_compression(compress)
                        .compression_factor(Self::COMPRESSION_LEVEL)
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

    /// Creates sled at `path` (which must not hold a store yet) as builds
    /// before compression created every store: uncompressed. Such a store
    /// stays uncompressed whenever it is opened. For tests and benches that
    /// compare the two or need a store as an older build left it.
    pub fn create_uncompressed(path: &Path) -> Result<()> {
        if path.join("db").exists() {
            return Err(Error::InvalidInput {
                field: "path",
                reason: "a store exists there already".into(),
            });
        }
        std::fs::create_dir_all(path)?;
        let db = sled::Config::new()
            .path(path)
            .use_compression(false)
            .open()
            .map_err(storage)?;
        db.flush().map_err(storage)?;
        Ok(())
    }

    /// Whether this store's sled compresses what it writes.
    pub fn is_compressed(path: &Path) -> bool {
        compressed(path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_stores_are_compressed_and_older_ones_stay_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (dir.path().join("new"), dir.path().join("old"));
        SledBackend::create_uncompressed(&old).unwrap();
        assert!(SledBackend::create_uncompressed(&old).is_err());
        for (path, compressed) in [(&new, true), (&old, false)] {
            for round in 0..2u8 {
                let db = SledBackend::open(path, false).unwrap();
                let mut batch = Batch::default();
                batch.insert(vec![b'd', round], vec![round; 4096]);
                db.write_now(batch, FlushMode::Sync).unwrap();
                for r in 0..=round {
                    assert_eq!(db.get(&[b'd', r]).unwrap(), Some(vec![r; 4096]));
                }
                drop(db);
                // The choice is sled's own record, read back as it wrote it.
                let conf = std::fs::read(path.join("conf")).unwrap();
                let line = format!("use_compression: {compressed}");
                assert!(conf.windows(line.len()).any(|w| w == line.as_bytes()));
                assert_eq!(SledBackend::is_compressed(path), compressed);
            }
        }
        // A data file without its settings is an older store's.
        std::fs::remove_file(old.join("conf")).unwrap();
        assert!(!SledBackend::is_compressed(&old));
        assert!(SledBackend::is_compressed(&dir.path().join("none")));
    }
}
