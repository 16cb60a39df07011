//! The office figures, computed from index entries alone (each entry
//! carries the [`Facts`] its document yields), so a district of 100,000
//! cases is one pass over memory, no document loaded.
//!
//! Definitions (from the design notes, made exact here):
//!
//! * **response rate** — cases signed for within the response limit after
//!   dispatch ÷ cases dispatched. The limit is 30 minutes for red urgency
//!   and 2 hours otherwise ([`response_limit_ms`]).
//! * **on-time completion** — cases handled by their effective deadline ÷
//!   cases due: those with a deadline that has passed or that were handled.
//! * **overdue** — open cases past their deadline, listed with their age
//!   (now − deadline), oldest first.
//! * **resolution rate** — closed cases whose latest return visit that
//!   reached the resident says "resolved" ÷ closed cases with a return
//!   visit that reached the resident. Closed is not resolved.
//! * **satisfaction rate** — (satisfied + basically satisfied) ÷ rated
//!   return visits.
//! * **return rate** — dispatched cases returned at least once ÷ cases
//!   dispatched. **Reopen rate** — cases reopened at least once ÷ cases
//!   ever handled.
//! * **repeat complaints** — cases with an earlier case of the same
//!   address and category created within the 30 days before.
//! * **complex-dispute resolution rate** — the resolution rate over cases
//!   that a council meeting discussed.
//! * **council** — meetings by level and by format, cases discussed, and
//!   action items verified no later than their due date ÷ action items
//!   with a due date.
//! * **open conflicts** — records awaiting a conflict review, with the age
//!   of the oldest status conflict.
//!
//! Months are calendar months of the creation time in China Standard Time
//! (UTC+8), where the district is. Devices not synced are the server's to
//! add (it knows the devices); see the server's figures endpoint.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::query::RecordMeta;
use crate::{IssueStatus, RecordKind, Status};

/// How the rows of a figures table are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Street,
    #[default]
    Community,
    Grid,
    Category,
    /// The lead unit (responsible department).
    Department,
    /// The source channel (hotline, patrol, …).
    Channel,
    Month,
}

/// A ratio with its parts; `rate` is `None` when nothing was counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Rate {
    pub numerator: u64,
    pub denominator: u64,
    pub rate: Option<f64>,
}

impl Rate {
    fn add(&mut self, counted: bool, hit: bool) {
        if counted {
            self.denominator += 1;
            self.numerator += u64::from(hit);
        }
    }

    fn finish(&mut self) {
        self.rate = (self.denominator > 0).then(|| self.numerator as f64 / self.denominator as f64);
    }
}

/// One row of figures (a group, or the total).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Row {
    pub group: String,
    pub issues: u64,
    pub open_issues: u64,
    pub response: Rate,
    pub on_time_completion: Rate,
    pub overdue: u64,
    pub resolution: Rate,
    pub satisfaction: Rate,
    pub returned: Rate,
    pub reopened: Rate,
    pub repeat_complaints: u64,
    pub council_resolution: Rate,
    pub open_conflicts: u64,
    /// Age of the oldest open status conflict, ms.
    pub oldest_conflict_age_ms: Option<i64>,
    pub meetings: u64,
    pub meetings_by_level: BTreeMap<String, u64>,
    pub meetings_by_format: BTreeMap<String, u64>,
    /// Distinct cases the group's meetings discussed.
    pub issues_discussed: u64,
    pub actions_verified_on_time: Rate,
    #[serde(skip)]
    discussed: BTreeSet<[u8; 16]>,
}

/// An overdue case.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Overdue {
    pub id: String,
    pub number: String,
    pub title: String,
    pub street: String,
    pub community: String,
    pub grid: String,
    pub status: String,
    pub deadline: i64,
    pub age_ms: i64,
}

/// A figures table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Figures {
    pub group_by: GroupBy,
    /// When the figures were computed (overdue and ages are judged then).
    pub at: i64,
    pub rows: Vec<Row>,
    pub total: Row,
    /// Overdue cases, oldest first (at most [`MAX_OVERDUE_LISTED`]).
    pub overdue: Vec<Overdue>,
}

