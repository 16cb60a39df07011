//! The store benchmark: prints a table of medians and their ratios to raw
//! floors measured in the same run.
//!
//! `cargo bench -p gridsync-tests --bench store` (10,000 records; set
//! `GRIDSYNC_BENCH_RECORDS` for another size; `-- --phone-only` for the
//! phone-growth row alone; `-- --search-only` for the office search rows
//! at 100,000 issues; `-- --compression-only` for what sled's compression
//! saves on disk and costs in time, against an uncompressed store in the
//! same run).
//!
//! Floors:
//! * create: raw Automerge (the same fields built with plain `put`s) +
//!   `save` + sled `insert` (sled set up as the store's: compressed) +
//!   `flush` + fdatasync of sled's data file;
//! * status change: a raw Automerge change of the same shape (an event map
//!   with its clock appended to a list) + `save_after` + `insert` + `flush`
//!   + fdatasync;
//! * open: loading every record's document from its bytes.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use gridsync_core::store::backend::{self, Backend, Batch, FlushMode, SledBackend};
use gridsync_core::{Durability, IssueOp, IssueStatus, Query, Sort, Store, StoreConfig};
use gridsync_tests::{add_note, dir_size, new_issue, peak_rss_kib, worker};

const SAMPLES: usize = 200;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// A raw sled database with the same settings (compressed) and the same
/// durability work the store does.
struct RawSled {
    db: sled::Db,
    file: File,
}

impl RawSled {
    fn open(path: &Path) -> RawSled {
        let db = gridsync_tests::raw_sled(path);
        let file = File::open(path.join("db")).unwrap();
        RawSled { db, file }
    }

    fn durable_insert(&self, key: &[u8], value: Vec<u8>) {
        self.db.insert(key, value).unwrap();
        self.db.flush().unwrap();
        self.file.sync_data().unwrap();
    }
}

/// The fields of a realistic issue, put one by one with plain Automerge.
fn raw_issue(i: usize) -> AutoCommit {
    let new = new_issue(i, 1, 1);
    let mut d = AutoCommit::new();
    for (k, v) in [
        ("type", "issue"),
        ("id", "0190a0b2-7c3e-7d4a-9f00-000000000000"),
        ("case_no", "RAW-000001"),
        ("source", new.source.as_str()),
        ("original_statement", new.original_statement.as_str()),
        ("created_by", "worker-1"),
        ("device", "0123456789abcdef0123456789abcdef"),
        ("title", new.title.as_str()),
        ("kind", new.kind.as_str()),
        ("category", new.category.as_str()),
        ("urgency", new.urgency.as_str()),
        ("reporter_name", new.reporter.name.as_str()),
        ("reporter_phone", new.reporter.phone.as_str()),
        ("street", new.location.street.as_str()),
        ("community", new.location.community.as_str()),
        ("grid", new.location.grid.as_str()),
        ("building", new.location.building.as_str()),
        ("address", new.location.address.as_str()),
    ] {
        d.put(ROOT, k, v).unwrap();
    }
    d.put(ROOT, "created_at", ScalarValue::Timestamp(0))
        .unwrap();
    let text = d.put_object(ROOT, "description", ObjType::Text).unwrap();
    d.splice_text(&text, 0, 0, &new.description).unwrap();
    for k in ["assist_units", "tags", "related", "clock"] {
        d.put_object(ROOT, k, ObjType::Map).unwrap();
    }
    for k in [
        "transitions",
        "timeline",
        "deadline_changes",
        "return_visits",
        "attachments",
    ] {
        d.put_object(ROOT, k, ObjType::List).unwrap();
    }
    raw_event(&mut d);
    d
}

/// Appends a status event shaped like the store's.
fn raw_event(d: &mut AutoCommit) {
    let list = match d.get(ROOT, "transitions").unwrap() {
        Some((_, id)) => id,
        None => d.put_object(ROOT, "transitions", ObjType::List).unwrap(),
    };
    let len = d.length(&list);
    let item = d.insert_object(&list, len, ObjType::Map).unwrap();
    for (k, v) in [
        ("dev", "0123456789abcdef0123456789abcdef"),
        ("from", "reported"),
        ("to", "accepted"),
        ("by", "worker-1"),
        ("role", "grid_worker"),
        ("reason", ""),
    ] {
        d.put(&item, k, v).unwrap();
    }
    d.put(&item, "n", len as i64 + 1).unwrap();
    d.put(&item, "at", ScalarValue::Timestamp(0)).unwrap();
    let seen = d.put_object(&item, "seen", ObjType::Map).unwrap();
    d.put(&seen, "0123456789abcdef0123456789abcdef", len as i64)
        .unwrap();
    let clock = d.get(ROOT, "clock").unwrap().unwrap().1;
    d.put(&clock, "0123456789abcdef0123456789abcdef", len as i64 + 1)
        .unwrap();
}

