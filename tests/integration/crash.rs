//! Crashes during sync: the server killed with SIGKILL mid-sync and
//! restarted, a device process killed mid-sync. Nothing acknowledged is
//! lost and nothing is duplicated.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gridsync_core::{Query, Store};
use gridsync_tests::server::{TestDevice, TestServer};
use gridsync_tests::*;

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");
const DEVICE: &str = env!("CARGO_BIN_EXE_device-syncer");

fn timeline_lengths(store: &Store) -> Vec<(gridsync_core::RecordId, usize)> {
    store
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| (id, store.issue(id).unwrap().timeline.len()))
        .collect()
}

#[test]
fn the_server_killed_mid_sync_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let mut a = server.enroll("w1", &dir.path().join("a"));
    let mut b = server.enroll("w1", &dir.path().join("b"));
    for i in 0..150 {
        let id = a
            .store
            .create_issue(&worker(1), new_issue(i, 1, 1))
            .unwrap();
        add_note(&a.store, id, &worker(1), &format!("note {i}"));
    }
    let mut interrupted = 0;
    for round in 0..3u64 {
        // Sync in small pages on a thread; kill the server while it runs.
        let TestDevice {
            store,
            author,
            token,
            id,
            url,
        } = a;
        let syncer = std::thread::spawn(move || {
            let result = gridsync_core::sync::Client::new(&store)
                .page_bytes(4 * 1024)
                .run(|req| gridsync_core::http::post_sync(&url, &token, &req));
            (
                result.is_ok(),
                TestDevice {
                    store,
                    author,
                    token,
                    id,
                    url,
                },
            )
        });
        std::thread::sleep(Duration::from_millis(20 + 40 * round));
        server.kill();
        let (completed, device) = syncer.join().unwrap();
        interrupted += usize::from(!completed);
        a = device;
        // Restart on the same data directory (a new port).
        server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
        a.url = server.url.clone();
        // More work between crashes.
        let id = a
            .store
            .create_issue(&worker(1), new_issue(1000 + round as usize, 1, 1))
            .unwrap();
        add_note(&a.store, id, &worker(1), "after a crash");
    }
    assert!(interrupted > 0, "no kill landed during a sync");
    a.sync().unwrap();
    assert!(a.store.pending().unwrap().is_empty());
    b.url = server.url.clone();
    b.sync().unwrap();
    assert_eq!(b.store.len().unwrap(), 153);
    assert_eq!(timeline_lengths(&b.store), timeline_lengths(&a.store));
    assert!(
        timeline_lengths(&b.store).iter().all(|(_, n)| *n == 1),
        "no note lost or duplicated"
    );
    server.kill();
}

#[test]
fn a_device_killed_mid_sync_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(&dir.path().join("server"));
    server.setup_org();
    let source = server.enroll("w1", &dir.path().join("source"));
    for i in 0..120 {
        source
            .store
            .create_issue(&worker(1), new_issue(i, 1, 1))
            .unwrap();
    }
    source.sync().unwrap();
    // A second device downloads in a child process that is killed mid-way.
    let victim = server.enroll("w1", &dir.path().join("victim"));
    let local = victim
        .store
        .create_issue(&worker(1), new_issue(500, 1, 1))
        .unwrap();
    let code = victim.store.device_code().to_owned();
    let token = victim.token.clone();
    drop(victim);
    let mut killed_mid_sync = 0;
    for attempt in 0..3u64 {
        let mut child = Command::new(DEVICE)
            .arg(dir.path().join("victim"))
            .arg(&code)
            .arg(&server.url)
            .arg(&token)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + 50 * attempt));
        #[allow(unsafe_code)]
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let completed = BufReader::new(child.stdout.take().unwrap()).lines().count();
        killed_mid_sync += usize::from(completed == 0);
    }
    assert!(killed_mid_sync > 0, "no kill landed during a sync");
    let victim = TestDevice {
        store: Store::open(gridsync_core::StoreConfig::new(
            dir.path().join("victim"),
            code,
        ))
        .unwrap(),
        author: worker(1),
        token,
        id: String::new(),
        url: server.url.clone(),
    };
    victim.sync().unwrap();
    assert_eq!(victim.store.len().unwrap(), 121);
    assert!(victim.store.pending().unwrap().is_empty());
    source.sync().unwrap();
    assert!(
        source.store.issue(local).is_ok(),
        "the victim's own work reached the others"
    );
    assert_eq!(source.store.count(&Query::issues()).unwrap(), 121);
}

