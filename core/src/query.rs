//! The per-record metadata index and the queries over it.
//!
//! Lists and counts never load Automerge documents: every write derives a
//! small [`RecordMeta`] from the document and stores it in the same atomic
//! batch as the document bytes. The store keeps all of them in memory in
//! a compact form (`entry::Entry`, a few hundred bytes each) and answers
//! queries from there.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::entry::{Entry, EntryFacts, MeetingFacts, Ms, Names, Place, Sym};
use crate::ids::{RecordId, RecordKind};
use crate::issue::{self, IssueSummary};
use crate::meeting::MeetingView;
pub use crate::model::{Facts, Facts3, RecordScope};
use crate::search::TextSource;
use crate::workflow::{ActionStatus, IssueStatus, Status};
use crate::Result;

/// What lists and counts know about a record without loading it.
///
/// It is derived from the document, so every replica holding the same
/// changes derives the same meta (`updated_at` is the latest change time,
/// a device clock: for display and sorting only).
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, serde::Serialize)]
pub struct RecordMeta {
    #[serde(serialize_with = "id_as_text")]
    pub id: [u8; 16],
    pub kind: String,
    /// Case number or meeting number.
    pub number: String,
    pub title: String,
    pub street: String,
    pub community: String,
    pub grid: String,
    /// Derived status (issues: the workflow status; meetings: scheduled,
    /// held or concluded).
    pub status: String,
    /// Whether work is outstanding.
    pub open: bool,
    /// Effective deadline (issues) or next follow-up (meetings), ms.
    pub deadline: Option<i64>,
    pub assignee: Option<String>,
    pub urgency: Option<String>,
    pub category: String,
    pub issue_kind: Option<String>,
    pub created_at: i64,
    /// The latest change time seen, ms.
    pub updated_at: i64,
    /// A status or register conflict awaits review.
    pub conflict: bool,
    /// Meetings: the issues they discuss (the only place the link is written).
    #[serde(serialize_with = "ids_as_text")]
    pub linked_issues: Vec<[u8; 16]>,
    /// What the figures need, so that they never load documents.
    pub facts: Facts,
    /// The fields holding values written by a newer app that this build
    /// does not know (see [`crate::doc::Unrecognized`]); empty for most.
    pub unrecognized: Vec<String>,
}

/// Which derivation of index entries this build runs: raised whenever the
/// same document may derive another `RecordMeta` (a field or value this
/// build learns, a workflow rule, a new fact). Sync tells devices the
/// server's, and a device stores the server's index entry for a whole
/// record only when it is its own (see `sync::WireMeta`).
/// 2: meetings' facts carry the due dates of action items still to be
/// verified.
pub const DERIVATION: u32 = 2;

fn id_as_text<S: serde::Serializer>(id: &[u8; 16], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&RecordId::from_bytes(*id))
}

fn ids_as_text<S: serde::Serializer>(
    ids: &[[u8; 16]],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| RecordId::from_bytes(*id).to_string()))
}

impl RecordMeta {
    pub fn record_id(&self) -> RecordId {
        RecordId::from_bytes(self.id)
    }

    /// The record's scope as derived from its document.
    pub fn scope(&self) -> RecordScope {
        RecordScope::new(&self.street, &self.community, &self.grid)
    }

    pub fn record_kind(&self) -> Option<RecordKind> {
        RecordKind::parse(&self.kind)
    }

    /// Whether the record is about to breach at `now` (issues only; see
    /// [`issue::is_due_soon`]).
    pub fn is_due_soon(&self, now: i64) -> bool {
        match IssueStatus::parse(&self.status) {
            Some(status) if self.kind == RecordKind::Issue.as_str() => {
                issue::is_due_soon(status, self.created_at, self.deadline, now)
            }
            _ => false,
        }
    }

    /// Whether the record is overdue at `now` (issues only).
    pub fn is_overdue(&self, now: i64) -> bool {
        match IssueStatus::parse(&self.status) {
            Some(status) if self.kind == RecordKind::Issue.as_str() => {
                issue::is_overdue(status, self.deadline, now)
            }
            _ => false,
        }
    }

