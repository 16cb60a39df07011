//! Issues (cases): creation, typed operations and the read view.

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, ROOT};

use crate::doc::{
    self, am, check_len, string_enum, Fields, Move, RegisterConflict, Value, MAX_NOTE, MAX_SHORT,
    MAX_TEXT,
};
use crate::error::Result;
use crate::ids::{RecordId, RecordKind};
use crate::model::{read_geo, Attachment, AttachmentRef, Ctx, Geo, Location, Reporter, Source};
use crate::workflow::{self, clock_covers, EntryId, Event, IssueStatus, Status, StatusConflict};

string_enum! {
    /// What kind of matter a resident raised.
    IssueKind {
        Demand = "demand",
        Complaint = "complaint",
        HiddenDanger = "hidden_danger",
        Dispute = "dispute",
        Consultation = "consultation",
        Suggestion = "suggestion",
    }
}

string_enum! {
    /// How fast the matter must be handled.
    Urgency {
        /// Within 2 hours.
        Red = "red",
        /// Within 24 hours.
        Yellow = "yellow",
        /// Within 72 hours.
        Blue = "blue",
    }
}

impl Urgency {
    /// The handling time this urgency allows by the national default, in
    /// hours (a deployment's table may say otherwise: see
    /// [`crate::deadlines`]).
    pub fn hours(self) -> i64 {
        let d = crate::deadlines::DEFAULT_HOURS;
        match self {
            Urgency::Red => d.red,
            Urgency::Yellow => d.yellow,
            Urgency::Blue => d.blue,
        }
    }
}

string_enum! {
    /// How a case ended.
    Resolution {
        Resolved = "resolved",
        Partly = "partly",
        Unresolved = "unresolved",
        GuidedLegal = "guided_legal",
        NotInScope = "not_in_scope",
    }
}

string_enum! {
    /// Kinds of timeline entry.
    TimelineKind {
        Note = "note",
        Visit = "visit",
        Call = "call",
        Supervision = "supervision",
        Reminder = "reminder",
        /// A handler asks for more time ([`IssueOp::RequestExtension`]).
        ExtensionRequest = "extension_request",
        /// The office refuses a request ([`IssueOp::RefuseExtension`]).
        ExtensionRefused = "extension_refused",
    }
}

string_enum! {
    /// A resident's verdict at a return visit.
    Satisfaction {
        Satisfied = "satisfied",
        BasicallySatisfied = "basically_satisfied",
        Dissatisfied = "dissatisfied",
    }
}

string_enum! {
    /// How two issues relate.
    Relation {
        DuplicateOf = "duplicate_of",
        Parent = "parent",
        Related = "related",
    }
}

/// Everything needed to record a new issue. The store adds the id, the case
/// number, the author, the device and the time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewIssue {
    pub source: Source,
    /// The 12345 work-order number, when the case came from the hotline.
    pub external_ref: Option<String>,
    /// The resident's own words, kept unchanged.
    pub original_statement: String,
    pub capture_geo: Option<Geo>,
    pub title: String,
    pub kind: IssueKind,
    /// A taxonomy code.
    pub category: String,
    pub urgency: Urgency,
    pub reporter: Reporter,
    pub location: Location,
    pub description: String,
    /// File the case as reported at once; otherwise it starts as a draft.
    pub report: bool,
}

/// A typed operation on an issue. Each one is one Automerge transaction.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
#[non_exhaustive]
pub enum IssueOp {
    SetTitle(String),
    SetKind(IssueKind),
    SetCategory(String),
    SetUrgency(Urgency),
    SetReporter(Reporter),
    /// Changes the location's details; the scope (street, community,
    /// grid) changes only by [`crate::Store::move_record`].
    SetLocation(Location),
    SetAssignee(Option<String>),
    SetLeadUnit(Option<String>),
    SetReplyToCitizen(String),
    SetResolution {
        resolution: Option<Resolution>,
        summary: String,
    },
    /// Replaces the description; concurrent edits elsewhere in it survive.
    EditDescription(String),
    AddAssistUnit(String),
    RemoveAssistUnit(String),
    AddTag(String),
    RemoveTag(String),
    AddRelated(Relation, RecordId),
    RemoveRelated(Relation, RecordId),
    AddTimeline {
        kind: TimelineKind,
        text: String,
    },
    AddReturnVisit(NewReturnVisit),
    AddAttachment(AttachmentRef),
    ChangeDeadline {
        /// Milliseconds since the Unix epoch.
        due: i64,
        reason: String,
    },
    /// Asks for the deadline to move to `due` (a handler that needs more
    /// time); the case shows "extension requested" until the office
    /// grants or refuses it.
    RequestExtension {
        /// Milliseconds since the Unix epoch.
        due: i64,
        reason: String,
    },
    /// Grants a pending request: the deadline moves to `due` (the date
    /// asked for, or another the office decides).
    GrantExtension {
        request: EntryId,
        due: i64,
        reason: String,
    },
    /// Refuses a pending request; the deadline stays.
    RefuseExtension {
        request: EntryId,
        reason: String,
    },
    /// Moves the case along its workflow; refused if not allowed from the
    /// current status.
    Transition {
        to: IssueStatus,
        reason: String,
    },
    /// Settles a status conflict by confirming one of its candidates.
    ResolveStatusConflict {
        to: IssueStatus,
        reason: String,
    },
}

