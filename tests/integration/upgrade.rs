//! Upgrades: stores written by an older build (committed fixtures under
//! `tests/fixtures/format-N`) open, migrate in place, verify and sync; a
//! migration stopped midway is taken up again; records written by a newer
//! app are kept, merged, synced again and shown with the unknown values
//! marked.

use std::path::{Path, PathBuf};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ScalarValue, ROOT};
use gridsync_core::{
    Author, Durability, IssueOp, IssueStatus, MeetingOp, RecordId, Role, Store, StoreConfig,
};
use gridsync_tests::server::{TestDevice, TestServer};
use gridsync_tests::*;
use serde_json::Value;

fn fixture(format: u32) -> (tempfile::TempDir, PathBuf, Value) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/format-{format}"));
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("fixture");
    copy_dir(&from, &to);
    let info: Value =
        serde_json::from_slice(&std::fs::read(to.join("fixture.json")).unwrap()).unwrap();
    (dir, to, info)
}

fn phone_config(root: &Path, phone: &Value) -> StoreConfig {
    let mut config = StoreConfig::new(
        root.join(phone["dir"].as_str().unwrap()),
        phone["device_code"].as_str().unwrap(),
    );
    config.durability = Durability::Flush;
    config
}

/// The store format a closed store's files record.
fn format_on_disk(path: &Path) -> u64 {
    let db = raw_sled(path);
    let v = db.get(b"mformat").unwrap().unwrap();
    u64::from_be_bytes(v.as_ref().try_into().unwrap())
}

#[test]
fn a_format_1_store_opens_migrates_verifies_and_syncs() {
    opens_migrates_verifies_and_syncs(1);
}

#[test]
fn a_format_2_store_opens_migrates_lists_its_file_references_and_syncs() {
    opens_migrates_verifies_and_syncs(2);
}

#[test]
fn a_format_3_store_opens_migrates_derives_action_due_dates_and_syncs() {
    opens_migrates_verifies_and_syncs(3);
}

#[test]
fn a_format_4_store_opens_migrates_derives_what_search_holds_and_syncs() {
    opens_migrates_verifies_and_syncs(4);
}

