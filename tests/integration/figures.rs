//! The office figures: each figure against a hand-computed fixture, and
//! the facts each record contributes derived from real operations.

use gridsync_core::figures::{GroupBy, Rate, Within};
use gridsync_core::query::Facts;
use gridsync_core::{
    ActionStatus, IssueOp, IssueStatus, MeetingOp, NewActionItem, NewReturnVisit, RecordId,
    RecordMeta, Satisfaction, Store,
};
use gridsync_tests::*;

const MIN: i64 = 60_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// 2026-02-01 10:00 in China Standard Time.
const T0: i64 = 1_769_911_200_000;

struct Case {
    grid: &'static str,
    category: &'static str,
    urgency: &'static str,
    created: i64,
    status: IssueStatus,
    deadline: i64,
    conflict: bool,
    facts: Facts,
}

fn meta(id: u8, c: Case) -> RecordMeta {
    RecordMeta {
        id: [id; 16],
        kind: "issue".into(),
        number: format!("D0001-{id:06}"),
        title: format!("case {id}"),
        street: "S1".into(),
        community: "C1".into(),
        grid: c.grid.into(),
        status: gridsync_core::Status::as_str(c.status).into(),
        open: gridsync_core::Status::is_open(c.status),
        deadline: Some(c.deadline),
        assignee: None,
        urgency: Some(c.urgency.into()),
        category: c.category.into(),
        issue_kind: Some("complaint".into()),
        created_at: c.created,
        updated_at: c.created,
        conflict: c.conflict,
        linked_issues: Vec::new(),
        facts: c.facts,
        unrecognized: Vec::new(),
    }
}

