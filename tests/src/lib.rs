//! Shared helpers for gridsync's integration tests: realistic fixtures,
//! store set-up and change exchange between replicas.

#![allow(clippy::unwrap_used)]

use std::path::Path;

pub mod engine;
pub mod fuzz;
pub mod receiver;
pub mod server;
pub mod sim;

use gridsync_core::{
    Author, Durability, IssueKind, Location, NewIssue, NewMeeting, RecordId, Reporter, Role,
    Source, Store, StoreConfig, Urgency,
};

/// A grid worker author: `w{n}`, the worker id the test organisation
/// gives the worker of grid `G{n}` (see `server::TestServer::setup_org`),
/// so that a device enrolled for that worker writes as it.
pub fn worker(n: u32) -> Author {
    Author::new(format!("w{n}"), Role::GridWorker)
}

/// A community office worker `w{n}` (a role that may accept, reject and
/// handle), for devices that act for community staff in process.
pub fn staff(n: u32) -> Author {
    Author::new(format!("w{n}"), Role::Community)
}

/// An office author.
pub fn office() -> Author {
    Author::new("office-1", Role::Office)
}

/// A location in street S1, community `C{c}`, grid `G{g}`.
pub fn location(c: u32, g: u32) -> Location {
    Location {
        street: "S1".into(),
        community: format!("C{c}"),
        grid: format!("G{g}"),
        building: format!("{}-{}-{}", 1 + g % 9, 1 + c % 4, 101 + g),
        address: format!("幸福路 {} 号", 10 + g),
        geo: None,
    }
}

/// About 300 characters of Chinese text, as a grid worker writes it.
/// (`description(0).chars().count()` is checked in the fixture test.)
pub fn description(i: usize) -> String {
    let base =
        "居民反映小区三号楼楼道照明灯长期损坏，夜间出行存在安全隐患，老人和儿童多次在楼梯间摔倒。\
        物业公司接到投诉后一直未予维修，居民多次拨打电话无人处理。网格员上门核实情况属实，\
        楼道内共有六盏灯不亮，电线老化明显，存在漏电风险。居民希望尽快更换灯具并检修线路，\
        同时要求物业公开维修基金使用情况。网格员已拍照留存，并与物业负责人初步沟通，\
        对方表示需要业主委员会同意后才能动用维修基金。下一步拟召集居民代表、物业公司和街道城管科\
        召开议事协商会，明确维修责任和时限，并由网格员跟踪落实情况，及时向居民反馈处理进展。\
        如物业仍不履行义务，将引导居民通过法律途径解决，同时报送社区党委备案，确保问题得到妥善处置。";
    format!("{base}（编号 {i}）")
}

/// A realistic new issue in grid `G{g}` of community `C{c}`.
pub fn new_issue(i: usize, c: u32, g: u32) -> NewIssue {
    let kinds = IssueKind::ALL;
    let urgencies = Urgency::ALL;
    NewIssue {
        // Phones record patrol findings and walk-ins; 12345 work orders
        // come in through the server's intake only.
        source: if i % 3 == 0 {
            Source::WalkIn
        } else {
            Source::GridPatrol
        },
        external_ref: None,
        original_statement: "楼道灯坏了很久了，晚上根本看不见路。".into(),
        capture_geo: None,
        title: format!("楼道照明损坏 #{i}"),
        kind: kinds[i % kinds.len()],
        category: format!("facilities.{}", i % 7),
        urgency: urgencies[i % urgencies.len()],
        reporter: Reporter {
            name: "张女士".into(),
            phone: "13800000000".into(),
            anonymous: false,
            may_call_back: true,
        },
        location: location(c, g),
        description: description(i),
        report: true,
    }
}

/// A meeting in grid `G{g}` of community `C{c}`.
pub fn new_meeting(c: u32, g: u32, issues: Vec<RecordId>) -> NewMeeting {
    NewMeeting {
        topic: "三号楼楼道照明议事会".into(),
        level: gridsync_core::MeetingLevel::Grid,
        format: gridsync_core::MeetingFormat::InPerson,
        venue: "社区议事厅".into(),
        group_ref: String::new(),
        convener: "office-1".into(),
        scheduled_at: Some(1_790_000_000_000),
        location: location(c, g),
        agenda: "一、通报情况；二、各方发言；三、形成措施。".into(),
        issue_ids: issues,
    }
}

