//! Reads: record views, index queries and figures, and the change bytes sync needs.

use super::*;

impl Store {
    /// The typed view of an issue.
    pub fn issue(&self, id: RecordId) -> Result<IssueView> {
        self.expect_kind(id, RecordKind::Issue)?;
        self.with_doc(id, |d| issue::read(d, id))
    }

    /// The typed view of a meeting.
    pub fn meeting(&self, id: RecordId) -> Result<MeetingView> {
        self.expect_kind(id, RecordKind::Meeting)?;
        self.with_doc(id, |d| meeting::read(d, id))
    }

    pub(super) fn expect_kind(&self, id: RecordId, kind: RecordKind) -> Result<()> {
        let actual = self.kind_of(id)?;
        if actual != kind {
            return Err(Error::WrongKind {
                id,
                expected: kind.as_str(),
                actual: actual.as_str(),
            });
        }
        Ok(())
    }

    /// The index entry of a record.
    pub fn meta(&self, id: RecordId) -> Result<Option<RecordMeta>> {
        Ok(self.index_read().meta(id))
    }

    /// The action items of the meetings in places `place` accepts, as
    /// `role` may see them (see [`crate::board`]). Loads those meetings'
    /// documents (a district holds hundreds of meetings, not the
    /// hundred thousands of cases the index serves without loading).
    pub fn action_board(
        &self,
        q: &crate::board::BoardQuery,
        role: crate::Role,
        place: impl Fn(&RecordScope) -> bool,
    ) -> Result<crate::board::BoardPage> {
        q.check()?;
        let ids: Vec<RecordId> = {
            let index = self.index_read();
            let meeting = index.names().find(RecordKind::Meeting.as_str());
            index
                .entries()
                .filter(|e| !e.is_issue && Some(e.kind) == meeting)
                .filter(|e| place(index.names().scope(e.place)))
                .map(|e| e.id)
                .collect()
        };
        let mut meetings = Vec::with_capacity(ids.len());
        for id in ids {
            match self.meeting(id) {
                Ok(m) => meetings.push(m),
                // Listed by `corrupt_records`; the board shows the rest.
                Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        crate::board::board(meetings, role, q, self.now_ms())
    }

    /// Meetings that discuss an issue (the reverse of the meeting's link).
    pub fn meetings_for_issue(&self, issue: RecordId) -> Result<Vec<RecordId>> {
        Ok(self
            .index_read()
            .meetings_of
            .get(&issue)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default())
    }

    /// One page of records matching `q`.
    pub fn list(&self, q: &Query) -> Result<Page> {
        self.list_where(q, |_| true)
    }

    /// The query with its time set: the store's clock unless given.
    /// The query checked ([`Query::check`]; search terms need a store
    /// that keeps search texts), with its "now" set.
    pub(super) fn checked(&self, q: &Query) -> Result<Query> {
        q.check()?;
        if q.needs_texts() && !self.search {
            return Err(Error::InvalidInput {
                field: "q",
                reason: "this store keeps no search texts (StoreConfig::search)".into(),
            });
        }
        let mut q = q.clone();
        q.now.get_or_insert_with(|| self.now_ms());
        Ok(q)
    }

    /// The office figures over the records `within` covers, grouped (see
    /// [`crate::figures`]). Reads only the in-memory index, where they are
    /// kept per place and month as records change.
    pub fn figures(
        &self,
        by: crate::figures::GroupBy,
        within: &crate::figures::Within<'_>,
        now: i64,
    ) -> crate::figures::Figures {
        self.index_read().figures(by, within, now)
    }

    /// Computes and keeps the figures of every cell for the groupings an
    /// office opens first (by grid, the dashboard's; by community, the
    /// API's default), so that the first table after opening a large store
    /// does not wait for them. The server runs it in the background once
    /// it is open; nothing depends on it having run.
    pub fn warm_figures(&self) {
        let now = self.now_ms();
        let index = self.index_read();
        for by in [
            crate::figures::GroupBy::Grid,
            crate::figures::GroupBy::Community,
        ] {
            index.figures(by, &crate::figures::Within::ALL, now);
        }
    }

    /// The office figures of some index entries alone (repeats and
    /// discussed cases judged among them), as the store computes them.
    pub fn figures_of(
        records: &[RecordMeta],
        by: crate::figures::GroupBy,
        now: i64,
    ) -> crate::figures::Figures {
        let mut index = Index::default();
        for m in records {
            index.insert(m.clone());
        }
        index.figures(by, &crate::figures::Within::ALL, now)
    }

    /// Like [`Store::list`], over only the records in places `place`
    /// accepts (an office user's scope, say), before sorting and paging.
    pub fn list_where(&self, q: &Query, place: impl Fn(&RecordScope) -> bool) -> Result<Page> {
        let q = &self.checked(q)?;
        let index = self.index_read();
        query::run(
            q,
            index.names(),
            index.entries(),
            &self.bodies(&index),
            place,
        )
    }

    /// The record a case number, meeting number or 12345 work-order
    /// number names (as written, or typed in another case or width), if
    /// this store has it; work-order numbers need a store that keeps
    /// search texts. Reads only the in-memory index.
    pub fn find_by_number(&self, number: &str) -> Result<Option<RecordId>> {
        let wanted = crate::search::normalize(number);
        if wanted.is_empty() {
            return Ok(None);
        }
        let index = self.index_read();
        if let Some(e) = index
            .entries()
            .find(|e| e.number().eq_ignore_ascii_case(&wanted))
        {
            return Ok(Some(e.id));
        }
        drop(index);
        self.find_work_order(number)
    }

    /// The case a 12345 work-order number names (as written, or typed in
    /// another case or width), if this store has it; needs a store that
    /// keeps search texts. Reads only the in-memory index.
    pub fn find_work_order(&self, number: &str) -> Result<Option<RecordId>> {
        let wanted = crate::search::normalize(number);
        if wanted.is_empty() {
            return Ok(None);
        }
        Ok(self
            .index_read()
            .entries()
            .find(|e| e.search.as_ref().is_some_and(|h| h.work_order() == wanted))
            .map(|e| e.id))
    }

    /// Every case matching `q` (paging ignored) in places `place` accepts,
    /// in `q`'s order, one row at a time to `sink`, as `role` may see it
    /// (see [`crate::export`]; `names` names a place). Reads the
    /// in-memory index and the search texts, a few hundred rows at a time, so
    /// memory stays bounded by the matching ids (16 bytes a case) whatever
    /// the rows; `sink` may block (a slow download) without holding the
    /// index. Returns the rows written.
    pub fn export_cases(
        &self,
        q: &Query,
        role: crate::Role,
        place: impl Fn(&RecordScope) -> bool,
        names: &dyn Fn(&RecordScope) -> crate::export::PlaceNames,
        mut sink: impl FnMut(Vec<String>) -> Result<()>,
    ) -> Result<usize> {
        /// Rows built under one hold of the index.
        const BATCH: usize = 512;
        let q = &self.checked(q)?;
        let now = q.now.unwrap_or_else(|| self.now_ms());
        let ids = {
            let index = self.index_read();
            query::sorted_ids(
                q,
                index.names(),
                index.entries(),
                &self.bodies(&index),
                place,
            )?
        };
        sink(
            crate::export::case_headers(role)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        )?;
        for chunk in ids.chunks(BATCH) {
            // The reporter's phone is in the stored texts only, read for
            // the roles whose rows show it.
            let phones: Vec<String> = if self.search && crate::policy::sees_personal_data(role) {
                self.search_texts(chunk)?
                    .into_iter()
                    .map(|t| t.map(|t| t.phone).unwrap_or_default())
                    .collect()
            } else {
                vec![String::new(); chunk.len()]
            };
            let rows: Vec<Vec<String>> = {
                let index = self.index_read();
                chunk
                    .iter()
                    .zip(&phones)
                    .filter_map(|(id, phone)| {
                        let e = index.get(*id)?;
                        let meta = e.meta(index.names());
                        let work_order = e.search.as_ref().map_or("", |h| h.work_order());
                        Some(crate::export::case_row(
                            &meta,
                            &names(&meta.scope()),
                            work_order,
                            phone,
                            role,
                            now,
                        ))
                    })
                    .collect()
            };
            for row in rows {
                sink(row)?;
            }
        }
        Ok(ids.len())
    }

    /// How many records match `q` (paging ignored).
    pub fn count(&self, q: &Query) -> Result<usize> {
        let q = &self.checked(q)?;
        let index = self.index_read();
        Ok(query::hits(
            q,
            index.names(),
            index.entries(),
            &self.bodies(&index),
            |_| true,
        )?
        .len())
    }

    /// Counts of matching records by derived status.
    pub fn count_by_status(&self, q: &Query) -> Result<BTreeMap<String, usize>> {
        let q = &self.checked(q)?;
        let index = self.index_read();
        query::count_by_status(q, index.names(), index.entries(), &self.bodies(&index))
    }

    /// Every record id, in id order.
    pub fn record_ids(&self) -> Result<Vec<RecordId>> {
        Ok(self.index_read().ids().collect())
    }

    /// How many records the store holds.
    pub fn len(&self) -> Result<usize> {
        Ok(self.index_read().len())
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// How many documents are loaded in memory right now (diagnostics:
    /// queries must not load any).
    pub fn loaded_documents(&self) -> Result<usize> {
        Ok(self.lock().cache.len())
    }

    /// Records whose stored data could not be read at open.
    pub fn corrupt_records(&self) -> Result<Vec<RecordId>> {
        Ok(self.index_read().corrupt.iter().copied().collect())
    }

    /// The record's current heads.
    pub fn heads(&self, id: RecordId) -> Result<Vec<ChangeHash>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| d.get_heads())
    }

    /// The record's changes that `have` does not include, as bytes for
    /// [`Store::apply_changes`] on another replica.
    pub fn changes_since(&self, id: RecordId, have: &[ChangeHash]) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| d.save_after(have))
    }

    /// Like [`Store::changes_since`], but only the changes this store's own
    /// actor made (what a device pushes).
    pub fn own_changes_since(&self, id: RecordId, have: &[ChangeHash]) -> Result<Vec<u8>> {
        self.changes_to_offer(id, have, false)
    }

    /// What a device offers the server of a record: its own changes after
    /// `have`, and with `hand_back` also the server's tagged changes (after
    /// a restore, the server may lack changes of its own; see `tag`).
    pub fn changes_to_offer(
        &self,
        id: RecordId,
        have: &[ChangeHash],
        hand_back: bool,
    ) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| {
            let mut out = Vec::new();
            for c in d.get_changes(have) {
                if c.actor_id() == &self.actor || (hand_back && crate::tag::is_tagged(&c)) {
                    out.extend_from_slice(c.raw_bytes());
                }
            }
            out
        })
    }

    /// A compacted snapshot of the record for [`Store::apply_snapshot`].
    pub fn snapshot(&self, id: RecordId) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| d.save())
    }

    /// The bytes of the given changes of a record, in causal order, for
    /// another replica. Hashes the record does not have are skipped.
    pub fn changes_by_hash(&self, id: RecordId, hashes: &[ChangeHash]) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| {
            let mut out = Vec::new();
            for h in hashes {
                if let Some(c) = d.get_change_by_hash(h) {
                    out.extend_from_slice(c.raw_bytes());
                }
            }
            out
        })
    }

    /// Up to `limit` index entries with ids after `after`, in id order,
    /// in places `place` accepts (asked once per place) with ids `keep`
    /// accepts.
    pub fn records_after(
        &self,
        after: Option<RecordId>,
        limit: usize,
        place: impl Fn(&RecordScope) -> bool,
        keep: impl FnMut(RecordId) -> bool,
    ) -> Vec<RecordMeta> {
        self.index_read().after(after, limit, place, keep)
    }
}
