//! The trust boundary: one regression test per attack that once got
//! through (over real HTTP where the attack was over HTTP), the
//! permission matrix on both paths, and personal data by role on every
//! office read.

use gridsync_core::sync::{self, Peer, ServerLimits};
use gridsync_core::{
    Author, IssueOp, IssueStatus, MeetingOp, NewAttendee, RecordId, RecordScope, Reporter, Role,
    TimelineKind,
};
use gridsync_tests::server::{get_json, post_json, post_raw, TestServer};
use gridsync_tests::*;
use serde_json::{json, Value};

const PHONE: &str = "13912345678";
const NAME: &str = "李先生";

fn work_order(no: &str, community: &str, grid: &str) -> Value {
    json!({
        "work_order_no": no,
        "category": "facilities.lighting",
        "kind": "complaint",
        "urgency": "yellow",
        "title": "楼道灯不亮",
        "statement": "三号楼楼道灯坏了一个月",
        "reporter": {"name": NAME, "phone": PHONE, "anonymous": false, "may_call_back": true},
        "street": "S1",
        "community": community,
        "grid": grid,
        "address": "幸福路 12 号 3 号楼",
        "deadline": chrono::Utc::now().timestamp_millis() + 86_400_000,
    })
}

/// The test organisation plus a second community C2 (grid G3) with its
/// own office worker `office2`.
fn two_communities(server: &TestServer) {
    server.setup_org();
    for (path, body) in [
        ("/v1/admin/communities", json!({"id": "C2", "street": "S1"})),
        ("/v1/admin/grids", json!({"id": "G3", "community": "C2"})),
        (
            "/v1/admin/workers",
            json!({"id": "office2", "communities": ["C2"]}),
        ),
    ] {
        let (status, body) = server.admin(path, body);
        assert!(status < 300, "{status} {body}");
    }
}

#[test]
fn intake_of_a_number_taken_elsewhere_reveals_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    two_communities(&server);
    let c1 = server.office_token("office", "hotline");
    let c2 = server.office_token("office2", "hotline");
    let (status, body) = server.office_post(
        &c1,
        "/v1/office/work-orders",
        work_order("12345-7001", "C1", "G1"),
    );
    assert_eq!(status, 201, "{body}");
    let before = server.fingerprint();
    // C2's hotline login sends the same number for its own place.
    let (status, body) = server.office_post(
        &c2,
        "/v1/office/work-orders",
        work_order("12345-7001", "C2", "G3"),
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "work_order_mismatch");
    let text = body.to_string();
    assert!(!text.contains(PHONE) && !text.contains(NAME), "{text}");
    // …or for C1's place, which is not its own.
    let (status, body) = server.office_post(
        &c2,
        "/v1/office/work-orders",
        work_order("12345-7001", "C1", "G1"),
    );
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains(PHONE));
    assert_eq!(server.fingerprint(), before, "the C1 case was written to");
}

#[test]
fn the_same_number_with_other_content_is_a_conflict_and_a_repeat_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let hotline = server.office_token("office", "hotline");
    let order = work_order("12345-7002", "C1", "G1");
    let (status, first) = server.office_post(&hotline, "/v1/office/work-orders", order.clone());
    assert_eq!(status, 201, "{first}");
    let (status, again) = server.office_post(&hotline, "/v1/office/work-orders", order.clone());
    assert_eq!(status, 200, "{again}");
    assert_eq!(first["id"], again["id"]);
    let mut other = order;
    other["title"] = json!("另一件事");
    let before = server.fingerprint();
    let (status, body) = server.office_post(&hotline, "/v1/office/work-orders", other);
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("work_order_mismatch"))
    );
    assert_eq!(server.fingerprint(), before);
}

#[test]
fn intake_refuses_unreasonable_values() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let hotline = server.office_token("office", "hotline");
    let before = server.fingerprint();
    for (n, (field, value)) in [
        ("deadline", json!(i64::MIN)),
        ("deadline", json!(-1)),
        ("deadline", json!(0)),
        ("deadline", json!(i64::MAX)),
        ("title", json!("")),
        ("title", json!("   ")),
        ("category", json!("")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut order = work_order(&format!("12345-71{n:02}"), "C1", "G1");
        order[field] = value.clone();
        let (status, body) = server.office_post(&hotline, "/v1/office/work-orders", order);
        assert_eq!(status, 400, "{field}={value}: {body}");
        assert_eq!(body["code"], "invalid_input");
    }
    assert_eq!(server.fingerprint(), before);
}

#[test]
fn a_phone_cannot_preempt_a_work_orders_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    // The id the first release derived from the number alone (UUID v8).
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&sha2_prefix(b"gridsync work order\0", b"12345-7003")[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let forged = RecordId::from_bytes(bytes);
    phone
        .store
        .create_issue_with_id(forged, &worker(1), new_issue(1, 1, 1))
        .unwrap();
    let report = phone.sync().unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].1, "unauthentic");
    assert!(server
        .store
        .as_ref()
        .unwrap()
        .meta(forged)
        .unwrap()
        .is_none());
    // The real order arrives and keeps its reporter and place.
    let hotline = server.office_token("office", "hotline");
    let (status, body) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-7003", "C1", "G1"),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["reporter"]["phone"], PHONE);
    assert_ne!(body["id"], forged.to_string());
}

fn sha2_prefix(prefix: &[u8], data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::new_with_prefix(prefix)
        .chain_update(data)
        .finalize()
        .to_vec()
}

