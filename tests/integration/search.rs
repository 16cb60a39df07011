//! Finding cases by what is written in them: partial Chinese words,
//! addresses, case and work-order numbers, and — only for the roles that
//! may see it — the reporter's phone; never by personal data in the text.
//! Texts follow every write and sync, survive reopening, and are answered
//! from memory without loading a document.

use gridsync_core::{IssueOp, Query, Store, StoreConfig, TimelineKind};
use gridsync_tests::server::TestServer;
use gridsync_tests::*;

fn search_store(path: &std::path::Path) -> Store {
    search_store_holding(path, gridsync_core::store::DEFAULT_SEARCH_CACHE_BYTES)
}

/// A store keeping search texts that holds at most `cache` bytes of them
/// in memory (0: every text a search needs is read from the store).
fn search_store_holding(path: &std::path::Path, cache: usize) -> Store {
    let mut config = StoreConfig::new(path, "SRV");
    config.search = true;
    config.search_cache_bytes = cache;
    config.engine = engine::engine_for(path);
    Store::open(config).unwrap()
}

/// The case numbers a query finds, sorted.
fn found(store: &Store, q: Query) -> Vec<String> {
    let mut numbers: Vec<String> = store
        .list(&q.page(0, 500))
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.number)
        .collect();
    numbers.sort();
    numbers
}

fn words(store: &Store, q: &str) -> Vec<String> {
    found(store, Query::issues().search(q))
}

/// Percent-encodes a query parameter's value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

gridsync_tests::on_both_engines! {
    #[test]
    fn a_store_finds_cases_by_partial_words_and_numbers_never_by_personal_data() {
        // Both texts held in memory, one of the two, none (every text a
        // search needs read from the engine): the same answers.
        let all = finds_cases_by_partial_words_and_numbers(
            gridsync_core::store::DEFAULT_SEARCH_CACHE_BYTES,
            2,
        );
        finds_cases_by_partial_words_and_numbers(all - 1, 1);
        finds_cases_by_partial_words_and_numbers(0, 0);
    }
}