impl IssueOp {
    /// The name written into the change message.
    pub fn name(&self) -> &'static str {
        match self {
            IssueOp::SetTitle(_) => "set_title",
            IssueOp::SetKind(_) => "set_kind",
            IssueOp::SetCategory(_) => "set_category",
            IssueOp::SetUrgency(_) => "set_urgency",
            IssueOp::SetReporter(_) => "set_reporter",
            IssueOp::SetLocation(_) => "set_location",
            IssueOp::SetAssignee(_) => "set_assignee",
            IssueOp::SetLeadUnit(_) => "set_lead_unit",
            IssueOp::SetReplyToCitizen(_) => "set_reply_to_citizen",
            IssueOp::SetResolution { .. } => "set_resolution",
            IssueOp::EditDescription(_) => "edit_description",
            IssueOp::AddAssistUnit(_) => "add_assist_unit",
            IssueOp::RemoveAssistUnit(_) => "remove_assist_unit",
            IssueOp::AddTag(_) => "add_tag",
            IssueOp::RemoveTag(_) => "remove_tag",
            IssueOp::AddRelated(..) => "add_related",
            IssueOp::RemoveRelated(..) => "remove_related",
            IssueOp::AddTimeline { .. } => "add_timeline",
            IssueOp::AddReturnVisit(_) => "add_return_visit",
            IssueOp::AddAttachment(_) => "add_attachment",
            IssueOp::ChangeDeadline { .. } => "change_deadline",
            IssueOp::RequestExtension { .. } => "request_extension",
            IssueOp::GrantExtension { .. } => "grant_extension",
            IssueOp::RefuseExtension { .. } => "refuse_extension",
            IssueOp::Transition { .. } => "transition",
            IssueOp::ResolveStatusConflict { .. } => "resolve_status_conflict",
        }
    }
}

/// A return visit to be recorded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewReturnVisit {
    /// Whether the resident was reached.
    pub reached: bool,
    /// Whether the resident says the matter is resolved.
    pub resolved: bool,
    pub satisfaction: Option<Satisfaction>,
    pub note: String,
}

/// A timeline entry as read.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TimelineEntry {
    pub id: EntryId,
    pub kind: Option<TimelineKind>,
    pub text: String,
    pub by: String,
    pub role: String,
    pub at: i64,
    /// An extension request: the deadline asked for.
    pub due: Option<i64>,
    /// A refusal: the request it answers.
    pub answers: Option<EntryId>,
}

/// A return visit as read.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ReturnVisit {
    pub id: EntryId,
    pub reached: bool,
    pub resolved: bool,
    pub satisfaction: Option<Satisfaction>,
    pub note: String,
    pub by: String,
    pub at: i64,
}

/// A deadline change as read.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeadlineChange {
    pub id: EntryId,
    pub due: i64,
    pub reason: String,
    pub by: String,
    pub at: i64,
    /// A granted extension: the request it answers.
    pub answers: Option<EntryId>,
}

/// A status event with whether it was applied.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TransitionView {
    pub event: Event,
    pub applied: bool,
}

/// The typed read view of an issue, derived fields included.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IssueView {
    pub id: RecordId,
    pub case_no: String,
    pub external_ref: Option<String>,
    pub source: Option<Source>,
    pub original_statement: String,
    pub capture_geo: Option<Geo>,
    pub created_at: i64,
    pub created_by: String,
    /// The Automerge actor (hex) of the device that created the record.
    pub device: String,

    pub title: String,
    pub kind: Option<IssueKind>,
    pub category: String,
    pub urgency: Option<Urgency>,
    pub reporter: Reporter,
    pub location: Location,
    pub assignee: Option<String>,
    pub lead_unit: Option<String>,
    pub reply_to_citizen: String,
    pub resolution: Option<Resolution>,
    pub resolution_summary: String,
    pub description: String,

    pub assist_units: BTreeSet<String>,
    pub tags: BTreeSet<String>,
    pub related: BTreeSet<(Relation, RecordId)>,

    pub transitions: Vec<TransitionView>,
    pub timeline: Vec<TimelineEntry>,
    pub deadline_changes: Vec<DeadlineChange>,
    pub return_visits: Vec<ReturnVisit>,
    pub attachments: Vec<Attachment>,

    /// Derived from the transition log.
    pub status: IssueStatus,
    pub status_conflict: Option<StatusConflict<IssueStatus>>,
    /// Registers whose concurrent writers disagree.
    pub register_conflicts: Vec<RegisterConflict>,
    /// The latest deadline change, else creation time plus the urgency's hours.
    pub effective_deadline: Option<i64>,
    /// Timeline entries and attachments that the closing event had not seen.
    /// They never reopen the case by themselves.
    pub activity_after_close: Vec<EntryId>,
    /// Whether the office has put the case under supervision.
    pub supervised: bool,
    /// Extension requests that nobody has granted or refused yet.
    pub pending_extensions: Vec<EntryId>,
    /// Some extension request awaits the office's answer.
    pub extension_requested: bool,
    /// Values written by a newer app that this build does not know: kept,
    /// merged and synced, shown here (a status among them is not applied).
    pub unrecognized: Vec<doc::Unrecognized>,
}

