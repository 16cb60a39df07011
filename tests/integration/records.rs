//! Records, workflow and queries on real stores, and two replicas merging.

use gridsync_core::{
    ActionStatus, Error, IssueOp, IssueStatus, MeetingOp, NewActionItem, NewReturnVisit, Origin,
    Query, RecordId, Satisfaction, Sort, TimelineKind,
};
use gridsync_tests::*;

fn walk(store: &gridsync_core::Store, id: RecordId, path: &[IssueStatus]) {
    for &to in path {
        store
            .update_issue(
                id,
                &office(),
                IssueOp::Transition {
                    to,
                    reason: String::new(),
                },
            )
            .unwrap();
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

gridsync_tests::on_both_engines! {
    #[test]
    fn create_edit_and_read_an_issue() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), "G01-P1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let v = store.issue(id).unwrap();
        assert_eq!(v.case_no, "G01-P1-000001");
        assert_eq!(v.status, IssueStatus::Reported);
        assert_eq!(v.location.grid, "G1");
        assert!(v.description.contains("楼道"));
        assert_eq!(v.device, store.actor().to_hex_string());

        store
            .update_issue(id, &worker(1), IssueOp::SetTitle("新标题".into()))
            .unwrap();
        store
            .update_issue(
                id,
                &worker(1),
                IssueOp::AddTimeline {
                    kind: TimelineKind::Visit,
                    text: "上门核实".into(),
                },
            )
            .unwrap();
        store
            .update_issue(id, &worker(1), IssueOp::AddTag("lighting".into()))
            .unwrap();
        let second = store.create_issue(&worker(1), new_issue(2, 1, 1)).unwrap();
        assert_eq!(store.issue(second).unwrap().case_no, "G01-P1-000002");

        // Reopen: everything is still there, numbering continues.
        drop(store);
        let store = open_store(dir.path(), "G01-P1");
        // Opening loads no document; neither do queries.
        assert_eq!(store.loaded_documents().unwrap(), 0);
        assert_eq!(store.list(&Query::issues().grid("G1")).unwrap().total, 2);
        assert_eq!(store.loaded_documents().unwrap(), 0);
        let v = store.issue(id).unwrap();
        assert_eq!(store.loaded_documents().unwrap(), 1);
        assert_eq!(v.title, "新标题");
        assert_eq!(v.timeline.len(), 1);
        assert!(v.tags.contains("lighting"));
        let third = store.create_issue(&worker(1), new_issue(3, 1, 1)).unwrap();
        assert_eq!(store.issue(third).unwrap().case_no, "G01-P1-000003");
    }

    #[test]
    fn a_write_that_changes_nothing_writes_nothing() {
        let store = temp_store("D1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let head = store.log_head().unwrap();
        let title = store.issue(id).unwrap().title;
        let w = store
            .update_issue(id, &worker(1), IssueOp::SetTitle(title))
            .unwrap();
        assert_eq!(w.seq, None);
        assert_eq!(store.log_head().unwrap(), head);
    }

    #[test]
    fn full_lifecycle_with_return_visit_and_activity_after_close() {
        let store = temp_store("D1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        use IssueStatus::*;
        walk(
            &store,
            id,
            &[
                Accepted, Dispatched, Returned, Accepted, Dispatched, SignedFor, InProgress, Handled,
            ],
        );
        store
            .update_issue(
                id,
                &office(),
                IssueOp::AddReturnVisit(NewReturnVisit {
                    reached: true,
                    resolved: true,
                    satisfaction: Some(Satisfaction::Satisfied),
                    note: String::new(),
                }),
            )
            .unwrap();
        walk(&store, id, &[Closed]);
        let v = store.issue(id).unwrap();
        assert_eq!(v.status, Closed);
        assert!(v.activity_after_close.is_empty());
        // A note after the close is flagged and does not reopen.
        add_note(&store, id, &worker(1), "居民又打电话");
        let v = store.issue(id).unwrap();
        assert_eq!(v.status, Closed);
        assert_eq!(v.activity_after_close.len(), 1);
        assert_eq!(v.transitions.len(), 10);
        assert!(v.transitions.iter().all(|t| t.applied));
    }

    #[test]
    fn illegal_transition_is_refused_and_changes_nothing() {
        let store = temp_store("D1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let before = store.heads(id).unwrap();
        let head = store.log_head().unwrap();
        let err = store
            .update_issue(
                id,
                &worker(1),
                IssueOp::Transition {
                    to: IssueStatus::Closed,
                    reason: String::new(),
                },
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::IllegalTransition { ref from, ref to } if from == "reported" && to == "closed")
        );
        assert_eq!(err.code(), "illegal_transition");
        assert_eq!(store.heads(id).unwrap(), before);
        assert_eq!(store.log_head().unwrap(), head);
        // The store still works on the same record afterwards.
        walk(&store, id, &[IssueStatus::InProgress]);
    }

    #[test]
    fn conflicting_offline_transitions_converge_to_the_least_final_with_a_conflict() {
        let a = temp_store("A");
        let b = temp_store("B");
        let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        walk(
            &a,
            id,
            &[
                IssueStatus::Accepted,
                IssueStatus::Dispatched,
                IssueStatus::SignedFor,
                IssueStatus::InProgress,
                IssueStatus::Handled,
            ],
        );
        sync_all(&[&a, &b]);
        // Offline: the office closes on A while the worker reopens on B.
        walk(&a, id, &[IssueStatus::Closed]);
        walk(&b, id, &[IssueStatus::Reopened]);
        sync_all(&[&a, &b]);
        let (va, vb) = (a.issue(id).unwrap(), b.issue(id).unwrap());
        assert_eq!(va, vb);
        assert_eq!(
            va.status,
            IssueStatus::Reopened,
            "closed never silently wins"
        );
        let conflict = va.status_conflict.clone().expect("conflict raised");
        assert_eq!(conflict.candidates.len(), 2);
        assert!(a.meta(id).unwrap().unwrap().conflict);
        assert_eq!(a.count(&Query::issues().conflict(true)).unwrap(), 1);

        // Resolving on B (which has seen both) ends it everywhere.
        b.update_issue(
            id,
            &office(),
            IssueOp::ResolveStatusConflict {
                to: IssueStatus::Closed,
                reason: "复核确认已解决".into(),
            },
        )
        .unwrap();
        sync_all(&[&a, &b]);
        let va = a.issue(id).unwrap();
        assert_eq!(va.status, IssueStatus::Closed);
        assert!(va.status_conflict.is_none());
        assert_eq!(va, b.issue(id).unwrap());
        assert_eq!(a.count(&Query::issues().conflict(true)).unwrap(), 0);
    }

    #[test]
    fn register_conflicts_are_surfaced_and_different_fields_merge() {
        let a = temp_store("A");
        let b = temp_store("B");
        let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        sync_all(&[&a, &b]);
        a.update_issue(id, &worker(1), IssueOp::SetTitle("A 的标题".into()))
            .unwrap();
        b.update_issue(id, &worker(2), IssueOp::SetTitle("B 的标题".into()))
            .unwrap();
        a.update_issue(id, &worker(1), IssueOp::SetCategory("roads".into()))
            .unwrap();
        b.update_issue(
            id,
            &worker(2),
            IssueOp::SetAssignee(Some("worker-2".into())),
        )
        .unwrap();
        sync_all(&[&a, &b]);
        let v = a.issue(id).unwrap();
        assert_eq!(v, b.issue(id).unwrap());
        assert_eq!(v.category, "roads");
        assert_eq!(v.assignee.as_deref(), Some("worker-2"));
        assert_eq!(v.register_conflicts.len(), 1, "{:?}", v.register_conflicts);
        let c = &v.register_conflicts[0];
        assert_eq!(c.field, "title");
        assert_eq!(c.values.len(), 2);
        assert!(c.values.contains(&c.shown));
        // Writing the field again (even with the shown value) settles it.
        a.update_issue(id, &office(), IssueOp::SetTitle(v.title.clone()))
            .unwrap();
        sync_all(&[&a, &b]);
        assert!(b.issue(id).unwrap().register_conflicts.is_empty());
    }

    #[test]
    fn concurrent_description_edits_both_survive() {
        let a = temp_store("A");
        let b = temp_store("B");
        let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        a.update_issue(
            id,
            &worker(1),
            IssueOp::EditDescription("第一段。第二段。".into()),
        )
        .unwrap();
        sync_all(&[&a, &b]);
        a.update_issue(
            id,
            &worker(1),
            IssueOp::EditDescription("前言。第一段。第二段。".into()),
        )
        .unwrap();
        b.update_issue(
            id,
            &worker(2),
            IssueOp::EditDescription("第一段。第二段。补充。".into()),
        )
        .unwrap();
        sync_all(&[&a, &b]);
        assert_eq!(
            a.issue(id).unwrap().description,
            "前言。第一段。第二段。补充。"
        );
        assert_eq!(
            b.issue(id).unwrap().description,
            "前言。第一段。第二段。补充。"
        );
    }

    #[test]
    fn meetings_link_issues_and_action_items_follow_their_workflow() {
        let store = temp_store("D1");
        let issue = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let m = store
            .create_meeting(&office(), new_meeting(1, 1, vec![issue]))
            .unwrap();
        assert_eq!(store.meetings_for_issue(issue).unwrap(), vec![m]);
        let item = RecordId::new();
        store
            .update_meeting(
                m,
                &office(),
                MeetingOp::AddActionItem {
                    item,
                    new: NewActionItem {
                        text: "物业一周内更换灯具".into(),
                        issue_id: Some(issue),
                        owner_party: "物业公司".into(),
                        due: Some(1_790_600_000_000),
                    },
                },
            )
            .unwrap();
        for to in [
            ActionStatus::Agreed,
            ActionStatus::InProgress,
            ActionStatus::Done,
        ] {
            store
                .update_meeting(
                    m,
                    &office(),
                    MeetingOp::TransitionAction {
                        item,
                        to,
                        reason: String::new(),
                    },
                )
                .unwrap();
        }
        let err = store
            .update_meeting(
                m,
                &office(),
                MeetingOp::TransitionAction {
                    item,
                    to: ActionStatus::Agreed,
                    reason: String::new(),
                },
            )
            .unwrap_err();
        assert!(matches!(err, Error::IllegalTransition { .. }));
        store
            .update_meeting(
                m,
                &office(),
                MeetingOp::TransitionAction {
                    item,
                    to: ActionStatus::Verified,
                    reason: String::new(),
                },
            )
            .unwrap();
        let v = store.meeting(m).unwrap();
        assert_eq!(v.action_items.len(), 1);
        assert_eq!(v.action_items[0].status, ActionStatus::Verified);
        assert_eq!(v.action_items[0].verified_by.as_deref(), Some("office-1"));
        assert_eq!(v.action_items[0].due, Some(1_790_600_000_000));
        // Unlinking removes the derived reverse link.
        store
            .update_meeting(m, &office(), MeetingOp::UnlinkIssue(issue))
            .unwrap();
        assert!(store.meetings_for_issue(issue).unwrap().is_empty());
        // An issue is not a meeting.
        assert!(matches!(store.meeting(issue), Err(Error::WrongKind { .. })));
    }

    #[test]
    fn queries_filter_sort_and_page_without_loading_documents() {
        let store = temp_store("D1");
        let now = chrono_now();
        let mut ids = Vec::new();
        for i in 0..30 {
            let id = store
                .create_issue(&worker(1), new_issue(i, 1 + (i % 2) as u32, (i % 3) as u32))
                .unwrap();
            ids.push(id);
        }
        // Six are handled: no longer open for work, not overdue.
        for id in &ids[..6] {
            walk(
                &store,
                *id,
                &[IssueStatus::InProgress, IssueStatus::Handled],
            );
        }
        store
            .update_issue(
                ids[10],
                &office(),
                IssueOp::SetAssignee(Some("worker-9".into())),
            )
            .unwrap();
        store
            .update_issue(
                ids[11],
                &office(),
                IssueOp::ChangeDeadline {
                    due: now - 1_000,
                    reason: "test".into(),
                },
            )
            .unwrap();

        let grid0 = Query::issues()
            .grid("G0")
            .sort(Sort::DeadlineAsc)
            .page(0, 50);
        let page = store.list(&grid0).unwrap();
        assert_eq!(page.total, 10);
        let deadlines: Vec<_> = page.items.iter().map(|m| m.deadline.unwrap()).collect();
        assert!(deadlines.windows(2).all(|w| w[0] <= w[1]));

        let counts = store
            .count_by_status(&Query::issues().community("C1"))
            .unwrap();
        assert_eq!(counts.values().sum::<usize>(), 15);
        assert_eq!(counts.get("handled"), Some(&3));

        assert_eq!(
            store.count(&Query::issues().assignee("worker-9")).unwrap(),
            1
        );
        let overdue = store.list(&Query::issues().overdue(true).at(now)).unwrap();
        assert_eq!(overdue.total, 1);
        assert_eq!(overdue.items[0].record_id(), ids[11]);

        // Paging covers everything once, in a stable order.
        let mut seen = Vec::new();
        for offset in (0..30).step_by(7) {
            let page = store
                .list(&Query::issues().sort(Sort::CreatedAsc).page(offset, 7))
                .unwrap();
            seen.extend(page.items.into_iter().map(|m| m.record_id()));
        }
        assert_eq!(seen, ids);
    }

    #[test]
    fn change_log_records_local_and_remote_changes_in_order() {
        let a = temp_store("A");
        let b = temp_store("B");
        let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        walk(&a, id, &[IssueStatus::Accepted]);
        let log = a.log_since(0, 100).unwrap();
        assert_eq!(log.len(), 2);
        assert!(log
            .iter()
            .all(|e| e.id == id && e.origin == Origin::Local && e.hashes.len() == 1));
        assert_eq!(a.log_since(1, 100).unwrap()[0].seq, 2);
        assert_eq!(a.log_head().unwrap(), 2);

        sync_all(&[&a, &b]);
        let log = b.log_since(0, 100).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].origin, Origin::Remote);
        assert_eq!(log[0].hashes.len(), 2);
        // Re-sending is a no-op: nothing new in the log.
        let bytes = a.changes_since(id, &[]).unwrap();
        let merged = b.apply_changes(id, &bytes, &Default::default()).unwrap();
        assert_eq!(merged.new_changes, 0);
        assert_eq!(b.log_head().unwrap(), 1);
    }

    #[test]
    fn unacknowledged_local_changes_stay_pending_until_acknowledged() {
        let store = temp_store("D1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(pending.len(), 1);
        let upto = pending[0].seq;
        let heads = store.heads(id).unwrap();
        // An edit made while the push is in flight...
        store
            .update_issue(id, &worker(1), IssueOp::SetTitle("改".into()))
            .unwrap();
        // ...is not forgotten when the earlier push is acknowledged.
        store.acknowledge(id, upto, &heads).unwrap();
        assert_eq!(store.pending().unwrap().len(), 1);
        assert_eq!(store.server_heads(id).unwrap(), heads);
        let upto = store.pending().unwrap()[0].seq;
        store
            .acknowledge(id, upto, &store.heads(id).unwrap())
            .unwrap();
        assert!(store.pending().unwrap().is_empty());
    }

    #[test]
    fn chunks_are_compacted_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), "D1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        for i in 0..200 {
            store
                .update_issue(
                    id,
                    &worker(1),
                    IssueOp::AddTimeline {
                        kind: TimelineKind::Note,
                        text: format!("第 {i} 次走访记录"),
                    },
                )
                .unwrap();
        }
        let before = store.issue(id).unwrap();
        drop(store);
        // Count what is on disk: chunks never outweigh the snapshot.
        let db = gridsync_tests::engine::raw_backend(dir.path());
        let mut snapshot = 0;
        let mut chunks = 0;
        for item in gridsync_core::store::backend::scan(db.as_ref(), &[]) {
            let (k, v) = item.unwrap();
            match k[0] {
                b'd' => snapshot += v.len(),
                b'c' => chunks += v.len(),
                _ => {}
            }
        }
        drop(db);
        assert!(snapshot > 0);
        assert!(chunks <= snapshot, "chunks {chunks} > snapshot {snapshot}");
        let store = open_store(dir.path(), "D1");
        assert_eq!(store.issue(id).unwrap(), before);
    }

    #[test]
    fn the_store_reads_time_from_its_clock() {
        let dir = tempfile::tempdir().unwrap();
        let clock = gridsync_core::ManualClock::new(1_790_000_000_000);
        let mut config = gridsync_core::StoreConfig::new(dir.path(), "D1");
        config.engine = gridsync_tests::engine::engine_for(dir.path());
        config.clock = clock.clone();
        let store = gridsync_core::Store::open(config).unwrap();
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        assert_eq!(store.issue(id).unwrap().created_at, 1_790_000_000_000);
        assert_eq!(store.now_ms(), 1_790_000_000_000);
        let overdue = || store.count(&Query::issues().overdue(true)).unwrap();
        assert_eq!(overdue(), 0);
        // A year later by the store's clock: the case is overdue, and a
        // note is stamped with that time.
        clock.advance(365 * 86_400_000);
        assert_eq!(overdue(), 1);
        add_note(&store, id, &worker(1), "一年后回访");
        let note = store.issue(id).unwrap().timeline.pop().unwrap();
        assert_eq!(note.at, 1_790_000_000_000 + 365 * 86_400_000);
        // A query given its own time judges at that time.
        assert_eq!(
            store
                .count(&Query::issues().overdue(true).at(1_790_000_000_000))
                .unwrap(),
            0
        );
    }

    #[test]
    fn the_store_is_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<gridsync_core::Store>();
        let store = std::sync::Arc::new(temp_store("D1"));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| store.create_issue(&worker(t), new_issue(i, 1, t)).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let ids: Vec<RecordId> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(store.len().unwrap(), 40);
        // Case numbers stay unique under concurrent creation.
        let numbers: std::collections::BTreeSet<String> = ids
            .iter()
            .map(|id| store.issue(*id).unwrap().case_no)
            .collect();
        assert_eq!(numbers.len(), 40);
        assert_eq!(store.log_since(0, 100).unwrap().len(), 40);
    }

    #[test]
    fn device_codes_are_validated() {
        for bad in ["has space", "斜杠", &"x".repeat(33)] {
            let mut config = gridsync_core::StoreConfig::new("", bad);
            config.temporary = true;
            let err = gridsync_core::Store::open(config).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{bad:?}");
        }
    }

    #[test]
    fn a_store_takes_its_code_at_enrollment_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone");
        let store = open_store(&path, "");
        // Not enrolled: nothing is recorded, no number is taken.
        assert_eq!(store.device_code(), "");
        let err = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap_err();
        assert_eq!(err.code(), "not_enrolled");
        assert_eq!(
            store.adopt_device_code("bad code").unwrap_err().code(),
            "invalid_input"
        );
        store.adopt_device_code("G1-P7").unwrap();
        assert!(store.is_enrolled().unwrap());
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        assert_eq!(store.issue(id).unwrap().case_no, "G1-P7-000001");
        // Once: a second code is refused and changes nothing.
        assert_eq!(
            store.adopt_device_code("G1-P8").unwrap_err().code(),
            "already_enrolled"
        );
        assert_eq!(store.device_code(), "G1-P7");
        drop(store);
        // Reopened with the old placeholder, it keeps the code it took.
        let store = open_store(&path, "NEW");
        assert_eq!(store.device_code(), "G1-P7");
        let id = store.create_issue(&worker(1), new_issue(2, 1, 1)).unwrap();
        assert_eq!(store.issue(id).unwrap().case_no, "G1-P7-000002");
    }

    #[test]
    fn scope_is_fixed_at_creation_and_moved_only_by_the_office() {
        use gridsync_core::{Incoming, RecordScope};
        let device = temp_store("D1");
        let server = temp_store("SRV");
        let id = device.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let g1 = RecordScope::new("S1", "C1", "G1");
        assert_eq!(device.scope_of(id).unwrap(), Some(g1.clone()));

        // A device cannot move a record by editing its location.
        let mut moved = location(1, 2);
        moved.address = "新地址".into();
        let err = device
            .update_issue(id, &worker(1), IssueOp::SetLocation(moved))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input");
        let mut details = location(1, 1);
        details.address = "新地址".into();
        device
            .update_issue(id, &worker(1), IssueOp::SetLocation(details))
            .unwrap();

        // The server admits the record only into a scope the pusher may write.
        let bytes = device.changes_since(id, &[]).unwrap();
        let only_g2 = |s: &RecordScope| s.grid == "G2";
        let author = worker(1);
        let peer = gridsync_core::sync::Peer {
            actor: device.actor(),
            author: &author,
            may_access: &only_g2,
            known_through: 0,
        };
        let incoming = Incoming {
            limits: &Default::default(),
            peer: Some(&peer),
            known_through: 0,
        };
        let err = server
            .apply_changes_unflushed(id, &bytes, &incoming)
            .unwrap_err();
        assert_eq!(err.code(), "out_of_scope");
        assert!(server.is_empty().unwrap());
        let only_g1 = |s: &RecordScope| s.grid == "G1";
        let peer = gridsync_core::sync::Peer {
            may_access: &only_g1,
            ..peer
        };
        let incoming = Incoming {
            peer: Some(&peer),
            ..incoming
        };
        server
            .apply_changes_unflushed(id, &bytes, &incoming)
            .unwrap();
        server.make_durable().unwrap();
        assert_eq!(server.scope_of(id).unwrap(), Some(g1.clone()));
        let entry = server.log_since(0, 10).unwrap().pop().unwrap();
        assert_eq!(entry.from.as_ref(), Some(device.actor()));

        // A hand-made change that rewrites the grid is refused by the server.
        let mut doc = automerge::AutoCommit::load(&device.snapshot(id).unwrap()).unwrap();
        doc.set_actor(device.actor().clone());
        let heads = doc.get_heads();
        automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "grid", "G2").unwrap();
        let hostile = doc.save_after(&heads);
        let allow_all = |_: &RecordScope| true;
        let peer = gridsync_core::sync::Peer {
            may_access: &allow_all,
            ..peer
        };
        let incoming = Incoming {
            peer: Some(&peer),
            ..incoming
        };
        let before = server.heads(id).unwrap();
        let err = server
            .apply_changes_unflushed(id, &hostile, &incoming)
            .unwrap_err();
        assert_eq!(err.code(), "scope_change");
        assert_eq!(server.heads(id).unwrap(), before);

        // The office moves it; the log remembers where it came from, and a
        // device taking the move follows it.
        let g2 = RecordScope::new("S1", "C1", "G2");
        server.move_record(id, &office(), &g2).unwrap();
        assert_eq!(server.scope_of(id).unwrap(), Some(g2.clone()));
        assert_eq!(server.meta(id).unwrap().unwrap().grid, "G2");
        let entry = server.log_since(0, 10).unwrap().pop().unwrap();
        assert_eq!(entry.moved_from, Some(g1));
        exchange(&server, &device);
        assert_eq!(device.scope_of(id).unwrap(), Some(g2));
        assert_eq!(device.issue(id).unwrap().location.address, "新地址");
    }

    #[test]
    fn a_record_is_removed_only_once_its_edits_are_acknowledged() {
        let store = temp_store("D1");
        let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        assert!(!store.remove_record(id).unwrap(), "pending edits first");
        assert!(store.issue(id).is_ok());
        let p = store.pending().unwrap()[0].clone();
        store
            .acknowledge(id, p.seq, &store.heads(id).unwrap())
            .unwrap();
        assert!(store.remove_record(id).unwrap());
        assert!(matches!(store.issue(id), Err(Error::NotFound(_))));
        assert_eq!(store.len().unwrap(), 0);
        assert_eq!(store.scope_of(id).unwrap(), None);
    }

    #[test]
    fn changes_are_fetched_by_hash() {
        let a = temp_store("A");
        let b = temp_store("B");
        let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        sync_all(&[&a, &b]);
        walk(&a, id, &[IssueStatus::Accepted]);
        let entry = a.log_since(0, 10).unwrap().pop().unwrap();
        let bytes = a.changes_by_hash(id, &entry.hashes).unwrap();
        assert_eq!(split_changes(&bytes).len(), 1);
        b.apply_changes(id, &bytes, &Default::default()).unwrap();
        assert_eq!(b.issue(id).unwrap().status, IssueStatus::Accepted);
    }

    #[test]
    fn a_store_can_be_reopened_right_after_it_is_closed() {
        // sled keeps its file lock until deferred clean-up has run; an app that
        // closes and reopens its store (or restarts a component) must not see
        // "the store is open elsewhere".
        let dir = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for i in 0..30 {
            let store = open_store(dir.path(), "D1");
            ids.push(store.create_issue(&worker(1), new_issue(i, 1, 1)).unwrap());
            add_note(&store, ids[0], &worker(1), &format!("reopen {i}"));
        }
        let store = open_store(dir.path(), "D1");
        assert_eq!(store.len().unwrap(), 30);
        assert_eq!(store.issue(ids[0]).unwrap().timeline.len(), 30);
    }
}
