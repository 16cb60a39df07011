//! Opening a store: the engine (see `backend`), format migration, and the in-memory index load.

use super::*;

impl Store {
    /// Test hook (feature `failpoints`): rewrites every index entry in
    /// store format 1's layout and records format 1, as an older build
    /// would have left the store, for migration tests on stores of any
    /// size. Drop the store and reopen it to migrate.
    #[cfg(feature = "failpoints")]
    pub fn rewrite_as_format_1(&self) -> Result<()> {
        let _w = self.lock_writes()?;
        let mut batch = Batch::default();
        for item in backend::scan(self.db.as_ref(), &[P_INDEX]) {
            let (k, v) = item?;
            let (stored, _) = bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config())
                .map_err(|e| Error::Metadata(e.to_string()))?;
            batch.insert(k, format1::encode(stored.meta, stored.storage)?);
        }
        batch.insert(key(P_META, META_FORMAT), 1u64.to_be_bytes());
        self.db.apply(batch)?;
        self.db.flush(FlushMode::Sync)?;
        Ok(())
    }

    /// Opens (or creates) the store at `config.path`.
    ///
    /// If sled reports the files as corrupt, the directory is renamed to
    /// `<path>.damaged-<time>` and [`Error::StoreMovedAside`] is returned; the
    /// next open starts a fresh store. Transient errors (the store is open in
    /// another process, the disk is full) are returned as they are and touch
    /// nothing.
    pub fn open(config: StoreConfig) -> Result<Store> {
        if !config.device_code.is_empty() {
            check_device_code(&config.device_code)?;
        }
        #[cfg(feature = "failpoints")]
        let config_stop = config.stop_migration_after;
        let db = at_rest::open_engine(&config)?;
        let shared = db.is_shared();
        // The first open of an empty shared database: one process sets the
        // metadata up, the others wait for its turn to end.
        if db.get(&unfinished_restore_key())?.is_some() {
            return Err(Error::Storage(format!(
                "a restore into {} did not finish: make the database empty (or a fresh one) \
                 and restore again",
                db.describe()
            )));
        }
        db.begin_turn()?;
        let mut setup = Batch::default();
        let format = match db.get(&key(P_META, META_FORMAT))? {
            None => {
                setup.insert(key(P_META, META_FORMAT), STORE_FORMAT.to_be_bytes());
                STORE_FORMAT
            }
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Metadata("bad store format".into()))?,
        };
        if format > STORE_FORMAT {
            return Err(Error::Metadata(format!(
                "the store was written by a newer version of gridsync (store format {format}; \
                 this build reads formats 1 to {STORE_FORMAT})"
            )));
        }
        // The actor is the store's (several servers on one database are
        // one replica to the devices: one actor, one log).
        let actor = match db.get(&key(P_META, META_ACTOR))? {
            Some(bytes) => ActorId::from(bytes.as_slice()),
            None => {
                let actor = ActorId::random();
                setup.insert(key(P_META, META_ACTOR), actor.to_bytes());
                actor
            }
        };
        let log_id = match db.get(&key(P_META, META_LOG_ID))? {
            Some(bytes) => <[u8; 16]>::try_from(bytes.as_slice())
                .map_err(|_| Error::Metadata("bad log id".into()))?,
            None => {
                // Stores made before the log had an identity get one here.
                let id = random_log_id()?;
                setup.insert(key(P_META, META_LOG_ID), id);
                id
            }
        };
        if !setup.is_empty() {
            db.apply(setup)?;
        }
        db.flush(FlushMode::Sync)?;
        if !config.temporary && !shared {
            make_private(&config.path)?;
        }
        // An encrypted store's files are sealed under its key too.
        let sealer = config
            .key
            .as_ref()
            .map(crate::seal::Sealer::new)
            .transpose()?
            .map(std::sync::Arc::new);
        let files = match (&config.files_dir, config.temporary) {
            (Some(dir), _) => crate::files::Files::open_sealed(dir, false, sealer)?,
            (None, false) => {
                crate::files::Files::open_sealed(&config.path.join("files"), false, sealer)?
            }
            (None, true) => {
                let dir = std::env::temp_dir()
                    .join(format!("gridsync-files-{}", hex::encode(random_log_id()?)));
                crate::files::Files::open_sealed(&dir, true, sealer)?
            }
        };
        let next_seq = last_log_seq(db.as_ref())? + 1;
        // Enrollment's code wins over what the app passed.
        let device_code = match db.get(&key(P_META, META_DEVICE_CODE))? {
            Some(stored) => {
                String::from_utf8(stored).map_err(|_| Error::Metadata("bad device code".into()))?
            }
            None => config.device_code,
        };
        let events = outbox::stored_counter(db.as_ref())?;
        let capacity = NonZeroUsize::new(config.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let store = Store {
            db,
            path: config.path,
            actor_hex: actor.to_hex_string(),
            actor,
            device_code: RwLock::new(device_code),
            durability: if config.temporary {
                Durability::None
            } else if shared && config.durability == Durability::None {
                // A shared engine's writes become visible to the other
                // servers only when committed.
                Durability::Flush
            } else {
                config.durability
            },
            writer: Mutex::new(Writer {
                cache: lru::LruCache::new(capacity),
                next_seq,
            }),
            index: RwLock::new(Index::default()),
            flush_gate: FlushGate::default(),
            // What is on disk at open is durable.
            durable_seq: std::sync::atomic::AtomicU64::new(next_seq - 1),
            log_id: Mutex::new(log_id),
            tag_own: config.tag_own_changes,
            search: config.search,
            search_cache_bytes: config.search_cache_bytes,
            live: std::sync::Arc::default(),
            outbox: config.outbox,
            outbox_applied: std::sync::atomic::AtomicU64::new(events),
            outbox_durable: std::sync::atomic::AtomicU64::new(events),
            deadlines: config.deadlines,
            files,
            erased: Default::default(),
            clock: config.clock,
            #[cfg(feature = "failpoints")]
            crash: Default::default(),
            #[cfg(feature = "failpoints")]
            after_durable: Mutex::new(None),
        };
        if format < STORE_FORMAT {
            store.migrate(
                format,
                #[cfg(feature = "failpoints")]
                config_stop,
            )?;
        }
        store.load_index()?;
        store.load_texts(true)?;
        if store.tag_own {
            // The tag key exists from the first open on, so that every
            // backup holds the key its tags were made with.
            store.intake_key()?;
        }
        Ok(store)
    }

    /// Migrates the store from `format` to [`STORE_FORMAT`] in place. From
    /// a format before 4, every record is loaded once and its index entry
    /// derived again (the layout of its facts changed in format 4),
    /// keeping its change time and chunk accounting; its file references
    /// (`f`) are written (new in format 3, rewritten unchanged from it).
    /// From 4, only the number changes here (format 5's search part is
    /// derived by `load_texts`, which runs at every open).
    /// Everything, with the new format number, goes in one atomic batch,
    /// then is flushed. A process killed at any point leaves either the old
    /// store or the migrated one, and the old one migrates again on the
    /// next open. Records and the change log are untouched.
    pub(super) fn migrate(
        &self,
        format: u64,
        #[cfg(feature = "failpoints")] stop_after: Option<usize>,
    ) -> Result<()> {
        if !(1..STORE_FORMAT).contains(&format) {
            return Err(Error::Metadata(format!(
                "no migration from store format {format}"
            )));
        }
        let mut batch = Batch::default();
        #[cfg(feature = "failpoints")]
        let mut derived = 0usize;
        // From format 4 on, index entries keep their layout (format 5's
        // search part is derived at open by `load_texts`).
        let entries = (format < 4)
            .then(|| backend::scan(self.db.as_ref(), &[P_INDEX]))
            .into_iter()
            .flatten();
        for item in entries {
            let (k, v) = item?;
            let Some(id) = RecordId::from_slice(&k[1..]) else {
                continue;
            };
            let (storage, updated_at) = if format == 1 {
                let old =
                    bincode::decode_from_slice::<format1::StoredIndex, _>(&v, bincode_config())
                        .ok()
                        .map(|(old, _)| old)
                        .filter(|old| old.meta_id == *id.as_bytes());
                old.map_or((Storage::default(), self.now_ms()), |o| {
                    (o.storage, o.updated_at)
                })
            } else {
                let old =
                    bincode::decode_from_slice::<format3::StoredIndex, _>(&v, bincode_config())
                        .ok()
                        .map(|(old, _)| old)
                        .filter(|old| old.meta_id == *id.as_bytes());
                old.map_or((Storage::default(), self.now_ms()), |o| {
                    (o.storage, o.updated_at)
                })
            };
            match self.load_with(id, storage) {
                Ok(loaded) => {
                    let meta = derive_meta(id, &loaded.doc, updated_at)?;
                    batch.insert(k, encode_index(&meta, loaded.storage)?);
                    for hash in crate::model::file_hashes(&loaded.doc) {
                        batch.insert(file_ref_key(&hash, id), []);
                    }
                }
                // Left for `load_index`, which lists it as corrupt.
                Err(_) => batch.insert(k, Vec::<u8>::new()),
            }
            #[cfg(feature = "failpoints")]
            {
                derived += 1;
                if stop_after.is_some_and(|n| derived >= n) {
                    return Err(Error::Metadata(
                        "the migration was stopped by a failpoint".into(),
                    ));
                }
            }
        }
        batch.insert(key(P_META, META_FORMAT), STORE_FORMAT.to_be_bytes());
        self.db.begin_turn()?;
        self.db.apply(batch)?;
        self.db.flush(FlushMode::Sync)?;
        Ok(())
    }

    /// Reads every index entry into memory; entries that cannot be decoded
    /// are rebuilt from their document, and records whose document is also
    /// unreadable are listed by [`Store::corrupt_records`].
    pub(super) fn load_index(&self) -> Result<()> {
        let mut index = Index::default();
        let mut rebuild = Vec::new();
        for item in backend::scan(self.db.as_ref(), &[P_INDEX]) {
            let (k, v) = item?;
            let Some(id) = RecordId::from_slice(&k[1..]) else {
                continue;
            };
            match bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config()) {
                Ok((stored, _)) if stored.meta.id == *id.as_bytes() => index.insert(stored.meta),
                _ => rebuild.push(id),
            }
        }
        index.shrink_to_fit();
        *self.index_mut() = index;
        for id in rebuild {
            match self.load_from_disk(id) {
                Ok(loaded) => {
                    let meta = derive_meta(id, &loaded.doc, self.now_ms())?;
                    let entry = encode_index(&meta, loaded.storage)?;
                    let mut batch = Batch::default();
                    batch.insert(key(P_INDEX, id.as_bytes()), entry);
                    self.db.begin_turn()?;
                    self.db.apply(batch)?;
                    self.db.flush(FlushMode::Sync)?;
                    self.index_mut().insert(meta);
                }
                Err(_) => {
                    self.index_mut().corrupt.insert(id);
                }
            }
        }
        Ok(())
    }

    /// This store's Automerge actor.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The device code used for case numbers (empty: not enrolled yet).
    pub fn device_code(&self) -> String {
        self.device_code
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The code case numbers start with; refused while the store has
    /// none (an app's store before enrollment).
    pub(super) fn numbering_code(&self) -> Result<String> {
        let code = self.device_code();
        if code.is_empty() {
            return Err(Error::NotEnrolled);
        }
        Ok(code)
    }

    /// Whether enrollment gave this store its code.
    pub fn is_enrolled(&self) -> Result<bool> {
        Ok(self.db.get(&key(P_META, META_DEVICE_CODE))?.is_some())
    }

    /// Takes the code enrollment assigned, durably and once: from now on
    /// new case and meeting numbers carry it, whatever code the app opens
    /// the store with. A store enrolled before is refused
    /// ([`Error::AlreadyEnrolled`]).
    pub fn adopt_device_code(&self, code: &str) -> Result<()> {
        check_device_code(code)?;
        if self.is_erased() {
            return Err(Error::Erased);
        }
        let mut code_lock = self
            .device_code
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.db.update(
            &key(P_META, META_DEVICE_CODE),
            FlushMode::Sync,
            &mut |old| Some(old.map_or_else(|| code.as_bytes().to_vec(), <[u8]>::to_vec)),
        )?;
        if old.is_some() {
            return Err(Error::AlreadyEnrolled);
        }
        *code_lock = code.to_owned();
        Ok(())
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // A panic while a lock is held cannot leave these structures half
    // updated: every automerge call that could panic runs under
    // `catch_unwind` before any of them is touched, the document cache is
    // only a cache, and counters advance only after a successful batch. So a
    // poisoned lock is recovered instead of bricking the store.
}

/// The sequence of the last change-log entry (0 if none).
pub(super) fn last_log_seq(db: &dyn Backend) -> Result<u64> {
    match backend::last(db, &[P_LOG])? {
        Some((k, _)) => log_seq(&k),
        None => Ok(0),
    }
}

/// The sequence a change-log key names.
pub(super) fn log_seq(k: &[u8]) -> Result<u64> {
    let seq: [u8; 8] = k
        .get(1..)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Metadata("bad change-log key".into()))?;
    Ok(u64::from_be_bytes(seq))
}

/// A device code: 1 to 32 ASCII letters, digits, `-` or `_`.
fn check_device_code(code: &str) -> Result<()> {
    let ok = !code.is_empty()
        && code.len() <= 32
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            field: "device_code",
            reason: "1 to 32 ASCII letters, digits, '-' or '_'".into(),
        })
    }
}
