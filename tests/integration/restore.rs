//! Backup and restore: a backup taken from the running server while a
//! phone syncs, writes acknowledged after it (the phones' and the
//! office's), the older backup restored. The phones notice the restored
//! log, offer their changes again (and hand back the server's own, which
//! they pulled), and every change any of them or the office saw
//! acknowledged is back.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gridsync_core::{RecordId, Store, StoreConfig};
use gridsync_tests::server::TestServer;
use gridsync_tests::*;

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");

fn gridsync(args: &[&str]) -> String {
    let out = Command::new(SERVER)
        .args(args)
        .env("GRIDSYNC_ADMIN_TOKEN", gridsync_tests::server::ADMIN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gridsync {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_restored_backup_loses_nothing_a_phone_still_holds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let backup = dir.path().join("backup");
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let mut phones = vec![
        server.enroll("w1", &dir.path().join("p1")),
        server.enroll("w2", &dir.path().join("p2")),
    ];
    // Every note a phone saw acknowledged: (record, text).
    let mut acknowledged: Vec<(RecordId, String)> = Vec::new();
    let mut cases: Vec<Vec<RecordId>> = vec![Vec::new(), Vec::new()];
    for (i, phone) in phones.iter().enumerate() {
        for n in 0..5 {
            let id = phone
                .store
                .create_issue(&phone.author, new_issue(n, 1, i as u32 + 1))
                .unwrap();
            cases[i].push(id);
        }
        phone.sync().unwrap();
    }

    // The backup, taken from the running server while phone 1 keeps
    // writing and syncing.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let phone = phones.remove(0);
        let stop = stop.clone();
        let ids = cases[0].clone();
        std::thread::spawn(move || {
            let mut written = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n < 3 {
                let id = ids[n % ids.len()];
                let text = format!("备份时 {n}");
                add_note(&phone.store, id, &phone.author, &text);
                phone.sync().unwrap();
                written.push((id, text));
                n += 1;
            }
            assert!(phone.store.pending().unwrap().is_empty());
            (phone, written)
        })
    };
    let said = gridsync(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        backup.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    assert!(said.contains("backed up 10 records"), "{said}");
    stop.store(true, Ordering::SeqCst);
    let (phone, written) = busy.join().unwrap();
    phones.insert(0, phone);
    let during = written.len();
    acknowledged.extend(written);

    // After the backup: more notes on every case, all acknowledged.
    for (i, phone) in phones.iter().enumerate() {
        for (k, id) in cases[i].iter().enumerate() {
            let text = format!("备份后 {i}-{k}");
            add_note(&phone.store, *id, &phone.author, &text);
            acknowledged.push((*id, text));
        }
        assert_eq!(phone.sync().unwrap().accepted, 5);
        assert!(phone.store.pending().unwrap().is_empty());
    }
    // A case made after the backup, too.
    let late = phones[1]
        .store
        .create_issue(&phones[1].author, new_issue(9, 1, 2))
        .unwrap();
    phones[1].sync().unwrap();
    cases[1].push(late);
    // The office's own work after the backup: a supervision note on a case
    // of phone 0 and a 12345 work order into its grid. Phone 0 pulls both
    // and writes on top of them.
    let office = server.office_token("office", "office");
    let (status, body) = server.office_post(
        &office,
        &format!("/v1/office/issues/{}/ops", cases[0][0]),
        serde_json::json!({"op": "add_timeline", "args": {"kind": "supervision", "text": "备份后督办"}}),
    );
    assert_eq!(status, 200, "{body}");
    let hotline = server.office_token("office", "hotline");
    let (status, body) = server.office_post(
        &hotline,
        "/v1/office/work-orders",
        serde_json::json!({
            "work_order_no": "12345-8801",
            "category": "facilities.lighting",
            "kind": "complaint",
            "urgency": "yellow",
            "title": "路灯不亮",
            "statement": "小区门口路灯坏了",
            "reporter": {"name": "王女士", "phone": "13800000000", "anonymous": false, "may_call_back": true},
            "street": "S1",
            "community": "C1",
            "grid": "G1",
        }),
    );
    assert_eq!(status, 201, "{body}");
    let order: RecordId = body["id"].as_str().unwrap().parse().unwrap();
    phones[0].sync().unwrap();
    assert!(phones[0].store.meta(order).unwrap().is_some());
    for (id, text) in [(cases[0][0], "督办后补记"), (order, "工单现场核实")] {
        add_note(&phones[0].store, id, &phones[0].author, text);
        acknowledged.push((id, text.to_owned()));
    }
    acknowledged.push((cases[0][0], "备份后督办".to_owned()));
    assert!(phones[0].sync().unwrap().refused.is_empty());
    assert!(phones[0].store.pending().unwrap().is_empty());
    server.stop();

    // Restore the older backup and start again.
    let said = gridsync(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(said.contains("restored 10 records"), "{said}");
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    for phone in &mut phones {
        phone.url = server.url.clone();
    }
    let mut reoffered = 0;
    let mut pulled = 0;
    let mut received = 0;
    for _ in 0..2 {
        for phone in &phones {
            let report = phone.sync().unwrap();
            assert!(report.refused.is_empty(), "{report:?}");
            reoffered += report.reoffered;
            pulled += report.pulled;
            received += report.bytes_received;
        }
    }
    assert_eq!(reoffered, 2, "each phone noticed the restored log once");
    // The restored log continues the one the phones knew up to the backup:
    // they follow on from there and download nothing they already hold
    // (starting over would send all 11 cases again).
    assert_eq!(pulled, 0, "records downloaded again after the restore");
    server.stop();

    let restored = Store::open(StoreConfig::new(data.join("store"), "SRV")).unwrap();
    let mut lost = Vec::new();
    for (id, text) in &acknowledged {
        let notes = restored.issue(*id).map(|v| v.timeline).unwrap_or_default();
        if !notes.iter().any(|t| &t.text == text) {
            lost.push(text.clone());
        }
    }
    assert!(lost.is_empty(), "lost after the restore: {lost:?}");
    assert!(
        restored.issue(late).is_ok(),
        "the case made after the backup is back"
    );
    assert!(
        restored.issue(order).is_ok(),
        "the work order taken in after the backup is back"
    );
    for (i, phone) in phones.iter().enumerate() {
        for id in &cases[i] {
            assert_eq!(
                phone.store.heads(*id).unwrap(),
                restored.heads(*id).unwrap()
            );
        }
    }
    assert!(restored.verify().unwrap().is_empty());
    eprintln!(
        "notes acknowledged: {} ({during} while the backup was taken); cases: 11 (1 after the backup); lost after the restore: 0; records downloaded again: {pulled} ({received} bytes received in the reconciling syncs)",
        acknowledged.len()
    );
}

#[test]
fn moves_after_the_backup_are_settled_when_a_phone_follows_on() {
    // After the backup, one case moves out of phone 1's grid (it drops it)
    // and another moves in from phone 2's (phone 1 receives it; phone 2,
    // offline, still has it). The restore loses both moves. Phone 1 hands
    // back the move it holds (the office's own change), so that case is in
    // its grid again, and phone 2 is told to drop it; the move phone 1 no
    // longer holds is lost, and phone 1, following on in the restored log,
    // receives that case again. Every phone ends with exactly its scope.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let backup = dir.path().join("backup");
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let mut phone = server.enroll("w1", &dir.path().join("p1"));
    let mut other = server.enroll("w2", &dir.path().join("p2"));
    let mine = phone
        .store
        .create_issue(&phone.author, new_issue(0, 1, 1))
        .unwrap();
    let kept = phone
        .store
        .create_issue(&phone.author, new_issue(1, 1, 1))
        .unwrap();
    let theirs = other
        .store
        .create_issue(&other.author, new_issue(2, 1, 2))
        .unwrap();
    phone.sync().unwrap();
    other.sync().unwrap();
    gridsync(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        backup.to_str().unwrap(),
        "--server",
        &server.url,
    ]);
    let moved = |id: RecordId, grid: &str| {
        let (status, body) = server.admin(
            &format!("/v1/admin/records/{id}/move"),
            serde_json::json!({"street": "S1", "community": "C1", "grid": grid}),
        );
        assert_eq!(status, 204, "{body}");
    };
    moved(mine, "G2");
    moved(theirs, "G1");
    let report = phone.sync().unwrap();
    assert_eq!(report.dropped, 1);
    assert!(phone.store.meta(theirs).unwrap().is_some());
    server.stop();

    gridsync(&[
        "restore",
        "--from",
        backup.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    phone.url = server.url.clone();
    other.url = server.url.clone();
    let mut reoffered = 0;
    for _ in 0..2 {
        for p in [&phone, &other] {
            let report = p.sync().unwrap();
            assert!(report.refused.is_empty(), "{report:?}");
            reoffered += report.reoffered;
        }
    }
    assert_eq!(reoffered, 2);
    let held = |p: &gridsync_tests::server::TestDevice| {
        let mut ids = p.store.record_ids().unwrap();
        ids.sort();
        ids
    };
    let mut expected = vec![mine, kept, theirs];
    expected.sort();
    assert_eq!(held(&phone), expected, "phone 1 holds exactly its scope");
    assert_eq!(held(&other), Vec::<RecordId>::new(), "phone 2 too");
    server.stop();
    let restored = Store::open(StoreConfig::new(data.join("store"), "SRV")).unwrap();
    assert_eq!(restored.meta(theirs).unwrap().unwrap().grid, "G1");
    assert_eq!(restored.meta(mine).unwrap().unwrap().grid, "G1");
    for id in [mine, kept, theirs] {
        assert_eq!(phone.store.heads(id).unwrap(), restored.heads(id).unwrap());
    }
    assert!(restored.verify().unwrap().is_empty());
}

/// The store's files copied back from an older copy, without `gridsync
/// restore` (on PostgreSQL: the database restored by its own tools): the
/// log went back behind positions devices were served. The first device
/// to sync names a position past the head; the server gives its log a new
/// identity, as a restore does, and every device re-offers what it holds
/// and follows on. Nothing is lost, and no device misses a change whose
/// sequence number it had already passed.
#[test]
fn a_log_rolled_back_behind_devices_is_noticed_and_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = TestServer::start(&data);
    server.setup_org();
    let a = server.enroll("w1", &dir.path().join("a"));
    let b = server.enroll("w1", &dir.path().join("b"));
    let mut ids: Vec<RecordId> = (0..3)
        .map(|i| a.store.create_issue(&a.author, new_issue(i, 1, 1)).unwrap())
        .collect();
    a.sync().unwrap();
    b.sync().unwrap();
    let log_before = server.store.as_ref().unwrap().log_id();
    server.stop();
    // The copy an operator keeps.
    copy_dir(&data.join("store"), &dir.path().join("old-store"));
    let server = TestServer::start(&data);
    let mut a = a;
    let mut b = b;
    a.url = server.url.clone();
    b.url = server.url.clone();
    ids.push(a.store.create_issue(&a.author, new_issue(3, 1, 1)).unwrap());
    add_note(&a.store, ids[0], &a.author, "复制之后的记录");
    a.sync().unwrap();
    b.sync().unwrap();
    server.stop();
    // The files go back; the log is behind what both devices were served.
    std::fs::remove_dir_all(data.join("store")).unwrap();
    copy_dir(&dir.path().join("old-store"), &data.join("store"));
    let server = TestServer::start(&data);
    a.url = server.url.clone();
    b.url = server.url.clone();
    // A writes before B syncs: its change takes a number B had passed.
    ids.push(a.store.create_issue(&a.author, new_issue(4, 1, 1)).unwrap());
    a.sync().unwrap();
    let store = server.store.clone().unwrap();
    assert_ne!(
        store.log_id(),
        log_before,
        "the rolled-back log kept its identity"
    );
    for _ in 0..2 {
        b.sync().unwrap();
        a.sync().unwrap();
    }
    // Everything either device wrote is back, and both hold it all.
    assert_eq!(store.len().unwrap(), 5);
    let note = store
        .issue(ids[0])
        .unwrap()
        .timeline
        .iter()
        .filter(|t| t.text == "复制之后的记录")
        .count();
    assert_eq!(note, 1);
    let (_, reference) = fingerprint(&store);
    assert_eq!(fingerprint(&a.store).1, reference);
    assert_eq!(fingerprint(&b.store).1, reference);
}
