//! What an export of a case list or a figures table holds: the columns,
//! their Chinese headers, the values as people read them (labels, not
//! codes; times in China Standard Time), and — decided here, by role —
//! whether the reporter's phone is among them. The server writes these
//! rows as CSV or Excel; it does not choose them.

use crate::figures::{Figures, Rate, Row};
use crate::ids::Role;
use crate::labels;
use crate::policy;
use crate::query::RecordMeta;
use crate::workflow::{IssueStatus, Status};

/// A case row's place, as names (street, community, grid).
pub type PlaceNames = [String; 3];

/// The headers of a case export for `role`.
pub fn case_headers(role: Role) -> Vec<&'static str> {
    let mut h = vec![
        "案件号",
        "工单号",
        "标题",
        "状态",
        "类型",
        "紧急程度",
        "类别",
        "来源渠道",
        "街道",
        "社区",
        "网格",
        "承办人",
        "牵头单位",
        "登记时间",
        "办理期限",
        "已逾期",
        "即将超期",
        "有冲突待核",
    ];
    if policy::sees_personal_data(role) {
        h.push("反映人电话");
    }
    h
}

/// A time as people read it in the district (China Standard Time,
/// UTC+8, no daylight saving).
pub fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms.saturating_add(8 * 3_600_000))
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn yes(b: bool) -> String {
    if b { "是" } else { "否" }.to_owned()
}

fn named(table: &str, code: Option<&str>) -> String {
    let Some(code) = code.filter(|c| !c.is_empty()) else {
        return String::new();
    };
    labels::name(table, code).map_or_else(|| code.to_owned(), str::to_owned)
}

/// One case's row, in the order of [`case_headers`] for `role`: `phone` is
/// the reporter's (digits), shown only to roles that see personal data;
/// `work_order` the 12345 number, if any.
pub fn case_row(
    m: &RecordMeta,
    place: &PlaceNames,
    work_order: &str,
    phone: &str,
    role: Role,
    now: i64,
) -> Vec<String> {
    let status = IssueStatus::parse(&m.status)
        .map_or_else(|| m.status.clone(), |s| labels::issue_status(s).to_owned());
    let mut row = vec![
        m.number.clone(),
        work_order.to_owned(),
        m.title.clone(),
        status,
        named("kind", m.issue_kind.as_deref()),
        named("urgency", m.urgency.as_deref()),
        named("category", Some(&m.category)),
        named("source", Some(&m.facts.source)),
        place[0].clone(),
        place[1].clone(),
        place[2].clone(),
        m.assignee.clone().unwrap_or_default(),
        m.facts.lead_unit.clone(),
        time_text(m.created_at),
        m.deadline.map(time_text).unwrap_or_default(),
        yes(m.is_overdue(now)),
        yes(m.is_due_soon(now)),
        yes(m.conflict),
    ];
    if policy::sees_personal_data(role) {
        row.push(phone.to_owned());
    }
    row
}

/// The headers of a figures export.
pub const FIGURE_HEADERS: [&str; 17] = [
    "分组",
    "案件",
    "在办",
    "逾期",
    "响应率",
    "按期办结率",
    "问题解决率",
    "满意率",
    "退单率",
    "重启率",
    "重复投诉",
    "议事会",
    "议事案件",
    "议事后解决率",
    "措施按期验收率",
    "待核冲突",
    "统计时间",
];

fn rate(r: &Rate) -> String {
    match r.rate {
        Some(x) => format!("{:.1}% ({}/{})", x * 100.0, r.numerator, r.denominator),
        None => "—".into(),
    }
}

/// The rows of a figures table, the total last; `group` names a row's
/// group (places and categories by their names).
pub fn figure_rows(f: &Figures, group: &dyn Fn(&str) -> String) -> Vec<Vec<String>> {
    let at = time_text(f.at);
    let line = |name: String, r: &Row| {
        vec![
            name,
            r.issues.to_string(),
            r.open_issues.to_string(),
            r.overdue.to_string(),
            rate(&r.response),
            rate(&r.on_time_completion),
            rate(&r.resolution),
            rate(&r.satisfaction),
            rate(&r.returned),
            rate(&r.reopened),
            r.repeat_complaints.to_string(),
            r.meetings.to_string(),
            r.issues_discussed.to_string(),
            rate(&r.council_resolution),
            rate(&r.actions_verified_on_time),
            r.open_conflicts.to_string(),
            at.clone(),
        ]
    };
    let mut rows: Vec<Vec<String>> = f.rows.iter().map(|r| line(group(&r.group), r)).collect();
    rows.push(line("合计".into(), &f.total));
    rows
}
