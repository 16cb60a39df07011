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
        .create_issue(&worker(2), new_issue(500, 1, 1))
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
