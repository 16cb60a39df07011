//! Convergence: 2–4 replicas apply random operations, exchange changes in
//! random order with duplicates and losses, and after a final full exchange
//! must be identical: same heads, same derived status and conflicts, same
//! views and same query results.

use gridsync_core::{
    ActionStatus, Error, IssueOp, IssueStatus, MeetingOp, NewActionItem, Query, RecordId, Sort,
    Status, Store, TimelineKind,
};
use gridsync_tests::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Title(u8),
    Describe(u8),
    Note,
    Transition(u8),
    Resolve(u8),
    Tag(u8),
    Untag(u8),
    Assign(u8),
    Minutes(u8),
    Agreement,
    ActionTransition(u8),
    ActionResolve(u8),
}

#[derive(Clone, Debug)]
enum Step {
    /// Replica does `op` on issue `record % 2` (or the meeting).
    Apply { replica: usize, record: u8, op: Op },
    /// Some of `from`'s changes that `to` lacks arrive, shuffled, some twice,
    /// some lost.
    Deliver {
        from: usize,
        to: usize,
        seed: u64,
        keep_percent: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::Title),
        any::<u8>().prop_map(Op::Describe),
        Just(Op::Note),
        any::<u8>().prop_map(Op::Transition),
        any::<u8>().prop_map(Op::Transition),
        any::<u8>().prop_map(Op::Resolve),
        any::<u8>().prop_map(Op::Tag),
        any::<u8>().prop_map(Op::Untag),
        any::<u8>().prop_map(Op::Assign),
        any::<u8>().prop_map(Op::Minutes),
        Just(Op::Agreement),
        any::<u8>().prop_map(Op::ActionTransition),
        any::<u8>().prop_map(Op::ActionResolve),
    ]
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..replicas, any::<u8>(), op()).prop_map(|(replica, record, op)| Step::Apply { replica, record, op }),
        2 => (0..replicas, 0..replicas, any::<u64>(), 30u8..=100)
            .prop_map(|(from, to, seed, keep_percent)| Step::Deliver { from, to, seed, keep_percent }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Step>)> {
    (2usize..=4).prop_flat_map(|n| (Just(n), proptest::collection::vec(step(n), 1..50)))
}

struct World {
    stores: Vec<Store>,
    issues: [RecordId; 2],
    meeting: RecordId,
    item: RecordId,
}

fn world(n: usize) -> World {
    let stores: Vec<Store> = (0..n).map(|i| temp_store(&format!("R{i}"))).collect();
    let issues = [
        stores[0]
            .create_issue(&worker(0), new_issue(0, 1, 1))
            .unwrap(),
        stores[0]
            .create_issue(&worker(0), new_issue(1, 1, 1))
            .unwrap(),
    ];
    let meeting = stores[0]
        .create_meeting(&office(), new_meeting(1, 1, issues.to_vec()))
        .unwrap();
    let item = RecordId::new();
    stores[0]
        .update_meeting(
            meeting,
            &office(),
            MeetingOp::AddActionItem {
                item,
                new: NewActionItem {
                    text: "更换灯具".into(),
                    issue_id: Some(issues[0]),
                    owner_party: "物业".into(),
                    due: None,
                },
            },
        )
        .unwrap();
    let refs: Vec<&Store> = stores.iter().collect();
    sync_all(&refs);
    World {
        stores,
        issues,
        meeting,
        item,
    }
}

