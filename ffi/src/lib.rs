//! # gridsync-ffi
//!
//! The core exposed to Kotlin and Swift (and Python) through UniFFI
//! proc-macros. Wrappers only: every exported function converts its
//! arguments, calls `gridsync-core` and converts the answer.
//!
//! * Errors cross as one flat [`GridsyncError`] with the core's stable code
//!   and a message; a panic inside a call is caught here and returned as
//!   code `panic` (it never unwinds into the app).
//! * [`GridStore`] and [`SyncSession`] are safe to share between threads.
//! * `GridStore::enroll`, `sync`, `fetch_file`, `upload_files` and
//!   `prefetch_files` do network I/O: their `*_async` forms are suspending
//!   calls (Kotlin `suspend`, Swift `async`, Python `async`) that run on a
//!   thread of their own and can be cancelled; the plain forms **block**
//!   the calling thread. Everything else is local and fast; writes wait
//!   for the disk (fsync).
//! * Live queries (`watch_list`, `watch_record`) call back on the store's
//!   delivery thread whenever a local write or a sync changes their page.
//! * A store opened with an empty device code takes the one enrollment
//!   assigns (`enroll`), durably: no reopening.
//! * Apps with their own HTTP stack use [`SyncSession`]: `make_request()`
//!   bytes go in a `POST /v1/sync` body (`Authorization: Bearer <token>`,
//!   `Content-Type: application/octet-stream`), the answer's bytes go to
//!   `apply_response()`, until it returns false.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use gridsync_core::sync::{Client, Progress, SyncReport};
use gridsync_core::{AttachTo, FileState};
use gridsync_core::{
    Author, IssueKind, IssueOp, IssueStatus, IssueView, Location, MeetingOp, NewIssue,
    NewReturnVisit, Query, RecordId, Reporter, Role, Satisfaction, Sort, Source, Status, Store,
    StoreConfig, StoreKey, TimelineKind, Urgency, Value,
};

uniffi::setup_scaffolding!();

mod meetings;
pub use meetings::{
    ActionEventRecord, ActionItemRecord, AttendeeRecord, LogTextRecord, MeetingOperation,
    MeetingRecord, NewAttendeeRecord, NewMeetingRecord,
};

// ------------------------------------------------------------ errors

/// Every failure, with the core's stable code (`not_found`,
/// `illegal_transition`, `out_of_scope`, `rejected`, `transport`, …) and a
/// human-readable reason for logs. (The field is not called `message`:
/// Kotlin exceptions already have one, which UniFFI fills with both.)
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum GridsyncError {
    #[error("{code}: {reason}")]
    Failed { code: String, reason: String },
}

impl GridsyncError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        GridsyncError::Failed {
            code: code.to_owned(),
            reason: message.into(),
        }
    }
}

impl From<gridsync_core::Error> for GridsyncError {
    fn from(e: gridsync_core::Error) -> Self {
        GridsyncError::new(e.code(), e.to_string())
    }
}

type Result<T, E = GridsyncError> = std::result::Result<T, E>;

/// Runs one exported call; a panic becomes an error with code `panic`.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(GridsyncError::new("panic", "gridsync failed internally")))
}

fn invalid(field: &str, value: &str) -> GridsyncError {
    GridsyncError::new("invalid_input", format!("unknown {field} {value:?}"))
}

fn id(text: &str) -> Result<RecordId> {
    Ok(text.parse().map_err(gridsync_core::Error::from)?)
}

fn parse<T>(field: &str, value: &str, f: impl Fn(&str) -> Option<T>) -> Result<T> {
    f(value).ok_or_else(|| invalid(field, value))
}

// ------------------------------------------------------------ opening

