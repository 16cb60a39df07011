//! Council meetings ("inviting the parties to discuss the matter"):
//! attendees, agreements, legal guidance and the action items that follow
//! the matter up until it is resolved.

use std::collections::BTreeSet;

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, ROOT};

use crate::doc::{
    self, am, check_len, string_enum, Fields, Move, RegisterConflict, Value, MAX_NOTE, MAX_SHORT,
    MAX_TEXT,
};
use crate::error::{Error, Result};
use crate::ids::{RecordId, RecordKind};
use crate::model::{Attachment, AttachmentRef, Ctx, Location};
use crate::workflow::{self, ActionStatus, EntryId, Status, StatusConflict};

string_enum! {
    /// The level a council sits at.
    MeetingLevel {
        Building = "building",
        Grid = "grid",
        Community = "community",
        Street = "street",
    }
}

string_enum! {
    /// Where the parties meet.
    MeetingFormat {
        /// At a venue such as a council hall or a round table.
        InPerson = "in_person",
        /// In an online group (a "cloud council").
        Online = "online",
        Hybrid = "hybrid",
    }
}

string_enum! {
    /// What the session achieved.
    MeetingOutcome {
        Agreement = "agreement",
        Partial = "partial",
        NoAgreement = "none",
        Adjourned = "adjourned",
    }
}

string_enum! {
    /// The part an attendee plays.
    AttendeeRole {
        Requester = "requester",
        Respondent = "respondent",
        Department = "department",
        Community = "community",
        GridWorker = "grid_worker",
        Hotline = "hotline",
        Mediator = "mediator",
    }
}

/// Everything needed to convene a meeting. The store adds id, number,
/// author, device and time.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMeeting {
    pub topic: String,
    pub level: MeetingLevel,
    pub format: MeetingFormat,
    /// Venue name for in-person sessions.
    pub venue: String,
    /// Group reference for online sessions.
    pub group_ref: String,
    pub convener: String,
    pub scheduled_at: Option<i64>,
    /// The scope the meeting belongs to.
    pub location: Location,
    pub agenda: String,
    pub issue_ids: Vec<RecordId>,
}

/// A person at the table.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAttendee {
    pub role: AttendeeRole,
    pub organisation: String,
    pub name: String,
    /// Personal data.
    pub contact: String,
    pub attended: bool,
    pub online: bool,
}

/// An attendee as read.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Attendee {
    pub id: EntryId,
    pub role: Option<AttendeeRole>,
    pub organisation: String,
    pub name: String,
    pub contact: String,
    pub attended: bool,
    pub online: bool,
}

/// A text entry in a meeting log (agreement, legal guidance).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LogText {
    pub id: EntryId,
    pub text: String,
    pub by: String,
    pub at: i64,
}

/// A measure to be agreed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewActionItem {
    pub text: String,
    pub issue_id: Option<RecordId>,
    pub owner_party: String,
    pub due: Option<i64>,
}

/// A typed operation on a meeting. Each one is one Automerge transaction.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
#[non_exhaustive]
pub enum MeetingOp {
    SetTopic(String),
    SetLevel(MeetingLevel),
    SetFormat(MeetingFormat),
    SetVenue(String),
    SetGroupRef(String),
    SetConvener(String),
    SetScheduledAt(Option<i64>),
    SetHeldAt(Option<i64>),
    SetOutcome(Option<MeetingOutcome>),
    SetNextFollowUp(Option<i64>),
    SetLocation(Location),
    EditAgenda(String),
    EditMinutes(String),
    /// Links an issue; the issue's side of the link is derived.
    LinkIssue(RecordId),
    UnlinkIssue(RecordId),
    AddAttendee(NewAttendee),
    AddAgreement(String),
    AddLegalGuidance(String),
    AddAttachment(AttachmentRef),
    /// Adds an action item under the given id (make one with
    /// [`RecordId::new`]), so the caller knows it before the write.
    AddActionItem {
        item: RecordId,
        new: NewActionItem,
    },
    SetActionText {
        item: RecordId,
        text: String,
    },
    SetActionOwner {
        item: RecordId,
        owner_party: String,
    },
    ChangeActionDue {
        item: RecordId,
        due: i64,
        reason: String,
    },
    AddActionEvidence {
        item: RecordId,
        file: AttachmentRef,
    },
    TransitionAction {
        item: RecordId,
        to: ActionStatus,
        reason: String,
    },
    ResolveActionConflict {
        item: RecordId,
        to: ActionStatus,
        reason: String,
    },
}