/// Runs the searches with a store holding at most `cache` bytes of texts
/// in memory, which holds `held` texts after reopening; returns the
/// bytes it held.
fn finds_cases_by_partial_words_and_numbers(cache: usize, held: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let store = search_store_holding(&path, cache);
    let mut a = new_issue(1, 1, 1);
    a.title = "电动车充电线穿窗".into();
    a.location.address = "幸福路12号".into();
    a.description = "楼道里有人私拉电线给电动车充电".into();
    let a_id = store.create_issue(&worker(1), a).unwrap();
    let b_id = store.create_issue(&worker(1), new_issue(2, 1, 1)).unwrap();
    store
        .update_issue(
            a_id,
            &worker(1),
            IssueOp::AddTimeline {
                kind: TimelineKind::Visit,
                text: "上门核实，邻居反映情况属实，联系电话13912345678".into(),
            },
        )
        .unwrap();
    let (a_no, b_no) = (
        store.issue(a_id).unwrap().case_no,
        store.issue(b_id).unwrap().case_no,
    );
    let b_urgency = store.issue(b_id).unwrap().urgency.unwrap();
    store
        .update_issue(
            b_id,
            &office(),
            IssueOp::AddTimeline {
                kind: TimelineKind::Supervision,
                text: "街道督办，限三日内处理".into(),
            },
        )
        .unwrap();
    drop(store);

    // Reopened: the texts come from disk, and no query loads a document.
    let store = search_store_holding(&path, cache);
    assert_eq!(store.loaded_documents().unwrap(), 0);
    let (texts_held, bytes) = store.search_texts_held();
    assert!(bytes <= cache, "{bytes} > {cache}");
    assert_eq!(texts_held, held);
    let both = vec![a_no.clone(), b_no.clone()];
    assert_eq!(words(&store, "电动车充电"), vec![a_no.clone()]);
    assert_eq!(words(&store, "楼道"), both);
    assert_eq!(words(&store, "幸福路12号"), vec![a_no.clone()]);
    assert_eq!(words(&store, "幸福路１２号"), vec![a_no.clone()]);
    assert_eq!(words(&store, "楼道 充电"), vec![a_no.clone()]);
    assert_eq!(words(&store, "邻居反映"), vec![a_no.clone()]);
    assert!(words(&store, "漏水").is_empty());
    assert_eq!(words(&store, &a_no.to_lowercase()), vec![a_no.clone()]);
    // Filters combine with the terms.
    let mut q = Query::issues().search("楼道");
    q.urgency = Some(b_urgency.as_str().into());
    assert_eq!(found(&store, q), vec![b_no.clone()]);
    // Supervision and activity after close are kept with the texts.
    let mut q = Query::issues();
    q.supervised = Some(true);
    assert_eq!(found(&store, q.clone()), vec![b_no.clone()]);
    q.supervised = Some(false);
    assert_eq!(found(&store, q), vec![a_no.clone()]);
    let mut q = Query::issues();
    q.activity_after_close = Some(false);
    assert_eq!(found(&store, q.clone()), both);
    q.activity_after_close = Some(true);
    assert!(found(&store, q).is_empty());
    // Numbers name their case.
    assert_eq!(store.find_by_number(&a_no).unwrap(), Some(a_id));
    assert_eq!(
        store.find_by_number(&b_no.to_lowercase()).unwrap(),
        Some(b_id)
    );
    assert_eq!(store.find_by_number("NOPE-1").unwrap(), None);

    // Personal data is never searchable text: not the reporter's name or
    // phone, not a phone number quoted in a note (of which only what any
    // role is shown, `139****5678`, is there to find).
    for secret in ["张女士", "13800000000", "13912345678", "91234"] {
        assert!(words(&store, secret).is_empty(), "{secret}");
    }
    // The reporter's phone is an exact lookup of its own.
    let mut q = Query::issues();
    q.phone = Some("138 0000 0000".into());
    assert_eq!(found(&store, q.clone()), both);
    q.phone = Some("13800000001".into());
    assert!(found(&store, q).is_empty());
    assert_eq!(store.loaded_documents().unwrap(), 0);

    // A value no record can have is an error naming the valid ones.
    let mut q = Query::issues();
    q.statuses = vec!["close".into()];
    let e = store.list(&q).unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    assert!(e.to_string().contains("closed"), "{e}");
    let mut q = Query::issues();
    q.urgency = Some("purple".into());
    let e = store.list(&q).unwrap_err();
    assert!(e.to_string().contains("red, yellow, blue"), "{e}");

    // A store that keeps no texts says so instead of finding nothing.
    let plain = temp_store("D1");
    let e = plain.list(&Query::issues().search("楼道")).unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    bytes
}

