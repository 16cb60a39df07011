//! Local writes: typed operations on records, creation, intake, the server's change tags, and the batch every write becomes.

use super::*;

/// What [`Store::prepare`] builds: the batch, the record's new index
/// entry, its search text when the store keeps them, and the last hotline
/// event sequence the batch uses, if it records events.
type Prepared = (Batch, RecordMeta, Option<super::search::Kept>, Option<u64>);

impl Store {
    /// Records a new issue and returns its id.
    pub fn create_issue(&self, author: &Author, new: NewIssue) -> Result<RecordId> {
        let id = RecordId::new();
        self.create_issue_with_id(id, author, new)?;
        Ok(id)
    }

    /// Records a new issue under an id the caller chose, for example one
    /// derived from a 12345 work-order number so that intake is
    /// idempotent. Refused with [`Error::Exists`] if the store holds it.
    pub fn create_issue_with_id(&self, id: RecordId, author: &Author, new: NewIssue) -> Result<()> {
        let code = self.numbering_code()?;
        self.create(
            id,
            RecordKind::Issue,
            author,
            META_CASE_COUNTER,
            |tx, ctx, n| {
                let case_no = format!("{code}-{n:06}");
                issue::create(tx, ctx, id, &case_no, &new)
            },
        )?;
        Ok(())
    }

    /// Applies an issue operation on behalf of `author` if the permission
    /// policy allows it ([`crate::policy::check_issue_op`]): the entry
    /// point for office actions and apps. Refused with
    /// [`Error::Forbidden`] otherwise; nothing is written.
    pub fn act_on_issue(&self, id: RecordId, author: &Author, op: IssueOp) -> Result<Written> {
        for action in policy::issue_op_actions(&op) {
            policy::check(author.role, action)?;
        }
        policy::check_reason(&op)?;
        self.update(id, Some(RecordKind::Issue), author, op.name(), |tx, ctx| {
            if matches!(
                op,
                IssueOp::Transition {
                    to: IssueStatus::Closed,
                    ..
                } | IssueOp::ResolveStatusConflict {
                    to: IssueStatus::Closed,
                    ..
                }
            ) {
                policy::check_issue_op(author.role, &issue::read(tx, id), &op)?;
            }
            issue::apply(tx, ctx, &op)
        })
    }

    /// Applies a meeting operation on behalf of `author` if the permission
    /// policy allows it.
    pub fn act_on_meeting(&self, id: RecordId, author: &Author, op: MeetingOp) -> Result<Written> {
        policy::check_meeting_op(author.role, &op)?;
        self.update_meeting(id, author, op)
    }

    /// Records a new issue on behalf of `author` if the policy allows it.
    pub fn report_issue(&self, author: &Author, new: NewIssue) -> Result<RecordId> {
        policy::check(author.role, Action::Report)?;
        if new.source == crate::model::Source::Hotline12345 {
            policy::check(author.role, Action::Intake)?;
        }
        self.create_issue(author, new)
    }

    /// Convenes a meeting from the office: the policy allows the role, the
    /// meeting's place lies in the user's scope (`taker.may_access`, which
    /// also knows which places exist), and so does every case it
    /// discusses (each must be an issue in this store).
    pub fn convene_in_scope(&self, taker: crate::Taker<'_>, new: NewMeeting) -> Result<RecordId> {
        policy::check(taker.author.role, Action::ConveneMeeting)?;
        let place = RecordScope::new(
            new.location.street.clone(),
            new.location.community.clone(),
            new.location.grid.clone(),
        );
        if !(taker.may_access)(&place) {
            return Err(Error::PlaceOutOfScope {
                place: format!("{}/{}/{}", place.street, place.community, place.grid),
            });
        }
        for id in &new.issue_ids {
            self.expect_kind(*id, RecordKind::Issue)?;
            let scope = self.scope_of(*id)?.or_else(|| self.index_read().scope(*id));
            if !scope.is_some_and(|s| (taker.may_access)(&s)) {
                return Err(Error::NotFound(*id));
            }
        }
        self.convene_meeting(taker.author, new)
    }