/// One device of the load test: writes and syncs in a loop until told to
/// stop, recording which notes a completed sync acknowledged.
struct Loader {
    device: TestDevice,
    grid: u32,
    /// Every note written, and the ones a completed sync acknowledged.
    written: Vec<(gridsync_core::RecordId, String)>,
    acked: std::sync::Arc<std::sync::Mutex<Vec<(gridsync_core::RecordId, String)>>>,
    failed_syncs: usize,
}

impl Loader {
    fn run(
        mut self,
        n: usize,
        url: &std::sync::RwLock<String>,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Self {
        let mut own = Vec::new();
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            i += 1;
            if own.is_empty() || i % 4 == 0 {
                let issue = new_issue(n * 10_000 + i, 1, self.grid);
                own.push(
                    self.device
                        .store
                        .create_issue(&worker(self.grid), issue)
                        .unwrap(),
                );
            }
            let id = own[i % own.len()];
            let text = format!("device {n} note {i}");
            add_note(&self.device.store, id, &worker(self.grid), &text);
            self.written.push((id, text));
            let upto = self.written.len();
            let target = url.read().unwrap().clone();
            let result = gridsync_core::sync::Client::new(&self.device.store)
                .page_bytes(8 * 1024)
                .run(|req| gridsync_core::http::post_sync(&target, &self.device.token, &req));
            match result {
                // Everything written before the sync began is on the server.
                Ok(_) => self
                    .acked
                    .lock()
                    .unwrap()
                    .extend(self.written[..upto].iter().cloned()),
                Err(_) => {
                    self.failed_syncs += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self
    }
}

#[test]
fn the_server_killed_repeatedly_under_load_from_ten_devices_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, RwLock};
    const KILLS: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let mut server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let url = Arc::new(RwLock::new(server.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..10usize)
        .map(|n| {
            let (worker_id, grid) = if n % 2 == 0 { ("w1", 1) } else { ("w2", 2) };
            let loader = Loader {
                device: server.enroll(worker_id, &dir.path().join(format!("d{n}"))),
                grid,
                written: Vec::new(),
                acked: acked.clone(),
                failed_syncs: 0,
            };
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || loader.run(n, &url, &stop))
        })
        .collect();
    let mut checked = 0;
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(400 + 150 * kill));
        server.kill();
        // With the server dead, its store on disk must hold every
        // acknowledged note, and its change log must match its records.
        let acknowledged = acked.lock().unwrap().clone();
        {
            let store =
                Store::open(gridsync_core::StoreConfig::new(data.join("store"), "SRV")).unwrap();
            assert_eq!(
                store.verify().unwrap(),
                Vec::<String>::new(),
                "after kill {kill}"
            );
            for (id, text) in &acknowledged {
                let v = store
                    .issue(*id)
                    .unwrap_or_else(|e| panic!("kill {kill}: acknowledged record {id} lost: {e}"));
                let n = v.timeline.iter().filter(|t| &t.text == text).count();
                assert_eq!(
                    n, 1,
                    "kill {kill}: acknowledged note {text:?} on the server {n} times"
                );
            }
        }
        checked += acknowledged.len();
        server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
        *url.write().unwrap() = server.url.clone();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let loaders: Vec<Loader> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let failed: usize = loaders.iter().map(|l| l.failed_syncs).sum();
    assert!(failed > 0, "no kill landed during a sync");
    assert!(checked > 0, "nothing was acknowledged before the kills");
    // Everyone syncs over a healthy server; then every note ever written
    // is on the server exactly once, and devices of a grid agree.
    let mut loaders = loaders;
    for _ in 0..2 {
        for l in &mut loaders {
            l.device.url = server.url.clone();
            l.device.sync().unwrap();
        }
    }
    let store_dir = data.join("store");
    server.kill();
    let store = Store::open(gridsync_core::StoreConfig::new(store_dir, "SRV")).unwrap();
    assert_eq!(store.verify().unwrap(), Vec::<String>::new());
    let mut notes = 0;
    for l in &loaders {
        assert!(l.device.store.pending().unwrap().is_empty());
        for (id, text) in &l.written {
            let v = store.issue(*id).unwrap();
            let n = v.timeline.iter().filter(|t| &t.text == text).count();
            assert_eq!(n, 1, "note {text:?} on the server {n} times");
            notes += 1;
        }
        for id in l.device.store.record_ids().unwrap() {
            let mut a = l.device.store.heads(id).unwrap();
            let mut b = store.heads(id).unwrap();
            a.sort();
            b.sort();
            assert_eq!(a, b, "a device and the server differ on {id}");
        }
    }
    eprintln!("{KILLS} kills, {failed} interrupted syncs, {checked} acknowledged notes checked, {notes} notes in all");
}

