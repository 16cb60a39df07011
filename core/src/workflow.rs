//! Status workflows: the status of an issue or an action item is a log of
//! transition events, and the current status is derived from that log.
//!
//! # Why a log and not a field
//!
//! Two grid workers offline can both change the status of the same case. A
//! last-writer-wins field would let one of them silently disappear, and a
//! wrong "closed" hides an unsolved problem. So every change of status is an
//! [`Event`] appended to a list in the Automerge document, and every replica
//! derives the same current status from the same set of events:
//!
//! 1. Each event records the clock its author had seen (`seen`: for every
//!    device, the highest log sequence it knew). Event `a` *has seen* event
//!    `b` when `a.seen[b.dev] >= b.n`. This is causality, not wall time;
//!    device clocks are for display only.
//! 2. Events are visited in a causal order. For each event we take the
//!    latest events it had seen (its *parents*) and derive the status the
//!    author was looking at. The event is *applied* when its `from` equals
//!    that status and the workflow allows `from → to`; otherwise it stays in
//!    the log, *not applied*, and its result is the status its author saw.
//! 3. The current status is derived from the *frontier*: the events no
//!    other event has seen. Equal results merge silently (both authors are
//!    kept). Different results show the **least final** of them and raise a
//!    conflict. A not-applied event on the frontier also raises a conflict.
//! 4. A conflict ends when someone records an event that has seen all sides
//!    of it; the frontier then holds only that event.
//!
//! The derivation is a pure function of the set of events, so any replicas
//! that hold the same events agree, whatever order they received them in.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

/// A status in a workflow.
pub trait Status: Copy + Eq + Ord + Hash + Debug + 'static {
    /// The status before any event.
    const INITIAL: Self;
    /// Every status, in a fixed order.
    const ALL: &'static [Self];

    /// The name stored in events.
    fn as_str(self) -> &'static str;

    /// How final the status is; lower is less final. When concurrent events
    /// lead to different statuses, the least final one is shown.
    fn finality(self) -> u8;

    /// Whether the workflow allows `self → to`.
    fn allows(self, to: Self) -> bool;

    /// Whether work is still outstanding in this status.
    fn is_open(self) -> bool;

    /// Parses a stored name; unknown names (say, from a newer app) are `None`.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|x| x.as_str() == s)
    }
}

/// The lifecycle of an issue.
///
/// draft → reported → accepted (or rejected) → dispatched → signed for →
/// in progress → handled (awaiting the return visit) → closed. A return
/// sends a dispatched case back to accepted for re-dispatch; a handled or
/// closed case can be reopened; a grid worker may take a reported matter
/// straight into progress (self-handled). Supervision, extension requests,
/// council discussion and overdue are flags, not states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IssueStatus {
    Draft,
    Reported,
    Accepted,
    Rejected,
    Dispatched,
    SignedFor,
    InProgress,
    Handled,
    Closed,
    Returned,
    Reopened,
}

impl Status for IssueStatus {
    const INITIAL: Self = IssueStatus::Draft;
    const ALL: &'static [Self] = &[
        IssueStatus::Draft,
        IssueStatus::Reported,
        IssueStatus::Accepted,
        IssueStatus::Rejected,
        IssueStatus::Dispatched,
        IssueStatus::SignedFor,
        IssueStatus::InProgress,
        IssueStatus::Handled,
        IssueStatus::Closed,
        IssueStatus::Returned,
        IssueStatus::Reopened,
    ];

    fn as_str(self) -> &'static str {
        match self {
            IssueStatus::Draft => "draft",
            IssueStatus::Reported => "reported",
            IssueStatus::Accepted => "accepted",
            IssueStatus::Rejected => "rejected",
            IssueStatus::Dispatched => "dispatched",
            IssueStatus::SignedFor => "signed_for",
            IssueStatus::InProgress => "in_progress",
            IssueStatus::Handled => "handled",
            IssueStatus::Closed => "closed",
            IssueStatus::Returned => "returned",
            IssueStatus::Reopened => "reopened",
        }
    }

    /// Least final first: a wrong "open" costs one re-check, a wrong
    /// "closed" hides an unsolved problem and inflates the resolution rate.
    fn finality(self) -> u8 {
        match self {
            IssueStatus::Draft => 0,
            IssueStatus::Reported => 1,
            IssueStatus::Reopened => 2,
            IssueStatus::InProgress => 3,
            IssueStatus::Returned => 4,
            IssueStatus::Accepted => 5,
            IssueStatus::Dispatched => 6,
            IssueStatus::SignedFor => 7,
            IssueStatus::Handled => 8,
            IssueStatus::Closed => 9,
            IssueStatus::Rejected => 10,
        }
    }

    fn allows(self, to: Self) -> bool {
        use IssueStatus::*;
        matches!(
            (self, to),
            (Draft, Reported)
                | (Reported, Accepted | Rejected | InProgress)
                | (Accepted, Dispatched | Rejected)
                | (Dispatched, SignedFor | Returned)
                | (SignedFor, InProgress | Returned)
                | (InProgress, Handled | Returned)
                | (Handled, Closed | Reopened)
                | (Closed, Reopened)
                | (Reopened, InProgress)
                | (Returned, Accepted)
        )
    }

    fn is_open(self) -> bool {
        !matches!(self, IssueStatus::Closed | IssueStatus::Rejected)
    }
}

