//! The office figures, computed from index entries alone (each entry
//! carries the [`Facts`](crate::query::Facts) its document yields), no
//! document loaded. The store keeps them per place and month as records
//! change ([`Part`], kept by the store's index), so a table costs in
//! proportion to the places and months it covers, not to the cases ever
//! recorded; what depends on "now" (overdue, due, conflict ages) is
//! applied when the parts are added up ([`Tally`]).
//!
//! Definitions (from the design notes, made exact here):
//!
//! * **response rate** — cases signed for within the response limit after
//!   dispatch ÷ cases dispatched whose outcome is known: signed for (in
//!   time or late), or not signed for when the limit has passed. A case
//!   still inside its window is not counted yet. The limit is 30 minutes
//!   for red urgency and 2 hours otherwise ([`response_limit_ms`]).
//!   Meetings have no category, department or channel: tables grouped by
//!   those count them in the total only, not in a row of their own.
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
//!   address and category created within the 30 days before (any case
//!   the store holds, whatever the table's scope and time range).
//! * **complex-dispute resolution rate** — the resolution rate over cases
//!   that a council meeting discussed (any meeting the store holds).
//! * **council** — meetings by level and by format, cases discussed, and
//!   action items verified no later than their due date ÷ action items
//!   with a due date that were verified or whose due date has passed
//!   (one still ahead and not verified is not counted yet; a cancelled
//!   one, or one guided to a legal channel, is never counted).
//! * **open conflicts** — records awaiting a conflict review, with the age
//!   of the oldest status conflict.
//!
//! Months are calendar months of the creation time in China Standard Time
//! (UTC+8), where the district is. Devices not synced are the server's to
//! add (it knows the devices); see the server's figures endpoint.

use std::collections::{BTreeMap, BTreeSet};

use crate::entry::{Entry, Names, Sym};
use crate::ids::RecordId;
use crate::model::RecordScope;
use crate::workflow::IssueStatus;

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
/// How far back an earlier case makes a complaint a repeat.
pub(crate) const REPEAT_WINDOW_MS: i64 = 30 * DAY;
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
    let (year, month) = civil_month(month_index(ms));
    format!("{year:04}-{month:02}")
}

/// The calendar month (China Standard Time) of a time, counted from
/// year 0: `year * 12 + month - 1`. Without a calendar library (days to
/// civil date after Howard Hinnant's `civil_from_days`).
pub(crate) fn month_index(ms: i64) -> i64 {
    let z = ms.saturating_add(UTC_OFFSET_MS).div_euclid(DAY) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    year * 12 + month - 1
}

fn civil_month(index: i64) -> (i64, i64) {
    (index.div_euclid(12), index.rem_euclid(12) + 1)
}

/// The first instant of a month (see [`month_index`]), ms.
pub(crate) fn month_start(index: i64) -> i64 {
    // Days from civil, Hinnant's `days_from_civil`, for day 1.
    let (year, month) = civil_month(index);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days.saturating_mul(DAY).saturating_sub(UTC_OFFSET_MS)
}

/// Which records a figures table covers.
pub struct Within<'a> {
    /// The places that count (the office user's scope and the request's
    /// street, community or grid), asked once per place.
    pub place: &'a dyn Fn(&RecordScope) -> bool,
    /// Records created at or after this time.
    pub from: Option<i64>,
    /// Records created before this time.
    pub to: Option<i64>,
}

impl std::fmt::Debug for Within<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Within")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Within<'_> {
    /// Every record.
    pub const ALL: Within<'static> = Within {
        place: &|_| true,
        from: None,
        to: None,
    };

    pub(crate) fn created(&self, t: i64) -> bool {
        self.from.is_none_or(|f| t >= f) && self.to.is_none_or(|e| t < e)
    }
}