#[test]
fn a_phone_cannot_write_as_someone_else_or_beyond_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let id = phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    assert!(phone.sync().unwrap().refused.is_empty());
    let srv = server.store.as_ref().unwrap();
    // The phone writes status events in the office's name, in another
    // worker's name, and in its own name beyond its role; then notes the
    // same way. Each is refused and the server's copy stays as it was.
    let cases: Vec<(Author, IssueOp, &str)> = vec![
        (
            Author::new("office", Role::Office),
            IssueOp::Transition {
                to: IssueStatus::Accepted,
                reason: String::new(),
            },
            "unauthentic",
        ),
        (
            Author::new("w1", Role::Office),
            IssueOp::Transition {
                to: IssueStatus::Accepted,
                reason: String::new(),
            },
            "unauthentic",
        ),
        (
            worker(1),
            IssueOp::Transition {
                to: IssueStatus::Accepted,
                reason: String::new(),
            },
            "forbidden",
        ),
        (
            worker(2),
            IssueOp::AddTimeline {
                kind: TimelineKind::Note,
                text: "冒名".into(),
            },
            "unauthentic",
        ),
        (
            worker(1),
            IssueOp::ChangeDeadline {
                due: chrono::Utc::now().timestamp_millis() + 86_400_000,
                reason: "延期".into(),
            },
            "forbidden",
        ),
    ];
    for (n, (author, op, code)) in cases.into_iter().enumerate() {
        let copy = dir.path().join(format!("copy{n}"));
        let forger = server.enroll("w1", &copy);
        forger.sync().unwrap();
        let before = srv.heads(id).unwrap();
        forger.store.update_issue(id, &author, op.clone()).unwrap();
        let report = forger.sync().unwrap();
        assert_eq!(report.refused.len(), 1, "{op:?}: {report:?}");
        assert_eq!(report.refused[0].1, code, "{op:?}: {report:?}");
        assert_eq!(srv.heads(id).unwrap(), before, "{op:?} reached the server");
    }
    // Its own note in its own name goes through.
    phone
        .store
        .update_issue(
            id,
            &worker(1),
            IssueOp::AddTimeline {
                kind: TimelineKind::Visit,
                text: "上门核实".into(),
            },
        )
        .unwrap();
    assert!(phone.sync().unwrap().refused.is_empty());
}

#[test]
fn enrollment_refuses_the_servers_actor_and_other_spellings() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let (_, body) = server.admin("/v1/admin/enrollments", json!({"worker": "w1"}));
    let code = body["code"].as_str().unwrap().to_owned();
    let server_actor = server.store.as_ref().unwrap().actor().to_hex_string();
    let enroll = |actor: &str| {
        post_json(
            &format!("{}/v1/enroll", server.url),
            None,
            json!({"code": code, "actor": actor}),
        )
    };
    assert_eq!(enroll(&server_actor).0, 409);
    for bad in [
        "+1".to_owned(),
        "01".to_owned(),
        server_actor.to_uppercase(),
        format!("{server_actor}00"),
        format!("+{}", &server_actor[1..]),
    ] {
        let (status, body) = enroll(&bad);
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_input")),
            "{bad}"
        );
    }
    // The code was not used up by the refusals.
    let fresh = gridsync_core::ActorId::random().to_hex_string();
    assert_eq!(enroll(&fresh).0, 200);
}

#[test]
fn writes_after_a_move_end_when_the_phone_learns_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let id = phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    phone.sync().unwrap();
    let note = |text: &str| IssueOp::AddTimeline {
        kind: TimelineKind::Note,
        text: text.into(),
    };
    // Written offline, before the move: it arrives.
    phone
        .store
        .update_issue(id, &worker(1), note("搬走前写的"))
        .unwrap();
    let kept = phone.store.snapshot(id).unwrap();
    let (status, _) = server.admin(
        &format!("/v1/admin/records/{id}/move"),
        json!({"street": "S1", "community": "C1", "grid": "G2"}),
    );
    assert_eq!(status, 204);
    let report = phone.sync().unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(report.dropped, 1);
    let srv = server.store.as_ref().unwrap();
    assert!(srv
        .issue(id)
        .unwrap()
        .timeline
        .iter()
        .any(|t| t.text == "搬走前写的"));
    // The phone has learned of the move (its next request says so; that
    // first request could still have carried what it wrote before); a
    // write now is refused.
    assert!(phone.sync().unwrap().refused.is_empty());
    phone.store.apply_snapshot(id, &kept).unwrap();
    phone
        .store
        .update_issue(id, &worker(1), note("知道后还写"))
        .unwrap();
    let before = srv.heads(id).unwrap();
    let report = phone.sync().unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].1, "out_of_scope");
    // A phone enrolled after the move never writes to it.
    let late = server.enroll("w1", &dir.path().join("late"));
    late.store.apply_snapshot(id, &kept).unwrap();
    late.store
        .update_issue(id, &worker(1), note("后来的手机"))
        .unwrap();
    let report = late.sync().unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].1, "out_of_scope");
    assert_eq!(srv.heads(id).unwrap(), before);
}

/// A hand-built client that keeps claiming the cursor it had before a
/// move, to keep writing to the moved record: the server counts the
/// answers it sent. Two lost answers in a row are a bad network (its
/// writes still arrive); from the third on, it is deemed to know of the
/// move and its writes are refused.
#[test]
fn a_client_that_keeps_its_cursor_behind_a_move_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let id = phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    phone.sync().unwrap();
    let shared = phone.store.heads(id).unwrap();
    let cursor = gridsync_core::sync::Client::new(&phone.store)
        .cursor()
        .unwrap();
    let (status, _) = server.admin(
        &format!("/v1/admin/records/{id}/move"),
        json!({"street": "S1", "community": "C1", "grid": "G2"}),
    );
    assert_eq!(status, 204);
    let mut outcomes = Vec::new();
    for round in 0..5 {
        add_note(&phone.store, id, &worker(1), &format!("第{round}条"));
        let request = sync::encode_request(&sync::SyncRequest {
            cursor: cursor.clone(),
            log: [0; 16],
            pushes: vec![sync::Push {
                id: *id.as_bytes(),
                changes: phone.store.own_changes_since(id, &shared).unwrap(),
            }],
            want_snapshots: Vec::new(),
            holdings: Vec::new(),
            page_bytes: 1 << 20,
        });
        let (status, body) = post_raw(&server.url, Some(&phone.token), &request);
        assert_eq!(status, 200);
        let response = sync::decode_response(&body).unwrap();
        assert_eq!(
            response.drop,
            vec![*id.as_bytes()],
            "each answer says: drop it"
        );
        outcomes.push(match response.refused.first() {
            None => "accepted".to_owned(),
            Some(r) => r.code.clone(),
        });
    }
    assert_eq!(
        outcomes,
        [
            "accepted",
            "accepted",
            "accepted",
            "out_of_scope",
            "out_of_scope"
        ]
    );
    let notes = server.store.as_ref().unwrap().issue(id).unwrap().timeline;
    assert!(!notes.iter().any(|t| t.text == "第3条" || t.text == "第4条"));
}

