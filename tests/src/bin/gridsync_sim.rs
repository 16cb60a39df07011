//! Soak the deterministic simulation: `gridsync-sim [--seeds N] [--from S]
//! [--devices D] [--steps K] [--two-nodes]`, or replay one run with
//! `--seed S`. `--two-nodes` runs the server as two nodes on PostgreSQL (a
//! fresh database per seed on `GRIDSYNC_TEST_POSTGRES`).

use gridsync_tests::sim::{self, SimConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let config = SimConfig {
        devices: get("--devices").unwrap_or(8) as usize,
        steps: get("--steps").unwrap_or(150) as usize,
    };
    let (from, count) = match get("--seed") {
        Some(seed) => (seed, 1),
        None => (get("--from").unwrap_or(0), get("--seeds").unwrap_or(100)),
    };
    let mut failed = 0;
    for seed in from..from + count {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("cannot make a temporary directory: {e}");
                std::process::exit(2);
            }
        };
        let two_nodes = args.iter().any(|a| a == "--two-nodes");
        let ran = if two_nodes {
            gridsync_tests::engine::on_postgres(|| {
                let db = gridsync_tests::engine::fresh_database();
                sim::run_on(seed, config, dir.path(), Some(&db))
            })
        } else {
            sim::run(seed, config, dir.path())
        };
        match ran {
            Ok(stats) => {
                if count == 1 {
                    println!("seed {seed}: ok {stats:?}");
                }
            }
            Err(e) => {
                failed += 1;
                println!(
                    "seed {seed} FAILED: {e}\n  reproduce: cargo run -p gridsync-tests --bin gridsync-sim -- --seed {seed} --devices {} --steps {}{}",
                    config.devices,
                    config.steps,
                    if args.iter().any(|a| a == "--two-nodes") { " --two-nodes" } else { "" }
                );
            }
        }
    }
    println!("{} passed, {failed} failed", count - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
