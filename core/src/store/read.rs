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
        Ok(self.index_read().records.get(&id).cloned())
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
        let q = &self.dated(q);
        Ok(query::run(q, self.index_read().records.values()))
    }

    /// The query with its time set: the store's clock unless given.
    fn dated(&self, q: &Query) -> Query {
        let mut q = q.clone();
        q.now.get_or_insert_with(|| self.now_ms());
        q
    }

    /// The office figures over the records `keep` accepts, grouped (see
    /// [`crate::figures`]). Reads only the in-memory index.
    pub fn figures(
        &self,
        by: crate::figures::GroupBy,
        keep: impl Fn(&RecordMeta) -> bool,
        now: i64,
    ) -> crate::figures::Figures {
        let index = self.index_read();
        crate::figures::compute(index.records.values().filter(|m| keep(m)), by, now)
    }

    /// Like [`Store::list`], over only the records `keep` accepts (an
    /// office user's scope, say), before sorting and paging.
    pub fn list_where(&self, q: &Query, keep: impl Fn(&RecordMeta) -> bool) -> Result<Page> {
        let q = &self.dated(q);
        Ok(query::run(
            q,
            self.index_read().records.values().filter(|m| keep(m)),
        ))
    }

    /// How many records match `q` (paging ignored).
    pub fn count(&self, q: &Query) -> Result<usize> {
        let q = &self.dated(q);
        Ok(self
            .index_read()
            .records
            .values()
            .filter(|m| q.matches(m))
            .count())
    }

    /// Counts of matching records by derived status.
    pub fn count_by_status(&self, q: &Query) -> Result<BTreeMap<String, usize>> {
        let q = &self.dated(q);
        Ok(query::count_by_status(
            q,
            self.index_read().records.values(),
        ))
    }

    /// Every record id, in id order.
    pub fn record_ids(&self) -> Result<Vec<RecordId>> {
        Ok(self.index_read().records.keys().copied().collect())
    }

    /// How many records the store holds.
    pub fn len(&self) -> Result<usize> {
        Ok(self.index_read().records.len())
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
    /// that satisfy `keep`.
    pub fn records_after(
        &self,
        after: Option<RecordId>,
        limit: usize,
        mut keep: impl FnMut(&RecordMeta) -> bool,
    ) -> Vec<RecordMeta> {
        use std::ops::Bound;
        let index = self.index_read();
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        index
            .records
            .range((start, Bound::Unbounded))
            .map(|(_, m)| m)
            .filter(|m| keep(m))
            .take(limit)
            .cloned()
            .collect()
    }
}
