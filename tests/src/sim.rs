//! A seeded simulation of one server and several devices running the real
//! store and protocol code, with an unreliable network and restarts.
//!
//! Each step, chosen by the seed, is a domain operation on a device
//! (records, notes, text edits, conflicting status changes, meetings with
//! action items), an office move on the server, a device restart, a device
//! going offline for a while, or a sync round over a network that may
//! lose the request, lose the response, deliver the request twice, deliver
//! a response twice, or hold a request back and deliver it later, after
//! newer ones (reordering). Every other device's store is encrypted at
//! rest (records and photos sealed under its key).
//! Crashes: a device may crash in the middle of a domain operation or of a
//! sync round, and the server in the middle of serving a request; the
//! crash is injected at a random write to sled (`Store::crash_after_writes`,
//! feature `failpoints`) and the store is then reopened from disk. The
//! server may also die between two requests served at once: a held-back
//! request applied while another device's round is served (between that
//! round's flush and its paging of the feed), the server restarting from
//! its files as they stood at that flush (`concurrent_crash`).
//! After the steps, every device syncs over a clean network until nothing
//! moves, and the run checks that:
//!
//! * every device holds exactly the server's records in its scope;
//! * devices agree with the server on every record they hold (heads, view,
//!   derived status and conflicts) and on query results for their grids;
//! * every write a device saw acknowledged reached the server exactly once
//!   (no note is lost or duplicated), and a write cut short by a crash
//!   reached it at most once.
//!
//! `cargo run -p gridsync-tests --bin gridsync-sim -- --seeds 1000` soaks;
//! a failure prints the one line that reproduces it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gridsync_core::files::{chunk_count, ChunkCheck, ChunkOutcome, FileHash, CHUNK_BYTES};
use gridsync_core::store::backend::Engine;
use gridsync_core::sync::{self, Client, Peer, ServerLimits};
use gridsync_core::AttachTo;
use gridsync_core::{
    ActionStatus, Durability, IssueOp, IssueStatus, ManualClock, MeetingOp, NewActionItem,
    RecordId, RecordScope, Status, Store, StoreConfig, TimelineKind,
};

use crate::{new_issue, new_meeting, office, worker};

pub use gridsync_server::demo::Rng;

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
    /// Devices crashed in the middle of a domain operation.
    pub device_crashes_in_ops: usize,
    /// Devices crashed in the middle of a sync round.
    pub device_crashes_in_sync: usize,
    /// Server crashes in the middle of serving a request.
    pub server_crashes: usize,
    /// Server crashes between two requests served at once: one flushed
    /// and answered, the other applied and lost.
    pub concurrent_crashes: usize,
    /// Requests held back and delivered after newer ones.
    pub reordered: usize,
    /// Responses a device applied twice.
    pub duplicated_responses: usize,
    /// Times a device went offline for a while.
    pub offline_periods: usize,
    pub moves: usize,
    pub records: usize,
    /// Records showing a status or register conflict after sync rounds
    /// (summed over rounds).
    pub conflicts_seen: usize,
    /// Files attached on devices.
    pub files_attached: usize,
    /// File transfers cut off part-way (taken up again later).
    pub files_cut: usize,
    /// Chunks damaged on the way (refused by the server, sent again).
    pub chunks_damaged: usize,
}

impl SimStats {
    /// Adds another run's counts to these.
    pub fn add(&mut self, o: &SimStats) {
        self.ops += o.ops;
        self.syncs += o.syncs;
        self.lost_requests += o.lost_requests;
        self.lost_responses += o.lost_responses;
        self.duplicated += o.duplicated;
        self.restarts += o.restarts;
        self.device_crashes_in_ops += o.device_crashes_in_ops;
        self.device_crashes_in_sync += o.device_crashes_in_sync;
        self.server_crashes += o.server_crashes;
        self.concurrent_crashes += o.concurrent_crashes;
        self.reordered += o.reordered;
        self.duplicated_responses += o.duplicated_responses;
        self.offline_periods += o.offline_periods;
        self.moves += o.moves;
        self.records += o.records;
        self.conflicts_seen += o.conflicts_seen;
        self.files_attached += o.files_attached;
        self.files_cut += o.files_cut;
        self.chunks_damaged += o.chunks_damaged;
    }
}

const GRIDS: [&str; 3] = ["G1", "G2", "G3"];

