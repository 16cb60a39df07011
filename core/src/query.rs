//! The per-record metadata index and the queries over it.
//!
//! Lists and counts never load Automerge documents: every write derives a
//! small [`RecordMeta`] from the document and stores it in the same atomic
//! batch as the document bytes. The store keeps all of them in memory
//! (a few hundred bytes each) and answers queries from there.

use std::collections::BTreeMap;

use bincode::{Decode, Encode};

use crate::ids::{RecordId, RecordKind};
use crate::issue::{self, IssueSummary};
use crate::meeting::MeetingView;
pub use crate::model::{Facts, RecordScope};
use crate::workflow::{ActionStatus, IssueStatus, Status};

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
pub const DERIVATION: u32 = 1;

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
        if item.status == ActionStatus::Verified {
            f.actions_verified += 1;
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
    pub conflict: Option<bool>,
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
            conflict: None,
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

    /// Whether a record matches every filter (overdue judged at `now`,
    /// which the store fills in from its clock unless set).
    pub fn matches(&self, m: &RecordMeta) -> bool {
        fn eq(filter: &Option<String>, value: &str) -> bool {
            filter.as_deref().is_none_or(|f| f == value)
        }
        self.kind.is_none_or(|k| k.as_str() == m.kind)
            && eq(&self.street, &m.street)
            && eq(&self.community, &m.community)
            && eq(&self.grid, &m.grid)
            && (self.statuses.is_empty() || self.statuses.contains(&m.status))
            && self.open.is_none_or(|o| o == m.open)
            && self
                .assignee
                .as_deref()
                .is_none_or(|a| m.assignee.as_deref() == Some(a))
            && self
                .overdue
                .is_none_or(|o| o == m.is_overdue(self.now.unwrap_or(0)))
            && self.conflict.is_none_or(|c| c == m.conflict)
    }
}

/// One page of results and the total that matched.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Page {
    pub items: Vec<RecordMeta>,
    pub total: usize,
}

pub(crate) fn run<'a>(q: &Query, all: impl Iterator<Item = &'a RecordMeta>) -> Page {
    let mut hits: Vec<&RecordMeta> = all.filter(|m| q.matches(m)).collect();
    let total = hits.len();
    let end = q.offset.saturating_add(q.limit).min(total);
    let key_cmp = |a: &&RecordMeta, b: &&RecordMeta| match q.sort {
        Sort::UpdatedDesc => b.updated_at.cmp(&a.updated_at).then(a.id.cmp(&b.id)),
        Sort::DeadlineAsc => {
            (a.deadline.is_none(), a.deadline, a.id).cmp(&(b.deadline.is_none(), b.deadline, b.id))
        }
        Sort::CreatedAsc => (a.created_at, a.id).cmp(&(b.created_at, b.id)),
    };
    let items = if q.offset >= total {
        Vec::new()
    } else {
        // Only the requested page needs to be in order.
        if end < total {
            hits.select_nth_unstable_by(end, key_cmp);
            hits.truncate(end);
        }
        hits.sort_unstable_by(key_cmp);
        hits[q.offset..end].iter().map(|m| (*m).clone()).collect()
    };
    Page { items, total }
}

pub(crate) fn count_by_status<'a>(
    q: &Query,
    all: impl Iterator<Item = &'a RecordMeta>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in all.filter(|m| q.matches(m)) {
        *counts.entry(m.status.clone()).or_insert(0) += 1;
    }
    counts
}
