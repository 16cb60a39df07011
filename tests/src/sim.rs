//! A seeded simulation of one server and several devices running the real
//! store and protocol code, with an unreliable network and restarts.
//!
//! Each step, chosen by the seed, is a domain operation on a device
//! (records, notes, text edits, conflicting status changes, meetings with
//! action items), an office move on the server, a device restart, or a
//! sync round over a network that may lose the request, lose the response,
//! or deliver the request twice. After the steps, every device syncs over a
//! clean network until nothing moves, and the run checks that:
//!
//! * every device holds exactly the server's records in its scope;
//! * devices agree with the server on every record they hold (heads, view,
//!   derived status and conflicts);
//! * every write a device saw acknowledged, and every write at all, reached
//!   the server (no note is lost or duplicated).
//!
//! `cargo run -p gridsync-tests --bin gridsync-sim -- --seeds 1000` soaks;
//! a failure prints the one line that reproduces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gridsync_core::sync::{self, Client, Peer, ServerLimits};
use gridsync_core::{
    ActionStatus, Durability, IssueOp, IssueStatus, MeetingOp, NewActionItem, RecordId,
    RecordScope, Status, Store, StoreConfig,
};

use crate::{add_note, new_issue, new_meeting, office, worker};

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// How big a run is.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub devices: usize,
    pub steps: usize,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub ops: usize,
    pub syncs: usize,
    pub lost_requests: usize,
    pub lost_responses: usize,
    pub duplicated: usize,
    pub restarts: usize,
    pub moves: usize,
    pub records: usize,
    /// Records showing a status or register conflict after sync rounds
    /// (summed over rounds).
    pub conflicts_seen: usize,
}

const GRIDS: [&str; 3] = ["G1", "G2", "G3"];

fn scope_of(grid: &str) -> RecordScope {
    RecordScope::new("S1", "C1", grid)
}

struct Device {
    dir: PathBuf,
    code: String,
    store: Option<Store>,
    /// Grids this device may access (all three for an office device).
    grids: Vec<&'static str>,
}

impl Device {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("device store is open")
    }

    fn allows(&self, s: &RecordScope) -> bool {
        s.street == "S1" && s.community == "C1" && self.grids.contains(&s.grid.as_str())
    }
}

fn open(dir: &Path, code: &str) -> Result<Store, String> {
    let mut config = StoreConfig::new(dir, code);
    config.durability = Durability::Flush;
    config.cache_capacity = 16;
    Store::open(config).map_err(|e| format!("open {code}: {e}"))
}