    pub(crate) fn from_issue(id: RecordId, v: &IssueSummary, updated_at: i64) -> Self {
        RecordMeta {
            id: *id.as_bytes(),
            kind: RecordKind::Issue.as_str().into(),
            number: v.case_no.clone(),
            title: v.title.clone(),
            street: v.location.street.clone(),
            community: v.location.community.clone(),
            grid: v.location.grid.clone(),
            status: v.status.as_str().into(),
            open: v.status.is_open(),
            deadline: v.effective_deadline,
            assignee: v.assignee.clone(),
            urgency: v.urgency.map(|u| u.as_str().into()),
            category: v.category.clone(),
            issue_kind: v.kind.map(|k| k.as_str().into()),
            created_at: v.created_at,
            updated_at,
            conflict: v.conflict,
            linked_issues: Vec::new(),
            facts: v.facts.clone(),
            unrecognized: v.unrecognized.clone(),
        }
    }

    pub(crate) fn from_meeting(v: &MeetingView, updated_at: i64) -> Self {
        RecordMeta {
            id: *v.id.as_bytes(),
            kind: RecordKind::Meeting.as_str().into(),
            number: v.meeting_no.clone(),
            title: v.topic.clone(),
            street: v.location.street.clone(),
            community: v.location.community.clone(),
            grid: v.location.grid.clone(),
            status: v.status().into(),
            open: v.is_open(),
            deadline: v.next_follow_up_at,
            assignee: None,
            urgency: None,
            category: String::new(),
            issue_kind: None,
            created_at: v.created_at,
            updated_at,
            conflict: v.has_conflict(),
            linked_issues: v.issue_ids.iter().map(|i| *i.as_bytes()).collect(),
            facts: meeting_facts(v),
            unrecognized: v.unrecognized.iter().map(|u| u.field.clone()).collect(),
        }
    }
}

fn meeting_facts(v: &MeetingView) -> Facts {
    let mut f = Facts {
        level: v.level.map(|l| l.as_str().to_owned()).unwrap_or_default(),
        format: v.format.map(|x| x.as_str().to_owned()).unwrap_or_default(),
        held_at: v.held_at,
        ..Facts::default()
    };
    for item in &v.action_items {
        f.action_items += 1;
        f.actions_due += u32::from(item.due.is_some());
        let finished = matches!(
            item.status,
            ActionStatus::Cancelled | ActionStatus::GuidedLegal
        );
        if let (Some(due), false) = (item.due, finished || item.status == ActionStatus::Verified) {
            f.action_dues.push(due);
        }
        if item.status == ActionStatus::Verified {
            f.actions_verified += 1;
            f.actions_verified_dated += u32::from(item.due.is_some());
            let verified_at = item
                .transitions
                .iter()
                .filter(|e| e.to == ActionStatus::Verified.as_str())
                .map(|e| e.at)
                .max();
            if let (Some(at), Some(due)) = (verified_at, item.due) {
                f.actions_verified_on_time += u32::from(at <= due);
            }
        }
    }
    f.action_dues.sort_unstable();
    f
}

/// How results are ordered. Ties are broken by record id, so paging is
/// stable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Most recently changed first.
    #[default]
    UpdatedDesc,
    /// Earliest deadline first; records without one last.
    DeadlineAsc,
    /// Oldest first.
    CreatedAsc,
}

