//! The scale row: the server with 10,000 and with 1,000,000 issues, on
//! sled and on PostgreSQL. Prints a table.
//!
//! The records are built directly in the server's store (not over HTTP),
//! spread over three years of creation times (a manual clock) and 100
//! grids; grid G100 holds 1,000 of them in every size, so the device in
//! the incremental row has the same scope whatever the store's size and
//! the row shows what the store's size alone costs (O(delta) must hold).
//! The server's default log retention (90 days of changes) is applied as
//! the records are built, as a running server applies it.
//!
//! ```text
//! cargo bench -p gridsync-tests --bench scale
//! GRIDSYNC_SCALE_RECORDS=10000,200000 GRIDSYNC_SCALE_ENGINES=sled cargo bench -p gridsync-tests --bench scale
//! ```
//!
//! With `GRIDSYNC_SCALE_KEEP=DIR`, each size's built sled store is kept
//! in `DIR/n<size>` and reused by later runs (copied before it is
//! measured, so a run never changes it): building a million issues takes
//! half an hour, measuring a few minutes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use gridsync_core::clock::ManualClock;
use gridsync_core::store::backend::Engine;
use gridsync_core::{Durability, RecordId, Store};
use gridsync_tests::server::TestServer;
use gridsync_tests::{add_note, copy_dir, dir_size, new_issue, peak_rss_kib, worker};

const SERVER_EXE: &str = env!("CARGO_BIN_EXE_gridsync-under-test");
const GRIDS: u32 = 100;
/// Records in the device's grid, whatever the store's size.
const HOME: usize = 1_000;
const YEAR_MS: i64 = 365 * 24 * 3_600_000;
/// 2026-01-01T00:00:00Z.
const END: i64 = 1_767_225_600_000;
const REPS: usize = 5;
/// The server's default change-log retention.
const KEEP_LOG_MS: i64 = 90 * 24 * 3_600_000;