/// How to open a store ([`GridStore::open_with`]).
#[derive(Clone, uniffi::Record)]
pub struct StoreOptions {
    /// The device code; `""` before enrollment.
    #[uniffi(default = "")]
    pub device_code: String,
    /// The district's deadline table as JSON (see
    /// [`GridStore::open_with_deadlines`]); none: the national default.
    #[uniffi(default = None)]
    pub deadline_table_json: Option<String>,
    /// The store's 32-byte key: encrypt at rest.
    #[uniffi(default = None)]
    pub key: Option<Vec<u8>>,
    /// The key the store had until now, when rotating to `key`.
    #[uniffi(default = None)]
    pub previous_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("device_code", &self.device_code)
            .field("key", &self.key.as_ref().map(|_| ".."))
            .field("previous_key", &self.previous_key.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// The key from the bytes the app passed; the copy UniFFI made is wiped.
fn store_key(mut bytes: Vec<u8>) -> Result<StoreKey> {
    let key = StoreKey::from_bytes(&bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    Ok(key?)
}

/// A new random 32-byte store key, for an app to keep in the platform's
/// key store on first start.
#[uniffi::export]
pub fn generate_store_key() -> Result<Vec<u8>> {
    guard(|| {
        let key = StoreKey::generate()?;
        Ok(key.as_bytes().to_vec())
    })
}

// ------------------------------------------------------------ records

/// Who performs an operation.
#[derive(Clone, Debug, uniffi::Record)]
pub struct AuthorRecord {
    pub user: String,
    /// grid_worker, community, street, hotline, department or office.
    pub role: String,
}

impl AuthorRecord {
    fn author(&self) -> Result<Author> {
        Ok(Author::new(
            &self.user,
            parse("role", &self.role, Role::parse)?,
        ))
    }
}

/// A resident who reported a matter (personal data).
#[derive(Clone, Debug, uniffi::Record)]
pub struct ReporterRecord {
    pub name: String,
    pub phone: String,
    pub anonymous: bool,
    pub may_call_back: bool,
}

/// A new issue as a grid worker records it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct NewIssueRecord {
    pub title: String,
    /// demand, complaint, hidden_danger, dispute, consultation, suggestion.
    pub kind: String,
    pub category: String,
    /// red, yellow or blue.
    pub urgency: String,
    /// grid_patrol, hotline_12345, cloud_council, walk_in or meeting.
    pub source: String,
    pub external_ref: Option<String>,
    pub original_statement: String,
    pub description: String,
    pub reporter: ReporterRecord,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub building: String,
    pub address: String,
    /// File it as reported at once; otherwise it stays a draft.
    pub report: bool,
}

/// A typed operation on an issue. The full set (every `IssueOp`) is also
/// accepted as JSON by [`GridStore::update_issue_json`].
#[derive(Clone, Debug, uniffi::Enum)]
pub enum IssueOperation {
    SetTitle {
        title: String,
    },
    SetAssignee {
        assignee: Option<String>,
    },
    EditDescription {
        text: String,
    },
    AddNote {
        text: String,
    },
    AddVisit {
        text: String,
    },
    AddTag {
        tag: String,
    },
    AddReturnVisit {
        reached: bool,
        resolved: bool,
        /// satisfied, basically_satisfied or dissatisfied.
        satisfaction: Option<String>,
        note: String,
    },
    ChangeDeadline {
        due: i64,
        reason: String,
    },
    /// Asks the office for more time: the deadline `due` (ms) is what the
    /// handler needs; the case shows "extension requested" until the
    /// office grants or refuses it.
    RequestExtension {
        due: i64,
        reason: String,
    },
    Transition {
        to: String,
        reason: String,
    },
    ResolveStatusConflict {
        to: String,
        reason: String,
    },
}

impl IssueOperation {
    fn op(self) -> Result<IssueOp> {
        let status = |s: &str| parse("status", s, <IssueStatus as Status>::parse);
        Ok(match self {
            IssueOperation::SetTitle { title } => IssueOp::SetTitle(title),
            IssueOperation::SetAssignee { assignee } => IssueOp::SetAssignee(assignee),
            IssueOperation::EditDescription { text } => IssueOp::EditDescription(text),
            IssueOperation::AddNote { text } => IssueOp::AddTimeline {
                kind: TimelineKind::Note,
                text,
            },
            IssueOperation::AddVisit { text } => IssueOp::AddTimeline {
                kind: TimelineKind::Visit,
                text,
            },
            IssueOperation::AddTag { tag } => IssueOp::AddTag(tag),
            IssueOperation::AddReturnVisit {
                reached,
                resolved,
                satisfaction,
                note,
            } => IssueOp::AddReturnVisit(NewReturnVisit {
                reached,
                resolved,
                satisfaction: satisfaction
                    .map(|s| parse("satisfaction", &s, Satisfaction::parse))
                    .transpose()?,
                note,
            }),
            IssueOperation::ChangeDeadline { due, reason } => {
                IssueOp::ChangeDeadline { due, reason }
            }
            IssueOperation::RequestExtension { due, reason } => {
                IssueOp::RequestExtension { due, reason }
            }
            IssueOperation::Transition { to, reason } => IssueOp::Transition {
                to: status(&to)?,
                reason,
            },
            IssueOperation::ResolveStatusConflict { to, reason } => {
                IssueOp::ResolveStatusConflict {
                    to: status(&to)?,
                    reason,
                }
            }
        })
    }
}

/// A timeline entry.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TimelineRecord {
    pub kind: String,
    pub text: String,
    pub by: String,
    pub at: i64,
}

/// A status event and whether it took effect.
#[derive(Clone, Debug, uniffi::Record)]
pub struct TransitionRecord {
    pub from: String,
    pub to: String,
    pub by: String,
    pub role: String,
    pub reason: String,
    pub at: i64,
    pub applied: bool,
}

/// A register two people changed to different values concurrently.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct RegisterConflictRecord {
    pub field: String,
    pub values: Vec<String>,
}

impl RegisterConflictRecord {
    fn of(c: &gridsync_core::RegisterConflict) -> Self {
        RegisterConflictRecord {
            field: c.field.clone(),
            values: c.values.iter().map(value_text).collect(),
        }
    }
}

/// An issue as the app shows it.
#[derive(Clone, Debug, uniffi::Record)]
pub struct IssueRecord {
    pub id: String,
    pub case_no: String,
    pub external_ref: Option<String>,
    pub title: String,
    pub kind: String,
    pub category: String,
    pub urgency: String,
    pub status: String,
    /// The statuses in dispute (least final first); empty when none.
    pub status_candidates: Vec<String>,
    pub register_conflicts: Vec<RegisterConflictRecord>,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub address: String,
    pub description: String,
    pub reporter: ReporterRecord,
    pub assignee: Option<String>,
    pub effective_deadline: Option<i64>,
    pub overdue: bool,
    /// An extension request awaits the office's answer.
    pub extension_requested: bool,
    pub tags: Vec<String>,
    pub timeline: Vec<TimelineRecord>,
    pub transitions: Vec<TransitionRecord>,
    /// Values a newer app wrote that this build does not know: kept and
    /// synced; show them marked (an unknown status among them is not
    /// applied).
    pub unrecognized: Vec<UnrecognizedRecord>,
    /// Photos and files, with what this phone holds of each.
    pub attachments: Vec<AttachmentRecord>,
}

/// A file attached to a record, and what this phone holds of it.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct AttachmentRecord {
    /// SHA-256 of the content (hex): the name to fetch it by.
    pub hash: String,
    pub mime: String,
    pub size: u64,
    pub caption: String,
    pub by: String,
    pub at: i64,
    /// `here` (on this phone), `unsent` (here, not yet on the server),
    /// `partial` (a download in progress) or `missing` (fetch it).
    pub state: String,
    /// Where the file is on this phone, when it is here (for image
    /// views); none in an encrypted store (read it with `read_file`).
    pub local_path: Option<String>,
}

impl AttachmentRecord {
    fn of(store: &Store, a: gridsync_core::Attachment) -> Self {
        Self::of_file(store, a.file, a.by, a.at)
    }