/// One entry of a case's combined timeline: notes, visits, return visits,
/// deadline changes, attachments and status events in one list.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", content = "entry", rename_all = "snake_case")]
pub enum TimelineItem<'a> {
    Timeline(&'a TimelineEntry),
    ReturnVisit(&'a ReturnVisit),
    DeadlineChange(&'a DeadlineChange),
    Attachment(&'a Attachment),
    Status(&'a TransitionView),
}

impl TimelineItem<'_> {
    /// The author's clock when the entry was written (display order only).
    pub fn at(&self) -> i64 {
        match self {
            TimelineItem::Timeline(e) => e.at,
            TimelineItem::ReturnVisit(e) => e.at,
            TimelineItem::DeadlineChange(e) => e.at,
            TimelineItem::Attachment(e) => e.at,
            TimelineItem::Status(e) => e.event.at,
        }
    }
}

impl IssueView {
    /// Everything that happened to the case as one list, oldest first by
    /// the authors' clocks (entries at the same time keep the order of
    /// the kinds above, so every replica shows the same list).
    pub fn combined_timeline(&self) -> Vec<TimelineItem<'_>> {
        let mut items: Vec<TimelineItem<'_>> = self
            .timeline
            .iter()
            .map(TimelineItem::Timeline)
            .chain(self.return_visits.iter().map(TimelineItem::ReturnVisit))
            .chain(
                self.deadline_changes
                    .iter()
                    .map(TimelineItem::DeadlineChange),
            )
            .chain(self.attachments.iter().map(TimelineItem::Attachment))
            .chain(self.transitions.iter().map(TimelineItem::Status))
            .collect();
        items.sort_by_key(TimelineItem::at);
        items
    }

    /// Whether the case is past its deadline and still awaits handling.
    pub fn is_overdue(&self, now: i64) -> bool {
        is_overdue(self.status, self.effective_deadline, now)
    }

    /// Whether the case is about to breach its deadline at `now`.
    pub fn is_due_soon(&self, now: i64) -> bool {
        is_due_soon(self.status, self.created_at, self.effective_deadline, now)
    }

    /// Whether anything about the case awaits review.
    pub fn has_conflict(&self) -> bool {
        self.status_conflict.is_some() || !self.register_conflicts.is_empty()
    }
}

/// Overdue: past the deadline and not yet handled (a draft has no deadline
/// running yet).
pub fn is_overdue(status: IssueStatus, deadline: Option<i64>, now: i64) -> bool {
    deadline_runs(status) && deadline.is_some_and(|d| d < now)
}

/// About to breach: the deadline is running and has not passed, and the
/// last quarter of the case's window (from its registration to its
/// deadline) has begun. The office is warned before it is too late.
pub fn is_due_soon(status: IssueStatus, created_at: i64, deadline: Option<i64>, now: i64) -> bool {
    let Some(deadline) = deadline.filter(|_| deadline_runs(status)) else {
        return false;
    };
    let window = deadline.saturating_sub(created_at).max(0);
    now < deadline && now >= deadline.saturating_sub(window / 4)
}

/// Whether a case's deadline is running in this status (a draft's has
/// not started; a handled, closed or rejected case's has stopped).
pub fn deadline_runs(status: IssueStatus) -> bool {
    !matches!(
        status,
        IssueStatus::Draft | IssueStatus::Handled | IssueStatus::Closed | IssueStatus::Rejected
    )
}

const REGISTER_KEYS: &[&str] = &[
    "title",
    "kind",
    "category",
    "urgency",
    "assignee",
    "lead_unit",
    "reply_to_citizen",
    "resolution",
    "resolution_summary",
];

fn short(field: &'static str, s: &str) -> Result<Value> {
    check_len(field, s, MAX_SHORT)?;
    Ok(Value::Str(s.to_owned()))
}

/// Writes a new issue into an empty document.
pub(crate) fn create<T: Transactable>(
    tx: &mut T,
    ctx: Ctx<'_>,
    id: RecordId,
    case_no: &str,
    new: &NewIssue,
) -> Result<()> {
    check_len("original_statement", &new.original_statement, MAX_TEXT)?;
    check_len("description", &new.description, MAX_TEXT)?;
    tx.put(
        ROOT,
        doc::K_SCHEMA,
        ScalarValue::Int(doc::SCHEMA_VERSION as i64),
    )
    .map_err(am)?;
    tx.put(ROOT, doc::K_TYPE, RecordKind::Issue.as_str())
        .map_err(am)?;
    tx.put(ROOT, "id", id.to_string()).map_err(am)?;
    tx.put(ROOT, "case_no", case_no).map_err(am)?;
    if let Some(r) = &new.external_ref {
        check_len("external_ref", r, MAX_SHORT)?;
        tx.put(ROOT, "external_ref", r.as_str()).map_err(am)?;
    }
    tx.put(ROOT, "source", new.source.as_str()).map_err(am)?;
    tx.put(ROOT, "original_statement", new.original_statement.as_str())
        .map_err(am)?;
    if let Some(g) = new.capture_geo {
        tx.put(ROOT, "capture_lat", g.lat).map_err(am)?;
        tx.put(ROOT, "capture_lon", g.lon).map_err(am)?;
        tx.put(ROOT, "capture_acc", g.accuracy_m).map_err(am)?;
    }
    tx.put(ROOT, "created_at", ScalarValue::Timestamp(ctx.now))
        .map_err(am)?;
    tx.put(ROOT, "created_by", ctx.author.user.as_str())
        .map_err(am)?;
    tx.put(ROOT, "device", ctx.dev).map_err(am)?;

    doc::put_register(tx, &ROOT, "title", &short("title", &new.title)?)?;
    doc::put_register(tx, &ROOT, "kind", &new.kind.as_str().into())?;
    doc::put_register(tx, &ROOT, "category", &short("category", &new.category)?)?;
    doc::put_register(tx, &ROOT, "urgency", &new.urgency.as_str().into())?;
    put_due_hours(tx, ctx, &new.category, new.urgency.as_str())?;
    new.reporter.write(tx, &ROOT)?;
    new.location.write(tx, &ROOT)?;
    let text = tx
        .put_object(ROOT, "description", ObjType::Text)
        .map_err(am)?;
    tx.splice_text(&text, 0, 0, &new.description).map_err(am)?;
    for key in ["assist_units", "tags", "related"] {
        tx.put_object(ROOT, key, ObjType::Map).map_err(am)?;
    }
    for key in [
        "transitions",
        "timeline",
        "deadline_changes",
        "return_visits",
        "attachments",
    ] {
        tx.put_object(ROOT, key, ObjType::List).map_err(am)?;
    }
    tx.put_object(ROOT, doc::K_CLOCK, ObjType::Map)
        .map_err(am)?;
    if new.report {
        let to = IssueStatus::Reported;
        doc::move_status(tx, ctx, &ROOT, "transitions", to, "", Move::Transition)?;
    }
    Ok(())
}

/// Applies a typed operation. Validation happens before anything is
/// written, so an error leaves the transaction empty.
pub(crate) fn apply<T: Transactable>(tx: &mut T, ctx: Ctx<'_>, op: &IssueOp) -> Result<()> {
    match op {
        IssueOp::SetTitle(s) => {
            doc::put_register(tx, &ROOT, "title", &short("title", s)?)?;
        }
        IssueOp::SetKind(k) => {
            doc::put_register(tx, &ROOT, "kind", &k.as_str().into())?;
        }
        IssueOp::SetCategory(s) => {
            doc::put_register(tx, &ROOT, "category", &short("category", s)?)?;
            let urgency = doc::get_str(tx, &ROOT, "urgency").unwrap_or_default();
            put_due_hours(tx, ctx, s, &urgency)?;
        }
        IssueOp::SetUrgency(u) => {
            doc::put_register(tx, &ROOT, "urgency", &u.as_str().into())?;
            let category = doc::get_str(tx, &ROOT, "category").unwrap_or_default();
            put_due_hours(tx, ctx, &category, u.as_str())?;
        }
        IssueOp::SetReporter(r) => r.write(tx, &ROOT)?,
        IssueOp::SetLocation(l) => l.update(tx, &ROOT)?,
        IssueOp::SetAssignee(a) => {
            let v = match a {
                Some(a) => short("assignee", a)?,
                None => Value::Null,
            };
            doc::put_register(tx, &ROOT, "assignee", &v)?;
        }
        IssueOp::SetLeadUnit(a) => {
            let v = match a {
                Some(a) => short("lead_unit", a)?,
                None => Value::Null,
            };
            doc::put_register(tx, &ROOT, "lead_unit", &v)?;
        }
        IssueOp::SetReplyToCitizen(s) => {
            check_len("reply_to_citizen", s, MAX_NOTE)?;
            doc::put_register(tx, &ROOT, "reply_to_citizen", &s.as_str().into())?;
        }
        IssueOp::SetResolution {
            resolution,
            summary,
        } => {
            check_len("resolution_summary", summary, MAX_NOTE)?;
            let r = resolution.map_or(Value::Null, |r| r.as_str().into());
            doc::put_register(tx, &ROOT, "resolution", &r)?;
            doc::put_register(tx, &ROOT, "resolution_summary", &summary.as_str().into())?;
        }
        IssueOp::EditDescription(s) => {
            check_len("description", s, MAX_TEXT)?;
            doc::put_text(tx, &ROOT, "description", s)?;
        }
        IssueOp::AddAssistUnit(s) => {
            check_len("assist_unit", s, MAX_SHORT)?;
            doc::set_add(tx, &ROOT, "assist_units", s)?;
        }
        IssueOp::RemoveAssistUnit(s) => doc::set_remove(tx, &ROOT, "assist_units", s)?,
        IssueOp::AddTag(s) => {
            check_len("tag", s, MAX_SHORT)?;
            doc::set_add(tx, &ROOT, "tags", s)?;
        }
        IssueOp::RemoveTag(s) => doc::set_remove(tx, &ROOT, "tags", s)?,
        IssueOp::AddRelated(rel, id) => {
            doc::set_add(tx, &ROOT, "related", &format!("{}:{id}", rel.as_str()))?;
        }
        IssueOp::RemoveRelated(rel, id) => {
            doc::set_remove(tx, &ROOT, "related", &format!("{}:{id}", rel.as_str()))?;
        }
        IssueOp::AddTimeline { kind, text } => {
            if matches!(
                kind,
                TimelineKind::ExtensionRequest | TimelineKind::ExtensionRefused
            ) {
                return Err(crate::error::Error::InvalidInput {
                    field: "kind",
                    reason: "extension requests and answers have their own operations \
                             (request_extension, grant_extension, refuse_extension)"
                        .into(),
                });
            }
            check_len("timeline.text", text, MAX_NOTE)?;
            let item = timeline_entry(tx, ctx, *kind, text)?;
            put_author(tx, &item, ctx)?;
        }
        IssueOp::RequestExtension { due, reason } => {
            check_len("reason", reason, MAX_NOTE)?;
            crate::model::check_deadline("due", *due, ctx.now)?;
            let item = timeline_entry(tx, ctx, TimelineKind::ExtensionRequest, reason)?;
            tx.put(&item, "due", ScalarValue::Timestamp(*due))
                .map_err(am)?;
            put_author(tx, &item, ctx)?;
        }
        IssueOp::GrantExtension {
            request,
            due,
            reason,
        } => {
            check_len("reason", reason, MAX_NOTE)?;
            crate::model::check_deadline("due", *due, ctx.now)?;
            check_pending(tx, request)?;
            let (id, _) = doc::next_entry(tx, ctx.dev)?;
            let item = doc::append_entry(tx, &ROOT, "deadline_changes", &id)?;
            tx.put(&item, "due", ScalarValue::Timestamp(*due))
                .map_err(am)?;
            tx.put(&item, "reason", reason.as_str()).map_err(am)?;
            put_answers(tx, &item, request)?;
            put_author(tx, &item, ctx)?;
        }
        IssueOp::RefuseExtension { request, reason } => {
            check_len("reason", reason, MAX_NOTE)?;
            check_pending(tx, request)?;
            let item = timeline_entry(tx, ctx, TimelineKind::ExtensionRefused, reason)?;
            put_answers(tx, &item, request)?;
            put_author(tx, &item, ctx)?;
        }
        IssueOp::AddReturnVisit(v) => {
            check_len("return_visit.note", &v.note, MAX_NOTE)?;
            let (id, _) = doc::next_entry(tx, ctx.dev)?;
            let item = doc::append_entry(tx, &ROOT, "return_visits", &id)?;
            tx.put(&item, "reached", v.reached).map_err(am)?;
            tx.put(&item, "resolved", v.resolved).map_err(am)?;
            if let Some(s) = v.satisfaction {
                tx.put(&item, "satisfaction", s.as_str()).map_err(am)?;
            }
            tx.put(&item, "note", v.note.as_str()).map_err(am)?;
            put_author(tx, &item, ctx)?;
        }
        IssueOp::AddAttachment(a) => {
            a.append(tx, ctx, &ROOT, "attachments")?;
        }
        IssueOp::ChangeDeadline { due, reason } => {
            check_len("deadline.reason", reason, MAX_NOTE)?;
            crate::model::check_deadline("due", *due, ctx.now)?;
            let (id, _) = doc::next_entry(tx, ctx.dev)?;
            let item = doc::append_entry(tx, &ROOT, "deadline_changes", &id)?;
            tx.put(&item, "due", ScalarValue::Timestamp(*due))
                .map_err(am)?;
            tx.put(&item, "reason", reason.as_str()).map_err(am)?;
            put_author(tx, &item, ctx)?;
        }
        IssueOp::Transition { to, reason } => {
            doc::move_status(tx, ctx, &ROOT, "transitions", *to, reason, Move::Transition)?;
        }
        IssueOp::ResolveStatusConflict { to, reason } => {
            let how = Move::Resolve { what: "status" };
            doc::move_status(tx, ctx, &ROOT, "transitions", *to, reason, how)?;
        }
    }
    Ok(())
}

/// Writes the hours the case has by this store's deadline table (see
/// [`crate::deadlines`]), for its category and urgency.
fn put_due_hours<T: Transactable>(
    tx: &mut T,
    ctx: Ctx<'_>,
    category: &str,
    urgency: &str,
) -> Result<()> {
    if let Some(hours) = ctx.deadlines.hours(category, urgency) {
        doc::put_register(tx, &ROOT, "due_hours", &Value::Int(hours))?;
    }
    Ok(())
}

fn timeline_entry<T: Transactable>(
    tx: &mut T,
    ctx: Ctx<'_>,
    kind: TimelineKind,
    text: &str,
) -> Result<ObjId> {
    let (id, _) = doc::next_entry(tx, ctx.dev)?;
    let item = doc::append_entry(tx, &ROOT, "timeline", &id)?;
    tx.put(&item, "kind", kind.as_str()).map_err(am)?;
    tx.put(&item, "text", text).map_err(am)?;
    Ok(item)
}

fn put_answers<T: Transactable>(tx: &mut T, item: &ObjId, request: &EntryId) -> Result<()> {
    tx.put(item, "answers_dev", request.dev.as_str())
        .map_err(am)?;
    tx.put(item, "answers_n", ScalarValue::Int(request.n as i64))
        .map_err(am)?;
    Ok(())
}

fn read_answers(e: &Fields) -> Option<EntryId> {
    Some(EntryId {
        dev: e.str("answers_dev")?,
        n: e.u64("answers_n")?,
    })
}

/// Refuses an answer to anything but a pending extension request.
fn check_pending<R: ReadDoc>(d: &R, request: &EntryId) -> Result<()> {
    let f = Fields::read(d, &ROOT);
    let (requests, answered) = extension_log(d, &f);
    if !requests.contains(request) {
        return Err(crate::error::Error::EntryNotFound {
            what: "extension request",
            id: format!("{}:{}", request.dev, request.n),
        });
    }
    if answered.contains(request) {
        return Err(crate::error::Error::StateConflict(
            "this extension request has already been answered".into(),
        ));
    }
    Ok(())
}

/// The case's extension requests, and those that have an answer (a
/// grant in the deadline changes, a refusal in the timeline). A grant and
/// a refusal made concurrently both stand: the granted deadline holds,
/// and both answers show in the timeline.
fn extension_log<R: ReadDoc>(d: &R, f: &Fields) -> (Vec<EntryId>, BTreeSet<EntryId>) {
    let mut requests = Vec::new();
    let mut answered = BTreeSet::new();
    for e in doc::log(d, f, "timeline") {
        match e.str("kind").and_then(|k| TimelineKind::parse(&k)) {
            Some(TimelineKind::ExtensionRequest) => requests.extend(e.entry_id()),
            Some(TimelineKind::ExtensionRefused) => answered.extend(read_answers(&e)),
            _ => {}
        }
    }
    for e in doc::log(d, f, "deadline_changes") {
        answered.extend(read_answers(&e));
    }
    (requests, answered)
}

fn put_author<T: Transactable>(tx: &mut T, item: &ObjId, ctx: Ctx<'_>) -> Result<()> {
    tx.put(item, "by", ctx.author.user.as_str()).map_err(am)?;
    tx.put(item, "role", ctx.author.role.as_str()).map_err(am)?;
    tx.put(item, "at", ScalarValue::Timestamp(ctx.now))
        .map_err(am)?;
    Ok(())
}

/// The deadline in force: the latest deadline change in log order, else
/// creation time plus the hours the deadline table gave the case
/// (`due_hours`), else (a case written before the table) plus its
/// urgency's default hours.
fn effective_deadline(
    last_change: Option<i64>,
    urgency: Option<Urgency>,
    due_hours: Option<u64>,
    created_at: i64,
) -> Option<i64> {
    let hours = due_hours
        .and_then(|h| i64::try_from(h).ok())
        .or(urgency.map(Urgency::hours));
    last_change.or_else(|| hours.map(|h| created_at.saturating_add(h.saturating_mul(3_600_000))))
}

fn register_conflicts<R: ReadDoc>(d: &R, f: &Fields) -> Vec<RegisterConflict> {
    let mut out = Vec::new();
    for keys in [REGISTER_KEYS, Reporter::KEYS, Location::KEYS] {
        f.register_conflicts(d, &ROOT, keys, "", &mut out);
    }
    out
}

/// The root keys this build writes into an issue, besides the location's
/// and the reporter's (a key outside them was written by a newer app and
/// is shown as unrecognized).
pub(crate) const ROOT_KEYS: &[&str] = &[
    "schema",
    "type",
    "id",
    "case_no",
    "external_ref",
    "source",
    "original_statement",
    "capture_lat",
    "capture_lon",
    "capture_acc",
    "created_at",
    "created_by",
    "device",
    "intake_digest",
    "title",
    "kind",
    "category",
    "urgency",
    "due_hours",
    "description",
    "assignee",
    "lead_unit",
    "reply_to_citizen",
    "resolution",
    "resolution_summary",
    "assist_units",
    "tags",
    "related",
    "transitions",
    "timeline",
    "deadline_changes",
    "return_visits",
    "attachments",
    "clock",
];

fn known_status(s: &str) -> bool {
    IssueStatus::parse(s).is_some()
}

/// The root registers of an issue with a closed set of values.
const CLOSED: &[doc::Closed<'static>] = &[
    ("kind", |s| IssueKind::parse(s).is_some()),
    ("urgency", |s| Urgency::parse(s).is_some()),
    ("source", |s| Source::parse(s).is_some()),
    ("resolution", |s| Resolution::parse(s).is_some()),
];

/// The values of an issue this build does not know (see
/// [`doc::Unrecognized`]).
fn unrecognized<R: ReadDoc>(d: &R, f: &Fields) -> Vec<doc::Unrecognized> {
    doc::unrecognized_in(
        d,
        f,
        &[ROOT_KEYS, Location::KEYS, Reporter::KEYS],
        CLOSED,
        &[
            (
                "transitions",
                &[("to", known_status), ("from", known_status)],
            ),
            (
                "timeline",
                &[("kind", |s| TimelineKind::parse(s).is_some())],
            ),
            (
                "return_visits",
                &[("satisfaction", |s| Satisfaction::parse(s).is_some())],
            ),
        ],
    )
}

/// What the index lists of those (every write derives it, so it reads
/// nothing more than the summary does): the root's unknown fields and
/// values and the status events to or from an unknown status. The view
/// lists the log entries' unknown values too.
fn unrecognized_fields(f: &Fields, events: &[Event]) -> Vec<String> {
    let mut out = Vec::new();
    f.unrecognized(
        "",
        Some(&[ROOT_KEYS, Location::KEYS, Reporter::KEYS]),
        CLOSED,
        &mut out,
    );
    let mut fields: Vec<String> = out.into_iter().map(|u| u.field).collect();
    for (field, value) in events
        .iter()
        .flat_map(|e| [("transitions.to", &e.to), ("transitions.from", &e.from)])
    {
        if !value.is_empty() && !known_status(value) {
            fields.push(field.to_owned());
        }
    }
    fields.sort();
    fields.dedup();
    fields
}

/// What the index needs of an issue, read without what it does not (the
/// description, timeline, visits and attachments): every write derives it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IssueSummary {
    pub case_no: String,
    pub title: String,
    pub location: Location,
    pub status: IssueStatus,
    pub conflict: bool,
    pub effective_deadline: Option<i64>,
    pub assignee: Option<String>,
    pub urgency: Option<Urgency>,
    pub category: String,
    pub kind: Option<IssueKind>,
    pub created_at: i64,
    pub facts: crate::model::Facts,
    /// The fields holding values this build does not know.
    pub unrecognized: Vec<String>,
}

pub(crate) fn summary<R: ReadDoc>(d: &R) -> IssueSummary {
    let f = Fields::read(d, &ROOT);
    let events = doc::events(d, &f, "transitions");
    let derived = workflow::derive::<IssueStatus>(&events);
    let facts = facts(d, &f, &events, &derived);
    let last_due = doc::log(d, &f, "deadline_changes")
        .iter()
        .rev()
        .find_map(|e| e.entry_id().and(e.time("due")));
    let urgency = f.str("urgency").and_then(|u| Urgency::parse(&u));
    let created_at = f.time("created_at").unwrap_or(0);
    IssueSummary {
        case_no: f.string("case_no"),
        title: f.string("title"),
        location: Location::read(&f),
        status: derived.status,
        conflict: derived.conflict.is_some() || !register_conflicts(d, &f).is_empty(),
        effective_deadline: effective_deadline(last_due, urgency, f.u64("due_hours"), created_at),
        assignee: f.str("assignee"),
        urgency,
        category: f.string("category"),
        kind: f.str("kind").and_then(|k| IssueKind::parse(&k)),
        created_at,
        facts,
        unrecognized: unrecognized_fields(&f, &events),
    }
}

/// The figures' facts of an issue (see [`crate::model::Facts`]).
fn facts<R: ReadDoc>(
    d: &R,
    f: &Fields,
    events: &[Event],
    derived: &workflow::Derived<IssueStatus>,
) -> crate::model::Facts {
    let applied = || {
        events
            .iter()
            .zip(&derived.applied)
            .filter(|(_, a)| **a)
            .map(|(e, _)| e)
    };
    let first = |to: IssueStatus| {
        applied()
            .filter(|e| e.to == to.as_str())
            .map(|e| e.at)
            .min()
    };
    let count = |to: IssueStatus| applied().filter(|e| e.to == to.as_str()).count() as u32;
    let mut facts = crate::model::Facts {
        source: f.string("source"),
        lead_unit: f.string("lead_unit"),
        address: f.string("address").trim().to_owned(),
        dispatched_at: first(IssueStatus::Dispatched),
        signed_at: first(IssueStatus::SignedFor),
        handled_at: first(IssueStatus::Handled),
        closed_at: applied()
            .filter(|e| e.to == IssueStatus::Closed.as_str())
            .map(|e| e.at)
            .max(),
        returns: count(IssueStatus::Returned),
        reopens: count(IssueStatus::Reopened),
        ..Default::default()
    };
    if let Some(conflict) = &derived.conflict {
        facts.conflict_since = conflict
            .candidates
            .iter()
            .flat_map(|c| &c.events)
            .chain(&conflict.not_applied)
            .filter_map(|id| events.iter().find(|e| &e.id == id))
            .map(|e| e.at)
            .min();
    }
    let mut visits: Vec<(i64, bool, bool)> = Vec::new();
    for e in doc::log(d, f, "return_visits") {
        let reached = e.bool("reached").unwrap_or(false);
        match e.str("satisfaction").and_then(|s| Satisfaction::parse(&s)) {
            Some(Satisfaction::Satisfied) => facts.satisfied += 1,
            Some(Satisfaction::BasicallySatisfied) => facts.basically_satisfied += 1,
            Some(Satisfaction::Dissatisfied) => facts.dissatisfied += 1,
            None => {}
        }
        if reached {
            visits.push((
                e.time("at").unwrap_or(0),
                e.bool("resolved").unwrap_or(false),
                true,
            ));
        }
    }
    visits.sort();
    facts.visit_reached = !visits.is_empty();
    facts.visit_resolved = visits.last().is_some_and(|v| v.1);
    facts
}

/// Reads the full view of an issue document.
pub(crate) fn read<R: ReadDoc>(d: &R, id: RecordId) -> IssueView {
    let f = Fields::read(d, &ROOT);
    let events = doc::events(d, &f, "transitions");
    let derived = workflow::derive::<IssueStatus>(&events);

    let timeline: Vec<TimelineEntry> = doc::log(d, &f, "timeline")
        .into_iter()
        .filter_map(|e| {
            Some(TimelineEntry {
                id: e.entry_id()?,
                kind: e.str("kind").and_then(|k| TimelineKind::parse(&k)),
                text: e.string("text"),
                by: e.string("by"),
                role: e.string("role"),
                at: e.time("at").unwrap_or(0),
                due: e.time("due"),
                answers: read_answers(&e),
            })
        })
        .collect();
    let deadline_changes: Vec<DeadlineChange> = doc::log(d, &f, "deadline_changes")
        .into_iter()
        .filter_map(|e| {
            Some(DeadlineChange {
                id: e.entry_id()?,
                due: e.time("due")?,
                reason: e.string("reason"),
                by: e.string("by"),
                at: e.time("at").unwrap_or(0),
                answers: read_answers(&e),
            })
        })
        .collect();
    let answered: BTreeSet<&EntryId> = timeline
        .iter()
        .filter_map(|t| t.answers.as_ref())
        .chain(deadline_changes.iter().filter_map(|c| c.answers.as_ref()))
        .collect();
    let pending_extensions: Vec<EntryId> = timeline
        .iter()
        .filter(|t| t.kind == Some(TimelineKind::ExtensionRequest) && !answered.contains(&t.id))
        .map(|t| t.id.clone())
        .collect();
    let return_visits: Vec<ReturnVisit> = doc::log(d, &f, "return_visits")
        .into_iter()
        .filter_map(|e| {
            Some(ReturnVisit {
                id: e.entry_id()?,
                reached: e.bool("reached").unwrap_or(false),
                resolved: e.bool("resolved").unwrap_or(false),
                satisfaction: e.str("satisfaction").and_then(|k| Satisfaction::parse(&k)),
                note: e.string("note"),
                by: e.string("by"),
                at: e.time("at").unwrap_or(0),
            })
        })
        .collect();
    let attachments = AttachmentRef::read_log(d, &f, "attachments");

    let created_at = f.time("created_at").unwrap_or(0);
    let urgency = f.str("urgency").and_then(|u| Urgency::parse(&u));
    let effective_deadline = effective_deadline(
        deadline_changes.last().map(|c| c.due),
        urgency,
        f.u64("due_hours"),
        created_at,
    );

    // Activity after close: entries the closing event(s) had not seen.
    let mut activity_after_close = Vec::new();
    if derived.status == IssueStatus::Closed {
        let closers: Vec<&Event> = derived
            .frontier
            .iter()
            .map(|&i| &events[i])
            .filter(|e| e.to == IssueStatus::Closed.as_str())
            .collect();
        let ids = timeline
            .iter()
            .map(|t| &t.id)
            .chain(attachments.iter().map(|a| &a.id));
        for id in ids {
            if !closers.iter().any(|c| clock_covers(&c.seen, id)) {
                activity_after_close.push(id.clone());
            }
        }
    }

    let register_conflicts = register_conflicts(d, &f);

    let related = doc::set(d, &f, "related")
        .into_iter()
        .filter_map(|m| {
            let (rel, id) = m.split_once(':')?;
            Some((Relation::parse(rel)?, id.parse().ok()?))
        })
        .collect();

    let unrecognized = unrecognized(d, &f);
    IssueView {
        id,
        case_no: f.string("case_no"),
        external_ref: f.str("external_ref"),
        source: f.str("source").and_then(|x| Source::parse(&x)),
        original_statement: f.string("original_statement"),
        capture_geo: read_geo(&f, "capture_lat", "capture_lon", "capture_acc"),
        created_at,
        created_by: f.string("created_by"),
        device: f.string("device"),
        title: f.string("title"),
        kind: f.str("kind").and_then(|k| IssueKind::parse(&k)),
        category: f.string("category"),
        urgency,
        reporter: Reporter::read(&f),
        location: Location::read(&f),
        assignee: f.str("assignee"),
        lead_unit: f.str("lead_unit"),
        reply_to_citizen: f.string("reply_to_citizen"),
        resolution: f.str("resolution").and_then(|r| Resolution::parse(&r)),
        resolution_summary: f.string("resolution_summary"),
        description: doc::text(d, &f, "description"),
        assist_units: doc::set(d, &f, "assist_units").into_iter().collect(),
        tags: doc::set(d, &f, "tags").into_iter().collect(),
        related,
        transitions: events
            .into_iter()
            .zip(derived.applied.iter())
            .map(|(event, &applied)| TransitionView { event, applied })
            .collect(),
        supervised: timeline
            .iter()
            .any(|t| t.kind == Some(TimelineKind::Supervision)),
        extension_requested: !pending_extensions.is_empty(),
        pending_extensions,
        timeline,
        deadline_changes,
        return_visits,
        attachments,
        status: derived.status,
        status_conflict: derived.conflict,
        register_conflicts,
        effective_deadline,
        activity_after_close,
        unrecognized,
    }
}
