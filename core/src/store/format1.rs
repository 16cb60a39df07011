//! Store format 1's index entry, read by the migration to format 2: what
//! it needs of it (the record id, the change time, the chunk accounting),
//! decoded from the layout `RecordMeta` had then (with the facts of
//! formats 1 to 3, `Facts3`).

use bincode::{Decode, Encode};

use super::Storage;
use crate::query::Facts3 as Facts;

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
    facts: Facts,
}

#[derive(Encode, Decode)]
struct Stored {
    meta: RecordMeta,
    storage: Storage,
}

/// What the migration keeps of a format 1 index entry.
pub(super) struct StoredIndex {
    pub meta_id: [u8; 16],
    pub updated_at: i64,
    pub storage: Storage,
}

/// Encodes an index entry in format 1's layout (tests).
#[cfg(feature = "failpoints")]
pub(super) fn encode(meta: crate::query::RecordMeta, storage: Storage) -> crate::Result<Vec<u8>> {
    let meta = RecordMeta {
        id: meta.id,
        kind: meta.kind,
        number: meta.number,
        title: meta.title,
        street: meta.street,
        community: meta.community,
        grid: meta.grid,
        status: meta.status,
        open: meta.open,
        deadline: meta.deadline,
        assignee: meta.assignee,
        urgency: meta.urgency,
        category: meta.category,
        issue_kind: meta.issue_kind,
        created_at: meta.created_at,
        updated_at: meta.updated_at,
        conflict: meta.conflict,
        linked_issues: meta.linked_issues,
        facts: meta.facts.into(),
    };
    bincode::encode_to_vec(Stored { meta, storage }, super::bincode_config())
        .map_err(|e| crate::Error::Metadata(e.to_string()))
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