/// Builds a phone store with `records` cases and `edits` notes spread over
/// them, syncing to an in-memory server every 100 edits; returns the
/// phone's store size on disk (after a reopen) and the sum of its
/// documents' compacted sizes. `compress: false` makes the store as
/// builds before sled's compression did.
fn phone_growth(path: &Path, records: usize, edits: usize, compress: bool) -> (u64, u64) {
    let server = gridsync_tests::temp_store("SRV");
    if !compress {
        SledBackend::create_uncompressed(path).unwrap();
    }
    let phone = Store::open(config(path, Durability::Flush)).unwrap();
    let ids: Vec<_> = (0..records)
        .map(|i| phone.create_issue(&worker(1), new_issue(i, 1, 1)).unwrap())
        .collect();
    gridsync_tests::sync_in_process(&phone, &server, &["G1"]);
    for e in 0..edits {
        add_note(
            &phone,
            ids[e % records],
            &worker(1),
            &format!("走访记录 {e}：居民反映情况已核实"),
        );
        if e % 100 == 99 {
            gridsync_tests::sync_in_process(&phone, &server, &["G1"]);
        }
    }
    gridsync_tests::sync_in_process(&phone, &server, &["G1"]);
    let docs: u64 = ids
        .iter()
        .map(|id| phone.snapshot(*id).unwrap().len() as u64)
        .sum();
    drop(phone);
    // Reopened, as a phone is after a restart: what stays on disk.
    let phone = Store::open(config(path, Durability::Flush)).unwrap();
    assert_eq!(phone.len().unwrap(), records);
    drop(phone);
    (dir_size(path), docs)
}

/// The bytes of keys and values in the store at `path`, and the size on
/// disk of a fresh sled holding the same entries with every record's
/// snapshot and chunks replaced by its compacted snapshot, written in one
/// batch: what sled costs for the least this store could hold.
fn sled_floor(path: &Path, fresh: &Path) -> (u64, u64) {
    let store = Store::open(config(path, Durability::Flush)).unwrap();
    let snapshots: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = store
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let mut k = vec![b'd'];
            k.extend_from_slice(id.as_bytes());
            (k, store.snapshot(id).unwrap())
        })
        .collect();
    drop(store);
    let db = SledBackend::open(path, false).unwrap();
    let copy = SledBackend::open(fresh, false).unwrap();
    let mut content = 0u64;
    let mut batch = Batch::default();
    for item in backend::scan(&db, &[]) {
        let (k, v) = item.unwrap();
        content += (k.len() + v.len()) as u64;
        if k[0] == b'c' {
            continue;
        }
        let v = snapshots.get(&k).cloned().unwrap_or(v);
        batch.insert(k, v);
    }
    copy.write_now(batch, FlushMode::Process).unwrap();
    drop(copy);
    (content, dir_size(fresh))
}

