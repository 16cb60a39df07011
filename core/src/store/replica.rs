//! Replica bookkeeping: pending records, acknowledgements, what the server holds, and the sync client's saved state.

use super::*;

/// The sync client's saved state naming the records leaving the device
/// (moved out of its scope; see `sync`).
pub(crate) const DROP_STATE: &str = "drops";

impl Store {
    /// Whether the server has told this device to drop the record (it moved
    /// out of the device's scope): the device keeps it only until its earlier
    /// edits are uploaded, and takes no new ones, which the server would
    /// refuse (see `audit` and the move rule in ARCHITECTURE.md).
    pub(crate) fn is_leaving(&self, id: RecordId) -> Result<bool> {
        Ok(match self.sync_state(DROP_STATE)? {
            None => false,
            Some(bytes) => bincode::decode_from_slice::<Vec<[u8; 16]>, _>(&bytes, bincode_config())
                .map(|(ids, _)| ids.contains(id.as_bytes()))
                .unwrap_or(false),
        })
    }

    /// Removes a record from this store (a device whose scope no longer
    /// includes it). Refused, returning `false`, while the record has local
    /// changes the server has not acknowledged: those are uploaded first.
    pub fn remove_record(&self, id: RecordId) -> Result<bool> {
        let mut w = self.lock_writes()?;
        if self.db.get(&key(P_PENDING, id.as_bytes()))?.is_some() {
            return Ok(false);
        }
        let mut batch = Batch::default();
        for prefix in [P_SNAPSHOT, P_INDEX, P_SERVER_HEADS, P_SCOPE, P_TEXT, P_HELD] {
            batch.remove(key(prefix, id.as_bytes()));
        }
        for item in backend::scan(self.db.as_ref(), &key(P_CHUNK, id.as_bytes())) {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.write_point()?;
        self.db.apply(batch)?;
        w.cache.pop(&id);
        let mut index = self.index_mut();
        index.remove(id);
        index.texts.remove(&id);
        drop(index);
        self.live.touch(id);
        drop(w);
        self.make_durable()?;
        Ok(true)
    }

    /// A small named value kept with the store (sync cursors and the like),
    /// written durably.
    pub fn set_sync_state(&self, name: &str, value: &[u8]) -> Result<()> {
        self.set_sync_state_unflushed(name, value)?;
        self.make_durable()
    }

    /// Like [`Store::set_sync_state`] but not yet durable.
    pub fn set_sync_state_unflushed(&self, name: &str, value: &[u8]) -> Result<()> {
        self.write_point()?;
        let mut batch = Batch::default();
        batch.insert(sync_state_key(name), value);
        let _w = self.lock_writes()?;
        self.db.apply(batch)
    }

    /// Removes a value written by [`Store::set_sync_state`]; not yet
    /// durable.
    pub fn clear_sync_state_unflushed(&self, name: &str) -> Result<()> {
        self.write_point()?;
        let mut batch = Batch::default();
        batch.remove(sync_state_key(name));
        let _w = self.lock_writes()?;
        self.db.apply(batch)
    }

    /// A value written by [`Store::set_sync_state`].
    pub fn sync_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db.get(&sync_state_key(name))
    }

    /// Records with local changes the server has not acknowledged, oldest
    /// first by their latest change.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        for item in backend::scan(self.db.as_ref(), &[P_PENDING]) {
            let (k, v) = item?;
            let (Some(id), Ok(seq)) = (
                RecordId::from_slice(&k[1..]),
                <[u8; 8]>::try_from(v.as_ref()),
            ) else {
                return Err(Error::Metadata("bad pending entry".into()));
            };
            out.push(Pending {
                id,
                seq: u64::from_be_bytes(seq),
            });
        }
        out.sort_by_key(|p| p.seq);
        Ok(out)
    }

    /// The heads the server is known to have for a record.
    pub fn server_heads(&self, id: RecordId) -> Result<Vec<ChangeHash>> {
        match self.db.get(&key(P_SERVER_HEADS, id.as_bytes()))? {
            None => Ok(Vec::new()),
            Some(v) => {
                let (hashes, _) =
                    bincode::decode_from_slice::<Vec<[u8; 32]>, _>(&v, bincode_config())
                        .map_err(|e| Error::Metadata(format!("server heads: {e}")))?;
                Ok(hashes.into_iter().map(ChangeHash).collect())
            }
        }
    }

    /// Records that the server now has `server_heads` for a record, covering
    /// local changes up to log sequence `upto`. The record stays pending if
    /// it was changed again after `upto`, so nothing made during a sync is
    /// forgotten.
    pub fn acknowledge(&self, id: RecordId, upto: u64, server_heads: &[ChangeHash]) -> Result<()> {
        self.acknowledge_all(&[Ack {
            id,
            upto,
            server_heads: server_heads.to_vec(),
        }])
    }

    /// [`Store::acknowledge`] for many records, in one batch and one flush.
    pub fn acknowledge_all(&self, acks: &[Ack]) -> Result<()> {
        self.acknowledge_all_unflushed(acks)?;
        self.make_durable()
    }

    /// Like [`Store::acknowledge_all`] but not yet durable.
    pub fn acknowledge_all_unflushed(&self, acks: &[Ack]) -> Result<()> {
        let _w = self.lock_writes()?;
        let mut batch = Batch::default();
        for ack in acks {
            let id = ack.id;
            if ack.server_heads.is_empty() {
                batch.remove(key(P_SERVER_HEADS, id.as_bytes()));
            } else {
                let heads: Vec<[u8; 32]> = ack.server_heads.iter().map(|h| h.0).collect();
                let heads = bincode::encode_to_vec(&heads, bincode_config())
                    .map_err(|e| Error::Metadata(e.to_string()))?;
                batch.insert(key(P_SERVER_HEADS, id.as_bytes()), heads);
            }
            let pending = self.db.get(&key(P_PENDING, id.as_bytes()))?;
            if let Some(v) = pending {
                let seq = <[u8; 8]>::try_from(v.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::Metadata("bad pending entry".into()))?;
                if seq <= ack.upto {
                    batch.remove(key(P_PENDING, id.as_bytes()));
                }
            }
        }
        self.write_point()?;
        self.db.apply(batch)
    }

    /// Prepares to re-offer everything to a server whose log is not the one
    /// this device knew (restored from a backup): forgets what the server
    /// was known to hold of every record and marks every record pending,
    /// so the next pushes send all of this device's own changes (the
    /// server keeps what it already has). Records with nothing of this
    /// device's own leave the pending list at the next push.
    pub fn reoffer_all(&self) -> Result<()> {
        let w = self.lock_writes()?;
        let seq = w.next_seq.saturating_sub(1).to_be_bytes();
        let mut batch = Batch::default();
        for id in self.index_read().ids() {
            batch.remove(key(P_SERVER_HEADS, id.as_bytes()));
            if self.db.get(&key(P_PENDING, id.as_bytes()))?.is_none() {
                batch.insert(key(P_PENDING, id.as_bytes()), seq);
            }
        }
        self.write_point()?;
        self.db.apply(batch)?;
        drop(w);
        self.make_durable()
    }

    /// Forgets what the server is known to have for a record, so the next
    /// push sends its whole history (after the server reported missing
    /// dependencies).
    pub fn forget_server_heads(&self, id: RecordId) -> Result<()> {
        self.write_point()?;
        let mut batch = Batch::default();
        batch.remove(key(P_SERVER_HEADS, id.as_bytes()));
        let w = self.lock_writes()?;
        self.db.apply(batch)?;
        drop(w);
        self.make_durable()
    }
}