/// Opens an on-disk store.
///
/// Inside [`engine::on_postgres`] the store lives in a PostgreSQL database
/// of its own (the same path, the same database).
pub fn open_store(path: &Path, code: &str) -> Store {
    let mut config = StoreConfig::new(path, code);
    config.engine = engine::engine_for(path);
    Store::open(config).unwrap()
}

/// Opens an in-memory store (no durability; for convergence tests).
///
/// Inside [`engine::on_postgres`]: a fresh PostgreSQL database instead
/// (commits without waiting for the disk).
pub fn temp_store(code: &str) -> Store {
    let mut config = StoreConfig::new("", code);
    if engine::on_postgres_now() {
        config.engine = gridsync_core::store::backend::Engine::Postgres(engine::fresh_database());
        config.durability = Durability::Flush;
    } else {
        config.temporary = true;
        config.durability = Durability::None;
    }
    Store::open(config).unwrap()
}

/// Sends every change `from` has and `to` lacks, record by record.
/// Returns the number of new changes `to` took in.
pub fn exchange(from: &Store, to: &Store) -> usize {
    let mut taken = 0;
    for id in from.record_ids().unwrap() {
        let have = to.heads(id).unwrap_or_default();
        let bytes = from.changes_since(id, &have).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let merged = to.apply_changes(id, &bytes, &Default::default()).unwrap();
        taken += merged.new_changes;
    }
    taken
}

/// Exchanges in both directions between every pair until nothing moves.
pub fn sync_all(stores: &[&Store]) {
    loop {
        let mut moved = 0;
        for a in stores {
            for b in stores {
                if !std::ptr::eq(*a, *b) {
                    moved += exchange(a, b);
                }
            }
        }
        if moved == 0 {
            return;
        }
    }
}