/// One group's figures over some records before "now" is known: what
/// depends on the time is kept as sorted deadlines, counted at `now` when
/// the table is made. The deadlines already passed when the part was made
/// (its `settled` time) are only counted (`passed`): time moves on, so
/// they stay passed at every later `now`, and a district's closed years
/// keep no list of them.
#[derive(Clone, Debug, Default)]
struct PartRow {
    issues: u64,
    open_issues: u64,
    /// Cases signed for (in time or not): counted whatever the time.
    response: Rate,
    /// When the response window of dispatched cases not signed for
    /// closes: missed once passed.
    response_windows: Vec<i64>,
    /// Handled cases with a deadline (counted whatever the time).
    on_time_handled: Rate,
    /// Deadlines of cases not handled: due once passed.
    undone_deadlines: Vec<i64>,
    /// Deadlines of running cases: overdue once passed.
    overdue_deadlines: Vec<i64>,
    /// How many of the four lists' deadlines had passed when the part was
    /// made (response windows, undone deadlines, overdue deadlines, action
    /// dues), no longer in the lists.
    passed: [u64; 4],
    resolution: Rate,
    satisfaction: Rate,
    returned: Rate,
    reopened: Rate,
    repeat_complaints: u64,
    council_resolution: Rate,
    open_conflicts: u64,
    conflict_since: Option<i64>,
    meetings: u64,
    by_level: BTreeMap<Sym, u64>,
    by_format: BTreeMap<Sym, u64>,
    discussed: Vec<[u8; 16]>,
    /// Verified dated action items (counted whatever the time).
    actions: Rate,
    /// Due dates of action items still to be verified: missed once
    /// passed.
    action_dues: Vec<i64>,
}

/// Whether a deadline (first) counts as passed at a time (second).
type Counts = fn(i64, i64) -> bool;

/// The figures of some records (a cell of the index: one place, one
/// month), grouped, before "now" is known.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    rows: BTreeMap<i64, PartRow>,
    /// The time the part was made at: it counts at this time or later
    /// only (see [`PartRow`]).
    settled: i64,
}

/// Running cases with a deadline, by deadline then id: where the overdue
/// list comes from (one per cell, whatever the grouping).
pub(crate) fn overdue_candidates<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Vec<(i64, RecordId)> {
    let mut out: Vec<(i64, RecordId)> = entries
        .into_iter()
        .filter_map(|e| e.overdue_from().map(|d| (d, e.id)))
        .collect();
    out.sort_unstable();
    // Kept for as long as the cell is unchanged: no spare capacity.
    out.shrink_to_fit();
    out
}

/// The row key of records that belong to no row of the grouping (meetings
/// by category, department or channel): counted in the total only.
const TOTAL_ONLY: i64 = i64::MIN;

/// The row key of an entry: a name's handle, or the month.
fn group_key(e: &Entry, names: &Names, by: GroupBy) -> i64 {
    if !e.is_issue
        && matches!(
            by,
            GroupBy::Category | GroupBy::Department | GroupBy::Channel
        )
    {
        return TOTAL_ONLY;
    }
    let sym = match by {
        GroupBy::Street => names.place_syms(e.place)[0],
        GroupBy::Community => names.place_syms(e.place)[1],
        GroupBy::Grid => names.place_syms(e.place)[2],
        GroupBy::Category => e.category,
        GroupBy::Department => e.facts.lead_unit,
        GroupBy::Channel => e.facts.source,
        GroupBy::Month => return month_index(e.created_at),
    };
    i64::from(sym.get())
}

impl Part {
    /// The figures of `entries` grouped `by`, made at `now`: it counts at
    /// `now` or later ([`Part::counts_at`]).
    pub(crate) fn of<'a>(
        entries: impl IntoIterator<Item = &'a Entry>,
        names: &Names,
        by: GroupBy,
        now: i64,
    ) -> Part {
        let red = names.find("red");
        let mut part = Part {
            rows: BTreeMap::new(),
            settled: now,
        };
        for e in entries {
            let row = part.rows.entry(group_key(e, names, by)).or_default();
            row.add(e, red);
        }
        for row in part.rows.values_mut() {
            row.discussed.sort_unstable();
            row.discussed.dedup();
            row.discussed.shrink_to_fit();
            // Each list with the test that makes one of its deadlines
            // count (as `Row::absorb` applies it).
            let lists: [(&mut Vec<i64>, Counts); 4] = [
                (&mut row.response_windows, |d, now| d < now),
                (&mut row.undone_deadlines, |d, now| d <= now),
                (&mut row.overdue_deadlines, |d, now| d < now),
                (&mut row.action_dues, |d, now| d < now),
            ];
            for (passed, (list, counts)) in row.passed.iter_mut().zip(lists) {
                list.sort_unstable();
                let n = list.partition_point(|&d| counts(d, now));
                list.drain(..n);
                list.shrink_to_fit();
                *passed = n as u64;
            }
        }
        part
    }

    /// Whether the part may be counted at `now` (made then or before).
    pub(crate) fn counts_at(&self, now: i64) -> bool {
        self.settled <= now
    }
}

