//! Several server nodes on one PostgreSQL database: one feed that never
//! skips an entry, caches that follow the other nodes, devices syncing
//! through any node, a node killed under load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use gridsync_core::store::backend::Engine;
use gridsync_core::{Durability, IssueOp, Query, Store, StoreConfig, TimelineKind};
use gridsync_tests::engine::{database_of, fresh_database, on_postgres, use_database};
use gridsync_tests::server::{TestDevice, TestServer};
use gridsync_tests::*;

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");

/// A server node's store on the database at `url`.
fn node(url: &str) -> Store {
    let mut config = StoreConfig::new("", "SRV");
    config.engine = Engine::Postgres(url.to_owned());
    config.tag_own_changes = true;
    config.search = true;
    config.durability = Durability::Fsync;
    Store::open(config).unwrap()
}

/// Two nodes commit concurrently (four writers) while a third pages the
/// feed the way `sync::serve` does (up to its durable head, in order).
/// The reader must see every sequence number exactly once, in order, with
/// no gap, and end with exactly the log the database holds: the trap of
/// sequence values handed out at insert but visible at commit (a reader
/// seeing 11 before 10 and passing 10 for good) must not occur.
#[test]
fn the_feed_never_skips_an_entry_two_nodes_commit_concurrently() {
    on_postgres(|| {
        let url = fresh_database();
        let a = Arc::new(node(&url));
        let b = Arc::new(node(&url));
        let reader = node(&url);
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let store = if w % 2 == 0 { a.clone() } else { b.clone() };
                thread::spawn(move || {
                    let office = office();
                    let mut ids = Vec::new();
                    for i in 0..30usize {
                        if i % 3 == 0 {
                            ids.push(
                                store
                                    .create_issue(&office, new_issue(w * 1000 + i, 1, 1))
                                    .unwrap(),
                            );
                        } else {
                            let id = ids[i % ids.len()];
                            store
                                .update_issue(
                                    id,
                                    &office,
                                    IssueOp::AddTimeline {
                                        kind: TimelineKind::Note,
                                        text: format!("writer {w} note {i}"),
                                    },
                                )
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        let reading = {
            let done = done.clone();
            thread::spawn(move || {
                let mut cursor = 0u64;
                let mut seen = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let head = reader.durable_head().unwrap();
                    for e in reader.log_since(cursor, 16).unwrap() {
                        if e.seq > head {
                            break;
                        }
                        assert_eq!(e.seq, cursor + 1, "the feed skipped from {cursor}");
                        cursor = e.seq;
                        seen.push((e.seq, e.id, e.hashes));
                    }
                    if finished && cursor == reader.durable_head().unwrap() {
                        return (reader, seen);
                    }
                }
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
        let (reader, seen) = reading.join().unwrap();
        // 4 writers x 30 writes, every one a new log entry.
        assert_eq!(seen.len(), 120);
        let all = reader.log_since(0, 1000).unwrap();
        let logged: Vec<_> = all.into_iter().map(|e| (e.seq, e.id, e.hashes)).collect();
        assert_eq!(seen, logged);
        // Every node ends with the same records (its memory followed).
        a.follow().unwrap();
        b.follow().unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&reader));
        assert_eq!(fingerprint(&b), fingerprint(&reader));
        assert_eq!(a.verify().unwrap(), Vec::<String>::new());
    });
}

/// A node reads its own writes at once; another node shows them after it
/// follows (the server follows every `FOLLOW_EVERY`), including on the
/// office's list, which is answered from memory.
#[test]
fn a_node_shows_another_nodes_writes_once_it_follows() {
    on_postgres(|| {
        let url = fresh_database();
        let a = node(&url);
        let b = node(&url);
        let id = a.create_issue(&office(), new_issue(1, 1, 1)).unwrap();
        // Its own write: at once.
        assert_eq!(a.list(&Query::issues()).unwrap().total, 1);
        // The other node: after following.
        assert_eq!(b.list(&Query::issues()).unwrap().total, 0);
        assert_eq!(b.follow().unwrap(), 1);
        assert_eq!(b.list(&Query::issues()).unwrap().total, 1);
        // Its search text came with it.
        let found = |s: &Store, q: &str| s.list(&Query::issues().search(q)).unwrap().total;
        assert_eq!(found(&b, "楼道"), 1);
        // An edit through b reaches a, and a's cached document is dropped,
        // not served stale.
        assert_eq!(a.issue(id).unwrap().timeline.len(), 0);
        assert_eq!(found(&a, "第二个节点"), 0);
        add_note(&b, id, &office(), "来自第二个节点");
        a.follow().unwrap();
        assert_eq!(found(&a, "第二个节点"), 1);
        assert_eq!(a.issue(id).unwrap().timeline.len(), 1);
        // A write through a node that has not followed starts its turn by
        // following: nothing of b's edit is lost.
        add_note(&b, id, &office(), "第二条");
        add_note(&a, id, &office(), "第三条");
        b.follow().unwrap();
        assert_eq!(a.issue(id).unwrap().timeline.len(), 3);
        assert_eq!(b.issue(id).unwrap(), a.issue(id).unwrap());
    });
}

/// Two in-process servers on one database: the office list on node B
/// shows a case written through node A's office API within the follow
/// interval (measured; the assertion allows for a loaded machine).
#[test]
fn the_office_list_on_one_node_follows_writes_through_the_other() {
    on_postgres(|| {
        let dir = tempfile::tempdir().unwrap();
        let (da, db) = (dir.path().join("a"), dir.path().join("b"));
        let url = database_of(&da);
        use_database(&db, &url);
        let node_a = TestServer::start(&da);
        let node_b = TestServer::start(&db);
        node_a.setup_org();
        let token = node_a.office_token("office", "community");
        let list = |server: &TestServer| {
            let (status, body) = server.office_get(&token, "/v1/office/issues");
            assert_eq!(status, 200, "{body}");
            body["total"].as_u64().unwrap()
        };
        assert_eq!(list(&node_b), 0);
        let device = node_a.enroll("w1", &dir.path().join("d1"));
        device
            .store
            .create_issue(&device.author, new_issue(1, 1, 1))
            .unwrap();
        device.sync().unwrap();
        let written = Instant::now();
        assert_eq!(list(&node_a), 1, "a node reads its own writes");
        while list(&node_b) == 0 {
            assert!(
                written.elapsed() < Duration::from_secs(20),
                "node B never showed the case"
            );
            thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "node B showed node A's write after {:?} (follow interval {:?})",
            written.elapsed(),
            gridsync_server::FOLLOW_EVERY
        );
    });
}

/// Devices sync through either node, alternating round by round, with
/// concurrent offline edits: all converge, and both nodes agree.
#[test]
fn devices_converge_syncing_through_alternating_nodes() {
    on_postgres(|| {
        let dir = tempfile::tempdir().unwrap();
        let (da, db) = (dir.path().join("a"), dir.path().join("b"));
        let url = database_of(&da);
        use_database(&db, &url);
        let nodes = [TestServer::start(&da), TestServer::start(&db)];
        nodes[0].setup_org();
        let mut devices: Vec<TestDevice> = (0..4)
            .map(|n| nodes[n % 2].enroll("w1", &dir.path().join(format!("d{n}"))))
            .collect();
        let first = devices[0]
            .store
            .create_issue(&devices[0].author, new_issue(1, 1, 1))
            .unwrap();
        devices[0].sync().unwrap();
        for round in 0..6 {
            for (n, d) in devices.iter_mut().enumerate() {
                d.url = nodes[(n + round) % 2].url.clone();
                d.sync().unwrap();
                add_note(
                    &d.store,
                    first,
                    &d.author,
                    &format!("设备 {n} 第 {round} 轮"),
                );
                if round % 2 == 0 {
                    d.store
                        .create_issue(&d.author, new_issue(100 * n + round, 1, 1))
                        .unwrap();
                }
            }
        }
        // Two quiet rounds through alternating nodes.
        for round in 0..2 {
            for (n, d) in devices.iter_mut().enumerate() {
                d.url = nodes[(n + round) % 2].url.clone();
                d.sync().unwrap();
            }
        }
        for d in &devices {
            d.sync().unwrap();
        }
        let server = [
            nodes[0].store.clone().unwrap(),
            nodes[1].store.clone().unwrap(),
        ];
        server[0].follow().unwrap();
        server[1].follow().unwrap();
        assert_eq!(fingerprint(&server[0]), fingerprint(&server[1]));
        let (_, reference) = fingerprint(&server[0]);
        assert_eq!(reference.len(), 1 + 4 * 3);
        for d in &devices {
            assert!(d.store.pending().unwrap().is_empty());
            assert_eq!(fingerprint(&d.store).1, reference, "device {}", d.id);
        }
        let v = server[0].issue(first).unwrap();
        assert_eq!(v.timeline.len(), 4 * 6);
    });
}

/// Two `gridsync serve` processes on one database; ten devices sync
/// through either; one node is killed with SIGKILL mid-load while the
/// other keeps serving. Every note a completed sync acknowledged is on
/// the database exactly once, and every device converges with it.
#[test]
fn a_node_killed_under_load_loses_nothing_the_other_keeps_serving() {
    on_postgres(|| {
        let dir = tempfile::tempdir().unwrap();
        let (da, db) = (dir.path().join("a"), dir.path().join("b"));
        let url = database_of(&da);
        use_database(&db, &url);
        let node_a = TestServer::spawn(SERVER, &da, "127.0.0.1:0");
        let node_b = TestServer::spawn(SERVER, &db, "127.0.0.1:0");
        node_a.setup_org();
        let urls = Arc::new(Mutex::new(vec![node_a.url.clone(), node_b.url.clone()]));
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..10usize)
            .map(|n| {
                let (worker_id, grid) = if n % 2 == 0 { ("w1", 1) } else { ("w2", 2) };
                let device = node_b.enroll(worker_id, &dir.path().join(format!("d{n}")));
                let (urls, stop, acked) = (urls.clone(), stop.clone(), acked.clone());
                thread::spawn(move || {
                    let mut written = Vec::new();
                    let mut own = Vec::new();
                    let mut failed = 0;
                    let mut i = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        if own.is_empty() || i % 4 == 0 {
                            let issue = new_issue(n * 10_000 + i, 1, grid);
                            own.push(device.store.create_issue(&worker(grid), issue).unwrap());
                        }
                        let id = own[i % own.len()];
                        let text = format!("device {n} note {i}");
                        add_note(&device.store, id, &worker(grid), &text);
                        written.push((id, text));
                        let upto = written.len();
                        let target = {
                            let urls = urls.lock().unwrap();
                            urls[(n + i) % urls.len()].clone()
                        };
                        let result = gridsync_core::sync::Client::new(&device.store)
                            .page_bytes(8 * 1024)
                            .run(|req| {
                                gridsync_core::http::post_sync(&target, &device.token, &req)
                            });
                        match result {
                            Ok(_) => acked
                                .lock()
                                .unwrap()
                                .extend(written[..upto].iter().cloned()),
                            Err(_) => {
                                failed += 1;
                                thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    (device, written, failed)
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(1500));
        let before_kill = acked.lock().unwrap().len();
        node_a.kill();
        urls.lock().unwrap().remove(0);
        thread::sleep(Duration::from_millis(1500));
        stop.store(true, Ordering::SeqCst);
        let devices: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(before_kill > 0, "nothing was acknowledged before the kill");
        let after_kill = acked.lock().unwrap().len();
        assert!(
            after_kill > before_kill,
            "node B stopped serving after the kill"
        );
        // Every device syncs once more through the surviving node.
        let mut devices = devices;
        for (d, _, _) in &mut devices {
            d.url = node_b.url.clone();
            d.sync().unwrap();
        }
        let store = node(&url);
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
        for (id, text) in acked.lock().unwrap().iter() {
            let v = store.issue(*id).unwrap();
            let n = v.timeline.iter().filter(|t| &t.text == text).count();
            assert_eq!(n, 1, "acknowledged note {text:?} on the database {n} times");
        }
        for (d, written, _) in &devices {
            assert!(d.store.pending().unwrap().is_empty());
            for (id, text) in written {
                let n = store
                    .issue(*id)
                    .unwrap()
                    .timeline
                    .iter()
                    .filter(|t| &t.text == text)
                    .count();
                assert_eq!(n, 1, "note {text:?} on the database {n} times");
            }
            for id in d.store.record_ids().unwrap() {
                let mut mine = d.store.heads(id).unwrap();
                let mut theirs = store.heads(id).unwrap();
                mine.sort();
                theirs.sort();
                assert_eq!(
                    mine, theirs,
                    "device {} and the database differ on {id}",
                    d.id
                );
            }
        }
        let failed: usize = devices.iter().map(|(_, _, f)| f).sum();
        eprintln!(
            "acknowledged {before_kill} notes before the kill, {after_kill} in all; \
             {failed} syncs failed (the killed node's)"
        );
        drop(node_b);
    });
}

/// The database drops every connection (a restart, a failover): the write
/// in flight fails with a clear error and nothing half-done stays; the
/// next writes reconnect and succeed, and the store checks out.
#[test]
fn a_node_recovers_when_the_database_drops_its_connections() {
    on_postgres(|| {
        let url = fresh_database();
        let store = node(&url);
        let id = store.create_issue(&office(), new_issue(1, 1, 1)).unwrap();
        let name = url.rsplit('/').next().unwrap().to_owned();
        let drop_all = || {
            gridsync_tests::engine::admin(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
        };
        drop_all();
        // Each write either fails cleanly or lands whole; within a few
        // tries they land again.
        let mut landed = 0;
        let mut failed = 0;
        for i in 0..5 {
            let op = IssueOp::AddTimeline {
                kind: TimelineKind::Note,
                text: format!("断线后第 {i} 条"),
            };
            match store.update_issue(id, &office(), op) {
                Ok(_) => landed += 1,
                Err(e) => {
                    assert_eq!(e.code(), "storage", "{e}");
                    failed += 1;
                }
            }
        }
        assert!(landed >= 3, "{landed} landed, {failed} failed");
        // What the store shows is what the database holds.
        let fresh = node(&url);
        assert_eq!(
            fresh.issue(id).unwrap().timeline.len(),
            landed,
            "a failed write left something behind, or a landed one was lost"
        );
        assert_eq!(store.issue(id).unwrap(), fresh.issue(id).unwrap());
        assert_eq!(fresh.verify().unwrap(), Vec::<String>::new());
        // A drop in the middle of a turn: a merge applied, not yet
        // durable, when every connection goes. Making it durable fails, and
        // the node's memory forgets it at once (no phantom note shown).
        let shown = store.issue(id).unwrap().timeline.len();
        let mut config = StoreConfig::new("", "D9");
        config.temporary = true;
        config.durability = Durability::None;
        let device = Store::open(config).unwrap();
        let (bytes, _) = store.export_record(id).unwrap();
        device
            .import_record_unflushed(
                id,
                &bytes,
                gridsync_core::Import::Derive {
                    kind: "issue",
                    updated_at: 0,
                },
            )
            .unwrap();
        let heads = device.heads(id).unwrap();
        add_note(&device, id, &office(), "未提交的一条");
        let delta = device.changes_since(id, &heads).unwrap();
        let incoming = gridsync_core::Incoming {
            limits: &Default::default(),
            peer: None,
            known_through: 0,
        };
        store
            .apply_changes_unflushed(id, &delta, &incoming)
            .unwrap();
        assert_eq!(store.issue(id).unwrap().timeline.len(), shown + 1);
        drop_all();
        let err = store.make_durable().unwrap_err();
        assert_eq!(err.code(), "storage", "{err}");
        let again = node(&url);
        assert_eq!(again.issue(id).unwrap().timeline.len(), shown);
        // Memory was read again (here at once, else at the next turn).
        assert_eq!(store.issue(id).unwrap(), again.issue(id).unwrap());
        assert_eq!(again.verify().unwrap(), Vec::<String>::new());
        // And the node writes on.
        add_note(&store, id, &office(), "恢复后");
        assert_eq!(again.issue(id).unwrap().timeline.len(), shown);
        again.follow().unwrap();
        assert_eq!(again.issue(id).unwrap().timeline.len(), shown + 1);
    });
}

/// A backup of a database the servers keep using (taken in a write turn,
/// a portable sled copy), restored into a fresh database: the same
/// records, a new log identity, the organisation and logins; a database
/// that holds data is refused.
#[test]
fn a_database_backup_restores_into_an_empty_database() {
    on_postgres(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a");
        let url = database_of(&data);
        let server = TestServer::start(&data);
        server.setup_org();
        let device = server.enroll("w1", &dir.path().join("d1"));
        for i in 0..5 {
            device
                .store
                .create_issue(&device.author, new_issue(i, 1, 1))
                .unwrap();
        }
        device.sync().unwrap();
        let engine = Engine::Postgres(url.clone());
        let dest = dir.path().join("backup");
        let summary = gridsync_server::backup::backup_stopped(&engine, &data, &dest).unwrap();
        assert_eq!(summary.records, 5);
        let live = server.store.clone().unwrap();
        let fresh_url = fresh_database();
        let fresh = Engine::Postgres(fresh_url.clone());
        let restored =
            gridsync_server::backup::restore_on(&fresh, &dest, &dir.path().join("b")).unwrap();
        assert_eq!(restored.records, 5);
        assert_ne!(restored.log_id, hex_of(live.log_id()));
        let copy = node(&fresh_url);
        assert_eq!(fingerprint(&copy).1, fingerprint(&live).1);
        let identity =
            gridsync_server::identity::Identity::open(&fresh, &dir.path().join("b")).unwrap();
        assert_eq!(identity.devices().unwrap().len(), 1);
        // Not over data: nothing is moved aside in a database.
        let again = gridsync_server::backup::restore_on(&fresh, &dest, &dir.path().join("c"));
        assert!(again.unwrap_err().to_string().contains("empty database"));

        // A restore that stopped part way leaves its marker: no store opens
        // on that database, and another restore into it is refused.
        use gridsync_core::store::backend::{self, Batch, FlushMode};
        let broken_url = fresh_database();
        let broken = Engine::Postgres(broken_url.clone());
        let raw = backend::open(&broken, dir.path(), "records", false).unwrap();
        let mut half = Batch::default();
        half.insert(gridsync_core::store::unfinished_restore_key(), [1u8]);
        raw.write_now(half, FlushMode::Sync).unwrap();
        let mut config = StoreConfig::new("", "SRV");
        config.engine = broken.clone();
        let refused = Store::open(config).unwrap_err().to_string();
        assert!(refused.contains("did not finish"), "{refused}");
        let again = gridsync_server::backup::restore_on(&broken, &dest, &dir.path().join("d"));
        assert!(again.unwrap_err().to_string().contains("empty database"));
    });
}

fn hex_of(bytes: [u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A device's file quota of the day is one count for every node: what it
/// sent through one node counts on the other.
#[test]
fn the_daily_file_quota_is_counted_across_nodes() {
    on_postgres(|| {
        let url = fresh_database();
        let a = node(&url);
        let b = node(&url);
        assert!(a.charge_file_quota("dev-7", 600, 1000).unwrap());
        assert!(
            !b.charge_file_quota("dev-7", 500, 1000).unwrap(),
            "500 more is over 1000"
        );
        assert!(b.charge_file_quota("dev-7", 400, 1000).unwrap());
        assert!(!a.charge_file_quota("dev-7", 1, 1000).unwrap());
        // Another device has its own.
        assert!(a.charge_file_quota("dev-8", 1000, 1000).unwrap());
    });
}
