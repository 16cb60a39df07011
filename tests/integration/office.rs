//! The office API over real HTTP: 12345 work-order intake, lists and reads
//! within the office user's scope, timelines, history and conflicts,
//! office actions, personal data by role, and bad input.

use gridsync_core::IssueStatus;
use gridsync_tests::server::{self, TestServer, ADMIN};
use gridsync_tests::*;
use serde_json::{json, Value};

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");

fn work_order(no: &str, grid: Option<&str>) -> Value {
    let mut order = json!({
        "work_order_no": no,
        "category": "facilities.lighting",
        "kind": "complaint",
        "urgency": "yellow",
        "title": "楼道灯不亮",
        "statement": "三号楼楼道灯坏了一个月",
        "description": "市民来电反映三号楼楼道照明损坏。",
        "reporter": {"name": "李先生", "phone": "13912345678", "anonymous": false, "may_call_back": true},
        "street": "S1",
        "community": "C1",
        "address": "幸福路 12 号 3 号楼",
        "deadline": 1_900_000_000_000i64,
    });
    if let Some(g) = grid {
        order["grid"] = json!(g);
    }
    order
}

fn id_of(body: &Value) -> gridsync_core::RecordId {
    body["id"].as_str().unwrap().parse().unwrap()
}

#[test]
fn a_work_order_is_dispatched_to_its_grid_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let hotline = server.office_token("office", "hotline");
    let (status, body) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-0001", Some("G1")),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "dispatched");
    assert_eq!(body["external_ref"], "12345-0001");
    assert_eq!(body["source"], "hotline_12345");
    assert_eq!(body["effective_deadline"], 1_900_000_000_000i64);
    let id = id_of(&body);
    // The same work order again (a retry): the same case, nothing new.
    let before = server.fingerprint();
    let (status, again) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-0001", Some("G1")),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(id_of(&again), id);
    assert_eq!(
        server.fingerprint(),
        before,
        "a repeated work order changed nothing"
    );
    // It reaches G1's devices on their next sync, and only them.
    let g1 = server.enroll("w1", &dir.path().join("g1"));
    let g2 = server.enroll("w2", &dir.path().join("g2"));
    g1.sync().unwrap();
    g2.sync().unwrap();
    let v = g1.store.issue(id).unwrap();
    assert_eq!(v.status, IssueStatus::Dispatched);
    assert_eq!(v.reporter.phone, "13912345678");
    assert!(g2.store.is_empty().unwrap());
    // The worker signs for it on the device; the office sees it.
    g1.store
        .update_issue(
            id,
            &worker(1),
            gridsync_core::IssueOp::Transition {
                to: IssueStatus::SignedFor,
                reason: String::new(),
            },
        )
        .unwrap();
    g1.sync().unwrap();
    let (_, v) = server.office_get(&hotline, &format!("/v1/office/issues/{id}"));
    assert_eq!(v["status"], "signed_for");
}

#[test]
fn a_work_order_for_a_community_waits_for_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let office_token = server.office_token("office", "office");
    let (status, body) = server.office_post(
        &office_token,
        "/v1/office/work-orders",
        work_order("12345-0002", None),
    );
    assert_eq!(status, 201, "{body}");
    let id = id_of(&body);
    assert_eq!(body["location"]["grid"], "");
    let g1 = server.enroll("w1", &dir.path().join("g1"));
    g1.sync().unwrap();
    assert!(g1.store.is_empty().unwrap(), "not yet any grid's");
    let (status, _) = server.admin(
        &format!("/v1/admin/records/{id}/move"),
        json!({"street": "S1", "community": "C1", "grid": "G1"}),
    );
    assert_eq!(status, 204);
    g1.sync().unwrap();
    assert_eq!(g1.store.issue(id).unwrap().location.grid, "G1");
}

