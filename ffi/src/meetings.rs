//! Council meetings as typed records and operations: what a meeting is
//! convened with, the meeting as the app shows it (attendees, agreements,
//! legal guidance, action items), and every meeting operation. Wrappers
//! over `gridsync_core::meeting`; the JSON entry points stay for tools.

use gridsync_core::{
    ActionStatus, AttendeeRole, Location, MeetingFormat, MeetingLevel, MeetingOp, MeetingOutcome,
    MeetingView, NewActionItem, NewAttendee, NewMeeting, Status, Store,
};

use crate::{id, parse, AttachmentRecord, RegisterConflictRecord, Result, UnrecognizedRecord};

/// A meeting to convene.
#[derive(Clone, Debug, uniffi::Record)]
pub struct NewMeetingRecord {
    pub topic: String,
    /// building, grid, community or street.
    pub level: String,
    /// in_person, online or hybrid.
    pub format: String,
    /// The venue, for sessions in person.
    pub venue: String,
    /// The online group, for online sessions.
    pub group_ref: String,
    pub convener: String,
    pub scheduled_at: Option<i64>,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub building: String,
    pub address: String,
    pub agenda: String,
    /// The cases it discusses.
    pub issue_ids: Vec<String>,
}

impl NewMeetingRecord {
    pub(crate) fn new_meeting(self) -> Result<NewMeeting> {
        Ok(NewMeeting {
            topic: self.topic,
            level: parse("level", &self.level, MeetingLevel::parse)?,
            format: parse("format", &self.format, MeetingFormat::parse)?,
            venue: self.venue,
            group_ref: self.group_ref,
            convener: self.convener,
            scheduled_at: self.scheduled_at,
            location: Location {
                street: self.street,
                community: self.community,
                grid: self.grid,
                building: self.building,
                address: self.address,
                geo: None,
            },
            agenda: self.agenda,
            issue_ids: self
                .issue_ids
                .iter()
                .map(|i| id(i))
                .collect::<Result<_>>()?,
        })
    }
}

/// A person at the table, to add.
#[derive(Clone, Debug, uniffi::Record)]
pub struct NewAttendeeRecord {
    /// requester, respondent, department, community, grid_worker, hotline
    /// or mediator.
    pub role: String,
    pub organisation: String,
    pub name: String,
    /// Personal data.
    pub contact: String,
    pub attended: bool,
    pub online: bool,
}

/// A person at the table.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct AttendeeRecord {
    /// `device:n`, unique within the meeting.
    pub id: String,
    /// Empty when a newer app wrote a role this build does not know.
    pub role: String,
    pub organisation: String,
    pub name: String,
    pub contact: String,
    pub attended: bool,
    pub online: bool,
}

/// An agreement, a piece of legal guidance, or a due-date change.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LogTextRecord {
    pub text: String,
    pub by: String,
    pub at: i64,
}

/// A status event of an action item.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ActionEventRecord {
    pub from: String,
    pub to: String,
    pub by: String,
    pub role: String,
    pub reason: String,
    pub at: i64,
}

/// A measure agreed at the meeting, followed until verified.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ActionItemRecord {
    pub id: String,
    pub text: String,
    pub issue_id: Option<String>,
    pub owner_party: String,
    pub created_by: String,
    pub created_at: i64,
    pub due: Option<i64>,
    pub due_changes: Vec<LogTextRecord>,
    /// proposed, agreed, in_progress, done, verified, reopened, cancelled
    /// or guided_legal.
    pub status: String,
    /// The statuses in dispute (least final first); empty when none.
    pub status_candidates: Vec<String>,
    pub verified_by: Option<String>,
    pub evidence: Vec<AttachmentRecord>,
    pub transitions: Vec<ActionEventRecord>,
}

/// A meeting as the app shows it.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct MeetingRecord {
    pub id: String,
    pub meeting_no: String,
    pub created_at: i64,
    pub created_by: String,
    pub topic: String,
    pub level: String,
    pub format: String,
    pub venue: String,
    pub group_ref: String,
    pub convener: String,
    pub scheduled_at: Option<i64>,
    pub held_at: Option<i64>,
    /// agreement, partial, none or adjourned.
    pub outcome: Option<String>,
    pub next_follow_up_at: Option<i64>,
    /// scheduled, held or concluded.
    pub status: String,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub building: String,
    pub address: String,
    pub agenda: String,
    pub minutes: String,
    pub issue_ids: Vec<String>,
    pub attendees: Vec<AttendeeRecord>,
    pub agreements: Vec<LogTextRecord>,
    pub legal_guidance: Vec<LogTextRecord>,
    pub attachments: Vec<AttachmentRecord>,
    pub action_items: Vec<ActionItemRecord>,
    pub register_conflicts: Vec<RegisterConflictRecord>,
    pub unrecognized: Vec<UnrecognizedRecord>,
}