    fn of_file(store: &Store, file: gridsync_core::AttachmentRef, by: String, at: i64) -> Self {
        let state = gridsync_core::FileHash::parse(&file.hash)
            .and_then(|h| store.file_state(&h))
            .unwrap_or(FileState::Missing);
        let (state, local_path) = match state {
            FileState::Here { path, unsent } => (
                if unsent { "unsent" } else { "here" },
                // An encrypted store's file is sealed: no path to show.
                (!store.files().is_sealed()).then(|| path.display().to_string()),
            ),
            FileState::Partial { .. } => ("partial", None),
            FileState::Missing => ("missing", None),
        };
        AttachmentRecord {
            hash: file.hash,
            mime: file.mime,
            size: file.size,
            caption: file.caption,
            by,
            at,
            state: state.to_owned(),
            local_path,
        }
    }
}

/// Where a file is attached.
#[derive(Clone, Debug, uniffi::Enum)]
pub enum AttachTarget {
    Issue {
        id: String,
    },
    Meeting {
        id: String,
    },
    /// Evidence on a meeting's action item.
    Evidence {
        meeting: String,
        item: String,
    },
}

/// What sending this phone's files did.
#[derive(Clone, Debug, uniffi::Record)]
pub struct FilesReportRecord {
    /// Files the server now holds.
    pub stored: u32,
    pub chunks_sent: u32,
    /// Files left for a later sync (their record is not on the server
    /// yet, or the server refused them).
    pub left: u32,
}

/// A field and value written by a newer app.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct UnrecognizedRecord {
    pub field: String,
    pub value: String,
}