/// How many overdue cases a table lists.
pub const MAX_OVERDUE_LISTED: usize = 200;

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;
/// China Standard Time.
const UTC_OFFSET_MS: i64 = 8 * 60 * MINUTE;

/// How long after dispatch a case must be signed for.
pub fn response_limit_ms(urgency: Option<&str>) -> i64 {
    match urgency {
        Some("red") => 30 * MINUTE,
        _ => 120 * MINUTE,
    }
}

/// `YYYY-MM` of a time in China Standard Time.
pub fn month_of(ms: i64) -> String {
    let mut out = String::new();
    write_month(ms, &mut out);
    out
}

/// Writes `YYYY-MM` without a calendar library: figures call it once per
/// record (days to civil date, after Howard Hinnant's `civil_from_days`).
fn write_month(ms: i64, out: &mut String) {
    use std::fmt::Write;
    let z = ms.saturating_add(UTC_OFFSET_MS).div_euclid(DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(out, "{year:04}-{month:02}");
}

/// The row a record belongs to, written into `out` (no allocation per
/// record once the groups exist).
fn group_key(m: &RecordMeta, by: GroupBy, out: &mut String) {
    out.clear();
    match by {
        GroupBy::Street => out.push_str(&m.street),
        GroupBy::Community => out.push_str(&m.community),
        GroupBy::Grid => out.push_str(&m.grid),
        GroupBy::Category => out.push_str(&m.category),
        GroupBy::Department => out.push_str(&m.facts.lead_unit),
        GroupBy::Channel => out.push_str(&m.facts.source),
        GroupBy::Month => write_month(m.created_at, out),
    }
}

fn resolution_counts(m: &RecordMeta) -> (bool, bool) {
    let closed = m.status == IssueStatus::Closed.as_str();
    let counted = closed && m.facts.visit_reached;
    (counted, counted && m.facts.visit_resolved)
}

/// Computes the figures over `records` (issues and meetings), grouped.
pub fn compute<'a>(
    records: impl IntoIterator<Item = &'a RecordMeta>,
    by: GroupBy,
    now: i64,
) -> Figures {
    let records: Vec<&RecordMeta> = records.into_iter().collect();
    let is_issue = |m: &RecordMeta| m.kind == RecordKind::Issue.as_str();
    // Cases some meeting discussed.
    let discussed: BTreeSet<[u8; 16]> = records
        .iter()
        .filter(|m| !is_issue(m))
        .flat_map(|m| m.linked_issues.iter().copied())
        .collect();
    // Repeat complaints: an earlier case at the same address and category
    // within 30 days.
    let mut by_place: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    for m in records.iter().filter(|m| is_issue(m)) {
        if !m.facts.address.is_empty() {
            by_place
                .entry((&m.facts.address, &m.category))
                .or_default()
                .push(m.created_at);
        }
    }
    for times in by_place.values_mut() {
        times.sort_unstable();
    }
    let is_repeat = |m: &RecordMeta| {
        by_place
            .get(&(m.facts.address.as_str(), m.category.as_str()))
            .is_some_and(|times| {
                // Any earlier case in [created - 30 days, created).
                let from = times.partition_point(|&t| t < m.created_at - 30 * DAY);
                times.get(from).is_some_and(|&t| t < m.created_at)
            })
    };

    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut total = Row {
        group: "total".into(),
        ..Row::default()
    };
    let mut overdue = Vec::new();
    let mut key = String::new();
    for m in &records {
        group_key(m, by, &mut key);
        if !rows.contains_key(key.as_str()) {
            rows.insert(
                key.clone(),
                Row {
                    group: key.clone(),
                    ..Row::default()
                },
            );
        }
        let Some(row) = rows.get_mut(key.as_str()) else {
            continue;
        };
        for r in [&mut *row, &mut total] {
            add(r, m, now, &discussed, &is_repeat);
        }
        if is_issue(m) && m.is_overdue(now) {
            if let Some(deadline) = m.deadline {
                overdue.push(Overdue {
                    id: m.record_id().to_string(),
                    number: m.number.clone(),
                    title: m.title.clone(),
                    street: m.street.clone(),
                    community: m.community.clone(),
                    grid: m.grid.clone(),
                    status: m.status.clone(),
                    deadline,
                    age_ms: now - deadline,
                });
            }
        }
    }
    overdue.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then_with(|| a.id.cmp(&b.id)));
    overdue.truncate(MAX_OVERDUE_LISTED);
    let mut rows: Vec<Row> = rows.into_values().collect();
    for r in rows.iter_mut().chain(std::iter::once(&mut total)) {
        r.issues_discussed = r.discussed.len() as u64;
        for rate in [
            &mut r.response,
            &mut r.on_time_completion,
            &mut r.resolution,
            &mut r.satisfaction,
            &mut r.returned,
            &mut r.reopened,
            &mut r.council_resolution,
            &mut r.actions_verified_on_time,
        ] {
            rate.finish();
        }
    }
    Figures {
        group_by: by,
        at: now,
        rows,
        total,
        overdue,
    }
}