/// Expected refusals are fine; anything else is a bug.
fn tolerate(result: Result<gridsync_core::Written, Error>) {
    match result {
        Ok(_) | Err(Error::IllegalTransition { .. } | Error::NoConflict(_)) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn apply(w: &World, replica: usize, record: u8, op: &Op) {
    let store = &w.stores[replica];
    let author = worker(replica as u32);
    let issue = w.issues[usize::from(record % 2)];
    let pick = |n: u8, all: &[IssueStatus]| all[usize::from(n) % all.len()];
    let result = match op {
        Op::Title(n) => {
            store.update_issue(issue, &author, IssueOp::SetTitle(format!("标题 {}", n % 4)))
        }
        Op::Describe(n) => {
            let mut d = store.issue(issue).unwrap().description;
            d.insert_str(0, &format!("[{}]", n % 10));
            store.update_issue(issue, &author, IssueOp::EditDescription(d))
        }
        Op::Note => store.update_issue(
            issue,
            &author,
            IssueOp::AddTimeline {
                kind: TimelineKind::Note,
                text: format!("note from {replica}"),
            },
        ),
        Op::Transition(n) => store.update_issue(
            issue,
            &author,
            IssueOp::Transition {
                to: pick(*n, IssueStatus::ALL),
                reason: String::new(),
            },
        ),
        Op::Resolve(n) => store.update_issue(
            issue,
            &author,
            IssueOp::ResolveStatusConflict {
                to: pick(*n, IssueStatus::ALL),
                reason: String::new(),
            },
        ),
        Op::Tag(n) => store.update_issue(issue, &author, IssueOp::AddTag(format!("t{}", n % 3))),
        Op::Untag(n) => {
            store.update_issue(issue, &author, IssueOp::RemoveTag(format!("t{}", n % 3)))
        }
        Op::Assign(n) => store.update_issue(
            issue,
            &author,
            IssueOp::SetAssignee(Some(format!("w{}", n % 3))),
        ),
        Op::Minutes(n) => {
            let mut m = store.meeting(w.meeting).unwrap().minutes;
            m.push_str(&format!("{}。", n % 10));
            store.update_meeting(w.meeting, &author, MeetingOp::EditMinutes(m))
        }
        Op::Agreement => store.update_meeting(
            w.meeting,
            &author,
            MeetingOp::AddAgreement(format!("共识 {replica}")),
        ),
        Op::ActionTransition(n) => store.update_meeting(
            w.meeting,
            &author,
            MeetingOp::TransitionAction {
                item: w.item,
                to: ActionStatus::ALL[usize::from(*n) % ActionStatus::ALL.len()],
                reason: String::new(),
            },
        ),
        Op::ActionResolve(n) => store.update_meeting(
            w.meeting,
            &author,
            MeetingOp::ResolveActionConflict {
                item: w.item,
                to: ActionStatus::ALL[usize::from(*n) % ActionStatus::ALL.len()],
                reason: String::new(),
            },
        ),
    };
    tolerate(result);
}

/// A small deterministic shuffle.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

fn deliver(w: &World, from: usize, to: usize, seed: u64, keep_percent: u8) {
    if from == to {
        return;
    }
    let (a, b) = (&w.stores[from], &w.stores[to]);
    let mut messages = Vec::new();
    for id in a.record_ids().unwrap() {
        let have = b.heads(id).unwrap_or_default();
        for change in split_changes(&a.changes_since(id, &have).unwrap()) {
            messages.push((id, change));
        }
    }
    // Some messages are duplicated, some lost, all reordered.
    let dup: Vec<_> = messages.iter().step_by(3).cloned().collect();
    messages.extend(dup);
    shuffle(&mut messages, seed);
    let keep = messages.len() * usize::from(keep_percent) / 100;
    messages.truncate(keep);
    // Deliver what can be applied; a change whose dependencies have not
    // arrived is refused (and would be re-sent by the next sync).
    loop {
        let mut progress = false;
        messages.retain(
            |(id, bytes)| match b.apply_changes(*id, bytes, &Default::default()) {
                Ok(_) => {
                    progress = true;
                    false
                }
                Err(Error::MissingDependencies { .. }) => true,
                Err(e) => panic!("delivery failed: {e}"),
            },
        );
        if !progress || messages.is_empty() {
            break;
        }
    }
}

fn assert_converged(w: &World) {
    let first = &w.stores[0];
    let all = Query::default().sort(Sort::CreatedAsc).page(0, 1000);
    for other in &w.stores[1..] {
        for id in first.record_ids().unwrap() {
            let mut ha = first.heads(id).unwrap();
            let mut hb = other.heads(id).unwrap();
            ha.sort();
            hb.sort();
            assert_eq!(ha, hb, "heads differ for {id}");
        }
        for id in w.issues {
            let (va, vb) = (first.issue(id).unwrap(), other.issue(id).unwrap());
            assert_eq!(va.status, vb.status);
            assert_eq!(va.status_conflict, vb.status_conflict);
            assert_eq!(va.register_conflicts, vb.register_conflicts);
            assert_eq!(va, vb);
        }
        assert_eq!(
            first.meeting(w.meeting).unwrap(),
            other.meeting(w.meeting).unwrap()
        );
        assert_eq!(first.list(&all).unwrap(), other.list(&all).unwrap());
        assert_eq!(
            first.count_by_status(&Query::issues()).unwrap(),
            other.count_by_status(&Query::issues()).unwrap()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, .. ProptestConfig::default() })]

    #[test]
    fn replicas_converge((n, steps) in scenario()) {
        let w = world(n);
        for s in &steps {
            match s {
                Step::Apply { replica, record, op } => apply(&w, *replica, *record, op),
                Step::Deliver { from, to, seed, keep_percent } => deliver(&w, *from, *to, *seed, *keep_percent),
            }
        }
        let refs: Vec<&Store> = w.stores.iter().collect();
        sync_all(&refs);
        assert_converged(&w);
        // The index agrees with the documents it was derived from.
        for store in &w.stores {
            for id in w.issues {
                let v = store.issue(id).unwrap();
                let meta = store.meta(id).unwrap().unwrap();
                prop_assert_eq!(meta.status.as_str(), v.status.as_str());
                prop_assert_eq!(meta.conflict, v.has_conflict());
                prop_assert_eq!(meta.title, v.title);
            }
        }
    }
}