impl MeetingOp {
    /// The name written into the change message.
    pub fn name(&self) -> &'static str {
        match self {
            MeetingOp::SetTopic(_) => "set_topic",
            MeetingOp::SetLevel(_) => "set_level",
            MeetingOp::SetFormat(_) => "set_format",
            MeetingOp::SetVenue(_) => "set_venue",
            MeetingOp::SetGroupRef(_) => "set_group_ref",
            MeetingOp::SetConvener(_) => "set_convener",
            MeetingOp::SetScheduledAt(_) => "set_scheduled_at",
            MeetingOp::SetHeldAt(_) => "set_held_at",
            MeetingOp::SetOutcome(_) => "set_outcome",
            MeetingOp::SetNextFollowUp(_) => "set_next_follow_up",
            MeetingOp::SetLocation(_) => "set_location",
            MeetingOp::EditAgenda(_) => "edit_agenda",
            MeetingOp::EditMinutes(_) => "edit_minutes",
            MeetingOp::LinkIssue(_) => "link_issue",
            MeetingOp::UnlinkIssue(_) => "unlink_issue",
            MeetingOp::AddAttendee(_) => "add_attendee",
            MeetingOp::AddAgreement(_) => "add_agreement",
            MeetingOp::AddLegalGuidance(_) => "add_legal_guidance",
            MeetingOp::AddAttachment(_) => "add_attachment",
            MeetingOp::AddActionItem { .. } => "add_action_item",
            MeetingOp::SetActionText { .. } => "set_action_text",
            MeetingOp::SetActionOwner { .. } => "set_action_owner",
            MeetingOp::ChangeActionDue { .. } => "change_action_due",
            MeetingOp::AddActionEvidence { .. } => "add_action_evidence",
            MeetingOp::TransitionAction { .. } => "transition_action",
            MeetingOp::ResolveActionConflict { .. } => "resolve_action_conflict",
        }
    }
}

/// An action item as read, with its derived status.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ActionItem {
    pub id: RecordId,
    pub text: String,
    pub issue_id: Option<RecordId>,
    pub owner_party: String,
    pub created_by: String,
    pub created_at: i64,
    /// The latest due date (the log of changes is in `due_changes`).
    pub due: Option<i64>,
    pub due_changes: Vec<LogText>,
    pub evidence: Vec<Attachment>,
    pub verified_by: Option<String>,
    pub status: ActionStatus,
    pub status_conflict: Option<StatusConflict<ActionStatus>>,
    pub transitions: Vec<workflow::Event>,
}

/// The typed read view of a meeting.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MeetingView {
    pub id: RecordId,
    pub meeting_no: String,
    pub created_at: i64,
    pub created_by: String,
    pub device: String,
    pub topic: String,
    pub level: Option<MeetingLevel>,
    pub format: Option<MeetingFormat>,
    pub venue: String,
    pub group_ref: String,
    pub convener: String,
    pub scheduled_at: Option<i64>,
    pub held_at: Option<i64>,
    pub outcome: Option<MeetingOutcome>,
    pub next_follow_up_at: Option<i64>,
    pub location: Location,
    pub agenda: String,
    pub minutes: String,
    pub issue_ids: BTreeSet<RecordId>,
    pub attendees: Vec<Attendee>,
    pub agreements: Vec<LogText>,
    pub legal_guidance: Vec<LogText>,
    pub attachments: Vec<Attachment>,
    pub action_items: Vec<ActionItem>,
    pub register_conflicts: Vec<RegisterConflict>,
    /// Values written by a newer app that this build does not know: kept,
    /// merged and synced, shown here (see [`doc::Unrecognized`]).
    pub unrecognized: Vec<doc::Unrecognized>,
}