/// The lifecycle of an action item agreed at a council meeting.
///
/// proposed → agreed → in progress → done (the owner's claim) → verified;
/// done → reopened → in progress; any open item → cancelled or guided to a
/// legal channel. Verified, cancelled and guided items are final: cancelling
/// a verified measure would rewrite the record of what was achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionStatus {
    Proposed,
    Agreed,
    InProgress,
    Done,
    Verified,
    Reopened,
    Cancelled,
    GuidedLegal,
}

impl Status for ActionStatus {
    const INITIAL: Self = ActionStatus::Proposed;
    const ALL: &'static [Self] = &[
        ActionStatus::Proposed,
        ActionStatus::Agreed,
        ActionStatus::InProgress,
        ActionStatus::Done,
        ActionStatus::Verified,
        ActionStatus::Reopened,
        ActionStatus::Cancelled,
        ActionStatus::GuidedLegal,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Proposed => "proposed",
            ActionStatus::Agreed => "agreed",
            ActionStatus::InProgress => "in_progress",
            ActionStatus::Done => "done",
            ActionStatus::Verified => "verified",
            ActionStatus::Reopened => "reopened",
            ActionStatus::Cancelled => "cancelled",
            ActionStatus::GuidedLegal => "guided_legal",
        }
    }

    fn finality(self) -> u8 {
        match self {
            ActionStatus::Proposed => 0,
            ActionStatus::Reopened => 1,
            ActionStatus::Agreed => 2,
            ActionStatus::InProgress => 3,
            ActionStatus::Done => 4,
            ActionStatus::Verified => 5,
            ActionStatus::GuidedLegal => 6,
            ActionStatus::Cancelled => 7,
        }
    }

    fn allows(self, to: Self) -> bool {
        use ActionStatus::*;
        if self.is_open() && matches!(to, Cancelled | GuidedLegal) {
            return true;
        }
        matches!(
            (self, to),
            (Proposed, Agreed)
                | (Agreed, InProgress)
                | (InProgress, Done)
                | (Done, Verified | Reopened)
                | (Reopened, InProgress)
        )
    }

    fn is_open(self) -> bool {
        !matches!(
            self,
            ActionStatus::Verified | ActionStatus::Cancelled | ActionStatus::GuidedLegal
        )
    }
}

/// Identifies a log entry: the device (Automerge actor, hex) that wrote it
/// and that device's sequence number within the record.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct EntryId {
    pub dev: String,
    pub n: u64,
}

/// A causal clock: for every device, the highest entry sequence seen.
pub type Clock = BTreeMap<String, u64>;

/// Whether an entry with this id is covered by `clock`.
pub fn clock_covers(clock: &Clock, id: &EntryId) -> bool {
    clock.get(&id.dev).is_some_and(|&m| m >= id.n)
}