/// Five cases and one council meeting; the expected figures below are
/// worked out by hand from this description.
///
/// * A (G1, lighting, yellow, Feb 1): dispatched, signed 1 h later (in
///   time), handled before its deadline, closed; a visit reached the
///   resident: resolved, satisfied.
/// * B (G1, lighting, red, Feb 11, same address as A → a repeat):
///   signed 45 min after dispatch (late for red), handled after its
///   deadline, reopened once, closed; visit reached: not resolved,
///   dissatisfied. Discussed at the meeting.
/// * C (G2, noise, blue, Feb 21): dispatched, never signed, returned once,
///   deadline passed, still dispatched → overdue.
/// * D (G2, noise, yellow, Feb 26, same address as C → a repeat):
///   reported only, deadline ahead, a status conflict for 2 days.
/// * E (G1, lighting, yellow, Mar 18; A is 45 days and B 35 days earlier
///   → not a repeat): signed 10 min after dispatch, handled on time,
///   closed; the visit did not reach the resident.
/// * F (G2, noise, red, created and dispatched 20 minutes before "now",
///   at another address): not signed for yet, still inside its
///   30-minute response window → not counted in the response rate yet.
/// * M (G1 meeting, community level, in person, created 2026-02-28 17:00
///   UTC = Mar 1 01:00 CST): discusses B; two action items with due
///   dates, one verified on time.
fn fixture() -> (Vec<RecordMeta>, i64) {
    let now = T0 + 50 * DAY;
    let a = meta(
        1,
        Case {
            grid: "G1",
            category: "lighting",
            urgency: "yellow",
            created: T0,
            status: IssueStatus::Closed,
            deadline: T0 + DAY,
            conflict: false,
            facts: Facts {
                address: "幸福路1号".into(),
                source: "hotline_12345".into(),
                dispatched_at: Some(T0 + MIN),
                signed_at: Some(T0 + MIN + HOUR),
                handled_at: Some(T0 + 10 * HOUR),
                closed_at: Some(T0 + 2 * DAY),
                visit_reached: true,
                visit_resolved: true,
                satisfied: 1,
                ..Facts::default()
            },
        },
    );
    let b = meta(
        2,
        Case {
            grid: "G1",
            category: "lighting",
            urgency: "red",
            created: T0 + 10 * DAY,
            status: IssueStatus::Closed,
            deadline: T0 + 10 * DAY + 2 * HOUR,
            conflict: false,
            facts: Facts {
                address: "幸福路1号".into(),
                source: "grid_patrol".into(),
                dispatched_at: Some(T0 + 10 * DAY),
                signed_at: Some(T0 + 10 * DAY + 45 * MIN),
                handled_at: Some(T0 + 11 * DAY),
                closed_at: Some(T0 + 13 * DAY),
                reopens: 1,
                visit_reached: true,
                visit_resolved: false,
                dissatisfied: 1,
                ..Facts::default()
            },
        },
    );
    let c = meta(
        3,
        Case {
            grid: "G2",
            category: "noise",
            urgency: "blue",
            created: T0 + 20 * DAY,
            status: IssueStatus::Dispatched,
            deadline: T0 + 23 * DAY,
            conflict: false,
            facts: Facts {
                address: "和平路2号".into(),
                source: "hotline_12345".into(),
                dispatched_at: Some(T0 + 20 * DAY),
                returns: 1,
                ..Facts::default()
            },
        },
    );
    let d = meta(
        4,
        Case {
            grid: "G2",
            category: "noise",
            urgency: "yellow",
            created: T0 + 25 * DAY,
            status: IssueStatus::Reported,
            deadline: now + DAY,
            conflict: true,
            facts: Facts {
                address: "和平路2号".into(),
                source: "hotline_12345".into(),
                conflict_since: Some(now - 2 * DAY),
                ..Facts::default()
            },
        },
    );
    let e = meta(
        5,
        Case {
            grid: "G1",
            category: "lighting",
            urgency: "yellow",
            created: T0 + 45 * DAY,
            status: IssueStatus::Closed,
            deadline: T0 + 46 * DAY,
            conflict: false,
            facts: Facts {
                address: "幸福路1号".into(),
                source: "grid_patrol".into(),
                dispatched_at: Some(T0 + 45 * DAY),
                signed_at: Some(T0 + 45 * DAY + 10 * MIN),
                handled_at: Some(T0 + 45 * DAY + 5 * HOUR),
                closed_at: Some(T0 + 46 * DAY),
                visit_reached: false,
                ..Facts::default()
            },
        },
    );
    let f = meta(
        7,
        Case {
            grid: "G2",
            category: "noise",
            urgency: "red",
            created: now - 20 * MIN,
            status: IssueStatus::Dispatched,
            deadline: now - 20 * MIN + 2 * HOUR,
            conflict: false,
            facts: Facts {
                address: "和平路9号".into(),
                source: "grid_patrol".into(),
                dispatched_at: Some(now - 20 * MIN),
                ..Facts::default()
            },
        },
    );
    let mut m = meta(
        6,
        Case {
            grid: "G1",
            category: "",
            urgency: "",
            created: 1_772_298_000_000, // 2026-02-28T17:00:00Z
            status: IssueStatus::Draft,
            deadline: 0,
            conflict: false,
            facts: Facts {
                level: "community".into(),
                format: "in_person".into(),
                action_items: 2,
                actions_due: 2,
                actions_verified: 1,
                actions_verified_on_time: 1,
                actions_verified_dated: 1,
                // The other item, due two days after "now".
                action_dues: vec![T0 + 52 * DAY],
                ..Facts::default()
            },
        },
    );
    m.kind = "meeting".into();
    m.status = "held".into();
    m.urgency = None;
    m.deadline = None;
    m.linked_issues = vec![[2; 16]];
    (vec![a, b, c, d, e, f, m], now)
}

fn rate(n: u64, d: u64) -> Rate {
    Rate {
        numerator: n,
        denominator: d,
        rate: (d > 0).then(|| n as f64 / d as f64),
    }
}