/// A worker's phones act in the role the admin set for the worker: a
/// community worker's phone accepts a case, which a grid worker's may not,
/// and writes as nobody else, in no other role. Roles that do not see
/// residents' personal data carry no phone (a phone holds whole records).
#[test]
fn a_phone_acts_in_its_workers_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let (status, body) = server.admin(
        "/v1/admin/workers",
        json!({"id": "d1", "communities": ["C1"], "device_role": "department"}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_input")),
        "{body}"
    );
    let (status, body) = server.admin(
        "/v1/admin/workers",
        json!({"id": "c1", "communities": ["C1"], "device_role": "community"}),
    );
    assert_eq!(status, 201, "{body}");
    // The refused worker was not stored: the same id is free.
    let (status, _) = server.admin(
        "/v1/admin/workers",
        json!({"id": "d1", "communities": ["C1"]}),
    );
    assert_eq!(status, 201);

    let grid = server.enroll("w1", &dir.path().join("grid"));
    assert_eq!(grid.author, Author::new("w1", Role::GridWorker));
    let community = server.enroll("c1", &dir.path().join("community"));
    assert_eq!(community.author, Author::new("c1", Role::Community));
    let id = grid
        .store
        .create_issue(&grid.author, new_issue(1, 1, 1))
        .unwrap();
    grid.sync().unwrap();
    community.sync().unwrap();
    // The grid worker's phone may not accept; the community's may.
    grid.store
        .update_issue(id, &grid.author, t(IssueStatus::Accepted))
        .unwrap();
    let report = grid.sync().unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].1, "forbidden");
    community
        .store
        .update_issue(id, &community.author, t(IssueStatus::Accepted))
        .unwrap();
    let report = community.sync().unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    let srv = server.store.as_ref().unwrap();
    let last = srv.issue(id).unwrap().transitions.pop().unwrap().event;
    assert_eq!(
        (last.to.as_str(), last.by.as_str(), last.role.as_str()),
        ("accepted", "c1", "community")
    );
    // In any other role, or as another worker, it is refused.
    for author in [
        Author::new("c1", Role::Office),
        Author::new("w1", Role::Community),
    ] {
        let phone = server.enroll(
            "c1",
            &dir.path().join(format!("c-{}", author.role.as_str())),
        );
        phone.sync().unwrap();
        phone
            .store
            .update_issue(id, &author, t(IssueStatus::Dispatched))
            .unwrap();
        let report = phone.sync().unwrap();
        assert_eq!(report.refused.len(), 1, "{author:?}: {report:?}");
        assert_eq!(report.refused[0].1, "unauthentic", "{author:?}: {report:?}");
    }
}

#[test]
fn a_phone_cannot_plant_a_second_value_on_its_records_place() {
    let server = temp_store("SRV");
    let d1 = temp_store("D1");
    let d2 = temp_store("D2");
    let id = d1.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    sync_in_process(&d1, &server, &["G1", "G2"]);
    sync_in_process(&d2, &server, &["G1", "G2"]);
    // The office moves the case to G2; a phone that has not seen the move
    // writes G2 into the grid by hand, concurrently: the record would hold
    // two values for its place (equal text, two writers) for good.
    server
        .move_record(id, &office(), &RecordScope::new("S1", "C1", "G2"))
        .unwrap();
    let mut doc = automerge::AutoCommit::load(&d2.snapshot(id).unwrap()).unwrap();
    doc.set_actor(d2.actor().clone());
    let heads = doc.get_heads();
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "grid", "G2").unwrap();
    let changes = doc.save_after(&heads);
    assert!(!changes.is_empty());
    let author = worker(1);
    let both = |s: &RecordScope| s.grid == "G1" || s.grid == "G2";
    let peer = Peer {
        actor: d2.actor(),
        author: &author,
        may_access: &both,
        known_through: 0,
    };
    let before = server.heads(id).unwrap();
    let response = push_one(&server, &peer, sync::Cursor::Start, id, changes);
    assert_eq!(response.refused.len(), 1, "{:?}", response.refused);
    assert_eq!(response.refused[0].code, "scope_change");
    assert_eq!(server.heads(id).unwrap(), before);
    assert!(server.issue(id).unwrap().register_conflicts.is_empty());
}

#[test]
fn an_empty_push_does_not_tell_which_records_exist_elsewhere() {
    let server = temp_store("SRV");
    let d2 = temp_store("D2");
    let elsewhere = d2.create_issue(&worker(2), new_issue(1, 1, 2)).unwrap();
    sync_in_process_as(&d2, &server, &["G2"], &worker(2));
    let before = fingerprint(&server);
    // The same device, now asking as if its scope were G1 only: pushes of
    // nothing new, to a record of G2 and to an unknown id.
    let author = worker(2);
    let g1 = |s: &RecordScope| s.grid == "G1";
    let peer = Peer {
        actor: d2.actor(),
        author: &author,
        may_access: &g1,
        known_through: 0,
    };
    for (id, changes) in [
        (elsewhere, Vec::new()),
        (elsewhere, server.changes_since(elsewhere, &[]).unwrap()),
        (RecordId::new(), Vec::new()),
    ] {
        let response = push_one(
            &server,
            &peer,
            sync::Cursor::Log(server.log_head().unwrap()),
            id,
            changes,
        );
        assert!(response.accepted.is_empty(), "{id}");
        assert_eq!(response.refused.len(), 1);
        // The same answer whether the record exists or not.
        assert_eq!(response.refused[0].code, "out_of_scope", "{id}");
    }
    assert_eq!(fingerprint(&server), before);
}