/// One status change as stored in a record's transition log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub id: EntryId,
    /// Stored as text so that an event from a newer app with an unknown
    /// status is kept (as not applied) instead of being unreadable.
    pub from: String,
    pub to: String,
    pub by: String,
    pub role: String,
    pub reason: String,
    /// The author's device clock, milliseconds since the Unix epoch. For
    /// display and figures only.
    pub at: i64,
    /// Set on an event recorded to settle a conflict: it may move to any
    /// status that was one of the conflicting candidates it had seen.
    pub resolves: bool,
    /// What the author had seen when recording the event.
    pub seen: Clock,
}

impl Event {
    fn has_seen(&self, other: &Event) -> bool {
        self.id != other.id && clock_covers(&self.seen, &other.id)
    }

    fn seen_total(&self) -> u64 {
        self.seen.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// One side of a status conflict.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Candidate<S> {
    pub status: S,
    pub events: Vec<EntryId>,
}

/// Why the derived status is disputed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StatusConflict<S> {
    /// The statuses the latest concurrent events lead to, least final
    /// first. More than one means the authors disagree.
    pub candidates: Vec<Candidate<S>>,
    /// Latest events whose `from` no longer held (or whose transition is not
    /// allowed), kept in the log but not applied.
    pub not_applied: Vec<EntryId>,
}

/// The derived state of a transition log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Derived<S> {
    /// The status to show.
    pub status: S,
    /// Set while the log holds concurrent disagreeing events or a
    /// not-applied event that nobody has seen yet.
    pub conflict: Option<StatusConflict<S>>,
    /// For each event, in the order given: whether it was applied.
    pub applied: Vec<bool>,
    /// The latest events: those no other event has seen, in log order.
    pub frontier: Vec<usize>,
}

/// Derives the current status of a transition log. Pure and deterministic:
/// the result depends only on the set of events, not on their order.
pub fn derive<S: Status>(events: &[Event]) -> Derived<S> {
    // A duplicated id can only come from a broken or hostile writer; the
    // first copy (in the log's own order, which every replica shares) wins.
    let mut seen_ids = std::collections::HashSet::new();
    let live: Vec<usize> = (0..events.len())
        .filter(|&i| seen_ids.insert(&events[i].id))
        .collect();

    let mut order = live.clone();
    order.sort_by(|&a, &b| {
        let (ea, eb) = (&events[a], &events[b]);
        (ea.seen_total(), &ea.id).cmp(&(eb.seen_total(), &eb.id))
    });

    let mut result: Vec<Option<S>> = vec![None; events.len()];
    let mut applied = vec![false; events.len()];
    let mut processed: Vec<usize> = Vec::with_capacity(order.len());
    for &i in &order {
        let event = &events[i];
        let ancestors: Vec<usize> = processed
            .iter()
            .copied()
            .filter(|&j| event.has_seen(&events[j]))
            .collect();
        let parents = maximal(events, &ancestors);
        let (base, base_conflict) = resolve::<S>(events, &parents, &result, &applied);
        let from = S::parse(&event.from);
        let to = S::parse(&event.to);
        let ok = match (from, to) {
            (Some(from), Some(to)) if from == base => {
                from.allows(to)
                    || (event.resolves
                        && base_conflict
                            .as_ref()
                            .is_some_and(|c| c.candidates.iter().any(|c| c.status == to)))
            }
            _ => false,
        };
        applied[i] = ok;
        result[i] = Some(if ok { to.unwrap_or(base) } else { base });
        processed.push(i);
    }

    let mut frontier = maximal(events, &processed);
    let (status, conflict) = resolve::<S>(events, &frontier, &result, &applied);
    frontier.sort_unstable();
    Derived {
        status,
        conflict,
        applied,
        frontier,
    }
}

/// The members of `set` that no other member has seen. With honest clocks
/// "has seen" is a strict partial order; with forged clocks it may have
/// cycles, and then the last member in causal order stands for the set.
fn maximal(events: &[Event], set: &[usize]) -> Vec<usize> {
    let max: Vec<usize> = set
        .iter()
        .copied()
        .filter(|&j| !set.iter().any(|&k| events[k].has_seen(&events[j])))
        .collect();
    if max.is_empty() {
        set.last().copied().into_iter().collect()
    } else {
        max
    }
}

