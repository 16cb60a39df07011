//! Who may do what, and who sees what: the one place these are decided.
//!
//! Every path that changes a record asks [`check`] (office actions through
//! [`Store::act_on_issue`](crate::Store::act_on_issue) and friends, device
//! pushes through the server's audit of foreign changes, see
//! [`crate::audit`]), and every path that shows a record to an office role
//! goes through [`present_issue`] / [`present_meeting`]. The server, the
//! dashboard and the FFI translate these answers; they do not decide.
//!
//! # Who may do what
//!
//! The matrix follows the office practice in the design notes: the
//! hotline takes work orders in and closes the loop with the resident;
//! community and street offices accept, dispatch (community staff to one of
//! their grids), supervise, extend deadlines and close; grid workers and
//! departments handle (sign for, work on, finish, hand back) but neither
//! accept nor close; only those who call residents back change the
//! reporter. The table is [`allowed`]; `ARCHITECTURE.md` prints it.
//!
//! Three rules go beyond the table: nobody closes a case whose latest
//! return visit that reached the resident was dissatisfied without giving
//! a reason ([`check_close`]); rejecting or returning a case says why
//! ([`check_reason`]); and settling a status conflict counts as the move
//! to the status chosen (a grid worker may settle on "returned", not on
//! "closed").
//!
//! # Who sees what
//!
//! Residents' personal data — the reporter's name and phone, register
//! conflicts over them, and attendees' names and contacts — is shown to the
//! roles that call residents back ([`sees_personal_data`]). Everyone else
//! gets the record with those fields emptied and a flag saying so.

use crate::doc::Value;
use crate::error::{Error, Result};
use crate::ids::Role;
use crate::issue::{IssueOp, IssueView, Satisfaction};
use crate::meeting::{AttendeeRole, MeetingOp, MeetingView};
use crate::workflow::IssueStatus;

pub use crate::action::Action;

/// The permission matrix: whether `role` may perform `action`.
pub fn allowed(role: Role, action: Action) -> bool {
    use Action::*;
    use Role::*;
    match action {
        // Everyone records what they see and hear.
        Note | Edit | EditMeeting | WorkAction => true,
        Report => role != Department,
        // The offices take work in, decide on it and close it.
        Intake | Accept | Reject | Dispatch | Close | Reopen | ExtendDeadline
        | RecordReturnVisit | VerifyAction | CancelAction => {
            matches!(role, Community | Street | Hotline | Office)
        }
        // Those who handle a case: the grid, the community itself and the
        // departments.
        SignFor | Start | Handle | Return | RequestExtension => {
            matches!(role, GridWorker | Community | Department | Office)
        }
        Move => matches!(role, Community | Street | Office),
        Supervise => matches!(role, Community | Street | Hotline | Office),
        // Those who call residents back.
        ChangeReporter | FindByPhone => sees_personal_data(role),
        Assign | ConveneMeeting | AgreeAction => role != Department,
    }
}

/// What a role may do to a case as it stands: the statuses it may move
/// the case to (the workflow allows the move from the current status and
/// the matrix allows the role), and the other actions the matrix allows
/// it. The dashboard offers exactly these; the checks on the write path
/// stay the same.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Offers {
    pub transitions: Vec<&'static str>,
    pub actions: Vec<&'static str>,
}

/// The actions besides status moves that a case's panel offers.
const CASE_ACTIONS: [Action; 9] = [
    Action::Move,
    Action::Assign,
    Action::Supervise,
    Action::RequestExtension,
    Action::ExtendDeadline,
    Action::RecordReturnVisit,
    Action::ChangeReporter,
    Action::Edit,
    Action::Note,
];

/// [`Offers`] for `role` on the case `view`.
pub fn issue_offers(role: Role, view: &IssueView) -> Offers {
    use crate::workflow::Status;
    Offers {
        transitions: IssueStatus::ALL
            .iter()
            .filter(|to| view.status.allows(**to) && allowed(role, Action::reaching(**to)))
            .map(|to| to.as_str())
            .collect(),
        actions: CASE_ACTIONS
            .iter()
            .filter(|a| allowed(role, **a))
            .map(|a| a.as_str())
            .collect(),
    }
}

