//! What the office reads instead of codes: the Chinese name of every
//! closed value (statuses, kinds, urgencies, roles, channels, timeline
//! entries, meeting levels and formats, attendee roles, action-item
//! statuses) and of the standard case categories. One table, kept here
//! so the dashboard, exports and apps show the same words; each enum is
//! matched exhaustively, so a new value does not build without its name.

use std::collections::BTreeMap;

use crate::ids::Role;
use crate::issue::{IssueKind, Resolution, Satisfaction, TimelineKind, Urgency};
use crate::meeting::{AttendeeRole, MeetingFormat, MeetingLevel, MeetingOutcome};
use crate::model::Source;
use crate::workflow::{ActionStatus, IssueStatus, Status};

pub fn issue_status(s: IssueStatus) -> &'static str {
    match s {
        IssueStatus::Draft => "草稿",
        IssueStatus::Reported => "已上报",
        IssueStatus::Accepted => "已受理",
        IssueStatus::Rejected => "不予受理",
        IssueStatus::Dispatched => "已派单",
        IssueStatus::SignedFor => "已签收",
        IssueStatus::InProgress => "办理中",
        IssueStatus::Handled => "已办结待回访",
        IssueStatus::Closed => "已结案",
        IssueStatus::Returned => "已退单",
        IssueStatus::Reopened => "已重启",
    }
}

pub fn action_status(s: ActionStatus) -> &'static str {
    match s {
        ActionStatus::Proposed => "待议定",
        ActionStatus::Agreed => "已议定",
        ActionStatus::InProgress => "落实中",
        ActionStatus::Done => "已完成待验收",
        ActionStatus::Verified => "已验收",
        ActionStatus::Reopened => "验收未通过",
        ActionStatus::Cancelled => "已取消",
        ActionStatus::GuidedLegal => "已引导法律途径",
    }
}

pub fn issue_kind(k: IssueKind) -> &'static str {
    match k {
        IssueKind::Demand => "诉求",
        IssueKind::Complaint => "投诉",
        IssueKind::HiddenDanger => "隐患",
        IssueKind::Dispute => "矛盾纠纷",
        IssueKind::Consultation => "咨询",
        IssueKind::Suggestion => "建议",
    }
}

pub fn urgency(u: Urgency) -> &'static str {
    match u {
        Urgency::Red => "红色（紧急）",
        Urgency::Yellow => "黄色（较急）",
        Urgency::Blue => "蓝色（一般）",
    }
}

pub fn resolution(r: Resolution) -> &'static str {
    match r {
        Resolution::Resolved => "已解决",
        Resolution::Partly => "部分解决",
        Resolution::Unresolved => "未解决",
        Resolution::GuidedLegal => "已引导法律途径",
        Resolution::NotInScope => "不属受理范围",
    }
}

pub fn satisfaction(s: Satisfaction) -> &'static str {
    match s {
        Satisfaction::Satisfied => "满意",
        Satisfaction::BasicallySatisfied => "基本满意",
        Satisfaction::Dissatisfied => "不满意",
    }
}

pub fn timeline_kind(k: TimelineKind) -> &'static str {
    match k {
        TimelineKind::Note => "记录",
        TimelineKind::Visit => "走访",
        TimelineKind::Call => "电话",
        TimelineKind::Supervision => "督办",
        TimelineKind::Reminder => "提醒",
        TimelineKind::ExtensionRequest => "申请延期",
        TimelineKind::ExtensionRefused => "不同意延期",
    }
}

pub fn source(s: Source) -> &'static str {
    match s {
        Source::GridPatrol => "网格巡查",
        Source::Hotline12345 => "12345热线",
        Source::CloudCouncil => "云议事",
        Source::WalkIn => "来访",
        Source::Meeting => "议事会",
    }
}

pub fn role(r: Role) -> &'static str {
    match r {
        Role::GridWorker => "网格员",
        Role::Community => "社区",
        Role::Street => "街道",
        Role::Hotline => "12345热线",
        Role::Department => "职能部门",
        Role::Office => "指挥中心",
    }
}

pub fn meeting_level(l: MeetingLevel) -> &'static str {
    match l {
        MeetingLevel::Building => "楼栋",
        MeetingLevel::Grid => "网格",
        MeetingLevel::Community => "社区",
        MeetingLevel::Street => "街道",
    }
}

pub fn meeting_format(f: MeetingFormat) -> &'static str {
    match f {
        MeetingFormat::InPerson => "现场",
        MeetingFormat::Online => "线上（云议事）",
        MeetingFormat::Hybrid => "现场加线上",
    }
}

pub fn meeting_outcome(o: MeetingOutcome) -> &'static str {
    match o {
        MeetingOutcome::Agreement => "达成一致",
        MeetingOutcome::Partial => "部分达成",
        MeetingOutcome::NoAgreement => "未达成",
        MeetingOutcome::Adjourned => "休会",
    }
}

