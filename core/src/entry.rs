//! The in-memory form of index entries.
//!
//! A store holds an entry for every record in memory, so that lists,
//! counts and figures never load a document. A server holds a million of
//! them, so they are compact: the strings that repeat across records
//! (places, statuses, categories, departments, assignees, addresses…) are
//! interned once per store ([`Names`]) and an entry keeps 4-byte handles;
//! times are 8 bytes with no separate "absent" flag. An [`Entry`] converts
//! to and from the `RecordMeta` stored on disk and sent on the wire (in
//! `query`).
//!
//! Two flags derive from *other* records and are kept by the store's
//! index as those change: whether a council meeting discusses the case
//! (`discussed`), and whether it repeats an earlier complaint
//! (`repeat`; see [`crate::figures`]).

use std::collections::HashMap;
use std::num::NonZeroU32;

use crate::ids::RecordId;
use crate::model::RecordScope;
use crate::workflow::IssueStatus;

/// An interned string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sym(NonZeroU32);

impl Sym {
    pub(crate) fn get(self) -> u32 {
        self.0.get()
    }

    pub(crate) fn from_raw(n: NonZeroU32) -> Sym {
        Sym(n)
    }
}

/// An interned place: a (street, community, grid) triple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Place(u32);

impl Place {
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }

    pub(crate) fn from_index(i: usize) -> Place {
        Place(u32::try_from(i).unwrap_or(u32::MAX))
    }
}

/// The strings and places a store's entries refer to. Never shrinks: a
/// name outlives the records that used it (their number is bounded by the
/// district's places, categories, departments and people, not by records).
#[derive(Debug, Default)]
pub(crate) struct Names {
    strings: Vec<Box<str>>,
    by_string: HashMap<Box<str>, Sym>,
    places: Vec<(RecordScope, [Sym; 3])>,
    by_place: HashMap<[Sym; 3], Place>,
}

impl Names {
    pub(crate) fn intern(&mut self, s: &str) -> Sym {
        if let Some(sym) = self.by_string.get(s) {
            return *sym;
        }
        let n = u32::try_from(self.strings.len() + 1).unwrap_or(u32::MAX);
        let sym = Sym(NonZeroU32::new(n).unwrap_or(NonZeroU32::MAX));
        self.strings.push(s.into());
        self.by_string.insert(s.into(), sym);
        sym
    }

    /// The handle of `s` if any entry ever used it.
    pub(crate) fn find(&self, s: &str) -> Option<Sym> {
        self.by_string.get(s).copied()
    }

    pub(crate) fn get(&self, sym: Sym) -> &str {
        self.strings.get(sym.0.get() as usize - 1).map_or("", |s| s)
    }

    pub(crate) fn opt(&self, sym: Option<Sym>) -> Option<String> {
        sym.map(|s| self.get(s).to_owned())
    }

    pub(crate) fn place(&mut self, street: &str, community: &str, grid: &str) -> Place {
        let syms = [
            self.intern(street),
            self.intern(community),
            self.intern(grid),
        ];
        if let Some(p) = self.by_place.get(&syms) {
            return *p;
        }
        let p = Place(u32::try_from(self.places.len()).unwrap_or(u32::MAX));
        self.places
            .push((RecordScope::new(street, community, grid), syms));
        self.by_place.insert(syms, p);
        p
    }

    pub(crate) fn scope(&self, p: Place) -> &RecordScope {
        &self.places[p.index()].0
    }

    /// The place's street, community and grid handles.
    pub(crate) fn place_syms(&self, p: Place) -> [Sym; 3] {
        self.places[p.index()].1
    }

    /// How many places there are (every `Place` is below this).
    pub(crate) fn places(&self) -> usize {
        self.places.len()
    }
}

/// A time in ms, or none, in 8 bytes (`i64::MIN` is none: a document
/// saying exactly that reads as the next instant, a trillion years ago).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Ms(i64);

impl Ms {
    const NONE: Ms = Ms(i64::MIN);