#[test]
fn every_figure_matches_the_hand_computed_fixture() {
    let (records, now) = fixture();
    let f = Store::figures_of(&records, GroupBy::Grid, now);
    let t = &f.total;
    assert_eq!((t.issues, t.open_issues), (6, 3));
    assert_eq!(
        t.response,
        rate(2, 4),
        "A and E in time; B late; C never signed; F still inside its window"
    );
    assert_eq!(t.returned, rate(1, 5));
    assert_eq!(
        t.on_time_completion,
        rate(2, 4),
        "A, E on time; B late; C past due; D not due"
    );
    assert_eq!(t.overdue, 1);
    assert_eq!(
        t.resolution,
        rate(1, 2),
        "closed with a reached visit: A resolved, B not"
    );
    assert_eq!(t.satisfaction, rate(1, 2));
    assert_eq!(t.reopened, rate(1, 3), "B of A, B, E");
    assert_eq!(t.repeat_complaints, 2, "B and D");
    assert_eq!(
        t.council_resolution,
        rate(0, 1),
        "B was discussed, not resolved"
    );
    assert_eq!(t.open_conflicts, 1);
    assert_eq!(t.oldest_conflict_age_ms, Some(2 * DAY));
    assert_eq!(t.meetings, 1);
    assert_eq!(t.meetings_by_level.get("community"), Some(&1));
    assert_eq!(t.meetings_by_format.get("in_person"), Some(&1));
    assert_eq!(t.issues_discussed, 1);
    assert_eq!(
        t.actions_verified_on_time,
        rate(1, 1),
        "the open item is not due yet"
    );
    // The overdue list: C, 27 days past its deadline.
    assert_eq!(f.overdue.len(), 1);
    assert_eq!(f.overdue[0].id, RecordId::from_bytes([3; 16]).to_string());
    assert_eq!(f.overdue[0].age_ms, 27 * DAY);

    // By grid.
    let groups: Vec<&str> = f.rows.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(groups, ["G1", "G2"]);
    let (g1, g2) = (&f.rows[0], &f.rows[1]);
    assert_eq!((g1.issues, g1.open_issues, g1.meetings), (3, 0, 1));
    assert_eq!(g1.response, rate(2, 3));
    assert_eq!(g1.on_time_completion, rate(2, 3));
    assert_eq!(g1.resolution, rate(1, 2));
    assert_eq!(g1.repeat_complaints, 1);
    assert_eq!(g1.council_resolution, rate(0, 1));
    assert_eq!((g2.issues, g2.open_issues, g2.overdue), (3, 3, 1));
    assert_eq!(g2.response, rate(0, 1));
    assert_eq!(g2.returned, rate(1, 2));
    assert_eq!(g2.on_time_completion, rate(0, 1));
    assert_eq!(g2.resolution, rate(0, 0));
    assert_eq!(g2.resolution.rate, None, "nothing to rate is not 0%");
    assert_eq!((g2.repeat_complaints, g2.open_conflicts), (1, 1));

    // By month (China Standard Time): the meeting made at 17:00 UTC on
    // Feb 28 belongs to March.
    let by_month = Store::figures_of(&records, GroupBy::Month, now);
    let months: Vec<(&str, u64, u64)> = by_month
        .rows
        .iter()
        .map(|r| (r.group.as_str(), r.issues, r.meetings))
        .collect();
    assert_eq!(months, [("2026-02", 4, 0), ("2026-03", 2, 1)]);
    // F's window closes 10 minutes from now: then it counts, as missed.
    let later = Store::figures_of(&records, GroupBy::Grid, now + 11 * MIN);
    assert_eq!(later.total.response, rate(2, 5));
    // Two days on, the open action item is past due: missed.
    let past_due = Store::figures_of(&records, GroupBy::Grid, now + 3 * DAY);
    assert_eq!(past_due.total.actions_verified_on_time, rate(1, 2));
    // By category and by channel.
    let by_category = Store::figures_of(&records, GroupBy::Category, now);
    let lighting = by_category
        .rows
        .iter()
        .find(|r| r.group == "lighting")
        .unwrap();
    assert_eq!((lighting.issues, lighting.repeat_complaints), (3, 1));
    // A meeting has no category, department or channel: it counts in
    // the total, not in a row of blanks.
    for by in [GroupBy::Category, GroupBy::Department, GroupBy::Channel] {
        let table = Store::figures_of(&records, by, now);
        assert_eq!(table.total.meetings, 1, "{by:?}");
        assert!(
            table.rows.iter().all(|r| r.meetings == 0),
            "{by:?}: {:?}",
            table
                .rows
                .iter()
                .map(|r| (&r.group, r.meetings))
                .collect::<Vec<_>>()
        );
    }
    let by_channel = Store::figures_of(&records, GroupBy::Channel, now);
    let hotline = by_channel
        .rows
        .iter()
        .find(|r| r.group == "hotline_12345")
        .unwrap();
    assert_eq!((hotline.issues, hotline.response), (3, rate(1, 2)));
}

