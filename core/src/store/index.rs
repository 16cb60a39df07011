//! The in-memory index: every record's entry (compact; see
//! [`crate::entry`]), what derives from several records at once (which
//! cases a meeting discusses, which complaints repeat an earlier one),
//! and the office figures kept per cell.
//!
//! # Figures kept as records change
//!
//! Entries are grouped in *cells*: one place (street, community, grid)
//! and one calendar month of creation. Each cell keeps its figures for
//! each grouping once asked ([`Part`]), and forgets them when one of its
//! records changes (or a flag derived from other records flips). A
//! figures request adds up the parts of the cells in its scope and time
//! range; only cells cut by a `from`/`to` inside their month are counted
//! afresh. So a request costs in proportion to the cells it covers, not
//! to every case ever recorded, and "now" (overdue, due, conflict ages)
//! is applied when the parts are added (each part keeps its deadlines
//! sorted).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use crate::entry::{Entry, Names, Place, Sym};
use crate::figures::{self, Figures, GroupBy, Part, Tally, Within};
use crate::ids::{RecordId, RecordKind};
use crate::model::RecordScope;
use crate::query::RecordMeta;

/// How many groupings a figures table has ([`GroupBy`]).
const GROUPINGS: usize = 7;

/// A place and a month of creation ([`figures::month_index`]).
type CellKey = (Place, i64);

#[derive(Debug, Default)]
struct Cell {
    slots: Vec<u32>,
    parts: [OnceLock<Part>; GROUPINGS],
    overdue: OnceLock<Vec<(i64, RecordId)>>,
}

impl Cell {
    /// Forgets what was computed from the cell's records.
    fn forget(&mut self) {
        self.parts = Default::default();
        self.overdue = OnceLock::new();
    }
}

/// The in-memory view of the index.
#[derive(Debug, Default)]
pub(super) struct Index {
    names: Names,
    slots: Vec<Entry>,
    by_id: BTreeMap<RecordId, u32>,
    /// Issue → meetings that link it (derived from the meetings' entries).
    pub(super) meetings_of: BTreeMap<RecordId, BTreeSet<RecordId>>,
    /// Cases by address and category, as (creation time, id) in order:
    /// what the repeat flags derive from.
    complaints: HashMap<(Sym, Sym), Vec<(i64, RecordId)>>,
    cells: HashMap<CellKey, Cell>,
    /// Records whose index entry could not be read or rebuilt.
    pub(super) corrupt: BTreeSet<RecordId>,
    /// The search texts kept in memory, when the store keeps them
    /// (`store/search.rs`); what every record's search needs in memory is
    /// its entry's [`Entry::search`].
    pub(super) texts: super::search::TextCache,
}

fn cell_key(e: &Entry) -> CellKey {
    (e.place, figures::month_index(e.created_at))
}

impl Index {
    pub(super) fn names(&self) -> &Names {
        &self.names
    }

    pub(super) fn get(&self, id: RecordId) -> Option<&Entry> {
        self.by_id.get(&id).map(|s| &self.slots[*s as usize])
    }

    pub(super) fn contains(&self, id: RecordId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Gives back the room the lists kept for growth while the index was
    /// loaded (up to half of each; ~60 MiB at a million records).
    pub(super) fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        for list in self.complaints.values_mut() {
            list.shrink_to_fit();
        }
        for cell in self.cells.values_mut() {
            cell.slots.shrink_to_fit();
        }
    }

    /// Every record id, in order.
    pub(super) fn ids(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.by_id.keys().copied()
    }

