//! Feedback to the 12345 hotline over real HTTP: a receiving platform in
//! the test process that fails, answers too late, drops connections and
//! refuses; a server killed with SIGKILL while events wait. Every event
//! arrives, in order per case, signed; repeats carry the same id; refused
//! ones are parked where the admin sees them. On sled and on
//! PostgreSQL, and with two server nodes on one database.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use gridsync_core::{IssueOp, IssueStatus, RecordId};
use gridsync_tests::receiver::{Answer, Receiver};
use gridsync_tests::server::{TestServer, ADMIN};
use hmac::{KeyInit, Mac};
use serde_json::{json, Value};

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");
const SECRET: &str = "test-hotline-shared-secret";

fn work_order(no: &str) -> Value {
    json!({
        "work_order_no": no,
        "category": "facilities.lighting",
        "kind": "complaint",
        "urgency": "blue",
        "title": "楼道灯不亮",
        "reporter": {"name": "李先生", "phone": "13912345678", "anonymous": false, "may_call_back": true},
        "street": "S1",
        "community": "C1",
        "grid": "G1",
        "address": "幸福路 12 号",
    })
}

fn put(url: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
    gridsync_tests::server::put_json(url, token, &body.unwrap_or(Value::Null))
}

/// Points the hotline at `receiver`, waiting `timeout_ms` for an answer:
/// short where the receiver answers late on purpose; long where a repeat
/// would be wrong (a local answer is never that slow, even on a busy
/// machine).
fn set_endpoint(server: &TestServer, receiver: &Receiver, timeout_ms: u64) {
    let (status, body) = put(
        &format!("{}/v1/admin/hotline/endpoints/city-12345", server.url),
        Some(json!({"url": receiver.url, "secret": SECRET, "timeout_ms": timeout_ms})),
        Some(ADMIN),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["backlog"], 0);
    assert!(body.get("secret").is_none(), "the secret is never shown");
}

fn op(server: &TestServer, token: &str, id: RecordId, op: Value) {
    let (status, body) = server.office_post(token, &format!("/v1/office/issues/{id}/ops"), op);
    assert_eq!(status, 200, "{body}");
}

fn to(status: &str) -> Value {
    json!({"op": "transition", "args": {"to": status, "reason": if status == "reopened" { "又坏了" } else { "" }}})
}

fn overview(server: &TestServer) -> Value {
    gridsync_tests::server::get_json(&format!("{}/v1/admin/hotline", server.url), Some(ADMIN)).1
}

/// Checks every request's signature (HMAC-SHA256 of timestamp, '.', body)
/// and that the id in the header is the body's.
fn check_signed(received: &[gridsync_tests::receiver::Received]) {
    for r in received {
        let ts = r.header("x-gridsync-timestamp").unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(&r.body);
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(r.header("x-gridsync-signature"), Some(expected.as_str()));
        let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
        assert!((0..600).contains(&age), "timestamp {ts} is {age} s old");
        let id = r.json()["event_id"].as_str().unwrap().to_owned();
        assert_eq!(r.header("x-gridsync-event"), Some(id.as_str()));
        assert_eq!(r.header("idempotency-key"), Some(id.as_str()));
    }
}