impl UnrecognizedRecord {
    fn all(values: Vec<gridsync_core::Unrecognized>) -> Vec<Self> {
        values
            .into_iter()
            .map(|u| UnrecognizedRecord {
                field: u.field,
                value: u.value,
            })
            .collect()
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Str(s) => s.clone(),
        Value::Int(i) | Value::Time(i) => i.to_string(),
        Value::F64(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
    }
}

impl IssueRecord {
    /// The view as the app sees it; overdue judged at `now` (the store's
    /// clock).
    fn from_view(v: IssueView, store: &Store) -> Self {
        let now = store.now_ms();
        IssueRecord {
            attachments: v
                .attachments
                .iter()
                .cloned()
                .map(|a| AttachmentRecord::of(store, a))
                .collect(),
            id: v.id.to_string(),
            overdue: v.is_overdue(now),
            extension_requested: v.extension_requested,
            case_no: v.case_no,
            external_ref: v.external_ref,
            title: v.title,
            kind: v.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
            category: v.category,
            urgency: v.urgency.map(|u| u.as_str().to_owned()).unwrap_or_default(),
            status: v.status.as_str().to_owned(),
            status_candidates: v
                .status_conflict
                .map(|c| {
                    c.candidates
                        .iter()
                        .map(|c| c.status.as_str().to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            register_conflicts: v
                .register_conflicts
                .iter()
                .map(RegisterConflictRecord::of)
                .collect(),
            street: v.location.street,
            community: v.location.community,
            grid: v.location.grid,
            address: v.location.address,
            description: v.description,
            reporter: ReporterRecord {
                name: v.reporter.name,
                phone: v.reporter.phone,
                anonymous: v.reporter.anonymous,
                may_call_back: v.reporter.may_call_back,
            },
            assignee: v.assignee,
            effective_deadline: v.effective_deadline,
            tags: v.tags.into_iter().collect(),
            timeline: v
                .timeline
                .into_iter()
                .map(|t| TimelineRecord {
                    kind: t.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
                    text: t.text,
                    by: t.by,
                    at: t.at,
                })
                .collect(),
            transitions: v
                .transitions
                .into_iter()
                .map(|t| TransitionRecord {
                    from: t.event.from,
                    to: t.event.to,
                    by: t.event.by,
                    role: t.event.role,
                    reason: t.event.reason,
                    at: t.event.at,
                    applied: t.applied,
                })
                .collect(),
            unrecognized: UnrecognizedRecord::all(v.unrecognized),
        }
    }
}

/// Which records to list. Empty fields do not filter (every field may be
/// left out).
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct ListQuery {
    /// issue or meeting.
    #[uniffi(default = None)]
    pub kind: Option<String>,
    #[uniffi(default = None)]
    pub grid: Option<String>,
    #[uniffi(default = None)]
    pub status: Option<String>,
    #[uniffi(default = None)]
    pub open: Option<bool>,
    #[uniffi(default = None)]
    pub overdue: Option<bool>,
    /// In the last quarter of the time to its deadline.
    #[uniffi(default = None)]
    pub due_soon: Option<bool>,
    #[uniffi(default = None)]
    pub conflict: Option<bool>,
    /// Search terms: every one must occur in the title, description,
    /// address, notes, case or work-order number (the office search's
    /// matching; partial Chinese words match).
    #[uniffi(default = None)]
    pub text: Option<String>,
    /// updated (default), deadline or created.
    #[uniffi(default = None)]
    pub sort: Option<String>,
    #[uniffi(default = 0)]
    pub offset: u32,
    /// 0 means 50.
    #[uniffi(default = 0)]
    pub limit: u32,
}

impl ListQuery {
    fn query(self) -> Result<Query> {
        let mut q = match self.kind.as_deref() {
            None => Query::default(),
            Some("issue") => Query::issues(),
            Some("meeting") => Query::meetings(),
            Some(other) => return Err(invalid("kind", other)),
        };
        q.grid = self.grid;
        q.statuses = self.status.into_iter().collect();
        q.open = self.open;
        q.overdue = self.overdue;
        q.due_soon = self.due_soon;
        q.conflict = self.conflict;
        q.text = self.text.filter(|t| !t.trim().is_empty());
        q.sort = match self.sort.as_deref() {
            None | Some("updated") => Sort::UpdatedDesc,
            Some("deadline") => Sort::DeadlineAsc,
            Some("created") => Sort::CreatedAsc,
            Some(other) => return Err(invalid("sort", other)),
        };
        q.offset = self.offset as usize;
        q.limit = if self.limit == 0 {
            50
        } else {
            self.limit as usize
        };
        Ok(q)
    }
}

/// How many records of a list are in one status (for badges).
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct StatusCount {
    pub status: String,
    pub count: u64,
}

/// One line of a list.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Summary {
    pub id: String,
    pub kind: String,
    pub number: String,
    pub title: String,
    pub grid: String,
    pub status: String,
    pub open: bool,
    pub deadline: Option<i64>,
    pub conflict: bool,
    pub updated_at: i64,
    /// Fields holding values a newer app wrote that this build does not know.
    pub unrecognized: Vec<String>,
    /// This phone changed it and the server has not acknowledged the
    /// change yet ("not yet uploaded").
    pub pending: bool,
}

/// A page of a list and how many records matched in all.
#[derive(Clone, Debug, uniffi::Record)]
pub struct SummaryPage {
    pub total: u64,
    pub items: Vec<Summary>,
}

/// A push the server refused; its local changes stay pending.
#[derive(Clone, Debug, uniffi::Record)]
pub struct Refusal {
    pub id: String,
    pub code: String,
    pub message: String,
}

/// What a sync did.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct SyncReportRecord {
    pub rounds: u32,
    pub pushed: u32,
    pub accepted: u32,
    pub pulled: u32,
    pub dropped: u32,
    /// Records whose server copy could not be merged (the phone was
    /// restored from an old backup) and were rebuilt from it with this
    /// phone's unsynced work re-authored on top.
    pub rebased: u32,
    /// Times the server turned out to run a log this phone did not know
    /// (restored from a backup): every change of this phone was offered
    /// again and the feed started over.
    pub reoffered: u32,
    pub refused: Vec<Refusal>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The server's order for this device: `retire` (the worker left: the
    /// store is erased once everything is uploaded) or `wipe` (erased at
    /// once, pending work too).
    pub device_order: Option<String>,
    /// The store was erased: every record, file and pending change is
    /// gone. Delete the store's key and show enrollment; open the store
    /// again before enrolling it anew.
    pub erased: bool,
    /// Records with work the server never received that the erase took
    /// (a wipe's).
    pub discarded: u32,
    /// The server was told of the erase. When it was not, keep the token
    /// and `sync` again later (the order comes again and the report goes
    /// with it); when it was, delete the token too.
    pub erase_reported: bool,
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl From<SyncReport> for SyncReportRecord {
    fn from(r: SyncReport) -> Self {
        SyncReportRecord {
            rounds: count(r.rounds),
            pushed: count(r.pushed),
            accepted: count(r.accepted),
            pulled: count(r.pulled),
            dropped: count(r.dropped),
            rebased: count(r.rebased),
            reoffered: count(r.reoffered),
            refused: r
                .refused
                .into_iter()
                .map(|(id, code, message)| Refusal {
                    id: id.to_string(),
                    code,
                    message,
                })
                .collect(),
            bytes_sent: r.bytes_sent as u64,
            device_order: None,
            erased: false,
            discarded: 0,
            erase_reported: false,
            bytes_received: r.bytes_received as u64,
        }
    }
}

/// Progress of a running sync.
#[derive(Clone, Debug, Default, uniffi::Record)]
pub struct SyncProgress {
    pub rounds: u32,
    pub pushed: u32,
    pub pulled: u32,
    pub bytes_received: u64,
    /// File chunks sent so far (after the records, `sync` sends this
    /// phone's unsent files).
    pub file_chunks_sent: u32,
    /// File chunks downloaded so far, and of how many (`fetch_file`).
    pub file_chunks_received: u32,
    pub file_chunks_total: u32,
}

impl From<&Progress> for SyncProgress {
    fn from(p: &Progress) -> Self {
        SyncProgress {
            rounds: count(p.rounds),
            pushed: count(p.pushed),
            pulled: count(p.pulled),
            bytes_received: p.bytes_received as u64,
            file_chunks_sent: 0,
            file_chunks_received: 0,
            file_chunks_total: 0,
        }
    }
}

/// The device's identity after enrollment. The store has taken
/// `device_code` already (new case numbers carry it; no reopening).
#[derive(Clone, Debug, uniffi::Record)]
pub struct EnrollmentRecord {
    pub device_id: String,
    pub device_code: String,
    pub token: String,
    /// The worker this phone acts for and the role it acts in: the author
    /// of every operation it records (the server refuses anyone else's).
    pub worker: String,
    pub role: String,
}

// ------------------------------------------------------------ callbacks

/// Called after every round of a sync.
#[uniffi::export(callback_interface)]
pub trait ProgressListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

/// Receives a live query's result page: once at registration, then
/// whenever a local write (on any thread) or a sync round changes it — at
/// most once per write batch or round, on the store's delivery thread
/// (never the caller's; post to the UI thread from here).
#[uniffi::export(callback_interface)]
pub trait LiveQueryListener: Send + Sync {
    fn on_result(&self, page: SummaryPage);
}

/// A registered live query; `stop()` (or closing or dropping the handle)
/// ends it: when that returns no callback runs and none will.
#[derive(uniffi::Object)]
pub struct LiveQuery {
    store: Arc<Store>,
    id: u64,
}

impl std::fmt::Debug for LiveQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQuery").field("id", &self.id).finish()
    }
}

#[uniffi::export]
impl LiveQuery {
    /// Stops the query (again: nothing). Closing the handle (Kotlin
    /// `close()`/`use`, Python `del`, Swift releasing it) does the same.
    pub fn stop(&self) {
        self.store.unwatch(self.id);
    }
}

impl Drop for LiveQuery {
    fn drop(&mut self) {
        self.store.unwatch(self.id);
    }
}

/// Called when a sync brought changes to records, with their ids, so the
/// UI can refresh. Called on the thread that ran the sync. (Live queries
/// also see the app's own writes.)
#[uniffi::export(callback_interface)]
pub trait ChangeListener: Send + Sync {
    fn on_change(&self, ids: Vec<String>);
}

// ------------------------------------------------------------ the store

/// A device's store of issues and meetings.
#[derive(uniffi::Object)]
pub struct GridStore {
    store: Arc<Store>,
    listeners: Mutex<Vec<Box<dyn ChangeListener>>>,
    /// One sync at a time: a sync waits for one in progress (a cancelled
    /// one finishing its round, say).
    syncing: Mutex<()>,
}

impl GridStore {
    /// Opens the store; a phone's store keeps search texts, so lists find
    /// records by what is written in them.
    fn with_config(mut config: StoreConfig) -> Result<Arc<Self>> {
        config.search = true;
        Ok(Arc::new(GridStore {
            store: Arc::new(Store::open(config)?),
            listeners: Mutex::new(Vec::new()),
            syncing: Mutex::new(()),
        }))
    }

