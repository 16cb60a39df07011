//! Following other servers: on an engine several server processes share,
//! each keeps the index, the document cache and the next log sequence in
//! memory, and catches up with what the others committed by reading the
//! change log after the last entry it knows.
//!
//! It catches up at the start of every write turn (before computing
//! anything from memory), before it serves the feed (so the feed and the
//! documents it serves agree), and when [`Store::follow`] is called (the
//! server does every 200 ms, which bounds how stale an office read on one
//! node can be after a write through another). A node always reads its own
//! writes: they update its memory directly.

use super::*;

impl Store {
    /// Whether other processes (servers) write to this store's engine.
    pub fn is_shared(&self) -> bool {
        self.db.is_shared()
    }

    /// Catches up with what other processes committed to a shared engine;
    /// returns how many change-log entries were followed (0 on an engine
    /// no other process writes to).
    pub fn follow(&self) -> Result<usize> {
        if !self.db.is_shared() {
            return Ok(0);
        }
        let mut w = self.lock();
        if self.db.holds_turn() {
            // No other process can commit while this one holds the turn.
            return Ok(0);
        }
        self.follow_locked(&mut w)
    }

    /// Reads the change log after the last entry this process knows and
    /// reloads the index entry (and drops the cached document) of every
    /// record it names. A gap (entries removed by retention meanwhile)
    /// reloads everything.
    pub(super) fn follow_locked(&self, w: &mut Writer) -> Result<usize> {
        // Nothing of this process is unflushed here: the outbox counter
        // the database holds is committed (another server's warnings
        // write no log entry, so this runs whatever the log says).
        self.reset_outbox_marks()?;
        let mut known = w.next_seq - 1;
        let end = backend::prefix_end(&[P_LOG]);
        let mut touched = BTreeSet::new();
        let mut followed = 0;
        loop {
            let start = key(P_LOG, &known.saturating_add(1).to_be_bytes());
            let page = self.db.range(&start, &end, 512, false)?;
            let Some((last, _)) = page.last() else { break };
            let last = open::log_seq(last)?;
            if open::log_seq(&page[0].0)? != known + 1 {
                return self.reload_locked(w).map(|()| followed);
            }
            for (_, v) in &page {
                let (e, _) = bincode::decode_from_slice::<StoredLogEntry, _>(v, bincode_config())
                    .map_err(|e| Error::Metadata(format!("change-log entry: {e}")))?;
                touched.insert(RecordId::from_bytes(e.id));
            }
            followed += page.len();
            known = last;
            if page.len() < 512 {
                break;
            }
        }
        if followed == 0 {
            return Ok(0);
        }
        for id in touched {
            w.cache.pop(&id);
            self.reload_entry(id)?;
        }
        w.next_seq = known + 1;
        self.durable_seq
            .fetch_max(known, std::sync::atomic::Ordering::SeqCst);
        self.reload_log_id()?;
        Ok(followed)
    }

    /// Reads everything kept in memory again (the index, the next log
    /// sequence, the log's identity) and empties the document cache.
    pub(super) fn reload_locked(&self, w: &mut Writer) -> Result<()> {
        w.cache.clear();
        self.load_index()?;
        self.load_texts(false)?;
        w.next_seq = open::last_log_seq(self.db.as_ref())? + 1;
        self.durable_seq
            .fetch_max(w.next_seq - 1, std::sync::atomic::Ordering::SeqCst);
        self.reset_outbox_marks()?;
        self.reload_log_id()
    }

    fn reload_entry(&self, id: RecordId) -> Result<()> {
        match self.db.get(&key(P_INDEX, id.as_bytes()))? {
            None => self.index_mut().remove(id),
            Some(v) => match bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config()) {
                Ok((stored, _)) if stored.meta.id == *id.as_bytes() => {
                    self.index_mut().insert(stored.meta)
                }
                _ => {
                    let mut index = self.index_mut();
                    index.remove(id);
                    index.corrupt.insert(id);
                }
            },
        }
        // After the entry: what search holds of the text goes in it.
        self.reload_text(id)
    }

    fn reload_log_id(&self) -> Result<()> {
        if let Some(v) = self.db.get(&key(P_META, META_LOG_ID))? {
            if let Ok(id) = <[u8; 16]>::try_from(v.as_slice()) {
                *self.log_id.lock().unwrap_or_else(PoisonError::into_inner) = id;
            }
        }
        Ok(())
    }
}
