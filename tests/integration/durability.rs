//! Durability: a child process writes records in a loop and is killed with
//! SIGKILL at random moments; after every reopen each acknowledged write is
//! present and intact.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use gridsync_core::{IssueStatus, RecordId};
use gridsync_tests::open_store;

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_durability-writer");
    let mut rng = Lcg(0x9e3779b97f4a7c15);
    let runs = 20;
    let mut acked: Vec<(RecordId, usize, bool)> = Vec::new();
    let mut next = 0usize;

    for run in 0..runs {
        let mut child = Command::new(exe)
            .arg(dir.path())
            .arg(next.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the store is open and a first write was acknowledged
        // (a busy machine may be slow to get there), then let it write for
        // a random while before the kill.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("writer started");
        assert_eq!(first, "ready");
        let first_ack = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a first acknowledged write");
        std::thread::sleep(Duration::from_millis(rng.next(400)));
        let pid = child.id() as i32;
        let rc = unsafe_kill(pid);
        assert_eq!(rc, 0, "kill failed");
        let status = child.wait().unwrap();
        assert!(!status.success());
        reader.join().unwrap();

        let lines: Vec<String> = std::iter::once(first_ack).chain(rx.try_iter()).collect();
        let before = acked.len();
        for line in &lines {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["created", id, n] => {
                    let n: usize = n.parse().unwrap();
                    acked.push((id.parse().unwrap(), n, false));
                    next = next.max(n + 1);
                }
                ["accepted", id] => {
                    let id: RecordId = id.parse().unwrap();
                    let entry = acked.iter_mut().rev().find(|a| a.0 == id).unwrap();
                    entry.2 = true;
                }
                _ => {} // a line cut by the kill was not acknowledged
            }
        }
        assert!(
            acked.len() > before,
            "run {run}: the writer acknowledged nothing"
        );

        // Reopen and check every acknowledged write.
        let store = open_store(dir.path(), "DUR");
        assert!(store.corrupt_records().unwrap().is_empty());
        for (id, n, accepted) in &acked {
            let v = store
                .issue(*id)
                .unwrap_or_else(|e| panic!("run {run}: acknowledged record ack-{n} lost: {e}"));
            assert_eq!(v.title, format!("ack-{n}"));
            if *accepted {
                assert_eq!(
                    v.status,
                    IssueStatus::Accepted,
                    "run {run}: acknowledged transition lost"
                );
            }
        }
        // The change log and the index agree with the records.
        let logged: std::collections::BTreeSet<RecordId> = store
            .log_since(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        for id in store.record_ids().unwrap() {
            assert!(logged.contains(&id), "record without a log entry");
        }
    }
    eprintln!(
        "{runs} kills, {} acknowledged records, all present",
        acked.len()
    );
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32) -> i32 {
    // SAFETY: sending a signal to our own child process has no memory-safety
    // implications.
    unsafe { libc::kill(pid, libc::SIGKILL) }
}
