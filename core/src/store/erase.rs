//! Erasing a device's store when the device is retired or wiped (see
//! [`crate::lifecycle`]).
//!
//! [`Store::erase`] removes every key (one atomic batch, made durable) and
//! every attached file, empties what the store holds in memory, and
//! leaves a mark in the store's directory: the next open deletes the
//! directory before opening, so nothing of the old store — not even what
//! the engine keeps of removed values until it reuses its space — is
//! read again, and a fresh store (new identity, not enrolled) begins. The
//! store object itself refuses to be enrolled again ([`Error::Erased`]);
//! open the store anew for that. An encrypted store's key should be
//! deleted by the app as well: what is left on the flash is then
//! unreadable.

use std::fs;

use super::*;

/// In an erased store's directory: delete it at the next open.
pub(super) const ERASED: &str = "ERASED";

impl Store {
    /// Erases everything this store holds: records, pending work, the
    /// change log, sync state, metadata and attached files. Returns how
    /// many records with changes the server had not acknowledged were
    /// erased with it. Live queries are called back with empty pages.
    pub fn erase(&self) -> Result<usize> {
        let pending = self.pending()?.len();
        let ids: Vec<RecordId> = self.index_read().ids().collect();
        {
            let mut w = self.lock_writes()?;
            self.erased.store(true, std::sync::atomic::Ordering::SeqCst);
            let raw = self.db.raw().unwrap_or(self.db.as_ref());
            let mut batch = Batch::default();
            for item in backend::scan(raw, &[]) {
                batch.remove(item?.0);
            }
            self.db.apply(batch)?;
            self.db.flush(FlushMode::Sync)?;
            w.cache.clear();
            *self.index_mut() = index::Index::default();
            *self
                .device_code
                .write()
                .unwrap_or_else(PoisonError::into_inner) = String::new();
        }
        self.files.remove_all()?;
        if !self.db.is_shared() && !self.path.as_os_str().is_empty() && self.path.is_dir() {
            fs::File::create(self.path.join(ERASED))?.sync_all()?;
        }
        for id in ids {
            self.live.touch(id);
        }
        Ok(pending)
    }

    /// Whether a retiring device may erase this store: the server has
    /// acknowledged every change (it acknowledges only what it made
    /// durable) and holds every file this device attached.
    pub fn ready_to_retire(&self) -> Result<bool> {
        Ok(self.pending()?.is_empty() && self.unsent_files()?.is_empty())
    }

    /// Whether [`Store::erase`] was called on this store object.
    pub fn is_erased(&self) -> bool {
        self.erased.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Deletes a store directory [`Store::erase`] marked, before it is opened.
pub(super) fn clear_erased(path: &Path) -> Result<()> {
    if path.join(ERASED).exists() {
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else if entry.file_name() != ERASED {
                fs::remove_file(entry.path())?;
            }
        }
        // Last: a crash before this point deletes the rest next time.
        fs::remove_file(path.join(ERASED))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    fn new_issue() -> NewIssue {
        sample_issue("楼道堆物", "G1")
    }

    #[test]
    fn an_erased_store_holds_nothing_refuses_enrollment_and_reopens_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let mut config = StoreConfig::new(&path, "");
        config.durability = Durability::Flush;
        let store = Store::open(config.clone()).unwrap();
        store.adopt_device_code("P1").unwrap();
        let worker = Author::new("w1", Role::GridWorker);
        let id = store.create_issue(&worker, new_issue()).unwrap();
        let (hash, _) = store
            .files
            .import(&mut &b"photo bytes"[..], 1 << 20)
            .unwrap();
        let actor = store.actor().clone();
        assert_eq!(store.erase().unwrap(), 1);
        assert!(store.is_erased());
        assert_eq!(store.len().unwrap(), 0);
        assert!(store.issue(id).is_err());
        assert!(store.pending().unwrap().is_empty());
        assert!(!store.files.has(&hash));
        assert_eq!(
            store.create_issue(&worker, new_issue()).unwrap_err().code(),
            "not_enrolled"
        );
        assert_eq!(store.adopt_device_code("P2").unwrap_err().code(), "erased");
        drop(store);
        assert!(path.join(ERASED).exists());
        let store = Store::open(config).unwrap();
        assert!(!path.join(ERASED).exists());
        assert_ne!(store.actor(), &actor, "a fresh store");
        assert!(!store.is_enrolled().unwrap());
        assert_eq!(store.len().unwrap(), 0);
        assert_eq!(store.log_head().unwrap(), 0);
    }
}