fn log_text(l: gridsync_core::meeting::LogText) -> LogTextRecord {
    LogTextRecord {
        text: l.text,
        by: l.by,
        at: l.at,
    }
}

impl MeetingRecord {
    pub(crate) fn from_view(v: MeetingView, store: &Store) -> Self {
        let status = v.status().to_owned();
        MeetingRecord {
            id: v.id.to_string(),
            meeting_no: v.meeting_no,
            created_at: v.created_at,
            created_by: v.created_by,
            topic: v.topic,
            level: v.level.map(|l| l.as_str().to_owned()).unwrap_or_default(),
            format: v.format.map(|f| f.as_str().to_owned()).unwrap_or_default(),
            venue: v.venue,
            group_ref: v.group_ref,
            convener: v.convener,
            scheduled_at: v.scheduled_at,
            held_at: v.held_at,
            outcome: v.outcome.map(|o| o.as_str().to_owned()),
            next_follow_up_at: v.next_follow_up_at,
            status,
            street: v.location.street,
            community: v.location.community,
            grid: v.location.grid,
            building: v.location.building,
            address: v.location.address,
            agenda: v.agenda,
            minutes: v.minutes,
            issue_ids: v.issue_ids.iter().map(ToString::to_string).collect(),
            attendees: v
                .attendees
                .into_iter()
                .map(|a| AttendeeRecord {
                    id: format!("{}:{}", a.id.dev, a.id.n),
                    role: a.role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
                    organisation: a.organisation,
                    name: a.name,
                    contact: a.contact,
                    attended: a.attended,
                    online: a.online,
                })
                .collect(),
            agreements: v.agreements.into_iter().map(log_text).collect(),
            legal_guidance: v.legal_guidance.into_iter().map(log_text).collect(),
            attachments: v
                .attachments
                .into_iter()
                .map(|a| AttachmentRecord::of(store, a))
                .collect(),
            action_items: v
                .action_items
                .into_iter()
                .map(|a| ActionItemRecord {
                    id: a.id.to_string(),
                    text: a.text,
                    issue_id: a.issue_id.map(|i| i.to_string()),
                    owner_party: a.owner_party,
                    created_by: a.created_by,
                    created_at: a.created_at,
                    due: a.due,
                    due_changes: a.due_changes.into_iter().map(log_text).collect(),
                    status: a.status.as_str().to_owned(),
                    status_candidates: a
                        .status_conflict
                        .map(|c| {
                            c.candidates
                                .iter()
                                .map(|c| c.status.as_str().to_owned())
                                .collect()
                        })
                        .unwrap_or_default(),
                    verified_by: a.verified_by,
                    evidence: a
                        .evidence
                        .into_iter()
                        .map(|e| AttachmentRecord::of(store, e))
                        .collect(),
                    transitions: a
                        .transitions
                        .into_iter()
                        .map(|e| ActionEventRecord {
                            from: e.from,
                            to: e.to,
                            by: e.by,
                            role: e.role,
                            reason: e.reason,
                            at: e.at,
                        })
                        .collect(),
                })
                .collect(),
            register_conflicts: v
                .register_conflicts
                .iter()
                .map(RegisterConflictRecord::of)
                .collect(),
            unrecognized: UnrecognizedRecord::all(v.unrecognized),
        }
    }
}

/// A typed operation on a meeting (every `MeetingOp`; photos and evidence
/// are attached with `GridStore::attach_file`).
#[derive(Clone, Debug, uniffi::Enum)]
pub enum MeetingOperation {
    SetTopic {
        topic: String,
    },
    /// building, grid, community or street.
    SetLevel {
        level: String,
    },
    /// in_person, online or hybrid.
    SetFormat {
        format: String,
    },
    SetVenue {
        venue: String,
    },
    SetGroupRef {
        group_ref: String,
    },
    SetConvener {
        convener: String,
    },
    SetScheduledAt {
        at: Option<i64>,
    },
    /// When the session took place.
    SetHeldAt {
        at: Option<i64>,
    },
    /// agreement, partial, none or adjourned.
    SetOutcome {
        outcome: Option<String>,
    },
    SetNextFollowUp {
        at: Option<i64>,
    },
    /// The venue's details (the meeting's place moves only by the office).
    SetLocation {
        street: String,
        community: String,
        grid: String,
        building: String,
        address: String,
    },
    EditAgenda {
        text: String,
    },
    EditMinutes {
        text: String,
    },
    LinkIssue {
        issue_id: String,
    },
    UnlinkIssue {
        issue_id: String,
    },
    AddAttendee {
        attendee: NewAttendeeRecord,
    },
    AddAgreement {
        text: String,
    },
    AddLegalGuidance {
        text: String,
    },
    /// Adds an action item under `item` (make one with `new_record_id()`,
    /// so the app knows it before the write).
    AddActionItem {
        item: String,
        text: String,
        issue_id: Option<String>,
        owner_party: String,
        due: Option<i64>,
    },
    SetActionText {
        item: String,
        text: String,
    },
    SetActionOwner {
        item: String,
        owner_party: String,
    },
    ChangeActionDue {
        item: String,
        due: i64,
        reason: String,
    },
    /// proposed, agreed, in_progress, done, verified, reopened, cancelled
    /// or guided_legal.
    TransitionAction {
        item: String,
        to: String,
        reason: String,
    },
    ResolveActionConflict {
        item: String,
        to: String,
        reason: String,
    },
}