    pub(crate) fn new(t: Option<i64>) -> Ms {
        match t {
            Some(t) => Ms(t.max(i64::MIN + 1)),
            None => Ms::NONE,
        }
    }

    pub(crate) fn get(self) -> Option<i64> {
        (self != Ms::NONE).then_some(self.0)
    }
}

/// What the figures need of a record, compact (see [`Facts`]).
#[derive(Clone, Debug)]
pub(crate) struct EntryFacts {
    pub source: Sym,
    pub lead_unit: Sym,
    pub address: Sym,
    pub dispatched_at: Ms,
    pub signed_at: Ms,
    pub handled_at: Ms,
    pub closed_at: Ms,
    pub conflict_since: Ms,
    pub returns: u32,
    pub reopens: u32,
    pub satisfied: u32,
    pub basically_satisfied: u32,
    pub dissatisfied: u32,
    pub visit_reached: bool,
    pub visit_resolved: bool,
    /// A meeting's facts; `None` when all of them are empty, as for every
    /// issue (the entry then saves their 52 bytes).
    pub meeting: Option<Box<MeetingFacts>>,
}

/// The facts only meetings have (see [`Facts`]).
#[derive(Clone, Debug)]
pub(crate) struct MeetingFacts {
    pub level: Sym,
    pub format: Sym,
    pub held_at: Ms,
    pub action_items: u32,
    pub actions_due: u32,
    pub actions_verified: u32,
    pub actions_verified_on_time: u32,
    pub actions_verified_dated: u32,
    /// In order.
    pub action_dues: Box<[i64]>,
}

/// A record's index entry as held in memory.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub id: RecordId,
    /// The case or meeting number followed by the title, in one allocation
    /// (see [`Entry::number`], [`Entry::title`]).
    pub label: Box<str>,
    /// Where the number ends in `label`.
    pub number_len: u32,
    pub linked_issues: Box<[[u8; 16]]>,
    pub unrecognized: Box<[Sym]>,
    pub deadline: Ms,
    pub created_at: i64,
    pub updated_at: i64,
    pub place: Place,
    pub kind: Sym,
    pub status: Sym,
    pub category: Sym,
    pub assignee: Option<Sym>,
    pub urgency: Option<Sym>,
    pub issue_kind: Option<Sym>,
    /// The status, parsed, for issues whose status this build knows.
    pub issue_status: Option<IssueStatus>,
    pub is_issue: bool,
    pub open: bool,
    pub conflict: bool,
    /// Some meeting discusses this case (kept by the index).
    pub discussed: bool,
    /// An earlier case of the same address and category was created in
    /// the 30 days before this one (kept by the index).
    pub repeat: bool,
    pub facts: EntryFacts,
    /// What the store holds in memory of the record's search text, when
    /// it keeps them (`store/search.rs`); carried across index writes.
    pub search: Option<crate::search::Held>,
}

impl Entry {
    /// The case or meeting number.
    pub(crate) fn number(&self) -> &str {
        self.label
            .get(..self.number_len as usize)
            .unwrap_or_default()
    }

    /// The title (a meeting's topic).
    pub(crate) fn title(&self) -> &str {
        self.label
            .get(self.number_len as usize..)
            .unwrap_or_default()
    }

    /// Overdue at `now` (see [`crate::issue::is_overdue`]).
    pub(crate) fn is_overdue(&self, now: i64) -> bool {
        self.issue_status
            .is_some_and(|s| crate::issue::is_overdue(s, self.deadline.get(), now))
    }

    /// About to breach at `now` (see [`crate::issue::is_due_soon`]).
    pub(crate) fn is_due_soon(&self, now: i64) -> bool {
        self.issue_status.is_some_and(|s| {
            crate::issue::is_due_soon(s, self.created_at, self.deadline.get(), now)
        })
    }

    /// The deadline, if it is running: the case is overdue at any `now`
    /// after it.
    pub(crate) fn overdue_from(&self) -> Option<i64> {
        self.issue_status
            .filter(|s| crate::issue::deadline_runs(*s))
            .and(self.deadline.get())
    }
}
