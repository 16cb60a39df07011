//! What live queries cost a phone's sync: two device stores of 10,000
//! records each sync the same 50 changed records from a server store in
//! process, one with 200 live queries registered, one with none (the
//! baseline, measured in the same run, reps alternating). Prints a table.
//!
//! `cargo bench -p gridsync-tests --bench live` (`GRIDSYNC_BENCH_RECORDS`
//! for another size).
//!
//! "sync + live" runs from the start of the sync until the last live query
//! has been evaluated and called back (a query registered last that every
//! write affects: it is evaluated last); "sync" is the call alone.

#![allow(clippy::unwrap_used)]

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridsync_core::store::Watched;
use gridsync_core::{Durability, Query, Sort, Store, StoreConfig};
use gridsync_tests::{add_note, new_issue, office, sync_in_process};

const GRIDS: u32 = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn store(dir: &std::path::Path, name: &str) -> Arc<Store> {
    let mut config = StoreConfig::new(dir.join(name), name);
    config.durability = Durability::Flush;
    config.search = true;
    Arc::new(Store::open(config).unwrap())
}

/// 200 queries a phone's screens might hold: per grid, ten lists.
fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    for g in 1..=GRIDS {
        let grid = Some(format!("G{g}"));
        let base = || {
            let mut q = Query::issues();
            q.grid = grid.clone();
            q.limit = 50;
            q
        };
        let mut variants = Vec::new();
        let mut q = base();
        q.open = Some(true);
        q.sort = Sort::DeadlineAsc;
        variants.push(q);
        for status in ["reported", "in_progress", "handled"] {
            let mut q = base();
            q.statuses = vec![status.into()];
            variants.push(q);
        }
        let mut q = base();
        q.overdue = Some(true);
        variants.push(q);
        let mut q = base();
        q.due_soon = Some(true);
        variants.push(q);
        let mut q = base();
        q.text = Some("楼道".into());
        variants.push(q);
        let mut q = base();
        q.conflict = Some(true);
        variants.push(q);
        let mut q = base();
        q.sort = Sort::UpdatedDesc;
        q.limit = 20;
        variants.push(q);
        let mut q = Query::meetings();
        q.grid = grid.clone();
        variants.push(q);
        out.extend(variants);
    }
    out
}

fn main() {
    let n: usize = std::env::var("GRIDSYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let reps = 15;
    let changed = 50;
    let dir = tempfile::tempdir().unwrap();
    let server = store(dir.path(), "SRV");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let g = 1 + (i as u32 % GRIDS);
        ids.push(server.create_issue(&office(), new_issue(i, 1, g)).unwrap());
    }
    let grids: Vec<String> = (1..=GRIDS).map(|g| format!("G{g}")).collect();
    let grids: Vec<&str> = grids.iter().map(String::as_str).collect();
    let plain = store(dir.path(), "P1");
    let watched = store(dir.path(), "P2");
    sync_in_process(&plain, &server, &grids);
    sync_in_process(&watched, &server, &grids);

    let (tx, rx) = mpsc::channel::<Instant>();
    let mut registered = Vec::new();
    for q in queries() {
        registered.push(
            watched
                .watch(Watched::List(Box::new(q)), Box::new(|_| {}))
                .unwrap(),
        );
    }
    // The sentinel: every write changes it, and it is evaluated last.
    let mut all = Query::issues();
    all.sort = Sort::UpdatedDesc;
    all.limit = 1;
    registered.push(
        watched
            .watch(
                Watched::List(Box::new(all)),
                Box::new(move |_| {
                    let _ = tx.send(Instant::now());
                }),
            )
            .unwrap(),
    );
    // The first pages.
    rx.recv_timeout(Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    while rx.try_recv().is_ok() {}

    let mut base = Vec::new();
    let mut with_sync = Vec::new();
    let mut with_total = Vec::new();
    let mut seed = 7u64;
    for rep in 0..reps {
        for k in 0..changed {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = ids[(seed >> 33) as usize % n];
            add_note(
                &server,
                id,
                &office(),
                &format!("第 {rep} 轮 {k} 号回访记录"),
            );
        }
        let t = Instant::now();
        let report = sync_in_process(&plain, &server, &grids);
        base.push(t.elapsed());
        assert!(report.pulled >= 1);
        let t = Instant::now();
        sync_in_process(&watched, &server, &grids);
        with_sync.push(t.elapsed());
        let done = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        with_total.push(done.duration_since(t));
    }
    let (b, s, l) = (median(base), median(with_sync), median(with_total));
    println!("\n| measurement ({n} records, {changed} changed per sync, {reps} reps, medians) | time | ratio to the baseline |");
    println!("|---|---|---|");
    println!("| sync, no live queries (baseline) | {} | 1.00× |", ms(b));
    println!(
        "| sync, 201 live queries: the call | {} | {:.2}× |",
        ms(s),
        s.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "| sync, 201 live queries: until every query is evaluated and called back | {} | {:.2}× (goal ≤ 1.5×) |",
        ms(l),
        l.as_secs_f64() / b.as_secs_f64()
    );
    for id in registered {
        watched.unwatch(id);
    }
}