/// Refuses `action` unless `role` may perform it.
pub fn check(role: Role, action: Action) -> Result<()> {
    if allowed(role, action) {
        Ok(())
    } else {
        Err(Error::Forbidden { action, role })
    }
}

/// The actions an issue operation performs, given the case as it is.
pub fn issue_op_actions(op: &IssueOp) -> Vec<Action> {
    match op {
        IssueOp::SetReporter(_) => vec![Action::ChangeReporter],
        IssueOp::SetAssignee(_)
        | IssueOp::SetLeadUnit(_)
        | IssueOp::AddAssistUnit(_)
        | IssueOp::RemoveAssistUnit(_) => vec![Action::Assign],
        IssueOp::AddTimeline { kind, .. } => vec![timeline_action(*kind)],
        IssueOp::RequestExtension { .. } => vec![Action::RequestExtension],
        IssueOp::GrantExtension { .. } | IssueOp::RefuseExtension { .. } => {
            vec![Action::ExtendDeadline]
        }
        IssueOp::AddAttachment(_) => vec![Action::Note],
        IssueOp::AddReturnVisit(_) => vec![Action::RecordReturnVisit],
        IssueOp::ChangeDeadline { .. } => vec![Action::ExtendDeadline],
        IssueOp::Transition { to, .. } | IssueOp::ResolveStatusConflict { to, .. } => {
            vec![Action::reaching(*to)]
        }
        IssueOp::SetTitle(_)
        | IssueOp::SetKind(_)
        | IssueOp::SetCategory(_)
        | IssueOp::SetUrgency(_)
        | IssueOp::SetLocation(_)
        | IssueOp::SetReplyToCitizen(_)
        | IssueOp::SetResolution { .. }
        | IssueOp::EditDescription(_)
        | IssueOp::AddTag(_)
        | IssueOp::RemoveTag(_)
        | IssueOp::AddRelated(..)
        | IssueOp::RemoveRelated(..) => vec![Action::Edit],
    }
}

/// The action a new timeline entry of `kind` performs.
pub fn timeline_action(kind: crate::issue::TimelineKind) -> Action {
    use crate::issue::TimelineKind;
    match kind {
        TimelineKind::Supervision => Action::Supervise,
        TimelineKind::ExtensionRequest => Action::RequestExtension,
        TimelineKind::ExtensionRefused => Action::ExtendDeadline,
        TimelineKind::Note | TimelineKind::Visit | TimelineKind::Call | TimelineKind::Reminder => {
            Action::Note
        }
    }
}

/// The actions a meeting operation performs.
pub fn meeting_op_actions(op: &MeetingOp) -> Vec<Action> {
    match op {
        MeetingOp::TransitionAction { to, .. } | MeetingOp::ResolveActionConflict { to, .. } => {
            vec![Action::reaching_action_status(*to)]
        }
        _ => vec![Action::EditMeeting],
    }
}

/// Checks an issue operation against the matrix and the rules beyond it.
pub fn check_issue_op(role: Role, view: &IssueView, op: &IssueOp) -> Result<()> {
    for action in issue_op_actions(op) {
        check(role, action)?;
    }
    check_reason(op)?;
    if let IssueOp::Transition {
        to: IssueStatus::Closed,
        reason,
    }
    | IssueOp::ResolveStatusConflict {
        to: IssueStatus::Closed,
        reason,
    } = op
    {
        check_close(view, reason)?;
    }
    Ok(())
}