/// Which records to list or count. Every set filter must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub kind: Option<RecordKind>,
    pub street: Option<String>,
    pub community: Option<String>,
    pub grid: Option<String>,
    /// Any of these statuses.
    pub statuses: Vec<String>,
    pub open: Option<bool>,
    pub assignee: Option<String>,
    /// Overdue (or not) at `now`.
    pub overdue: Option<bool>,
    /// About to breach (or not) at `now`: the last quarter of the window
    /// to the deadline ([`crate::issue::is_due_soon`]).
    pub due_soon: Option<bool>,
    pub conflict: Option<bool>,
    /// Issues of this urgency (`red`, `yellow`, `blue`).
    pub urgency: Option<String>,
    /// Issues of this kind (`demand`, `complaint`, …).
    pub issue_kind: Option<String>,
    pub category: Option<String>,
    /// Issues that came in through this channel (`hotline_12345`, …).
    pub source: Option<String>,
    /// Issues led by this department.
    pub lead_unit: Option<String>,
    /// Created at or after, ms.
    pub created_from: Option<i64>,
    /// Created before, ms.
    pub created_to: Option<i64>,
    /// Deadline at or after, ms (records without one never match).
    pub deadline_from: Option<i64>,
    /// Deadline before, ms. (A range that ends before it begins matches
    /// nothing.)
    pub deadline_to: Option<i64>,
    /// Search terms, as typed (see [`crate::search`]); needs a store that
    /// keeps search texts.
    pub text: Option<String>,
    /// The reporter's phone number, matched exactly on its digits. Only
    /// for roles that see personal data (the caller checks
    /// [`crate::policy::sees_personal_data`]); needs search texts.
    pub phone: Option<String>,
    /// Issues under supervision (or not); needs search texts.
    pub supervised: Option<bool>,
    /// Issues with notes, visits or photos after their close (or not);
    /// needs search texts.
    pub activity_after_close: Option<bool>,
    /// Issues with an extension request awaiting an answer (or not);
    /// needs search texts.
    pub extension_requested: Option<bool>,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
    /// The time overdue is judged at, ms since the epoch; `None`: the
    /// store's clock when the query runs.
    pub now: Option<i64>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            kind: None,
            street: None,
            community: None,
            grid: None,
            statuses: Vec::new(),
            open: None,
            assignee: None,
            overdue: None,
            due_soon: None,
            conflict: None,
            urgency: None,
            issue_kind: None,
            category: None,
            source: None,
            lead_unit: None,
            created_from: None,
            created_to: None,
            deadline_from: None,
            deadline_to: None,
            text: None,
            phone: None,
            supervised: None,
            activity_after_close: None,
            extension_requested: None,
            sort: Sort::default(),
            offset: 0,
            limit: 50,
            now: None,
        }
    }
}

impl Query {
    /// Issues only.
    pub fn issues() -> Self {
        Query {
            kind: Some(RecordKind::Issue),
            ..Query::default()
        }
    }

    /// Meetings only.
    pub fn meetings() -> Self {
        Query {
            kind: Some(RecordKind::Meeting),
            ..Query::default()
        }
    }

    pub fn grid(mut self, grid: impl Into<String>) -> Self {
        self.grid = Some(grid.into());
        self
    }

    pub fn community(mut self, community: impl Into<String>) -> Self {
        self.community = Some(community.into());
        self
    }

    pub fn street(mut self, street: impl Into<String>) -> Self {
        self.street = Some(street.into());
        self
    }

    pub fn status(mut self, status: impl Status) -> Self {
        self.statuses.push(status.as_str().into());
        self
    }

    pub fn open(mut self, open: bool) -> Self {
        self.open = Some(open);
        self
    }

    pub fn assignee(mut self, assignee: impl Into<String>) -> Self {
        self.assignee = Some(assignee.into());
        self
    }

    pub fn overdue(mut self, overdue: bool) -> Self {
        self.overdue = Some(overdue);
        self
    }

    pub fn due_soon(mut self, due_soon: bool) -> Self {
        self.due_soon = Some(due_soon);
        self
    }

    pub fn conflict(mut self, conflict: bool) -> Self {
        self.conflict = Some(conflict);
        self
    }

    pub fn sort(mut self, sort: Sort) -> Self {
        self.sort = sort;
        self
    }

    pub fn page(mut self, offset: usize, limit: usize) -> Self {
        self.offset = offset;
        self.limit = limit;
        self
    }

    pub fn at(mut self, now: i64) -> Self {
        self.now = Some(now);
        self
    }

    /// Records whose text holds every term of `q` (see [`crate::search`]).
    pub fn search(mut self, q: impl Into<String>) -> Self {
        self.text = Some(q.into());
        self
    }

