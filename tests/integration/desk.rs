//! The office desk over real HTTP: moving a community's work order to one
//! of its grids, extension requests from a handler's phone answered by
//! the office, and council meetings convened from the office with an
//! action-item board. Every decision is core's (policy, board); these
//! tests drive it as a clerk and a grid worker would.

use gridsync_core::clock::Clock;
use gridsync_core::{IssueOp, RecordId};
use gridsync_tests::server::TestServer;
use gridsync_tests::*;
use serde_json::{json, Value};

const HOUR: i64 = 3_600_000;

fn work_order(no: &str, grid: Option<&str>) -> Value {
    let mut order = json!({
        "work_order_no": no,
        "category": "facilities.lighting",
        "kind": "complaint",
        "urgency": "yellow",
        "title": "楼道灯不亮",
        "reporter": {"name": "李先生", "phone": "13912345678", "anonymous": false, "may_call_back": true},
        "street": "S1",
        "community": "C1",
        "address": "幸福路 12 号 3 号楼",
    });
    if let Some(g) = grid {
        order["grid"] = json!(g);
    }
    order
}

fn id_of(body: &Value) -> RecordId {
    body["id"].as_str().unwrap().parse().unwrap()
}

/// The test organisation plus a second community (C2, grid G3) and a
/// department user whose scope is the whole street.
fn org(server: &TestServer) {
    server.setup_org();
    for (path, body) in [
        ("/v1/admin/communities", json!({"id": "C2", "street": "S1"})),
        ("/v1/admin/grids", json!({"id": "G3", "community": "C2"})),
        (
            "/v1/admin/workers",
            json!({"id": "dept", "streets": ["S1"]}),
        ),
    ] {
        let (status, body) = server.admin(path, body);
        assert!(status < 300, "{status} {body}");
    }
}

