//! The sync benchmark: real HTTP on loopback against a real server, with
//! baselines and floors measured in the same run. Prints a table.
//!
//! `cargo bench -p gridsync-tests --bench sync` (10,000 records; set
//! `GRIDSYNC_BENCH_RECORDS` for another size and `GRIDSYNC_BENCH_BIG` for
//! the record count of the server-memory row, 100,000 by default).
//!
//! Bytes "on the wire" are counted by a TCP proxy between devices and the
//! server: HTTP headers included.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use automerge::sync::SyncDoc;
use automerge::Automerge;
use gridsync_core::{Durability, RecordId, Store, StoreConfig};
use gridsync_tests::server::{TestDevice, TestServer};
use gridsync_tests::{add_note, dir_size, new_issue, peak_rss_kib, worker};

const SERVER_EXE: &str = env!("CARGO_BIN_EXE_gridsync-under-test");

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn kib(n: u64) -> String {
    if n >= 10 * 1024 * 1024 {
        format!("{:.1} MiB", n as f64 / 1048576.0)
    } else if n >= 10 * 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A TCP proxy that counts the bytes going each way.
struct Proxy {
    url: String,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let (u, d) = (up.clone(), down.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    u.clone(),
                );
                pipe(server, client, d.clone());
            }
        });
        Proxy { url, up, down }
    }

    fn reset(&self) {
        self.up.store(0, Ordering::SeqCst);
        self.down.store(0, Ordering::SeqCst);
    }

    fn total(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, count: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(std::net::Shutdown::Write);
                    return;
                }
                Ok(n) => {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

fn build(path: &Path, n: usize, grid: impl Fn(usize) -> u32, notes: usize) {
    let mut config = StoreConfig::new(path, "BENCH");
    config.durability = Durability::None;
    let store = Store::open(config).unwrap();
    for i in 0..n {
        let id = store
            .create_issue(&worker(1), new_issue(i, 1, grid(i)))
            .unwrap();
        for k in 0..notes {
            add_note(
                &store,
                id,
                &worker(1),
                &format!("第{k}次走访：已与物业沟通。"),
            );
        }
    }
    drop(store);
}

fn device(server: &TestServer, worker: &str, dir: &Path, url: &str) -> TestDevice {
    let mut d = server.enroll(worker, dir);
    d.url = url.to_owned();
    d
}

struct Row(String, String, String, String);

fn main() {
    let n: usize = std::env::var("GRIDSYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let big: usize = std::env::var("GRIDSYNC_BENCH_BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let mut rows: Vec<Row> = Vec::new();

    eprintln!("building {n} issues on device A…");
    build(&tmp.path().join("a"), n, |_| 1, 3);
    let server = TestServer::start(&tmp.path().join("server"));
    server.setup_org();
    let proxy = Proxy::start(&server.url);
    // Device A: the grid worker of G1, who wrote every record (its store
    // already full).
    let a = device(&server, "w1", &tmp.path().join("a"), &proxy.url);

    eprintln!("seeding the server from A…");
    let t = Instant::now();
    let seeded = a.sync().unwrap();
    let seed = t.elapsed();
    assert!(seeded.refused.is_empty(), "{:?}", &seeded.refused[..1]);
    rows.push(Row(
        format!("seed: first push of {n} records"),
        fmt(seed),
        String::new(),
        String::new(),
    ));

    // ---------------------------------------------------------- first sync
    eprintln!("first sync of a new device…");
    let b = device(&server, "office", &tmp.path().join("b"), &proxy.url);
    proxy.reset();
    let t = Instant::now();
    let report = b.sync().unwrap();
    let first = t.elapsed();
    let (up, down) = proxy.total();
    assert_eq!(report.pulled, n);
    // Baseline: loading the same documents from bytes (what any replica
    // that keeps documents must at least do), and their compacted size.
    let server_store = server.store.clone().unwrap();
    let exported: Vec<Vec<u8>> = server_store
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| server_store.export_record(id).unwrap().0)
        .collect();
    let t = Instant::now();
    let docs: Vec<Automerge> = exported
        .iter()
        .map(|b| Automerge::load(b).unwrap())
        .collect();
    let load_all = t.elapsed();
    let compacted: u64 = docs.iter().map(|d| d.save().len() as u64).sum();
    drop(docs);
    rows.push(Row(
        format!("first sync of a new device, {n} records"),
        fmt(first),
        format!("load {n} docs from bytes: {}", fmt(load_all)),
        format!(
            "{:.2} (limit 1.0)",
            first.as_secs_f64() / load_all.as_secs_f64()
        ),
    ));
    rows.push(Row(
        "  first sync, bytes on the wire (both ways)".into(),
        kib(up + down),
        format!("compacted docs: {}", kib(compacted)),
        format!("{:.2} (limit 1.2)", (up + down) as f64 / compacted as f64),
    ));

    // ----------------------------------------------------------- reconnect
    proxy.reset();
    let r = b.sync().unwrap();
    let (up, down) = proxy.total();
    assert_eq!((r.pushed, r.pulled), (0, 0));
    rows.push(Row(
        "reconnect with nothing changed, bytes (both ways)".into(),
        format!("{} ({} up, {} down)", kib(up + down), up, down),
        "limit 1 KiB".into(),
        String::new(),
    ));

    // --------------------------------------------------------- incremental
    eprintln!("incremental syncs…");
    let ids = a.store.record_ids().unwrap();
    let mut ours = Vec::new();
    let mut floors = Vec::new();
    let mut wire = Vec::new();
    let mut deltas = Vec::new();
    let reps = 5;
    for rep in 0..reps {
        // 50 records changed elsewhere (device B) and synced to the server.
        let theirs: Vec<RecordId> = (0..50)
            .map(|k| ids[(rep * 100 + k) * 7 % ids.len()])
            .collect();
        let mine: Vec<RecordId> = (0..50)
            .map(|k| ids[(rep * 100 + 50 + k) * 7 % ids.len()])
            .collect();
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for id in &theirs {
            let before_b = b.store.heads(*id).unwrap();
            add_note(&b.store, *id, &b.author, &format!("办公室补记 {rep}"));
            let delta = b.store.changes_since(*id, &before_b).unwrap();
            // The floor for this record: A loads it and applies the delta.
            pairs.push((a.store.export_record(*id).unwrap().0, delta));
        }
        b.sync().unwrap();
        for id in &mine {
            let before = a.store.heads(*id).unwrap();
            add_note(&a.store, *id, &a.author, &format!("网格员走访 {rep}"));
            let delta = a.store.changes_since(*id, &before).unwrap();
            pairs.push((server_store.export_record(*id).unwrap().0, delta));
        }
        let delta_bytes: u64 = pairs.iter().map(|(_, d)| d.len() as u64).sum();
        proxy.reset();
        let t = Instant::now();
        let report = a.sync().unwrap();
        ours.push(t.elapsed());
        let (up, down) = proxy.total();
        wire.push(up + down);
        deltas.push(delta_bytes);
        assert_eq!((report.accepted, report.pulled), (50, 50), "{report:?}");
        // Floor: load each changed record and apply its delta, in process.
        let t = Instant::now();
        for (doc, delta) in &pairs {
            let mut d = Automerge::load(doc).unwrap();
            d.load_incremental(delta).unwrap();
        }
        floors.push(t.elapsed());
    }
    let (o, f) = (median(ours), median(floors));

    // Baseline: Automerge's own per-document sync over all records, both
    // sides loaded from bytes (a server without a change feed must).
    eprintln!("baseline: per-document Automerge sync of {n} documents…");
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = ids
        .iter()
        .map(|id| {
            (
                server_store.export_record(*id).unwrap().0,
                a.store.export_record(*id).unwrap().0,
            )
        })
        .collect();
    let t = Instant::now();
    let mut msgs = 0usize;
    for (server_bytes, device_bytes) in &pairs {
        let mut s = Automerge::load(server_bytes).unwrap();
        let mut d = Automerge::load(device_bytes).unwrap();
        let mut ss = automerge::sync::State::new();
        let mut ds = automerge::sync::State::new();
        loop {
            let mut moved = false;
            if let Some(m) = d.generate_sync_message(&mut ds) {
                s.receive_sync_message(&mut ss, m).unwrap();
                moved = true;
                msgs += 1;
            }
            if let Some(m) = s.generate_sync_message(&mut ss) {
                d.receive_sync_message(&mut ds, m).unwrap();
                moved = true;
                msgs += 1;
            }
            if !moved {
                break;
            }
        }
    }
    let baseline = t.elapsed();
    rows.push(Row(
        "incremental sync, 50 + 50 changed records".into(),
        fmt(o),
        format!("per-doc Automerge sync: {} ({msgs} msgs)", fmt(baseline)),
        format!(
            "{:.0}× faster (limit ≥ 20×)",
            baseline.as_secs_f64() / o.as_secs_f64()
        ),
    ));
    rows.push(Row(
        "  same, against the floor".into(),
        fmt(o),
        format!("floor (load + apply 100 records): {}", fmt(f)),
        format!("{:.2} (limit 3)", o.as_secs_f64() / f.as_secs_f64()),
    ));
    let wire_median = {
        let mut w = wire.clone();
        w.sort();
        w[w.len() / 2]
    };
    let delta_median = {
        let mut d = deltas.clone();
        d.sort();
        d[d.len() / 2]
    };
    rows.push(Row(
        "  bytes on the wire (both ways)".into(),
        kib(wire_median),
        format!("changed records' deltas: {}", kib(delta_median)),
        format!(
            "{:.2} (limit 1.5)",
            wire_median as f64 / delta_median as f64
        ),
    ));

    // ------------------------------------------------ 50 devices at once
    eprintln!("50 devices at once…");
    let devices: Vec<TestDevice> = (0..50)
        .map(|i| {
            device(
                &server,
                "w2",
                &tmp.path().join(format!("m{i}")),
                &server.url,
            )
        })
        .collect();
    for (i, d) in devices.iter().enumerate() {
        d.store
            .create_issue(&worker(2), new_issue(i, 1, 2))
            .unwrap();
        d.sync().unwrap();
    }
    for d in &devices {
        d.sync().unwrap();
    }
    let shared: Vec<RecordId> = devices[0].store.record_ids().unwrap();
    assert_eq!(shared.len(), 50);
    for (i, d) in devices.iter().enumerate() {
        for k in 0..20 {
            add_note(
                &d.store,
                shared[(i + k) % shared.len()],
                &worker(2),
                &format!("设备 {i} 记录 {k}"),
            );
        }
    }
    let devices = Arc::new(devices);
    let start = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let devices = devices.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = devices[i].sync();
                (t.elapsed(), r.is_ok())
            })
        })
        .collect();
    let results: Vec<(Duration, bool)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = start.elapsed();
    let errors = results.iter().filter(|(_, ok)| !ok).count();
    let lat: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
    rows.push(Row(
        "50 devices syncing at once, 20 changes each".into(),
        format!(
            "p50 {} · p99 {}",
            fmt(percentile(&lat, 0.5)),
            fmt(percentile(&lat, 0.99))
        ),
        format!(
            "{:.0} changes/s ({} in {})",
            1000.0 / wall.as_secs_f64(),
            1000,
            fmt(wall)
        ),
        format!("{errors} errors"),
    ));
    drop(devices);
    drop(a);
    drop(b);
    drop(server);

    // ------------------------------------------- server memory at 100k
    eprintln!("building {big} records for the server-memory row…");
    let data = tmp.path().join("big");
    let grids = 100usize;
    build(&data.join("store"), big, |i| (i % grids) as u32 + 100, 0);
    let store_bytes = dir_size(&data);
    let server = TestServer::spawn(SERVER_EXE, &data, "127.0.0.1:0");
    let pid = server_pid(&server);
    let idle = peak_rss_kib(Some(pid));
    for (path, body) in [
        ("/v1/admin/streets", serde_json::json!({"id": "S1"})),
        (
            "/v1/admin/communities",
            serde_json::json!({"id": "C1", "street": "S1"}),
        ),
        (
            "/v1/admin/grids",
            serde_json::json!({"id": "G100", "community": "C1"}),
        ),
        (
            "/v1/admin/workers",
            serde_json::json!({"id": "w100", "grids": ["G100"]}),
        ),
    ] {
        assert!(server.admin(path, body).0 < 300);
    }
    for g in 101..100 + grids {
        let body = serde_json::json!({"id": format!("G{g}"), "community": "C1"});
        assert!(server.admin("/v1/admin/grids", body).0 < 300);
    }
    let t = Instant::now();
    let d = server.enroll("w100", &tmp.path().join("bigdev"));
    let r = d.sync().unwrap();
    let grid_sync = t.elapsed();
    let ids = d.store.record_ids().unwrap();
    for round in 0..20 {
        add_note(&d.store, ids[round % ids.len()], &d.author, "again");
        d.sync().unwrap();
    }
    let peak = peak_rss_kib(Some(pid));
    rows.push(Row(
        format!("server peak memory, {big} records stored"),
        format!("{} MiB", peak / 1024),
        format!("store on disk: {}", kib(store_bytes)),
        format!(
            "idle after open {} MiB; a {}-record grid first-synced in {}",
            idle / 1024,
            r.pulled,
            fmt(grid_sync)
        ),
    ));

    // ------------------------------------------- figures at 100k
    assert!(
        server
            .admin(
                "/v1/admin/workers",
                serde_json::json!({"id": "office1", "communities": ["C1"]})
            )
            .0
            < 300
    );
    let token = server.office_token("office1", "office");
    let timed = |path: &str| {
        let mut times = Vec::new();
        let mut body = serde_json::Value::Null;
        for _ in 0..11 {
            let t = Instant::now();
            let (status, b) = server.office_get(&token, path);
            times.push(t.elapsed());
            assert_eq!(status, 200, "{b}");
            body = b;
        }
        (median(times), body)
    };
    let (figures, body) = timed("/v1/office/figures?by=grid");
    assert_eq!(body["total"]["issues"].as_u64(), Some(big as u64));
    let (by_month, _) = timed("/v1/office/figures?by=month");
    let (scan, page) = timed("/v1/office/issues?limit=1");
    assert_eq!(page["total"].as_u64(), Some(big as u64));
    rows.push(Row(
        format!("office figures, {big} issues, by grid (HTTP)"),
        fmt(figures),
        format!(
            "one list query over the same index: {} · limit 200 ms",
            fmt(scan)
        ),
        format!(
            "{:.1}× the list; by month {}",
            figures.as_secs_f64() / scan.as_secs_f64(),
            fmt(by_month)
        ),
    ));
    server.kill();

    println!("\n| measurement | gridsync | baseline / floor / limit | ratio / note |");
    println!("|---|---|---|---|");
    for Row(a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    println!("\n{n} records (each ~300 Chinese characters, 3 notes); real HTTP on loopback; {reps} incremental repetitions (medians).");
}

fn server_pid(server: &TestServer) -> u32 {
    server.pid().unwrap()
}
