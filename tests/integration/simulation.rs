//! The deterministic simulation (see `gridsync_tests::sim`) over 500 seeds,
//! in two halves that run in parallel. A failure names the seed and the
//! command that replays it.

use gridsync_tests::sim::{self, SimConfig};

const CONFIG: SimConfig = SimConfig {
    devices: 6,
    steps: 80,
};

fn run_seeds(seeds: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    for seed in seeds {
        let dir = tempfile::tempdir().unwrap();
        if let Err(e) = sim::run(seed, CONFIG, dir.path()) {
            failures.push(format!(
                "seed {seed}: {e}\n  reproduce: cargo run -p gridsync-tests --bin gridsync-sim -- --seed {seed} --devices {} --steps {}",
                CONFIG.devices, CONFIG.steps
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn simulation_seeds_0_to_249() {
    run_seeds(0..250);
}

#[test]
fn simulation_seeds_250_to_499() {
    run_seeds(250..500);
}

/// The server as two nodes on one PostgreSQL database, every request and
/// office move going to either (fewer seeds: each needs a database).
#[test]
fn simulation_two_server_nodes_seeds_0_to_59() {
    let mut failures = Vec::new();
    for seed in 0..60 {
        gridsync_tests::engine::on_postgres(|| {
            let dir = tempfile::tempdir().unwrap();
            let db = gridsync_tests::engine::fresh_database();
            if let Err(e) = sim::run_on(seed, CONFIG, dir.path(), Some(&db)) {
                failures.push(format!(
                    "seed {seed}: {e}\n  reproduce: cargo run -p gridsync-tests --bin gridsync-sim -- --seed {seed} --devices {} --steps {} --two-nodes",
                    CONFIG.devices, CONFIG.steps
                ));
            }
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_run_exercises_every_fault() {
    // Guards the simulation itself: runs that inject no faults, moves or
    // restarts would pass without testing anything. Four seeds together
    // must show every kind.
    let mut stats = sim::SimStats::default();
    for seed in 7..11 {
        let dir = tempfile::tempdir().unwrap();
        let s = sim::run(
            seed,
            SimConfig {
                devices: 8,
                steps: 300,
            },
            dir.path(),
        )
        .unwrap();
        stats.add(&s);
    }
    assert!(
        stats.lost_requests > 0 && stats.lost_responses > 0 && stats.duplicated > 0,
        "{stats:?}"
    );
    assert!(
        stats.moves > 0 && stats.restarts > 0 && stats.records > 0,
        "{stats:?}"
    );
    assert!(
        stats.device_crashes_in_ops > 0
            && stats.device_crashes_in_sync > 0
            && stats.server_crashes > 0
            && stats.concurrent_crashes > 0,
        "a crash kind never happened: {stats:?}"
    );
    assert!(
        stats.reordered > 0 && stats.offline_periods > 0 && stats.duplicated_responses > 0,
        "{stats:?}"
    );
    assert!(
        stats.conflicts_seen > 0,
        "no status or register conflict arose: {stats:?}"
    );
    assert!(
        stats.files_attached > 0 && stats.files_cut > 0 && stats.chunks_damaged > 0,
        "files were not attached, cut off and damaged: {stats:?}"
    );
}