/// Every (role, action) pair of the matrix, on both paths: as an office
/// action on the server's store, and as a device's push served by the
/// server for a device acting in that role.
#[test]
fn the_permission_matrix_holds_on_both_paths() {
    use gridsync_core::policy::{allowed, Action};
    let now = chrono::Utc::now().timestamp_millis();
    // One operation per issue action, with the status it needs first.
    let plan: Vec<(Action, Vec<IssueStatus>, IssueOp)> = vec![
        (Action::Accept, vec![], t(IssueStatus::Accepted)),
        (Action::Reject, vec![], t(IssueStatus::Rejected)),
        (
            Action::Dispatch,
            vec![IssueStatus::Accepted],
            t(IssueStatus::Dispatched),
        ),
        (
            Action::SignFor,
            vec![IssueStatus::Accepted, IssueStatus::Dispatched],
            t(IssueStatus::SignedFor),
        ),
        (Action::Start, vec![], t(IssueStatus::InProgress)),
        (
            Action::Handle,
            vec![IssueStatus::InProgress],
            t(IssueStatus::Handled),
        ),
        (
            Action::Return,
            vec![IssueStatus::Accepted, IssueStatus::Dispatched],
            t(IssueStatus::Returned),
        ),
        (
            Action::Close,
            vec![IssueStatus::InProgress, IssueStatus::Handled],
            t(IssueStatus::Closed),
        ),
        (
            Action::Reopen,
            vec![IssueStatus::InProgress, IssueStatus::Handled],
            t(IssueStatus::Reopened),
        ),
        (
            Action::Supervise,
            vec![],
            IssueOp::AddTimeline {
                kind: TimelineKind::Supervision,
                text: "督办".into(),
            },
        ),
        (
            Action::ExtendDeadline,
            vec![],
            IssueOp::ChangeDeadline {
                due: now + 86_400_000,
                reason: "延期".into(),
            },
        ),
        (
            Action::RecordReturnVisit,
            vec![],
            IssueOp::AddReturnVisit(gridsync_core::NewReturnVisit {
                reached: true,
                resolved: true,
                satisfaction: None,
                note: String::new(),
            }),
        ),
        (
            Action::ChangeReporter,
            vec![],
            IssueOp::SetReporter(Reporter {
                name: "王女士".into(),
                ..Reporter::default()
            }),
        ),
        (
            Action::Assign,
            vec![],
            IssueOp::SetAssignee(Some("w9".into())),
        ),
        (Action::Edit, vec![], IssueOp::SetTitle("新标题".into())),
        (
            Action::Note,
            vec![],
            IssueOp::AddTimeline {
                kind: TimelineKind::Note,
                text: "记录".into(),
            },
        ),
    ];
    for role in Role::ALL {
        let user = Author::new(format!("u-{}", role.as_str()), role);
        for (action, setup, op) in &plan {
            let expect = allowed(role, *action);
            // Office path.
            let (server, id) = case_at(setup);
            let result = server.act_on_issue(id, &user, op.clone());
            office_outcome(result, expect, role, *action);
            // Device path: the device holds the case, acts, pushes.
            let (server, id) = case_at(setup);
            let device = temp_store("D1");
            device
                .apply_snapshot(id, &server.snapshot(id).unwrap())
                .unwrap();
            device.update_issue(id, &user, op.clone()).unwrap();
            device_outcome(&server, &device, &user, id, expect, *action);
        }
    }
}

/// Checks one (role, action) outcome of the office path: done exactly
/// when the matrix allows it, else `forbidden`.
fn office_outcome<T: std::fmt::Debug>(
    result: gridsync_core::Result<T>,
    expect: bool,
    role: Role,
    action: gridsync_core::policy::Action,
) {
    assert_eq!(
        result.is_ok(),
        expect,
        "office path: {role} {action}: {result:?}"
    );
    if let Err(e) = result {
        assert_eq!(e.code(), "forbidden", "{role} {action}");
    }
}

/// Pushes what `device` wrote to `id` as `user` to `server` and checks the
/// device path: accepted exactly when the matrix allows it, else
/// `forbidden`.
fn device_outcome(
    server: &gridsync_core::Store,
    device: &gridsync_core::Store,
    user: &Author,
    id: RecordId,
    expect: bool,
    action: gridsync_core::policy::Action,
) {
    let all = |_: &RecordScope| true;
    let peer = Peer {
        actor: device.actor(),
        author: user,
        may_access: &all,
        known_through: 0,
    };
    let have = server.heads(id).unwrap_or_default();
    let changes = device.own_changes_since(id, &have).unwrap();
    let response = push_one(server, &peer, sync::Cursor::Start, id, changes);
    let role = user.role;
    assert_eq!(
        response.accepted.len() == 1,
        expect,
        "device path: {role} {action}: {:?}",
        response.refused
    );
    if !expect {
        assert_eq!(response.refused[0].code, "forbidden", "{role} {action}");
    }
}