/// Rejecting or returning a case says why: the reporter is told, and the
/// office re-dispatches knowing it. Checked on the office's and apps'
/// path ([`crate::Store::act_on_issue`]); a push from an older phone is
/// not refused for it.
pub fn check_reason(op: &IssueOp) -> Result<()> {
    if let IssueOp::Transition {
        to: to @ (IssueStatus::Rejected | IssueStatus::Returned),
        reason,
    } = op
    {
        if reason.trim().is_empty() {
            return Err(Error::InvalidInput {
                field: "reason",
                reason: format!(
                    "moving a case to {} needs a reason",
                    crate::workflow::Status::as_str(*to)
                ),
            });
        }
    }
    Ok(())
}

/// Checks a meeting operation against the matrix.
pub fn check_meeting_op(role: Role, op: &MeetingOp) -> Result<()> {
    for action in meeting_op_actions(op) {
        check(role, action)?;
    }
    Ok(())
}

/// Nobody closes a case whose latest return visit that reached the
/// resident was dissatisfied without saying why.
pub fn check_close(view: &IssueView, reason: &str) -> Result<()> {
    let latest = view.return_visits.iter().rev().find(|v| v.reached);
    let dissatisfied = latest.is_some_and(|v| v.satisfaction == Some(Satisfaction::Dissatisfied));
    if dissatisfied && reason.trim().is_empty() {
        return Err(Error::InvalidInput {
            field: "reason",
            reason: "the latest return visit was dissatisfied: closing needs a reason".into(),
        });
    }
    Ok(())
}

// ------------------------------------------------------------ personal data

/// Whether `role` sees residents' personal data: the roles that call
/// residents back (and the grid worker, whose phone recorded it).
pub fn sees_personal_data(role: Role) -> bool {
    matches!(
        role,
        Role::GridWorker | Role::Community | Role::Hotline | Role::Office
    )
}

/// Whether a worker in `role` may act through a phone. A phone holds whole
/// records, the reporter's name and phone included, so only the roles that
/// see personal data carry one; the others (street, department) work
/// through office logins, whose answers go through [`present_issue`].
pub fn may_carry_records(role: Role) -> bool {
    sees_personal_data(role)
}

/// Register keys that hold personal data.
const PERSONAL_REGISTERS: &[&str] = &["reporter_name", "reporter_phone"];

fn is_personal_register(field: &str) -> bool {
    PERSONAL_REGISTERS.contains(&field)
        || field
            .rsplit('/')
            .next()
            .is_some_and(|last| PERSONAL_REGISTERS.contains(&last))
}

/// An issue as `role` may see it. Without access to personal data the
/// reporter's name and phone are emptied, wherever they appear: the
/// reporter, register conflicts over them, and any text that quotes them.
pub fn present_issue(view: IssueView, role: Role) -> IssueView {
    if sees_personal_data(role) {
        return view;
    }
    without_personal_data(view)
}

/// An issue with the reporter's name and phone emptied wherever they
/// appear (what [`present_issue`] shows a role without access to personal
/// data, and what searches look in: `crate::search`).
pub fn without_personal_data(mut view: IssueView) -> IssueView {
    let mut secrets: Vec<String> = Vec::new();
    for value in [&view.reporter.name, &view.reporter.phone] {
        if !value.trim().is_empty() {
            secrets.push(value.clone());
        }
    }
    for c in &view.register_conflicts {
        if is_personal_register(&c.field) {
            for v in &c.values {
                if let Some(s) = v.as_str().filter(|s| !s.trim().is_empty()) {
                    secrets.push(s.to_owned());
                }
            }
        }
    }
    view.reporter.name.clear();
    view.reporter.phone.clear();
    for c in &mut view.register_conflicts {
        if is_personal_register(&c.field) {
            c.shown = Value::Null;
            for v in &mut c.values {
                *v = Value::Null;
            }
        }
    }
    let scrub = |text: &mut String| scrub_text(text, &secrets);
    scrub(&mut view.original_statement);
    scrub(&mut view.description);
    scrub(&mut view.reply_to_citizen);
    scrub(&mut view.resolution_summary);
    for t in &mut view.timeline {
        scrub(&mut t.text);
    }
    for r in &mut view.return_visits {
        scrub(&mut r.note);
    }
    for d in &mut view.deadline_changes {
        scrub(&mut d.reason);
    }
    for t in &mut view.transitions {
        scrub(&mut t.event.reason);
    }
    withhold_unrecognized(&mut view.unrecognized);
    view
}