#[test]
fn lists_and_reads_stay_in_the_users_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    for (path, body) in [
        ("/v1/admin/communities", json!({"id": "C2", "street": "S1"})),
        ("/v1/admin/grids", json!({"id": "G3", "community": "C2"})),
        (
            "/v1/admin/workers",
            json!({"id": "office2", "communities": ["C2"]}),
        ),
    ] {
        assert!(server.admin(path, body).0 < 300);
    }
    let c1 = server.office_token("office", "office");
    let c2 = server.office_token("office2", "office");
    let mut ids = Vec::new();
    for (n, grid) in ["G1", "G2", "G1"].iter().enumerate() {
        let (status, body) = server.office_post(
            &c1,
            "/v1/office/work-orders",
            work_order(&format!("12345-10{n}"), Some(grid)),
        );
        assert_eq!(status, 201, "{body}");
        ids.push(id_of(&body));
    }
    let (status, page) = server.office_get(&c1, "/v1/office/issues?grid=G1&sort=deadline&limit=1");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["grid"], "G1");
    let (_, page) = server.office_get(&c1, "/v1/office/issues?status=dispatched,closed&open=true");
    assert_eq!(page["total"], 3);
    // Another community's office sees none of them, not even by id.
    let (_, page) = server.office_get(&c2, "/v1/office/issues");
    assert_eq!(page["total"], 0);
    let (status, body) = server.office_get(&c2, &format!("/v1/office/issues/{}", ids[0]));
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    // Nor may it file a work order in C1.
    let (status, body) = server.office_post(
        &c2,
        "/v1/office/work-orders",
        work_order("12345-0999", Some("G1")),
    );
    assert_eq!((status, body["code"].as_str()), (403, Some("out_of_scope")));
    // Timeline and history of a case.
    let id = ids[0];
    let (status, _) = server.office_post(
        &c1,
        &format!("/v1/office/issues/{id}/ops"),
        json!({"op": "add_timeline", "args": {"kind": "supervision", "text": "请尽快处理"}}),
    );
    assert_eq!(status, 200);
    let (_, timeline) = server.office_get(&c1, &format!("/v1/office/issues/{id}/timeline"));
    let types: Vec<&str> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "status").count(),
        3,
        "{types:?}"
    );
    assert!(
        types.contains(&"timeline") && types.contains(&"deadline_change"),
        "{types:?}"
    );
    let (_, history) = server.office_get(&c1, &format!("/v1/office/issues/{id}/history"));
    let tos: Vec<&str> = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, ["reported", "accepted", "dispatched"]);
    // Bad list parameters are refused with a code.
    for bad in [
        "?sort=sideways",
        "?limit=100000",
        "?open=maybe",
        "?colour=red",
    ] {
        let (status, body) = server.office_get(&c1, &format!("/v1/office/issues{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["code"].is_string(), "{bad}: {body}");
    }
}

#[test]
fn office_actions_are_typed_operations_and_settle_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let office_token = server.office_token("office", "office");
    let (_, body) = server.office_post(
        &office_token,
        "/v1/office/work-orders",
        work_order("12345-0003", Some("G1")),
    );
    let id = id_of(&body);
    let ops = format!("/v1/office/issues/{id}/ops");
    // An illegal transition: refused, nothing written.
    let before = server.fingerprint();
    let (status, body) = server.office_post(
        &office_token,
        &ops,
        json!({"op": "transition", "args": {"to": "closed", "reason": ""}}),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("illegal_transition"))
    );
    for bad in [
        json!({"op": "fly", "args": {}}),
        json!({"op": "transition", "args": {"to": "teleported", "reason": ""}}),
        json!("transition"),
    ] {
        let (status, body) = server.office_post(&office_token, &ops, bad.clone());
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("invalid_json")),
            "{bad}"
        );
    }
    assert_eq!(server.fingerprint(), before);
    // Two devices of G1 disagree offline; the office settles it.
    let a = server.enroll("w1", &dir.path().join("a"));
    let b = server.enroll("w1", &dir.path().join("b"));
    a.sync().unwrap();
    b.sync().unwrap();
    advance(&a.store, id, IssueStatus::SignedFor).unwrap();
    advance(&a.store, id, IssueStatus::InProgress).unwrap();
    advance(&b.store, id, IssueStatus::Returned).unwrap();
    a.sync().unwrap();
    b.sync().unwrap();
    let (_, conflicts) =
        server.office_get(&office_token, &format!("/v1/office/issues/{id}/conflicts"));
    let candidates: Vec<&str> = conflicts["status_conflict"]["candidates"]
        .as_array()
        .unwrap_or_else(|| panic!("a conflict: {conflicts}"))
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(candidates, ["in_progress", "returned"]);
    let (_, page) = server.office_get(&office_token, "/v1/office/issues?conflict=true");
    assert_eq!(page["total"], 1);
    let (status, body) = server.office_post(
        &office_token,
        &ops,
        json!({"op": "resolve_status_conflict", "args": {"to": "in_progress", "reason": "已核实在办"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "in_progress");
    assert!(body["status_conflict"].is_null(), "{body}");
    // The devices learn of it on their next sync.
    a.sync().unwrap();
    let v = a.store.issue(id).unwrap();
    assert_eq!(v.status, IssueStatus::InProgress);
    assert!(v.status_conflict.is_none());
    let last = v.transitions.last().unwrap();
    assert_eq!(
        (last.event.by.as_str(), last.event.role.as_str()),
        ("office", "office")
    );
}

#[test]
fn personal_data_is_for_roles_that_call_residents_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = TestServer::spawn_logging(
        SERVER,
        &dir.path().join("server"),
        "127.0.0.1:0",
        Some(&log),
    );
    server.setup_org();
    let hotline = server.office_token("office", "hotline");
    let department = server.office_token("office", "department");
    let (status, body) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        work_order("12345-0004", Some("G1")),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["reporter"]["phone"], "13912345678");
    let id = id_of(&body);
    let (_, seen) = server.office_get(&department, &format!("/v1/office/issues/{id}"));
    assert!(seen["reporter"].is_null(), "{seen}");
    assert_eq!(seen["title"], "楼道灯不亮");
    let (_, me) = server.office_get(&department, "/v1/office/me");
    assert_eq!(me["sees_personal_data"], false);
    let (status, body) = server.office_post(
        &department,
        &format!("/v1/office/issues/{id}/ops"),
        json!({"op": "set_reporter", "args": {"name": "x", "phone": "1", "anonymous": false, "may_call_back": false}}),
    );
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    // A bad body carrying personal data: refused, and not logged.
    let mut bad = work_order("12345-0005", Some("G1"));
    bad["urgency"] = json!("purple");
    let (status, _) = server.office_post(&hotline, "/v1/office/work-orders", bad);
    assert_eq!(status, 422);
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("/v1/office/work-orders"),
        "the log has the requests"
    );
    for secret in ["13912345678", "李先生", ADMIN, &hotline[5..]] {
        assert!(!text.contains(secret), "the log holds {secret:?}");
    }
    // Written to a file: plain text, no terminal colour codes.
    assert!(!text.contains('\u{1b}'), "colour codes in the log file");
}