/// The meeting side of the matrix, and creating records, on both paths:
/// every role convenes a meeting, reports a case, edits a meeting and
/// moves an action item through each of its actions, as an office action
/// and as a device's push.
#[test]
fn the_meeting_permission_matrix_holds_on_both_paths() {
    use gridsync_core::policy::{allowed, Action};
    use gridsync_core::ActionStatus as A;
    let item = RecordId::new();
    let to = |to: A| MeetingOp::TransitionAction {
        item,
        to,
        reason: "理由".into(),
    };
    let plan: Vec<(Action, Vec<A>, MeetingOp)> = vec![
        (
            Action::EditMeeting,
            vec![],
            MeetingOp::SetVenue("社区议事厅二楼".into()),
        ),
        (Action::AgreeAction, vec![], to(A::Agreed)),
        (Action::WorkAction, vec![A::Agreed], to(A::InProgress)),
        (
            Action::VerifyAction,
            vec![A::Agreed, A::InProgress, A::Done],
            to(A::Verified),
        ),
        (Action::CancelAction, vec![A::Agreed], to(A::Cancelled)),
    ];
    // A server holding a meeting with one action item moved through `setup`.
    let meeting_at = |setup: &[A]| {
        let office = Author::new("boss", Role::Office);
        let server = temp_store("SRV");
        let m = server
            .create_meeting(&office, new_meeting(1, 1, vec![]))
            .unwrap();
        let add = MeetingOp::AddActionItem {
            item,
            new: gridsync_core::NewActionItem {
                text: "物业一周内更换灯具".into(),
                issue_id: None,
                owner_party: "物业公司".into(),
                due: None,
            },
        };
        server.update_meeting(m, &office, add).unwrap();
        for status in setup {
            server.update_meeting(m, &office, to(*status)).unwrap();
        }
        (server, m)
    };
    let mut checked = 0;
    for role in Role::ALL {
        let user = Author::new(format!("u-{}", role.as_str()), role);
        for (action, setup, op) in &plan {
            let expect = allowed(role, *action);
            let (server, m) = meeting_at(setup);
            let result = server.act_on_meeting(m, &user, op.clone());
            office_outcome(result, expect, role, *action);
            let (server, m) = meeting_at(setup);
            let device = temp_store("D1");
            device
                .apply_snapshot(m, &server.snapshot(m).unwrap())
                .unwrap();
            device.update_meeting(m, &user, op.clone()).unwrap();
            device_outcome(&server, &device, &user, m, expect, *action);
            checked += 2;
        }
        // Creating: a meeting, a case.
        for action in [Action::ConveneMeeting, Action::Report] {
            let expect = allowed(role, action);
            let server = temp_store("SRV");
            let result = match action {
                Action::ConveneMeeting => server.convene_meeting(&user, new_meeting(1, 1, vec![])),
                _ => server.report_issue(&user, new_issue(1, 1, 1)),
            };
            office_outcome(result, expect, role, action);
            let device = temp_store("D1");
            let id = match action {
                Action::ConveneMeeting => device.create_meeting(&user, new_meeting(1, 1, vec![])),
                _ => device.create_issue(&user, new_issue(1, 1, 1)),
            }
            .unwrap();
            device_outcome(&server, &device, &user, id, expect, action);
            checked += 2;
        }
    }
    assert_eq!(checked, Role::ALL.len() * 7 * 2);
}

/// Serves one request that pushes `changes` to record `id`, as `peer`.
fn push_one(
    server: &gridsync_core::Store,
    peer: &Peer<'_>,
    cursor: sync::Cursor,
    id: RecordId,
    changes: Vec<u8>,
) -> sync::SyncResponse {
    let request = sync::encode_request(&sync::SyncRequest {
        cursor,
        log: [0; 16],
        pushes: vec![sync::Push {
            id: *id.as_bytes(),
            changes,
        }],
        want_snapshots: Vec::new(),
        holdings: Vec::new(),
        page_bytes: 1 << 20,
    });
    sync::decode_response(
        &sync::serve_bytes(server, peer, &request, &ServerLimits::default()).unwrap(),
    )
    .unwrap()
}

/// A server store holding one case the office has moved through `setup`.
fn case_at(setup: &[IssueStatus]) -> (gridsync_core::Store, RecordId) {
    let office = Author::new("boss", Role::Office);
    let server = temp_store("SRV");
    let id = server.create_issue(&office, new_issue(1, 1, 1)).unwrap();
    for to in setup {
        server.update_issue(id, &office, t(*to)).unwrap();
    }
    (server, id)
}

fn t(to: IssueStatus) -> IssueOp {
    IssueOp::Transition {
        to,
        reason: "理由".into(),
    }
}

#[test]
fn nobody_closes_a_dissatisfied_case_without_a_reason() {
    let store = temp_store("SRV");
    let office = Author::new("boss", Role::Office);
    let id = store.create_issue(&office, new_issue(1, 1, 1)).unwrap();
    for to in [IssueStatus::InProgress, IssueStatus::Handled] {
        store.update_issue(id, &office, t(to)).unwrap();
    }
    store
        .act_on_issue(
            id,
            &office,
            IssueOp::AddReturnVisit(gridsync_core::NewReturnVisit {
                reached: true,
                resolved: false,
                satisfaction: Some(gridsync_core::Satisfaction::Dissatisfied),
                note: "不满意".into(),
            }),
        )
        .unwrap();
    let close = |reason: &str| IssueOp::Transition {
        to: IssueStatus::Closed,
        reason: reason.into(),
    };
    let err = store.act_on_issue(id, &office, close(" ")).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    store
        .act_on_issue(id, &office, close("居民诉求超出政策范围，已解释"))
        .unwrap();
}

