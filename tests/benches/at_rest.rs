//! What encryption at rest costs a phone: a durable create of an issue
//! (fsync, the default) and the first sync of 10,000 records into an empty
//! store, on an encrypted store against a plain one in the same run, reps
//! alternating. Prints a table with medians and the ratio (goal ≤ 1.2×).
//!
//! `cargo bench -p gridsync-tests --bench at_rest`
//! (`GRIDSYNC_BENCH_RECORDS` for another size).
//!
//! The first sync runs in process (no HTTP): what is measured is the
//! store's work, which is what encryption adds to.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use gridsync_core::{Durability, Store, StoreConfig, StoreKey};
use gridsync_tests::sync_in_process;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A phone's store, as the FFI opens it.
fn phone(path: &Path, key: Option<&StoreKey>) -> Store {
    let mut config = StoreConfig::new(path, "P1");
    config.search = true;
    config.key = key.cloned();
    Store::open(config).unwrap()
}

fn main() {
    let n: usize = std::env::var("GRIDSYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let root = tempfile::tempdir().unwrap();
    let key = StoreKey::generate().unwrap();

    // Durable creates, alternating between the two stores.
    let plain = phone(&root.path().join("plain"), None);
    let sealed = phone(&root.path().join("sealed"), Some(&key));
    let (p, s) = gridsync_tests::alternating_creates(&plain, &sealed, 200);
    drop((plain, sealed));
    let create = (median(p), median(s));

    // The server's records.
    let mut config = StoreConfig::new(root.path().join("server"), "SRV");
    config.durability = Durability::None;
    config.tag_own_changes = true;
    let server = Store::open(config).unwrap();
    let grids = gridsync_tests::fill_twenty_grids(&server, n);
    let grids: Vec<&str> = grids.iter().map(String::as_str).collect();
    let (mut p, mut s) = (Vec::new(), Vec::new());
    for rep in 0..5 {
        for (name, k, times) in [("p", None, &mut p), ("s", Some(&key), &mut s)] {
            let dir = root.path().join(format!("first-{name}-{rep}"));
            let device = phone(&dir, k);
            let start = Instant::now();
            let report = sync_in_process(&device, &server, &grids);
            times.push(start.elapsed());
            assert_eq!(device.len().unwrap(), n, "{report:?}");
            drop(device);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let first = (median(p), median(s));

    println!("encryption at rest ({n} records; medians; encrypted / plain, goal ≤ 1.2×)");
    println!("| operation | plain | encrypted | ratio |");
    println!("|---|---|---|---|");
    for (what, (plain, sealed)) in [
        ("durable create of an issue", create),
        ("first sync of every record", first),
    ] {
        println!(
            "| {what} | {} | {} | {:.2}× |",
            ms(plain),
            ms(sealed),
            sealed.as_secs_f64() / plain.as_secs_f64()
        );
    }
}