/// What the receiver took, per work order: the event types in the order
/// they first arrived. Repeats must be byte-identical to the first copy.
fn first_arrivals(taken: &[gridsync_tests::receiver::Received]) -> BTreeMap<String, Vec<String>> {
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in taken {
        let body = r.json();
        let id = body["event_id"].as_str().unwrap().to_owned();
        if let Some(first) = seen.get(&id) {
            assert_eq!(
                first, &r.body,
                "a repeat of {id} differs from the first copy"
            );
            continue;
        }
        seen.insert(id, r.body.clone());
        out.entry(body["work_order_no"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["type"].as_str().unwrap().to_owned());
    }
    out
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited two minutes for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

gridsync_tests::on_both_engines! {
    #[test]
    fn every_event_reaches_a_flapping_receiver_in_order_across_a_sigkill() {
        // The receiver is down at first (every request fails), then fails,
        // answers late, hangs up, and refuses one event for good (GD-6's
        // closing).
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_down = down.clone();
        let receiver = Receiver::start(move |n, body| {
            if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                return Answer::Fail;
            }
            if body["work_order_no"] == "GD-6" && body["type"] == "closed" {
                return Answer::Refuse;
            }
            match n % 10 {
                2 | 7 => Answer::Fail,
                4 => Answer::Slow(Duration::from_millis(700)),
                9 => Answer::Hang,
                _ => Answer::Take,
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("server");
        let mut server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
        server.setup_org();
        set_endpoint(&server, &receiver, 300);
        let office = server.office_token("office", "office");
        let mut ids = Vec::new();
        for n in 1..=6 {
            let (status, body) = server.office_post(
                &office,
                "/v1/office/work-orders",
                work_order(&format!("GD-{n}")),
            );
            assert_eq!(status, 201, "{body}");
            ids.push(body["id"].as_str().unwrap().parse::<RecordId>().unwrap());
        }
        // Cases 1 to 3 handled from the office.
        for (i, id) in ids[..3].iter().enumerate() {
            op(&server, &office, *id, to("signed_for"));
            op(&server, &office, *id, to("in_progress"));
            if i == 2 {
                let due = chrono::Utc::now().timestamp_millis() + 96 * 3_600_000;
                op(
                    &server,
                    &office,
                    *id,
                    json!({"op": "change_deadline", "args": {"due": due, "reason": "等配件"}}),
                );
            }
            op(
                &server,
                &office,
                *id,
                json!({"op": "set_reply_to_citizen", "args": "灯已修好"}),
            );
            op(&server, &office, *id, to("handled"));
        }
        // Cases 4 to 6 handled on a grid worker's phone, offline, then synced.
        let mut phone = server.enroll("w1", &dir.path().join("phone"));
        phone.sync().unwrap();
        for id in &ids[3..] {
            for status in [
                IssueStatus::SignedFor,
                IssueStatus::InProgress,
                IssueStatus::Handled,
            ] {
                phone
                    .store
                    .act_on_issue(
                        *id,
                        &phone.author,
                        IssueOp::Transition {
                            to: status,
                            reason: String::new(),
                        },
                    )
                    .unwrap();
            }
        }
        phone.sync().unwrap();
        // Killed while every event so far waits for the receiver, which then
        // comes back.
        let backlog = overview(&server)["endpoints"][0]["backlog"].as_u64().unwrap();
        assert_eq!(backlog, 3 * 3 + 1 + 3 * 2, "every event so far waits");
        assert!(receiver.taken().is_empty());
        server.kill();
        down.store(false, std::sync::atomic::Ordering::SeqCst);
        server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
        phone.url = server.url.clone();
        // Return visits and closing for all; case 1 reopened.
        for id in &ids {
            op(
                &server,
                &office,
                *id,
                json!({"op": "add_return_visit", "args": {"reached": true, "resolved": true, "satisfaction": "satisfied", "note": "满意"}}),
            );
            op(&server, &office, *id, to("closed"));
        }
        op(&server, &office, ids[0], to("reopened"));

        let office_done = ["signed_for", "reply_set", "handled", "return_visit", "closed"];
        let phone_done = ["signed_for", "handled", "return_visit", "closed"];
        let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in 1..=6 {
            let mut types: Vec<&str> = if n <= 3 {
                office_done.to_vec()
            } else {
                phone_done.to_vec()
            };
            if n == 3 {
                types.insert(1, "deadline_changed");
            }
            if n == 1 {
                types.push("reopened");
            }
            if n == 6 {
                // Refused for good: parked, not taken.
                types.pop();
            }
            expected.insert(
                format!("GD-{n}"),
                types.into_iter().map(str::to_owned).collect(),
            );
        }
        let total: usize = expected.values().map(Vec::len).sum();
        wait_for("every event", || {
            first_arrivals(&receiver.taken())
                .values()
                .map(Vec::len)
                .sum::<usize>()
                >= total
                && overview(&server)["endpoints"][0]["backlog"] == 0
        });
        let received = receiver.received();
        check_signed(&received);
        assert_eq!(first_arrivals(&receiver.taken()), expected);
        // The receiver's failures were retried; the refusal is parked.
        assert!(received.iter().any(|r| r.answer == Answer::Fail));
        assert!(received.iter().any(|r| matches!(r.answer, Answer::Slow(_))));
        let view = overview(&server);
        let endpoint = &view["endpoints"][0];
        assert_eq!(endpoint["name"], "city-12345");
        assert_eq!(endpoint["parked"], 1, "{view}");
        assert!(endpoint["last_success_at"].is_i64());
        assert!(endpoint["last_error"].is_string());
        let (status, parked) = gridsync_tests::server::get_json(
            &format!("{}/v1/admin/hotline/endpoints/city-12345/parked", server.url),
            Some(ADMIN),
        );
        assert_eq!(status, 200);
        let parked = parked["parked"].as_array().unwrap();
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0]["status"], 422);
        assert_eq!(parked[0]["response"], "unknown work order");
        let body: Value = serde_json::from_str(parked[0]["body"].as_str().unwrap()).unwrap();
        assert_eq!((body["work_order_no"].as_str(), body["type"].as_str()), (Some("GD-6"), Some("closed")));
        // Sent again by hand: refused again, so it stays parked.
        let (status, body) = gridsync_tests::server::post_json(
            &format!(
                "{}/v1/admin/hotline/endpoints/city-12345/parked/{}/redeliver",
                server.url, parked[0]["seq"]
            ),
            Some(ADMIN),
            json!({}),
        );
        assert_eq!((status, body["code"].as_str()), (502, Some("not_delivered")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("422"));
        let (_, still) = gridsync_tests::server::get_json(
            &format!("{}/v1/admin/hotline/endpoints/city-12345/parked", server.url),
            Some(ADMIN),
        );
        assert_eq!(still["parked"].as_array().unwrap().len(), 1);
        let (_, metrics) =
            gridsync_tests::server::get_bytes(&format!("{}/metrics", server.url), None);
        let metrics = String::from_utf8(metrics).unwrap();
        assert!(metrics.contains("gridsync_hotline_backlog{endpoint=\"city-12345\"} 0"), "{metrics}");
        assert!(metrics.contains("gridsync_hotline_parked{endpoint=\"city-12345\"} 1"), "{metrics}");
        // Repeats happened (late answers) and carried the same id: checked
        // by `first_arrivals`.
        assert!(receiver.taken().len() > total);
    }
}

#[test]
fn endpoints_are_the_admins_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    let url = format!("{}/v1/admin/hotline/endpoints/city", server.url);
    let good = json!({"url": "http://127.0.0.1:9/events", "secret": SECRET});
    assert_eq!(put(&url, Some(good.clone()), None).0, 401);
    let office = {
        server.setup_org();
        server.office_token("office", "office")
    };
    assert_eq!(put(&url, Some(good.clone()), Some(&office)).0, 401);
    for (bad, field) in [
        (json!({"url": "ftp://x/events", "secret": SECRET}), "url"),
        (
            json!({"url": "http://x/events", "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "http://x/events", "secret": SECRET, "timeout_ms": 1}),
            "timeout_ms",
        ),
        (
            json!({"url": "http://x/events", "secret": SECRET, "extra": 1}),
            "extra",
        ),
    ] {
        let (status, body) = put(&url, Some(bad), Some(ADMIN));
        // An unknown field is a body of the wrong shape (422), like
        // every other endpoint's; a bad value is invalid input (400).
        let wanted = if field == "extra" { 422 } else { 400 };
        assert_eq!(status, wanted, "{body}");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let (status, body) = put(
        &format!("{}/v1/admin/hotline/endpoints/Bad%20Name", server.url),
        Some(good.clone()),
        Some(ADMIN),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_input"))
    );
    assert_eq!(put(&url, Some(good), Some(ADMIN)).0, 200);
    let view = overview(&server);
    assert_eq!(view["endpoints"].as_array().unwrap().len(), 1);
    assert!(!view.to_string().contains(SECRET));
    let (status, _) = gridsync_tests::server::get_json(
        &format!("{}/v1/admin/hotline/endpoints/nope/parked", server.url),
        Some(ADMIN),
    );
    assert_eq!(status, 404);
}

/// Two server nodes on one PostgreSQL database: the same cases changed
/// through either node, one receiver. One node delivers at a time (the
/// lease), so each case's events arrive once each and in order.
#[test]
fn two_nodes_on_one_database_report_each_case_in_order() {
    gridsync_tests::engine::on_postgres(|| {
        let receiver = Receiver::start(|n, _| {
            if n % 4 == 1 {
                Answer::Fail
            } else {
                Answer::Take
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let a = TestServer::start(&dir.path().join("a"));
        let url = gridsync_tests::engine::database_of(&dir.path().join("a"));
        gridsync_tests::engine::use_database(&dir.path().join("b"), &url);
        let b = TestServer::start(&dir.path().join("b"));
        a.setup_org();
        set_endpoint(&a, &receiver, 10_000);
        let office = a.office_token("office", "office");
        let mut ids = Vec::new();
        for n in 1..=4 {
            let (status, body) = a.office_post(
                &office,
                "/v1/office/work-orders",
                work_order(&format!("GD-{n}")),
            );
            assert_eq!(status, 201, "{body}");
            ids.push(body["id"].as_str().unwrap().parse::<RecordId>().unwrap());
        }
        // Each step of each case through the other node than the last.
        let steps = ["signed_for", "in_progress", "handled", "closed", "reopened"];
        for (i, status) in steps.iter().enumerate() {
            for id in &ids {
                let node = if i % 2 == 0 { &a } else { &b };
                op(node, &office, *id, to(status));
            }
        }
        let expected: BTreeMap<String, Vec<String>> = (1..=4)
            .map(|n| {
                (
                    format!("GD-{n}"),
                    ["signed_for", "handled", "closed", "reopened"]
                        .map(str::to_owned)
                        .to_vec(),
                )
            })
            .collect();
        wait_for("every event", || {
            first_arrivals(&receiver.taken())
                .values()
                .map(Vec::len)
                .sum::<usize>()
                >= 16
                && overview(&a)["endpoints"][0]["backlog"] == 0
        });
        check_signed(&receiver.received());
        assert_eq!(first_arrivals(&receiver.taken()), expected);
        // Failures are retried, and nothing else is sent twice: one
        // delivers at a time.
        assert_eq!(receiver.taken().len(), 16);
        for node in [&a, &b] {
            let view = overview(node);
            assert_eq!(view["endpoints"][0]["delivered"], 16, "{view}");
        }
    });
}

/// A 12345 case whose deadline has passed is reported to the hotline as
/// breached, once, without anyone touching it (the server looks every few
/// seconds); a case of another channel is not.
#[test]
fn a_work_order_past_its_deadline_is_reported_breached_once() {
    let receiver = Receiver::start(|_, _| Answer::Take);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    set_endpoint(&server, &receiver, 10_000);
    let office = server.office_token("office", "office");
    let mut order = work_order("GD-LATE");
    let deadline = chrono::Utc::now().timestamp_millis() - 3_600_000;
    order["deadline"] = json!(deadline);
    let (status, body) = server.office_post(&office, "/v1/office/work-orders", order);
    assert_eq!(status, 201, "{body}");
    wait_for("the breach", || !receiver.taken().is_empty());
    // Another scan finds nothing new.
    std::thread::sleep(
        gridsync_server::hotline::WARNINGS_EVERY + std::time::Duration::from_millis(500),
    );
    let taken = receiver.taken();
    assert_eq!(taken.len(), 1);
    let event = taken[0].json();
    assert_eq!(event["type"], "deadline_breached");
    assert_eq!(event["work_order_no"], "GD-LATE");
    assert_eq!(event["status"], "dispatched");
    assert_eq!(
        event["deadline"].as_str(),
        Some(gridsync_core::hotline::time_text(deadline).as_str())
    );
    assert!(event.get("by").is_none());
}