fn add(
    r: &mut Row,
    m: &RecordMeta,
    now: i64,
    discussed: &BTreeSet<[u8; 16]>,
    is_repeat: &impl Fn(&RecordMeta) -> bool,
) {
    let f = &m.facts;
    if m.conflict {
        r.open_conflicts += 1;
        if let Some(since) = f.conflict_since {
            let age = now - since;
            r.oldest_conflict_age_ms = Some(r.oldest_conflict_age_ms.map_or(age, |a| a.max(age)));
        }
    }
    if m.kind != RecordKind::Issue.as_str() {
        r.meetings += 1;
        if !f.level.is_empty() {
            *r.meetings_by_level.entry(f.level.clone()).or_default() += 1;
        }
        if !f.format.is_empty() {
            *r.meetings_by_format.entry(f.format.clone()).or_default() += 1;
        }
        r.discussed.extend(m.linked_issues.iter().copied());
        r.actions_verified_on_time.denominator += u64::from(f.actions_due);
        r.actions_verified_on_time.numerator += u64::from(f.actions_verified_on_time);
        return;
    }
    r.issues += 1;
    r.open_issues += u64::from(m.open);
    if let Some(dispatched) = f.dispatched_at {
        let limit = response_limit_ms(m.urgency.as_deref());
        r.response
            .add(true, f.signed_at.is_some_and(|s| s - dispatched <= limit));
        r.returned.add(true, f.returns > 0);
    }
    if let Some(deadline) = m.deadline {
        let due = f.handled_at.is_some() || deadline <= now;
        r.on_time_completion
            .add(due, f.handled_at.is_some_and(|h| h <= deadline));
    }
    r.overdue += u64::from(m.is_overdue(now));
    let (counted, resolved) = resolution_counts(m);
    r.resolution.add(counted, resolved);
    if discussed.contains(&m.id) {
        r.council_resolution.add(counted, resolved);
    }
    r.satisfaction.numerator += u64::from(f.satisfied + f.basically_satisfied);
    r.satisfaction.denominator += u64::from(f.satisfied + f.basically_satisfied + f.dissatisfied);
    r.reopened.add(f.handled_at.is_some(), f.reopens > 0);
    r.repeat_complaints += u64::from(is_repeat(m));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_match_the_calendar_in_china_standard_time() {
        // Every 7 hours over 60 years, against chrono.
        let mut t = -5 * 365 * DAY;
        while t < 55 * 365 * DAY {
            let expected = chrono::DateTime::from_timestamp_millis(t + UTC_OFFSET_MS)
                .map(|d| d.format("%Y-%m").to_string())
                .unwrap_or_default();
            assert_eq!(month_of(t), expected, "at {t}");
            t += 7 * 60 * MINUTE;
        }
        // 2026-02-28 17:00 UTC is already March in Beijing.
        assert_eq!(month_of(1_772_298_000_000), "2026-03");
    }
}
