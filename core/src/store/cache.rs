//! The document cache: loading records from their snapshot and chunks, and reading through the LRU cache.

use super::*;

impl Store {
    pub(super) fn kind_of(&self, id: RecordId) -> Result<RecordKind> {
        let index = self.index_read();
        match index.kind(id) {
            Some(kind) => kind.ok_or_else(|| Error::Corrupt {
                id,
                reason: "unknown record kind".into(),
            }),
            None if index.corrupt.contains(&id) => Err(Error::Corrupt {
                id,
                reason: "index entry unreadable".into(),
            }),
            None => Err(Error::NotFound(id)),
        }
    }

    /// Takes the record's document out of the cache, or loads it.
    pub(super) fn checkout(&self, w: &mut Writer, id: RecordId) -> Result<Loaded> {
        match w.cache.pop(&id) {
            Some(l) => Ok(l),
            None => self.load_from_disk(id),
        }
    }

    pub(super) fn load_from_disk(&self, id: RecordId) -> Result<Loaded> {
        let storage = match self.db.get(&key(P_INDEX, id.as_bytes()))? {
            Some(v) => bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config())
                .map(|(s, _)| s.storage)
                .unwrap_or_default(),
            None => Storage::default(),
        };
        self.load_with(id, storage)
    }

    /// Loads a record whose chunk accounting is `storage`.
    pub(super) fn load_with(&self, id: RecordId, storage: Storage) -> Result<Loaded> {
        let corrupt = |reason: String| Error::Corrupt { id, reason };
        let (snapshot, chunks) = self.read_stored(id)?;
        // One load of the snapshot followed by every chunk: Automerge applies
        // all the changes in one go, much cheaper than chunk by chunk.
        let snapshot_len = snapshot.len() as u64;
        let mut bytes = snapshot;
        let mut chunks_len = 0u64;
        for chunk in chunks {
            chunks_len += chunk.len() as u64;
            bytes.extend_from_slice(&chunk);
        }
        let loaded = catch_unwind(AssertUnwindSafe(|| -> Result<Loaded> {
            let doc = Automerge::load(&bytes).map_err(|e| corrupt(format!("load: {e}")))?;
            let mut storage = storage;
            storage.snapshot_len = snapshot_len;
            storage.chunks_len = chunks_len;
            Ok(Loaded {
                doc: doc.with_actor(self.actor.clone()),
                storage,
            })
        }))
        .map_err(|_| corrupt("the CRDT library crashed while loading".into()))??;
        if doc::record_type(&loaded.doc).is_none() {
            return Err(corrupt("not a gridsync record".into()));
        }
        Ok(loaded)
    }

    /// A record's snapshot and change chunks, read as one state (one
    /// statement on an engine other processes write to).
    pub(super) fn read_stored(&self, id: RecordId) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
        let chunks = key(P_CHUNK, id.as_bytes());
        let (snapshot, chunks) = self.db.get_and_range(
            &key(P_SNAPSHOT, id.as_bytes()),
            &chunks,
            &backend::prefix_end(&chunks),
        )?;
        let snapshot = snapshot.ok_or(Error::NotFound(id))?;
        Ok((snapshot, chunks.into_iter().map(|(_, v)| v).collect()))
    }

    /// [`Store::read_stored`] for several records in one read.
    #[allow(clippy::type_complexity)]
    pub(super) fn read_stored_many(
        &self,
        ids: &[RecordId],
    ) -> Result<Vec<(Vec<u8>, Vec<Vec<u8>>)>> {
        let reads: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = ids
            .iter()
            .map(|id| {
                let chunks = key(P_CHUNK, id.as_bytes());
                let end = backend::prefix_end(&chunks);
                (key(P_SNAPSHOT, id.as_bytes()), chunks, end)
            })
            .collect();
        self.db
            .get_and_range_many(&reads)?
            .into_iter()
            .zip(ids)
            .map(|((snapshot, chunks), id)| {
                let snapshot = snapshot.ok_or(Error::NotFound(*id))?;
                Ok((snapshot, chunks.into_iter().map(|(_, v)| v).collect()))
            })
            .collect()
    }

    pub(super) fn with_doc<T>(&self, id: RecordId, f: impl FnOnce(&Automerge) -> T) -> Result<T> {
        let mut w = self.lock();
        let loaded = self.checkout(&mut w, id)?;
        let out =
            catch_unwind(AssertUnwindSafe(|| f(&loaded.doc))).map_err(|_| Error::Corrupt {
                id,
                reason: "reading the record crashed the CRDT library".into(),
            })?;
        w.cache.put(id, loaded);
        Ok(out)
    }

    // ------------------------------------------------------------ reads
}