fn opens_migrates_verifies_and_syncs(format: u64) {
    let (_dir, root, info) = fixture(format as u32);
    assert_eq!(info["format"], format);
    assert_eq!(format_on_disk(&root.join("p1")), format);
    let server = TestServer::start(&root.join("server"));
    let server_store = server.store.clone().unwrap();
    assert_eq!(server_store.verify().unwrap(), Vec::<String>::new());
    let records = info["server"]["records"].as_array().unwrap();
    assert_eq!(server_store.len().unwrap(), records.len());
    // Search finds every case by its number: what it holds in memory was
    // derived at open (from the texts, or the documents before they were
    // kept).
    for id in records {
        let id: gridsync_core::RecordId = id.as_str().unwrap().parse().unwrap();
        let meta = server_store.meta(id).unwrap().unwrap();
        if meta.kind == "issue" {
            let q = gridsync_core::Query::issues().search(&meta.number);
            let found = server_store.list(&q).unwrap();
            assert!(
                found.items.iter().any(|m| m.record_id() == id),
                "{} not found",
                meta.number
            );
        }
    }
    assert_eq!(
        server_store.log_head().unwrap(),
        info["server"]["log_head"].as_u64().unwrap()
    );

    let phones: Vec<TestDevice> = info["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let store = Store::open(phone_config(&root, p)).unwrap();
            assert_eq!(store.verify().unwrap(), Vec::<String>::new());
            assert_eq!(store.len().unwrap() as u64, p["records"].as_u64().unwrap());
            assert_eq!(
                store.pending().unwrap().len() as u64,
                p["pending"].as_u64().unwrap()
            );
            TestDevice {
                store,
                author: Author::new(p["worker"].as_str().unwrap(), Role::GridWorker),
                token: p["token"].as_str().unwrap().into(),
                id: p["id"].as_str().unwrap().into(),
                url: server.url.clone(),
            }
        })
        .collect();
    // The migrated index is what the records derive: the worker's list
    // shows the same cases as before.
    let cases: Vec<RecordId> = info["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().parse().unwrap())
        .collect();
    for id in &cases {
        let meta = phones[0].store.meta(*id).unwrap().unwrap();
        assert_eq!(meta.unrecognized, Vec::<String>::new());
        assert_eq!(meta.grid, "G1");
    }
    // Format 3's file references are derived from the records: the photo
    // written before the upgrade is listed on the server and the phone
    // that attached it, and the server admits the phone's grid to it.
    if let Some(photo) = info.get("photo") {
        let hash = gridsync_core::FileHash::parse(photo["hash"].as_str().unwrap()).unwrap();
        let case: RecordId = photo["case"].as_str().unwrap().parse().unwrap();
        assert_eq!(server_store.file_refs(&hash).unwrap(), vec![case]);
        assert_eq!(phones[0].store.file_refs(&hash).unwrap(), vec![case]);
        let in_g1 = |s: &gridsync_core::RecordScope| s.grid == "G1";
        let in_g2 = |s: &gridsync_core::RecordScope| s.grid == "G2";
        assert!(server_store.file_visible(&hash, &in_g1).unwrap());
        assert!(!server_store.file_visible(&hash, &in_g2).unwrap());
    }

    // Format 4's facts are derived from the records: the meeting's open
    // action item (the format 3 fixture has one) lists its due date.
    if format == 3 {
        let meeting: RecordId = info["meeting"].as_str().unwrap().parse().unwrap();
        for store in [&server_store, &phones[0].store] {
            let facts = store.meta(meeting).unwrap().unwrap().facts;
            assert_eq!(facts.action_dues.len(), 1, "{facts:?}");
            assert_eq!(facts.actions_verified_dated, 0);
        }
    }

    // The offline work made before the upgrade goes up; everyone ends equal.
    for phone in &phones {
        let report = phone.sync().unwrap();
        assert!(report.refused.is_empty(), "{:?}", report.refused);
        assert!(phone.store.pending().unwrap().is_empty());
    }
    let offline: RecordId = info["phones"][0]["offline_case"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(server_store.meta(offline).unwrap().is_some());
    let note = server_store.issue(cases[2]).unwrap();
    assert!(note
        .timeline
        .iter()
        .any(|t| t.text == "离线补记：住户不在家"));
    for phone in &phones {
        for id in phone.store.record_ids().unwrap() {
            assert_eq!(
                phone.store.heads(id).unwrap(),
                server_store.heads(id).unwrap(),
                "{id}"
            );
        }
    }
    // New work after the upgrade syncs too.
    add_note(&phones[0].store, cases[0], &phones[0].author, "升级后");
    phones[0].sync().unwrap();
    assert_eq!(
        server_store.heads(cases[0]).unwrap(),
        phones[0].store.heads(cases[0]).unwrap()
    );
    for phone in &phones {
        assert_eq!(phone.store.verify().unwrap(), Vec::<String>::new());
    }
    drop(phones);
    drop(server_store);
    server.stop();
    assert_eq!(
        format_on_disk(&root.join("p1")),
        gridsync_core::store::STORE_FORMAT
    );
    assert_eq!(
        format_on_disk(&root.join("server/store")),
        gridsync_core::store::STORE_FORMAT
    );
}

#[test]
fn a_migration_stopped_midway_is_taken_up_again() {
    let (_dir, root, info) = fixture(1);
    let p1 = &info["phones"][0];
    for stop in [1, 3] {
        let mut config = phone_config(&root, p1);
        config.stop_migration_after = Some(stop);
        let e = Store::open(config).unwrap_err();
        assert!(e.to_string().contains("failpoint"), "{e}");
        // Nothing of the migration was written.
        assert_eq!(format_on_disk(&root.join("p1")), 1);
    }
    let store = Store::open(phone_config(&root, p1)).unwrap();
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
    assert_eq!(store.len().unwrap() as u64, p1["records"].as_u64().unwrap());
    assert_eq!(
        store.pending().unwrap().len() as u64,
        p1["pending"].as_u64().unwrap()
    );
}

/// Changes a newer app would write to issue `id` of `store`: a field this
/// build has no name for, an issue kind and a status it has never seen
/// (the status event well formed, by the newer app's own device).
fn newer_app_changes(store: &Store, id: RecordId) -> Vec<u8> {
    let before = store.heads(id).unwrap();
    let newer = automerge::ActorId::random();
    let dev = newer.to_hex_string();
    let mut doc = Automerge::load(&store.snapshot(id).unwrap())
        .unwrap()
        .with_actor(newer);
    let mut tx = doc.transaction();
    tx.put(ROOT, "noise_level_db", 72i64).unwrap();
    tx.put(ROOT, "kind", "noise_nuisance").unwrap();
    let list = match tx.get(ROOT, "transitions").unwrap() {
        Some((automerge::Value::Object(ObjType::List), list)) => list,
        _ => panic!("no transitions"),
    };
    let len = tx.length(&list);
    let item = tx.insert_object(&list, len, ObjType::Map).unwrap();
    tx.put(&item, "dev", dev.as_str()).unwrap();
    tx.put(&item, "n", ScalarValue::Int(1)).unwrap();
    tx.put(&item, "from", "reported").unwrap();
    tx.put(&item, "to", "escalated_to_district").unwrap();
    tx.put(&item, "by", "newer-app-user").unwrap();
    tx.put(&item, "role", "community").unwrap();
    tx.put(&item, "reason", "").unwrap();
    tx.put(&item, "at", ScalarValue::Timestamp(1_800_000_000_000))
        .unwrap();
    // It follows every event the record holds, as the newer app saw them.
    let seen = tx.put_object(&item, "seen", ObjType::Map).unwrap();
    let clock = match tx.get(ROOT, "clock").unwrap() {
        Some((automerge::Value::Object(ObjType::Map), clock)) => clock,
        _ => panic!("no clock"),
    };
    let devices: Vec<(String, i64)> = tx
        .keys(&clock)
        .map(|k| {
            let n = match tx.get(&clock, k.as_str()).unwrap() {
                Some((automerge::Value::Scalar(s), _)) => s.as_i64().unwrap(),
                _ => 0,
            };
            (k, n)
        })
        .collect();
    for (k, n) in devices {
        tx.put(&seen, k.as_str(), ScalarValue::Int(n)).unwrap();
    }
    tx.put(&clock, dev.as_str(), ScalarValue::Int(1)).unwrap();
    tx.commit();
    doc.save_after(&before)
}

#[test]
fn a_record_from_a_newer_app_is_kept_merged_synced_and_shown_marked() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("p1"));
    let other = server.enroll("w1", &dir.path().join("p2"));
    let id = phone
        .store
        .report_issue(&phone.author, new_issue(1, 1, 1))
        .unwrap();
    phone.sync().unwrap();
    // The newer app's changes, as a server that accepted them holds them.
    let server_store = server.store.clone().unwrap();
    let newer = newer_app_changes(&server_store, id);
    server_store
        .apply_changes(id, &newer, &gridsync_core::ForeignLimits::default())
        .unwrap();

    // This build pulls the record, keeps the unknown values and shows them.
    phone.sync().unwrap();
    let view = phone.store.issue(id).unwrap();
    let marked: Vec<(&str, &str)> = view
        .unrecognized
        .iter()
        .map(|u| (u.field.as_str(), u.value.as_str()))
        .collect();
    assert_eq!(
        marked,
        [
            ("kind", "noise_nuisance"),
            ("noise_level_db", "72"),
            ("transitions.to", "escalated_to_district"),
        ]
    );
    assert_eq!(view.kind, None);
    // The unknown status is kept, shown and not applied.
    assert_eq!(view.status, IssueStatus::Reported);
    let unknown = view
        .transitions
        .iter()
        .find(|t| t.event.to == "escalated_to_district")
        .unwrap();
    assert!(!unknown.applied);
    let meta = phone.store.meta(id).unwrap().unwrap();
    assert_eq!(
        meta.unrecognized,
        ["kind", "noise_level_db", "transitions.to"]
    );
    assert_eq!(phone.store.verify().unwrap(), Vec::<String>::new());

    // This build edits it and syncs: the server takes the edit, the
    // unknown values survive everywhere, and a second device receives the
    // record whole with them.
    add_note(&phone.store, id, &phone.author, "旧版本的补记");
    phone
        .store
        .update_issue(id, &phone.author, IssueOp::SetTitle("夜间噪音扰民".into()))
        .unwrap();
    let report = phone.sync().unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    other.sync().unwrap();
    for store in [&phone.store, &other.store, &*server_store] {
        assert_eq!(store.heads(id).unwrap(), phone.store.heads(id).unwrap());
        let view = store.issue(id).unwrap();
        assert_eq!(view.title, "夜间噪音扰民");
        assert_eq!(view.unrecognized.len(), 3, "{:?}", view.unrecognized);
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
    }
    // The office sees it marked too.
    let token = server.office_token("office", "office");
    let (status, body) = server.office_get(&token, &format!("/v1/office/issues/{id}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unrecognized"][0]["field"], "kind");
    assert_eq!(body["unrecognized"][0]["value"], "noise_nuisance");
    // A role that does not see personal data gets the fields, not the
    // values: a field this build does not know may hold personal data.
    let department = server.office_token("office", "department");
    let (status, body) = server.office_get(&department, &format!("/v1/office/issues/{id}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["unrecognized"][0]["field"], "kind");
    assert_eq!(body["unrecognized"][0]["value"], "");
    assert_eq!(body["unrecognized"][1]["field"], "noise_level_db");
    assert_eq!(body["unrecognized"][1]["value"], "");
    let (_, list) = server.office_get(&token, "/v1/office/issues");
    let row = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.to_string())
        .unwrap();
    assert_eq!(row["unrecognized"][0], "kind");
}