    /// `sync`, stopping before its next round (or before the files) once
    /// `cancel` is set: what was merged stays, durably.
    fn sync_until(
        &self,
        url: String,
        token: String,
        progress: Option<Box<dyn ProgressListener>>,
        cancel: &AtomicBool,
    ) -> Result<SyncReportRecord> {
        guard(|| {
            let _one = self.syncing.lock().unwrap_or_else(PoisonError::into_inner);
            // The records' progress, then the files' on top of the last one.
            let last = Mutex::new(None::<SyncProgress>);
            let mut changed = Vec::new();
            let done = gridsync_core::http::sync_device(
                &self.store,
                &url,
                &token,
                || {
                    if cancel.load(Ordering::SeqCst) {
                        return Err(gridsync_core::Error::Cancelled);
                    }
                    Ok(())
                },
                |p| {
                    let p = SyncProgress::from(p);
                    if let Some(l) = &progress {
                        l.on_progress(p.clone());
                    }
                    *last.lock().unwrap_or_else(PoisonError::into_inner) = Some(p);
                },
                |sent| {
                    if let Some(l) = &progress {
                        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                        let p = last.get_or_insert_with(SyncProgress::default);
                        p.file_chunks_sent = count(sent);
                        l.on_progress(p.clone());
                    }
                },
                &mut changed,
            );
            // (After an erase, live queries were called back by it.)
            self.notify(changed);
            let done = done?;
            let mut record = done.report.map(SyncReportRecord::from).unwrap_or_default();
            record.device_order = done.order.map(|o| o.as_str().to_owned());
            record.erased = done.obeyed.erased;
            record.discarded = count(done.obeyed.discarded);
            record.erase_reported = done.obeyed.reported;
            Ok(record)
        })
    }

    fn watch(
        &self,
        what: gridsync_core::store::Watched,
        listener: Box<dyn LiveQueryListener>,
    ) -> Result<Arc<LiveQuery>> {
        // Weak: the store holds the callback, which must not hold it.
        let store = Arc::downgrade(&self.store);
        let id = self.store.watch(
            what,
            Box::new(move |page| {
                if let Some(store) = store.upgrade() {
                    if let Ok(page) = summaries(&store, page) {
                        listener.on_result(page);
                    }
                }
            }),
        )?;
        Ok(Arc::new(LiveQuery {
            store: self.store.clone(),
            id,
        }))
    }

    /// Tells the listeners which records a sync changed (as the core
    /// client reports them).
    fn notify(&self, changed: Vec<RecordId>) {
        let ids: Vec<String> = changed.iter().map(RecordId::to_string).collect();
        if !ids.is_empty() {
            let listeners = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for l in listeners.iter() {
                l.on_change(ids.clone());
            }
        }
    }
}

impl std::fmt::Debug for GridStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridStore")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

#[uniffi::export]
impl GridStore {
    /// Opens (or creates) the store in the directory `path`. Before
    /// enrollment pass `""`: `enroll` gives the store the code the server
    /// assigns, and an enrolled store keeps that code whatever is passed
    /// here (a store opened with a code of its own, as apps did before,
    /// uses that code until it is enrolled).
    #[uniffi::constructor]
    pub fn open(path: String, device_code: String) -> Result<Arc<Self>> {
        guard(|| GridStore::with_config(StoreConfig::new(path, device_code)))
    }

    /// Like [`GridStore::open`], with the district's deadline table as
    /// JSON (`{"urgency_hours": {"red": 2, "yellow": 24, "blue": 72},
    /// "categories": {"safety.fire": {"yellow": 4}}}`): the hours a case
    /// gets when its urgency or category is set on this phone.
    #[uniffi::constructor]
    pub fn open_with_deadlines(
        path: String,
        device_code: String,
        deadline_table_json: String,
    ) -> Result<Arc<Self>> {
        guard(|| {
            let mut config = StoreConfig::new(path, device_code);
            config.deadlines = gridsync_core::DeadlineTable::from_json(&deadline_table_json)?;
            GridStore::with_config(config)
        })
    }

    /// Opens (or creates) the store in `path` as `options` say: the
    /// device code, the deadline table, and encryption at rest.
    ///
    /// With `key` (32 bytes the app keeps in the Android Keystore or iOS
    /// Keychain; see the README), the store is encrypted: a new store is
    /// created encrypted, a plain one is encrypted now, an encrypted one
    /// opens only with its key (error code `wrong_key` otherwise, and
    /// nothing is touched). To rotate, pass the new key as `key` and the
    /// old one as `previous_key`: the store is rewritten under the new key
    /// before it opens, and a crash meanwhile leaves it opening with one
    /// of the two.
    #[uniffi::constructor]
    pub fn open_with(path: String, options: StoreOptions) -> Result<Arc<Self>> {
        guard(|| {
            let mut config = StoreConfig::new(path, options.device_code);
            if let Some(json) = options.deadline_table_json {
                config.deadlines = gridsync_core::DeadlineTable::from_json(&json)?;
            }
            config.key = options.key.map(store_key).transpose()?;
            config.previous_key = options.previous_key.map(store_key).transpose()?;
            GridStore::with_config(config)
        })
    }

    /// The store's Automerge actor, hex (what enrollment registers).
    pub fn actor(&self) -> String {
        self.store.actor().to_hex_string()
    }

    /// The code new case numbers start with (empty before enrollment).
    pub fn device_code(&self) -> String {
        self.store.device_code()
    }

    /// Whether enrollment gave this store its code.
    pub fn is_enrolled(&self) -> Result<bool> {
        guard(|| Ok(self.store.is_enrolled()?))
    }