/// Every office GET × every office role, on records with personal data in
/// every field that can hold it (the reporter, a register conflict over
/// the phone, a note quoting it, a meeting attendee's contact): the bytes
/// of the answer hold the name and phone exactly when the role may see
/// them.
#[test]
fn personal_data_reaches_only_the_roles_that_may_see_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let hotline = server.office_token("office", "hotline");
    let (status, case) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-7100", "C1", "G1"),
    );
    assert_eq!(status, 201, "{case}");
    let id: RecordId = case["id"].as_str().unwrap().parse().unwrap();
    // A register conflict over the phone: the phone and the hotline change
    // it concurrently.
    let phone = server.enroll("w1", &dir.path().join("phone"));
    phone.sync().unwrap();
    let other_phone = "13700001111";
    phone
        .store
        .update_issue(
            id,
            &worker(1),
            IssueOp::SetReporter(Reporter {
                name: NAME.into(),
                phone: other_phone.into(),
                anonymous: false,
                may_call_back: true,
            }),
        )
        .unwrap();
    phone
        .store
        .update_issue(
            id,
            &worker(1),
            IssueOp::AddTimeline {
                kind: TimelineKind::Call,
                text: format!("已回电 {PHONE}，{NAME}表示认可"),
            },
        )
        .unwrap();
    let (status, body) = server.office_post(
        &hotline,
        &format!("/v1/office/issues/{id}/ops"),
        json!({"op": "set_reporter", "args": {"name": NAME, "phone": "13600002222", "anonymous": false, "may_call_back": true}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(phone.sync().unwrap().refused.is_empty());
    let srv = server.store.as_ref().unwrap();
    assert!(
        !srv.issue(id).unwrap().register_conflicts.is_empty(),
        "the fixture must hold a register conflict"
    );
    // A meeting with a resident attendee and a contact.
    let meeting = phone
        .store
        .create_meeting(&worker(1), new_meeting(1, 1, vec![id]))
        .unwrap();
    phone
        .store
        .update_meeting(
            meeting,
            &worker(1),
            MeetingOp::AddAttendee(NewAttendee {
                role: gridsync_core::AttendeeRole::Requester,
                organisation: "3号楼居民".into(),
                name: NAME.into(),
                contact: PHONE.into(),
                attended: true,
                online: false,
            }),
        )
        .unwrap();
    let report = phone.sync().unwrap();
    assert!(report.refused.is_empty(), "{report:?}");

    let paths = [
        "/v1/office/me".to_owned(),
        "/v1/office/issues".to_owned(),
        format!("/v1/office/issues/{id}"),
        format!("/v1/office/issues/{id}/timeline"),
        format!("/v1/office/issues/{id}/history"),
        format!("/v1/office/issues/{id}/conflicts"),
        "/v1/office/meetings".to_owned(),
        format!("/v1/office/meetings/{meeting}"),
        "/v1/office/figures".to_owned(),
        "/v1/office/devices".to_owned(),
    ];
    for role in ["office", "community", "street", "hotline", "department"] {
        let token = server.office_token("office", role);
        let sees = gridsync_core::policy::sees_personal_data(role.parse().unwrap());
        let mut seen_somewhere = false;
        for path in &paths {
            let (status, body) = get_json(&format!("{}{path}", server.url), Some(&token));
            assert_eq!(status, 200, "{role} {path}: {body}");
            let text = body.to_string();
            for secret in [PHONE, NAME, other_phone, "13600002222"] {
                if text.contains(secret) {
                    assert!(sees, "{role} saw {secret} in {path}: {text}");
                    seen_somewhere = true;
                }
            }
        }
        assert_eq!(seen_somewhere, sees, "{role}");
    }
}

/// The real `gridsync serve`, started with the usual umask (022): every
/// directory it made is 0700 and every file 0600, so no other local user
/// can read residents' data. Device stores are made private too.
#[cfg(unix)]
#[test]
fn the_data_directory_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    phone.sync().unwrap();
    let hotline = server.office_token("office", "hotline");
    let (status, _) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-7200", "C1", "G1"),
    );
    assert_eq!(status, 201);
    server.stop();
    fn walk(path: &std::path::Path, seen: &mut usize) {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), seen);
            }
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            *seen += 1;
        }
    }
    let mut files = 0;
    walk(&data, &mut files);
    assert!(files >= 4, "only {files} files checked");
    // A device store is private from the moment it opens.
    let mode = std::fs::metadata(phone.store.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// A phone restored from an old backup: the server holds changes under the
/// phone's own actor that the phone lost, and the phone's new changes reuse
/// their sequence and entry numbers, so the server's copy of that record
/// cannot be merged. The phone keeps the server's copy and re-authors its
/// unsynced work on top: every note of every phone survives, entry ids stay
/// unique, the server accepts the re-authored changes under its audit, and
/// both sides end identical.
#[test]
fn a_phone_restored_from_an_old_backup_keeps_its_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let server = temp_store("SRV");
    let other = temp_store("D2");
    let path = dir.path().join("phone");
    let backup = dir.path().join("backup");
    let phone = open_store(&path, "D1");
    let id = phone.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    sync_in_process(&phone, &server, &["G1"]);
    for to in [IssueStatus::Accepted, IssueStatus::Dispatched] {
        server.act_on_issue(id, &office(), t(to)).unwrap();
    }
    sync_in_process(&phone, &server, &["G1"]);
    drop(phone);
    copy_dir(&path, &backup);
    let phone = open_store(&path, "D1");
    add_note(&phone, id, &worker(1), "备份之后");
    phone
        .update_issue(id, &worker(1), t(IssueStatus::SignedFor))
        .unwrap();
    sync_in_process(&phone, &server, &["G1"]);
    drop(phone);
    sync_in_process(&other, &server, &["G1"]);
    add_note(&other, id, &worker(1), "另一部手机");
    sync_in_process(&other, &server, &["G1"]);
    // Restore the old backup and write on it: a note (a log entry numbered
    // like the lost one), a register, a set member and long text.
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&backup, &path);
    let phone = open_store(&path, "D1");
    add_note(&phone, id, &worker(1), "恢复之后");
    for to in [IssueStatus::SignedFor, IssueStatus::InProgress] {
        phone.update_issue(id, &worker(1), t(to)).unwrap();
    }
    add_note(&phone, id, &worker(1), "恢复之后第二条");
    for op in [
        IssueOp::SetTitle("恢复后改的标题".into()),
        IssueOp::AddTag("恢复".into()),
        IssueOp::EditDescription("恢复之后补充的描述".into()),
    ] {
        phone.update_issue(id, &worker(1), op).unwrap();
    }
    let author = worker(1);
    let g1 = |s: &RecordScope| s.grid == "G1";
    let peer = Peer {
        actor: phone.actor(),
        author: &author,
        may_access: &g1,
        known_through: 0,
    };
    let mut rounds = 0;
    let report = gridsync_core::sync::Client::new(&phone)
        .run(|req| {
            rounds += 1;
            sync::serve_bytes(&server, &peer, &req, &ServerLimits::default())
        })
        .expect("the phone recovers the record");
    assert_eq!(report.rebased, 1, "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(rounds < 10, "{rounds} rounds");
    assert!(
        phone.pending().unwrap().is_empty(),
        "the re-authored work was accepted"
    );

    let on_server = server.issue(id).unwrap();
    let notes: Vec<&str> = on_server.timeline.iter().map(|t| t.text.as_str()).collect();
    for note in ["备份之后", "另一部手机", "恢复之后", "恢复之后第二条"] {
        assert!(notes.contains(&note), "{note} lost: {notes:?}");
    }
    let ids: std::collections::BTreeSet<_> = on_server.timeline.iter().map(|t| &t.id).collect();
    assert_eq!(ids.len(), on_server.timeline.len(), "entry ids are unique");
    let first = on_server.timeline.iter().position(|t| t.text == "恢复之后");
    let second = on_server
        .timeline
        .iter()
        .position(|t| t.text == "恢复之后第二条");
    assert!(first < second, "the phone's order is kept: {notes:?}");
    // The status events re-authored too, after the phone's own lost ones:
    // the case is in progress, and the sign-for made twice is kept in the
    // history, the second not applied.
    assert_eq!(
        on_server.status,
        IssueStatus::InProgress,
        "{:?}",
        on_server.transitions
    );
    assert!(
        on_server.status_conflict.is_none(),
        "{:?}",
        on_server.status_conflict
    );
    let applied: Vec<(&str, bool)> = on_server
        .transitions
        .iter()
        .map(|t| (t.event.to.as_str(), t.applied))
        .collect();
    assert_eq!(
        applied,
        [
            ("reported", true),
            ("accepted", true),
            ("dispatched", true),
            ("signed_for", true),
            ("signed_for", false),
            ("in_progress", true)
        ]
    );
    assert_eq!(on_server.title, "恢复后改的标题");
    assert!(on_server.tags.contains("恢复"));
    assert_eq!(on_server.description, "恢复之后补充的描述");
    assert!(
        on_server.register_conflicts.is_empty(),
        "{:?}",
        on_server.register_conflicts
    );
    // Every replica ends identical.
    sync_in_process(&other, &server, &["G1"]);
    assert_eq!(phone.heads(id).unwrap(), server.heads(id).unwrap());
    assert_eq!(other.heads(id).unwrap(), server.heads(id).unwrap());
    assert_eq!(phone.issue(id).unwrap(), on_server);
    let problems = phone.verify().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    // And it survives a reopen.
    drop(phone);
    let phone = open_store(&path, "D1");
    assert_eq!(phone.issue(id).unwrap(), on_server);
}