/// Splits concatenated Automerge change chunks into one byte vector per
/// change (for delivering changes one by one, in any order).
pub fn split_changes(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 9 < bytes.len() {
        let mut len: usize = 0;
        let mut i = pos + 9;
        let mut shift = 0;
        loop {
            let b = bytes[i];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = i + len;
        out.push(bytes[pos..end].to_vec());
        pos = end;
    }
    out
}

/// Adds a timeline note to an issue.
pub fn add_note(store: &Store, id: RecordId, author: &Author, text: &str) {
    store
        .update_issue(
            id,
            author,
            gridsync_core::IssueOp::AddTimeline {
                kind: gridsync_core::TimelineKind::Note,
                text: text.into(),
            },
        )
        .unwrap();
}

/// Syncs a device store with a server store in process (no HTTP), as a
/// device whose scope is the given grids.
pub fn sync_in_process(
    device: &Store,
    server: &Store,
    grids: &[&str],
) -> gridsync_core::sync::SyncReport {
    sync_in_process_as(device, server, grids, &worker(1))
}

/// Like [`sync_in_process`], for a device enrolled for `author`.
pub fn sync_in_process_as(
    device: &Store,
    server: &Store,
    grids: &[&str],
    author: &Author,
) -> gridsync_core::sync::SyncReport {
    use gridsync_core::sync::{self, Client, Peer, ServerLimits};
    let may = |s: &gridsync_core::RecordScope| grids.contains(&s.grid.as_str());
    let peer = Peer {
        actor: device.actor(),
        author,
        may_access: &may,
        known_through: 0,
    };
    Client::new(device)
        .run(|req| sync::serve_bytes(server, &peer, &req, &ServerLimits::default()))
        .unwrap()
}

/// Moves an issue to `to` as a grid worker.
pub fn advance(
    store: &Store,
    id: RecordId,
    to: gridsync_core::IssueStatus,
) -> gridsync_core::Result<gridsync_core::Written> {
    store.update_issue(
        id,
        &worker(1),
        gridsync_core::IssueOp::Transition {
            to,
            reason: String::new(),
        },
    )
}

/// What a store holds, to show a refused input changed nothing: its
/// change-log head and every record's heads.
pub fn fingerprint(store: &Store) -> (u64, Vec<(RecordId, Vec<gridsync_core::ChangeHash>)>) {
    let heads = store
        .record_ids()
        .unwrap()
        .into_iter()
        .map(|id| (id, store.heads(id).unwrap()))
        .collect();
    (store.log_head().unwrap(), heads)
}

/// Every issue's full view, oldest first (for comparing replicas).
pub fn all_issue_views(store: &Store) -> Vec<gridsync_core::IssueView> {
    store
        .list(
            &gridsync_core::Query::issues()
                .sort(gridsync_core::Sort::CreatedAsc)
                .page(0, usize::MAX),
        )
        .unwrap()
        .items
        .iter()
        .map(|m| store.issue(m.record_id()).unwrap())
        .collect()
}

/// The path of `/proc/<pid>/<file>` (this process's: `None`).
pub fn proc_file(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// The CPU time process `pid` (this process: `None`) has used so far, in
/// user and kernel mode together, in milliseconds (0 when unreadable);
/// the kernel counts it in clock ticks, so differences are exact to a
/// tick (10 ms at the usual 100 Hz).
pub fn cpu_ms(pid: Option<u32>) -> f64 {
    let Ok(stat) = std::fs::read_to_string(proc_file(pid, "stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from the
    // third: utime and stime are the 14th and 15th.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 * 1000.0 / hz as f64
}

/// A process's peak resident memory in KiB (`VmHWM`), 0 if unknown.
pub fn peak_rss_kib(pid: Option<u32>) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// The resident memory of process `pid` (this process: `None`) now, KiB.
pub fn rss_kib(pid: Option<u32>) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A KiB figure of `/proc/<pid>/status` (0 when unreadable).
fn status_kib(pid: Option<u32>, field: &str) -> u64 {
    std::fs::read_to_string(proc_file(pid, "status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// sled itself at a closed store's `path`, opened as the store was
/// created (compressed or not: sled refuses the other) — or, for a new
/// path, as a new store is — for tests that damage or inspect the
/// engine's entries under a store, and for benches' raw floors.
pub fn raw_sled(path: &Path) -> sled::Db {
    sled::Config::new()
        .path(path)
        .use_compression(gridsync_core::store::backend::SledBackend::is_compressed(
            path,
        ))
        .open()
        .unwrap()
}

/// Times `reps` durable creates of an issue on each of two stores,
/// alternating between them (so that both see the same machine), for
/// benches that compare two ways of keeping a store.
pub fn alternating_creates(
    a: &Store,
    b: &Store,
    reps: usize,
) -> (Vec<std::time::Duration>, Vec<std::time::Duration>) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..reps {
        for (store, times) in [(a, &mut ta), (b, &mut tb)] {
            let start = std::time::Instant::now();
            store
                .create_issue(&worker(1), new_issue(i, 1, 1 + (i % 20) as u32))
                .unwrap();
            times.push(start.elapsed());
        }
    }
    (ta, tb)
}

/// Creates `n` issues in `server` spread over grids G1..G20, and returns
/// those grids' names: a first sync's worth of records for benches.
pub fn fill_twenty_grids(server: &Store, n: usize) -> Vec<String> {
    for i in 0..n {
        server
            .create_issue(&worker(1), new_issue(i, 1, 1 + (i % 20) as u32))
            .unwrap();
    }
    (1..=20).map(|g| format!("G{g}")).collect()
}

/// The bytes of every file under `path` (a store's size on disk).
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_size(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

/// Copies a directory tree (a store's files: a backup, or the image a
/// crash would leave when taken right after a flush).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fixture_description_is_about_300_characters() {
        let n = super::description(0).chars().count();
        assert!((280..=320).contains(&n), "{n}");
    }
}