#[test]
fn community_staff_move_a_work_order_to_one_of_their_grids_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    org(&server);
    let community = server.office_token("office", "community");
    let department = server.office_token("dept", "department");
    let (status, body) = server.office_post(
        &community,
        "/v1/office/work-orders",
        work_order("12345-0101", None),
    );
    assert_eq!(status, 201, "{body}");
    let id = id_of(&body);
    let moved = format!("/v1/office/issues/{id}/move");

    // Rejecting or returning without saying why is refused too.
    let before = server.fingerprint();
    let ops = format!("/v1/office/issues/{id}/ops");
    let (status, body) = server.office_post(
        &community,
        &ops,
        json!({"op": "transition", "args": {"to": "returned", "reason": " "}}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_input")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("needs a reason"),
        "{body}"
    );

    // Refused, and nothing written: another community's grid, a grid that
    // does not exist, and a role that may not move.
    for (token, to, code) in [
        (&community, ("S1", "C2", "G3"), "place_out_of_scope"),
        (&community, ("S1", "C1", "G9"), "place_out_of_scope"),
        (&department, ("S1", "C1", "G1"), "forbidden"),
    ] {
        let (status, body) = server.office_post(
            token,
            &moved,
            json!({"street": to.0, "community": to.1, "grid": to.2}),
        );
        assert_eq!((status, body["code"].as_str()), (403, Some(code)), "{to:?}");
    }
    assert_eq!(server.fingerprint(), before);

    // One of the community's own grids: the grid's phone gets the case.
    let g1 = server.enroll("w1", &dir.path().join("g1"));
    g1.sync().unwrap();
    assert!(g1.store.is_empty().unwrap());
    let (status, body) = server.office_post(
        &community,
        &moved,
        json!({"street": "S1", "community": "C1", "grid": "G1"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["location"]["grid"], "G1");
    g1.sync().unwrap();
    assert_eq!(g1.store.issue(id).unwrap().location.grid, "G1");

    // The places the dashboard offers are the user's own, named.
    let (status, places) = server.office_get(&community, "/v1/office/places");
    assert_eq!(status, 200, "{places}");
    let grids: Vec<(&str, &str)> = places["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["community"].as_str().unwrap(),
                p["grid"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(grids, [("C1", ""), ("C1", "G1"), ("C1", "G2")]);
    assert_eq!(places["items"][0]["street_name"], "幸福街道");
}

#[test]
fn a_handler_asks_for_more_time_and_the_office_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    org(&server);
    let clerk = server.office_token("office", "community");
    let (_, body) = server.office_post(
        &clerk,
        "/v1/office/work-orders",
        work_order("12345-0102", Some("G1")),
    );
    let id = id_of(&body);
    let deadline = body["effective_deadline"].as_i64().unwrap();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    phone.sync().unwrap();

    // The grid worker asks for three more days from the phone.
    let asked = deadline + 72 * HOUR;
    phone
        .store
        .act_on_issue(
            id,
            &worker(1),
            IssueOp::RequestExtension {
                due: asked,
                reason: "需协调物业更换线路".into(),
            },
        )
        .unwrap();
    // A grid worker may not grant it (refused locally, and a grant
    // written without the policy is refused by the server).
    let request = phone.store.issue(id).unwrap().pending_extensions[0].clone();
    let grant = IssueOp::GrantExtension {
        request: request.clone(),
        due: asked,
        reason: String::new(),
    };
    assert!(matches!(
        phone.store.act_on_issue(id, &worker(1), grant.clone()),
        Err(gridsync_core::Error::Forbidden { .. })
    ));
    let report = phone.sync().unwrap();
    assert!(report.refused.is_empty(), "{report:?}");

    // The office finds it among the cases awaiting an answer.
    let (_, page) = server.office_get(&clerk, "/v1/office/issues?extension_requested=true");
    assert_eq!(page["total"], 1, "{page}");
    let (_, case) = server.office_get(&clerk, &format!("/v1/office/issues/{id}"));
    assert_eq!(case["extension_requested"], true);
    assert_eq!(case["effective_deadline"], deadline);
    let pending = case["pending_extensions"][0].clone();
    assert_eq!(pending["n"], request.n);

    // Granted: the deadline moves, the request is answered.
    let ops = format!("/v1/office/issues/{id}/ops");
    let (status, case) = server.office_post(
        &clerk,
        &ops,
        json!({"op": "grant_extension",
               "args": {"request": pending, "due": asked, "reason": "同意延期"}}),
    );
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["effective_deadline"], asked);
    assert_eq!(case["extension_requested"], false);
    let (_, page) = server.office_get(&clerk, "/v1/office/issues?extension_requested=true");
    assert_eq!(page["total"], 0, "{page}");
    // Answering it again is refused, and changes nothing.
    let before = server.fingerprint();
    let (status, body) = server.office_post(
        &clerk,
        &ops,
        json!({"op": "refuse_extension", "args": {"request": pending, "reason": "x"}}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("state_conflict"))
    );
    // So is answering one that does not exist (the case exists: 422).
    let (status, body) = server.office_post(
        &clerk,
        &ops,
        json!({"op": "refuse_extension", "args": {"request": {"dev": "ab", "n": 1}, "reason": "x"}}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("entry_not_found"))
    );
    assert_eq!(server.fingerprint(), before);

    // A second request, refused: the deadline stays.
    phone.sync().unwrap();
    phone
        .store
        .act_on_issue(
            id,
            &worker(1),
            IssueOp::RequestExtension {
                due: asked + 24 * HOUR,
                reason: "再延一天".into(),
            },
        )
        .unwrap();
    phone.sync().unwrap();
    let (_, case) = server.office_get(&clerk, &format!("/v1/office/issues/{id}"));
    let second = case["pending_extensions"][0].clone();
    let (status, case) = server.office_post(
        &clerk,
        &ops,
        json!({"op": "refuse_extension", "args": {"request": second, "reason": "不予延期"}}),
    );
    assert_eq!(status, 200, "{case}");
    assert_eq!(case["effective_deadline"], asked);
    assert_eq!(case["extension_requested"], false);
    // The phone learns both answers.
    phone.sync().unwrap();
    let v = phone.store.issue(id).unwrap();
    assert!(!v.extension_requested);
    assert_eq!(v.effective_deadline, Some(asked));

    // A grant written on the phone without the policy reaches the server
    // and is refused there: a grid worker's role does not extend.
    phone
        .store
        .act_on_issue(
            id,
            &worker(1),
            IssueOp::RequestExtension {
                due: asked + 48 * HOUR,
                reason: "第三次".into(),
            },
        )
        .unwrap();
    let third = phone.store.issue(id).unwrap().pending_extensions[0].clone();
    phone
        .store
        .update_issue(
            id,
            &worker(1),
            IssueOp::GrantExtension {
                request: third,
                due: asked + 48 * HOUR,
                reason: String::new(),
            },
        )
        .unwrap();
    let report = phone.sync().unwrap();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].1, "forbidden");
    let (_, case) = server.office_get(&clerk, &format!("/v1/office/issues/{id}"));
    assert_eq!(case["effective_deadline"], asked);
}