pub fn attendee_role(r: AttendeeRole) -> &'static str {
    match r {
        AttendeeRole::Requester => "诉求方",
        AttendeeRole::Respondent => "被诉方",
        AttendeeRole::Department => "职能部门",
        AttendeeRole::Community => "社区",
        AttendeeRole::GridWorker => "网格员",
        AttendeeRole::Hotline => "12345热线",
        AttendeeRole::Mediator => "调解员",
    }
}

/// The standard case categories (taxonomy code, name). A deployment's
/// own codes show as written.
pub const CATEGORIES: &[(&str, &str)] = &[
    ("environment.noise", "环境·噪音扰民"),
    ("environment.waste", "环境·垃圾清运"),
    ("facilities.elevator", "设施·电梯"),
    ("facilities.lighting", "设施·照明"),
    ("property.fees", "物业·收费"),
    ("safety.fire", "安全·消防"),
    ("traffic.parking", "交通·停车"),
    ("welfare.policy", "民生·政策咨询"),
];

/// The name of `code` in `table` (see [`tables`]), if it has one.
pub fn name(table: &str, code: &str) -> Option<&'static str> {
    tables().get(table).and_then(|t| t.get(code)).copied()
}

/// A meeting's list state ([`crate::meeting::MEETING_STATUSES`]).
pub fn meeting_status(s: &str) -> Option<&'static str> {
    match s {
        "scheduled" => Some("待召开"),
        "held" => Some("已召开"),
        "concluded" => Some("已结束"),
        _ => None,
    }
}

pub fn device_state(s: crate::lifecycle::DeviceState) -> &'static str {
    use crate::lifecycle::DeviceState;
    match s {
        DeviceState::Active => "正常",
        DeviceState::Retiring => "交接中（上传后清除）",
        DeviceState::Retired => "已交接清除",
        DeviceState::WipePending => "待远程清除",
        DeviceState::Wiped => "已远程清除",
    }
}

fn all<T: Copy>(
    values: &[T],
    code: fn(T) -> &'static str,
    name: fn(T) -> &'static str,
) -> BTreeMap<&'static str, &'static str> {
    values.iter().map(|v| (code(*v), name(*v))).collect()
}

/// The tables, by what they name.
pub type Tables = BTreeMap<&'static str, BTreeMap<&'static str, &'static str>>;

/// Every table, by what it names: `status`, `action_status`, `kind`,
/// `urgency`, `resolution`, `satisfaction`, `timeline`, `source`, `role`,
/// `meeting_level`, `meeting_format`, `meeting_outcome`,
/// `meeting_status`, `attendee_role`, `category`, `device_state`. Made
/// once.
pub fn tables() -> &'static Tables {
    static TABLES: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    TABLES.get_or_init(make_tables)
}

fn make_tables() -> Tables {
    let mut t = BTreeMap::new();
    t.insert(
        "status",
        all(IssueStatus::ALL, IssueStatus::as_str, issue_status),
    );
    t.insert(
        "action_status",
        all(ActionStatus::ALL, ActionStatus::as_str, action_status),
    );
    t.insert("kind", all(IssueKind::ALL, IssueKind::as_str, issue_kind));
    t.insert("urgency", all(Urgency::ALL, Urgency::as_str, urgency));
    t.insert(
        "resolution",
        all(Resolution::ALL, Resolution::as_str, resolution),
    );
    t.insert(
        "satisfaction",
        all(Satisfaction::ALL, Satisfaction::as_str, satisfaction),
    );
    t.insert(
        "timeline",
        all(TimelineKind::ALL, TimelineKind::as_str, timeline_kind),
    );
    t.insert("source", all(Source::ALL, Source::as_str, source));
    t.insert("role", all(&Role::ALL, Role::as_str, role));
    t.insert(
        "meeting_level",
        all(MeetingLevel::ALL, MeetingLevel::as_str, meeting_level),
    );
    t.insert(
        "meeting_format",
        all(MeetingFormat::ALL, MeetingFormat::as_str, meeting_format),
    );
    t.insert(
        "meeting_outcome",
        all(MeetingOutcome::ALL, MeetingOutcome::as_str, meeting_outcome),
    );
    t.insert(
        "meeting_status",
        crate::meeting::MEETING_STATUSES
            .iter()
            .filter_map(|s| Some((*s, meeting_status(s)?)))
            .collect(),
    );
    t.insert(
        "attendee_role",
        all(AttendeeRole::ALL, AttendeeRole::as_str, attendee_role),
    );
    t.insert("category", CATEGORIES.iter().copied().collect());
    t.insert(
        "device_state",
        all(
            &crate::lifecycle::DeviceState::ALL,
            crate::lifecycle::DeviceState::as_str,
            device_state,
        ),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_meeting_status_has_a_name_and_no_name_repeats_within_a_table() {
        let t = tables();
        assert_eq!(
            t["meeting_status"].len(),
            crate::meeting::MEETING_STATUSES.len()
        );
        for (table, names) in t {
            let distinct: std::collections::BTreeSet<_> = names.values().collect();
            assert_eq!(distinct.len(), names.len(), "{table}: a name used twice");
        }
    }
}