    /// Convenes a meeting on behalf of `author` if the policy allows it.
    pub fn convene_meeting(&self, author: &Author, new: NewMeeting) -> Result<RecordId> {
        policy::check(author.role, Action::ConveneMeeting)?;
        self.create_meeting(author, new)
    }

    /// Takes a 12345 work order in (see [`crate::intake`]): creates the
    /// case, sets the hotline's deadline, accepts and dispatches it, in one
    /// durable write; or returns the case a repeat of the same order made.
    pub fn intake(&self, order: &WorkOrder, taker: Taker<'_>) -> Result<Intake> {
        policy::check(taker.author.role, Action::Intake)?;
        let now = self.now_ms();
        order.validate(now)?;
        let id = intake::work_order_id(&self.intake_key()?, order.number());
        let place = order.place();
        if !(taker.may_access)(&place) {
            return Err(Error::OutOfScope { id });
        }
        let digest = order.digest();
        let repeat = |id: RecordId| -> Result<Intake> {
            let same = self.with_doc(id, |d| {
                doc::fixed_str(d, "intake_digest").as_deref() == Some(digest.as_str())
            })?;
            let visible = self.scope_of(id)?.is_some_and(|s| (taker.may_access)(&s));
            if same && visible {
                Ok(Intake::Existing(id))
            } else {
                Err(Error::WorkOrderMismatch {
                    number: order.number().to_owned(),
                })
            }
        };
        if self.index_read().contains(id) {
            return repeat(id);
        }
        let new = order.new_issue();
        let code = self.numbering_code()?;
        let created = self.create(
            id,
            RecordKind::Issue,
            taker.author,
            META_CASE_COUNTER,
            |tx, ctx, n| {
                let case_no = format!("{code}-{n:06}");
                issue::create(tx, ctx, id, &case_no, &new)?;
                automerge::transaction::Transactable::put(
                    tx,
                    automerge::ROOT,
                    "intake_digest",
                    digest.as_str(),
                )
                .map_err(doc::am)?;
                if let Some(due) = order.deadline {
                    issue::apply(
                        tx,
                        ctx,
                        &IssueOp::ChangeDeadline {
                            due,
                            reason: "12345 deadline".into(),
                        },
                    )?;
                }
                for to in [IssueStatus::Accepted, IssueStatus::Dispatched] {
                    issue::apply(
                        tx,
                        ctx,
                        &IssueOp::Transition {
                            to,
                            reason: "12345 work order".into(),
                        },
                    )?;
                }
                Ok(())
            },
        );
        match created {
            Ok(_) => Ok(Intake::Created(id)),
            // Two intakes of one number at once: the other one won.
            Err(Error::Exists(_)) => repeat(id),
            Err(e) => Err(e),
        }
    }

    /// The server-held key work orders' ids are derived with, made at
    /// first use. Local to this store; never synced.
    pub(super) fn intake_key(&self) -> Result<[u8; 32]> {
        let k = key(P_META, META_INTAKE_KEY);
        let decode = |v: &[u8]| -> Result<[u8; 32]> {
            v.try_into()
                .map_err(|_| Error::Metadata("bad intake key".into()))
        };
        if let Some(v) = self.db.get(&k)? {
            return decode(&v);
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| Error::Io(std::io::Error::other(format!("random source: {e}"))))?;
        self.write_point()?;
        // Two first intakes at once (or two servers): one key wins, both
        // use it.
        let old = self.db.update(&k, FlushMode::Sync, &mut |old| {
            Some(old.map_or_else(|| fresh.to_vec(), <[u8]>::to_vec))
        })?;
        match old {
            Some(current) => decode(&current),
            None => Ok(fresh),
        }
    }

    /// Convenes a new meeting and returns its id.
    pub fn create_meeting(&self, author: &Author, new: NewMeeting) -> Result<RecordId> {
        let id = RecordId::new();
        let code = self.numbering_code()?;
        self.create(
            id,
            RecordKind::Meeting,
            author,
            META_MEETING_COUNTER,
            |tx, ctx, n| {
                let meeting_no = format!("{code}-M{n:05}");
                meeting::create(tx, ctx, id, &meeting_no, &new)
            },
        )?;
        Ok(id)
    }