/// The states a meeting's list entry may have: scheduled, held,
/// concluded ([`MeetingView::status`]).
pub const MEETING_STATUSES: [&str; 3] = ["scheduled", "held", "concluded"];

impl MeetingView {
    /// Whether anything about the meeting awaits review.
    pub fn has_conflict(&self) -> bool {
        !self.register_conflicts.is_empty()
            || self
                .action_items
                .iter()
                .any(|a| a.status_conflict.is_some())
    }

    /// The derived state shown in lists: one of [`MEETING_STATUSES`].
    pub fn status(&self) -> &'static str {
        let [scheduled, held, concluded] = MEETING_STATUSES;
        match (self.held_at, self.outcome) {
            (_, Some(o)) if o != MeetingOutcome::Adjourned => concluded,
            (Some(_), _) => held,
            _ => scheduled,
        }
    }

    /// Whether follow-up work is outstanding.
    pub fn is_open(&self) -> bool {
        self.status() != MEETING_STATUSES[2] || self.action_items.iter().any(|a| a.status.is_open())
    }
}

const REGISTER_KEYS: &[&str] = &[
    "topic",
    "level",
    "format",
    "venue",
    "group_ref",
    "convener",
    "scheduled_at",
    "held_at",
    "outcome",
    "next_follow_up_at",
];

fn short(field: &'static str, s: &str) -> Result<Value> {
    check_len(field, s, MAX_SHORT)?;
    Ok(Value::Str(s.to_owned()))
}

fn time(t: Option<i64>) -> Value {
    t.map_or(Value::Null, Value::Time)
}

/// Writes a new meeting into an empty document.
pub(crate) fn create<T: Transactable>(
    tx: &mut T,
    ctx: Ctx<'_>,
    id: RecordId,
    meeting_no: &str,
    new: &NewMeeting,
) -> Result<()> {
    check_len("agenda", &new.agenda, MAX_TEXT)?;
    tx.put(
        ROOT,
        doc::K_SCHEMA,
        ScalarValue::Int(doc::SCHEMA_VERSION as i64),
    )
    .map_err(am)?;
    tx.put(ROOT, doc::K_TYPE, RecordKind::Meeting.as_str())
        .map_err(am)?;
    tx.put(ROOT, "id", id.to_string()).map_err(am)?;
    tx.put(ROOT, "meeting_no", meeting_no).map_err(am)?;
    tx.put(ROOT, "created_at", ScalarValue::Timestamp(ctx.now))
        .map_err(am)?;
    tx.put(ROOT, "created_by", ctx.author.user.as_str())
        .map_err(am)?;
    tx.put(ROOT, "device", ctx.dev).map_err(am)?;
    doc::put_register(tx, &ROOT, "topic", &short("topic", &new.topic)?)?;
    doc::put_register(tx, &ROOT, "level", &new.level.as_str().into())?;
    doc::put_register(tx, &ROOT, "format", &new.format.as_str().into())?;
    doc::put_register(tx, &ROOT, "venue", &short("venue", &new.venue)?)?;
    doc::put_register(tx, &ROOT, "group_ref", &short("group_ref", &new.group_ref)?)?;
    doc::put_register(tx, &ROOT, "convener", &short("convener", &new.convener)?)?;
    doc::put_register(tx, &ROOT, "scheduled_at", &time(new.scheduled_at))?;
    new.location.write(tx, &ROOT)?;
    for key in ["agenda", "minutes"] {
        tx.put_object(ROOT, key, ObjType::Text).map_err(am)?;
    }
    doc::put_text(tx, &ROOT, "agenda", &new.agenda)?;
    tx.put_object(ROOT, "issue_ids", ObjType::Map).map_err(am)?;
    for issue in &new.issue_ids {
        doc::set_add(tx, &ROOT, "issue_ids", &issue.to_string())?;
    }
    for key in ["attendees", "agreements", "legal_guidance", "attachments"] {
        tx.put_object(ROOT, key, ObjType::List).map_err(am)?;
    }
    tx.put_object(ROOT, "action_items", ObjType::Map)
        .map_err(am)?;
    tx.put_object(ROOT, doc::K_CLOCK, ObjType::Map)
        .map_err(am)?;
    Ok(())
}

