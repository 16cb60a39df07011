//! Store formats 2 and 3's index entry, read by the migration to format 4:
//! what it needs of it (the record id, the change time, the chunk
//! accounting), decoded from the layout `RecordMeta` had then (with the
//! facts before the action items' due dates, `Facts3`).

use bincode::{Decode, Encode};

use super::Storage;
use crate::query::Facts3;

#[derive(Encode, Decode)]
struct RecordMeta {
    id: [u8; 16],
    kind: String,
    number: String,
    title: String,
    street: String,
    community: String,
    grid: String,
    status: String,
    open: bool,
    deadline: Option<i64>,
    assignee: Option<String>,
    urgency: Option<String>,
    category: String,
    issue_kind: Option<String>,
    created_at: i64,
    updated_at: i64,
    conflict: bool,
    linked_issues: Vec<[u8; 16]>,
    facts: Facts3,
    unrecognized: Vec<String>,
}

#[derive(Encode, Decode)]
struct Stored {
    meta: RecordMeta,
    storage: Storage,
}

/// What the migration keeps of a format 2 or 3 index entry.
pub(super) struct StoredIndex {
    pub meta_id: [u8; 16],
    pub updated_at: i64,
    pub storage: Storage,
}

impl<C> Decode<C> for StoredIndex {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        decoder: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let stored = Stored::decode(decoder)?;
        Ok(StoredIndex {
            meta_id: stored.meta.id,
            updated_at: stored.meta.updated_at,
            storage: stored.storage,
        })
    }
}
