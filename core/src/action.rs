//! What a person does to a record, as the permission matrix knows it
//! (`policy` decides who may). Depends only on the workflow's statuses,
//! so errors can name an action without depending on the policy.

use crate::workflow::{ActionStatus, IssueStatus};

/// Something a person does to a record, as the permission matrix knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Record a new case (or file a draft).
    Report,
    /// Take a 12345 work order in.
    Intake,
    Accept,
    Reject,
    Dispatch,
    SignFor,
    /// Work on the case (from signed for, reopened, or self-handled from
    /// reported).
    Start,
    /// Mark it handled, awaiting the return visit.
    Handle,
    /// Hand it back for re-dispatch.
    Return,
    Close,
    Reopen,
    /// Move it to another grid, community or street.
    Move,
    Supervise,
    /// Ask for more time to handle the case (the office grants or refuses).
    RequestExtension,
    /// Change the deadline, or grant or refuse an extension request.
    ExtendDeadline,
    RecordReturnVisit,
    ChangeReporter,
    /// Set the assignee, lead unit or assisting units.
    Assign,
    /// Edit the case's details (title, kind, category, urgency,
    /// description, location details, tags, links, reply, resolution).
    Edit,
    /// Add a note, visit, call, reminder or attachment.
    Note,
    ConveneMeeting,
    /// Edit a meeting: its details, attendees, agreements, legal guidance,
    /// attachments, action items' text, owner and due dates.
    EditMeeting,
    /// Agree an action item.
    AgreeAction,
    /// Work on an action item: in progress, done (the owner's claim).
    WorkAction,
    /// Verify a done action item, or reopen it.
    VerifyAction,
    /// Cancel an action item or guide it to a legal channel.
    CancelAction,
    /// Look cases up by a resident's phone number.
    FindByPhone,
}

impl Action {
    pub const ALL: [Action; 27] = [
        Action::Report,
        Action::Intake,
        Action::Accept,
        Action::Reject,
        Action::Dispatch,
        Action::SignFor,
        Action::Start,
        Action::Handle,
        Action::Return,
        Action::Close,
        Action::Reopen,
        Action::Move,
        Action::Supervise,
        Action::RequestExtension,
        Action::ExtendDeadline,
        Action::RecordReturnVisit,
        Action::ChangeReporter,
        Action::Assign,
        Action::Edit,
        Action::Note,
        Action::ConveneMeeting,
        Action::EditMeeting,
        Action::AgreeAction,
        Action::WorkAction,
        Action::VerifyAction,
        Action::CancelAction,
        Action::FindByPhone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Report => "report",
            Action::Intake => "intake",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Dispatch => "dispatch",
            Action::SignFor => "sign_for",
            Action::Start => "start",
            Action::Handle => "handle",
            Action::Return => "return",
            Action::Close => "close",
            Action::Reopen => "reopen",
            Action::Move => "move",
            Action::Supervise => "supervise",
            Action::RequestExtension => "request_extension",
            Action::ExtendDeadline => "extend_deadline",
            Action::RecordReturnVisit => "record_return_visit",
            Action::ChangeReporter => "change_reporter",
            Action::Assign => "assign",
            Action::Edit => "edit",
            Action::Note => "note",
            Action::ConveneMeeting => "convene_meeting",
            Action::EditMeeting => "edit_meeting",
            Action::AgreeAction => "agree_action",
            Action::WorkAction => "work_action",
            Action::VerifyAction => "verify_action",
            Action::CancelAction => "cancel_action",
            Action::FindByPhone => "find_by_phone",
        }
    }

    /// The action that moves an issue to `to` (by a transition, or by
    /// settling a conflict on it).
    pub fn reaching(to: IssueStatus) -> Action {
        match to {
            IssueStatus::Draft | IssueStatus::Reported => Action::Report,
            IssueStatus::Accepted => Action::Accept,
            IssueStatus::Rejected => Action::Reject,
            IssueStatus::Dispatched => Action::Dispatch,
            IssueStatus::SignedFor => Action::SignFor,
            IssueStatus::InProgress => Action::Start,
            IssueStatus::Handled => Action::Handle,
            IssueStatus::Returned => Action::Return,
            IssueStatus::Closed => Action::Close,
            IssueStatus::Reopened => Action::Reopen,
        }
    }

    /// The action that moves an action item to `to`.
    pub fn reaching_action_status(to: ActionStatus) -> Action {
        match to {
            ActionStatus::Proposed | ActionStatus::Agreed => Action::AgreeAction,
            ActionStatus::InProgress | ActionStatus::Done => Action::WorkAction,
            ActionStatus::Verified | ActionStatus::Reopened => Action::VerifyAction,
            ActionStatus::Cancelled | ActionStatus::GuidedLegal => Action::CancelAction,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