#[test]
fn office_tokens_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let device = server.enroll("w1", &dir.path().join("d"));
    let office_token = server.office_token("office", "office");
    for (token, status) in [
        (None, 401),
        (Some(device.token.as_str()), 401),
        (Some(ADMIN), 401),
        (Some("gso1.off-1.00"), 401),
        (Some(&office_token[..office_token.len() - 1]), 401),
    ] {
        let (got, body) = server::get_json(&format!("{}/v1/office/issues", server.url), token);
        assert_eq!(got, status, "{token:?}: {body}");
        assert_eq!(body["code"], "unauthorized");
    }
    // A revoked login stops working at once.
    let (_, me) = server.office_get(&office_token, "/v1/office/me");
    assert_eq!(me["user"], "office");
    let id = office_token.split('.').nth(1).unwrap();
    let (status, _) = server.admin(&format!("/v1/admin/office-users/{id}/revoke"), json!({}));
    assert_eq!(status, 204);
    let (status, body) = server.office_get(&office_token, "/v1/office/me");
    assert_eq!((status, body["code"].as_str()), (403, Some("revoked")));
    // Grid workers have devices, not office logins; unknown workers none.
    for body in [
        json!({"worker": "w1", "role": "grid_worker"}),
        json!({"worker": "nobody", "role": "office"}),
        json!({"worker": "office", "role": "emperor"}),
    ] {
        let (status, answer) = server.admin("/v1/admin/office-users", body.clone());
        assert!((400..500).contains(&status), "{body}: {status} {answer}");
        assert!(answer["code"].is_string());
    }
}

