//! The change log: its identity and ancestry, the durable head, paging, truncation, and backups.

use super::*;

impl Store {
    /// The sequence of the latest change-log entry (0 if none), durable or
    /// not yet.
    pub fn log_head(&self) -> Result<u64> {
        Ok(self.lock().next_seq - 1)
    }

    /// The change log's identity. A device's cursor names the log it came
    /// from; when the server's log is not that one (restored from a
    /// backup), the device re-offers its changes and pulls afresh.
    pub fn log_id(&self) -> [u8; 16] {
        *self.log_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a consistent copy of this store to a new store at `dest`
    /// (which must not exist), while the store stays open: writers wait
    /// for the copy, readers do not. Everything is copied — records, the
    /// change log, the scope table, metadata (actor, counters, keys, log
    /// identity) — as it stands at one point, then the complete attached
    /// files into `dest/files`. Returns how
    /// many records and the log head the copy holds.
    pub fn backup_to(&self, dest: &Path) -> Result<(usize, u64)> {
        if dest.exists() {
            return Err(Error::InvalidInput {
                field: "backup destination",
                reason: format!("{} exists; back up into a new directory", dest.display()),
            });
        }
        // Writers wait while the copy is read (it reads the engine's view,
        // which holds every applied write; flushing is not needed for
        // that): on a shared engine inside a write turn, so every server's
        // writes wait. The copy is a sled store whatever the engine.
        let shared = self.db.is_shared();
        let w = if shared {
            self.lock_writes()?
        } else {
            self.lock()
        };
        let copy = backend::SledBackend::open(dest, false)?;
        let mut batch = Batch::default();
        // An encrypted store's bytes are copied as they are stored: the copy
        // is encrypted under the same key.
        let source = self.db.raw().unwrap_or(self.db.as_ref());
        for item in backend::scan(source, &[]) {
            let (k, v) = item?;
            batch.insert(k, v);
            if batch.len() == 4096 {
                copy.apply(std::mem::take(&mut batch))?;
            }
        }
        // What the copy shares with this log for good: entries durable
        // here are never numbered again, whatever happens to this process.
        let durable = self
            .durable_seq
            .load(std::sync::atomic::Ordering::SeqCst)
            .min(w.next_seq - 1);
        let k = key(P_META, META_BACKUP_SHARED);
        let v = self.db.stored_form(&k, &durable.to_be_bytes())?;
        batch.insert(k, v);
        copy.apply(batch)?;
        copy.flush(FlushMode::Process)?;
        let head = w.next_seq - 1;
        drop(w);
        if shared {
            // Ends the turn (it wrote nothing).
            self.flush_now()?;
        }
        let records = self.len()?;
        drop(copy);
        // The files the records reference go with them (complete files
        // never change, so copying them after the keys is consistent: a
        // file attached meanwhile is simply not referenced in the copy).
        self.files.copy_to(&dest.join("files"))?;
        make_private(dest)?;
        sync_dir_files(dest)?;
        Ok((records, head))
    }

    /// Gives the change log a new identity, durably: what a restore does,
    /// since the restored log's tail is not the one devices saw. The old
    /// identity is kept as an ancestor with the last sequence both logs
    /// share (the durable head of the live log when the backup was taken,
    /// else this log's head), so a device that knew the old log continues
    /// from there instead of starting over ([`Store::log_shared_with`]).
    /// Returns the new id.
    pub fn renew_log_id(&self) -> Result<[u8; 16]> {
        let id = random_log_id()?;
        let shared = match self.db.get(&key(P_META, META_BACKUP_SHARED))? {
            Some(v) => u64::from_be_bytes(
                <[u8; 8]>::try_from(v.as_slice())
                    .map_err(|_| Error::Metadata("bad backup point".into()))?,
            ),
            None => self.durable_head()?,
        }
        .min(self.log_head()?);
        let mut ancestors: Vec<([u8; 16], u64)> = self
            .log_ancestors()?
            .into_iter()
            .map(|(log, s)| (log, s.min(shared)))
            .collect();
        ancestors.push((self.log_id(), shared));
        // Bounded: a log restored many times keeps its latest ancestors.
        if ancestors.len() > 16 {
            ancestors.drain(..ancestors.len() - 16);
        }
        let encoded = bincode::encode_to_vec(&ancestors, bincode_config())
            .map_err(|e| Error::Metadata(e.to_string()))?;
        let mut batch = Batch::default();
        batch.insert(key(P_META, META_LOG_ID), id);
        batch.insert(key(P_META, META_LOG_ANCESTORS), encoded);
        batch.remove(key(P_META, META_BACKUP_SHARED));
        self.write_point()?;
        let w = self.lock_writes()?;
        self.db.apply(batch)?;
        drop(w);
        self.flush_now()?;
        *self.log_id.lock().unwrap_or_else(PoisonError::into_inner) = id;
        Ok(id)
    }

    pub(super) fn log_ancestors(&self) -> Result<Vec<([u8; 16], u64)>> {
        match self.db.get(&key(P_META, META_LOG_ANCESTORS))? {
            None => Ok(Vec::new()),
            Some(v) => bincode::decode_from_slice(&v, bincode_config())
                .map(|(a, _)| a)
                .map_err(|e| Error::Metadata(format!("log ancestors: {e}"))),
        }
    }

    /// When `log` is a log this one continues (this store was restored from
    /// a backup of it), the last sequence the two share: a device whose
    /// cursor came from `log` may continue here from that point.
    pub fn log_shared_with(&self, log: [u8; 16]) -> Result<Option<u64>> {
        Ok(self
            .log_ancestors()?
            .into_iter()
            .rev()
            .find(|(l, _)| *l == log)
            .map(|(_, shared)| shared))
    }

    /// The sequence of the latest change-log entry known to be durable: the
    /// feed is served up to here only. A store that does not flush
    /// (`Durability::None`) counts everything applied.
    ///
    /// On an engine several servers share, the store first follows what
    /// the others committed ([`Store::follow`]), so the head is the
    /// database's: every entry at or before it is committed.
    pub fn durable_head(&self) -> Result<u64> {
        if self.durability == Durability::None {
            return self.log_head();
        }
        self.follow()?;
        Ok(self.durable_seq.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Up to `limit` change-log entries after sequence `after`.
    pub fn log_since(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let start = key(P_LOG, &after.saturating_add(1).to_be_bytes());
        let end = backend::prefix_end(&[P_LOG]);
        let mut out = Vec::new();
        for (k, v) in self.db.range(&start, &end, limit, false)? {
            let seq = open::log_seq(&k)?;
            let (e, _) = bincode::decode_from_slice::<StoredLogEntry, _>(&v, bincode_config())
                .map_err(|e| Error::Metadata(format!("change-log entry {seq}: {e}")))?;
            out.push(LogEntry {
                seq,
                id: RecordId::from_bytes(e.id),
                hashes: e.hashes.into_iter().map(ChangeHash).collect(),
                origin: e.origin,
                from: e.from.map(|a| ActorId::from(a.as_slice())),
                moved_from: e.moved_from,
                changes: e.changes,
            });
        }
        Ok(out)
    }

    /// Discards change-log entries before sequence `before` (keeping the
    /// log from growing forever on a server). Devices whose cursor is older
    /// then get snapshots instead. Returns how many entries were removed.
    /// The newest entry is always kept: the next sequence number is
    /// recovered from it at open.
    pub fn truncate_log(&self, before: u64) -> Result<usize> {
        let w = self.lock_writes()?;
        let before = before.min(w.next_seq.saturating_sub(1));
        let end = key(P_LOG, &before.to_be_bytes());
        let mut batch = Batch::default();
        for (k, _) in self.db.range(&[P_LOG], &end, usize::MAX, false)? {
            batch.remove(k);
        }
        let n = batch.len();
        self.write_point()?;
        self.db.apply(batch)?;
        drop(w);
        self.make_durable()?;
        Ok(n)
    }

    /// The lowest change-log sequence still kept (1 if none was ever
    /// discarded). A cursor older than this cannot be served from the log.
    pub fn log_floor(&self) -> Result<u64> {
        match backend::first(self.db.as_ref(), &[P_LOG])? {
            Some((k, _)) => open::log_seq(&k),
            None => Ok(self.lock().next_seq),
        }
    }
}