fn action_obj<R: ReadDoc>(d: &R, item: RecordId) -> Result<ObjId> {
    doc::child(d, &ROOT, "action_items", ObjType::Map)
        .and_then(|items| doc::child(d, &items, &item.to_string(), ObjType::Map))
        .ok_or_else(|| Error::EntryNotFound {
            what: "action item",
            id: item.to_string(),
        })
}

fn append_text<T: Transactable>(
    tx: &mut T,
    ctx: Ctx<'_>,
    obj: &ObjId,
    key: &str,
    text: &str,
) -> Result<()> {
    check_len("text", text, MAX_NOTE)?;
    let (id, _) = doc::next_entry(tx, ctx.dev)?;
    let item = doc::append_entry(tx, obj, key, &id)?;
    tx.put(&item, "text", text).map_err(am)?;
    tx.put(&item, "by", ctx.author.user.as_str()).map_err(am)?;
    tx.put(&item, "at", ScalarValue::Timestamp(ctx.now))
        .map_err(am)?;
    Ok(())
}

fn append_due<T: Transactable>(
    tx: &mut T,
    ctx: Ctx<'_>,
    obj: &ObjId,
    due: i64,
    reason: &str,
) -> Result<()> {
    check_len("reason", reason, MAX_NOTE)?;
    crate::model::check_deadline("due", due, ctx.now)?;
    let (id, _) = doc::next_entry(tx, ctx.dev)?;
    let entry = doc::append_entry(tx, obj, "due_changes", &id)?;
    tx.put(&entry, "due", ScalarValue::Timestamp(due))
        .map_err(am)?;
    tx.put(&entry, "text", reason).map_err(am)?;
    tx.put(&entry, "by", ctx.author.user.as_str()).map_err(am)?;
    tx.put(&entry, "at", ScalarValue::Timestamp(ctx.now))
        .map_err(am)?;
    Ok(())
}