#[test]
fn figures_and_devices_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let office_token = server.office_token("office", "office");
    for (no, grid) in [
        ("12345-0101", "G1"),
        ("12345-0102", "G1"),
        ("12345-0103", "G2"),
    ] {
        let (status, _) = server.office_post(
            &office_token,
            "/v1/office/work-orders",
            work_order(no, Some(grid)),
        );
        assert_eq!(status, 201);
    }
    let synced = server.enroll("w1", &dir.path().join("a"));
    let _never = server.enroll("w2", &dir.path().join("b"));
    synced.sync().unwrap();
    let (status, f) = server.office_get(&office_token, "/v1/office/figures?by=grid");
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["group_by"], "grid");
    assert_eq!(f["total"]["issues"], 3);
    assert_eq!(
        f["total"]["response"]["denominator"], 0,
        "all dispatched just now: inside their response window, not counted yet"
    );
    assert!(f["total"]["response"]["rate"].is_null(), "{f}");
    let rows: Vec<(&str, u64)> = f["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["group"].as_str().unwrap(), r["issues"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, [("G1", 2), ("G2", 1)]);
    assert_eq!(f["devices"]["total"], 2);
    assert_eq!(f["devices"]["not_synced"], 1);
    let (_, f) = server.office_get(&office_token, "/v1/office/figures?grid=G2&by=category");
    assert_eq!(f["total"]["issues"], 1);
    let (_, devices) = server.office_get(&office_token, "/v1/office/devices");
    assert_eq!(devices["items"].as_array().unwrap().len(), 2);
    let (status, body) = server.office_get(&office_token, "/v1/office/figures?by=colour");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[test]
fn the_demo_seeds_a_whole_district_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let seeded = gridsync_server::demo::seed(&data, 300).unwrap();
    assert_eq!(seeded.issues, 300);
    assert!(seeded.meetings > 0 && seeded.conflicts > 0, "{seeded:?}");
    assert_eq!(seeded.logins.len(), 4);
    let again = gridsync_server::demo::seed(&data, 10).unwrap_err();
    assert!(again.to_string().contains("fresh directory"), "{again}");
    let server = TestServer::start(&data);
    let token = &seeded.logins[0].2;
    let (status, f) = server.office_get(token, "/v1/office/figures?by=community");
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["total"]["issues"], 300);
    assert_eq!(f["rows"].as_array().unwrap().len(), 3);
    assert!(f["total"]["open_conflicts"].as_u64().unwrap() > 0);
    assert!(f["total"]["overdue"].as_u64().unwrap() > 0);
    assert!(f["total"]["meetings"].as_u64().unwrap() > 0);
    // Every state of the workflow occurs.
    let (_, page) = server.office_get(token, "/v1/office/issues?limit=500");
    let states: std::collections::BTreeSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    for s in [
        "reported",
        "accepted",
        "dispatched",
        "in_progress",
        "closed",
        "reopened",
    ] {
        assert!(states.contains(s), "no {s} case in {states:?}");
    }
    // A grid worker's device receives its grid.
    let device = server.enroll("w-C01-G1", &dir.path().join("d"));
    let report = device.sync().unwrap();
    assert!(report.pulled > 0);
}