    /// Enrolls this store with a one-time code; the store takes the
    /// device code the server assigned at once, durably. A store enrolled
    /// before is refused with `already_enrolled` (the code stays unused).
    /// **Blocks** on the network.
    pub fn enroll(&self, url: String, code: String) -> Result<EnrollmentRecord> {
        guard(|| {
            let e = gridsync_core::http::enroll(&url, &code, &self.store)?;
            Ok(EnrollmentRecord {
                device_id: e.device_id,
                device_code: e.device_code,
                token: e.token,
                worker: e.worker,
                role: e.role.as_str().to_owned(),
            })
        })
    }

    /// Records a new issue; returns its id.
    pub fn create_issue(&self, author: AuthorRecord, new: NewIssueRecord) -> Result<String> {
        guard(|| {
            let issue = NewIssue {
                source: parse("source", &new.source, Source::parse)?,
                external_ref: new.external_ref,
                original_statement: new.original_statement,
                capture_geo: None,
                title: new.title,
                kind: parse("kind", &new.kind, IssueKind::parse)?,
                category: new.category,
                urgency: parse("urgency", &new.urgency, Urgency::parse)?,
                reporter: Reporter {
                    name: new.reporter.name,
                    phone: new.reporter.phone,
                    anonymous: new.reporter.anonymous,
                    may_call_back: new.reporter.may_call_back,
                },
                location: Location {
                    street: new.street,
                    community: new.community,
                    grid: new.grid,
                    building: new.building,
                    address: new.address,
                    geo: None,
                },
                description: new.description,
                report: new.report,
            };
            Ok(self
                .store
                .report_issue(&author.author()?, issue)?
                .to_string())
        })
    }

    /// Applies a typed operation to an issue.
    pub fn update_issue(&self, id: String, author: AuthorRecord, op: IssueOperation) -> Result<()> {
        guard(|| {
            self.store
                .act_on_issue(self::id(&id)?, &author.author()?, op.op()?)?;
            Ok(())
        })
    }

    /// Applies any `IssueOp` given as JSON: `{"op": "set_urgency", "args": "red"}`.
    pub fn update_issue_json(&self, id: String, author: AuthorRecord, op: String) -> Result<()> {
        guard(|| {
            let op: IssueOp = serde_json::from_str(&op)
                .map_err(|e| GridsyncError::new("invalid_json", e.to_string()))?;
            self.store
                .act_on_issue(self::id(&id)?, &author.author()?, op)?;
            Ok(())
        })
    }

    /// Convenes a meeting; returns its id.
    pub fn create_meeting(
        &self,
        author: AuthorRecord,
        meeting: NewMeetingRecord,
    ) -> Result<String> {
        guard(|| {
            Ok(self
                .store
                .convene_meeting(&author.author()?, meeting.new_meeting()?)?
                .to_string())
        })
    }

    /// Applies a typed operation to a meeting.
    pub fn update_meeting(
        &self,
        id: String,
        author: AuthorRecord,
        op: MeetingOperation,
    ) -> Result<()> {
        guard(|| {
            self.store
                .act_on_meeting(self::id(&id)?, &author.author()?, op.op()?)?;
            Ok(())
        })
    }

    /// A meeting with everything the app shows.
    pub fn meeting(&self, id: String) -> Result<MeetingRecord> {
        guard(|| {
            let view = self.store.meeting(self::id(&id)?)?;
            Ok(MeetingRecord::from_view(view, &self.store))
        })
    }

    /// Convenes a meeting from its JSON description (`NewMeeting`); returns
    /// its id. (For tools; apps use `create_meeting`.)
    pub fn create_meeting_json(&self, author: AuthorRecord, meeting: String) -> Result<String> {
        guard(|| {
            let new = serde_json::from_str(&meeting)
                .map_err(|e| GridsyncError::new("invalid_json", e.to_string()))?;
            Ok(self
                .store
                .convene_meeting(&author.author()?, new)?
                .to_string())
        })
    }

    /// Applies any `MeetingOp` given as JSON.
    pub fn update_meeting_json(&self, id: String, author: AuthorRecord, op: String) -> Result<()> {
        guard(|| {
            let op: MeetingOp = serde_json::from_str(&op)
                .map_err(|e| GridsyncError::new("invalid_json", e.to_string()))?;
            self.store
                .act_on_meeting(self::id(&id)?, &author.author()?, op)?;
            Ok(())
        })
    }

    /// An issue with everything the app shows.
    pub fn issue(&self, id: String) -> Result<IssueRecord> {
        guard(|| {
            let view = self.store.issue(self::id(&id)?)?;
            Ok(IssueRecord::from_view(view, &self.store))
        })
    }

    /// A meeting's full view, as JSON.
    pub fn meeting_json(&self, id: String) -> Result<String> {
        guard(|| {
            let view = self.store.meeting(self::id(&id)?)?;
            serde_json::to_string(&view).map_err(|e| GridsyncError::new("internal", e.to_string()))
        })
    }

    /// Lists records with filters, sorting and paging.
    pub fn list(&self, query: ListQuery) -> Result<SummaryPage> {
        guard(|| summary_page(&self.store, &query.query()?))
    }

    /// Registers a live list: `listener` receives the page now and
    /// whenever it changes (see `LiveQueryListener`).
    pub fn watch_list(
        &self,
        query: ListQuery,
        listener: Box<dyn LiveQueryListener>,
    ) -> Result<Arc<LiveQuery>> {
        guard(|| {
            self.watch(
                gridsync_core::store::Watched::List(Box::new(query.query()?)),
                listener,
            )
        })
    }

    /// Registers a live record: a page of its list line (empty once it is
    /// gone), now and whenever it changes; read the record itself with
    /// `issue` or `meeting` from the callback.
    pub fn watch_record(
        &self,
        id: String,
        listener: Box<dyn LiveQueryListener>,
    ) -> Result<Arc<LiveQuery>> {
        guard(|| {
            self.watch(
                gridsync_core::store::Watched::Record(self::id(&id)?),
                listener,
            )
        })
    }