impl PartRow {
    fn add(&mut self, e: &Entry, red: Option<Sym>) {
        let f = &e.facts;
        if e.conflict {
            self.open_conflicts += 1;
            if let Some(since) = f.conflict_since.get() {
                self.conflict_since = Some(self.conflict_since.map_or(since, |s| s.min(since)));
            }
        }
        if !e.is_issue {
            self.meetings += 1;
            self.discussed.extend(e.linked_issues.iter().copied());
            // A meeting with no facts of its own (no level, format or
            // action items) counts in no level or format row.
            let Some(m) = f.meeting.as_deref() else {
                return;
            };
            for (sym, counts) in [
                (m.level, &mut self.by_level),
                (m.format, &mut self.by_format),
            ] {
                *counts.entry(sym).or_default() += 1;
            }
            self.actions.denominator += u64::from(m.actions_verified_dated);
            self.actions.numerator += u64::from(m.actions_verified_on_time);
            self.action_dues.extend(m.action_dues.iter().copied());
            return;
        }
        self.issues += 1;
        self.open_issues += u64::from(e.open);
        if let Some(dispatched) = f.dispatched_at.get() {
            let limit = if red.is_some() && e.urgency == red {
                response_limit_ms(Some("red"))
            } else {
                response_limit_ms(None)
            };
            match f.signed_at.get() {
                Some(signed) => self.response.add(true, signed - dispatched <= limit),
                None => self.response_windows.push(dispatched.saturating_add(limit)),
            }
            self.returned.add(true, f.returns > 0);
        }
        if let Some(deadline) = e.deadline.get() {
            match f.handled_at.get() {
                Some(h) => self.on_time_handled.add(true, h <= deadline),
                None => self.undone_deadlines.push(deadline),
            }
        }
        if let Some(d) = e.overdue_from() {
            self.overdue_deadlines.push(d);
        }
        let counted = e.issue_status == Some(IssueStatus::Closed) && f.visit_reached;
        let resolved = counted && f.visit_resolved;
        self.resolution.add(counted, resolved);
        if e.discussed {
            self.council_resolution.add(counted, resolved);
        }
        self.satisfaction.numerator += u64::from(f.satisfied + f.basically_satisfied);
        self.satisfaction.denominator +=
            u64::from(f.satisfied + f.basically_satisfied + f.dissatisfied);
        self.reopened
            .add(f.handled_at.get().is_some(), f.reopens > 0);
        self.repeat_complaints += u64::from(e.repeat);
    }
}

impl Rate {
    fn absorb(&mut self, other: Rate) {
        self.numerator += other.numerator;
        self.denominator += other.denominator;
    }
}

impl Row {
    fn absorb(&mut self, p: &PartRow, names: &Names, now: i64) {
        self.issues += p.issues;
        self.open_issues += p.open_issues;
        let [windows_passed, undone_passed, overdue_passed, dues_passed] = p.passed;
        self.response.absorb(p.response);
        // Not signed for: missed once the window has closed.
        self.response.denominator +=
            windows_passed + p.response_windows.partition_point(|&d| d < now) as u64;
        self.on_time_completion.absorb(p.on_time_handled);
        // Not handled: due once the deadline has passed (deadline <= now).
        self.on_time_completion.denominator +=
            undone_passed + p.undone_deadlines.partition_point(|&d| d <= now) as u64;
        self.overdue += overdue_passed + p.overdue_deadlines.partition_point(|&d| d < now) as u64;
        self.resolution.absorb(p.resolution);
        self.satisfaction.absorb(p.satisfaction);
        self.returned.absorb(p.returned);
        self.reopened.absorb(p.reopened);
        self.repeat_complaints += p.repeat_complaints;
        self.council_resolution.absorb(p.council_resolution);
        self.open_conflicts += p.open_conflicts;
        if let Some(since) = p.conflict_since {
            let age = now - since;
            self.oldest_conflict_age_ms =
                Some(self.oldest_conflict_age_ms.map_or(age, |a| a.max(age)));
        }
        self.meetings += p.meetings;
        for (from, to) in [
            (&p.by_level, &mut self.meetings_by_level),
            (&p.by_format, &mut self.meetings_by_format),
        ] {
            for (sym, n) in from {
                let name = names.get(*sym);
                if !name.is_empty() {
                    *to.entry(name.to_owned()).or_default() += n;
                }
            }
        }
        self.discussed.extend(p.discussed.iter().copied());
        self.actions_verified_on_time.absorb(p.actions);
        self.actions_verified_on_time.denominator +=
            dues_passed + p.action_dues.partition_point(|&d| d < now) as u64;
    }
}