fn fmt(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Builds `n` issues in the server's store at `data` on `engine`.
fn build(engine: &Engine, data: &Path, n: usize) -> Duration {
    let clock = ManualClock::new(END - 3 * YEAR_MS);
    let mut config = gridsync_server::store_config(engine, data);
    config.durability = Durability::None;
    config.clock = clock.clone();
    // As records pushed by devices are: not tagged as the server's own.
    config.tag_own_changes = false;
    let store = Store::open(config).unwrap();
    let step = 3 * YEAR_MS / n as i64;
    let t = Instant::now();
    for i in 0..n {
        // Every (n / HOME)-th record in the home grid, the rest spread.
        let home = n / HOME;
        let grid = if i % home == 0 {
            100
        } else {
            101 + (i % (GRIDS as usize - 1)) as u32
        };
        store
            .create_issue(&worker(1), new_issue(i, 1, grid))
            .unwrap();
        clock.advance(step);
        if i % 2_000 == 1_999 {
            store.flush().unwrap();
        }
        // The server's default log retention (90 days), applied as it
        // would have been along the way.
        if i % 20_000 == 19_999 {
            let keep = (KEEP_LOG_MS / step) as u64;
            let head = store.log_head().unwrap();
            if head > keep {
                store.truncate_log(head - keep).unwrap();
            }
        }
        if i % 100_000 == 99_999 {
            eprintln!("  {} records, {}", i + 1, fmt(t.elapsed()));
        }
    }
    let keep = (KEEP_LOG_MS / step) as u64;
    let head = store.log_head().unwrap();
    if head > keep {
        store.truncate_log(head - keep).unwrap();
    }
    store.flush().unwrap();
    let took = t.elapsed();
    drop(store);
    took
}

/// Logical bytes (keys and values) per key prefix of the store at `data`.
fn logical_bytes(engine: &Engine, data: &Path) -> String {
    let backend =
        gridsync_core::store::backend::open(engine, &data.join("store"), "records", false).unwrap();
    let mut by: std::collections::BTreeMap<u8, (u64, u64)> = Default::default();
    for kv in gridsync_core::store::backend::scan(&*backend, &[]) {
        let (k, v) = kv.unwrap();
        let e = by.entry(k[0]).or_default();
        e.0 += 1;
        e.1 += (k.len() + v.len()) as u64;
    }
    by.iter()
        .map(|(p, (n, b))| format!("{}: {n} keys {:.0} KiB", *p as char, *b as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Measured {
    n: usize,
    build: Duration,
    open: Duration,
    idle_mib: u64,
    peak_mib: u64,
    incremental: Duration,
    figures_cold: Duration,
    figures_grid: Duration,
    figures_month: Duration,
    list: Duration,
    /// A search for a word no case has (signatures rule every case out),
    /// and for one every case has (every text read), first page of 50.
    search_rare: Duration,
    search_common: Duration,
    bytes: u64,
}

fn database_bytes(url: &str) -> u64 {
    let (base, name) = url.rsplit_once('/').unwrap();
    let _ = base;
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-Atqc", &format!("select pg_database_size('{name}')")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Copies every key of the sled store at `from` into the database at
/// `url`, 5,000 keys per transaction, then settles the database.
fn copy_into_database(from: &Path, url: &str) -> Duration {
    use gridsync_core::store::backend::{self, Batch, FlushMode};
    let t = Instant::now();
    let source = backend::SledBackend::open(from, false).unwrap();
    let target = backend::open(&Engine::Postgres(url.to_owned()), from, "records", false).unwrap();
    let mut batch = Batch::default();
    for kv in backend::scan(&source, &[]) {
        let (k, v) = kv.unwrap();
        batch.insert(k, v);
        if batch.len() == 5_000 {
            target.begin_turn().unwrap();
            target.apply(std::mem::take(&mut batch)).unwrap();
            target.flush(FlushMode::Sync).unwrap();
        }
    }
    target.begin_turn().unwrap();
    target.apply(batch).unwrap();
    target.flush(FlushMode::Sync).unwrap();
    drop(target);
    // What follows a bulk load or a restore: statistics, the visibility
    // map and a checkpoint, so the rows measure a settled database and
    // not the autovacuum and checkpoint writes the load set off.
    let status = std::process::Command::new("psql")
        .arg(url)
        .args(["-qc", "VACUUM (ANALYZE)", "-c", "CHECKPOINT"])
        .status()
        .unwrap();
    assert!(status.success());
    t.elapsed()
}

/// Serves the store at `data` (on the engine the tests' helpers give
/// it) and measures the row.
fn measure(root: &Path, data: &Path, n: usize, build: Duration) -> Measured {
    let engine = gridsync_tests::engine::engine_for(data);
    eprintln!("  logical: {}", logical_bytes(&engine, data));
    let bytes = match &engine {
        Engine::Sled => dir_size(&data.join("store")),
        Engine::Postgres(url) => database_bytes(url),
    };

    let t = Instant::now();
    let server = TestServer::spawn(SERVER_EXE, data, "127.0.0.1:0");
    let open = t.elapsed();
    let pid = server.pid().unwrap();
    let idle_mib = peak_rss_kib(Some(pid)) / 1024;

    let ok = |(status, body): (u16, serde_json::Value)| assert!(status < 300, "{status} {body}");
    ok(server.admin("/v1/admin/streets", serde_json::json!({"id": "S1"})));
    ok(server.admin(
        "/v1/admin/communities",
        serde_json::json!({"id": "C1", "street": "S1"}),
    ));
    for g in 100..100 + GRIDS {
        ok(server.admin(
            "/v1/admin/grids",
            serde_json::json!({"id": format!("G{g}"), "community": "C1"}),
        ));
    }
    for w in ["w100", "w100b"] {
        ok(server.admin(
            "/v1/admin/workers",
            serde_json::json!({"id": w, "grids": ["G100"]}),
        ));
    }
    ok(server.admin(
        "/v1/admin/workers",
        serde_json::json!({"id": "office1", "communities": ["C1"]}),
    ));

    // Incremental: device A (the grid's worker) and device B (a colleague
    // in the same grid) each change 50 records; A's sync pushes 50 and
    // pulls 50.
    let a = server.enroll("w100", &root.join("a"));
    let b = server.enroll("w100b", &root.join("b"));
    assert_eq!(a.sync().unwrap().pulled, HOME);
    assert_eq!(b.sync().unwrap().pulled, HOME);
    let ids: Vec<RecordId> = a.store.record_ids().unwrap();
    let mut times = Vec::new();
    for rep in 0..REPS {
        for k in 0..50 {
            let id = ids[(rep * 100 + k) * 7 % ids.len()];
            add_note(&b.store, id, &b.author, &format!("同事补记 {rep}"));
        }
        b.sync().unwrap();
        for k in 50..100 {
            let id = ids[(rep * 100 + k) * 7 % ids.len()];
            add_note(&a.store, id, &a.author, &format!("网格员走访 {rep}"));
        }
        let t = Instant::now();
        let r = a.sync().unwrap();
        times.push(t.elapsed());
        assert_eq!((r.accepted, r.pulled), (50, 50), "{r:?}");
    }
    let incremental = median(times);

    let token = server.office_token("office1", "office");
    let timed = |path: &str| {
        let mut times = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            let (status, body) = server.office_get(&token, path);
            times.push(t.elapsed());
            assert_eq!(status, 200, "{body}");
        }
        median(times)
    };
    let t = Instant::now();
    let (_, body) = server.office_get(&token, "/v1/office/figures?by=grid");
    let figures_cold = t.elapsed();
    assert_eq!(body["total"]["issues"].as_u64(), Some(n as u64), "{body}");
    let figures_grid = timed("/v1/office/figures?by=grid");
    let figures_month = timed("/v1/office/figures?by=month");
    let list = timed("/v1/office/issues?limit=50&overdue=true");
    // 漏水 and 楼道, percent-encoded.
    let search_rare = timed("/v1/office/issues?limit=50&q=%E6%BC%8F%E6%B0%B4");
    let search_common = timed("/v1/office/issues?limit=50&q=%E6%A5%BC%E9%81%93");
    let peak_mib = peak_rss_kib(Some(pid)) / 1024;
    server.kill();
    Measured {
        n,
        build,
        open,
        idle_mib,
        peak_mib,
        incremental,
        figures_cold,
        figures_grid,
        figures_month,
        list,
        search_rare,
        search_common,
        bytes,
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("GRIDSYNC_SCALE_RECORDS")
        .unwrap_or_else(|_| "10000,1000000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("GRIDSYNC_SCALE_RECORDS: numbers"))
        .collect();
    assert!(sizes.iter().all(|&n| n >= HOME), "at least {HOME} records");
    let engines =
        std::env::var("GRIDSYNC_SCALE_ENGINES").unwrap_or_else(|_| "sled,postgres".into());
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let keep = std::env::var_os("GRIDSYNC_SCALE_KEEP").map(std::path::PathBuf::from);
    let mut sled_rows: Vec<Measured> = Vec::new();
    let mut pg_rows: Vec<Measured> = Vec::new();
    for &n in &sizes {
        let root = tmp.path().join(format!("n{n}"));
        let sled_data = root.join("sled");
        let kept = keep
            .as_ref()
            .map(|k| (k.join(format!("n{n}")), k.join(format!("n{n}.built"))));
        let build = match &kept {
            Some((kept, built)) if built.exists() => {
                eprintln!("reusing {n} issues built before…");
                copy_dir(kept, &sled_data);
                Duration::from_secs_f64(
                    std::fs::read_to_string(built)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap(),
                )
            }
            _ => {
                eprintln!("building {n} issues…");
                let build = build(&Engine::Sled, &sled_data, n);
                if let Some((kept, built)) = &kept {
                    let _ = std::fs::remove_dir_all(kept);
                    copy_dir(&sled_data, kept);
                    std::fs::write(built, build.as_secs_f64().to_string()).unwrap();
                }
                build
            }
        };
        if engines.contains("postgres") {
            gridsync_tests::engine::on_postgres(|| {
                let pg_data = root.join("pg");
                let url = gridsync_tests::engine::database_of(&pg_data);
                eprintln!("copying into PostgreSQL…");
                let copy = copy_into_database(&sled_data.join("store"), &url);
                pg_rows.push(measure(&root.join("pg-devices"), &pg_data, n, copy));
            });
        }
        if engines.contains("sled") {
            sled_rows.push(measure(&root.join("sled-devices"), &sled_data, n, build));
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
    let mut rows = Vec::new();
    for (engine, measured) in [("sled", sled_rows), ("PostgreSQL", pg_rows)] {
        let Some(base) = measured.first().map(|m| m.incremental) else {
            continue;
        };
        for m in measured {
            rows.push(format!(
                "| {engine} | {} | {} | {} | {} MiB | {} MiB | {} ({:.2}× the {}-record row) | {} (first after open {}) | {} | {} | {} | {} | {:.2} KiB |",
                m.n,
                fmt(m.build),
                fmt(m.open),
                m.idle_mib,
                m.peak_mib,
                fmt(m.incremental),
                m.incremental.as_secs_f64() / base.as_secs_f64(),
                sizes[0],
                fmt(m.figures_grid),
                fmt(m.figures_cold),
                fmt(m.figures_month),
                fmt(m.list),
                fmt(m.search_rare),
                fmt(m.search_common),
                m.bytes as f64 / m.n as f64 / 1024.0,
            ));
        }
    }
    println!("\n| engine | issues | built (sled: in the store; PostgreSQL: its keys copied in) | server open | memory after open | peak memory | incremental sync 50 + 50 | figures by grid | figures by month | overdue list, 50 | search, a word no case has | search, a word every case has | storage per record |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("\nGoals at 1,000,000: incremental within 1.5× of the first row, figures under 200 ms, peak memory under 1 GiB, storage under 4 KiB per record. Medians of {REPS} syncs and 11 requests; the device's grid holds {HOME} records at every size.");
}