    /// How many records matching `query` (paging ignored) are in each
    /// status, for a badge ("3 to sign for").
    pub fn status_counts(&self, query: ListQuery) -> Result<Vec<StatusCount>> {
        guard(|| {
            Ok(self
                .store
                .count_by_status(&query.query()?)?
                .into_iter()
                .map(|(status, n)| StatusCount {
                    status,
                    count: n as u64,
                })
                .collect())
        })
    }
}

/// A page of `q` as the app lists it, each line marked when it awaits
/// upload.
fn summary_page(store: &Store, q: &Query) -> Result<SummaryPage> {
    summaries(store, store.list(q)?)
}

/// A page of index entries as the app lists them.
fn summaries(store: &Store, page: gridsync_core::Page) -> Result<SummaryPage> {
    let pending: std::collections::HashSet<RecordId> =
        store.pending()?.into_iter().map(|p| p.id).collect();
    Ok(SummaryPage {
        total: page.total as u64,
        items: page
            .items
            .into_iter()
            .map(|m| Summary {
                pending: pending.contains(&m.record_id()),
                id: m.record_id().to_string(),
                kind: m.kind,
                number: m.number,
                title: m.title,
                grid: m.grid,
                status: m.status,
                open: m.open,
                deadline: m.deadline,
                conflict: m.conflict,
                updated_at: m.updated_at,
                unrecognized: m.unrecognized,
            })
            .collect(),
    })
}

#[uniffi::export]
impl GridStore {
    /// Records with local changes the server has not acknowledged.
    pub fn pending_count(&self) -> Result<u64> {
        guard(|| Ok(self.store.pending()?.len() as u64))
    }

    /// Syncs with the server until nothing is left. **Blocks** on the
    /// network; `progress` is called after every round. (`sync_async` is
    /// the suspending form.)
    pub fn sync(
        &self,
        url: String,
        token: String,
        progress: Option<Box<dyn ProgressListener>>,
    ) -> Result<SyncReportRecord> {
        self.sync_until(url, token, progress, &AtomicBool::new(false))
    }

    /// Attaches the file at `path` (the photo just taken) to a record: the
    /// bytes are copied into the store (streamed, verified by hash) and the
    /// record references them; the next `sync` sends them. Files over
    /// 20 MiB are refused (`file_too_large`).
    pub fn attach_file(
        &self,
        to: AttachTarget,
        author: AuthorRecord,
        path: String,
        mime: String,
        caption: String,
    ) -> Result<AttachmentRecord> {
        guard(|| {
            let to = match to {
                AttachTarget::Issue { id } => AttachTo::Issue(self::id(&id)?),
                AttachTarget::Meeting { id } => AttachTo::Meeting(self::id(&id)?),
                AttachTarget::Evidence { meeting, item } => AttachTo::Evidence {
                    meeting: self::id(&meeting)?,
                    item: self::id(&item)?,
                },
            };
            let author = author.author()?;
            let mut file = std::fs::File::open(&path).map_err(|e| {
                GridsyncError::new("invalid_input", format!("cannot read {path}: {e}"))
            })?;
            let attached = self.store.attach_file(
                to,
                &author,
                &mut file,
                &mime,
                &caption,
                None,
                gridsync_core::files::DEFAULT_MAX_FILE_BYTES,
            )?;
            Ok(AttachmentRecord::of_file(
                &self.store,
                attached,
                author.user.clone(),
                self.store.now_ms(),
            ))
        })
    }

    /// Where the file `hash` is on this phone, if it is here. An
    /// encrypted store's files are sealed: there this fails with
    /// `invalid_input`; read them with `read_file`.
    pub fn file_path(&self, hash: String) -> Result<Option<String>> {
        guard(|| {
            let hash = gridsync_core::FileHash::parse(&hash)?;
            if self.store.files().is_sealed() {
                return Err(gridsync_core::Error::InvalidInput {
                    field: "hash",
                    reason: "this store is encrypted: read its files with read_file".into(),
                }
                .into());
            }
            Ok(match self.store.file_state(&hash)? {
                FileState::Here { path, .. } => Some(path.display().to_string()),
                _ => None,
            })
        })
    }

    /// The content of the file `hash` if it is here (`file_not_found`
    /// otherwise: `fetch_file` first): decrypted in an encrypted store.
    /// Files are at most 20 MiB.
    pub fn read_file(&self, hash: String) -> Result<Vec<u8>> {
        guard(|| {
            let hash = gridsync_core::FileHash::parse(&hash)?;
            Ok(self
                .store
                .files()
                .read_all(&hash, gridsync_core::files::DEFAULT_MAX_FILE_BYTES)?)
        })
    }

    /// The local path of the file `hash` (of `size` bytes, as its
    /// attachment says), downloading it first if needed — resuming a
    /// download cut off earlier. **Blocks** on the network; `progress`
    /// is called after every chunk. In an encrypted store the file at
    /// that path is sealed: show it with `read_file`.
    pub fn fetch_file(
        &self,
        url: String,
        token: String,
        hash: String,
        size: u64,
        progress: Option<Box<dyn ProgressListener>>,
    ) -> Result<String> {
        guard(|| {
            let hash = gridsync_core::FileHash::parse(&hash)?;
            let path = gridsync_core::http::fetch_file(
                &self.store,
                &url,
                &token,
                &hash,
                size,
                |held, of| {
                    if let Some(l) = &progress {
                        l.on_progress(SyncProgress {
                            rounds: 0,
                            pushed: 0,
                            pulled: 0,
                            bytes_received: 0,
                            file_chunks_sent: 0,
                            file_chunks_received: held,
                            file_chunks_total: of,
                        });
                    }
                },
            )?;
            Ok(path.display().to_string())
        })
    }

    /// Downloads the photos and files of this phone's records that it
    /// does not hold, newest records first, up to `budget_bytes` more: call
    /// it on Wi-Fi so the worker's grid is ready offline. **Blocks** on the
    /// network. Returns how many files were fetched.
    pub fn prefetch_files(&self, url: String, token: String, budget_bytes: u64) -> Result<u32> {
        guard(|| {
            let n = gridsync_core::http::prefetch_files(&self.store, &url, &token, budget_bytes)?;
            Ok(count(n))
        })
    }