    /// Applies a typed operation to an issue.
    pub fn update_issue(&self, id: RecordId, author: &Author, op: IssueOp) -> Result<Written> {
        self.update(id, Some(RecordKind::Issue), author, op.name(), |tx, ctx| {
            issue::apply(tx, ctx, &op)
        })
    }

    /// Applies a typed operation to a meeting.
    pub fn update_meeting(&self, id: RecordId, author: &Author, op: MeetingOp) -> Result<Written> {
        self.update(
            id,
            Some(RecordKind::Meeting),
            author,
            op.name(),
            |tx, ctx| meeting::apply(tx, ctx, &op),
        )
    }

    pub(super) fn create<F>(
        &self,
        id: RecordId,
        kind: RecordKind,
        author: &Author,
        counter: &[u8],
        f: F,
    ) -> Result<Written>
    where
        F: FnOnce(&mut Transaction<'_>, Ctx<'_>, u64) -> Result<()>,
    {
        let tag_key = self.tag_key()?;
        let mut w = self.lock_writes()?;
        if self.index_read().contains(id) {
            return Err(Error::Exists(id));
        }
        let n = match self.db.get(&key(P_META, counter))? {
            Some(v) => u64::from_be_bytes(
                <[u8; 8]>::try_from(v.as_slice())
                    .map_err(|_| Error::Metadata("bad counter".into()))?,
            ),
            None => 0,
        } + 1;
        let mut doc = Automerge::new().with_actor(self.actor.clone());
        let now = self.now_ms();
        let ctx = Ctx {
            author,
            dev: &self.actor_hex,
            now,
            deadlines: &self.deadlines,
        };
        doc.transact_with(
            |_| commit_options(&format!("create_{}", kind.as_str()), author, now),
            |tx| f(tx, ctx, n),
        )
        .map_err(|failure| failure.error)?;
        if let Some(key) = &tag_key {
            self.tag_local_change(&mut doc, &[], key)?;
        }
        let mut batch = Batch::default();
        batch.insert(key(P_META, counter), n.to_be_bytes());
        let loaded = Loaded {
            doc,
            storage: Storage::default(),
        };
        let written = self.persist(
            &mut w,
            id,
            loaded,
            Commit {
                heads_before: &[],
                origin: Origin::Local,
                updated_at: now,
                from: None,
                scope: ScopeRule::Follow,
                max_document_bytes: None,
            },
            batch,
        )?;
        drop(w);
        self.make_durable()?;
        Ok(written)
    }

    pub(super) fn update<F>(
        &self,
        id: RecordId,
        kind: Option<RecordKind>,
        author: &Author,
        op: &str,
        f: F,
    ) -> Result<Written>
    where
        F: FnOnce(&mut Transaction<'_>, Ctx<'_>) -> Result<()>,
    {
        self.update_with(id, kind, author, op, ScopeRule::Follow, f)
    }

    pub(super) fn update_with<F>(
        &self,
        id: RecordId,
        kind: Option<RecordKind>,
        author: &Author,
        op: &str,
        scope: ScopeRule<'_>,
        f: F,
    ) -> Result<Written>
    where
        F: FnOnce(&mut Transaction<'_>, Ctx<'_>) -> Result<()>,
    {
        if matches!(scope, ScopeRule::Follow) && self.is_leaving(id)? {
            // Moved out of this device's scope: what it wrote before is
            // being uploaded; nothing new is taken.
            return Err(Error::OutOfScope { id });
        }
        let tag_key = self.tag_key()?;
        let mut w = self.lock_writes()?;
        let actual = self.kind_of(id)?;
        if let Some(kind) = kind.filter(|k| *k != actual) {
            return Err(Error::WrongKind {
                id,
                expected: kind.as_str(),
                actual: actual.as_str(),
            });
        }
        let mut loaded = self.checkout(&mut w, id)?;
        let heads = loaded.doc.get_heads();
        let now = self.now_ms();
        let ctx = Ctx {
            author,
            dev: &self.actor_hex,
            now,
            deadlines: &self.deadlines,
        };
        let result = loaded
            .doc
            .transact_with(|_| commit_options(op, author, now), |tx| f(tx, ctx));
        if let Err(failure) = result {
            // The failed transaction was rolled back; the document is as it was.
            w.cache.put(id, loaded);
            return Err(failure.error);
        }
        if let Some(key) = &tag_key {
            // On error `loaded` is dropped: the record reloads from disk.
            self.tag_local_change(&mut loaded.doc, &heads, key)?;
        }
        let written = self.persist(
            &mut w,
            id,
            loaded,
            Commit {
                heads_before: &heads,
                origin: Origin::Local,
                updated_at: now,
                from: None,
                scope,
                max_document_bytes: None,
            },
            Batch::default(),
        )?;
        drop(w);
        self.make_durable()?;
        Ok(written)
    }