#[test]
fn every_value_this_build_writes_is_recognized() {
    // A record with every operation applied shows nothing unrecognized: a
    // field added to the writers without the readers' lists would show up
    // as a newer app's.
    let store = temp_store("D1");
    let w = worker(1);
    let office = office();
    let id = store.report_issue(&w, new_issue(1, 1, 1)).unwrap();
    let other = store.create_issue(&w, new_issue(2, 1, 1)).unwrap();
    let ops = vec![
        (
            office.clone(),
            IssueOp::SetKind(gridsync_core::IssueKind::Dispute),
        ),
        (office.clone(), IssueOp::SetAssignee(Some("w1".into()))),
        (office.clone(), IssueOp::SetLeadUnit(Some("城管".into()))),
        (office.clone(), IssueOp::AddAssistUnit("住建".into())),
        (office.clone(), IssueOp::AddTag("夜间".into())),
        (
            office.clone(),
            IssueOp::AddRelated(gridsync_core::Relation::DuplicateOf, other),
        ),
        (office.clone(), IssueOp::SetReplyToCitizen("已答复".into())),
        (
            office.clone(),
            IssueOp::SetResolution {
                resolution: Some(gridsync_core::Resolution::Resolved),
                summary: "已解决".into(),
            },
        ),
        (
            office.clone(),
            IssueOp::ChangeDeadline {
                due: 1_900_000_000_000,
                reason: "延期".into(),
            },
        ),
        (
            office.clone(),
            IssueOp::AddTimeline {
                kind: gridsync_core::TimelineKind::Supervision,
                text: "督办".into(),
            },
        ),
        (
            office.clone(),
            IssueOp::AddReturnVisit(gridsync_core::NewReturnVisit {
                reached: true,
                resolved: true,
                satisfaction: Some(gridsync_core::Satisfaction::Satisfied),
                note: "满意".into(),
            }),
        ),
        (
            office.clone(),
            IssueOp::Transition {
                to: IssueStatus::Accepted,
                reason: String::new(),
            },
        ),
    ];
    for (author, op) in ops {
        store.update_issue(id, &author, op).unwrap();
    }
    let view = store.issue(id).unwrap();
    assert_eq!(view.unrecognized, Vec::new());
    assert!(store.meta(id).unwrap().unwrap().unrecognized.is_empty());

    let item = RecordId::new();
    let meeting = store
        .create_meeting(&w, new_meeting(1, 1, vec![id]))
        .unwrap();
    for op in [
        MeetingOp::SetHeldAt(Some(1_800_000_000_000)),
        MeetingOp::SetOutcome(Some(gridsync_core::MeetingOutcome::Agreement)),
        MeetingOp::SetNextFollowUp(Some(1_800_000_100_000)),
        MeetingOp::EditMinutes("纪要".into()),
        MeetingOp::AddAgreement("达成一致".into()),
        MeetingOp::AddLegalGuidance("依法".into()),
        MeetingOp::AddActionItem {
            item,
            new: gridsync_core::NewActionItem {
                text: "修灯".into(),
                owner_party: "物业".into(),
                due: Some(1_800_000_200_000),
                issue_id: Some(id),
            },
        },
    ] {
        store.update_meeting(meeting, &office, op).unwrap();
    }
    let view = store.meeting(meeting).unwrap();
    assert_eq!(view.unrecognized, Vec::new());
}

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");