    /// Sends this phone's unsent files (`sync` does this after the
    /// records). **Blocks** on the network.
    pub fn upload_files(&self, url: String, token: String) -> Result<FilesReportRecord> {
        guard(|| {
            let r = gridsync_core::http::upload_files(&self.store, &url, &token, |_| {})?;
            Ok(FilesReportRecord {
                stored: count(r.stored),
                chunks_sent: count(r.chunks_sent),
                left: count(r.left),
            })
        })
    }

    /// Drops downloaded files, least recently used first, until the
    /// store's files take at most `cap_bytes`; files not yet sent are
    /// kept whatever the cap. Returns the bytes freed.
    pub fn evict_files(&self, cap_bytes: u64) -> Result<u64> {
        guard(|| Ok(self.store.evict_files(cap_bytes)?))
    }

    /// A sync driven by the app's own HTTP stack.
    pub fn sync_session(self: Arc<Self>) -> Arc<SyncSession> {
        Arc::new(SyncSession {
            client: Mutex::new(Client::new(self.store.clone())),
            store: self,
        })
    }

    /// Registers a listener for records changed by syncs.
    pub fn add_change_listener(&self, listener: Box<dyn ChangeListener>) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }
}

/// The suspending forms (Kotlin `suspend`, Swift `async`) of the calls
/// that wait on the network. Each runs on a thread of its own, so the
/// caller's thread (a coroutine dispatcher, the main actor) never blocks;
/// cancelling the coroutine or task stops a sync before its next round
/// (code `cancelled`; what was merged stays, and the next sync goes on).
#[uniffi::export]
impl GridStore {
    pub async fn sync_async(
        self: Arc<Self>,
        url: String,
        token: String,
        progress: Option<Box<dyn ProgressListener>>,
    ) -> Result<SyncReportRecord> {
        off_thread(move |cancel| self.sync_until(url, token, progress, cancel)).await
    }

    pub async fn enroll_async(
        self: Arc<Self>,
        url: String,
        code: String,
    ) -> Result<EnrollmentRecord> {
        off_thread(move |_| self.enroll(url, code)).await
    }

    pub async fn fetch_file_async(
        self: Arc<Self>,
        url: String,
        token: String,
        hash: String,
        size: u64,
        progress: Option<Box<dyn ProgressListener>>,
    ) -> Result<String> {
        off_thread(move |_| self.fetch_file(url, token, hash, size, progress)).await
    }

    pub async fn upload_files_async(
        self: Arc<Self>,
        url: String,
        token: String,
    ) -> Result<FilesReportRecord> {
        off_thread(move |_| self.upload_files(url, token)).await
    }

    pub async fn prefetch_files_async(
        self: Arc<Self>,
        url: String,
        token: String,
        budget_bytes: u64,
    ) -> Result<u32> {
        off_thread(move |_| self.prefetch_files(url, token, budget_bytes)).await
    }
}

/// What [`OffThread`] hands from its thread to its poller.
struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

/// A future over work that blocks, done on a thread of its own; dropping
/// it (a cancelled coroutine) sets the work's cancel flag.
struct OffThread<T> {
    slot: Arc<Mutex<Slot<Result<T>>>>,
    cancel: Arc<AtomicBool>,
}

fn off_thread<T: Send + 'static>(
    work: impl FnOnce(&AtomicBool) -> Result<T> + Send + 'static,
) -> OffThread<T> {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
    }));
    let cancel = Arc::new(AtomicBool::new(false));
    let (to, flag) = (slot.clone(), cancel.clone());
    let spawned = std::thread::Builder::new()
        .name("gridsync-call".into())
        .spawn(move || {
            let result = guard(|| work(&flag));
            let mut s = to.lock().unwrap_or_else(PoisonError::into_inner);
            s.value = Some(result);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
    if let Err(e) = spawned {
        slot.lock().unwrap_or_else(PoisonError::into_inner).value = Some(Err(GridsyncError::new(
            "io",
            format!("no thread for the call: {e}"),
        )));
    }
    OffThread { slot, cancel }
}

impl<T> Future for OffThread<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match s.value.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for OffThread<T> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// One sync, one request at a time, over the app's own transport.
#[derive(uniffi::Object)]
pub struct SyncSession {
    store: Arc<GridStore>,
    client: Mutex<Client<Arc<Store>>>,
}

impl std::fmt::Debug for SyncSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSession").finish_non_exhaustive()
    }
}

#[uniffi::export]
impl SyncSession {
    /// The next request's body.
    pub fn make_request(&self) -> Result<Vec<u8>> {
        guard(|| {
            let mut client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(client.make_request()?)
        })
    }

    /// Applies the server's answer; true if another round is needed.
    pub fn apply_response(&self, response: Vec<u8>) -> Result<bool> {
        guard(|| {
            let mut client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
            let more = client.apply_response(&response);
            let changed = client.take_changed();
            drop(client);
            self.store.notify(changed);
            Ok(more?)
        })
    }

    /// What the session did so far.
    pub fn report(&self) -> SyncReportRecord {
        let client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        client.report().clone().into()
    }
}

/// Makes `sync` and `enroll` over `https://` trust only the certificate(s)
/// in `pem` (a server with its own certificate); `None` goes back to the
/// usual web roots. Applies to the whole process.
#[uniffi::export]
pub fn pin_certificate(pem: Option<String>) -> Result<()> {
    guard(|| {
        Ok(gridsync_core::http::pin_certificate(
            pem.as_deref().map(str::as_bytes),
        )?)
    })
}

/// A fresh record id, for an action item the app adds
/// (`MeetingOperation::AddActionItem`).
#[uniffi::export]
pub fn new_record_id() -> String {
    RecordId::new().to_string()
}

/// The library version, for apps to log.
#[uniffi::export]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The on-disk store format this library reads and writes.
#[uniffi::export]
pub fn store_format() -> u64 {
    gridsync_core::store::STORE_FORMAT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_version_and_format() {
        assert_eq!(version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(store_format(), gridsync_core::store::STORE_FORMAT);
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let r: Result<()> = guard(|| panic!("boom"));
        match r {
            Err(GridsyncError::Failed { code, .. }) => assert_eq!(code, "panic"),
            Ok(()) => panic!("no error"),
        }
    }
}