/// Values a newer app wrote that this build does not know may be personal
/// data (a field this build has no name for could hold an id number): a
/// role that does not see personal data gets the field's name, not its
/// value.
fn withhold_unrecognized(values: &mut [crate::doc::Unrecognized]) {
    for u in values {
        u.value.clear();
    }
}

/// A meeting as `role` may see it: without access to personal data,
/// attendees' contacts are emptied, and so are the names of attendees who
/// are residents (requesters); officials' and organisations' names stay.
pub fn present_meeting(view: MeetingView, role: Role) -> MeetingView {
    if sees_personal_data(role) {
        return view;
    }
    meeting_without_personal_data(view)
}

/// A meeting with residents' names and every contact emptied (what
/// [`present_meeting`] shows a role without access to personal data, and
/// what searches look in).
pub fn meeting_without_personal_data(mut view: MeetingView) -> MeetingView {
    let mut secrets = Vec::new();
    for a in &mut view.attendees {
        if !a.contact.trim().is_empty() {
            secrets.push(std::mem::take(&mut a.contact));
        }
        a.contact.clear();
        if matches!(a.role, Some(AttendeeRole::Requester) | None) {
            if !a.name.trim().is_empty() {
                secrets.push(std::mem::take(&mut a.name));
            }
            a.name.clear();
        }
    }
    for c in &mut view.register_conflicts {
        if is_personal_register(&c.field) {
            c.shown = Value::Null;
            c.values.iter_mut().for_each(|v| *v = Value::Null);
        }
    }
    let scrub = |text: &mut String| scrub_text(text, &secrets);
    scrub(&mut view.minutes);
    scrub(&mut view.agenda);
    for e in view
        .agreements
        .iter_mut()
        .chain(view.legal_guidance.iter_mut())
    {
        scrub(&mut e.text);
    }
    withhold_unrecognized(&mut view.unrecognized);
    view
}

/// Removes every occurrence of the given values from free text, and masks
/// anything shaped like a mainland mobile number (11 digits starting with
/// 1), which residents' numbers are.
pub fn scrub_text(text: &mut String, secrets: &[String]) {
    for s in secrets {
        if s.chars().count() >= 2 && text.contains(s.as_str()) {
            *text = text.replace(s.as_str(), "***");
        }
    }
    if text.bytes().filter(u8::is_ascii_digit).count() >= 11 {
        *text = mask_mobile_numbers(text);
    }
}

fn mask_mobile_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 0 {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let digits: String = chars[i..i + run].iter().collect();
        if run == 11 && digits.starts_with('1') {
            out.push_str(&digits[..3]);
            out.push_str("****");
            out.push_str(&digits[7..]);
        } else {
            out.push_str(&digits);
        }
        i += run;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_numbers_are_masked_in_free_text() {
        let mut t = "请回电13812345678，座机 02512345678 与编号 123".to_owned();
        scrub_text(&mut t, &[]);
        assert_eq!(t, "请回电138****5678，座机 02512345678 与编号 123");
    }

    #[test]
    fn quoted_personal_values_are_removed() {
        let mut t = "王阿姨说楼道灯坏了".to_owned();
        scrub_text(&mut t, &["王阿姨".to_owned()]);
        assert_eq!(t, "***说楼道灯坏了");
    }

    #[test]
    fn every_role_may_note_and_only_offices_close() {
        for role in Role::ALL {
            assert!(allowed(role, Action::Note));
            assert_eq!(
                allowed(role, Action::Close),
                matches!(
                    role,
                    Role::Community | Role::Street | Role::Hotline | Role::Office
                )
            );
        }
    }
}