#[test]
fn the_office_convenes_a_meeting_and_follows_its_action_items() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    org(&server);
    let clerk = server.office_token("office", "community");
    let department = server.office_token("dept", "department");
    let (_, body) = server.office_post(
        &clerk,
        "/v1/office/work-orders",
        work_order("12345-0103", Some("G1")),
    );
    let case = id_of(&body);
    let meeting = |community: &str, issues: Vec<String>| {
        json!({
            "topic": "三号楼楼道照明议事会", "level": "community", "format": "hybrid",
            "venue": "社区议事厅", "group_ref": "幸福社区议事群", "convener": "社区书记",
            "scheduled_at": 1_790_000_000_000i64, "agenda": "一、通报情况；二、各方发言",
            "issue_ids": issues,
            "location": {"street": "S1", "community": community, "grid": "",
                         "building": "", "address": "幸福路 12 号"}
        })
    };
    // Refused, nothing written: another community, an unknown case, a
    // role that may not convene.
    let before = server.fingerprint();
    for (token, body, status, code) in [
        (
            &clerk,
            meeting("C2", vec![case.to_string()]),
            403,
            "place_out_of_scope",
        ),
        (
            &clerk,
            meeting("C1", vec![RecordId::new().to_string()]),
            404,
            "not_found",
        ),
        (
            &department,
            meeting("C1", vec![case.to_string()]),
            403,
            "forbidden",
        ),
    ] {
        let (got, answer) = server.office_post(token, "/v1/office/meetings", body);
        assert_eq!(
            (got, answer["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    assert_eq!(server.fingerprint(), before);

    let (status, m) = server.office_post(
        &clerk,
        "/v1/office/meetings",
        meeting("C1", vec![case.to_string()]),
    );
    assert_eq!(status, 201, "{m}");
    let mid = id_of(&m);
    let (_, issue) = server.office_get(&clerk, &format!("/v1/office/issues/{case}"));
    assert_eq!(issue["meetings"], json!([mid.to_string()]));

    // At the table: an attendee, an agreement, an action item due an hour
    // ago (overdue until its owner reports it done).
    let ops = format!("/v1/office/meetings/{mid}/ops");
    let item = RecordId::new();
    let now = gridsync_core::clock::SystemClock.now_ms();
    for op in [
        json!({"op": "add_attendee", "args": {"role": "respondent", "organisation": "幸福物业",
               "name": "王经理", "contact": "13800000000", "attended": true, "online": false}}),
        json!({"op": "add_agreement", "args": "物业七日内更换线路"}),
        json!({"op": "add_action_item", "args": {"item": item.to_string(), "new": {
               "text": "更换三号楼楼道线路", "issue_id": case.to_string(),
               "owner_party": "幸福物业", "due": now - HOUR}}}),
        json!({"op": "transition_action", "args": {"item": item.to_string(), "to": "agreed", "reason": ""}}),
    ] {
        let (status, body) = server.office_post(&clerk, &ops, op.clone());
        assert_eq!(status, 200, "{op}: {body}");
    }
    let board = |query: &str| {
        let (status, page) = server.office_get(&clerk, &format!("/v1/office/action-items{query}"));
        assert_eq!(status, 200, "{page}");
        page
    };
    let page = board("?overdue=true");
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["meeting_no"], m["meeting_no"]);
    assert_eq!(page["items"][0]["item"]["owner_party"], "幸福物业");
    assert_eq!(board("?awaiting_verification=true")["total"], 0);

    // The owner reports it done: no longer overdue, awaiting verification.
    for to in ["in_progress", "done"] {
        let (status, body) = server.office_post(
            &clerk,
            &ops,
            json!({"op": "transition_action", "args": {"item": item.to_string(), "to": to, "reason": ""}}),
        );
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(board("?overdue=true")["total"], 0);
    assert_eq!(board("?awaiting_verification=true")["total"], 1);
    // Verified with a photo of the repair as evidence.
    let (status, _) = gridsync_tests::server::post_bytes(
        &format!(
            "{}/v1/office/meetings/{mid}/attachments?item={item}&caption=%E7%BB%B4%E4%BF%AE%E5%90%8E",
            server.url
        ),
        Some(&clerk),
        "image/jpeg",
        JPEG,
    );
    assert_eq!(status, 201);
    let (status, body) = server.office_post(
        &clerk,
        &ops,
        json!({"op": "transition_action", "args": {"item": item.to_string(), "to": "verified", "reason": "现场核实"}}),
    );
    assert_eq!(status, 200, "{body}");
    let page = board("?open=false");
    assert_eq!(page["total"], 1, "{page}");
    let verified = &page["items"][0]["item"];
    assert_eq!(verified["status"], "verified");
    assert_eq!(verified["verified_by"], "office");
    assert_eq!(verified["evidence"].as_array().unwrap().len(), 1);
    assert_eq!(board("?open=true")["total"], 0);

    // Unknown statuses name the valid ones; the department sees the board
    // without the respondent's contact in the meeting.
    let (status, body) = server.office_get(&clerk, "/v1/office/action-items?status=finished");
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("verified"),
        "{body}"
    );
    let (status, seen) = server.office_get(&department, &format!("/v1/office/meetings/{mid}"));
    assert_eq!(status, 200, "{seen}");
    assert!(!seen.to_string().contains("13800000000"), "{seen}");
    let (_, page) = server.office_get(&department, "/v1/office/action-items");
    assert_eq!(page["total"], 1, "{page}");
}

/// The smallest JPEG header the server's check accepts as a photo.
const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00,
];

#[test]
fn the_district_deadline_table_decides_how_long_a_case_has() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join(gridsync_server::DEADLINE_TABLE_FILE),
        r#"{"urgency_hours": {"red": 1, "yellow": 12, "blue": 48},
            "categories": {"safety.fire": {"yellow": 4}}}"#,
    )
    .unwrap();
    let server = TestServer::start(&data);
    org(&server);
    let clerk = server.office_token("office", "community");
    // Work orders without the hotline's own deadline: the table's hours,
    // a category's own where it has them.
    let hours = |body: &Value| {
        (body["effective_deadline"].as_i64().unwrap() - body["created_at"].as_i64().unwrap()) / HOUR
    };
    let (_, lighting) = server.office_post(
        &clerk,
        "/v1/office/work-orders",
        work_order("12345-0201", Some("G1")),
    );
    assert_eq!(hours(&lighting), 12, "{lighting}");
    let mut fire = work_order("12345-0202", Some("G1"));
    fire["category"] = json!("safety.fire");
    let (_, fire) = server.office_post(&clerk, "/v1/office/work-orders", fire);
    assert_eq!(hours(&fire), 4, "{fire}");

    // A phone opened with the national default writes its own hours into
    // the case; every replica derives the same deadline from it.
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let mut new = new_issue(1, 1, 1);
    new.urgency = gridsync_core::Urgency::Blue;
    let id = phone.store.create_issue(&worker(1), new).unwrap();
    let on_phone = phone.store.issue(id).unwrap();
    assert_eq!(
        on_phone.effective_deadline,
        Some(on_phone.created_at + 72 * HOUR)
    );
    phone.sync().unwrap();
    let (_, case) = server.office_get(&clerk, &format!("/v1/office/issues/{id}"));
    assert_eq!(hours(&case), 72, "{case}");
    // The office raises the urgency: the district's table applies, and the
    // phone sees the same.
    let (status, case) = server.office_post(
        &clerk,
        &format!("/v1/office/issues/{id}/ops"),
        json!({"op": "set_urgency", "args": "red"}),
    );
    assert_eq!(status, 200, "{case}");
    assert_eq!(hours(&case), 1, "{case}");
    phone.sync().unwrap();
    assert_eq!(
        phone.store.issue(id).unwrap().effective_deadline,
        case["effective_deadline"].as_i64()
    );
    assert_eq!(
        phone.store.meta(id).unwrap().unwrap().deadline,
        case["effective_deadline"].as_i64()
    );

    // A table with impossible hours stops the server with the reason.
    std::fs::write(
        data.join(gridsync_server::DEADLINE_TABLE_FILE),
        r#"{"urgency_hours": {"red": 0, "yellow": 12, "blue": 48}}"#,
    )
    .unwrap();
    let err = gridsync_server::deadline_table(&data).unwrap_err();
    assert!(err.to_string().contains("urgency_hours.red"), "{err}");
}

