//! The one error type of the core crate.
//!
//! Every variant is something a caller can act on. Expected outcomes that are
//! not failures (a merge that brought nothing new, say) are values, not errors.

use crate::ids::RecordId;

/// The result type of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No record with this id is in the store.
    #[error("record {0} not found")]
    NotFound(RecordId),

    /// A record with this id is already in the store (creation under a
    /// caller-chosen id).
    #[error("record {0} already exists")]
    Exists(RecordId),

    /// The record exists but is of the other kind (an issue asked for as a
    /// meeting, say).
    #[error("record {id} is a {actual}, not a {expected}")]
    WrongKind {
        id: RecordId,
        expected: &'static str,
        actual: &'static str,
    },

    /// A status change that the workflow does not allow from the current
    /// status. Nothing was written.
    #[error("illegal transition from {from} to {to}")]
    IllegalTransition { from: String, to: String },

    /// A field value that is not acceptable (unknown enum value, bad id…).
    #[error("invalid value for {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    /// A field value longer than the store accepts.
    #[error("{field} is {len} characters; at most {max} are accepted")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },

    /// The author's role may not perform this action (see
    /// [`crate::policy`]). Nothing was written.
    #[error("the {role} role may not {action}")]
    Forbidden {
        action: crate::action::Action,
        role: crate::ids::Role,
    },

    /// Foreign changes that claim an author, role or device other than the
    /// one the server knows the sender to be, or that rewrite what others
    /// wrote. Nothing was applied.
    #[error("changes to record {id} were refused: {reason}")]
    Unauthentic { id: RecordId, reason: String },

    /// A work order whose number is already taken by a case with
    /// different content. Nothing was written.
    #[error("work order {number} was already taken in with different content")]
    WorkOrderMismatch { number: String },

    /// An entry inside a record (an action item, an extension request)
    /// that the record does not hold. Nothing was written. (The record
    /// exists: over HTTP this is 422, not 404.)
    #[error("no {what} {id} in this record")]
    EntryNotFound { what: &'static str, id: String },

    /// An operation the record's state no longer allows (answering an
    /// extension request that was already answered, say). Nothing was
    /// written.
    #[error("{0}")]
    StateConflict(String),

    /// A conflict resolution that names nothing that is in conflict.
    #[error("no open conflict on {0}")]
    NoConflict(String),

    /// Foreign change bytes that failed our own checks or Automerge's parser.
    /// Nothing was applied.
    #[error("rejected change bytes for record {id}: {reason}")]
    MalformedChanges { id: RecordId, reason: String },

    /// Changes that reuse a device's change numbers which this store holds
    /// with other content: the device's history diverged from what it
    /// once sent (it was restored from an old backup). Nothing was
    /// applied; the device recovers by re-authoring its work on the other
    /// side's copy (`Store::rebase_onto_unflushed`).
    #[error("changes to record {id} diverge from its history: {reason}")]
    Diverged { id: RecordId, reason: String },

    /// Foreign changes that depend on changes this store does not have.
    /// Nothing was applied; send the missing history first.
    #[error("changes for record {id} depend on {missing} change(s) this store does not have")]
    MissingDependencies { id: RecordId, missing: usize },

    /// Automerge panicked while merging foreign bytes. The record was left as
    /// it was before the merge.
    #[error(
        "merging changes into record {0} failed inside the CRDT library; the record is unchanged"
    )]
    MergePanicked(RecordId),

    /// Foreign changes would grow the record beyond the accepted size.
    /// Nothing was applied.
    #[error("record {id} would grow beyond {limit} bytes")]
    DocumentTooLarge { id: RecordId, limit: usize },

    /// The record's scope is not one the writer may write (or read).
    /// Nothing was applied.
    #[error("record {id} is outside the writer's scope")]
    OutOfScope { id: RecordId },

    /// A move to a place the mover may not reach (a community's staff
    /// moving a case out of their community, say). Nothing was written.
    #[error("{place} is not a place this user may move cases to")]
    PlaceOutOfScope { place: String },

    /// Changes that would move the record to another street, community or
    /// grid; only an office move may. Nothing was applied.
    #[error("changes to record {id} would change its scope; only an office move may")]
    ScopeChange { id: RecordId },

    /// A stored record that cannot be decoded. Other records are unaffected.
    #[error("record {id} is corrupt on disk: {reason}")]
    Corrupt { id: RecordId, reason: String },

    /// sled refused to open the store because its files are damaged. The
    /// directory was renamed, not deleted, so its data can still be rescued.
    #[error(
        "the store at {path} could not be opened ({reason}); it was moved aside to {moved_to}"
    )]
    StoreMovedAside {
        path: String,
        moved_to: String,
        reason: String,
    },

    /// An Automerge operation inside one of our own transactions failed.
    /// This points at a bug in gridsync, not at the caller's input.
    #[error("document operation failed: {0}")]
    Document(String),

    /// The store's own bookkeeping (not a record) could not be decoded.
    #[error("store metadata is damaged: {0}")]
    Metadata(String),

    /// A sync message that does not decode. Nothing was applied.
    #[error("malformed sync message: {0}")]
    Wire(String),

    /// A sync message of a protocol version this build does not speak.
    #[error("sync protocol version {got} is not supported (this build speaks {supported})")]
    UnsupportedVersion { got: u16, supported: u16 },

    /// The sync request could not be delivered (network, timeout).
    #[error("sync transport failed: {0}")]
    Transport(String),

    /// Sync rounds stopped making progress (nothing pushed, pulled or
    /// moved); the message names the records that could not be merged.
    #[error("sync stopped: {0}")]
    Stalled(String),

    /// The server refused the whole sync request.
    #[error("the server refused the sync ({status} {code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },

    /// The storage engine failed; the operation was not acknowledged.
    #[error("storage error: {0}")]
    Storage(String),

    /// No such file here, or none the caller may have (the two answer
    /// alike, so the answer does not tell which files exist elsewhere).
    #[error("file {0} not found")]
    FileNotFound(String),

    /// A file larger than accepted. Nothing was kept.
    #[error("the file is {size} bytes or more; at most {limit} are accepted")]
    FileTooLarge { size: u64, limit: u64 },

    /// A file or chunk that is not what it claims to be (wrong length,
    /// damaged on the way, content not matching its SHA-256). Nothing of it
    /// was kept; send it again.
    #[error("file {hash} refused: {reason}")]
    FileRejected { hash: String, reason: String },

    /// The disk is full: nothing was written; the operation can be retried
    /// once space is freed.
    #[error("the disk is full")]
    StorageFull,

    /// The store has no device code yet: enroll it before recording.
    #[error("this store is not enrolled yet: enroll it before recording")]
    NotEnrolled,

    /// The caller cancelled the operation (an app's coroutine or task);
    /// what completed before stays, durably.
    #[error("cancelled")]
    Cancelled,

    /// The store was enrolled before; a store is enrolled once.
    #[error("this store is enrolled already")]
    AlreadyEnrolled,

    /// The store was erased (its device retired or wiped): open it again
    /// to start afresh.
    #[error("this store was erased; open it again to start afresh")]
    Erased,

    /// The store is encrypted and the key given is not its key (or no key
    /// was given); nothing was touched.
    #[error("wrong key: {0}")]
    WrongKey(String),

    /// A file-system error while making a write durable; the operation was
    /// not acknowledged.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<crate::ids::ParseError> for Error {
    fn from(e: crate::ids::ParseError) -> Self {
        Error::InvalidInput {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl Error {
    /// A short stable code for the error, suitable for logs, metrics and the
    /// wire. It never contains record content or personal data.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Exists(_) => "exists",
            Error::WrongKind { .. } => "wrong_kind",
            Error::IllegalTransition { .. } => "illegal_transition",
            Error::InvalidInput { .. } => "invalid_input",
            Error::FieldTooLong { .. } => "field_too_long",
            Error::NoConflict(_) => "no_conflict",
            Error::EntryNotFound { .. } => "entry_not_found",
            Error::StateConflict(_) => "state_conflict",
            Error::Forbidden { .. } => "forbidden",
            Error::Unauthentic { .. } => "unauthentic",
            Error::WorkOrderMismatch { .. } => "work_order_mismatch",
            Error::MalformedChanges { .. } => "malformed_changes",
            Error::Diverged { .. } => "diverged",
            Error::MissingDependencies { .. } => "missing_dependencies",
            Error::MergePanicked(_) => "merge_panicked",
            Error::DocumentTooLarge { .. } => "document_too_large",
            Error::OutOfScope { .. } => "out_of_scope",
            Error::NotEnrolled => "not_enrolled",
            Error::Cancelled => "cancelled",
            Error::AlreadyEnrolled => "already_enrolled",
            Error::PlaceOutOfScope { .. } => "place_out_of_scope",
            Error::ScopeChange { .. } => "scope_change",
            Error::Corrupt { .. } => "corrupt_record",
            Error::StoreMovedAside { .. } => "store_moved_aside",
            Error::Document(_) => "document",
            Error::Metadata(_) => "store_metadata",
            Error::Wire(_) => "malformed_message",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::Transport(_) => "transport",
            Error::Stalled(_) => "stalled",
            Error::Rejected { .. } => "rejected",
            Error::Storage(_) => "storage",
            Error::FileNotFound(_) => "file_not_found",
            Error::FileTooLarge { .. } => "file_too_large",
            Error::FileRejected { .. } => "file_rejected",
            Error::StorageFull => "storage_full",
            Error::WrongKey(_) => "wrong_key",
            Error::Erased => "erased",
            Error::Io(e) if e.kind() == std::io::ErrorKind::StorageFull => "storage_full",
            Error::Io(_) => "io",
        }
    }
}