#[test]
fn texts_follow_sync_and_stay_current_when_a_store_turns_them_off_and_on() {
    // A phone keeps no texts; the server's store derives them from what
    // the phone sends.
    let phone = temp_store("D1");
    let id = phone.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    phone
        .update_issue(
            id,
            &worker(1),
            IssueOp::AddTimeline {
                kind: TimelineKind::Note,
                text: "井盖缺失，已设置警示".into(),
            },
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = search_store(&dir.path().join("server"));
    exchange(&phone, &server);
    let no = phone.issue(id).unwrap().case_no;
    assert_eq!(words(&server, "井盖"), vec![no.clone()]);
    // A later change arrives: the text follows.
    phone
        .update_issue(id, &worker(1), IssueOp::SetTitle("下水道堵塞".into()))
        .unwrap();
    exchange(&phone, &server);
    assert_eq!(words(&server, "下水道"), vec![no.clone()]);
    assert!(words(&server, "楼道照明损坏").is_empty());
    drop(server);

    // Opened without texts, written to, opened with them again: the
    // texts are those of the record as it is now, not as it was.
    let path = dir.path().join("server");
    let plain = open_store(&path, "SRV");
    assert!(!plain.keeps_search_texts());
    plain
        .update_issue(id, &office(), IssueOp::SetTitle("电梯困人".into()))
        .unwrap();
    drop(plain);
    let server = search_store(&path);
    assert_eq!(words(&server, "电梯困人"), vec![no.clone()]);
    assert!(words(&server, "下水道").is_empty());
    assert_eq!(words(&server, "井盖"), vec![no]);
}

#[test]
fn the_office_searches_filters_and_opens_cases_by_number_as_its_role_allows() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let device = server.enroll("w1", &dir.path().join("phone"));
    let mut issue = new_issue(1, 1, 1);
    issue.title = "电动车楼道充电".into();
    let id = device.store.create_issue(&device.author, issue).unwrap();
    device.sync().unwrap();
    let no = device.store.issue(id).unwrap().case_no;
    let office = server.office_token("office", "office");
    let street = server.office_token("office", "street");
    let grid2 = server.office_token("w2", "community");
    let list =
        |token: &str, query: &str| server.office_get(token, &format!("/v1/office/issues?{query}"));

    let (status, body) = list(&office, &format!("q={}", enc("楼道 充电")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 1);
    assert_eq!(body["items"][0]["number"], no.as_str());
    let (_, body) = list(&office, &format!("q={}", enc("漏水")));
    assert_eq!(body["total"], 0);
    // Mistyped filter values are refused with the valid ones.
    let (status, body) = list(&office, "status=close");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_input"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("closed"),
        "{body}"
    );
    let (status, body) = list(&office, "kind=complain");
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("complaint"),
        "{body}"
    );
    let (status, _) = list(&office, "sort=newest");
    assert_eq!(status, 400);
    // Empty parameters (a form's "all") filter nothing.
    let (status, body) = list(&office, "status=&urgency=&q=&street=");
    assert_eq!((status, body["total"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = list(&office, "status=closed,,handled");
    assert_eq!(status, 200, "{body}");
    // Only the empty string is empty: a value of white space (a space,
    // U+0085) is a value, and not a valid urgency or status.
    for bad in ["urgency=%20", "urgency=%C2%85", "status=%20", "kind=%C2%85"] {
        let (status, body) = list(&office, bad);
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_input")),
            "{bad}: {body}"
        );
    }
    let (_, body) = list(&office, "supervised=true");
    assert_eq!(body["total"], 0);
    let (_, body) = list(&office, "supervised=false&activity_after_close=false");
    assert_eq!(body["total"], 1);

    // The case number opens the case; an unknown one, or one outside the
    // caller's scope, is "not found" alike.
    let (status, body) = server.office_get(&office, &format!("/v1/office/issues/{no}"));
    assert_eq!(
        (status, body["title"].as_str()),
        (200, Some("电动车楼道充电"))
    );
    let (status, unknown) = server.office_get(&office, "/v1/office/issues/SRV-999999");
    assert_eq!((status, unknown["code"].as_str()), (404, Some("not_found")));
    let (status, hidden) = server.office_get(&grid2, &format!("/v1/office/issues/{no}"));
    assert_eq!(status, 404);
    assert_eq!(
        hidden["message"].as_str().unwrap().replace(&no, "?"),
        unknown["message"]
            .as_str()
            .unwrap()
            .replace("SRV-999999", "?")
    );
    let (_, body) = list(&grid2, &format!("q={}", enc("楼道")));
    assert_eq!(body["total"], 0);

    // A 12345 work order is found by its number, and opened by it.
    let (status, body) = server.office_post(
        &office,
        "/v1/office/work-orders",
        serde_json::json!({
            "work_order_no": "12345-2026-000777", "category": "facilities.lighting",
            "kind": "complaint", "urgency": "yellow", "title": "路灯不亮",
            "reporter": {"name": "李先生", "phone": "13912345678", "anonymous": false,
                         "may_call_back": true},
            "street": "S1", "community": "C1", "grid": "G1"
        }),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.office_get(&office, "/v1/office/issues/12345-2026-000777");
    assert_eq!(
        (status, body["title"].as_str()),
        (200, Some("路灯不亮")),
        "{body}"
    );
    let (_, body) = list(&office, "q=12345-2026-000777");
    assert_eq!(body["total"], 1);

    // The phone lookup is for roles that see personal data; a street
    // login can neither look it up nor find it as text.
    let (status, body) = list(&office, "phone=13800000000");
    assert_eq!((status, body["total"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = list(&street, "phone=13800000000");
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    let (_, body) = list(&street, "q=13800000000");
    assert_eq!(body["total"], 0);
}