    /// Refuses filter values no record can have, naming the valid ones:
    /// a mistyped `status=close` is an error, not an empty list.
    pub fn check(&self) -> crate::Result<()> {
        use crate::issue::{IssueKind, Urgency};
        use crate::model::Source;
        fn one_of(field: &'static str, value: &str, valid: &[&str]) -> crate::Result<()> {
            if valid.contains(&value) {
                return Ok(());
            }
            Err(crate::Error::InvalidInput {
                field,
                reason: format!("{value:?} is not one of: {}", valid.join(", ")),
            })
        }
        let mut statuses: Vec<&str> = Vec::new();
        if self.kind != Some(RecordKind::Meeting) {
            statuses.extend(IssueStatus::ALL.iter().map(|s| s.as_str()));
        }
        if self.kind != Some(RecordKind::Issue) {
            statuses.extend(crate::meeting::MEETING_STATUSES);
        }
        for s in &self.statuses {
            one_of("status", s, &statuses)?;
        }
        if let Some(u) = &self.urgency {
            let valid: Vec<&str> = Urgency::ALL.iter().map(|u| u.as_str()).collect();
            one_of("urgency", u, &valid)?;
        }
        if let Some(k) = &self.issue_kind {
            let valid: Vec<&str> = IssueKind::ALL.iter().map(|k| k.as_str()).collect();
            one_of("kind", k, &valid)?;
        }
        if let Some(s) = &self.source {
            let valid: Vec<&str> = Source::ALL.iter().map(|s| s.as_str()).collect();
            one_of("source", s, &valid)?;
        }
        if let Some(q) = &self.text {
            crate::search::Terms::parse(q)?;
        }
        if let Some(p) = &self.phone {
            if crate::search::phone_digits(p).len() < 5 {
                return Err(crate::Error::InvalidInput {
                    field: "phone",
                    reason: "a phone number to look up has at least 5 digits".into(),
                });
            }
        }
        Ok(())
    }

    /// Whether the query needs search texts (terms, a phone number, or
    /// the flags kept with them).
    pub fn needs_texts(&self) -> bool {
        self.text.as_deref().is_some_and(|q| !q.trim().is_empty())
            || self.phone.is_some()
            || self.supervised.is_some()
            || self.activity_after_close.is_some()
            || self.extension_requested.is_some()
    }
}

/// A query made ready for one index's entries: its names resolved to the
/// index's handles, and which places pass its place filters and the
/// caller's (each place asked once).
pub(crate) struct Matcher {
    /// A filter names something no record has: nothing matches.
    never: bool,
    kind: Option<Sym>,
    statuses: Vec<Sym>,
    assignee: Option<Sym>,
    places: Vec<bool>,
    open: Option<bool>,
    overdue: Option<bool>,
    due_soon: Option<bool>,
    conflict: Option<bool>,
    urgency: Option<Sym>,
    issue_kind: Option<Sym>,
    category: Option<Sym>,
    source: Option<Sym>,
    lead_unit: Option<Sym>,
    created: (i64, i64),
    deadline: Option<(i64, i64)>,
    terms: crate::search::Terms,
    /// [`crate::search::phone_key`] of the phone asked for.
    phone: Option<u64>,
    supervised: Option<bool>,
    activity_after_close: Option<bool>,
    extension_requested: Option<bool>,
    /// [`Query::needs_texts`].
    needs_texts: bool,
    now: i64,
}

impl Matcher {
    pub(crate) fn new(q: &Query, names: &Names, place: impl Fn(&RecordScope) -> bool) -> Matcher {
        let mut never = false;
        let mut find = |name: &str| {
            let sym = names.find(name);
            never |= sym.is_none();
            sym
        };
        let kind = q.kind.and_then(|k| find(k.as_str()));
        let assignee = q.assignee.as_deref().and_then(&mut find);
        let urgency = q.urgency.as_deref().and_then(&mut find);
        let issue_kind = q.issue_kind.as_deref().and_then(&mut find);
        let category = q.category.as_deref().and_then(&mut find);
        let source = q.source.as_deref().and_then(&mut find);
        let lead_unit = q.lead_unit.as_deref().and_then(&mut find);
        // Checked by `Query::check`; terms that cannot be read match nothing.
        let terms = match q.text.as_deref().map(crate::search::Terms::parse) {
            None => crate::search::Terms::default(),
            Some(Ok(terms)) => terms,
            Some(Err(_)) => {
                never = true;
                crate::search::Terms::default()
            }
        };
        let statuses: Vec<Sym> = q.statuses.iter().filter_map(|s| names.find(s)).collect();
        never |= !q.statuses.is_empty() && statuses.is_empty();
        let eq =
            |filter: &Option<String>, value: &str| filter.as_deref().is_none_or(|f| f == value);
        let places = (0..names.places())
            .map(|p| {
                let s = names.scope(Place::from_index(p));
                eq(&q.street, &s.street)
                    && eq(&q.community, &s.community)
                    && eq(&q.grid, &s.grid)
                    && place(s)
            })
            .collect();
        Matcher {
            never,
            kind,
            statuses,
            assignee,
            places,
            open: q.open,
            overdue: q.overdue,
            due_soon: q.due_soon,
            conflict: q.conflict,
            urgency,
            issue_kind,
            category,
            source,
            lead_unit,
            created: (
                q.created_from.unwrap_or(i64::MIN),
                q.created_to.unwrap_or(i64::MAX),
            ),
            deadline: (q.deadline_from.is_some() || q.deadline_to.is_some()).then(|| {
                (
                    q.deadline_from.unwrap_or(i64::MIN),
                    q.deadline_to.unwrap_or(i64::MAX),
                )
            }),
            terms,
            phone: q
                .phone
                .as_deref()
                .map(|p| crate::search::phone_key(&crate::search::phone_digits(p))),
            supervised: q.supervised,
            activity_after_close: q.activity_after_close,
            extension_requested: q.extension_requested,
            needs_texts: q.needs_texts(),
            now: q.now.unwrap_or(0),
        }
    }