/// Reopens a store just closed in this process. sled may hold its file
/// lock for a while after the last handle is dropped (until its deferred
/// clean-up has run); `Store::open` already waits briefly, and a restart
/// here waits longer rather than count that as a failure.
fn reopen(dir: &Path, code: &str) -> Result<Store, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match open(dir, code) {
            Ok(store) => return Ok(store),
            Err(e) if e.contains("could not acquire lock") => {
                last = e;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Runs one seeded simulation in `dir`.
pub fn run(seed: u64, config: SimConfig, dir: &Path) -> Result<SimStats, String> {
    let mut rng = Rng::new(seed);
    let mut stats = SimStats::default();
    let server = open(&dir.join("server"), "SRV")?;
    let mut devices: Vec<Device> = (0..config.devices)
        .map(|i| {
            let grids = if i % 4 == 3 {
                GRIDS.to_vec()
            } else {
                vec![GRIDS[i % GRIDS.len()]]
            };
            let code = format!("D{i}");
            let dir = dir.join(&code);
            Ok(Device {
                store: Some(open(&dir, &code)?),
                dir,
                code,
                grids,
            })
        })
        .collect::<Result<_, String>>()?;
    // Records in creation order (ids are time-based; choices must not
    // depend on them), with the note texts written to each.
    let mut records: Vec<(RecordId, bool)> = Vec::new(); // (id, is_meeting)
    let mut notes: BTreeMap<RecordId, Vec<String>> = BTreeMap::new();
    let mut items: BTreeMap<RecordId, RecordId> = BTreeMap::new(); // meeting -> action item

    for step in 0..config.steps {
        let d = rng.below(devices.len());
        match rng.below(100) {
            // A new issue (or meeting) in one of the device's grids.
            0..=7 => {
                let dev = &devices[d];
                let grid = dev.grids[rng.below(dev.grids.len())];
                let g: u32 = grid[1..].parse().unwrap_or(1);
                if rng.chance(20) {
                    let id = dev
                        .store()
                        .create_meeting(&office(), new_meeting(1, g, Vec::new()))
                        .map_err(|e| format!("step {step}: create meeting: {e}"))?;
                    let item = RecordId::new();
                    dev.store()
                        .update_meeting(
                            id,
                            &office(),
                            MeetingOp::AddActionItem {
                                item,
                                new: NewActionItem {
                                    text: "跟进".into(),
                                    issue_id: None,
                                    owner_party: "物业".into(),
                                    due: None,
                                },
                            },
                        )
                        .map_err(|e| format!("step {step}: add action item: {e}"))?;
                    items.insert(id, item);
                    records.push((id, true));
                } else {
                    let id = dev
                        .store()
                        .create_issue(&worker(d as u32), new_issue(step, 1, g))
                        .map_err(|e| format!("step {step}: create issue: {e}"))?;
                    records.push((id, false));
                }
                stats.ops += 1;
            }
            // An edit on a record the device holds.
            8..=54 => {
                // A record this device holds: mostly one of the latest few,
                // so devices collide.
                let store = devices[d].store();
                let held: Vec<(RecordId, bool)> = records
                    .iter()
                    .copied()
                    .filter(|(id, _)| store.meta(*id).ok().flatten().is_some())
                    .collect();
                if held.is_empty() {
                    continue;
                }
                let pick = if rng.chance(70) {
                    held.len() - 1 - rng.below(held.len().min(4))
                } else {
                    rng.below(held.len())
                };
                let (id, is_meeting) = held[pick];
                stats.ops += 1;
                let who = worker(d as u32);
                let result = if is_meeting {
                    let item = items[&id];
                    let to = ActionStatus::ALL[rng.below(ActionStatus::ALL.len())];
                    match rng.below(3) {
                        0 => store.update_meeting(
                            id,
                            &who,
                            MeetingOp::AddAgreement(format!("共识 {step}")),
                        ),
                        1 => store.update_meeting(
                            id,
                            &who,
                            MeetingOp::TransitionAction {
                                item,
                                to,
                                reason: String::new(),
                            },
                        ),
                        _ => store.update_meeting(
                            id,
                            &who,
                            MeetingOp::ResolveActionConflict {
                                item,
                                to,
                                reason: String::new(),
                            },
                        ),
                    }
                } else {
                    match rng.below(6) {
                        0 | 1 => {
                            let text = format!("note {seed}-{step}");
                            add_note(store, id, &who, &text);
                            notes.entry(id).or_default().push(text);
                            Ok(gridsync_core::Written { id, seq: None })
                        }
                        2 => {
                            // Mostly a move the workflow allows from here.
                            let current = store
                                .issue(id)
                                .map(|v| v.status)
                                .unwrap_or(IssueStatus::Draft);
                            let allowed: Vec<IssueStatus> = IssueStatus::ALL
                                .iter()
                                .copied()
                                .filter(|to| current.allows(*to))
                                .collect();
                            let to = if !allowed.is_empty() && rng.chance(80) {
                                allowed[rng.below(allowed.len())]
                            } else {
                                IssueStatus::ALL[rng.below(IssueStatus::ALL.len())]
                            };
                            store.update_issue(
                                id,
                                &who,
                                IssueOp::Transition {
                                    to,
                                    reason: String::new(),
                                },
                            )
                        }
                        3 => {
                            let to = IssueStatus::ALL[rng.below(IssueStatus::ALL.len())];
                            store.update_issue(
                                id,
                                &who,
                                IssueOp::ResolveStatusConflict {
                                    to,
                                    reason: String::new(),
                                },
                            )
                        }
                        4 => store.update_issue(
                            id,
                            &who,
                            IssueOp::SetTitle(format!("标题 {}", rng.below(3))),
                        ),
                        _ => {
                            let mut text =
                                store.issue(id).map(|v| v.description).unwrap_or_default();
                            text.insert_str(0, &format!("[{step}]"));
                            store.update_issue(id, &who, IssueOp::EditDescription(text))
                        }
                    }
                };
                match result {
                    Ok(_)
                    | Err(
                        gridsync_core::Error::IllegalTransition { .. }
                        | gridsync_core::Error::NoConflict(_),
                    ) => {}
                    Err(e) => return Err(format!("step {step}: edit on device {d}: {e}")),
                }
            }
            // An office move on the server.
            55..=58 => {
                let known: Vec<RecordId> = records
                    .iter()
                    .map(|r| r.0)
                    .filter(|id| server.meta(*id).ok().flatten().is_some())
                    .collect();
                if known.is_empty() {
                    continue;
                }
                let id = known[rng.below(known.len())];
                let to = scope_of(GRIDS[rng.below(GRIDS.len())]);
                server
                    .move_record(id, &office(), &to)
                    .map_err(|e| format!("step {step}: move: {e}"))?;
                stats.moves += 1;
            }
            // A device restart (its store closed and reopened from disk).
            59..=63 => {
                let dev = &mut devices[d];
                dev.store = None;
                dev.store = Some(reopen(&dev.dir, &dev.code)?);
                stats.restarts += 1;
            }
            // A sync round, over a network that may fail.
            _ => {
                sync_round(&server, &devices[d], &mut rng, &mut stats, true)
                    .map_err(|e| format!("step {step}: sync of device {d}: {e}"))?;
            }
        }
    }

    // A clean network until nothing moves.
    for _ in 0..20 {
        let before: Vec<_> = devices
            .iter()
            .map(|d| crate::fingerprint(d.store()))
            .collect();
        let server_before = crate::fingerprint(&server);
        for d in &devices {
            sync_round(&server, d, &mut rng, &mut stats, false)?;
        }
        let after: Vec<_> = devices
            .iter()
            .map(|d| crate::fingerprint(d.store()))
            .collect();
        if before == after && server_before == crate::fingerprint(&server) {
            break;
        }
    }
    check(&server, &devices, &records, &notes, &mut stats)?;
    Ok(stats)
}

/// One sync of a device until it has nothing left, with faults if asked.
fn sync_round(
    server: &Store,
    dev: &Device,
    rng: &mut Rng,
    stats: &mut SimStats,
    faults: bool,
) -> Result<(), String> {
    let allow = |s: &RecordScope| dev.allows(s);
    let peer = Peer {
        actor: dev.store().actor(),
        may_access: &allow,
    };
    let limits = ServerLimits::default();
    let page = if rng.chance(50) { 2048 } else { 1 << 20 };
    let mut client = Client::new(dev.store()).page_bytes(page);
    for _ in 0..1000 {
        let request = client.make_request().map_err(|e| e.to_string())?;
        if faults && rng.chance(10) {
            stats.lost_requests += 1;
            return Ok(());
        }
        let mut response =
            sync::serve_bytes(server, &peer, &request, &limits).map_err(|e| e.to_string())?;
        if faults && rng.chance(10) {
            // The request arrives twice; the device sees the second answer.
            stats.duplicated += 1;
            response =
                sync::serve_bytes(server, &peer, &request, &limits).map_err(|e| e.to_string())?;
        }
        if faults && rng.chance(10) {
            stats.lost_responses += 1;
            return Ok(());
        }
        stats.syncs += 1;
        let more = client
            .apply_response(&response)
            .map_err(|e| e.to_string())?;
        stats.conflicts_seen += dev
            .store()
            .count(&gridsync_core::Query::default().conflict(true))
            .map_err(|e| e.to_string())?;
        if !more {
            return Ok(());
        }
    }
    let pending = dev.store().pending().map(|p| p.len()).unwrap_or(0);
    let wants = dev
        .store()
        .sync_state("want_snapshots")
        .ok()
        .flatten()
        .map(|w| w.len())
        .unwrap_or(0);
    Err(format!(
        "sync did not finish in 1000 rounds (pending {pending}, want-list bytes {wants}, cursor {:?})",
        Client::new(dev.store()).cursor()
    ))
}

fn check(
    server: &Store,
    devices: &[Device],
    records: &[(RecordId, bool)],
    notes: &BTreeMap<RecordId, Vec<String>>,
    stats: &mut SimStats,
) -> Result<(), String> {
    stats.records = server.len().map_err(|e| e.to_string())?;
    // Every record and every note reached the server, exactly once.
    for (id, is_meeting) in records {
        if *is_meeting {
            server
                .meeting(*id)
                .map_err(|e| format!("meeting {id} missing on the server: {e}"))?;
            continue;
        }
        let v = server
            .issue(*id)
            .map_err(|e| format!("issue {id} missing on the server: {e}"))?;
        for text in notes.get(id).into_iter().flatten() {
            let n = v.timeline.iter().filter(|t| &t.text == text).count();
            if n != 1 {
                return Err(format!("note {text:?} on {id} is on the server {n} times"));
            }
        }
    }
    for (i, d) in devices.iter().enumerate() {
        let store = d.store();
        if !store.pending().map_err(|e| e.to_string())?.is_empty() {
            return Err(format!("device {i} still has unacknowledged changes"));
        }
        // Exactly the server's records in its scope.
        let mut expected = Vec::new();
        for id in server.record_ids().map_err(|e| e.to_string())? {
            let scope = server
                .scope_of(id)
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if d.allows(&scope) {
                expected.push(id);
            }
        }
        let held = store.record_ids().map_err(|e| e.to_string())?;
        if held != expected {
            let extra: Vec<String> = held
                .iter()
                .filter(|id| !expected.contains(id))
                .map(|id| {
                    let log: Vec<String> = server
                        .log_since(0, usize::MAX)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|e| e.id == *id)
                        .map(|e| format!("{}:{}{}", e.seq, e.moved_from.map(|m| format!("move from {} ", m.grid)).unwrap_or_default(), if e.from.as_ref() == Some(store.actor()) { "mine" } else { "" }))
                        .collect();
                    format!(
                        "{id} log {log:?} cursor {:?} (server scope {:?}, device scope {:?}, pending {}, drops {:?})",
                        Client::new(store).cursor(),
                        server.scope_of(*id).ok().flatten().map(|s| s.grid),
                        store.scope_of(*id).ok().flatten().map(|s| s.grid),
                        store.pending().map(|p| p.iter().any(|p| p.id == *id)).unwrap_or(false),
                        store.sync_state("drops").ok().flatten().map(|d| d.len()),
                    )

                })
                .collect();
            return Err(format!(
                "device {i} (grids {:?}) holds {} records, its scope has {}; extra: {extra:?}",
                d.grids,
                held.len(),
                expected.len()
            ));
        }
        for id in held {
            let mut a = server.heads(id).map_err(|e| e.to_string())?;
            let mut b = store.heads(id).map_err(|e| e.to_string())?;
            a.sort();
            b.sort();
            if a != b {
                let missing = |from: &Store, other: &[gridsync_core::ChangeHash]| {
                    from.changes_since(id, other)
                        .map(|b| crate::split_changes(&b).len())
                        .unwrap_or(0)
                };
                return Err(format!(
                    "device {i} and the server differ on {id}: the device lacks {} of the server's changes, \
                     the server lacks {} of the device's",
                    missing(server, &b),
                    missing(store, &a)
                ));
            }
            let same = match server
                .meta(id)
                .map_err(|e| e.to_string())?
                .and_then(|m| m.record_kind())
            {
                Some(gridsync_core::RecordKind::Meeting) => {
                    server.meeting(id).ok() == store.meeting(id).ok()
                }
                _ => server.issue(id).ok() == store.issue(id).ok(),
            };
            if !same {
                return Err(format!("device {i} derives a different view of {id}"));
            }
            if store.meta(id).ok().flatten().map(|m| m.scope())
                != server.meta(id).ok().flatten().map(|m| m.scope())
            {
                return Err(format!("device {i} indexes {id} under another scope"));
            }
        }
    }
    Ok(())
}
