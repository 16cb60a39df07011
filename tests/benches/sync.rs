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

/// What one engine measured (the rows the table compares).
struct Measured {
    seed: Duration,
    first: Duration,
    /// Loading the same documents from bytes (the first sync's floor).
    load_all: Duration,
    first_bytes: u64,
    compacted: u64,
    reconnect: (u64, u64),
    incremental: Duration,
    floor: Duration,
    wire: u64,
    delta: u64,
    /// Automerge's per-document sync of every record (sled run only).
    baseline: Option<(Duration, usize)>,
    fifty: Vec<Duration>,
    fifty_wall: Duration,
    fifty_errors: usize,
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort();
    v[v.len() / 2]
}

/// The first sync, incremental and 50-device rows on the engine the
/// helpers open (sled; PostgreSQL inside `on_postgres`, where the 50
/// devices sync through two server nodes on one database).
fn measure(root: &Path, n: usize, reps: usize, postgres: bool) -> Measured {
    eprintln!("building {n} issues on device A…");
    build(&root.join("a"), n, |_| 1, 3);
    let server = TestServer::start(&root.join("server"));
    server.setup_org();
    let proxy = Proxy::start(&server.url);
    // Device A: the grid worker of G1, who wrote every record (its store
    // already full).
    let a = device(&server, "w1", &root.join("a"), &proxy.url);

    eprintln!("seeding the server from A…");
    let t = Instant::now();
    let seeded = a.sync().unwrap();
    let seed = t.elapsed();
    assert!(seeded.refused.is_empty(), "{:?}", &seeded.refused[..1]);

    // ---------------------------------------------------------- first sync
    eprintln!("first sync of a new device…");
    let b = device(&server, "office", &root.join("b"), &proxy.url);
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

    // ----------------------------------------------------------- reconnect
    proxy.reset();
    let r = b.sync().unwrap();
    let reconnect = proxy.total();
    assert_eq!((r.pushed, r.pulled), (0, 0));

    // --------------------------------------------------------- incremental
    eprintln!("incremental syncs…");
    let ids = a.store.record_ids().unwrap();
    let mut ours = Vec::new();
    let mut floors = Vec::new();
    let mut wire = Vec::new();
    let mut deltas = Vec::new();
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

    // Baseline: Automerge's own per-document sync over all records, both
    // sides loaded from bytes (a server without a change feed must).
    let baseline = (!postgres).then(|| {
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
        (t.elapsed(), msgs)
    });

    // ------------------------------------------------ 50 devices at once
    // On PostgreSQL through two nodes: devices alternate between them.
    eprintln!("50 devices at once…");
    let second = postgres.then(|| {
        let dir = root.join("server-2");
        gridsync_tests::engine::use_database(
            &dir,
            &gridsync_tests::engine::database_of(&root.join("server")),
        );
        TestServer::start(&dir)
    });
    let urls: Vec<String> = std::iter::once(server.url.clone())
        .chain(second.iter().map(|s| s.url.clone()))
        .collect();
    let devices: Vec<TestDevice> = (0..50)
        .map(|i| {
            device(
                &server,
                "w2",
                &root.join(format!("m{i}")),
                &urls[i % urls.len()],
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
    let fifty_wall = start.elapsed();
    Measured {
        seed,
        first,
        load_all,
        first_bytes: up + down,
        compacted,
        reconnect,
        incremental: median(ours),
        floor: median(floors),
        wire: median_u64(wire),
        delta: median_u64(deltas),
        baseline,
        fifty: results.iter().map(|(d, _)| *d).collect(),
        fifty_wall,
        fifty_errors: results.iter().filter(|(_, ok)| !ok).count(),
    }
}

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
    let reps = 5;
    eprintln!("== sled");
    let sled = measure(&tmp.path().join("sled"), n, reps, false);
    eprintln!(
        "== PostgreSQL ({})",
        gridsync_tests::engine::postgres_server()
    );
    let pg = gridsync_tests::engine::on_postgres(|| measure(&tmp.path().join("pg"), n, reps, true));
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let mut rows: Vec<Row> = Vec::new();
    // Each engine row: sled | PostgreSQL | reference | ratios.
    let mut row = |what: String, s: String, p: String, reference: String, note: String| {
        rows.push(Row(what, format!("{s} | {p}"), reference, note));
    };
    row(
        format!("seed: first push of {n} records"),
        fmt(sled.seed),
        fmt(pg.seed),
        String::new(),
        format!("PostgreSQL {:.2}× sled", ratio(pg.seed, sled.seed)),
    );
    row(
        format!("first sync of a new device, {n} records"),
        fmt(sled.first),
        fmt(pg.first),
        format!("load {n} docs from bytes: {}", fmt(sled.load_all)),
        format!(
            "sled {:.2} (limit 1.0) · PostgreSQL {:.2}× sled",
            ratio(sled.first, sled.load_all),
            ratio(pg.first, sled.first)
        ),
    );
    row(
        "  first sync, bytes on the wire (both ways)".into(),
        kib(sled.first_bytes),
        kib(pg.first_bytes),
        format!("compacted docs: {}", kib(sled.compacted)),
        format!(
            "{:.2} (limit 1.2)",
            sled.first_bytes as f64 / sled.compacted as f64
        ),
    );
    row(
        "reconnect with nothing changed, bytes (both ways)".into(),
        kib(sled.reconnect.0 + sled.reconnect.1),
        kib(pg.reconnect.0 + pg.reconnect.1),
        "limit 1 KiB".into(),
        String::new(),
    );
    let (baseline, msgs) = sled.baseline.unwrap();
    row(
        "incremental sync, 50 + 50 changed records".into(),
        fmt(sled.incremental),
        fmt(pg.incremental),
        format!("per-doc Automerge sync: {} ({msgs} msgs)", fmt(baseline)),
        format!(
            "sled {:.0}× faster (limit ≥ 20×) · PostgreSQL {:.2}× sled (limit 2)",
            ratio(baseline, sled.incremental),
            ratio(pg.incremental, sled.incremental)
        ),
    );
    row(
        "  same, against the floor".into(),
        fmt(sled.incremental),
        fmt(pg.incremental),
        format!("floor (load + apply 100 records): {}", fmt(sled.floor)),
        format!(
            "sled {:.2} (limit 3) · PostgreSQL {:.2}",
            ratio(sled.incremental, sled.floor),
            ratio(pg.incremental, pg.floor)
        ),
    );
    row(
        "  bytes on the wire (both ways)".into(),
        kib(sled.wire),
        kib(pg.wire),
        format!("changed records' deltas: {}", kib(sled.delta)),
        format!("{:.2} (limit 1.5)", sled.wire as f64 / sled.delta as f64),
    );
    let fifty = |m: &Measured| {
        format!(
            "p50 {} · p99 {} · {:.0} changes/s",
            fmt(percentile(&m.fifty, 0.5)),
            fmt(percentile(&m.fifty, 0.99)),
            1000.0 / m.fifty_wall.as_secs_f64()
        )
    };
    row(
        "50 devices syncing at once, 20 changes each (PostgreSQL: two nodes)".into(),
        fifty(&sled),
        fifty(&pg),
        String::new(),
        format!("{} + {} errors", sled.fifty_errors, pg.fifty_errors),
    );

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
        format!("{} MiB | (sled row)", peak / 1024),
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
        format!("{} | (sled row)", fmt(figures)),
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

    println!("\n| measurement | sled | PostgreSQL | baseline / floor / limit | ratio / note |");
    println!("|---|---|---|---|---|");
    for Row(a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    println!("\n{n} records (each ~300 Chinese characters, 3 notes); real HTTP on loopback; {reps} incremental repetitions (medians); PostgreSQL at {} with synchronous commits.", gridsync_tests::engine::postgres_server());
}

fn server_pid(server: &TestServer) -> u32 {
    server.pid().unwrap()
}