    /// Whether what a store holds of a record's search text in memory
    /// lets it match: phone number and flags decided, terms possible (a
    /// record without a text matches only a query that needs none). A
    /// query with terms then reads the texts of the records this lets
    /// through ([`verify`]).
    pub(crate) fn matches_held(&self, held: Option<&crate::search::Held>) -> bool {
        if !self.needs_texts {
            return true;
        }
        let Some(h) = held else {
            return false;
        };
        self.phone.is_none_or(|p| h.has_phone(p))
            && self.supervised.is_none_or(|s| s == h.supervised())
            && self
                .activity_after_close
                .is_none_or(|a| a == h.activity_after_close())
            && self
                .extension_requested
                .is_none_or(|x| x == h.extension_requested())
            && self.terms.may_match(h)
    }

    /// Whether an entry matches every filter, its search text read from
    /// `texts` only when the terms need it.
    pub(crate) fn matches_fully(&self, e: &Entry, texts: &dyn TextSource) -> Result<bool> {
        if !(self.matches(e) && self.matches_held(e.search.as_ref())) {
            return Ok(false);
        }
        if self.terms.is_empty() {
            return Ok(true);
        }
        let mut found = false;
        texts.texts(&[e.id], &mut |_, text| found = self.terms.matches(text))?;
        Ok(found)
    }

    /// Whether an entry matches every filter (overdue judged at the
    /// query's `now`).
    pub(crate) fn matches(&self, e: &Entry) -> bool {
        !self.never
            && self.places[e.place.index()]
            && self.kind.is_none_or(|k| k == e.kind)
            && (self.statuses.is_empty() || self.statuses.contains(&e.status))
            && self.open.is_none_or(|o| o == e.open)
            && self.assignee.is_none_or(|a| e.assignee == Some(a))
            && self.overdue.is_none_or(|o| o == e.is_overdue(self.now))
            && self.due_soon.is_none_or(|d| d == e.is_due_soon(self.now))
            && self.conflict.is_none_or(|c| c == e.conflict)
            && self.urgency.is_none_or(|u| e.urgency == Some(u))
            && self.issue_kind.is_none_or(|k| e.issue_kind == Some(k))
            && self.category.is_none_or(|c| e.category == c)
            && self.source.is_none_or(|s| e.facts.source == s)
            && self.lead_unit.is_none_or(|l| e.facts.lead_unit == l)
            && (self.created.0..self.created.1).contains(&e.created_at)
            && self
                .deadline
                .is_none_or(|(from, to)| e.deadline.get().is_some_and(|d| (from..to).contains(&d)))
    }
}

/// One page of results and the total that matched.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Page {
    pub items: Vec<RecordMeta>,
    pub total: usize,
}

pub(crate) fn run<'a>(
    q: &Query,
    names: &Names,
    all: impl Iterator<Item = &'a Entry>,
    texts: &dyn TextSource,
    place: impl Fn(&RecordScope) -> bool,
) -> Result<Page> {
    Ok(page_of(hits(q, names, all, texts, place)?, q, names))
}