/// Applies a typed operation. Validation happens before anything is
/// written, so an error leaves the transaction empty.
pub(crate) fn apply<T: Transactable>(tx: &mut T, ctx: Ctx<'_>, op: &MeetingOp) -> Result<()> {
    let root = &ROOT;
    match op {
        MeetingOp::SetTopic(s) => {
            doc::put_register(tx, root, "topic", &short("topic", s)?)?;
        }
        MeetingOp::SetLevel(l) => {
            doc::put_register(tx, root, "level", &l.as_str().into())?;
        }
        MeetingOp::SetFormat(f) => {
            doc::put_register(tx, root, "format", &f.as_str().into())?;
        }
        MeetingOp::SetVenue(s) => {
            doc::put_register(tx, root, "venue", &short("venue", s)?)?;
        }
        MeetingOp::SetGroupRef(s) => {
            doc::put_register(tx, root, "group_ref", &short("group_ref", s)?)?;
        }
        MeetingOp::SetConvener(s) => {
            doc::put_register(tx, root, "convener", &short("convener", s)?)?;
        }
        MeetingOp::SetScheduledAt(t) => {
            doc::put_register(tx, root, "scheduled_at", &time(*t))?;
        }
        MeetingOp::SetHeldAt(t) => {
            doc::put_register(tx, root, "held_at", &time(*t))?;
        }
        MeetingOp::SetOutcome(o) => {
            let v = o.map_or(Value::Null, |o| o.as_str().into());
            doc::put_register(tx, root, "outcome", &v)?;
        }
        MeetingOp::SetNextFollowUp(t) => {
            doc::put_register(tx, root, "next_follow_up_at", &time(*t))?;
        }
        MeetingOp::SetLocation(l) => l.update(tx, root)?,
        MeetingOp::EditAgenda(s) => {
            check_len("agenda", s, MAX_TEXT)?;
            doc::put_text(tx, root, "agenda", s)?;
        }
        MeetingOp::EditMinutes(s) => {
            check_len("minutes", s, MAX_TEXT)?;
            doc::put_text(tx, root, "minutes", s)?;
        }
        MeetingOp::LinkIssue(id) => doc::set_add(tx, root, "issue_ids", &id.to_string())?,
        MeetingOp::UnlinkIssue(id) => doc::set_remove(tx, root, "issue_ids", &id.to_string())?,
        MeetingOp::AddAttendee(a) => {
            check_len("attendee.organisation", &a.organisation, MAX_SHORT)?;
            check_len("attendee.name", &a.name, MAX_SHORT)?;
            check_len("attendee.contact", &a.contact, MAX_SHORT)?;
            let (id, _) = doc::next_entry(tx, ctx.dev)?;
            let item = doc::append_entry(tx, root, "attendees", &id)?;
            tx.put(&item, "role", a.role.as_str()).map_err(am)?;
            tx.put(&item, "organisation", a.organisation.as_str())
                .map_err(am)?;
            tx.put(&item, "name", a.name.as_str()).map_err(am)?;
            tx.put(&item, "contact", a.contact.as_str()).map_err(am)?;
            tx.put(&item, "attended", a.attended).map_err(am)?;
            tx.put(&item, "online", a.online).map_err(am)?;
        }
        MeetingOp::AddAgreement(text) => append_text(tx, ctx, root, "agreements", text)?,
        MeetingOp::AddLegalGuidance(text) => append_text(tx, ctx, root, "legal_guidance", text)?,
        MeetingOp::AddAttachment(a) => {
            a.append(tx, ctx, root, "attachments")?;
        }
        MeetingOp::AddActionItem { item, new } => {
            check_len("action.text", &new.text, MAX_NOTE)?;
            check_len("action.owner_party", &new.owner_party, MAX_SHORT)?;
            let items = match doc::child(tx, root, "action_items", ObjType::Map) {
                Some(m) => m,
                None => tx
                    .put_object(root, "action_items", ObjType::Map)
                    .map_err(am)?,
            };
            let key = item.to_string();
            if doc::child(tx, &items, &key, ObjType::Map).is_some() {
                return Err(Error::StateConflict(format!(
                    "action item {item} already exists"
                )));
            }
            let obj = tx
                .put_object(&items, key.as_str(), ObjType::Map)
                .map_err(am)?;
            tx.put(&obj, "id", key.as_str()).map_err(am)?;
            tx.put(&obj, "text", new.text.as_str()).map_err(am)?;
            if let Some(issue) = new.issue_id {
                tx.put(&obj, "issue_id", issue.to_string()).map_err(am)?;
            }
            tx.put(&obj, "owner_party", new.owner_party.as_str())
                .map_err(am)?;
            tx.put(&obj, "created_by", ctx.author.user.as_str())
                .map_err(am)?;
            tx.put(&obj, "created_at", ScalarValue::Timestamp(ctx.now))
                .map_err(am)?;
            for key in ["due_changes", "transitions", "evidence"] {
                tx.put_object(&obj, key, ObjType::List).map_err(am)?;
            }
            if let Some(due) = new.due {
                append_due(tx, ctx, &obj, due, "")?;
            }
        }
        MeetingOp::SetActionText { item, text } => {
            check_len("action.text", text, MAX_NOTE)?;
            let obj = action_obj(tx, *item)?;
            doc::put_register(tx, &obj, "text", &text.as_str().into())?;
        }
        MeetingOp::SetActionOwner { item, owner_party } => {
            let obj = action_obj(tx, *item)?;
            doc::put_register(
                tx,
                &obj,
                "owner_party",
                &short("action.owner_party", owner_party)?,
            )?;
        }
        MeetingOp::ChangeActionDue { item, due, reason } => {
            let obj = action_obj(tx, *item)?;
            append_due(tx, ctx, &obj, *due, reason)?;
        }
        MeetingOp::AddActionEvidence { item, file } => {
            let obj = action_obj(tx, *item)?;
            file.append(tx, ctx, &obj, "evidence")?;
        }
        MeetingOp::TransitionAction { item, to, reason } => {
            let obj = action_obj(tx, *item)?;
            doc::move_status(tx, ctx, &obj, "transitions", *to, reason, Move::Transition)?;
            if *to == ActionStatus::Verified {
                doc::put_register(tx, &obj, "verified_by", &ctx.author.user.as_str().into())?;
            }
        }
        MeetingOp::ResolveActionConflict { item, to, reason } => {
            let obj = action_obj(tx, *item)?;
            let what = format!("action item {item}");
            let how = Move::Resolve { what: &what };
            doc::move_status(tx, ctx, &obj, "transitions", *to, reason, how)?;
        }
    }
    Ok(())
}

