//! The authoritative scope table and office moves.

use super::*;

impl Store {
    /// Moves a record to another street, community or grid: the office's
    /// move, the only way a record's scope changes. Writes the new scope
    /// into the document and the scope table in one batch, and logs the old
    /// scope so devices that lose the record can be told to drop it.
    pub fn move_record(&self, id: RecordId, author: &Author, to: &RecordScope) -> Result<Written> {
        for (field, value) in [
            ("street", &to.street),
            ("community", &to.community),
            ("grid", &to.grid),
        ] {
            doc::check_len(field, value, doc::MAX_SHORT)?;
        }
        let from = self
            .scope_of(id)?
            .or_else(|| self.index_read().scope(id))
            .ok_or(Error::NotFound(id))?;
        self.update_with(id, None, author, "move", ScopeRule::Move(&from), |tx, _| {
            for (field, value) in [
                ("street", &to.street),
                ("community", &to.community),
                ("grid", &to.grid),
            ] {
                doc::put_register(tx, &automerge::ROOT, field, &value.as_str().into())?;
            }
            Ok(())
        })
    }

    /// Moves a case or meeting on behalf of an office user, as the policy
    /// allows: the role may move ([`crate::policy::Action::Move`]), the
    /// record lies in the user's scope, and so does the place it goes to
    /// (community staff move their community's cases between its grids;
    /// a street's staff within the street). `taker.may_access` is the
    /// caller's scope, which also knows which places exist.
    pub fn move_case(
        &self,
        id: RecordId,
        taker: crate::Taker<'_>,
        to: &RecordScope,
    ) -> Result<Written> {
        crate::policy::check(taker.author.role, crate::policy::Action::Move)?;
        let from = self
            .scope_of(id)?
            .or_else(|| self.index_read().scope(id))
            .ok_or(Error::NotFound(id))?;
        if !(taker.may_access)(&from) {
            return Err(Error::OutOfScope { id });
        }
        if !(taker.may_access)(to) {
            return Err(Error::PlaceOutOfScope {
                place: format!("{}/{}/{}", to.street, to.community, to.grid),
            });
        }
        self.move_record(id, taker.author, to)
    }

    /// The record's authoritative scope, if it has one.
    pub fn scope_of(&self, id: RecordId) -> Result<Option<RecordScope>> {
        Ok(self.scope_entry(id)?.map(|e| e.current))
    }

    /// Scopes the record was moved out of, oldest first.
    pub fn former_scopes(&self, id: RecordId) -> Result<Vec<RecordScope>> {
        Ok(self
            .scope_entry(id)?
            .map(|e| e.former.into_iter().map(|f| f.scope).collect())
            .unwrap_or_default())
    }

    pub(super) fn scope_entry(&self, id: RecordId) -> Result<Option<StoredScope>> {
        match self.db.get(&key(P_SCOPE, id.as_bytes()))? {
            None => Ok(None),
            Some(v) => StoredScope::decode(&v)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    id,
                    reason: format!("scope entry: {e}"),
                }),
        }
    }
}