/// The page `q` asks for of its matching entries.
fn page_of(hits: Vec<&Entry>, q: &Query, names: &Names) -> Page {
    let (entries, total) = page_entries(hits, q);
    Page {
        items: entries.iter().map(|e| e.meta(names)).collect(),
        total,
    }
}

/// The entries of the page `q` asks for, in order, and the total.
fn page_entries<'a>(mut hits: Vec<&'a Entry>, q: &Query) -> (Vec<&'a Entry>, usize) {
    let total = hits.len();
    let end = q.offset.saturating_add(q.limit).min(total);
    if q.offset >= total {
        return (Vec::new(), total);
    }
    let key_cmp = order(q.sort);
    // Only the requested page needs to be in order.
    if end < total {
        hits.select_nth_unstable_by(end, &key_cmp);
        hits.truncate(end);
    }
    hits.sort_unstable_by(key_cmp);
    hits.drain(..q.offset);
    (hits, total)
}

/// What [`run`] computes, before the page's entries are turned into
/// [`RecordMeta`]s: the page's entries in order, the total, and the ids of
/// every matching record (paging ignored), in one pass — what a live query
/// compares and keeps.
pub(crate) fn run_entries<'a>(
    q: &Query,
    names: &Names,
    all: impl Iterator<Item = &'a Entry>,
    texts: &dyn TextSource,
) -> Result<(Vec<&'a Entry>, usize, Vec<RecordId>)> {
    let hits = hits(q, names, all, texts, |_| true)?;
    let ids = hits.iter().map(|e| e.id).collect();
    let (entries, total) = page_entries(hits, q);
    Ok((entries, total, ids))
}

/// How `sort` orders entries (ties by id, so paging is stable).
fn order(sort: Sort) -> impl Fn(&&Entry, &&Entry) -> std::cmp::Ordering {
    move |a: &&Entry, b: &&Entry| match sort {
        Sort::UpdatedDesc => b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)),
        Sort::DeadlineAsc => {
            let (da, db) = (a.deadline.get(), b.deadline.get());
            (da.is_none(), da, a.id).cmp(&(db.is_none(), db, b.id))
        }
        Sort::CreatedAsc => (a.created_at, a.id).cmp(&(b.created_at, b.id)),
    }
}

/// Every matching record's id, in the query's order (paging ignored).
pub(crate) fn sorted_ids<'a>(
    q: &Query,
    names: &Names,
    all: impl Iterator<Item = &'a Entry>,
    texts: &dyn TextSource,
    place: impl Fn(&RecordScope) -> bool,
) -> Result<Vec<RecordId>> {
    let mut hits = hits(q, names, all, texts, place)?;
    hits.sort_unstable_by(order(q.sort));
    Ok(hits.into_iter().map(|e| e.id).collect())
}

/// The entries matching `q` in places `place` accepts, in no order.
pub(crate) fn hits<'a>(
    q: &Query,
    names: &Names,
    all: impl Iterator<Item = &'a Entry>,
    texts: &dyn TextSource,
    place: impl Fn(&RecordScope) -> bool,
) -> Result<Vec<&'a Entry>> {
    let matcher = Matcher::new(q, names, place);
    let hits = all
        .filter(|e| matcher.matches(e) && matcher.matches_held(e.search.as_ref()))
        .collect();
    verify(hits, &matcher.terms, texts)
}

/// How many texts [`verify`] asks its source for at once.
const VERIFY_BATCH: usize = 1024;

/// The entries of `hits` whose search texts hold every term, in order:
/// their texts read from `texts` a batch at a time (the signatures have
/// let them through, which does not yet mean they match).
fn verify<'a>(
    hits: Vec<&'a Entry>,
    terms: &crate::search::Terms,
    texts: &dyn TextSource,
) -> Result<Vec<&'a Entry>> {
    if terms.is_empty() {
        return Ok(hits);
    }
    let mut keep = vec![false; hits.len()];
    for (n, chunk) in hits.chunks(VERIFY_BATCH).enumerate() {
        let ids: Vec<RecordId> = chunk.iter().map(|e| e.id).collect();
        let keep = &mut keep[n * VERIFY_BATCH..];
        texts.texts(&ids, &mut |i, text| keep[i] = terms.matches(text))?;
    }
    Ok(hits
        .into_iter()
        .zip(keep)
        .filter_map(|(e, k)| k.then_some(e))
        .collect())
}