fn read_texts<R: ReadDoc>(d: &R, parent: &Fields, key: &str) -> Vec<LogText> {
    doc::log(d, parent, key)
        .into_iter()
        .filter_map(|e| {
            Some(LogText {
                id: e.entry_id()?,
                text: e.string("text"),
                by: e.string("by"),
                at: e.time("at").unwrap_or(0),
            })
        })
        .collect()
}

fn read_action<R: ReadDoc>(
    d: &R,
    id: RecordId,
    obj: &ObjId,
    out: &mut Vec<RegisterConflict>,
) -> ActionItem {
    let f = Fields::read(d, obj);
    f.register_conflicts(
        d,
        obj,
        &["text", "owner_party", "verified_by"],
        &format!("action_items/{id}/"),
        out,
    );
    let events = doc::events(d, &f, "transitions");
    let derived = workflow::derive::<ActionStatus>(&events);
    let due_changes: Vec<(LogText, Option<i64>)> = doc::log(d, &f, "due_changes")
        .into_iter()
        .filter_map(|e| {
            Some((
                LogText {
                    id: e.entry_id()?,
                    text: e.string("text"),
                    by: e.string("by"),
                    at: e.time("at").unwrap_or(0),
                },
                e.time("due"),
            ))
        })
        .collect();
    ActionItem {
        id,
        text: f.string("text"),
        issue_id: f.str("issue_id").and_then(|i| i.parse().ok()),
        owner_party: f.string("owner_party"),
        created_by: f.string("created_by"),
        created_at: f.time("created_at").unwrap_or(0),
        due: due_changes.last().and_then(|(_, due)| *due),
        due_changes: due_changes.into_iter().map(|(t, _)| t).collect(),
        evidence: AttachmentRef::read_log(d, &f, "evidence"),
        verified_by: f.str("verified_by"),
        status: derived.status,
        status_conflict: derived.conflict,
        transitions: events,
    }
}

/// Reads the full view of a meeting document.
/// The root keys this build writes into a meeting, besides the location's
/// (a key outside them was written by a newer app and is shown as
/// unrecognized).
pub(crate) const ROOT_KEYS: &[&str] = &[
    "schema",
    "type",
    "id",
    "meeting_no",
    "created_at",
    "created_by",
    "device",
    "topic",
    "level",
    "format",
    "venue",
    "group_ref",
    "convener",
    "scheduled_at",
    "held_at",
    "outcome",
    "next_follow_up_at",
    "agenda",
    "minutes",
    "issue_ids",
    "attendees",
    "agreements",
    "legal_guidance",
    "attachments",
    "action_items",
    "clock",
];