    /// The key this store tags its own changes with, if it does.
    pub(super) fn tag_key(&self) -> Result<Option<[u8; 32]>> {
        match self.tag_own {
            true => self.intake_key().map(Some),
            false => Ok(None),
        }
    }

    /// Replaces the one change a local transaction made after `heads` by
    /// the same change tagged (see `tag`): the document is rebuilt at
    /// `heads` and the tagged change applied to it.
    pub(super) fn tag_local_change(
        &self,
        doc: &mut Automerge,
        heads: &[ChangeHash],
        key: &[u8; 32],
    ) -> Result<()> {
        let changes = doc.get_changes(heads);
        let change = match changes.as_slice() {
            // Nothing written (a move to where the record already is).
            [] => return Ok(()),
            [change] => change,
            more => {
                return Err(Error::Document(format!(
                    "a transaction made {} changes",
                    more.len()
                )))
            }
        };
        let tagged = crate::tag::tag(key, change);
        let mut fresh = if heads.is_empty() {
            Automerge::new()
        } else {
            doc.fork_at(heads).map_err(doc::am)?
        };
        fresh.apply_changes([tagged]).map_err(doc::am)?;
        *doc = fresh.with_actor(self.actor.clone());
        Ok(())
    }

    /// Writes what changed in `loaded` since `heads_before` in one atomic
    /// batch (with `extra` entries), updates the in-memory index and puts
    /// the document back into the cache. Does not flush.
    pub(super) fn persist(
        &self,
        w: &mut Writer,
        id: RecordId,
        mut loaded: Loaded,
        commit: Commit<'_>,
        batch: Batch,
    ) -> Result<Written> {
        let seq = w.next_seq;
        // Everything that calls into Automerge runs under `catch_unwind`;
        // on error or panic `loaded` is dropped, and the record reloads from
        // disk as it was.
        let prepared = catch_unwind(AssertUnwindSafe(|| {
            self.prepare(id, &mut loaded, commit, seq, batch)
        }))
        .map_err(|_| Error::MergePanicked(id))??;
        let Some((batch, meta, text, events)) = prepared else {
            w.cache.put(id, loaded);
            return Ok(Written { id, seq: None });
        };
        self.write_point()?;
        self.db.apply(batch)?;
        self.events_applied(events);
        w.next_seq += 1;
        let mut index = self.index_mut();
        index.insert(meta);
        if let Some(text) = text {
            Self::text_written(&mut index, id, text);
        }
        drop(index);
        // After the index: what live queries read is the new entry.
        self.live.touch(id);
        w.cache.put(id, loaded);
        Ok(Written { id, seq: Some(seq) })
    }