    /// Every entry, in no particular order.
    pub(super) fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.slots.iter()
    }

    /// The record's index entry as stored.
    pub(super) fn meta(&self, id: RecordId) -> Option<RecordMeta> {
        self.get(id).map(|e| e.meta(&self.names))
    }

    /// The record's kind (`None` inside: a kind this build does not know).
    pub(super) fn kind(&self, id: RecordId) -> Option<Option<RecordKind>> {
        self.get(id).map(|e| {
            if e.is_issue {
                Some(RecordKind::Issue)
            } else {
                RecordKind::parse(self.names.get(e.kind))
            }
        })
    }

    /// The record's scope as its document says.
    pub(super) fn scope(&self, id: RecordId) -> Option<RecordScope> {
        self.get(id).map(|e| self.names.scope(e.place).clone())
    }

    /// Up to `limit` entries after `after` in id order whose place `place`
    /// accepts (asked once per place) and whose id `keep` accepts.
    pub(super) fn after(
        &self,
        after: Option<RecordId>,
        limit: usize,
        place: impl Fn(&RecordScope) -> bool,
        mut keep: impl FnMut(RecordId) -> bool,
    ) -> Vec<RecordMeta> {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut allowed: Vec<Option<bool>> = vec![None; self.names.places()];
        self.by_id
            .range((start, Bound::Unbounded))
            .map(|(_, s)| &self.slots[*s as usize])
            .filter(|e| {
                *allowed[e.place.index()].get_or_insert_with(|| place(self.names.scope(e.place)))
                    && keep(e.id)
            })
            .take(limit)
            .map(|e| e.meta(&self.names))
            .collect()
    }

    pub(super) fn insert(&mut self, meta: RecordMeta) {
        let id = meta.record_id();
        let mut e = Entry::new(&meta, &mut self.names);
        e.discussed = e.is_issue && self.meetings_of.contains_key(&id);
        let mut search = None;
        if let Some(&slot) = self.by_id.get(&id) {
            // Most writes (a note, a status) leave the record in its cell,
            // its links and its place of complaint as they were: the entry
            // is replaced where it is, and nothing derived from other
            // records can change.
            let old = &self.slots[slot as usize];
            let same = cell_key(old) == cell_key(&e)
                && old.is_issue == e.is_issue
                && old.created_at == e.created_at
                && old.linked_issues == e.linked_issues
                && self.complaint_of(old) == self.complaint_of(&e);
            let repeat = old.repeat;
            // The search text's part stays until the store sets it.
            search = self.slots[slot as usize].search.take();
            if same {
                e.repeat = repeat;
                e.search = search;
                self.slots[slot as usize] = e;
                self.invalidate(slot);
                return;
            }
        }
        self.remove(id);
        e.search = search;
        e.discussed = e.is_issue && self.meetings_of.contains_key(&id);
        let links: Vec<RecordId> = if e.is_issue {
            Vec::new()
        } else {
            e.linked_issues
                .iter()
                .map(|i| RecordId::from_bytes(*i))
                .collect()
        };
        let complaint = self.complaint_of(&e);
        let created = e.created_at;
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        let cell = self.cells.entry(cell_key(&e)).or_default();
        cell.slots.push(slot);
        cell.forget();
        self.slots.push(e);
        self.by_id.insert(id, slot);
        self.corrupt.remove(&id);
        for issue in links {
            let meetings = self.meetings_of.entry(issue).or_default();
            let first = meetings.is_empty();
            meetings.insert(id);
            if first {
                self.set_discussed(issue, true);
            }
        }
        if let Some(place) = complaint {
            let cases = self.complaints.entry(place).or_default();
            let at = cases.partition_point(|c| *c < (created, id));
            cases.insert(at, (created, id));
            self.refresh_repeats(place, created);
        }
    }

    /// Sets what is held in memory of the record's search text.
    pub(super) fn set_search(&mut self, id: RecordId, held: Option<crate::search::Held>) {
        if let Some(&slot) = self.by_id.get(&id) {
            self.slots[slot as usize].search = held;
        }
    }

    pub(super) fn remove(&mut self, id: RecordId) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        let last = u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX);
        let key = cell_key(&self.slots[slot as usize]);
        self.cell_forget(key, slot);
        let e = self.slots.swap_remove(slot as usize);
        if slot != last {
            // The last entry moved into the freed slot.
            let moved = &self.slots[slot as usize];
            self.by_id.insert(moved.id, slot);
            if let Some(cell) = self.cells.get_mut(&cell_key(moved)) {
                for s in &mut cell.slots {
                    if *s == last {
                        *s = slot;
                    }
                }
            }
        }
        for issue in e.linked_issues.iter().map(|i| RecordId::from_bytes(*i)) {
            if let Some(meetings) = self.meetings_of.get_mut(&issue) {
                meetings.remove(&id);
                if meetings.is_empty() {
                    self.meetings_of.remove(&issue);
                    self.set_discussed(issue, false);
                }
            }
        }
        if let Some(place) = self.complaint_of(&e) {
            if let Some(cases) = self.complaints.get_mut(&place) {
                cases.retain(|c| c.1 != id);
                if cases.is_empty() {
                    self.complaints.remove(&place);
                }
            }
            self.refresh_repeats(place, e.created_at);
        }
    }

    /// Takes `slot` out of its cell, and the cell's figures with it.
    fn cell_forget(&mut self, key: CellKey, slot: u32) {
        if let Some(cell) = self.cells.get_mut(&key) {
            cell.slots.retain(|s| *s != slot);
            cell.forget();
            if cell.slots.is_empty() {
                self.cells.remove(&key);
            }
        }
    }

    fn invalidate(&mut self, slot: u32) {
        let key = cell_key(&self.slots[slot as usize]);
        if let Some(cell) = self.cells.get_mut(&key) {
            cell.forget();
        }
    }

    fn set_discussed(&mut self, issue: RecordId, discussed: bool) {
        let Some(&slot) = self.by_id.get(&issue) else {
            return;
        };
        let e = &mut self.slots[slot as usize];
        if e.is_issue && e.discussed != discussed {
            e.discussed = discussed;
            self.invalidate(slot);
        }
    }

    /// The (address, category) a case counts repeats by, if it has an address.
    fn complaint_of(&self, e: &Entry) -> Option<(Sym, Sym)> {
        (e.is_issue && !self.names.get(e.facts.address).is_empty())
            .then_some((e.facts.address, e.category))
    }

    /// Recomputes the repeat flag of the cases at `place` that a case
    /// created at `at` (arriving or leaving) can affect: those created
    /// from `at` up to the window after it.
    fn refresh_repeats(&mut self, place: (Sym, Sym), at: i64) {
        let Some(cases) = self.complaints.get(&place) else {
            return;
        };
        let from = cases.partition_point(|c| c.0 < at);
        let mut changes = Vec::new();
        for &(created, id) in &cases[from..] {
            if created > at.saturating_add(figures::REPEAT_WINDOW_MS) {
                break;
            }
            let earliest = created.saturating_sub(figures::REPEAT_WINDOW_MS);
            let first = cases.partition_point(|c| c.0 < earliest);
            let repeat = cases.get(first).is_some_and(|c| c.0 < created);
            changes.push((id, repeat));
        }
        for (id, repeat) in changes {
            if let Some(&slot) = self.by_id.get(&id) {
                if self.slots[slot as usize].repeat != repeat {
                    self.slots[slot as usize].repeat = repeat;
                    self.invalidate(slot);
                }
            }
        }
    }

    /// The office figures over the records `within` covers.
    pub(super) fn figures(&self, by: GroupBy, within: &Within<'_>, now: i64) -> Figures {
        let mut allowed: Vec<Option<bool>> = vec![None; self.names.places()];
        let mut tally = Tally::new(by, now);
        let entries = |cell: &Cell| {
            cell.slots
                .iter()
                .map(|s| &self.slots[*s as usize])
                .collect::<Vec<_>>()
        };
        for ((place, month), cell) in &self.cells {
            let ok = *allowed[place.index()]
                .get_or_insert_with(|| (within.place)(self.names.scope(*place)));
            if !ok {
                continue;
            }
            let (start, end) = (
                figures::month_start(*month),
                figures::month_start(month + 1),
            );
            let none =
                within.from.is_some_and(|f| f >= end) || within.to.is_some_and(|t| t <= start);
            let whole =
                within.from.is_none_or(|f| f <= start) && within.to.is_none_or(|t| t >= end);
            if none {
                continue;
            }
            if whole {
                let part = cell.parts[by as usize]
                    .get_or_init(|| Part::of(entries(cell), &self.names, by, now));
                if part.counts_at(now) {
                    tally.add(part, &self.names);
                } else {
                    // Asked about a time before the kept part was made
                    // (a clock set back): counted afresh, not kept.
                    tally.add(&Part::of(entries(cell), &self.names, by, now), &self.names);
                }
                let overdue = cell
                    .overdue
                    .get_or_init(|| figures::overdue_candidates(entries(cell)));
                tally.add_overdue(overdue);
            } else {
                let some: Vec<&Entry> = entries(cell)
                    .into_iter()
                    .filter(|e| within.created(e.created_at))
                    .collect();
                tally.add_entries(&some, &self.names);
            }
        }
        tally.finish(&self.names, |id| self.get(id))
    }

    /// The figures over the records `within` covers, counted afresh from
    /// every entry (what the cells must always add up to; for tests).
    #[cfg(test)]
    fn figures_afresh(&self, by: GroupBy, within: &Within<'_>, now: i64) -> Figures {
        let mut tally = Tally::new(by, now);
        let some: Vec<&Entry> = self
            .slots
            .iter()
            .filter(|e| (within.place)(self.names.scope(e.place)) && within.created(e.created_at))
            .collect();
        tally.add_entries(&some, &self.names);
        tally.finish(&self.names, |id| self.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Facts;
    use proptest::prelude::*;

    const DAY: i64 = 86_400_000;
    const T0: i64 = 1_767_225_600_000;

    fn meta(n: u8, spec: &Spec) -> RecordMeta {
        let issue = spec.kind < 3;
        RecordMeta {
            id: [n; 16],
            kind: if issue { "issue" } else { "meeting" }.into(),
            number: format!("N-{n}"),
            title: format!("t{n}"),
            street: "S1".into(),
            community: format!("C{}", spec.place % 2),
            grid: format!("G{}", spec.place),
            status: ["reported", "dispatched", "handled", "closed"][spec.status as usize].into(),
            open: spec.status < 3,
            deadline: spec.deadline.map(|d| T0 + i64::from(d) * DAY),
            assignee: None,
            urgency: Some(if spec.red { "red" } else { "yellow" }.into()),
            category: format!("cat{}", spec.category),
            issue_kind: None,
            created_at: T0 + i64::from(spec.created) * DAY,
            updated_at: T0,
            conflict: spec.conflict,
            linked_issues: if issue {
                Vec::new()
            } else {
                spec.links.iter().map(|l| [*l; 16]).collect()
            },
            facts: Facts {
                address: if spec.address == 0 {
                    String::new()
                } else {
                    format!("addr{}", spec.address)
                },
                dispatched_at: spec.dispatched.then_some(T0),
                signed_at: spec
                    .dispatched
                    .then_some(T0 + 60_000 * i64::from(spec.created)),
                handled_at: (spec.status >= 2).then_some(T0 + i64::from(spec.created) * DAY),
                visit_reached: spec.status == 3,
                visit_resolved: spec.red,
                satisfied: u32::from(spec.red),
                dissatisfied: u32::from(spec.conflict),
                conflict_since: spec.conflict.then_some(T0 - DAY),
                level: if issue {
                    String::new()
                } else {
                    "community".into()
                },
                action_items: u32::from(spec.place),
                actions_due: u32::from(spec.place),
                actions_verified_on_time: u32::from(spec.category),
                ..Facts::default()
            },
            unrecognized: Vec::new(),
        }
    }

    #[derive(Clone, Debug)]
    struct Spec {
        kind: u8,
        place: u8,
        status: u8,
        category: u8,
        address: u8,
        created: u16,
        deadline: Option<u16>,
        red: bool,
        dispatched: bool,
        conflict: bool,
        links: Vec<u8>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            (0u8..4, 0u8..3, 0u8..4, 0u8..2, 0u8..3),
            (0u16..120, proptest::option::of(0u16..120)),
            (any::<bool>(), any::<bool>(), any::<bool>()),
            proptest::collection::vec(0u8..12, 0..3),
        )
            .prop_map(
                |(
                    (kind, place, status, category, address),
                    (created, deadline),
                    (red, dispatched, conflict),
                    links,
                )| Spec {
                    kind,
                    place,
                    status,
                    category,
                    address,
                    created,
                    deadline,
                    red,
                    dispatched,
                    conflict,
                    links,
                },
            )
    }

    proptest! {
        /// Figures kept per cell as records arrive, change and leave are
        /// the figures counted afresh from the final entries, for every
        /// grouping, scope and time range, asked at times in any order
        /// (later than a kept part was made, and earlier: a clock set back).
        #[test]
        fn figures_kept_per_cell_equal_figures_counted_afresh(
            ops in proptest::collection::vec((0u8..12, proptest::option::of(spec())), 1..60),
            asks in proptest::collection::vec(
                (0usize..7, 0u16..130, 0u16..130, 0u8..3, 0u16..260), 1..6,
            ),
        ) {
            let mut index = Index::default();
            let mut fresh: BTreeMap<u8, RecordMeta> = BTreeMap::new();
            let all = [
                GroupBy::Street, GroupBy::Community, GroupBy::Grid, GroupBy::Category,
                GroupBy::Department, GroupBy::Channel, GroupBy::Month,
            ];
            for (n, op) in ops {
                match op {
                    Some(s) => {
                        index.insert(meta(n, &s));
                        fresh.insert(n, meta(n, &s));
                    }
                    None => {
                        index.remove(RecordId::from_bytes([n; 16]));
                        fresh.remove(&n);
                    }
                }
                // Ask between changes, so that parts are kept and must be
                // forgotten when they no longer hold.
                let everything = Within { place: &|_| true, from: None, to: None };
                index.figures(GroupBy::Grid, &everything, T0);
            }
            let mut rebuilt = Index::default();
            for m in fresh.values() {
                rebuilt.insert(m.clone());
            }
            for (by, a, b, scope, at) in asks {
                let by = all[by];
                let (from, to) = (T0 + i64::from(a.min(b)) * DAY / 2, T0 + i64::from(a.max(b)) * DAY);
                let place = move |s: &RecordScope| scope == 2 || s.community == format!("C{scope}");
                let within = Within { place: &place, from: Some(from), to: Some(to) };
                let now = T0 + i64::from(at) * DAY / 2;
                let kept = index.figures(by, &within, now);
                prop_assert_eq!(&kept, &index.figures_afresh(by, &within, now));
                prop_assert_eq!(&kept, &rebuilt.figures_afresh(by, &within, now));
                let everything = Within { place: &|_| true, from: None, to: None };
                prop_assert_eq!(
                    index.figures(by, &everything, now),
                    rebuilt.figures_afresh(by, &everything, now)
                );
            }
        }
    }

    #[test]
    fn months_start_where_they_begin() {
        let mut t = T0 - 400 * DAY;
        while t < T0 + 400 * DAY {
            let m = figures::month_index(t);
            assert!(
                figures::month_start(m) <= t && t < figures::month_start(m + 1),
                "{t}"
            );
            t += 7 * 3_600_000 + 13;
        }
    }
}