#[test]
fn facts_come_from_the_records_themselves() {
    let store = temp_store("D1");
    let id = store.create_issue(&worker(1), new_issue(3, 1, 1)).unwrap();
    for to in [
        IssueStatus::Accepted,
        IssueStatus::Dispatched,
        IssueStatus::SignedFor,
        IssueStatus::InProgress,
        IssueStatus::Handled,
    ] {
        advance(&store, id, to).unwrap();
    }
    store
        .update_issue(
            id,
            &worker(1),
            IssueOp::AddReturnVisit(NewReturnVisit {
                reached: true,
                resolved: true,
                satisfaction: Some(Satisfaction::BasicallySatisfied),
                note: String::new(),
            }),
        )
        .unwrap();
    advance(&store, id, IssueStatus::Closed).unwrap();
    let f = store.meta(id).unwrap().unwrap().facts;
    let v = store.issue(id).unwrap();
    let at = |to: &str| {
        v.transitions
            .iter()
            .find(|t| t.event.to == to)
            .map(|t| t.event.at)
    };
    assert_eq!(f.dispatched_at, at("dispatched"));
    assert_eq!(f.signed_at, at("signed_for"));
    assert_eq!(f.handled_at, at("handled"));
    assert_eq!(f.closed_at, at("closed"));
    assert!(f.visit_reached && f.visit_resolved);
    assert_eq!(
        (f.satisfied, f.basically_satisfied, f.dissatisfied),
        (0, 1, 0)
    );
    assert_eq!(f.source, v.source.unwrap().as_str());
    assert_eq!(f.address, v.location.address);
    assert_eq!((f.returns, f.reopens, f.conflict_since), (0, 0, None));

    // A meeting with three action items due: one verified in time, one
    // still open, one cancelled.
    let m = store
        .create_meeting(&office(), new_meeting(1, 1, vec![id]))
        .unwrap();
    let far = now_ms() + 30 * DAY;
    let items = [RecordId::new(), RecordId::new(), RecordId::new()];
    for item in items {
        store
            .update_meeting(
                m,
                &office(),
                MeetingOp::AddActionItem {
                    item,
                    new: NewActionItem {
                        text: "更换灯具".into(),
                        issue_id: Some(id),
                        owner_party: "物业".into(),
                        due: Some(far),
                    },
                },
            )
            .unwrap();
    }
    for to in [
        ActionStatus::Agreed,
        ActionStatus::InProgress,
        ActionStatus::Done,
        ActionStatus::Verified,
    ] {
        store
            .update_meeting(
                m,
                &office(),
                MeetingOp::TransitionAction {
                    item: items[0],
                    to,
                    reason: String::new(),
                },
            )
            .unwrap();
    }
    store
        .update_meeting(
            m,
            &office(),
            MeetingOp::TransitionAction {
                item: items[2],
                to: ActionStatus::Cancelled,
                reason: "协商后不再需要".into(),
            },
        )
        .unwrap();
    let meta = store.meta(m).unwrap().unwrap();
    assert_eq!(meta.facts.level, "grid");
    assert_eq!(meta.facts.format, "in_person");
    assert_eq!(
        (
            meta.facts.action_items,
            meta.facts.actions_due,
            meta.facts.actions_verified,
            meta.facts.actions_verified_on_time
        ),
        (3, 3, 1, 1)
    );
    assert_eq!(meta.facts.actions_verified_dated, 1);
    assert_eq!(meta.facts.action_dues, vec![far], "the open item only");
    // The store's figures see both.
    let f = store.figures(GroupBy::Community, &Within::ALL, now_ms());
    assert_eq!((f.total.issues, f.total.meetings), (1, 1));
    assert_eq!(f.total.resolution, rate(1, 1));
    assert_eq!(f.total.council_resolution, rate(1, 1));
    assert_eq!(
        f.total.actions_verified_on_time,
        rate(1, 1),
        "the open item is not due yet; the cancelled one never counts"
    );
    let later = store.figures(GroupBy::Community, &Within::ALL, far + MIN);
    assert_eq!(later.total.actions_verified_on_time, rate(1, 2));
}

#[test]
fn a_status_conflict_dates_from_its_events() {
    let a = temp_store("A");
    let b = temp_store("B");
    let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    for to in [IssueStatus::Accepted, IssueStatus::Dispatched] {
        advance(&a, id, to).unwrap();
    }
    exchange(&a, &b);
    advance(&a, id, IssueStatus::Returned).unwrap();
    advance(&b, id, IssueStatus::SignedFor).unwrap();
    exchange(&a, &b);
    exchange(&b, &a);
    let meta = a.meta(id).unwrap().unwrap();
    assert!(meta.conflict);
    let v = a.issue(id).unwrap();
    let earliest = v
        .transitions
        .iter()
        .filter(|t| t.event.to == "returned" || t.event.to == "signed_for")
        .map(|t| t.event.at)
        .min();
    assert_eq!(meta.facts.conflict_since, earliest);
    assert_eq!(
        meta,
        b.meta(id).unwrap().unwrap(),
        "replicas derive the same facts"
    );
}