/// The same for a meeting: an action item (an object keyed by its id,
/// holding its own log) and an attendee made after the restore survive
/// next to the attendee the phone lost, and the replicas end identical.
#[test]
fn a_restored_phones_meeting_work_survives_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = temp_store("SRV");
    let (path, backup) = (dir.path().join("phone"), dir.path().join("backup"));
    let phone = open_store(&path, "D1");
    let issue = phone.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    let m = phone
        .convene_meeting(&worker(1), new_meeting(1, 1, vec![issue]))
        .unwrap();
    sync_in_process(&phone, &server, &["G1"]);
    drop(phone);
    copy_dir(&path, &backup);
    let attendee = |name: &str| {
        MeetingOp::AddAttendee(NewAttendee {
            role: gridsync_core::AttendeeRole::Requester,
            organisation: "3号楼居民".into(),
            name: name.into(),
            contact: String::new(),
            attended: true,
            online: false,
        })
    };
    let phone = open_store(&path, "D1");
    phone
        .update_meeting(m, &worker(1), attendee("王一"))
        .unwrap();
    sync_in_process(&phone, &server, &["G1"]);
    drop(phone);
    std::fs::remove_dir_all(&path).unwrap();
    copy_dir(&backup, &path);
    let phone = open_store(&path, "D1");
    phone
        .update_meeting(m, &worker(1), attendee("王二"))
        .unwrap();
    let item = RecordId::new();
    let add = MeetingOp::AddActionItem {
        item,
        new: gridsync_core::NewActionItem {
            text: "物业一周内更换灯具".into(),
            issue_id: Some(issue),
            owner_party: "物业公司".into(),
            due: None,
        },
    };
    phone.update_meeting(m, &worker(1), add).unwrap();
    let report = sync_in_process(&phone, &server, &["G1"]);
    assert_eq!(report.rebased, 1, "{report:?}");
    assert!(
        report.refused.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    let on_server = server.meeting(m).unwrap();
    let names: Vec<&str> = on_server
        .attendees
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names, ["王一", "王二"]);
    assert_eq!(on_server.action_items.len(), 1);
    assert_eq!(on_server.action_items[0].text, "物业一周内更换灯具");
    assert_ne!(on_server.attendees[0].id, on_server.attendees[1].id);
    assert_eq!(phone.heads(m).unwrap(), server.heads(m).unwrap());
    assert_eq!(phone.meeting(m).unwrap(), on_server);
    assert!(phone.pending().unwrap().is_empty());
}

/// Seventy connections that send a sync body one byte at a time behind a
/// bad token are answered 401 before their bodies arrive, hold nothing,
/// and a real phone syncs meanwhile; a connection that never finishes its
/// headers is closed.
#[test]
fn slow_bodies_behind_bad_tokens_are_turned_away_at_once() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    let addr = server.url.trim_start_matches("http://").to_owned();
    let bad = format!("gs1.{}.{}", phone.id, "00".repeat(32));
    let mut slow: Vec<std::net::TcpStream> = (0..70)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                s,
                "POST /v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bad}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\nG"
            )
            .unwrap();
            s
        })
        .collect();
    // The phone's sync goes through while they hang on.
    let report = phone.sync().unwrap();
    assert_eq!(report.accepted, 1);
    for s in &mut slow {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 401", "{}", String::from_utf8_lossy(&head));
    }
    // Headers that never end: the server closes the connection.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(b"POST /v1/sync HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

/// `gridsync serve` speaks HTTPS with a certificate and key given to it; a
/// device enrolls and syncs over it with the FFI's own client once it
/// trusts (pins) the server's certificate, is refused before that, and a
/// plain-HTTP request to the TLS port gets nothing.
#[test]
fn devices_enroll_and_sync_over_tls_with_a_pinned_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let files = gridsync_server::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).unwrap();
    std::fs::write(&files.key, cert.key_pair.serialize_pem()).unwrap();
    let server = TestServer::start_tls(&dir.path().join("server"), &files);
    assert!(server.url.starts_with("https://127.0.0.1:"));
    server.setup_org();
    let (_, body) = server.admin("/v1/admin/enrollments", json!({"worker": "w1"}));
    let code = body["code"].as_str().unwrap().to_owned();
    let store = open_store(&dir.path().join("phone"), "NEW");
    // Not trusted yet: the web roots do not know a self-signed certificate.
    let err = gridsync_core::http::enroll(&server.url, &code, &store).unwrap_err();
    assert_eq!(err.code(), "transport", "{err}");
    gridsync_core::http::pin_certificate(Some(cert.cert.pem().as_bytes())).unwrap();
    let enrolled = gridsync_core::http::enroll(&server.url, &code, &store).unwrap();
    store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    let report = gridsync_core::http::sync(&store, &server.url, &enrolled.token).unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!(server.store.as_ref().unwrap().len().unwrap(), 1);
    gridsync_core::http::pin_certificate(None).unwrap();
    // Plain HTTP to the TLS port is not served.
    let plain = server.url.replace("https://", "http://");
    assert!(gridsync_core::http::post_sync(&plain, &enrolled.token, b"GSYN").is_err());
}

