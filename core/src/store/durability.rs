//! Durability: the write point (crash failpoints), group commit, sled flush plus fdatasync of the data file and new blob files.

use super::*;

impl Store {
    /// Test hook (feature `failpoints`): the store "crashes" after `writes`
    /// more writes to sled; every later write or flush fails with an I/O
    /// error. Drop the store and reopen it to model a restart.
    #[cfg(feature = "failpoints")]
    pub fn crash_after_writes(&self, writes: u64) {
        self.crash.arm(writes);
    }

    /// Test hook (feature `failpoints`): runs `f` once, when the next
    /// [`Store::make_durable`] has completed, before it returns. Lets a test
    /// put another request's write between a round's flush and its paging
    /// of the feed.
    #[cfg(feature = "failpoints")]
    pub fn after_next_durable(&self, f: impl FnOnce() + Send + 'static) {
        *self
            .after_durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Every write to sled passes here first (a no-op unless the
    /// `failpoints` feature is on and a crash is armed).
    #[inline]
    pub(super) fn write_point(&self) -> Result<()> {
        #[cfg(feature = "failpoints")]
        if !self.crash.pass() {
            return Err(Error::Io(std::io::Error::other("simulated crash")));
        }
        Ok(())
    }

    /// Makes everything written so far durable (sled flush, then fdatasync
    /// as configured). Writes through the `*_unflushed` methods are not
    /// durable until this returns.
    ///
    /// Concurrent callers share flushes (group commit): a caller whose
    /// writes were applied before a flush started waits for that flush
    /// instead of starting its own.
    pub fn make_durable(&self) -> Result<()> {
        self.make_durable_inner()?;
        #[cfg(feature = "failpoints")]
        {
            let hook = self
                .after_durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        Ok(())
    }

    pub(super) fn make_durable_inner(&self) -> Result<()> {
        if self.durability == Durability::None {
            return Ok(());
        }
        let gate = &self.flush_gate;
        let mut state = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requested += 1;
        let ticket = state.requested;
        loop {
            if state.completed >= ticket {
                return Ok(());
            }
            if !state.flushing {
                state.flushing = true;
                let target = state.requested;
                drop(state);
                // Every entry applied so far is covered by this flush (the
                // writers of the tickets it serves applied theirs first).
                let applied = self.lock().next_seq - 1;
                let result = self.flush_now();
                if result.is_ok() {
                    self.durable_seq
                        .fetch_max(applied, std::sync::atomic::Ordering::SeqCst);
                }
                let mut after = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
                after.flushing = false;
                if result.is_ok() {
                    after.completed = after.completed.max(target);
                }
                gate.done.notify_all();
                return result;
            }
            state = gate
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Flushes to disk whatever the configured durability: for bulk loads
    /// that write with `Durability::None` and make it all durable at the end.
    pub fn flush(&self) -> Result<()> {
        let applied = self.lock().next_seq - 1;
        self.write_point()?;
        self.db.flush()?;
        if let Some(f) = &self.data_file {
            f.sync_data()?;
        }
        self.durable_seq
            .fetch_max(applied, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub(super) fn flush_now(&self) -> Result<()> {
        self.write_point()?;
        self.db.flush()?;
        if self.durability == Durability::Fsync {
            if let Some(f) = &self.data_file {
                f.sync_data()?;
            }
            self.sync_new_blobs()?;
        }
        Ok(())
    }

    pub(super) fn blob_names(&self) -> BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(self.path.join("blobs"))
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    }

    /// sled writes values too large for a log segment to separate blob
    /// files and never syncs them; we do.
    pub(super) fn sync_new_blobs(&self) -> Result<()> {
        let names = self.blob_names();
        let fresh: Vec<_> = {
            let w = self.lock();
            names.difference(&w.synced_blobs).cloned().collect()
        };
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
        let mut w = self.lock();
        w.synced_blobs = names;
        Ok(())
    }

    // ------------------------------------------------------------ loading
}