#[test]
fn a_server_killed_during_its_store_migration_migrates_again() {
    // A format 1 server store big enough for the migration to take a
    // while, killed with SIGKILL at points spread over it, then started
    // for good: it migrates, verifies and holds every record. Meanwhile
    // `/healthz` answers 503 `starting`.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let store_dir = data.join("store");
    let records = 1_500;
    {
        let mut config = StoreConfig::new(&store_dir, "SRV");
        config.durability = Durability::None;
        let store = Store::open(config).unwrap();
        for n in 0..records {
            store.create_issue(&worker(1), new_issue(n, 1, 1)).unwrap();
        }
        store.rewrite_as_format_1().unwrap();
    }
    // How long one migration takes on this machine now.
    let copy = dir.path().join("copy");
    copy_dir(&store_dir, &copy);
    let started = std::time::Instant::now();
    drop(Store::open(StoreConfig::new(&copy, "SRV")).unwrap());
    let took = started.elapsed();

    let mut starting_seen = 0;
    let mut killed_before_done = 0;
    for k in 1..=5u32 {
        let mut child = std::process::Command::new(SERVER)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("GRIDSYNC_ADMIN_TOKEN", gridsync_tests::server::ADMIN)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let listening = lines.next().unwrap().unwrap();
        let addr = listening
            .strip_prefix("gridsync listening on ")
            .and_then(|rest| rest.split(',').next())
            .unwrap()
            .to_owned();
        let (status, body) =
            gridsync_tests::server::get_json(&format!("http://{addr}/healthz"), None);
        if status == 503 && body["status"] == "starting" {
            starting_seen += 1;
        }
        std::thread::sleep(took * k / 6);
        #[allow(unsafe_code)]
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        child.wait().unwrap();
        if format_on_disk(&store_dir) == 1 {
            killed_before_done += 1;
        }
    }
    eprintln!(
        "migration of {records} records: {took:?}; {killed_before_done} of 5 kills before it completed; starting seen {starting_seen} times"
    );
    assert!(
        killed_before_done > 0,
        "every kill came after the migration"
    );
    assert!(starting_seen > 0, "healthz never answered starting");

    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    let (status, body) = gridsync_tests::server::get_json(&format!("{}/healthz", server.url), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store_format"], gridsync_core::store::STORE_FORMAT);
    assert_eq!(body["records"], records);
    server.stop();
    let store = Store::open(StoreConfig::new(&store_dir, "SRV")).unwrap();
    assert_eq!(store.len().unwrap(), records);
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
}