impl MeetingOperation {
    pub(crate) fn op(self) -> Result<MeetingOp> {
        let status = |s: &str| parse("status", s, <ActionStatus as Status>::parse);
        Ok(match self {
            MeetingOperation::SetTopic { topic } => MeetingOp::SetTopic(topic),
            MeetingOperation::SetLevel { level } => {
                MeetingOp::SetLevel(parse("level", &level, MeetingLevel::parse)?)
            }
            MeetingOperation::SetFormat { format } => {
                MeetingOp::SetFormat(parse("format", &format, MeetingFormat::parse)?)
            }
            MeetingOperation::SetVenue { venue } => MeetingOp::SetVenue(venue),
            MeetingOperation::SetGroupRef { group_ref } => MeetingOp::SetGroupRef(group_ref),
            MeetingOperation::SetConvener { convener } => MeetingOp::SetConvener(convener),
            MeetingOperation::SetScheduledAt { at } => MeetingOp::SetScheduledAt(at),
            MeetingOperation::SetHeldAt { at } => MeetingOp::SetHeldAt(at),
            MeetingOperation::SetOutcome { outcome } => MeetingOp::SetOutcome(
                outcome
                    .map(|o| parse("outcome", &o, MeetingOutcome::parse))
                    .transpose()?,
            ),
            MeetingOperation::SetNextFollowUp { at } => MeetingOp::SetNextFollowUp(at),
            MeetingOperation::SetLocation {
                street,
                community,
                grid,
                building,
                address,
            } => MeetingOp::SetLocation(Location {
                street,
                community,
                grid,
                building,
                address,
                geo: None,
            }),
            MeetingOperation::EditAgenda { text } => MeetingOp::EditAgenda(text),
            MeetingOperation::EditMinutes { text } => MeetingOp::EditMinutes(text),
            MeetingOperation::LinkIssue { issue_id } => MeetingOp::LinkIssue(id(&issue_id)?),
            MeetingOperation::UnlinkIssue { issue_id } => MeetingOp::UnlinkIssue(id(&issue_id)?),
            MeetingOperation::AddAttendee { attendee } => MeetingOp::AddAttendee(NewAttendee {
                role: parse("attendee role", &attendee.role, AttendeeRole::parse)?,
                organisation: attendee.organisation,
                name: attendee.name,
                contact: attendee.contact,
                attended: attendee.attended,
                online: attendee.online,
            }),
            MeetingOperation::AddAgreement { text } => MeetingOp::AddAgreement(text),
            MeetingOperation::AddLegalGuidance { text } => MeetingOp::AddLegalGuidance(text),
            MeetingOperation::AddActionItem {
                item,
                text,
                issue_id,
                owner_party,
                due,
            } => MeetingOp::AddActionItem {
                item: id(&item)?,
                new: NewActionItem {
                    text,
                    issue_id: issue_id.map(|i| id(&i)).transpose()?,
                    owner_party,
                    due,
                },
            },
            MeetingOperation::SetActionText { item, text } => MeetingOp::SetActionText {
                item: id(&item)?,
                text,
            },
            MeetingOperation::SetActionOwner { item, owner_party } => MeetingOp::SetActionOwner {
                item: id(&item)?,
                owner_party,
            },
            MeetingOperation::ChangeActionDue { item, due, reason } => MeetingOp::ChangeActionDue {
                item: id(&item)?,
                due,
                reason,
            },
            MeetingOperation::TransitionAction { item, to, reason } => {
                MeetingOp::TransitionAction {
                    item: id(&item)?,
                    to: status(&to)?,
                    reason,
                }
            }
            MeetingOperation::ResolveActionConflict { item, to, reason } => {
                MeetingOp::ResolveActionConflict {
                    item: id(&item)?,
                    to: status(&to)?,
                    reason,
                }
            }
        })
    }
}