/// What sled's compression (on for every store created since) saves on
/// disk and costs in time, against a store created uncompressed, in the
/// same run with reps alternating: a phone's store after 10,000 edits, a
/// durable create, and the first sync of `n` records into an empty store.
fn compression_rows(n: usize) {
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let open = |path: &Path, compress: bool| {
        if !compress {
            SledBackend::create_uncompressed(path).unwrap();
        }
        let store = Store::open(config(path, Durability::Fsync)).unwrap();
        assert_eq!(SledBackend::is_compressed(path), compress);
        store
    };
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    let (p, docs) = phone_growth(&tmp.path().join("phone-plain"), 1_000, 10_000, false);
    let (c, _) = phone_growth(&tmp.path().join("phone-zstd"), 1_000, 10_000, true);
    rows.push((
        format!(
            "a phone's store after 10,000 edits to 1,000 records (documents {})",
            kib(docs)
        ),
        format!("{} ({:.2}x)", kib(p), p as f64 / docs as f64),
        format!("{} ({:.2}x)", kib(c), c as f64 / docs as f64),
        format!("{:.2}", c as f64 / p as f64),
    ));

    let plain = open(&tmp.path().join("create-plain"), false);
    let zstd = open(&tmp.path().join("create-zstd"), true);
    let (tp, tz) = gridsync_tests::alternating_creates(&plain, &zstd, 200);
    drop((plain, zstd));
    let (p, z) = (median(tp), median(tz));
    rows.push((
        "durable create of an issue (median of 200)".into(),
        fmt(p),
        fmt(z),
        format!("{:.2}", z.as_secs_f64() / p.as_secs_f64()),
    ));

    let server = gridsync_tests::temp_store("SRV");
    let grids = gridsync_tests::fill_twenty_grids(&server, n);
    let grids: Vec<&str> = grids.iter().map(String::as_str).collect();
    let (mut tp, mut tz, mut sp, mut sz) = (Vec::new(), Vec::new(), 0, 0);
    for rep in 0..5 {
        for (compress, times, size) in [(false, &mut tp, &mut sp), (true, &mut tz, &mut sz)] {
            let dir = tmp.path().join(format!("first-{compress}-{rep}"));
            let device = open(&dir, compress);
            let start = Instant::now();
            gridsync_tests::sync_in_process(&device, &server, &grids);
            times.push(start.elapsed());
            assert_eq!(device.len().unwrap(), n);
            drop(device);
            *size = dir_size(&dir);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let (p, z) = (median(tp), median(tz));
    rows.push((
        format!("first sync of {n} records into an empty store (median of 5)"),
        fmt(p),
        fmt(z),
        format!("{:.2}", z.as_secs_f64() / p.as_secs_f64()),
    ));
    rows.push((
        format!("that store on disk, per record ({n} records)"),
        format!("{:.2} KiB", sp as f64 / 1024.0 / n as f64),
        format!("{:.2} KiB", sz as f64 / 1024.0 / n as f64),
        format!("{:.2}", sz as f64 / sp as f64),
    ));

    println!("sled's compression (zstd) against an uncompressed store, same run");
    println!("| measurement | uncompressed | compressed | ratio |");
    println!("|---|---|---|---|");
    for (a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn config(path: &Path, durability: Durability) -> StoreConfig {
    let mut c = StoreConfig::new(path, "BENCH");
    c.durability = durability;
    c
}

fn build_dataset(path: &Path, n: usize) -> Duration {
    let start = Instant::now();
    let store = Store::open(config(path, Durability::None)).unwrap();
    let grids = 40u32;
    for i in 0..n {
        let g = (i as u32) % grids;
        let id = store
            .create_issue(&worker(1), new_issue(i, g / 8, g))
            .unwrap();
        for k in 0..3 {
            add_note(
                &store,
                id,
                &worker(1),
                &format!("第{k}次走访：已与物业沟通，等待答复。"),
            );
        }
        if i % 4 == 0 {
            store
                .update_issue(
                    id,
                    &worker(1),
                    IssueOp::Transition {
                        to: IssueStatus::InProgress,
                        reason: String::new(),
                    },
                )
                .unwrap();
        }
    }
    drop(store);
    start.elapsed()
}

/// Child mode: open the store, report the time and peak memory.
fn open_only(path: &Path) {
    let start = Instant::now();
    let store = Store::open(config(path, Durability::Fsync)).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(store.loaded_documents().unwrap(), 0);
    println!(
        "{} {} {}",
        elapsed.as_nanos(),
        peak_rss_kib(None),
        store.len().unwrap()
    );
}

/// Child mode: load every document from its bytes (no store), report time.
fn load_all(path: &Path) {
    let db = gridsync_tests::raw_sled(path);
    let start = Instant::now();
    let mut n = 0;
    let mut current: Option<(Vec<u8>, automerge::Automerge)> = None;
    let mut docs = Vec::new();
    for item in db.iter() {
        let (k, v) = item.unwrap();
        match k[0] {
            b'd' => {
                if let Some((_, d)) = current.take() {
                    docs.push(d);
                }
                current = Some((k[1..17].to_vec(), automerge::Automerge::load(&v).unwrap()));
                n += 1;
            }
            b'c' => {
                if let Some((id, d)) = current.as_mut() {
                    if k[1..17] == id[..] {
                        d.load_incremental(&v).unwrap();
                    }
                }
            }
            _ => {}
        }
    }
    docs.extend(current.map(|(_, d)| d));
    let elapsed = start.elapsed();
    println!("{} {} {}", elapsed.as_nanos(), peak_rss_kib(None), n);
    drop(docs);
}

fn child(mode: &str, path: &Path) -> (Duration, u64, usize) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(mode)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (Duration::from_nanos(f[0]), f[1], f[2] as usize)
}

/// Prints the office search table for `store` (`n` issues; `held`: what
/// it holds in memory): each kind of query's median of 21 against a
/// status filter's. Returns the status filter's median.
fn search_table(store: &Store, n: usize, held: &str) -> Duration {
    let time = |q: &Query| {
        let mut times = Vec::new();
        let mut total = 0;
        for _ in 0..21 {
            let start = Instant::now();
            total = store.list(q).unwrap().total;
            times.push(start.elapsed());
        }
        (median(times), total)
    };
    let (base, base_total) = time(&Query::issues().status(IssueStatus::Reported));
    let mut phone = Query::issues();
    phone.phone = Some("13800000000".into());
    let queries = [
        (
            "a word every case has (楼道), first page of 50",
            Query::issues().search("楼道"),
        ),
        (
            "a partial word in one case (编号 12345)",
            Query::issues().search("编号 12345"),
        ),
        ("a word no case has (漏水)", Query::issues().search("漏水")),
        (
            "two words, one grid (楼道 照明, grid G7)",
            Query::issues().search("楼道 照明").grid("G7"),
        ),
        ("the reporter's phone, exactly", phone),
    ];
    println!(
        "\n| office search, {n} issues, {held} (medians of 21) | time | matched | vs. a status filter |"
    );
    println!("|---|---|---|---|");
    println!(
        "| a status filter, no search (the baseline) | {} | {base_total} | 1.00x |",
        fmt(base)
    );
    for (label, q) in queries {
        let (t, total) = time(&q);
        println!(
            "| {label} | {} | {total} | {:.2}x |",
            fmt(t),
            t.as_secs_f64() / base.as_secs_f64()
        );
    }
    base
}

/// Times the export of every case in `store` as `role` (median of 5), and
/// the most the process's memory grew during one.
fn export_row(store: &Store, role: gridsync_core::Role, who: &str, base: Duration) {
    let export = || {
        let (mut rows, mut bytes) = (0usize, 0usize);
        store
            .export_cases(
                &Query::issues(),
                role,
                |_| true,
                &|s| [s.street.clone(), s.community.clone(), s.grid.clone()],
                |row| {
                    rows += 1;
                    bytes += row.iter().map(|c| c.len() + 1).sum::<usize>();
                    Ok(())
                },
            )
            .unwrap();
        (rows, bytes)
    };
    let mut times = Vec::new();
    let (mut rows, mut bytes, mut grew) = (0, 0, 0u64);
    for _ in 0..5 {
        let before = gridsync_tests::rss_kib(None);
        let peak = std::sync::atomic::AtomicU64::new(before);
        let done = std::sync::atomic::AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(
                        gridsync_tests::rss_kib(None),
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            (rows, bytes) = export();
            times.push(start.elapsed());
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        grew = grew.max(peak.into_inner().saturating_sub(before));
    }
    let t = median(times);
    println!(
        "| export every case as rows, {who} (`export_cases`, what CSV and Excel stream) | {} | {} rows, {:.1} MiB of text | {:.2}x; memory grew at most {:.1} MiB |",
        fmt(t),
        rows - 1,
        bytes as f64 / (1 << 20) as f64,
        t.as_secs_f64() / base.as_secs_f64(),
        grew as f64 / 1024.0
    );
}

/// The office's search at `n` issues: each kind of query's median
/// against a plain list query (a status filter) over the same store, and
/// what keeping the texts adds to a create.
fn search_rows(n: usize) {
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let open = |name: &str, search: bool| {
        let mut c = config(&tmp.path().join(name), Durability::None);
        c.search = search;
        Store::open(c).unwrap()
    };
    // What a create costs with and without texts, alternating.
    let (with, without) = (open("with", true), open("without", false));
    let (mut t_with, mut t_without) = (Vec::new(), Vec::new());
    for i in 0..SAMPLES {
        for (store, times) in [(&with, &mut t_with), (&without, &mut t_without)] {
            let start = Instant::now();
            store.create_issue(&worker(1), new_issue(i, 1, 1)).unwrap();
            times.push(start.elapsed());
        }
    }
    drop((with, without));
    let store = open("search", true);
    let start = Instant::now();
    for i in 0..n {
        store
            .create_issue(
                &worker(1 + i as u32 % 50),
                new_issue(i, 1 + i as u32 % 5, 1 + i as u32 % 50),
            )
            .unwrap();
    }
    let filled = start.elapsed();
    let some = store.list(&Query::issues().page(0, 1)).unwrap().items[0]
        .number
        .clone();
    let (held, held_bytes) = store.search_texts_held();
    let base = search_table(
        &store,
        n,
        &format!(
            "{held} texts ({:.1} MiB) held in memory, the default budget",
            held_bytes as f64 / (1 << 20) as f64
        ),
    );
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        assert!(store.find_by_number(&some).unwrap().is_some());
        times.push(start.elapsed());
    }
    let t = median(times);
    println!(
        "| a case number, exactly (`find_by_number`) | {} | 1 | {:.2}x |",
        fmt(t),
        t.as_secs_f64() / base.as_secs_f64()
    );
    // The office's export of every case (what a CSV or Excel download
    // streams): time, and how much the process's memory grows meanwhile
    // (sampled every 2 ms), against holding the rows. The office's rows
    // carry the reporter's phone, read from the stored texts; a street's
    // do not, and read only memory.
    for (role, who) in [
        (gridsync_core::Role::Office, "the office's, with phones"),
        (gridsync_core::Role::Street, "a street's, without"),
    ] {
        export_row(&store, role, who, base);
    }
    // The same queries with no text held: every one a search needs is
    // read from the store (what a store too large for its budget does
    // for the texts it does not hold).
    drop(store);
    let mut c = config(&tmp.path().join("search"), Durability::None);
    c.search = true;
    c.search_cache_bytes = 0;
    let store = Store::open(c).unwrap();
    search_table(
        &store,
        n,
        "no text held in memory: each read from the store",
    );
    println!(
        "\ncreate, median of {SAMPLES}: {} keeping search texts, {} without ({:.2}x);          filling {n} issues took {:.1} s",
        fmt(median(t_with.clone())),
        fmt(median(t_without.clone())),
        median(t_with).as_secs_f64() / median(t_without).as_secs_f64(),
        filled.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--open-only") => return open_only(Path::new(&args[1])),
        Some("--load-all") => return load_all(Path::new(&args[1])),
        Some("--search-only") => return search_rows(100_000),
        Some("--compression-only") => return compression_rows(10_000),
        Some("--phone-only") => {
            // Just the phone-growth row (its own run takes a minute).
            let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
            let path = tmp.path().join("phone");
            let (phone, docs) = phone_growth(&path, 1_000, 10_000, true);
            println!(
                "a phone's store after 10,000 edits to 1,000 records: {} on disk, documents compacted {}: {:.2}x",
                kib(phone),
                kib(docs),
                phone as f64 / docs as f64
            );
            let (content, fresh) = sled_floor(&path, &tmp.path().join("fresh"));
            println!(
                "  what sled holds for it: {} of keys and values; the compacted documents and index alone, \
                 written to a fresh sled in one batch: {} on disk ({:.2}x the documents)",
                kib(content),
                kib(fresh),
                fresh as f64 / docs as f64
            );
            return;
        }
        _ => {}
    }
    let n: usize = std::env::var("GRIDSYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let data = tmp.path().join("store");
    eprintln!("building {n} issues (3 notes each, a quarter in progress)…");
    let built = build_dataset(&data, n);
    eprintln!("built in {:.1} s", built.as_secs_f64());

    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // Opening, in fresh processes so peak memory is the open's own.
    let (open_t, open_rss, count) = child("--open-only", &data);
    let (load_t, load_rss, loaded) = child("--load-all", &data);
    assert_eq!(count, n);
    assert_eq!(loaded, n);
    rows.push((
        format!("open store, {n} records"),
        fmt(open_t),
        format!("load all docs: {}", fmt(load_t)),
        format!(
            "{:.3} (peak RSS {} MiB vs {} MiB)",
            open_t.as_secs_f64() / load_t.as_secs_f64(),
            open_rss / 1024,
            load_rss / 1024
        ),
    ));

    let store = Store::open(config(&data, Durability::Fsync)).unwrap();
    let raw = RawSled::open(&tmp.path().join("raw"));

    // Queries, from the index only.
    let grid_q = Query::issues()
        .grid("G3")
        .open(true)
        .sort(Sort::DeadlineAsc)
        .page(0, 50);
    let comm_q = Query::issues().community("C2");
    let mut tq = Vec::new();
    let mut tc = Vec::new();
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let page = store.list(&grid_q).unwrap();
        tq.push(t.elapsed());
        assert_eq!(page.items.len(), page.total.min(50));
        let t = Instant::now();
        let counts = store.count_by_status(&comm_q).unwrap();
        tc.push(t.elapsed());
        assert!(!counts.is_empty());
    }
    assert_eq!(
        store.loaded_documents().unwrap(),
        0,
        "queries loaded documents"
    );
    rows.push((
        "first 50 open issues of a grid by deadline".into(),
        fmt(median(tq)),
        "limit 5 ms".into(),
        "0 documents loaded".into(),
    ));
    rows.push((
        "counts by status for a community".into(),
        fmt(median(tc)),
        "limit 5 ms".into(),
        "0 documents loaded".into(),
    ));

    // Create, durably, alternating with the raw floor.
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for i in 0..SAMPLES {
        let new = new_issue(n + i, 1, 1);
        let t = Instant::now();
        store.create_issue(&worker(1), new).unwrap();
        ours.push(t.elapsed());

        let t = Instant::now();
        let mut d = raw_issue(n + i);
        let bytes = d.save();
        raw.durable_insert(format!("d{i}").as_bytes(), bytes);
        floor.push(t.elapsed());
    }
    let (o, f) = (median(ours), median(floor));
    rows.push((
        "create an issue durably".into(),
        fmt(o),
        fmt(f),
        format!("{:.2} (limit 1.5)", o.as_secs_f64() / f.as_secs_f64()),
    ));

    // One status change, durably, on records already loaded (warm), against
    // a raw change of the same shape on an in-memory document.
    let ids: Vec<_> = store
        .list(
            &Query::issues()
                .status(IssueStatus::Reported)
                .page(0, SAMPLES),
        )
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.record_id())
        .collect();
    let mut raw_doc = raw_issue(0);
    raw_doc.save();
    let mut ours = Vec::new();
    let mut floor = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        store.heads(*id).unwrap(); // load it, as an app showing the case has
        let t = Instant::now();
        store
            .update_issue(
                *id,
                &worker(1),
                IssueOp::Transition {
                    to: IssueStatus::Accepted,
                    reason: String::new(),
                },
            )
            .unwrap();
        ours.push(t.elapsed());

        let t = Instant::now();
        let heads = raw_doc.get_heads();
        raw_event(&mut raw_doc);
        raw_doc.commit();
        let bytes = raw_doc.save_after(&heads);
        raw.durable_insert(format!("c{i}").as_bytes(), bytes);
        floor.push(t.elapsed());
    }
    let (o, f) = (median(ours), median(floor));
    rows.push((
        "one status change durably".into(),
        fmt(o),
        fmt(f),
        format!("{:.2} (limit 2)", o.as_secs_f64() / f.as_secs_f64()),
    ));

    // A phone's store over a working life: 10,000 edits to 1,000 records,
    // synced every 100 edits, against the compacted size of the documents.
    let (phone_bytes, docs_bytes) = phone_growth(&tmp.path().join("phone"), 1_000, 10_000, true);
    rows.push((
        "a phone's store after 10,000 edits to 1,000 records".into(),
        kib(phone_bytes),
        format!("compacted documents: {}", kib(docs_bytes)),
        format!("{:.2} (goal 1.3)", phone_bytes as f64 / docs_bytes as f64),
    ));

    println!("\n| measurement | gridsync (median) | floor / limit | ratio / note |");
    println!("|---|---|---|---|");
    for (a, b, c, d) in rows {
        println!("| {a} | {b} | {c} | {d} |");
    }
    println!(
        "\n{SAMPLES} samples per row; {n} records; dataset built in {:.1} s.",
        built.as_secs_f64()
    );
}