fn scope_of(grid: &str) -> RecordScope {
    RecordScope::new("S1", "C1", grid)
}

/// A store that can be restarted: a device, or the server.
struct Device {
    dir: PathBuf,
    code: String,
    /// Where its store lives (server nodes: a shared database).
    engine: Engine,
    store: Option<std::sync::Arc<Store>>,
    /// Grids this device may access (all three for an office device).
    grids: Vec<&'static str>,
    /// No sync before this step.
    offline_until: usize,
    /// Who the device is enrolled for (the server: the office).
    author: gridsync_core::Author,
    /// The highest cursor position the server has seen this device claim
    /// (what the server keeps per device; see `Peer::known_through`).
    claimed: std::cell::Cell<u64>,
}

impl Device {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("device store is open")
    }

    /// Closes the store (after a crash, whatever sled already holds is what
    /// a real crash there could leave) and opens it again from disk.
    fn restart(&mut self) -> Result<(), String> {
        self.store = None;
        self.store = Some(std::sync::Arc::new(reopen(
            &self.dir,
            &self.code,
            &self.engine,
        )?));
        Ok(())
    }

    fn allows(&self, s: &RecordScope) -> bool {
        in_grids(&self.grids, s)
    }
}

fn in_grids(grids: &[&str], s: &RecordScope) -> bool {
    s.street == "S1" && s.community == "C1" && grids.contains(&s.grid.as_str())
}

thread_local! {
    /// The simulated time every store of the running simulation reads.
    static CLOCK: std::cell::RefCell<Option<std::sync::Arc<ManualClock>>> =
        const { std::cell::RefCell::new(None) };
}

fn open(dir: &Path, code: &str, engine: &Engine) -> Result<Store, String> {
    let mut config = StoreConfig::new(dir, code);
    config.engine = engine.clone();
    if engine.is_shared() {
        // Server nodes on one database share one file area, as deployed.
        config.files_dir = Some(dir.with_file_name("server-files"));
    }
    config.durability = Durability::Flush;
    config.cache_capacity = 16;
    // Every other device's store is encrypted at rest (its key fixed by its
    // code, so a restart opens it): crashes, cut transfers and reopening
    // run on sealed stores too.
    if let Some(n) = code.strip_prefix('D').and_then(|n| n.parse::<u32>().ok()) {
        if n % 2 == 1 {
            let mut key = [0u8; 32];
            key[..code.len().min(32)].copy_from_slice(&code.as_bytes()[..code.len().min(32)]);
            config.key =
                Some(gridsync_core::StoreKey::from_bytes(&key).map_err(|e| e.to_string())?);
        }
    }
    if let Some(clock) = CLOCK.with(|c| c.borrow().clone()) {
        config.clock = clock;
    }
    Store::open(config).map_err(|e| format!("open {code}: {e}"))
}