#[test]
fn cases_about_to_breach_are_flagged_before_their_deadline() {
    use gridsync_core::{IssueStatus, Query, StoreConfig};
    let t0 = 1_790_000_000_000;
    let clock = gridsync_core::ManualClock::new(t0);
    let mut config = StoreConfig::new("", "D1");
    config.temporary = true;
    config.clock = clock.clone();
    let store = gridsync_core::Store::open(config).unwrap();
    // Yellow: 24 hours from registration; the last quarter starts at 18.
    let yellow = |i| {
        let mut new = new_issue(i, 1, 1);
        new.urgency = gridsync_core::Urgency::Yellow;
        new
    };
    let id = store.create_issue(&worker(1), yellow(1)).unwrap();
    let dispatched = store.create_issue(&worker(1), yellow(2)).unwrap();
    let due_soon = |at: i64| {
        clock.set(at);
        let ids: Vec<RecordId> = store
            .list(&Query::issues().due_soon(true))
            .unwrap()
            .items
            .iter()
            .map(|m| m.record_id())
            .collect();
        (ids, store.issue(id).unwrap().is_due_soon(at))
    };
    assert_eq!(due_soon(t0 + 17 * HOUR), (vec![], false));
    let (soon, flagged) = due_soon(t0 + 19 * HOUR);
    assert!(flagged);
    assert_eq!(soon.len(), 2, "both cases");
    // Past the deadline it is overdue instead; a handled case's deadline
    // no longer runs.
    assert_eq!(due_soon(t0 + 25 * HOUR), (vec![], false));
    clock.set(t0 + 19 * HOUR);
    for to in [
        IssueStatus::Accepted,
        IssueStatus::Dispatched,
        IssueStatus::SignedFor,
        IssueStatus::InProgress,
        IssueStatus::Handled,
    ] {
        gridsync_tests::advance(&store, dispatched, to).unwrap();
    }
    assert_eq!(due_soon(t0 + 19 * HOUR), (vec![id], true));
    assert_eq!(
        store.count(&Query::issues().due_soon(false)).unwrap(),
        1,
        "the handled one"
    );
}

