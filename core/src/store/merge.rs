//! Merging what other replicas send: changes (audited for a device, with the server's own handed back), snapshots, whole records, rebases.

use super::*;

impl Store {
    /// The record as stored, without loading it: its snapshot followed by
    /// its change chunks (a valid input to `Automerge::load`), and its
    /// index entry. This is what a server sends a new device.
    pub fn export_record(&self, id: RecordId) -> Result<(Vec<u8>, RecordMeta)> {
        // Under the write lock, so snapshot and chunks are one state.
        let _w = self.lock();
        let meta = self.index_read().meta(id).ok_or(Error::NotFound(id))?;
        let (snapshot, chunks) = self.read_stored(id)?;
        let mut bytes = snapshot;
        for chunk in chunks {
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, meta))
    }

    /// [`Store::export_record`] for several records, read at once (one
    /// statement on a shared engine): what a first sync pages through.
    pub fn export_records(&self, ids: &[RecordId]) -> Result<Vec<(Vec<u8>, RecordMeta)>> {
        let _w = self.lock();
        let metas = {
            let index = self.index_read();
            ids.iter()
                .map(|id| index.meta(*id).ok_or(Error::NotFound(*id)))
                .collect::<Result<Vec<_>>>()?
        };
        let stored = self.read_stored_many(ids)?;
        Ok(stored
            .into_iter()
            .zip(metas)
            .map(|((mut bytes, chunks), meta)| {
                for chunk in chunks {
                    bytes.extend_from_slice(&chunk);
                }
                (bytes, meta)
            })
            .collect())
    }

    /// Stores a record received whole from a trusted server when this store
    /// does not have it yet; otherwise merges it (so local unsynced changes
    /// survive). Its index entry is the one given when the server derives
    /// entries as this build does ([`Import::Derived`]: nothing is loaded),
    /// else derived here from the record. Not yet durable; see
    /// [`Store::apply_changes_unflushed`].
    pub fn import_record_unflushed(
        &self,
        id: RecordId,
        bytes: &[u8],
        index: Import<'_>,
    ) -> Result<Merged> {
        let (meta, text) = match index {
            Import::Derived(meta) => {
                if bytes.len() > MAX_SNAPSHOT_BYTES {
                    return Err(Error::MalformedChanges {
                        id,
                        reason: format!(
                            "a record of {} bytes exceeds {MAX_SNAPSHOT_BYTES}",
                            bytes.len()
                        ),
                    });
                }
                if meta.id != *id.as_bytes() || meta.record_kind().is_none() {
                    return Err(Error::MalformedChanges {
                        id,
                        reason: "the record's index entry does not match it".into(),
                    });
                }
                // Only a store that keeps search texts loads the record.
                let text = if self.search {
                    self.derive_text(id, &load_snapshot(id, bytes)?)
                } else {
                    None
                };
                (*meta, text)
            }
            Import::Derive { kind, updated_at } => {
                let doc = load_snapshot(id, bytes)?;
                let meta = derive_meta(id, &doc, updated_at)?;
                let named = doc::fixed_str(&doc, "id").and_then(|s| s.parse::<RecordId>().ok());
                if meta.kind != kind || named != Some(id) {
                    return Err(Error::MalformedChanges {
                        id,
                        reason: "the record's index entry does not match it".into(),
                    });
                }
                let text = self.derive_text(id, &doc);
                (meta, text)
            }
        };
        let mut w = self.lock_writes()?;
        if self.index_read().contains(id) || self.index_read().corrupt.contains(&id) {
            drop(w);
            return self.apply_snapshot_unflushed(id, bytes);
        }
        let seq = w.next_seq;
        let storage = Storage {
            snapshot_len: bytes.len() as u64,
            ..Storage::default()
        };
        let scope = StoredScope {
            current: meta.scope(),
            former: Vec::new(),
        };
        let entry = StoredLogEntry {
            id: *id.as_bytes(),
            hashes: Vec::new(),
            origin: Origin::Remote,
            from: None,
            moved_from: None,
            changes: Vec::new(),
        };
        let encode_err = |e: bincode::error::EncodeError| Error::Metadata(e.to_string());
        let mut batch = Batch::default();
        batch.insert(key(P_SNAPSHOT, id.as_bytes()), bytes);
        batch.insert(key(P_INDEX, id.as_bytes()), encode_index(&meta, storage)?);
        let text = text
            .map(|t| Self::put_text(&mut batch, id, t))
            .transpose()?;
        batch.insert(
            key(P_SCOPE, id.as_bytes()),
            bincode::encode_to_vec(&scope, bincode_config()).map_err(encode_err)?,
        );
        batch.insert(
            key(P_LOG, &seq.to_be_bytes()),
            bincode::encode_to_vec(&entry, bincode_config()).map_err(encode_err)?,
        );
        self.write_point()?;
        self.db.apply(batch)?;
        w.next_seq += 1;
        let mut index = self.index_mut();
        index.insert(meta);
        if let Some(text) = text {
            Self::text_written(&mut index, id, text);
        }
        drop(index);
        self.live.touch(id);
        Ok(Merged {
            id,
            new_changes: 0,
            seq: Some(seq),
            created: true,
        })
    }

    /// Merges foreign change bytes into a record, creating it if unknown,
    /// and makes the result durable. Idempotent: changes already present are
    /// ignored. The bytes are checked (see [`crate::foreign`]) before
    /// Automerge sees them; on any error, or a panic inside Automerge, the
    /// record is left as it was.
    pub fn apply_changes(
        &self,
        id: RecordId,
        bytes: &[u8],
        limits: &ForeignLimits,
    ) -> Result<Merged> {
        let incoming = Incoming {
            limits,
            peer: None,
            known_through: 0,
        };
        let merged = self.apply_changes_unflushed(id, bytes, &incoming)?;
        self.make_durable()?;
        Ok(merged)
    }

    /// Like [`Store::apply_changes`], with scope and origin rules, but
    /// **not yet durable**: call [`Store::make_durable`] before telling
    /// anyone the changes are saved. Lets a sync apply many records and pay
    /// for one flush.
    pub fn apply_changes_unflushed(
        &self,
        id: RecordId,
        bytes: &[u8],
        incoming: &Incoming<'_>,
    ) -> Result<Merged> {
        // A device may hand back this server's own changes (after a
        // restore, see `tag`): they are parsed with every other actor
        // refused, and taken only with a valid tag.
        let own_actor = incoming.limits.actor.as_ref();
        let handed_back = self.tag_own && own_actor.is_some();
        let changes = if handed_back {
            let any = ForeignLimits {
                actor: None,
                ..incoming.limits.clone()
            };
            foreign::parse_changes(id, bytes, &any)?
        } else {
            foreign::parse_changes(id, bytes, incoming.limits)?
        };
        let (mine, mut theirs): (Vec<_>, Vec<_>) = changes
            .into_iter()
            .partition(|c| !handed_back || Some(c.actor_id()) == own_actor);
        if !theirs.is_empty() {
            if theirs
                .iter()
                .any(|c| c.actor_id() != &self.actor && !crate::tag::is_tagged(c))
            {
                return Err(Error::MalformedChanges {
                    id,
                    reason: "a change is authored by another device".into(),
                });
            }
            // Another device's change that looks tagged is not the server's:
            // left out (a device cannot tell, and must not be refused for
            // handing it back).
            theirs.retain(|c| c.actor_id() == &self.actor);
            let key = self.intake_key()?;
            if !theirs.iter().all(|c| crate::tag::verify(&key, c)) {
                return Err(Error::Unauthentic {
                    id,
                    reason: "a change in the server's name that the server did not make".into(),
                });
            }
        }
        let peer = incoming.peer;
        let known_through = incoming.known_through;
        let cap = Some(incoming.limits.max_document_bytes);
        let from = incoming.peer.map(|p| p.actor);
        let apply = |changes: Vec<automerge::Change>| {
            move |doc: &mut Automerge| -> Result<()> {
                catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes)))
                    .map_err(|_| Error::MergePanicked(id))?
                    .map_err(|e| merge_error(id, e))
            }
        };
        let time = |changes: &[automerge::Change]| {
            changes.iter().map(|c| c.timestamp()).max().unwrap_or(0)
        };
        // The device's changes are audited: the scope locked, and what they
        // touched compared before and after.
        let device = |changes: Vec<automerge::Change>| {
            let at = time(&changes);
            let touched = audit::touched_ids(&changes);
            let scope = match peer {
                Some(peer) => ScopeRule::Locked(peer, known_through, &touched),
                None => ScopeRule::Follow,
            };
            self.merge(id, at, from, scope, cap, apply(changes))
        };
        if theirs.is_empty() {
            return device(mine);
        }
        // The server's own changes are taken as its own (no audit of the
        // device's rights: they are the server's words; a move among them
        // is logged as a move), the device's as always. They may depend on
        // each other in turn (a device's note on an office note on a
        // device's note): they are merged in causal order, alternately,
        // each group once every change it depends on is in.
        let mut result = Merged {
            id,
            new_changes: 0,
            seq: None,
            created: false,
        };
        let (mut theirs, mut mine) = (theirs, mine);
        while !theirs.is_empty() || !mine.is_empty() {
            let mut progressed = false;
            for handed in [true, false] {
                let left = if handed { &mut theirs } else { &mut mine };
                let ready = self.take_ready(id, left)?;
                if ready.is_empty() {
                    continue;
                }
                progressed = true;
                let merged = if handed {
                    let at = time(&ready);
                    let current = self.scope_entry(id)?.map(|t| t.current);
                    let rule = match &current {
                        Some(old) => ScopeRule::Move(old),
                        None => ScopeRule::Follow,
                    };
                    self.merge(id, at, from, rule, cap, apply(ready))?
                } else {
                    device(ready)?
                };
                result.new_changes += merged.new_changes;
                result.seq = merged.seq.or(result.seq);
                result.created |= merged.created;
            }
            if !progressed {
                return Err(Error::MissingDependencies {
                    id,
                    missing: theirs.len() + mine.len(),
                });
            }
        }
        Ok(result)
    }

    /// Takes out of `left` the changes whose dependencies the record holds
    /// or that depend only on such changes (a causally closed group).
    pub(super) fn take_ready(
        &self,
        id: RecordId,
        left: &mut Vec<automerge::Change>,
    ) -> Result<Vec<automerge::Change>> {
        let held: BTreeSet<ChangeHash> =
            left.iter().flat_map(|c| c.deps().iter().copied()).collect();
        let held: BTreeSet<ChangeHash> = match self.index_read().contains(id) {
            true => self.with_doc(id, |d| {
                held.into_iter()
                    .filter(|h| d.get_change_by_hash(h).is_some())
                    .collect()
            })?,
            false => BTreeSet::new(),
        };
        let mut ready_hashes = held;
        let mut ready = Vec::new();
        loop {
            let before = ready.len();
            let mut rest = Vec::new();
            for c in left.drain(..) {
                if c.deps().iter().all(|d| ready_hashes.contains(d)) {
                    ready_hashes.insert(c.hash());
                    ready.push(c);
                } else {
                    rest.push(c);
                }
            }
            *left = rest;
            if ready.len() == before {
                return Ok(ready);
            }
        }
    }

    /// Merges a compacted snapshot (from a trusted server) into a record,
    /// creating it if unknown, and makes it durable. Local changes the
    /// snapshot lacks survive.
    pub fn apply_snapshot(&self, id: RecordId, bytes: &[u8]) -> Result<Merged> {
        let merged = self.apply_snapshot_unflushed(id, bytes)?;
        self.make_durable()?;
        Ok(merged)
    }

    /// Like [`Store::apply_snapshot`] but not yet durable; see
    /// [`Store::apply_changes_unflushed`].
    pub fn apply_snapshot_unflushed(&self, id: RecordId, bytes: &[u8]) -> Result<Merged> {
        let mut other = load_snapshot(id, bytes)?;
        let max_time = catch_unwind(AssertUnwindSafe(|| {
            other
                .get_changes(&[])
                .iter()
                .map(|c| c.timestamp())
                .max()
                .unwrap_or(0)
        }))
        .map_err(|_| Error::MergePanicked(id))?;
        self.merge(id, max_time, None, ScopeRule::Follow, None, |doc| {
            catch_unwind(AssertUnwindSafe(|| doc.merge(&mut other)))
                .map_err(|_| Error::MergePanicked(id))?
                .map(|_| ())
                .map_err(|e| merge_error(id, e))
        })
    }

    /// Replaces a record that cannot be merged with the server's copy of it
    /// (`bytes`, a snapshot from a trusted server) by that copy plus this
    /// device's own changes the server does not hold, re-authored on top
    /// (see `rebase`). For a phone restored from an old backup, whose new
    /// changes reuse sequence numbers the server already holds. The
    /// re-authored changes are pending, to be pushed; the server is known to
    /// hold its copy. Returns how many local changes were replayed. Not yet
    /// durable; see [`Store::apply_changes_unflushed`].
    pub fn rebase_onto_unflushed(&self, id: RecordId, bytes: &[u8]) -> Result<usize> {
        let server = load_snapshot(id, bytes)?;
        let mut w = self.lock_writes()?;
        self.kind_of(id)?;
        let loaded = self.checkout(&mut w, id)?;
        let rebased = catch_unwind(AssertUnwindSafe(|| {
            crate::rebase::rebase(id, &loaded.doc, server, &self.actor, &self.actor_hex)
        }));
        let storage = loaded.storage;
        w.cache.put(id, loaded);
        let rebased = rebased.map_err(|_| Error::MergePanicked(id))??;
        let ours = rebased.doc.get_changes(&rebased.server_heads).len();
        let mut batch = Batch::default();
        let heads: Vec<[u8; 32]> = rebased.server_heads.iter().map(|h| h.0).collect();
        batch.insert(
            key(P_SERVER_HEADS, id.as_bytes()),
            bincode::encode_to_vec(&heads, bincode_config())
                .map_err(|e| Error::Metadata(e.to_string()))?,
        );
        if ours == 0 {
            batch.remove(key(P_PENDING, id.as_bytes()));
        } else {
            batch.insert(key(P_PENDING, id.as_bytes()), w.next_seq.to_be_bytes());
        }
        let replaced = Loaded {
            doc: rebased.doc,
            // A zero snapshot length makes `prepare` write a whole new
            // snapshot and remove every old chunk.
            storage: Storage {
                snapshot_len: 0,
                ..storage
            },
        };
        // Everything is written again (`heads_before` empty): the stored
        // copy is replaced, not extended.
        self.persist(
            &mut w,
            id,
            replaced,
            Commit {
                heads_before: &[],
                origin: Origin::Rebased,
                updated_at: self.now_ms(),
                from: None,
                scope: ScopeRule::Follow,
                max_document_bytes: None,
            },
            batch,
        )?;
        Ok(rebased.local_changes)
    }

    pub(super) fn merge(
        &self,
        id: RecordId,
        max_time: i64,
        from: Option<&ActorId>,
        scope: ScopeRule<'_>,
        max_document_bytes: Option<usize>,
        f: impl FnOnce(&mut Automerge) -> Result<()>,
    ) -> Result<Merged> {
        let mut w = self.lock_writes()?;
        let existing = match self.index_read().kind(id) {
            Some(kind) => Some(kind.ok_or_else(|| Error::Corrupt {
                id,
                reason: "unknown record kind".into(),
            })?),
            None => None,
        };
        let mut loaded = match existing {
            Some(_) => self.checkout(&mut w, id)?,
            None => Loaded {
                doc: Automerge::new().with_actor(self.actor.clone()),
                storage: Storage::default(),
            },
        };
        let heads = loaded.doc.get_heads();
        // Set when the sender may no longer write to a record it knew (it
        // learned of a move away): a re-sent push of changes the record
        // already holds is still acknowledged (its first answer may have
        // been lost), anything new is refused.
        let mut only_known = false;
        if let ScopeRule::Locked(peer, known_through, _) = scope {
            // A push to a record the sender may not write is refused even
            // when it brings nothing new, and so is a push to an unknown
            // record that creates nothing: the answer must not tell which
            // records exist elsewhere.
            let entry = self.scope_entry(id)?;
            let admitted = match &entry {
                Some(t) => t.admits(peer.may_access, known_through),
                None => existing.is_none(),
            };
            if !admitted {
                if entry.is_some_and(|t| t.ever_admitted(peer.may_access)) {
                    only_known = true;
                } else {
                    w.cache.put(id, loaded);
                    return Err(Error::OutOfScope { id });
                }
            }
        }
        // The server reads, before the merge, the objects the sender's
        // changes touch, so the audit can tell what the sender changed.
        let before = match (scope, existing) {
            (ScopeRule::Locked(_, _, touched), Some(_)) => Some(
                catch_unwind(AssertUnwindSafe(|| {
                    audit::Ledger::read_objects(&loaded.doc, touched)
                }))
                .map_err(|_| Error::MergePanicked(id))?,
            ),
            _ => None,
        };
        // On any error below, `loaded` is dropped without going back into
        // the cache, so the record reloads from disk exactly as it was.
        let checked = catch_unwind(AssertUnwindSafe(|| {
            let new_changes = check_merged(id, existing, &mut loaded.doc, &heads, f)?;
            if let (ScopeRule::Locked(peer, _, touched), true) = (scope, new_changes > 0) {
                let kind = doc::record_type(&loaded.doc)
                    .as_deref()
                    .and_then(RecordKind::parse)
                    .ok_or_else(|| Error::MalformedChanges {
                        id,
                        reason: "not a gridsync record".into(),
                    })?;
                if existing.is_none() && !is_device_made(id) {
                    return Err(Error::Unauthentic {
                        id,
                        reason: "devices create records under ids they make (UUID v7)".into(),
                    });
                }
                // What the sender changed: the objects its changes touched,
                // as they are now (a new record: all of it).
                let after = match before {
                    Some(_) => audit::Ledger::read_objects(&loaded.doc, touched),
                    None => audit::Ledger::read(&loaded.doc),
                };
                audit::check(id, kind, before.as_ref(), &after, &loaded.doc, peer)?;
            }
            Ok(new_changes)
        }))
        .map_err(|_| Error::MergePanicked(id))?;
        let new_changes = checked?;
        if only_known && new_changes > 0 {
            // `loaded` (with the changes merged in memory) is dropped: the
            // record reloads from disk as it was.
            return Err(Error::OutOfScope { id });
        }
        if new_changes == 0 {
            if existing.is_none() && matches!(scope, ScopeRule::Locked(..)) {
                // An empty push to an unknown id: answered like a record
                // elsewhere, so the answer does not tell which ids exist.
                return Err(Error::OutOfScope { id });
            }
            if existing.is_some() {
                w.cache.put(id, loaded);
            }
            return Ok(Merged {
                id,
                new_changes: 0,
                seq: None,
                created: false,
            });
        }
        let written = self.persist(
            &mut w,
            id,
            loaded,
            Commit {
                heads_before: &heads,
                origin: Origin::Remote,
                updated_at: max_time,
                from,
                scope,
                max_document_bytes,
            },
            Batch::default(),
        )?;
        Ok(Merged {
            id,
            new_changes,
            seq: written.seq,
            created: existing.is_none(),
        })
    }
}