/// A figures table being put together from parts.
pub(crate) struct Tally {
    by: GroupBy,
    now: i64,
    rows: BTreeMap<String, Row>,
    total: Row,
    /// The oldest overdue cases so far (at most [`MAX_OVERDUE_LISTED`]):
    /// a max-heap on (deadline, id), so the newest is dropped first.
    overdue: std::collections::BinaryHeap<(i64, RecordId)>,
}

impl Tally {
    pub(crate) fn new(by: GroupBy, now: i64) -> Tally {
        Tally {
            by,
            now,
            rows: BTreeMap::new(),
            total: Row {
                group: "total".into(),
                ..Row::default()
            },
            overdue: std::collections::BinaryHeap::new(),
        }
    }

    /// Adds a part made at this table's time or before
    /// ([`Part::counts_at`]; one made later would count deadlines not yet
    /// passed, and is refused by a debug assertion).
    pub(crate) fn add(&mut self, part: &Part, names: &Names) {
        debug_assert!(
            part.counts_at(self.now),
            "a part made after the table's time"
        );
        for (key, p) in &part.rows {
            if *key == TOTAL_ONLY {
                self.total.absorb(p, names, self.now);
                continue;
            }
            let group = match self.by {
                GroupBy::Month => {
                    let (year, month) = civil_month(*key);
                    format!("{year:04}-{month:02}")
                }
                _ => u32::try_from(*key)
                    .ok()
                    .and_then(std::num::NonZeroU32::new)
                    .map(|n| names.get(Sym::from_raw(n)).to_owned())
                    .unwrap_or_default(),
            };
            let row = self.rows.entry(group).or_insert_with_key(|g| Row {
                group: g.clone(),
                ..Row::default()
            });
            row.absorb(p, names, self.now);
            self.total.absorb(p, names, self.now);
        }
    }

    /// Adds some records counted afresh (their part and their overdue
    /// candidates).
    pub(crate) fn add_entries(&mut self, entries: &[&Entry], names: &Names) {
        let by = self.by;
        self.add(
            &Part::of(entries.iter().copied(), names, by, self.now),
            names,
        );
        self.add_overdue(&overdue_candidates(entries.iter().copied()));
    }

    /// Offers the overdue candidates of some records (in order, see
    /// [`overdue_candidates`]) to the overdue list.
    pub(crate) fn add_overdue(&mut self, candidates: &[(i64, RecordId)]) {
        for item in candidates {
            if item.0 >= self.now {
                break;
            }
            if self.overdue.len() < MAX_OVERDUE_LISTED {
                self.overdue.push(*item);
            } else if self.overdue.peek().is_some_and(|newest| item < newest) {
                self.overdue.pop();
                self.overdue.push(*item);
            } else {
                break;
            }
        }
    }

    /// The table; `entry` finds an overdue case's entry.
    pub(crate) fn finish<'a>(
        self,
        names: &Names,
        entry: impl Fn(RecordId) -> Option<&'a Entry>,
    ) -> Figures {
        let now = self.now;
        let overdue = self
            .overdue
            .into_sorted_vec()
            .into_iter()
            .filter_map(|(deadline, id)| {
                let e = entry(id)?;
                let scope = names.scope(e.place);
                Some(Overdue {
                    id: id.to_string(),
                    number: e.number().to_owned(),
                    title: e.title().to_owned(),
                    street: scope.street.clone(),
                    community: scope.community.clone(),
                    grid: scope.grid.clone(),
                    status: names.get(e.status).to_owned(),
                    deadline,
                    age_ms: now - deadline,
                })
            })
            .collect();
        let mut rows: Vec<Row> = self.rows.into_values().collect();
        let mut total = self.total;
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
            group_by: self.by,
            at: now,
            rows,
            total,
            overdue,
        }
    }
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
