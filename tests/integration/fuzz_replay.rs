//! Replays every fuzz input kept in the repository through the same
//! harnesses the fuzz targets run (`gridsync_tests::fuzz`): the seeds, the
//! corpus the fuzzer grew, and the inputs that once crashed (kept under
//! `fuzz/regressions/<target>/` once fixed). The long fuzzing runs stay out
//! of CI; what they found does not.

use std::panic::{catch_unwind, AssertUnwindSafe};

use gridsync_tests::fuzz::{self, TARGETS};

fn harness(target: &str) -> fn(&[u8]) {
    match target {
        "sync_request" => fuzz::sync_request,
        "foreign_changes" => fuzz::foreign_changes,
        "office_json" => fuzz::office_json,
        other => panic!("no harness for {other}"),
    }
}

fn replay(target: &str) {
    let run = harness(target);
    let root = fuzz::fuzz_dir();
    let mut inputs = 0;
    let mut failures = Vec::new();
    for kind in ["seeds", "corpus", "regressions"] {
        let dir = root.join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        files.sort();
        for file in files {
            // A fuzzer running meanwhile replaces corpus files; one that
            // vanished after the listing is not an input any more.
            let Ok(data) = std::fs::read(&file) else {
                continue;
            };
            inputs += 1;
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(format!(
                    "{kind}/{target}/{}",
                    file.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(inputs >= 5, "{target}: only {inputs} inputs found");
    assert!(failures.is_empty(), "{target} fails on {failures:?}");
}

#[test]
fn sync_request_inputs() {
    replay("sync_request");
}

#[test]
fn foreign_changes_inputs() {
    replay("foreign_changes");
}

#[test]
fn office_json_inputs() {
    replay("office_json");
}

#[test]
fn every_target_is_replayed() {
    for target in TARGETS {
        harness(target);
    }
}
