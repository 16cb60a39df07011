//! Checks on change bytes that come from another replica, done before any
//! of them reach Automerge.
//!
//! Automerge 0.12 trusts its input more than a server can: it inflates
//! compressed chunks without a bound, and some malformed input panics. So
//! foreign bytes are split into chunks here, and each must be a plain
//! (uncompressed) change chunk within the size limits. Only then are they
//! parsed by Automerge, under `catch_unwind`, and the parsed changes checked
//! again (operation and dependency counts, and optionally the actor).

use std::panic::{catch_unwind, AssertUnwindSafe};

use automerge::{ActorId, Change};

use crate::error::{Error, Result};
use crate::ids::RecordId;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;

/// Limits on foreign change bytes.
#[derive(Clone, Debug)]
pub struct ForeignLimits {
    /// Total bytes per call.
    pub max_bytes: usize,
    /// Changes per call.
    pub max_changes: usize,
    /// Operations in one change.
    pub max_ops_per_change: usize,
    /// Dependencies of one change.
    pub max_deps: usize,
    /// The stored size a record may grow to through foreign changes.
    pub max_document_bytes: usize,
    /// If set, every change must be authored by this actor (the pushing
    /// device's), so no replica can forge or block another's changes.
    pub actor: Option<ActorId>,
}

impl Default for ForeignLimits {
    fn default() -> Self {
        ForeignLimits {
            max_bytes: 1 << 20,
            max_changes: 1_000,
            // Every change a store makes locally must pass: the longest
            // text field (`doc::MAX_TEXT` characters, one operation
            // each) with room for the rest of a record's creation. Lower, a phone could record a case the
            // server refuses for ever.
            max_ops_per_change: crate::doc::MAX_TEXT + 8_192,
            max_deps: 64,
            max_document_bytes: 4 << 20,
            actor: None,
        }
    }
}

fn reject(id: RecordId, reason: impl Into<String>) -> Error {
    Error::MalformedChanges {
        id,
        reason: reason.into(),
    }
}

/// Reads an unsigned LEB128 of at most 9 bytes (enough for any length we
/// accept).
fn uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().take(9).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Splits `bytes` into Automerge chunks and checks each one's shape.
/// Returns the byte ranges of the change chunks.
fn split_chunks(
    id: RecordId,
    bytes: &[u8],
    limits: &ForeignLimits,
) -> Result<Vec<std::ops::Range<usize>>> {
    if bytes.len() > limits.max_bytes {
        return Err(reject(
            id,
            format!(
                "{} bytes exceed the limit of {}",
                bytes.len(),
                limits.max_bytes
            ),
        ));
    }
    let mut ranges = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < 10 || rest[..4] != MAGIC {
            return Err(reject(id, format!("no chunk header at byte {pos}")));
        }
        match rest[8] {
            CHUNK_CHANGE => {}
            CHUNK_COMPRESSED => {
                return Err(reject(id, "compressed change chunks are not accepted"))
            }
            CHUNK_DOCUMENT => return Err(reject(id, "document chunks are not accepted here")),
            CHUNK_BUNDLE => return Err(reject(id, "bundle chunks are not accepted")),
            other => return Err(reject(id, format!("unknown chunk type {other}"))),
        }
        let (len, len_bytes) = uleb(&rest[9..]).ok_or_else(|| reject(id, "bad chunk length"))?;
        let header = 9 + len_bytes;
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(header))
            .filter(|&t| t <= rest.len())
            .ok_or_else(|| reject(id, format!("chunk at byte {pos} is truncated")))?;
        ranges.push(pos..pos + total);
        if ranges.len() > limits.max_changes {
            return Err(reject(
                id,
                format!("more than {} changes in one call", limits.max_changes),
            ));
        }
        pos += total;
    }
    Ok(ranges)
}

/// Checks and parses foreign change bytes. Nothing is applied anywhere.
pub fn parse_changes(id: RecordId, bytes: &[u8], limits: &ForeignLimits) -> Result<Vec<Change>> {
    let ranges = split_chunks(id, bytes, limits)?;
    let mut changes = Vec::with_capacity(ranges.len());
    for range in ranges {
        let declared_checksum: [u8; 4] = [
            bytes[range.start + 4],
            bytes[range.start + 5],
            bytes[range.start + 6],
            bytes[range.start + 7],
        ];
        let chunk = bytes[range].to_vec();
        let parsed = catch_unwind(AssertUnwindSafe(|| Change::from_bytes(chunk)))
            .map_err(|_| reject(id, "change parser panicked"))?
            .map_err(|e| reject(id, format!("unparseable change: {e}")))?;
        // Automerge's parser does not check the chunk checksum; a flipped
        // bit would otherwise become a different, valid-looking change.
        if parsed.hash().0[..4] != declared_checksum {
            return Err(reject(id, "a change's checksum does not match its content"));
        }
        if parsed.len() > limits.max_ops_per_change {
            return Err(reject(
                id,
                format!(
                    "a change has {} operations; at most {} are accepted",
                    parsed.len(),
                    limits.max_ops_per_change
                ),
            ));
        }
        if parsed.deps().len() > limits.max_deps {
            return Err(reject(
                id,
                format!(
                    "a change has {} dependencies; at most {} are accepted",
                    parsed.deps().len(),
                    limits.max_deps
                ),
            ));
        }
        if let Some(actor) = &limits.actor {
            if parsed.actor_id() != actor {
                return Err(reject(id, "a change is authored by another device"));
            }
        }
        changes.push(parsed);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    fn real_change() -> Vec<u8> {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "title", "a leaking pipe").unwrap();
        doc.save_incremental()
    }

    #[test]
    fn accepts_plain_changes() {
        let id = RecordId::new();
        let bytes = real_change();
        let changes = parse_changes(id, &bytes, &ForeignLimits::default()).unwrap();
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn rejects_garbage_truncation_and_other_chunk_types() {
        let id = RecordId::new();
        let limits = ForeignLimits::default();
        let good = real_change();
        assert!(parse_changes(id, b"hello world, not automerge", &limits).is_err());
        assert!(parse_changes(id, &good[..good.len() - 3], &limits).is_err());
        let mut compressed = good.clone();
        compressed[8] = CHUNK_COMPRESSED;
        let err = parse_changes(id, &compressed, &limits).unwrap_err();
        assert!(err.to_string().contains("compressed"));
        let mut doc_chunk = good.clone();
        doc_chunk[8] = CHUNK_DOCUMENT;
        assert!(parse_changes(id, &doc_chunk, &limits).is_err());
        let mut bad_checksum = good;
        let last = bad_checksum.len() - 1;
        bad_checksum[last] ^= 0xff;
        assert!(parse_changes(id, &bad_checksum, &limits).is_err());
    }

    #[test]
    fn enforces_limits() {
        let id = RecordId::new();
        let good = real_change();
        let mut two = good.clone();
        two.extend_from_slice(&good);
        let limits = ForeignLimits {
            max_changes: 1,
            ..ForeignLimits::default()
        };
        assert!(parse_changes(id, &two, &limits).is_err());
        let limits = ForeignLimits {
            max_bytes: 10,
            ..ForeignLimits::default()
        };
        assert!(parse_changes(id, &good, &limits).is_err());
        let limits = ForeignLimits {
            actor: Some(ActorId::random()),
            ..ForeignLimits::default()
        };
        assert!(parse_changes(id, &good, &limits).is_err());
    }

    #[test]
    fn huge_declared_length_is_not_trusted() {
        let id = RecordId::new();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0, 0, 0, 0, CHUNK_CHANGE]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(parse_changes(id, &bytes, &ForeignLimits::default()).is_err());
    }
}