pub(crate) fn count_by_status<'a>(
    q: &Query,
    names: &Names,
    all: impl Iterator<Item = &'a Entry>,
    texts: &dyn TextSource,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for e in hits(q, names, all, texts, |_| true)? {
        *counts.entry(names.get(e.status).to_owned()).or_insert(0) += 1;
    }
    Ok(counts)
}

/// An index entry to and from its in-memory form.
impl Entry {
    pub(crate) fn new(m: &RecordMeta, names: &mut Names) -> Entry {
        let is_issue = m.kind == RecordKind::Issue.as_str();
        let f = &m.facts;
        Entry {
            id: m.record_id(),
            label: [m.number.as_str(), m.title.as_str()].concat().into(),
            number_len: u32::try_from(m.number.len()).unwrap_or(0),
            linked_issues: m.linked_issues.clone().into_boxed_slice(),
            unrecognized: m.unrecognized.iter().map(|u| names.intern(u)).collect(),
            deadline: Ms::new(m.deadline),
            created_at: m.created_at,
            updated_at: m.updated_at,
            place: names.place(&m.street, &m.community, &m.grid),
            kind: names.intern(&m.kind),
            status: names.intern(&m.status),
            category: names.intern(&m.category),
            assignee: m.assignee.as_deref().map(|s| names.intern(s)),
            urgency: m.urgency.as_deref().map(|s| names.intern(s)),
            issue_kind: m.issue_kind.as_deref().map(|s| names.intern(s)),
            issue_status: if is_issue {
                IssueStatus::parse(&m.status)
            } else {
                None
            },
            is_issue,
            open: m.open,
            conflict: m.conflict,
            discussed: false,
            repeat: false,
            search: None,
            facts: EntryFacts {
                source: names.intern(&f.source),
                lead_unit: names.intern(&f.lead_unit),
                address: names.intern(&f.address),
                dispatched_at: Ms::new(f.dispatched_at),
                signed_at: Ms::new(f.signed_at),
                handled_at: Ms::new(f.handled_at),
                closed_at: Ms::new(f.closed_at),
                conflict_since: Ms::new(f.conflict_since),
                returns: f.returns,
                reopens: f.reopens,
                satisfied: f.satisfied,
                basically_satisfied: f.basically_satisfied,
                dissatisfied: f.dissatisfied,
                visit_reached: f.visit_reached,
                visit_resolved: f.visit_resolved,
                meeting: {
                    let none = f.level.is_empty()
                        && f.format.is_empty()
                        && f.held_at.is_none()
                        && f.action_items == 0
                        && f.actions_due == 0
                        && f.actions_verified == 0
                        && f.actions_verified_on_time == 0
                        && f.actions_verified_dated == 0
                        && f.action_dues.is_empty();
                    (!none).then(|| {
                        Box::new(MeetingFacts {
                            level: names.intern(&f.level),
                            format: names.intern(&f.format),
                            held_at: Ms::new(f.held_at),
                            action_items: f.action_items,
                            actions_due: f.actions_due,
                            actions_verified: f.actions_verified,
                            actions_verified_on_time: f.actions_verified_on_time,
                            actions_verified_dated: f.actions_verified_dated,
                            action_dues: f.action_dues.clone().into_boxed_slice(),
                        })
                    })
                },
            },
        }
    }