    /// Builds the batch that stores what changed in `loaded` since
    /// `commit.heads_before`, or `None` if nothing did.
    pub(super) fn prepare(
        &self,
        id: RecordId,
        loaded: &mut Loaded,
        commit: Commit<'_>,
        seq: u64,
        mut batch: Batch,
    ) -> Result<Option<Prepared>> {
        let Commit {
            heads_before,
            origin,
            updated_at,
            from,
            scope,
            max_document_bytes,
        } = commit;
        let new_changes = loaded.doc.get_changes(heads_before);
        if new_changes.is_empty() {
            return Ok(None);
        }
        let previous = self.index_read().get(id).map(|e| e.updated_at);
        let updated_at = previous.map_or(updated_at, |p| p.max(updated_at));
        let meta = derive_meta(id, &loaded.doc, updated_at)?;

        // The authoritative scope: set when the record is first stored,
        // changed only by an office move (or, on devices, by the server).
        let table = self.scope_entry(id)?;
        let new_scope = meta.scope();
        let moved_from = match scope {
            ScopeRule::Follow => None,
            ScopeRule::Locked(peer, known_through, _) => {
                match &table {
                    Some(t) if t.current != new_scope => return Err(Error::ScopeChange { id }),
                    Some(t) if !t.admits(peer.may_access, known_through) => {
                        return Err(Error::OutOfScope { id })
                    }
                    None if !(peer.may_access)(&new_scope) => return Err(Error::OutOfScope { id }),
                    _ => {}
                }
                None
            }
            ScopeRule::Move(old) => Some(old.clone()),
        };
        if table.as_ref().map(|t| &t.current) != Some(&new_scope) {
            let mut entry = table.unwrap_or_default();
            if let Some(old) = &moved_from {
                entry.former.retain(|f| f.scope != *old);
                entry.former.push(FormerScope {
                    scope: old.clone(),
                    moved_at: seq,
                });
            }
            entry.current = new_scope;
            let encoded = bincode::encode_to_vec(&entry, bincode_config())
                .map_err(|e| Error::Metadata(e.to_string()))?;
            batch.insert(key(P_SCOPE, id.as_bytes()), encoded);
        }

        let mut delta = Vec::new();
        for change in &new_changes {
            delta.extend_from_slice(change.raw_bytes());
        }
        // The log carries the change bytes too: serving the feed is then a
        // range read of the log, with no document loaded.
        let log_bytes = delta.clone();
        let storage = &mut loaded.storage;
        if let Some(limit) = max_document_bytes {
            if storage.snapshot_len + storage.chunks_len + delta.len() as u64 > limit as u64 {
                return Err(Error::DocumentTooLarge { id, limit });
            }
        }
        if storage.snapshot_len == 0
            || storage.chunks_len + delta.len() as u64 > storage.snapshot_len
        {
            // Compact: the new snapshot replaces every chunk, in the same batch.
            let snapshot = loaded.doc.save();
            for n in storage.first_chunk..storage.next_chunk {
                batch.remove(chunk_key(id, n));
            }
            storage.snapshot_len = snapshot.len() as u64;
            storage.chunks_len = 0;
            storage.first_chunk = storage.next_chunk;
            batch.insert(key(P_SNAPSHOT, id.as_bytes()), snapshot);
        } else {
            storage.chunks_len += delta.len() as u64;
            batch.insert(chunk_key(id, storage.next_chunk), delta);
            storage.next_chunk += 1;
        }
        batch.insert(key(P_INDEX, id.as_bytes()), encode_index(&meta, *storage)?);
        let text = self.keep_text(&mut batch, id, &loaded.doc)?;
        self.note_file_refs(id, &loaded.doc, origin, &mut batch)?;
        let entry = StoredLogEntry {
            id: *id.as_bytes(),
            hashes: new_changes.iter().map(|c| c.hash().0).collect(),
            origin,
            from: from.map(|a| a.to_bytes().to_vec()),
            moved_from,
            changes: log_bytes,
        };
        let entry = bincode::encode_to_vec(&entry, bincode_config())
            .map_err(|e| Error::Metadata(e.to_string()))?;
        batch.insert(key(P_LOG, &seq.to_be_bytes()), entry);
        if origin == Origin::Local {
            batch.insert(key(P_PENDING, id.as_bytes()), seq.to_be_bytes());
        }
        // What the hotline hears of this write goes in the same batch.
        let events = if self.outbox
            && origin != Origin::Rebased
            && meta.record_kind() == Some(RecordKind::Issue)
            && crate::hotline::is_hotline_source(&meta.facts.source)
        {
            let before = match heads_before {
                [] => None,
                heads => Some(loaded.doc.fork_at(heads).map_err(doc::am)?),
            };
            let events = crate::hotline::changes(before.as_ref(), &loaded.doc, id, self.now_ms());
            self.put_events(&mut batch, seq, id, &events)?
        } else {
            None
        };
        Ok(Some((batch, meta, text, events)))
    }
}