fn resolve<S: Status>(
    events: &[Event],
    set: &[usize],
    result: &[Option<S>],
    applied: &[bool],
) -> (S, Option<StatusConflict<S>>) {
    let mut by_status: BTreeMap<(u8, S), Vec<EntryId>> = BTreeMap::new();
    let mut not_applied = Vec::new();
    for &j in set {
        let status = result[j].unwrap_or(S::INITIAL);
        let mut ids = by_status
            .remove(&(status.finality(), status))
            .unwrap_or_default();
        ids.push(events[j].id.clone());
        by_status.insert((status.finality(), status), ids);
        if !applied[j] {
            not_applied.push(events[j].id.clone());
        }
    }
    let Some((&(_, shown), _)) = by_status.iter().next() else {
        return (S::INITIAL, None);
    };
    let candidates: Vec<Candidate<S>> = by_status
        .into_iter()
        .map(|((_, status), mut events)| {
            events.sort();
            Candidate { status, events }
        })
        .collect();
    not_applied.sort();
    let conflict = (candidates.len() > 1 || !not_applied.is_empty()).then_some(StatusConflict {
        candidates,
        not_applied,
    });
    (shown, conflict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use IssueStatus::*;

    /// A tiny event builder: `ev("a", 2, Reported, Accepted, &[("a", 1)])`.
    fn ev(dev: &str, n: u64, from: IssueStatus, to: IssueStatus, seen: &[(&str, u64)]) -> Event {
        Event {
            id: EntryId { dev: dev.into(), n },
            from: from.as_str().into(),
            to: to.as_str().into(),
            by: format!("user-{dev}"),
            role: "grid_worker".into(),
            reason: String::new(),
            at: 0,
            resolves: false,
            seen: seen.iter().map(|(d, n)| (d.to_string(), *n)).collect(),
        }
    }

    fn chain() -> Vec<Event> {
        vec![
            ev("a", 1, Draft, Reported, &[]),
            ev("a", 2, Reported, Accepted, &[("a", 1)]),
        ]
    }

    #[test]
    fn empty_log_is_draft() {
        let d = derive::<IssueStatus>(&[]);
        assert_eq!(d.status, Draft);
        assert!(d.conflict.is_none());
    }

    #[test]
    fn linear_log_applies_in_order() {
        let d = derive::<IssueStatus>(&chain());
        assert_eq!(d.status, Accepted);
        assert!(d.conflict.is_none());
        assert_eq!(d.applied, vec![true, true]);
    }

    #[test]
    fn workflow_table_matches_the_domain() {
        assert!(Reported.allows(InProgress), "self-handled");
        assert!(Returned.allows(Accepted), "re-dispatch after a return");
        assert!(Handled.allows(Reopened) && Closed.allows(Reopened));
        assert!(!Draft.allows(Closed));
        assert!(!Rejected.allows(Reopened));
        assert!(!Closed.allows(InProgress), "must be reopened first");
        assert!(ActionStatus::Done.allows(ActionStatus::Reopened));
        assert!(ActionStatus::Agreed.allows(ActionStatus::Cancelled));
        assert!(!ActionStatus::Verified.allows(ActionStatus::Cancelled));
        assert!(ActionStatus::InProgress.allows(ActionStatus::GuidedLegal));
    }

    #[test]
    fn concurrent_same_target_keeps_both_without_conflict() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Dispatched, &[("a", 2)]));
        log.push(ev("b", 1, Accepted, Dispatched, &[("a", 2)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Dispatched);
        assert!(d.conflict.is_none());
        assert!(d.applied.iter().all(|&a| a));
    }

    #[test]
    fn concurrent_different_targets_show_least_final_and_conflict() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Rejected, &[("a", 2)]));
        log.push(ev("b", 1, Accepted, Dispatched, &[("a", 2)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Dispatched, "rejected is more final");
        let c = d.conflict.expect("conflict");
        assert_eq!(
            c.candidates.iter().map(|c| c.status).collect::<Vec<_>>(),
            vec![Dispatched, Rejected]
        );
    }

    #[test]
    fn closed_never_silently_wins() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Dispatched, &[("a", 2)]));
        log.push(ev("a", 4, Dispatched, SignedFor, &[("a", 3)]));
        log.push(ev("a", 5, SignedFor, InProgress, &[("a", 4)]));
        log.push(ev("a", 6, InProgress, Handled, &[("a", 5)]));
        // The office closes while a worker, offline, reopens.
        log.push(ev("office", 1, Handled, Closed, &[("a", 6)]));
        log.push(ev("a", 7, Handled, Reopened, &[("a", 6)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Reopened);
        assert!(d.conflict.is_some());
    }

    #[test]
    fn an_event_that_saw_both_sides_resolves_the_conflict() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Rejected, &[("a", 2)]));
        log.push(ev("b", 1, Accepted, Dispatched, &[("a", 2)]));
        log.push(ev("c", 1, Dispatched, SignedFor, &[("a", 3), ("b", 1)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, SignedFor);
        assert!(d.conflict.is_none());
    }

    #[test]
    fn an_event_that_saw_one_side_keeps_the_conflict() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Rejected, &[("a", 2)]));
        log.push(ev("b", 1, Accepted, Dispatched, &[("a", 2)]));
        log.push(ev("b", 2, Dispatched, SignedFor, &[("a", 2), ("b", 1)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, SignedFor);
        assert!(d.conflict.is_some());
    }

    #[test]
    fn resolving_event_may_pick_the_more_final_candidate() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Rejected, &[("a", 2)]));
        log.push(ev("b", 1, Accepted, Dispatched, &[("a", 2)]));
        let mut fix = ev("c", 1, Dispatched, Rejected, &[("a", 3), ("b", 1)]);
        fix.resolves = true;
        log.push(fix.clone());
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Rejected);
        assert!(d.conflict.is_none());

        // Without the flag the same event is an illegal transition.
        let last = log.len() - 1;
        log[last].resolves = false;
        let d = derive::<IssueStatus>(&log);
        assert!(!d.applied[last]);
        assert!(d.conflict.is_some());
    }

    #[test]
    fn stale_from_is_kept_but_not_applied() {
        let mut log = chain();
        // Claims to move from Dispatched although its author saw Accepted.
        log.push(ev("b", 1, Dispatched, SignedFor, &[("a", 2)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Accepted);
        assert_eq!(d.applied, vec![true, true, false]);
        let c = d.conflict.expect("not-applied event raises a conflict");
        assert_eq!(c.not_applied.len(), 1);
        // A later event that saw it ends the conflict.
        log.push(ev("a", 3, Accepted, Dispatched, &[("a", 2), ("b", 1)]));
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Dispatched);
        assert!(d.conflict.is_none());
    }

    #[test]
    fn unknown_status_names_are_not_applied() {
        let mut log = chain();
        let mut e = ev("b", 1, Accepted, Dispatched, &[("a", 2)]);
        e.to = "escalated_v9".into();
        log.push(e);
        let d = derive::<IssueStatus>(&log);
        assert_eq!(d.status, Accepted);
        assert!(d.conflict.is_some());
    }

    #[test]
    fn result_does_not_depend_on_log_order() {
        let mut log = chain();
        log.push(ev("a", 3, Accepted, Rejected, &[("a", 2)]));
        log.push(ev("b", 1, Accepted, Dispatched, &[("a", 2)]));
        log.push(ev("b", 2, Dispatched, Returned, &[("a", 2), ("b", 1)]));
        let d1 = derive::<IssueStatus>(&log);
        log.reverse();
        let d2 = derive::<IssueStatus>(&log);
        assert_eq!(d1.status, d2.status);
        assert_eq!(d1.conflict, d2.conflict);
    }

    #[test]
    fn forged_cyclic_clocks_do_not_hang_or_panic() {
        let log = vec![
            ev("a", 1, Draft, Reported, &[("b", 1)]),
            ev("b", 1, Draft, Reported, &[("a", 1)]),
            ev("a", 1, Draft, Closed, &[("a", 5)]),
        ];
        let d = derive::<IssueStatus>(&log);
        assert!(d.status == Reported || d.status == Draft);
    }
}

crate::names::serde_by_name!(
    IssueStatus,
    |v: IssueStatus| v.as_str(),
    <IssueStatus as Status>::parse
);
crate::names::serde_by_name!(
    ActionStatus,
    |v: ActionStatus| v.as_str(),
    <ActionStatus as Status>::parse
);