    /// The entry as the index entry it was made from.
    pub(crate) fn meta(&self, names: &Names) -> RecordMeta {
        let scope = names.scope(self.place);
        let f = &self.facts;
        let m = f.meeting.as_deref();
        RecordMeta {
            id: *self.id.as_bytes(),
            kind: names.get(self.kind).to_owned(),
            number: self.number().to_owned(),
            title: self.title().to_owned(),
            street: scope.street.clone(),
            community: scope.community.clone(),
            grid: scope.grid.clone(),
            status: names.get(self.status).to_owned(),
            open: self.open,
            deadline: self.deadline.get(),
            assignee: names.opt(self.assignee),
            urgency: names.opt(self.urgency),
            category: names.get(self.category).to_owned(),
            issue_kind: names.opt(self.issue_kind),
            created_at: self.created_at,
            updated_at: self.updated_at,
            conflict: self.conflict,
            linked_issues: self.linked_issues.to_vec(),
            facts: Facts {
                source: names.get(f.source).to_owned(),
                lead_unit: names.get(f.lead_unit).to_owned(),
                address: names.get(f.address).to_owned(),
                dispatched_at: f.dispatched_at.get(),
                signed_at: f.signed_at.get(),
                handled_at: f.handled_at.get(),
                closed_at: f.closed_at.get(),
                returns: f.returns,
                reopens: f.reopens,
                visit_reached: f.visit_reached,
                visit_resolved: f.visit_resolved,
                satisfied: f.satisfied,
                basically_satisfied: f.basically_satisfied,
                dissatisfied: f.dissatisfied,
                conflict_since: f.conflict_since.get(),
                level: m.map(|m| names.get(m.level).to_owned()).unwrap_or_default(),
                format: m
                    .map(|m| names.get(m.format).to_owned())
                    .unwrap_or_default(),
                held_at: m.and_then(|m| m.held_at.get()),
                action_items: m.map_or(0, |m| m.action_items),
                actions_due: m.map_or(0, |m| m.actions_due),
                actions_verified: m.map_or(0, |m| m.actions_verified),
                actions_verified_on_time: m.map_or(0, |m| m.actions_verified_on_time),
                actions_verified_dated: m.map_or(0, |m| m.actions_verified_dated),
                action_dues: m.map(|m| m.action_dues.to_vec()).unwrap_or_default(),
            },
            unrecognized: self
                .unrecognized
                .iter()
                .map(|u| names.get(*u).to_owned())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Ms;

    #[test]
    fn an_entry_gives_back_the_meta_it_was_made_from() {
        let mut names = Names::default();
        let full = RecordMeta {
            id: [7; 16],
            kind: "issue".into(),
            number: "A-000001".into(),
            title: "楼道照明损坏".into(),
            street: "S1".into(),
            community: "C1".into(),
            grid: "G1".into(),
            status: "dispatched".into(),
            open: true,
            deadline: Some(1_700_000_000_000),
            assignee: Some("w1".into()),
            urgency: Some("red".into()),
            category: "facilities.1".into(),
            issue_kind: Some("complaint".into()),
            created_at: 1_690_000_000_000,
            updated_at: 1_690_000_100_000,
            conflict: true,
            linked_issues: vec![[1; 16], [2; 16]],
            facts: Facts {
                source: "hotline_12345".into(),
                lead_unit: "housing".into(),
                address: "幸福路 10 号".into(),
                dispatched_at: Some(1),
                signed_at: Some(2),
                handled_at: Some(3),
                closed_at: Some(4),
                returns: 5,
                reopens: 6,
                visit_reached: true,
                visit_resolved: true,
                satisfied: 7,
                basically_satisfied: 8,
                dissatisfied: 9,
                conflict_since: Some(10),
                level: "community".into(),
                format: "online".into(),
                held_at: Some(11),
                action_items: 12,
                actions_due: 13,
                actions_verified: 14,
                actions_verified_on_time: 15,
                actions_verified_dated: 16,
                action_dues: vec![17, 18],
            },
            unrecognized: vec!["future_field".into()],
        };
        let empty = RecordMeta {
            kind: "meeting".into(),
            assignee: None,
            urgency: None,
            issue_kind: None,
            deadline: None,
            linked_issues: Vec::new(),
            unrecognized: Vec::new(),
            facts: Facts::default(),
            ..full.clone()
        };
        // One meeting fact alone keeps them all; an empty number.
        let one = RecordMeta {
            number: String::new(),
            facts: Facts {
                action_dues: vec![3],
                ..Facts::default()
            },
            ..empty.clone()
        };
        for m in [full, empty, one] {
            let e = Entry::new(&m, &mut names);
            assert_eq!(e.meta(&names), m);
        }
        assert_eq!(Ms::new(Some(i64::MIN)).get(), Some(i64::MIN + 1));
    }
}