/// The values of a meeting this build does not know: the root's, the
/// attendees' roles, and action item statuses (`action_items.transitions.to`).
fn unrecognized<R: ReadDoc>(d: &R, f: &Fields) -> Vec<doc::Unrecognized> {
    let mut out = doc::unrecognized_in(
        d,
        f,
        &[ROOT_KEYS, Location::KEYS],
        &[
            ("level", |s| MeetingLevel::parse(s).is_some()),
            ("format", |s| MeetingFormat::parse(s).is_some()),
            ("outcome", |s| MeetingOutcome::parse(s).is_some()),
        ],
        &[(
            "attendees",
            &[("role", |s| AttendeeRole::parse(s).is_some())],
        )],
    );
    if let Some(items) = f.obj("action_items", ObjType::Map) {
        let status = |s: &str| ActionStatus::parse(s).is_some();
        for item in d.map_range(items, ..) {
            if let automerge::ValueRef::Object(ObjType::Map) = item.value {
                let fields = Fields::read(d, &item.id());
                for entry in doc::log(d, &fields, "transitions") {
                    entry.unrecognized(
                        "action_items.transitions.",
                        None,
                        &[("to", status), ("from", status)],
                        &mut out,
                    );
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(crate) fn read<R: ReadDoc>(d: &R, id: RecordId) -> MeetingView {
    let f = Fields::read(d, &ROOT);
    let mut register_conflicts = Vec::new();
    f.register_conflicts(d, &ROOT, REGISTER_KEYS, "", &mut register_conflicts);
    f.register_conflicts(d, &ROOT, Location::KEYS, "", &mut register_conflicts);

    let mut action_items = Vec::new();
    if let Some(items) = f.obj("action_items", ObjType::Map) {
        for item in d.map_range(items, ..) {
            let (Ok(item_id), automerge::ValueRef::Object(ObjType::Map)) =
                (item.key.parse::<RecordId>(), &item.value)
            else {
                continue;
            };
            action_items.push(read_action(d, item_id, &item.id(), &mut register_conflicts));
        }
    }

    let attendees = doc::log(d, &f, "attendees")
        .into_iter()
        .filter_map(|e| {
            Some(Attendee {
                id: e.entry_id()?,
                role: e.str("role").and_then(|r| AttendeeRole::parse(&r)),
                organisation: e.string("organisation"),
                name: e.string("name"),
                contact: e.string("contact"),
                attended: e.bool("attended").unwrap_or(false),
                online: e.bool("online").unwrap_or(false),
            })
        })
        .collect();

    MeetingView {
        id,
        meeting_no: f.string("meeting_no"),
        created_at: f.time("created_at").unwrap_or(0),
        created_by: f.string("created_by"),
        device: f.string("device"),
        topic: f.string("topic"),
        level: f.str("level").and_then(|l| MeetingLevel::parse(&l)),
        format: f.str("format").and_then(|x| MeetingFormat::parse(&x)),
        venue: f.string("venue"),
        group_ref: f.string("group_ref"),
        convener: f.string("convener"),
        scheduled_at: f.time("scheduled_at"),
        held_at: f.time("held_at"),
        outcome: f.str("outcome").and_then(|o| MeetingOutcome::parse(&o)),
        next_follow_up_at: f.time("next_follow_up_at"),
        location: Location::read(&f),
        agenda: doc::text(d, &f, "agenda"),
        minutes: doc::text(d, &f, "minutes"),
        issue_ids: doc::set(d, &f, "issue_ids")
            .into_iter()
            .filter_map(|i| i.parse().ok())
            .collect(),
        attendees,
        agreements: read_texts(d, &f, "agreements"),
        legal_guidance: read_texts(d, &f, "legal_guidance"),
        attachments: AttachmentRef::read_log(d, &f, "attachments"),
        action_items,
        register_conflicts,
        unrecognized: unrecognized(d, &f),
    }
}
