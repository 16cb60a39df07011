//! # gridsync-core
//!
//! The data layer under the grid workers' phones and the office: issue and
//! meeting records as Automerge CRDT documents, persisted in sled, with
//! typed operations, status workflows that merge soundly, a metadata index
//! for queries, and the change log that sync reads. It does no network I/O.
//!
//! ```
//! use gridsync_core::{Author, IssueKind, IssueOp, IssueStatus, Location, NewIssue,
//!     Query, Reporter, Role, Source, Store, StoreConfig, Urgency};
//!
//! # fn main() -> gridsync_core::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(StoreConfig::new(dir.path(), "G01-P1"))?;
//! let worker = Author::new("worker-17", Role::GridWorker);
//!
//! let id = store.create_issue(&worker, NewIssue {
//!     source: Source::GridPatrol,
//!     external_ref: None,
//!     original_statement: "楼道灯坏了一个星期".into(),
//!     capture_geo: None,
//!     title: "Stairwell light broken".into(),
//!     kind: IssueKind::Demand,
//!     category: "facilities.lighting".into(),
//!     urgency: Urgency::Yellow,
//!     reporter: Reporter::default(),
//!     location: Location { street: "S1".into(), community: "C1".into(), grid: "G01".into(),
//!         ..Location::default() },
//!     description: "Third floor, building 4".into(),
//!     report: true,
//! })?;
//!
//! store.update_issue(id, &worker, IssueOp::Transition {
//!     to: IssueStatus::InProgress, reason: "self-handled".into() })?;
//! assert_eq!(store.issue(id)?.status, IssueStatus::InProgress);
//!
//! // An illegal transition is refused and changes nothing.
//! assert!(store.update_issue(id, &worker, IssueOp::Transition {
//!     to: IssueStatus::Closed, reason: String::new() }).is_err());
//!
//! let open_in_grid = store.list(&Query::issues().grid("G01").open(true))?;
//! assert_eq!(open_in_grid.total, 1);
//! # Ok(()) }
//! ```

// Keeps the README's example compiling and true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

mod action;
pub mod audit;
pub mod board;
pub mod clock;
pub mod deadlines;
pub mod doc;
mod entry;
mod error;
pub mod export;
pub mod figures;
pub mod files;
pub mod foreign;
pub mod hotline;
#[cfg(feature = "http")]
pub mod http;
mod ids;
pub mod intake;
pub mod issue;
pub mod labels;
pub mod lifecycle;
pub mod meeting;
mod model;
mod names;
pub mod policy;
pub mod query;
mod rebase;
mod seal;
pub mod search;
pub mod store;
pub mod sync;
mod tag;
pub mod workflow;

pub use automerge::{ActorId, ChangeHash};
pub use clock::{Clock, ManualClock, SystemClock};
pub use deadlines::DeadlineTable;
pub use doc::{RegisterConflict, Unrecognized, Value};
pub use error::{Error, Result};
pub use files::FileHash;
pub use foreign::ForeignLimits;
pub use ids::{Author, ParseError, RecordId, RecordKind, Role};
pub use intake::{Intake, Taker, WorkOrder};
pub use issue::{
    IssueKind, IssueOp, IssueView, NewIssue, NewReturnVisit, Relation, Resolution, Satisfaction,
    TimelineItem, TimelineKind, Urgency,
};
pub use meeting::{
    ActionItem, AttendeeRole, MeetingFormat, MeetingLevel, MeetingOp, MeetingOutcome, MeetingView,
    NewActionItem, NewAttendee, NewMeeting,
};
pub use model::{Attachment, AttachmentRef, Geo, Location, Reporter, Source};
pub use query::{Page, Query, RecordMeta, RecordScope, Sort};
pub use seal::StoreKey;
pub use store::{
    AttachTo, Durability, FileState, Import, Incoming, LogEntry, Merged, Origin, Pending, Store,
    StoreConfig, Written,
};
pub use workflow::{ActionStatus, IssueStatus, Status, StatusConflict};
