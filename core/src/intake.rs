//! 12345 work-order intake: a hotline work order becomes a case, created,
//! accepted and dispatched in one durable write.
//!
//! * **Idempotent without a lookup table.** The case's id is derived from
//!   the work-order number with a key only the server holds
//!   ([`Store::intake`] keeps it in the store's local metadata), so the same
//!   order sent twice is the same record, and no device can create a record
//!   under a work order's id before the order arrives (devices also create
//!   records only under ids of their own kind, UUID v7; work orders' ids are
//!   version 8).
//! * **Scoped.** The order's place must be one the caller may write. A
//!   number already taken is answered with the existing case only when the
//!   order is the same (its digest, kept in the record, matches) and the
//!   case lies in the caller's scope; otherwise it is refused with
//!   [`Error::WorkOrderMismatch`], which says nothing about the case.
//! * **Checked.** A title and a category are required, and a deadline must
//!   lie within [`DEADLINE_PAST_MS`] before and [`DEADLINE_FUTURE_MS`] after
//!   now.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::{Author, RecordId};
use crate::issue::{IssueKind, NewIssue, Urgency};
use crate::model::{Location, RecordScope, Reporter, Source};

pub use crate::model::{check_deadline, DEADLINE_FUTURE_MS, DEADLINE_PAST_MS};

/// A 12345 work order, dispatched to a community or to one of its grids.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrder {
    /// The hotline's work-order number; intake is idempotent on it.
    pub work_order_no: String,
    pub category: String,
    pub kind: IssueKind,
    pub urgency: Urgency,
    pub title: String,
    /// The resident's own words.
    #[serde(default)]
    pub statement: String,
    #[serde(default)]
    pub description: String,
    pub reporter: Reporter,
    pub street: String,
    pub community: String,
    /// Empty: the case goes to the community, which picks a grid.
    #[serde(default)]
    pub grid: String,
    #[serde(default)]
    pub address: String,
    /// The hotline's deadline, milliseconds since the Unix epoch; without
    /// it the urgency's hours apply.
    #[serde(default, deserialize_with = "integral")]
    pub deadline: Option<i64>,
}

/// An optional integer that may be written as a JSON number with a zero
/// fraction (`1.0`), which JSON Schema counts as an integer too.
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    use serde::Deserialize;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(Some(i));
            }
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
                    Ok(Some(f as i64))
                }
                _ => Err(serde::de::Error::custom(
                    "expected an integer (milliseconds)",
                )),
            }
        }
    }
}

/// What intake did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intake {
    /// A new case.
    Created(RecordId),
    /// The same order was taken in before; this is its case.
    Existing(RecordId),
}

impl Intake {
    pub fn id(self) -> RecordId {
        match self {
            Intake::Created(id) | Intake::Existing(id) => id,
        }
    }
}

impl WorkOrder {
    /// The number as stored (surrounding spaces removed).
    pub fn number(&self) -> &str {
        self.work_order_no.trim()
    }

    /// The place the order is sent to.
    pub fn place(&self) -> RecordScope {
        RecordScope::new(&self.street, &self.community, &self.grid)
    }

    /// Checks what must hold before anything is written.
    pub fn validate(&self, now: i64) -> Result<()> {
        let number = self.number();
        if number.is_empty() || number.len() > 64 {
            return Err(Error::InvalidInput {
                field: "work_order_no",
                reason: "must be 1 to 64 bytes".into(),
            });
        }
        for (field, value) in [
            ("title", &self.title),
            ("category", &self.category),
            ("street", &self.street),
            ("community", &self.community),
        ] {
            if value.trim().is_empty() {
                return Err(Error::InvalidInput {
                    field,
                    reason: "must not be empty".into(),
                });
            }
        }
        if let Some(due) = self.deadline {
            check_deadline("deadline", due, now)?;
        }
        Ok(())
    }

    /// A digest of everything the order says, kept in the case so a repeat
    /// can be told from a different order under the same number.
    pub fn digest(&self) -> String {
        // serde_json of a struct is deterministic (fields in declaration
        // order); the number is normalised first.
        let mut order = self.clone();
        order.work_order_no = self.number().to_owned();
        let json = serde_json::to_vec(&order).unwrap_or_default();
        let digest = Sha256::new_with_prefix(b"gridsync work order digest\0")
            .chain_update(&json)
            .finalize();
        hex::encode(digest)
    }

    /// The new case the order becomes.
    pub(crate) fn new_issue(&self) -> NewIssue {
        NewIssue {
            source: Source::Hotline12345,
            external_ref: Some(self.number().to_owned()),
            original_statement: self.statement.clone(),
            capture_geo: None,
            title: self.title.clone(),
            kind: self.kind,
            category: self.category.clone(),
            urgency: self.urgency,
            reporter: self.reporter.clone(),
            location: Location {
                street: self.street.clone(),
                community: self.community.clone(),
                grid: self.grid.clone(),
                address: self.address.clone(),
                ..Location::default()
            },
            description: self.description.clone(),
            report: true,
        }
    }
}

/// The record id of a work order: a keyed digest of its number, so that
/// the same order is the same record and nobody without the key can
/// produce the id in advance.
pub fn work_order_id(key: &[u8; 32], number: &str) -> RecordId {
    let digest = Sha256::new_with_prefix(b"gridsync work order\0")
        .chain_update(key)
        .chain_update(number.trim().as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A UUID of version 8 (custom), RFC 9562 variant.
    RecordId::from_bytes(*uuid::Uuid::new_v8(bytes).as_bytes())
}

/// Who takes an order in and where they may put it.
#[derive(Clone, Copy)]
pub struct Taker<'a> {
    pub author: &'a Author,
    pub may_access: &'a dyn Fn(&RecordScope) -> bool,
}

impl std::fmt::Debug for Taker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Taker")
            .field("author", self.author)
            .finish_non_exhaustive()
    }
}