#[test]
fn the_hotline_looks_a_work_order_up_by_its_number() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    org(&server);
    let hotline = server.office_token("office", "hotline");
    let (_, case) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-0301", Some("G1")),
    );
    let (status, found) = server.office_get(&hotline, "/v1/office/work-orders/12345-0301");
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["id"], case["id"]);
    assert_eq!(
        found["reporter"]["phone"], "13912345678",
        "the hotline calls back"
    );
    // Unknown, or another community's (a user of C2 only): not found alike.
    let (status, body) = server.office_get(&hotline, "/v1/office/work-orders/12345-9999");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, _) = server.admin(
        "/v1/admin/workers",
        json!({"id": "c2-clerk", "communities": ["C2"]}),
    );
    assert!(status < 300);
    let other = server.office_token("c2-clerk", "hotline");
    let (status, body) = server.office_get(&other, "/v1/office/work-orders/12345-0301");
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // The warnings are counted for monitoring.
    let (_, metrics) = gridsync_tests::server::get_bytes(&format!("{}/metrics", server.url), None);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("gridsync_cases_due_soon 0"), "{metrics}");
    assert!(metrics.contains("gridsync_cases_overdue 0"), "{metrics}");
}

#[test]
fn case_lists_and_figures_export_as_csv_and_excel_with_personal_data_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    org(&server);
    let office = server.office_token("office", "office");
    let street = server.office_token("dept", "street");
    for (n, title) in [(1, "楼道灯不亮"), (2, "=HYPERLINK(\"x\"),\"引号\"")] {
        let mut order = work_order(&format!("12345-04{n:02}"), Some("G1"));
        order["title"] = json!(title);
        let (status, body) = server.office_post(&office, "/v1/office/work-orders", order);
        assert_eq!(status, 201, "{body}");
    }
    let get = |token: &str, path: &str| {
        gridsync_tests::server::get_bytes(&format!("{}{path}", server.url), Some(token))
    };
    let (status, csv) = get(&office, "/v1/office/exports/issues.csv?sort=created");
    assert_eq!(status, 200);
    assert!(
        csv.starts_with(&[0xEF, 0xBB, 0xBF]),
        "a byte-order mark for Excel and WPS"
    );
    let text = String::from_utf8(csv[3..].to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("案件号,工单号,标题,状态"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("反映人电话"),
        "the office sees the phone"
    );
    assert!(
        lines[1].contains("12345-0401") && lines[1].contains("已派单"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].contains("幸福街道") && lines[1].ends_with("13912345678"),
        "{}",
        lines[1]
    );
    // A title a spreadsheet would run as a formula stays text, quoted.
    assert!(
        lines[2].contains(r#""'=HYPERLINK(""x""),""引号""""#),
        "{}",
        lines[2]
    );
    // A street login: the same cases, no phone column, no number anywhere.
    let (status, csv) = get(&street, "/v1/office/exports/issues.csv");
    assert_eq!(status, 200);
    let text = String::from_utf8(csv[3..].to_vec()).unwrap();
    assert!(
        !text.contains("反映人电话") && !text.contains("13912345678"),
        "{text}"
    );
    assert_eq!(text.split("\r\n").filter(|l| !l.is_empty()).count(), 3);
    // Filters apply; a bad one is the list's JSON error, before any byte.
    let (status, csv) = get(&office, "/v1/office/exports/issues.csv?q=%E7%81%AF");
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(csv)
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
    let (status, body) = get(&office, "/v1/office/exports/issues.csv?status=close");
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, _) = get(&street, "/v1/office/exports/issues.csv?phone=13912345678");
    assert_eq!(
        status, 403,
        "the phone lookup is for the roles that call back"
    );
    let (status, _) = get("gso1.off-9.00", "/v1/office/exports/issues.csv");
    assert_eq!(status, 401);
    // Excel: a zip package with the sheet.
    let (status, xlsx) = get(&office, "/v1/office/exports/issues.xlsx");
    assert_eq!(status, 200);
    assert!(xlsx.starts_with(b"PK"), "an Office Open XML package");
    assert!(
        xlsx.windows(14).any(|w| w == b"xl/worksheets/"),
        "with a worksheet"
    );
    // Figures: a row per group and the total, with rates and their counts.
    let (status, csv) = get(&office, "/v1/office/exports/figures.csv?by=grid");
    assert_eq!(status, 200);
    let text = String::from_utf8(csv[3..].to_vec()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(
        lines[0].starts_with("分组,案件,在办,逾期,响应率"),
        "{}",
        lines[0]
    );
    assert!(lines.last().unwrap().starts_with("合计,2,2,"), "{text}");
    let (status, xlsx) = get(&office, "/v1/office/exports/figures.xlsx?by=community");
    assert_eq!(status, 200);
    assert!(xlsx.starts_with(b"PK"));
}