#[test]
fn a_phone_cannot_pass_off_a_change_as_the_servers() {
    // The server tags its own changes so phones can hand them back after a
    // restore. A change in the server's name with a tag taken from another
    // change is refused, and nothing of it is applied; the real change,
    // handed back, is taken (it changes nothing the server has).
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let store = server.store.clone().unwrap();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let hotline = server.office_token("office", "hotline");
    let (status, body) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-7100", "C1", "G1"),
    );
    assert_eq!(status, 201, "{body}");
    let order: RecordId = body["id"].as_str().unwrap().parse().unwrap();
    phone.sync().unwrap();
    let real = phone.store.changes_since(order, &[]).unwrap();
    let created = automerge::Change::from_bytes(split_changes(&real).remove(0)).unwrap();
    let server_actor = created.actor_id().clone();
    let stolen = created.message().unwrap().rsplit_once("\ngst1 ").unwrap().1;

    let before = store.heads(order).unwrap();
    let mut doc = automerge::Automerge::load(&phone.store.snapshot(order).unwrap())
        .unwrap()
        .with_actor(server_actor);
    let heads = doc.get_heads();
    doc.transact_with::<_, _, automerge::AutomergeError, _>(
        |_| {
            automerge::transaction::CommitOptions::default()
                .with_message(format!("set_title by office (office)\ngst1 {stolen}"))
        },
        |tx| automerge::transaction::Transactable::put(tx, automerge::ROOT, "title", "伪造的标题"),
    )
    .unwrap();
    let forged = doc.save_after(&heads);

    let push = |changes: Vec<u8>| push_over_http(&server, &phone.token, order, changes);
    let answer = push(forged);
    assert_eq!(answer.refused.len(), 1, "{answer:?}");
    assert_eq!(answer.refused[0].code, "unauthentic");
    assert_eq!(store.heads(order).unwrap(), before);
    assert_eq!(store.issue(order).unwrap().title, "楼道灯不亮");

    let answer = push(real);
    assert!(answer.refused.is_empty(), "{answer:?}");
    assert_eq!(answer.accepted, vec![*order.as_bytes()]);
    assert_eq!(store.heads(order).unwrap(), before);
}

#[test]
fn a_phone_cannot_remove_or_replace_what_others_wrote() {
    // The audit reads only the objects a push touches; what it removes or
    // replaces must still be seen. Each push below is the phone's own
    // change, refused whole, nothing applied.
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ReadDoc, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let store = server.store.clone().unwrap();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let other = server.enroll("w1", &dir.path().join("other"));
    let id = other
        .store
        .create_issue(&other.author, new_issue(1, 1, 1))
        .unwrap();
    add_note(&other.store, id, &other.author, "别人的走访记录");
    other.sync().unwrap();
    phone.sync().unwrap();
    let before = store.heads(id).unwrap();

    let forge = |f: &dyn Fn(&mut automerge::transaction::Transaction<'_>)| -> Vec<u8> {
        let mut doc = automerge::Automerge::load(&phone.store.snapshot(id).unwrap())
            .unwrap()
            .with_actor(phone.store.actor().clone());
        let heads = doc.get_heads();
        let mut tx = doc.transaction();
        f(&mut tx);
        tx.commit();
        doc.save_after(&heads)
    };
    let timeline = |tx: &automerge::transaction::Transaction<'_>| match tx.get(ROOT, "timeline") {
        Ok(Some((automerge::Value::Object(ObjType::List), list))) => list,
        other => panic!("no timeline: {other:?}"),
    };
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        (
            "delete another's note",
            forge(&|tx| {
                let list = timeline(tx);
                tx.delete(&list, 0).unwrap();
            }),
        ),
        (
            "replace the timeline",
            forge(&|tx| {
                tx.put_object(ROOT, "timeline", ObjType::List).unwrap();
            }),
        ),
        (
            "replace another's note with a copy",
            forge(&|tx| {
                let list = timeline(tx);
                tx.delete(&list, 0).unwrap();
                let item = tx.insert_object(&list, 0, ObjType::Map).unwrap();
                tx.put(&item, "text", "改写的记录").unwrap();
            }),
        ),
        (
            "change another's note",
            forge(&|tx| {
                let list = timeline(tx);
                let entry = match tx.get(&list, 0) {
                    Ok(Some((automerge::Value::Object(ObjType::Map), e))) => e,
                    other => panic!("no entry: {other:?}"),
                };
                tx.put(&entry, "text", "改写的记录").unwrap();
            }),
        ),
    ];
    for (attack, changes) in attacks {
        let answer = push_over_http(&server, &phone.token, id, changes);
        assert_eq!(answer.refused.len(), 1, "{attack}: {answer:?}");
        assert_eq!(answer.refused[0].code, "unauthentic", "{attack}");
        assert_eq!(store.heads(id).unwrap(), before, "{attack}");
    }
    let view = store.issue(id).unwrap();
    assert!(view.timeline.iter().any(|t| t.text == "别人的走访记录"));
}

/// Pushes raw change bytes for one record over HTTP as the device whose
/// token is given, from the server's current log head; the answer must be
/// 200 (refusals of the record are in it).
fn push_over_http(
    server: &TestServer,
    token: &str,
    id: RecordId,
    changes: Vec<u8>,
) -> sync::SyncResponse {
    let head = server.store.as_ref().unwrap().durable_head().unwrap();
    let request = sync::encode_request(&sync::SyncRequest {
        cursor: sync::Cursor::Log(head),
        log: [0; 16],
        pushes: vec![sync::Push {
            id: *id.as_bytes(),
            changes,
        }],
        want_snapshots: Vec::new(),
        holdings: Vec::new(),
        page_bytes: 1 << 20,
    });
    let (status, bytes) = post_raw(&server.url, Some(token), &request);
    assert_eq!(status, 200);
    sync::decode_response(&bytes).unwrap()
}