/// The interleaving that once lost changes silently. Request A flushes its
/// push; request B applies a change; A pages the feed; the server dies
/// before B's flush. A must not be served B's entry: after the restart
/// that entry is gone and its sequence number goes to the next change (C's
/// here), which a device whose cursor had passed it would never receive.
/// The crash is the store's files as they stood at A's flush (copied
/// there), which is what a kill -9 before B's flush leaves.
#[test]
fn the_feed_serves_only_what_is_durable() {
    use gridsync_core::store::Incoming;
    use gridsync_core::ForeignLimits;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server");
    let image = dir.path().join("crashed");
    let mut config = gridsync_core::StoreConfig::new(&path, "SRV");
    config.durability = gridsync_core::Durability::Flush;
    let server = std::sync::Arc::new(Store::open(config).unwrap());
    let (a, b, c) = (temp_store("DA"), temp_store("DB"), temp_store("DC"));
    let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    for device in [&a, &b, &c] {
        sync_in_process(device, &server, &["G1"]);
    }
    add_note(&b, id, &worker(1), "B 的记录");
    let from_b = b
        .own_changes_since(id, &b.server_heads(id).unwrap())
        .unwrap();
    add_note(&a, id, &worker(1), "A 的记录");
    // Request B lands between A's flush and A's paging of the feed.
    let live = server.clone();
    let (from, to) = (path.clone(), image.clone());
    server.after_next_durable(move || {
        copy_dir(&from, &to);
        let limits = ForeignLimits::default();
        let incoming = Incoming {
            limits: &limits,
            peer: None,
            known_through: 0,
        };
        live.apply_changes_unflushed(id, &from_b, &incoming)
            .unwrap();
    });
    sync_in_process(&a, &server, &["G1"]);
    // The crash: the restarted server has what was durable.
    let restarted = open_store(&image, "SRV");
    assert_eq!(
        restarted.log_head().unwrap() + 1,
        server.log_head().unwrap(),
        "B's entry is lost with the crash"
    );
    assert!(!restarted
        .issue(id)
        .unwrap()
        .timeline
        .iter()
        .any(|t| t.text == "B 的记录"));
    add_note(&c, id, &worker(1), "C 的记录");
    for device in [&c, &a, &b, &c, &a] {
        sync_in_process(device, &restarted, &["G1"]);
    }
    let texts = |s: &Store| -> Vec<String> {
        let mut t: Vec<_> = s
            .issue(id)
            .unwrap()
            .timeline
            .into_iter()
            .map(|t| t.text)
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        texts(&a),
        ["A 的记录", "B 的记录", "C 的记录"],
        "A missed a change"
    );
    for device in [&a, &b, &c] {
        assert_eq!(device.heads(id).unwrap(), restarted.heads(id).unwrap());
    }
}

/// SIGTERM with a drain time: `/healthz` answers 503 `draining` at once
/// (a load balancer stops sending work) while phones still sync, then the
/// server stops accepting, finishes, flushes and exits 0; what was synced
/// during the drain is on disk.
#[test]
fn a_terminated_server_drains_then_stops() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let server = TestServer::spawn_with(
        SERVER,
        &data,
        "127.0.0.1:0",
        None,
        &["--drain-seconds", "3"],
    );
    server.setup_org();
    let phone = server.enroll("w1", &dir.path().join("phone"));
    let (status, body) = gridsync_tests::server::get_json(&format!("{}/healthz", server.url), None);
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let started = std::time::Instant::now();
    server.terminate();
    // Readiness drops at once...
    let mut status = 200;
    while status == 200 && started.elapsed() < Duration::from_secs(2) {
        let (s, body) = gridsync_tests::server::get_json(&format!("{}/healthz", server.url), None);
        status = s;
        if s == 503 {
            assert_eq!(body["status"], "draining");
        }
    }
    assert_eq!(status, 503, "readiness did not drop");
    // ...while work is still taken.
    let id = phone
        .store
        .create_issue(&worker(1), new_issue(1, 1, 1))
        .unwrap();
    assert_eq!(phone.sync().unwrap().accepted, 1);
    assert_eq!(server.wait(), Some(0));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "stopped before the drain time"
    );
    let store =
        gridsync_core::Store::open(gridsync_core::StoreConfig::new(data.join("store"), "SRV"))
            .unwrap();
    assert!(store.issue(id).is_ok(), "the drained sync is on disk");
}