/// Reopens a store just closed in this process. sled may hold its file
/// lock for a while after the last handle is dropped (until its deferred
/// clean-up has run); `Store::open` already waits briefly, and a restart
/// here waits longer rather than count that as a failure.
fn reopen(dir: &Path, code: &str, engine: &Engine) -> Result<Store, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match open(dir, code, engine) {
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

/// Whether an error is the crash a test injected.
fn crashed(e: &gridsync_core::Error) -> bool {
    matches!(e, gridsync_core::Error::Io(io) if io.to_string() == "simulated crash")
}

/// Arms a crash in the next operation on `store` with probability
/// `percent`, at one of its first `within` writes. Returns whether armed.
fn maybe_arm(store: &Store, rng: &mut Rng, percent: u64, within: usize) -> bool {
    if rng.chance(percent) {
        store.crash_after_writes(rng.below(within) as u64);
        true
    } else {
        false
    }
}

fn disarm(store: &Store) {
    store.crash_after_writes(u64::MAX);
}

/// The cursor position a request claims.
fn position_of(request: &[u8]) -> u64 {
    sync::decode_request(request).map_or(0, |r| r.cursor.position())
}

/// Runs one seeded simulation in `dir`.
pub fn run(seed: u64, config: SimConfig, dir: &Path) -> Result<SimStats, String> {
    run_on(seed, config, dir, None)
}

/// Runs one seeded simulation in `dir`; with `database`, the server is two
/// nodes on that PostgreSQL database (an empty one), each step's request
/// or office move going to either.
pub fn run_on(
    seed: u64,
    config: SimConfig,
    dir: &Path,
    database: Option<&str>,
) -> Result<SimStats, String> {
    let mut rng = Rng::new(seed);
    // Simulated time: every store reads this clock, which moves 40 s a
    // step, so deadlines pass and change times do not depend on how fast
    // the machine runs.
    let clock = ManualClock::new(1_790_000_000_000);
    CLOCK.with(|c| *c.borrow_mut() = Some(clock.clone()));
    let mut stats = SimStats::default();
    let engine = database.map_or(Engine::Sled, |url| Engine::Postgres(url.to_owned()));
    let mut servers: Vec<Device> = (0..if database.is_some() { 2 } else { 1 })
        .map(|n| {
            let dir = dir.join(format!("server-{n}"));
            Ok(Device {
                store: Some(std::sync::Arc::new(open(&dir, "SRV", &engine)?)),
                dir,
                code: "SRV".into(),
                engine: engine.clone(),
                grids: GRIDS.to_vec(),
                offline_until: 0,
                author: office(),
                claimed: Default::default(),
            })
        })
        .collect::<Result<_, String>>()?;
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
                store: Some(std::sync::Arc::new(open(&dir, &code, &Engine::Sled)?)),
                dir,
                code,
                engine: Engine::Sled,
                grids,
                offline_until: 0,
                author: worker(i as u32),
                claimed: Default::default(),
            })
        })
        .collect::<Result<_, String>>()?;
    // Records in creation order (ids are time-based; choices must not
    // depend on them), with the note texts written to each.
    let mut records: Vec<(RecordId, bool)> = Vec::new(); // (id, is_meeting)
    let mut notes: BTreeMap<RecordId, Vec<String>> = BTreeMap::new();
    let mut items: BTreeMap<RecordId, RecordId> = BTreeMap::new(); // meeting -> action item
                                                                   // Notes whose write was cut short by a crash: on the server at most once.
    let mut maybe_notes: BTreeMap<RecordId, Vec<String>> = BTreeMap::new();
    // Requests held back by the network: (device, request bytes).
    let mut delayed: Vec<(usize, Vec<u8>)> = Vec::new();
    // Every file a device attached (acknowledged), by hash: its bytes.
    let mut files: BTreeMap<FileHash, Vec<u8>> = BTreeMap::new();

    for step in 0..config.steps {
        clock.advance(40_000);
        // The node this step's server work goes to (one draw only when
        // there are two, so single-node seeds run as they always did).
        let node = if servers.len() > 1 {
            rng.below(servers.len())
        } else {
            0
        };
        let server = &mut servers[node];
        let d = rng.below(devices.len());
        match rng.below(100) {
            // A new issue (or meeting) in one of the device's grids.
            0..=7 => {
                let dev = &devices[d];
                let grid = dev.grids[rng.below(dev.grids.len())];
                let g: u32 = grid[1..].parse().unwrap_or(1);
                let armed = maybe_arm(dev.store(), &mut rng, 3, 3);
                let created = if rng.chance(20) {
                    let item = RecordId::new();
                    dev.store()
                        .convene_meeting(&dev.author, new_meeting(1, g, Vec::new()))
                        .and_then(|id| {
                            dev.store().act_on_meeting(
                                id,
                                &dev.author,
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
                        })
                        .map(|w| {
                            items.insert(w.id, item);
                            (w.id, true)
                        })
                } else {
                    dev.store()
                        .report_issue(&dev.author, new_issue(step, 1, g))
                        .map(|id| (id, false))
                };
                stats.ops += 1;
                match created {
                    Ok(record) => {
                        records.push(record);
                        if armed {
                            disarm(dev.store());
                        }
                    }
                    // A record cut short by a crash may or may not exist;
                    // it is not tracked (nothing acknowledged it).
                    Err(e) if crashed(&e) => {
                        devices[d].restart()?;
                        stats.device_crashes_in_ops += 1;
                    }
                    Err(e) => return Err(format!("step {step}: create: {e}")),
                }
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
                let who = devices[d].author.clone();
                let armed = maybe_arm(store, &mut rng, 3, 3);
                let mut note = None;
                let result = if is_meeting {
                    let item = items[&id];
                    let to = ActionStatus::ALL[rng.below(ActionStatus::ALL.len())];
                    match rng.below(3) {
                        0 => store.act_on_meeting(
                            id,
                            &who,
                            MeetingOp::AddAgreement(format!("共识 {step}")),
                        ),
                        1 => store.act_on_meeting(
                            id,
                            &who,
                            MeetingOp::TransitionAction {
                                item,
                                to,
                                reason: String::new(),
                            },
                        ),
                        _ => store.act_on_meeting(
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
                    match rng.below(7) {
                        6 => {
                            // A photo of a size around a chunk or two.
                            let size = 1 + rng.below(CHUNK_BYTES * 3 / 2);
                            let bytes = sim_file(seed, step, size);
                            store
                                .attach_file(
                                    AttachTo::Issue(id),
                                    &who,
                                    &mut &bytes[..],
                                    "image/jpeg",
                                    "",
                                    None,
                                    20 << 20,
                                )
                                .map(|_| {
                                    stats.files_attached += 1;
                                    files.insert(FileHash::of(&bytes), bytes);
                                    gridsync_core::Written { id, seq: None }
                                })
                        }
                        0 | 1 => {
                            let text = format!("note {seed}-{step}");
                            note = Some(text.clone());
                            store.act_on_issue(
                                id,
                                &who,
                                IssueOp::AddTimeline {
                                    kind: TimelineKind::Note,
                                    text,
                                },
                            )
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
                            // With a reason: returning and rejecting need one.
                            store.act_on_issue(
                                id,
                                &who,
                                IssueOp::Transition {
                                    to,
                                    reason: format!("step {step}"),
                                },
                            )
                        }
                        3 => {
                            let to = IssueStatus::ALL[rng.below(IssueStatus::ALL.len())];
                            store.act_on_issue(
                                id,
                                &who,
                                IssueOp::ResolveStatusConflict {
                                    to,
                                    reason: String::new(),
                                },
                            )
                        }
                        4 => store.act_on_issue(
                            id,
                            &who,
                            IssueOp::SetTitle(format!("标题 {}", rng.below(3))),
                        ),
                        _ => {
                            let mut text =
                                store.issue(id).map(|v| v.description).unwrap_or_default();
                            text.insert_str(0, &format!("[{step}]"));
                            store.act_on_issue(id, &who, IssueOp::EditDescription(text))
                        }
                    }
                };
                if armed {
                    disarm(store);
                }
                match result {
                    Ok(_) => {
                        if let Some(text) = note {
                            notes.entry(id).or_default().push(text);
                        }
                    }
                    // Moves the workflow or the worker's role does not allow
                    // are refused on the phone, before anything is written.
                    Err(
                        gridsync_core::Error::IllegalTransition { .. }
                        | gridsync_core::Error::NoConflict(_)
                        | gridsync_core::Error::Forbidden { .. }
                        // Moved out of the device's grid: kept only until
                        // its earlier edits are uploaded.
                        | gridsync_core::Error::OutOfScope { .. },
                    ) => {}
                    Err(e) if crashed(&e) => {
                        if let Some(text) = note {
                            maybe_notes.entry(id).or_default().push(text);
                        }
                        devices[d].restart()?;
                        stats.device_crashes_in_ops += 1;
                    }
                    Err(e) => return Err(format!("step {step}: edit on device {d}: {e}")),
                }
            }
            // An office move on the server.
            55..=58 => {
                let known: Vec<RecordId> = records
                    .iter()
                    .map(|r| r.0)
                    .filter(|id| server.store().meta(*id).ok().flatten().is_some())
                    .collect();
                if known.is_empty() {
                    continue;
                }
                let id = known[rng.below(known.len())];
                let to = scope_of(GRIDS[rng.below(GRIDS.len())]);
                server
                    .store()
                    .move_record(id, &office(), &to)
                    .map_err(|e| format!("step {step}: move: {e}"))?;
                stats.moves += 1;
            }
            // A device restart (its store closed and reopened from disk).
            59..=63 => {
                devices[d].restart()?;
                stats.restarts += 1;
            }
            // The device goes out of signal for a while.
            64..=65 => {
                devices[d].offline_until = step + 1 + rng.below(config.steps / 5 + 1);
                stats.offline_periods += 1;
            }
            // A request the network held back arrives now, after newer
            // ones; nobody is waiting for its answer any more.
            66..=67 => {
                if delayed.is_empty() {
                    continue;
                }
                let (from, request) = delayed.swap_remove(rng.below(delayed.len()));
                // (Server files copied at a flush: sled's crash image; on a
                // shared database a commit is the durable point, and the
                // feed serves committed entries only.)
                if database.is_none() && rng.chance(40) && devices[d].offline_until <= step {
                    concurrent_crash(server, &devices, from, &request, d, &mut stats)
                        .map_err(|e| format!("step {step}: {e}"))?;
                    continue;
                }
                let dev = &devices[from];
                let allow = |s: &RecordScope| dev.allows(s);
                let author = dev.author.clone();
                let peer = Peer {
                    actor: dev.store().actor(),
                    author: &author,
                    may_access: &allow,
                    known_through: dev.claimed.get(),
                };
                sync::serve_bytes(server.store(), &peer, &request, &ServerLimits::default())
                    .map_err(|e| format!("step {step}: late request of device {from}: {e}"))?;
                dev.claimed
                    .set(dev.claimed.get().max(position_of(&request)));
                stats.reordered += 1;
            }
            // A sync round, over a network that may fail.
            _ => {
                if devices[d].offline_until > step {
                    continue;
                }
                sync_round(
                    server,
                    &mut devices[d],
                    &mut rng,
                    &mut stats,
                    Some(Faults {
                        delayed: &mut delayed,
                        device: d,
                    }),
                )
                .map_err(|e| format!("step {step}: sync of device {d}: {e}"))?;
                transfer_files(server, &devices[d], &mut rng, &mut stats, true)
                    .map_err(|e| format!("step {step}: files of device {d}: {e}"))?;
            }
        }
    }

    // A clean network until nothing moves (devices alternating nodes).
    let server_print = |servers: &[Device]| -> Result<_, String> {
        for s in servers {
            s.store().follow().map_err(|e| e.to_string())?;
        }
        let print = crate::fingerprint(servers[0].store());
        for s in &servers[1..] {
            if crate::fingerprint(s.store()) != print {
                return Err("two server nodes differ after following".into());
            }
        }
        Ok(print)
    };
    for round in 0..20 {
        let before: Vec<_> = devices
            .iter()
            .map(|d| crate::fingerprint(d.store()))
            .collect();
        let server_before = server_print(&servers)?;
        for (i, d) in devices.iter_mut().enumerate() {
            let n = (i + round) % servers.len();
            sync_round(&mut servers[n], d, &mut rng, &mut stats, None)?;
        }
        let after: Vec<_> = devices
            .iter()
            .map(|d| crate::fingerprint(d.store()))
            .collect();
        if before == after && server_before == server_print(&servers)? {
            break;
        }
    }
    // Every device's files, over a clean network (to either node).
    for (i, d) in devices.iter().enumerate() {
        let n = i % servers.len();
        transfer_files(&servers[n], d, &mut rng, &mut stats, false)?;
        let left = d.store().unsent_files().map_err(|e| e.to_string())?;
        if !left.is_empty() {
            return Err(format!("device {i} could not send {left:?}"));
        }
    }
    let server = &servers[0];
    check(
        server.store(),
        &devices,
        &records,
        &notes,
        &maybe_notes,
        &mut stats,
    )?;
    check_files(server.store(), &files)?;
    Ok(stats)
}

/// The bytes of a simulated photo.
fn sim_file(seed: u64, step: usize, size: usize) -> Vec<u8> {
    let mut x = (seed << 20) ^ step as u64 ^ 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends the device's unsent files to the server chunk by chunk, as
/// `http::upload_files` does, through the same checks; with faults a
/// transfer may be cut off part-way or a chunk damaged on the way.
fn transfer_files(
    server: &Device,
    dev: &Device,
    rng: &mut Rng,
    stats: &mut SimStats,
    faults: bool,
) -> Result<(), String> {
    let e = |e: gridsync_core::Error| e.to_string();
    let allow = |s: &RecordScope| dev.allows(s);
    let area = server.store().files();
    for (hash, size) in dev.store().unsent_files().map_err(e)? {
        if !server
            .store()
            .file_accepts_upload(&hash, &allow)
            .map_err(e)?
        {
            // The record has not reached the server yet.
            continue;
        }
        let held = area.partial(&hash).map_err(e)?.held;
        let mut done = area.has(&hash);
        for n in (0..chunk_count(size)).filter(|n| !held.contains(n)) {
            if done {
                break;
            }
            if faults && rng.chance(15) {
                stats.files_cut += 1;
                return Ok(());
            }
            let bytes = dev.store().files().read_chunk(&hash, n).map_err(e)?;
            let check = ChunkCheck::of(&bytes);
            if faults && rng.chance(5) {
                let mut damaged = bytes.clone();
                damaged[0] ^= 1;
                match area.put_chunk(&hash, size, n, &damaged, Some(check)) {
                    Err(gridsync_core::Error::FileRejected { .. }) => stats.chunks_damaged += 1,
                    other => return Err(format!("a damaged chunk was taken: {other:?}")),
                }
            }
            done = area
                .put_chunk(&hash, size, n, &bytes, Some(check))
                .map_err(e)?
                == ChunkOutcome::Complete;
        }
        if done {
            dev.store().file_sent(&hash).map_err(e)?;
        }
    }
    Ok(())
}

/// Every file a device attached (acknowledged) is referenced by a record on
/// the server and is there exactly as written.
fn check_files(server: &Store, files: &BTreeMap<FileHash, Vec<u8>>) -> Result<(), String> {
    for (hash, bytes) in files {
        if server
            .file_refs(hash)
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            return Err(format!("no record on the server references file {hash}"));
        }
        let held = std::fs::read(server.files().path(hash))
            .map_err(|e| format!("file {hash} referenced but not on the server: {e}"))?;
        if held != *bytes {
            return Err(format!("file {hash} differs on the server"));
        }
    }
    Ok(())
}

/// The network's and the machines' misbehaviour during a sync round.
struct Faults<'a> {
    /// Where held-back requests go.
    delayed: &'a mut Vec<(usize, Vec<u8>)>,
    /// The syncing device's index.
    device: usize,
}

/// One sync of a device until it has nothing left, with faults if asked:
/// requests lost, held back or delivered twice, responses lost, the device
/// or the server crashing part-way (then restarted from disk).
fn sync_round(
    server: &mut Device,
    dev: &mut Device,
    rng: &mut Rng,
    stats: &mut SimStats,
    mut faults: Option<Faults<'_>>,
) -> Result<(), String> {
    let limits = ServerLimits::default();
    let page = if rng.chance(50) { 2048 } else { 1 << 20 };
    let mut client = Client::new(dev.store()).page_bytes(page);
    let fault = |rng: &mut Rng, percent: u64, on: bool| on && rng.chance(percent);
    let on = faults.is_some();
    for _ in 0..1000 {
        let device_armed = on && maybe_arm(dev.store(), rng, 8, 8);
        let request = match client.make_request() {
            Ok(r) => r,
            Err(e) if crashed(&e) => return crash_device(dev, stats),
            Err(e) => return Err(e.to_string()),
        };
        if fault(rng, 8, on) {
            stats.lost_requests += 1;
            return settle(dev, device_armed);
        }
        if let Some(f) = faults.as_mut().filter(|_| rng.chance(4)) {
            f.delayed.push((f.device, request));
            return settle(dev, device_armed);
        }
        let allow = |s: &RecordScope| dev.allows(s);
        let author = dev.author.clone();
        let peer = Peer {
            actor: dev.store().actor(),
            author: &author,
            may_access: &allow,
            known_through: dev.claimed.get(),
        };
        let server_armed = on && maybe_arm(server.store(), rng, 6, 4);
        let mut served = sync::serve_bytes(server.store(), &peer, &request, &limits);
        if served.is_ok() && fault(rng, 8, on) {
            // The request arrives twice; the device sees the second answer.
            stats.duplicated += 1;
            served = sync::serve_bytes(server.store(), &peer, &request, &limits);
        }
        let response = match served {
            Ok(r) => {
                dev.claimed
                    .set(dev.claimed.get().max(position_of(&request)));
                r
            }
            Err(e) if crashed(&e) => {
                // The server died part-way; the device sees no answer.
                server.restart()?;
                stats.server_crashes += 1;
                return settle(dev, device_armed);
            }
            Err(e) => return Err(e.to_string()),
        };
        if server_armed {
            disarm(server.store());
        }
        if fault(rng, 8, on) {
            stats.lost_responses += 1;
            return settle(dev, device_armed);
        }
        stats.syncs += 1;
        let more = match client.apply_response(&response) {
            Ok(more) => more,
            Err(e) if crashed(&e) => return crash_device(dev, stats),
            Err(e) => return Err(e.to_string()),
        };
        if fault(rng, 3, on) {
            // The same answer arrives twice (a retrying proxy, say).
            stats.duplicated_responses += 1;
            match client.apply_response(&response) {
                Ok(_) => {}
                Err(e) if crashed(&e) => return crash_device(dev, stats),
                Err(e) => return Err(format!("a repeated response: {e}")),
            }
        }
        if device_armed {
            disarm(dev.store());
        }
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

/// Two requests at once and a crash: the late request of device `from`
/// is applied while device `d`'s request is served, between its flush and
/// its paging of the feed, and the server dies before the late one's own
/// flush (the server's files as they stood at `d`'s flush are what it
/// restarts from). Device `d` receives its answer. With the feed served
/// to the in-memory head, `d` would be sent the lost entry and never get
/// the change that reuses its number; the final checks would catch it.
fn concurrent_crash(
    server: &mut Device,
    devices: &[Device],
    from: usize,
    late: &[u8],
    d: usize,
    stats: &mut SimStats,
) -> Result<(), String> {
    use gridsync_core::store::Incoming;
    let dev = &devices[d];
    let other = &devices[from];
    let late = sync::decode_request(late).map_err(|e| e.to_string())?;
    let mut client = Client::new(dev.store());
    let request = client.make_request().map_err(|e| e.to_string())?;
    let image = server.dir.with_extension("crash-image");
    let _ = std::fs::remove_dir_all(&image);
    let live = std::sync::Arc::downgrade(server.store.as_ref().ok_or("server closed")?);
    let (actor, author, grids) = (
        other.store().actor().clone(),
        other.author.clone(),
        other.grids.clone(),
    );
    let known = other.claimed.get();
    let (dir, to) = (server.dir.clone(), image.clone());
    server.store().after_next_durable(move || {
        let Some(store) = live.upgrade() else {
            return;
        };
        crate::copy_dir(&dir, &to);
        let allow = |s: &RecordScope| in_grids(&grids, s);
        let peer = Peer {
            actor: &actor,
            author: &author,
            may_access: &allow,
            known_through: known,
        };
        let limits = gridsync_core::ForeignLimits {
            actor: Some(actor.clone()),
            ..Default::default()
        };
        let incoming = Incoming {
            limits: &limits,
            peer: Some(&peer),
            known_through: known,
        };
        for push in &late.pushes {
            let _ = store.apply_changes_unflushed(
                RecordId::from_bytes(push.id),
                &push.changes,
                &incoming,
            );
        }
    });
    let allow = |s: &RecordScope| dev.allows(s);
    let author = dev.author.clone();
    let peer = Peer {
        actor: dev.store().actor(),
        author: &author,
        may_access: &allow,
        known_through: dev.claimed.get(),
    };
    let served = sync::serve_bytes(server.store(), &peer, &request, &ServerLimits::default());
    // Called off if the round never reached its flush.
    server.store().after_next_durable(|| {});
    if image.exists() {
        server.store = None;
        std::fs::remove_dir_all(&server.dir).map_err(|e| e.to_string())?;
        std::fs::rename(&image, &server.dir).map_err(|e| e.to_string())?;
        server.store = Some(std::sync::Arc::new(reopen(
            &server.dir,
            &server.code,
            &server.engine,
        )?));
        stats.concurrent_crashes += 1;
    }
    let response = served.map_err(|e| format!("a request served beside a late one: {e}"))?;
    dev.claimed
        .set(dev.claimed.get().max(position_of(&request)));
    client
        .apply_response(&response)
        .map_err(|e| e.to_string())?;
    stats.syncs += 1;
    Ok(())
}

/// Ends a round early: a crash armed on the device and not reached is
/// called off.
fn settle(dev: &Device, armed: bool) -> Result<(), String> {
    if armed {
        disarm(dev.store());
    }
    Ok(())
}

fn crash_device(dev: &mut Device, stats: &mut SimStats) -> Result<(), String> {
    dev.restart()?;
    stats.device_crashes_in_sync += 1;
    Ok(())
}

fn check(
    server: &Store,
    devices: &[Device],
    records: &[(RecordId, bool)],
    notes: &BTreeMap<RecordId, Vec<String>>,
    maybe_notes: &BTreeMap<RecordId, Vec<String>>,
    stats: &mut SimStats,
) -> Result<(), String> {
    stats.records = server.len().map_err(|e| e.to_string())?;
    // Each store is consistent with itself (log, documents, index).
    for (name, store) in std::iter::once(("server".to_string(), server)).chain(
        devices
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("device {i}"), d.store())),
    ) {
        let problems = store.verify().map_err(|e| e.to_string())?;
        if !problems.is_empty() {
            return Err(format!("{name} is inconsistent: {problems:?}"));
        }
    }
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
        for text in maybe_notes.get(id).into_iter().flatten() {
            let n = v.timeline.iter().filter(|t| &t.text == text).count();
            if n > 1 {
                return Err(format!(
                    "note {text:?} on {id}, cut short by a crash, is on the server {n} times"
                ));
            }
        }
    }
    for (i, d) in devices.iter().enumerate() {
        let store = d.store();
        if !store.pending().map_err(|e| e.to_string())?.is_empty() {
            // Say why: what the server answers to its next push.
            let mut client = Client::new(store);
            let why = client
                .make_request()
                .ok()
                .and_then(|request| {
                    let allow = |s: &RecordScope| d.allows(s);
                    let peer = Peer {
                        actor: store.actor(),
                        author: &d.author,
                        may_access: &allow,
                        known_through: d.claimed.get(),
                    };
                    let bytes =
                        sync::serve_bytes(server, &peer, &request, &ServerLimits::default())
                            .ok()?;
                    let response = sync::decode_response(&bytes).ok()?;
                    Some(
                        response
                            .refused
                            .iter()
                            .map(|r| r.message.clone())
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                })
                .unwrap_or_default();
            return Err(format!(
                "device {i} still has unacknowledged changes: {why}"
            ));
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
            let explain = |id: &RecordId| {
                let log: Vec<String> = server
                    .log_since(0, usize::MAX)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| e.id == *id)
                    .map(|e| {
                        let moved = e
                            .moved_from
                            .map(|m| format!("move from {} ", m.grid))
                            .unwrap_or_default();
                        let mine = if e.from.as_ref() == Some(store.actor()) {
                            "mine"
                        } else {
                            ""
                        };
                        format!("{}:{moved}{mine}", e.seq)
                    })
                    .collect();
                format!(
                    "{id} log {log:?} cursor {:?} (server scope {:?}, device scope {:?}, pending {}, \
                     want-list bytes {:?}, drop-list bytes {:?})",
                    Client::new(store).cursor(),
                    server.scope_of(*id).ok().flatten().map(|s| s.grid),
                    store.scope_of(*id).ok().flatten().map(|s| s.grid),
                    store
                        .pending()
                        .map(|p| p.iter().any(|p| p.id == *id))
                        .unwrap_or(false),
                    store.sync_state("want_snapshots").ok().flatten().map(|d| d.len()),
                    store.sync_state("drops").ok().flatten().map(|d| d.len()),
                )
            };
            let extra: Vec<String> = held
                .iter()
                .filter(|id| !expected.contains(id))
                .map(explain)
                .collect();
            let missing: Vec<String> = expected
                .iter()
                .filter(|id| !held.contains(id))
                .map(explain)
                .collect();
            return Err(format!(
                "device {i} (grids {:?}) holds {} records, its scope has {}; extra: {extra:?}; missing: {missing:?}",
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
        // Query results: the same answers from the device as from the
        // server, for each of its grids.
        for grid in &d.grids {
            for q in [
                gridsync_core::Query::issues().grid(*grid).open(true),
                gridsync_core::Query::default().grid(*grid).conflict(true),
                gridsync_core::Query::meetings().grid(*grid),
            ] {
                let on_device = store.list(&q).map_err(|e| e.to_string())?;
                let on_server = server.list(&q).map_err(|e| e.to_string())?;
                if on_device != on_server {
                    return Err(format!(
                        "device {i} answers {q:?} differently from the server"
                    ));
                }
            }
            let q = gridsync_core::Query::default().grid(*grid);
            if store.count_by_status(&q).ok() != server.count_by_status(&q).ok() {
                return Err(format!("device {i} counts statuses in {grid} differently"));
            }
        }
    }
    Ok(())
}
