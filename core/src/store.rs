//! The durable record store: Automerge documents in sled, with a metadata
//! index, a local change log and the bookkeeping sync needs.
//!
//! # Layout
//!
//! Everything lives in sled's default tree under one-byte key prefixes, so
//! that a single `apply_batch` writes a record's bytes, its index entry, its
//! log entry and its sync bookkeeping atomically:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `m` | name | store metadata (actor, counters, format version) |
//! | `d` | record id | compacted snapshot (Automerge `save`) |
//! | `c` | record id, chunk no (u32 BE) | incremental change bytes |
//! | `i` | record id | [`RecordMeta`] and chunk accounting (bincode) |
//! | `l` | sequence (u64 BE) | change-log entry: record id, change hashes, origin |
//! | `p` | record id | log sequence of the latest local change the server has not acknowledged |
//! | `h` | record id | the heads the server is known to have |
//! | `s` | record id | the record's authoritative scope (street, community, grid) |
//!
//! Big-endian sequence numbers sort in order, so "what changed after N" is a
//! range scan.
//!
//! # Durability
//!
//! A write returns only after `apply_batch` and `flush`, and (with
//! [`Durability::Fsync`], the default) an `fdatasync` of sled's data file
//! and of any new blob file through handles of our own: sled's flush uses
//! `sync_file_range` on Linux, which does not survive a power cut, and it
//! never syncs its blob files.
//!
//! # Memory
//!
//! Documents are loaded on demand and kept in a bounded LRU cache. The
//! metadata index is held in memory in full (a few hundred bytes per
//! record); opening a store reads the index, not the documents.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::num::NonZeroUsize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use automerge::transaction::{CommitOptions, Transaction};
use automerge::{ActorId, Automerge, ChangeHash, ReadDoc};
use bincode::{Decode, Encode};

use crate::audit::{self, Peer};
use crate::doc;
use crate::error::{Error, Result};
use crate::foreign::{self, ForeignLimits};
use crate::ids::{Author, RecordId, RecordKind};
use crate::intake::{self, Intake, Taker, WorkOrder};
use crate::issue::{self, IssueOp, IssueView, NewIssue};
use crate::meeting::{self, MeetingOp, MeetingView, NewMeeting};
use crate::model::Ctx;
use crate::policy::{self, Action};
use crate::query::{self, Page, Query, RecordMeta, RecordScope};
use crate::workflow::IssueStatus;

const P_META: u8 = b'm';
const P_SNAPSHOT: u8 = b'd';
const P_CHUNK: u8 = b'c';
const P_INDEX: u8 = b'i';
const P_LOG: u8 = b'l';
const P_PENDING: u8 = b'p';
const P_SERVER_HEADS: u8 = b'h';
const P_SCOPE: u8 = b's';

const META_FORMAT: &[u8] = b"format";
const META_ACTOR: &[u8] = b"actor";
const META_CASE_COUNTER: &[u8] = b"case_counter";
const META_MEETING_COUNTER: &[u8] = b"meeting_counter";
/// The key work orders' ids are derived with (see `crate::intake`).
const META_INTAKE_KEY: &[u8] = b"intake_key";
/// The change log's identity (16 random bytes): renewed when the log is
/// replaced by another (a restore), so devices can tell.
const META_LOG_ID: &[u8] = b"log_id";
/// Earlier logs this one continues, each with the last sequence the two
/// share (a restore keeps the backup's prefix of the log it was taken from).
const META_LOG_ANCESTORS: &[u8] = b"log_ancestors";
/// In a backup: the last sequence the live log had made durable when the
/// copy was taken (its own log never hands those numbers out again).
const META_BACKUP_SHARED: &[u8] = b"backup_shared_through";

/// The on-disk format version of this store.
///
/// * 1 — the first.
/// * 2 — index entries list the fields holding values this build does not
///   know (`RecordMeta::unrecognized`). Migrated from 1 in place.
pub const STORE_FORMAT: u64 = 2;

/// The largest snapshot accepted from another replica.
pub const MAX_SNAPSHOT_BYTES: usize = 8 << 20;

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn sync_state_key(name: &str) -> Vec<u8> {
    let mut k = key(P_META, b"sync.");
    k.extend_from_slice(name.as_bytes());
    k
}

fn chunk_key(id: RecordId, n: u32) -> Vec<u8> {
    let mut k = key(P_CHUNK, id.as_bytes());
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 16 << 20 }>()
}

/// How hard a write works to survive a crash before it returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// sled flush plus fdatasync of the data and blob files: survives
    /// process kill and power loss.
    #[default]
    Fsync,
    /// sled flush only: survives a killed process, not a power cut.
    Flush,
    /// No flush: for tests and in-memory use only.
    None,
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// A short code unique to this device (given at enrollment). Case and
    /// meeting numbers are `{code}-{n}`, so offline numbering never collides.
    pub device_code: String,
    /// How many documents to keep loaded.
    pub cache_capacity: usize,
    pub durability: Durability,
    /// Keep everything in memory and delete it on drop (tests).
    pub temporary: bool,
    /// Tag every change this store makes with an HMAC under its secret (see
    /// `tag`), so that devices can hand them back after a restore: the
    /// server's store does; a device's has no use for it.
    pub tag_own_changes: bool,
    /// Tests: stop a format migration, as a crash would, after deriving
    /// this many index entries and before writing any.
    #[cfg(feature = "failpoints")]
    pub stop_migration_after: Option<usize>,
}

impl StoreConfig {
    pub fn new(path: impl Into<PathBuf>, device_code: impl Into<String>) -> Self {
        StoreConfig {
            path: path.into(),
            device_code: device_code.into(),
            cache_capacity: 256,
            durability: Durability::Fsync,
            temporary: false,
            tag_own_changes: false,
            #[cfg(feature = "failpoints")]
            stop_migration_after: None,
        }
    }
}

/// Where a change-log entry's changes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Origin {
    /// Made by an operation on this store.
    Local,
    /// Merged from another replica.
    Remote,
    /// The record replaced whole by [`Store::rebase_onto_unflushed`]: the
    /// entry names every change the record now has, and changes named by
    /// earlier entries may be gone (re-authored).
    Rebased,
}

/// One entry of the store's change log: which record received which new
/// changes. An entry with no hashes records a whole record imported from
/// a trusted server without being loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub id: RecordId,
    pub hashes: Vec<ChangeHash>,
    pub origin: Origin,
    /// The replica that pushed these changes, when known (server side: the
    /// pushing device's actor), so they are not sent back to it.
    pub from: Option<ActorId>,
    /// Set when this entry moved the record: its scope before the move.
    pub moved_from: Option<RecordScope>,
    /// The new changes' bytes (empty for a record imported whole).
    pub changes: Vec<u8>,
}

#[derive(Encode, Decode)]
struct StoredLogEntry {
    id: [u8; 16],
    hashes: Vec<[u8; 32]>,
    origin: Origin,
    from: Option<Vec<u8>>,
    moved_from: Option<RecordScope>,
    changes: Vec<u8>,
}

/// Chunk accounting for one record; local to this replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
struct Storage {
    snapshot_len: u64,
    chunks_len: u64,
    /// Chunk numbers in use are `first_chunk..next_chunk`.
    first_chunk: u32,
    next_chunk: u32,
}

/// A record's scope table entry.
#[derive(Clone, Debug, Default, Encode, Decode)]
struct StoredScope {
    current: RecordScope,
    /// Scopes an office move took it out of, with the log sequence of the
    /// move.
    former: Vec<FormerScope>,
}

/// A scope a record was moved out of.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
struct FormerScope {
    scope: RecordScope,
    /// The change-log sequence of the move. Devices that had not reached
    /// it may still upload what they wrote before they learned of it.
    moved_at: u64,
}

/// The scope entry as the first release wrote it (former scopes without
/// the move's sequence).
#[derive(Decode)]
struct StoredScopeV1 {
    current: RecordScope,
    former: Vec<RecordScope>,
}

impl StoredScope {
    fn decode(bytes: &[u8]) -> std::result::Result<StoredScope, bincode::error::DecodeError> {
        match bincode::decode_from_slice::<StoredScope, _>(bytes, bincode_config()) {
            Ok((s, used)) if used == bytes.len() => Ok(s),
            other => {
                let v1 = bincode::decode_from_slice::<StoredScopeV1, _>(bytes, bincode_config());
                match (v1, other) {
                    (Ok((v1, used)), _) if used == bytes.len() => Ok(StoredScope {
                        current: v1.current,
                        // When these moves happened is unknown: edits from
                        // their former scopes stay accepted, as they were.
                        former: v1
                            .former
                            .into_iter()
                            .map(|scope| FormerScope {
                                scope,
                                moved_at: u64::MAX,
                            })
                            .collect(),
                    }),
                    (_, Err(e)) => Err(e),
                    (Err(e), _) => Err(e),
                    (_, Ok(_)) => Err(bincode::error::DecodeError::Other("trailing bytes")),
                }
            }
        }
    }

    /// Whether a sender may write to the record: it lies in the sender's
    /// scope, or it was moved out of it by a move the sender had not yet
    /// learned of (so what a worker saved before is never lost).
    fn admits(&self, admit: &dyn Fn(&RecordScope) -> bool, known_through: u64) -> bool {
        admit(&self.current)
            || self
                .former
                .iter()
                .any(|f| f.moved_at > known_through && admit(&f.scope))
    }

    /// Whether the record ever lay in the sender's scope (now or before a
    /// move): such a sender knows it exists, so telling it that changes it
    /// re-sends are already held reveals nothing.
    fn ever_admitted(&self, admit: &dyn Fn(&RecordScope) -> bool) -> bool {
        admit(&self.current) || self.former.iter().any(|f| admit(&f.scope))
    }
}

#[derive(Encode, Decode)]
struct StoredIndex {
    meta: RecordMeta,
    storage: Storage,
}

/// Store format 1's index entry, read by the migration to format 2: what
/// it needs of it (the record id, the change time, the chunk accounting),
/// decoded from the layout `RecordMeta` had then. (`Facts` has not changed
/// since; a change to it freezes its format 1 layout here too.)
mod format1 {
    use bincode::{Decode, Encode};

    use super::Storage;
    use crate::query::Facts;

    #[derive(Encode, Decode)]
    struct RecordMeta {
        id: [u8; 16],
        kind: String,
        number: String,
        title: String,
        street: String,
        community: String,
        grid: String,
        status: String,
        open: bool,
        deadline: Option<i64>,
        assignee: Option<String>,
        urgency: Option<String>,
        category: String,
        issue_kind: Option<String>,
        created_at: i64,
        updated_at: i64,
        conflict: bool,
        linked_issues: Vec<[u8; 16]>,
        facts: Facts,
    }

    #[derive(Encode, Decode)]
    struct Stored {
        meta: RecordMeta,
        storage: Storage,
    }

    /// What the migration keeps of a format 1 index entry.
    pub(super) struct StoredIndex {
        pub meta_id: [u8; 16],
        pub updated_at: i64,
        pub storage: Storage,
    }

    /// Encodes an index entry in format 1's layout (tests).
    #[cfg(feature = "failpoints")]
    pub(super) fn encode(
        meta: crate::query::RecordMeta,
        storage: Storage,
    ) -> crate::Result<Vec<u8>> {
        let meta = RecordMeta {
            id: meta.id,
            kind: meta.kind,
            number: meta.number,
            title: meta.title,
            street: meta.street,
            community: meta.community,
            grid: meta.grid,
            status: meta.status,
            open: meta.open,
            deadline: meta.deadline,
            assignee: meta.assignee,
            urgency: meta.urgency,
            category: meta.category,
            issue_kind: meta.issue_kind,
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            conflict: meta.conflict,
            linked_issues: meta.linked_issues,
            facts: meta.facts,
        };
        bincode::encode_to_vec(Stored { meta, storage }, super::bincode_config())
            .map_err(|e| crate::Error::Metadata(e.to_string()))
    }

    impl<C> Decode<C> for StoredIndex {
        fn decode<D: bincode::de::Decoder<Context = C>>(
            decoder: &mut D,
        ) -> Result<Self, bincode::error::DecodeError> {
            let stored = Stored::decode(decoder)?;
            Ok(StoredIndex {
                meta_id: stored.meta.id,
                updated_at: stored.meta.updated_at,
                storage: stored.storage,
            })
        }
    }
}

/// Where the index entry of a record imported whole comes from.
#[derive(Debug)]
pub enum Import<'a> {
    /// Derived by a server that derives as this build does
    /// ([`crate::query::DERIVATION`]): stored as is.
    Derived(Box<RecordMeta>),
    /// Derive it here from the record, which must be of `kind`;
    /// `updated_at` is the server's change time.
    Derive { kind: &'a str, updated_at: i64 },
}

/// What a write adds: the changes after `heads_before`, where they came
/// from, the change time to record, and how the record's scope may change.
struct Commit<'a> {
    heads_before: &'a [ChangeHash],
    origin: Origin,
    updated_at: i64,
    from: Option<&'a ActorId>,
    scope: ScopeRule<'a>,
    /// The stored size the record may reach (foreign changes only).
    max_document_bytes: Option<usize>,
}

/// How a write treats the record's authoritative scope.
#[derive(Clone, Copy)]
enum ScopeRule<'a> {
    /// The scope table follows the document (devices, local edits).
    Follow,
    /// The scope may not change, and must be admitted (server merges).
    Locked(&'a Peer<'a>, u64),
    /// An office move from this scope.
    Move(&'a RecordScope),
}

/// How to take in foreign changes.
#[derive(Debug)]
pub struct Incoming<'a> {
    pub limits: &'a ForeignLimits,
    /// Server side: the device that pushed them, as the server knows it.
    /// Its changes are then audited ([`crate::audit`]): the record's scope
    /// is locked and must be one the device may write, and every change
    /// must name the device's worker, role and actor and stay within what
    /// the role may do. The device is recorded in the change log so its
    /// own changes are not sent back to it. Devices leave it `None` and
    /// follow the server.
    pub peer: Option<&'a Peer<'a>>,
    /// The feed position the sender has reached (moves at or before it
    /// are known to it); with `peer` only.
    pub known_through: u64,
}

/// The outcome of a successful local write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub id: RecordId,
    /// The change-log sequence of the write, or `None` if the operation
    /// changed nothing (setting a field to the value it already has).
    pub seq: Option<u64>,
}

/// The outcome of merging foreign changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    pub id: RecordId,
    /// How many changes were new to this store (0: all were duplicates).
    pub new_changes: usize,
    pub seq: Option<u64>,
    /// The record did not exist here before.
    pub created: bool,
}

/// A record with local changes the server has not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub id: RecordId,
    /// The log sequence of its latest unacknowledged local change.
    pub seq: u64,
}

struct Loaded {
    doc: Automerge,
    storage: Storage,
}

/// Mutable state guarded by the write lock: the document cache and the
/// counters that must advance in order.
struct Writer {
    cache: lru::LruCache<RecordId, Loaded>,
    next_seq: u64,
    synced_blobs: BTreeSet<std::ffi::OsString>,
}

/// In-memory view of the index.
#[derive(Default)]
struct Index {
    records: BTreeMap<RecordId, RecordMeta>,
    /// Issue → meetings that link it (derived from the meetings' metas).
    meetings_of: BTreeMap<RecordId, BTreeSet<RecordId>>,
    /// Records whose index entry could not be read or rebuilt.
    corrupt: BTreeSet<RecordId>,
}

impl Index {
    fn insert(&mut self, meta: RecordMeta) {
        let id = meta.record_id();
        self.remove(id);
        for issue in &meta.linked_issues {
            self.meetings_of
                .entry(RecordId::from_bytes(*issue))
                .or_default()
                .insert(id);
        }
        self.corrupt.remove(&id);
        self.records.insert(id, meta);
    }

    fn remove(&mut self, id: RecordId) {
        if let Some(old) = self.records.remove(&id) {
            for issue in &old.linked_issues {
                let issue = RecordId::from_bytes(*issue);
                if let Some(set) = self.meetings_of.get_mut(&issue) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.meetings_of.remove(&issue);
                    }
                }
            }
        }
    }
}

/// A gridsync record store on one device or server.
///
/// All methods take `&self`; the store is `Send + Sync` and can be shared
/// between threads. Writes are serialised; queries run concurrently.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    data_file: Option<File>,
    actor: ActorId,
    actor_hex: String,
    device_code: String,
    durability: Durability,
    writer: Mutex<Writer>,
    index: RwLock<Index>,
    flush_gate: FlushGate,
    /// The highest change-log sequence known to be durable: every entry at
    /// or before it was applied before a flush that completed. The feed is
    /// served up to here only, so a device never passes an entry a crash
    /// could still take back (and whose number would then be given again).
    durable_seq: std::sync::atomic::AtomicU64,
    /// The change log's identity (see [`Store::log_id`]).
    log_id: Mutex<[u8; 16]>,
    /// See [`StoreConfig::tag_own_changes`].
    tag_own: bool,
    #[cfg(feature = "failpoints")]
    crash: failpoint::Crash,
    #[cfg(feature = "failpoints")]
    after_durable: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// A simulated crash for tests (feature `failpoints`): after a chosen
/// number of further writes to sled, every write and flush fails as if the
/// process had died there. What sled already holds stays, which is the
/// state a real crash at that point can leave (sled recovers a prefix of
/// its atomic batches); the caller drops the store and reopens it.
#[cfg(feature = "failpoints")]
mod failpoint {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) struct Crash(AtomicU64);

    impl Default for Crash {
        fn default() -> Self {
            Crash(AtomicU64::new(u64::MAX))
        }
    }

    impl Crash {
        pub(super) fn arm(&self, writes: u64) {
            self.0.store(writes, Ordering::SeqCst);
        }

        /// Counts one write; false once the crash has happened.
        pub(super) fn pass(&self) -> bool {
            let left = self.0.load(Ordering::SeqCst);
            if left == u64::MAX {
                return true;
            }
            if left == 0 {
                return false;
            }
            self.0.store(left - 1, Ordering::SeqCst);
            true
        }
    }
}

/// Group commit: writers take a ticket after their batch is applied; one
/// flush covers every ticket issued before it started.
#[derive(Default)]
struct FlushGate {
    state: Mutex<FlushState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct FlushState {
    requested: u64,
    completed: u64,
    flushing: bool,
}

impl AsRef<Store> for Store {
    fn as_ref(&self) -> &Store {
        self
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("actor", &self.actor_hex)
            .field("device_code", &self.device_code)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// sled errors that mean the files are damaged, as opposed to transient
/// trouble (a held lock, a full disk) that must never cost local data.
fn is_corruption(e: &sled::Error) -> bool {
    matches!(
        e,
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
    )
}

/// sled reports a held file lock as an `Other` I/O error whose message
/// names the lock (wrapping the `WouldBlock` from the OS).
fn is_lock_contention(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().starts_with("could not acquire lock")
        }
        _ => false,
    }
}

fn move_aside(path: &Path, reason: String) -> Error {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let mut target = path.as_os_str().to_owned();
    target.push(format!(".damaged-{stamp}"));
    let target = PathBuf::from(target);
    match std::fs::rename(path, &target) {
        Ok(()) => Error::StoreMovedAside {
            path: path.display().to_string(),
            moved_to: target.display().to_string(),
            reason,
        },
        Err(e) => Error::Io(e),
    }
}

impl Store {
    /// Test hook (feature `failpoints`): rewrites every index entry in
    /// store format 1's layout and records format 1, as an older build
    /// would have left the store, for migration tests on stores of any
    /// size. Drop the store and reopen it to migrate.
    #[cfg(feature = "failpoints")]
    pub fn rewrite_as_format_1(&self) -> Result<()> {
        let _w = self.lock();
        let mut batch = sled::Batch::default();
        for item in self.db.scan_prefix([P_INDEX]) {
            let (k, v) = item?;
            let (stored, _) = bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config())
                .map_err(|e| Error::Metadata(e.to_string()))?;
            batch.insert(k, format1::encode(stored.meta, stored.storage)?);
        }
        batch.insert(key(P_META, META_FORMAT), &1u64.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Test hook (feature `failpoints`): the store "crashes" after `writes`
    /// more writes to sled; every later write or flush fails with an I/O
    /// error. Drop the store and reopen it to model a restart.
    #[cfg(feature = "failpoints")]
    pub fn crash_after_writes(&self, writes: u64) {
        self.crash.arm(writes);
    }

    /// Test hook (feature `failpoints`): runs `f` once, when the next
    /// [`Store::make_durable`] has completed, before it returns. Lets a test
    /// put another request's write between a round's flush and its paging
    /// of the feed.
    #[cfg(feature = "failpoints")]
    pub fn after_next_durable(&self, f: impl FnOnce() + Send + 'static) {
        *self
            .after_durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Every write to sled passes here first (a no-op unless the
    /// `failpoints` feature is on and a crash is armed).
    #[inline]
    fn write_point(&self) -> Result<()> {
        #[cfg(feature = "failpoints")]
        if !self.crash.pass() {
            return Err(Error::Io(std::io::Error::other("simulated crash")));
        }
        Ok(())
    }

    /// Opens (or creates) the store at `config.path`.
    ///
    /// If sled reports the files as corrupt, the directory is renamed to
    /// `<path>.damaged-<time>` and [`Error::StoreMovedAside`] is returned; the
    /// next open starts a fresh store. Transient errors (the store is open in
    /// another process, the disk is full) are returned as they are and touch
    /// nothing.
    pub fn open(config: StoreConfig) -> Result<Store> {
        let code_ok = !config.device_code.is_empty()
            && config.device_code.len() <= 32
            && config
                .device_code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !code_ok {
            return Err(Error::InvalidInput {
                field: "device_code",
                reason: "1 to 32 ASCII letters, digits, '-' or '_'".into(),
            });
        }
        #[cfg(feature = "failpoints")]
        let config_stop = config.stop_migration_after;
        let db = if config.temporary {
            sled::Config::new().temporary(true).open()?
        } else {
            std::fs::create_dir_all(&config.path)?;
            // A store closed a moment ago in this process may still be held
            // by sled's background threads for a few milliseconds; wait for
            // the lock briefly before reporting it as held elsewhere.
            let mut attempts = 0;
            loop {
                let opened = catch_unwind(|| sled::Config::new().path(&config.path).open());
                match opened {
                    Ok(Ok(db)) => break db,
                    Ok(Err(e)) if is_corruption(&e) => {
                        return Err(move_aside(&config.path, e.to_string()));
                    }
                    Ok(Err(e)) if is_lock_contention(&e) && attempts < 100 => {
                        // sled releases its file lock when the last handle to
                        // the file is dropped, and some are dropped only by
                        // epoch-based deferred clean-up: help it along.
                        attempts += 1;
                        for _ in 0..4 {
                            crossbeam_epoch::pin().flush();
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(move_aside(
                            &config.path,
                            "the storage engine crashed while opening".into(),
                        ));
                    }
                }
            }
        };

        let format = match db.get(key(P_META, META_FORMAT))? {
            None => {
                db.insert(key(P_META, META_FORMAT), &STORE_FORMAT.to_be_bytes())?;
                STORE_FORMAT
            }
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| Error::Metadata("bad store format".into()))?,
        };
        if format > STORE_FORMAT {
            return Err(Error::Metadata(format!(
                "the store was written by a newer version of gridsync (store format {format}; \
                 this build reads formats 1 to {STORE_FORMAT})"
            )));
        }
        let actor = match db.get(key(P_META, META_ACTOR))? {
            Some(bytes) => ActorId::from(bytes.as_ref()),
            None => {
                let actor = ActorId::random();
                db.insert(key(P_META, META_ACTOR), actor.to_bytes())?;
                db.flush()?;
                actor
            }
        };
        let log_id = match db.get(key(P_META, META_LOG_ID))? {
            Some(bytes) => <[u8; 16]>::try_from(bytes.as_ref())
                .map_err(|_| Error::Metadata("bad log id".into()))?,
            None => {
                // Stores made before the log had an identity get one here.
                let id = random_log_id()?;
                db.insert(key(P_META, META_LOG_ID), &id[..])?;
                db.flush()?;
                id
            }
        };
        if !config.temporary {
            make_private(&config.path)?;
        }
        let data_file = if config.temporary || config.durability != Durability::Fsync {
            None
        } else {
            Some(File::open(config.path.join("db"))?)
        };
        let next_seq = match db.scan_prefix([P_LOG]).next_back() {
            Some(item) => {
                let (k, _) = item?;
                let seq: [u8; 8] = k[1..]
                    .try_into()
                    .map_err(|_| Error::Metadata("bad change-log key".into()))?;
                u64::from_be_bytes(seq) + 1
            }
            None => 1,
        };
        let capacity = NonZeroUsize::new(config.cache_capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        let store = Store {
            db,
            path: config.path,
            data_file,
            actor_hex: actor.to_hex_string(),
            actor,
            device_code: config.device_code,
            durability: if config.temporary {
                Durability::None
            } else {
                config.durability
            },
            writer: Mutex::new(Writer {
                cache: lru::LruCache::new(capacity),
                next_seq,
                synced_blobs: BTreeSet::new(),
            }),
            index: RwLock::new(Index::default()),
            flush_gate: FlushGate::default(),
            // What is on disk at open is durable.
            durable_seq: std::sync::atomic::AtomicU64::new(next_seq - 1),
            log_id: Mutex::new(log_id),
            tag_own: config.tag_own_changes,
            #[cfg(feature = "failpoints")]
            crash: Default::default(),
            #[cfg(feature = "failpoints")]
            after_durable: Mutex::new(None),
        };
        if format < STORE_FORMAT {
            store.migrate(
                format,
                #[cfg(feature = "failpoints")]
                config_stop,
            )?;
        }
        store.load_index()?;
        store.lock().synced_blobs = store.blob_names();
        if store.tag_own {
            // The tag key exists from the first open on, so that every
            // backup holds the key its tags were made with.
            store.intake_key()?;
        }
        Ok(store)
    }

    /// Migrates the store from `format` to [`STORE_FORMAT`] in place: every
    /// index entry is derived again from its record, and the new entries
    /// and the new format number are written in one atomic batch, then
    /// flushed. A process killed at any point leaves either the old store
    /// or the migrated one, and the old one migrates again on the next
    /// open. Records and the change log are untouched.
    fn migrate(
        &self,
        format: u64,
        #[cfg(feature = "failpoints")] stop_after: Option<usize>,
    ) -> Result<()> {
        if format != 1 {
            return Err(Error::Metadata(format!(
                "no migration from store format {format}"
            )));
        }
        let mut batch = sled::Batch::default();
        #[cfg(feature = "failpoints")]
        let mut derived = 0usize;
        for item in self.db.scan_prefix([P_INDEX]) {
            let (k, v) = item?;
            let Some(id) = RecordId::from_slice(&k[1..]) else {
                continue;
            };
            let old = bincode::decode_from_slice::<format1::StoredIndex, _>(&v, bincode_config())
                .ok()
                .map(|(old, _)| old)
                .filter(|old| old.meta_id == *id.as_bytes());
            let (storage, updated_at) = old.map_or((Storage::default(), now_ms()), |o| {
                (o.storage, o.updated_at)
            });
            match self.load_with(id, storage) {
                Ok(loaded) => {
                    let meta = derive_meta(id, &loaded.doc, updated_at)?;
                    batch.insert(k, encode_index(&meta, loaded.storage)?);
                }
                // Left for `load_index`, which lists it as corrupt.
                Err(_) => batch.insert(k, Vec::<u8>::new()),
            }
            #[cfg(feature = "failpoints")]
            {
                derived += 1;
                if stop_after.is_some_and(|n| derived >= n) {
                    return Err(Error::Metadata(
                        "the migration was stopped by a failpoint".into(),
                    ));
                }
            }
        }
        batch.insert(key(P_META, META_FORMAT), &STORE_FORMAT.to_be_bytes());
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Reads every index entry into memory; entries that cannot be decoded
    /// are rebuilt from their document, and records whose document is also
    /// unreadable are listed by [`Store::corrupt_records`].
    fn load_index(&self) -> Result<()> {
        let mut index = Index::default();
        let mut rebuild = Vec::new();
        for item in self.db.scan_prefix([P_INDEX]) {
            let (k, v) = item?;
            let Some(id) = RecordId::from_slice(&k[1..]) else {
                continue;
            };
            match bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config()) {
                Ok((stored, _)) if stored.meta.id == *id.as_bytes() => index.insert(stored.meta),
                _ => rebuild.push(id),
            }
        }
        *self.index_mut() = index;
        for id in rebuild {
            match self.load_from_disk(id) {
                Ok(loaded) => {
                    let meta = derive_meta(id, &loaded.doc, now_ms())?;
                    let entry = encode_index(&meta, loaded.storage)?;
                    self.db.insert(key(P_INDEX, id.as_bytes()), entry)?;
                    self.index_mut().insert(meta);
                }
                Err(_) => {
                    self.index_mut().corrupt.insert(id);
                }
            }
        }
        Ok(())
    }

    /// This store's Automerge actor.
    pub fn actor(&self) -> &ActorId {
        &self.actor
    }

    /// The device code used for case numbers.
    pub fn device_code(&self) -> &str {
        &self.device_code
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    // A panic while a lock is held cannot leave these structures half
    // updated: every automerge call that could panic runs under
    // `catch_unwind` before any of them is touched, the document cache is
    // only a cache, and counters advance only after a successful batch. So a
    // poisoned lock is recovered instead of bricking the store.

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    // ------------------------------------------------------------ writes

    /// Records a new issue and returns its id.
    pub fn create_issue(&self, author: &Author, new: NewIssue) -> Result<RecordId> {
        let id = RecordId::new();
        self.create_issue_with_id(id, author, new)?;
        Ok(id)
    }

    /// Records a new issue under an id the caller chose, for example one
    /// derived from a 12345 work-order number so that intake is
    /// idempotent. Refused with [`Error::Exists`] if the store holds it.
    pub fn create_issue_with_id(&self, id: RecordId, author: &Author, new: NewIssue) -> Result<()> {
        self.create(
            id,
            RecordKind::Issue,
            author,
            META_CASE_COUNTER,
            |tx, ctx, n| {
                let case_no = format!("{}-{n:06}", self.device_code);
                issue::create(tx, ctx, id, &case_no, &new)
            },
        )?;
        Ok(())
    }

    /// Applies an issue operation on behalf of `author` if the permission
    /// policy allows it ([`crate::policy::check_issue_op`]): the entry
    /// point for office actions and apps. Refused with
    /// [`Error::Forbidden`] otherwise; nothing is written.
    pub fn act_on_issue(&self, id: RecordId, author: &Author, op: IssueOp) -> Result<Written> {
        for action in policy::issue_op_actions(&op) {
            policy::check(author.role, action)?;
        }
        self.update(id, Some(RecordKind::Issue), author, op.name(), |tx, ctx| {
            if matches!(
                op,
                IssueOp::Transition {
                    to: IssueStatus::Closed,
                    ..
                } | IssueOp::ResolveStatusConflict {
                    to: IssueStatus::Closed,
                    ..
                }
            ) {
                policy::check_issue_op(author.role, &issue::read(tx, id), &op)?;
            }
            issue::apply(tx, ctx, &op)
        })
    }

    /// Applies a meeting operation on behalf of `author` if the permission
    /// policy allows it.
    pub fn act_on_meeting(&self, id: RecordId, author: &Author, op: MeetingOp) -> Result<Written> {
        policy::check_meeting_op(author.role, &op)?;
        self.update_meeting(id, author, op)
    }

    /// Records a new issue on behalf of `author` if the policy allows it.
    pub fn report_issue(&self, author: &Author, new: NewIssue) -> Result<RecordId> {
        policy::check(author.role, Action::Report)?;
        if new.source == crate::model::Source::Hotline12345 {
            policy::check(author.role, Action::Intake)?;
        }
        self.create_issue(author, new)
    }

    /// Convenes a meeting on behalf of `author` if the policy allows it.
    pub fn convene_meeting(&self, author: &Author, new: NewMeeting) -> Result<RecordId> {
        policy::check(author.role, Action::ConveneMeeting)?;
        self.create_meeting(author, new)
    }

    /// Takes a 12345 work order in (see [`crate::intake`]): creates the
    /// case, sets the hotline's deadline, accepts and dispatches it, in one
    /// durable write; or returns the case a repeat of the same order made.
    pub fn intake(&self, order: &WorkOrder, taker: Taker<'_>) -> Result<Intake> {
        policy::check(taker.author.role, Action::Intake)?;
        let now = now_ms();
        order.validate(now)?;
        let id = intake::work_order_id(&self.intake_key()?, order.number());
        let place = order.place();
        if !(taker.may_access)(&place) {
            return Err(Error::OutOfScope { id });
        }
        let digest = order.digest();
        let repeat = |id: RecordId| -> Result<Intake> {
            let same = self.with_doc(id, |d| {
                doc::fixed_str(d, "intake_digest").as_deref() == Some(digest.as_str())
            })?;
            let visible = self.scope_of(id)?.is_some_and(|s| (taker.may_access)(&s));
            if same && visible {
                Ok(Intake::Existing(id))
            } else {
                Err(Error::WorkOrderMismatch {
                    number: order.number().to_owned(),
                })
            }
        };
        if self.index_read().records.contains_key(&id) {
            return repeat(id);
        }
        let new = order.new_issue();
        let created = self.create(
            id,
            RecordKind::Issue,
            taker.author,
            META_CASE_COUNTER,
            |tx, ctx, n| {
                let case_no = format!("{}-{n:06}", self.device_code);
                issue::create(tx, ctx, id, &case_no, &new)?;
                automerge::transaction::Transactable::put(
                    tx,
                    automerge::ROOT,
                    "intake_digest",
                    digest.as_str(),
                )
                .map_err(doc::am)?;
                if let Some(due) = order.deadline {
                    issue::apply(
                        tx,
                        ctx,
                        &IssueOp::ChangeDeadline {
                            due,
                            reason: "12345 deadline".into(),
                        },
                    )?;
                }
                for to in [IssueStatus::Accepted, IssueStatus::Dispatched] {
                    issue::apply(
                        tx,
                        ctx,
                        &IssueOp::Transition {
                            to,
                            reason: "12345 work order".into(),
                        },
                    )?;
                }
                Ok(())
            },
        );
        match created {
            Ok(_) => Ok(Intake::Created(id)),
            // Two intakes of one number at once: the other one won.
            Err(Error::Exists(_)) => repeat(id),
            Err(e) => Err(e),
        }
    }

    /// The server-held key work orders' ids are derived with, made at
    /// first use. Local to this store; never synced.
    fn intake_key(&self) -> Result<[u8; 32]> {
        let k = key(P_META, META_INTAKE_KEY);
        let decode = |v: &[u8]| -> Result<[u8; 32]> {
            v.try_into()
                .map_err(|_| Error::Metadata("bad intake key".into()))
        };
        if let Some(v) = self.db.get(&k)? {
            return decode(&v);
        }
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| Error::Io(std::io::Error::other(format!("random source: {e}"))))?;
        self.write_point()?;
        // Two first intakes at once: one key wins, both use it.
        let key = match self
            .db
            .compare_and_swap(&k, None as Option<&[u8]>, Some(&fresh[..]))?
        {
            Ok(()) => fresh,
            Err(current) => decode(current.current.as_deref().unwrap_or_default())?,
        };
        self.flush_now()?;
        Ok(key)
    }

    /// Convenes a new meeting and returns its id.
    pub fn create_meeting(&self, author: &Author, new: NewMeeting) -> Result<RecordId> {
        let id = RecordId::new();
        self.create(
            id,
            RecordKind::Meeting,
            author,
            META_MEETING_COUNTER,
            |tx, ctx, n| {
                let meeting_no = format!("{}-M{n:05}", self.device_code);
                meeting::create(tx, ctx, id, &meeting_no, &new)
            },
        )?;
        Ok(id)
    }

    /// Applies a typed operation to an issue.
    pub fn update_issue(&self, id: RecordId, author: &Author, op: IssueOp) -> Result<Written> {
        self.update(id, Some(RecordKind::Issue), author, op.name(), |tx, ctx| {
            issue::apply(tx, ctx, &op)
        })
    }

    /// Applies a typed operation to a meeting.
    pub fn update_meeting(&self, id: RecordId, author: &Author, op: MeetingOp) -> Result<Written> {
        self.update(
            id,
            Some(RecordKind::Meeting),
            author,
            op.name(),
            |tx, ctx| meeting::apply(tx, ctx, &op),
        )
    }

    fn create<F>(
        &self,
        id: RecordId,
        kind: RecordKind,
        author: &Author,
        counter: &[u8],
        f: F,
    ) -> Result<Written>
    where
        F: FnOnce(&mut Transaction<'_>, Ctx<'_>, u64) -> Result<()>,
    {
        let tag_key = self.tag_key()?;
        let mut w = self.lock();
        if self.index_read().records.contains_key(&id) {
            return Err(Error::Exists(id));
        }
        let n = match self.db.get(key(P_META, counter))? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::Metadata("bad counter".into()))?,
            ),
            None => 0,
        } + 1;
        let mut doc = Automerge::new().with_actor(self.actor.clone());
        let now = now_ms();
        let ctx = Ctx {
            author,
            dev: &self.actor_hex,
            now,
        };
        doc.transact_with(
            |_| commit_options(&format!("create_{}", kind.as_str()), author, now),
            |tx| f(tx, ctx, n),
        )
        .map_err(|failure| failure.error)?;
        if let Some(key) = &tag_key {
            self.tag_local_change(&mut doc, &[], key)?;
        }
        let mut batch = sled::Batch::default();
        batch.insert(key(P_META, counter), &n.to_be_bytes());
        let loaded = Loaded {
            doc,
            storage: Storage::default(),
        };
        let written = self.persist(
            &mut w,
            id,
            loaded,
            Commit {
                heads_before: &[],
                origin: Origin::Local,
                updated_at: now,
                from: None,
                scope: ScopeRule::Follow,
                max_document_bytes: None,
            },
            batch,
        )?;
        drop(w);
        self.make_durable()?;
        Ok(written)
    }

    fn update<F>(
        &self,
        id: RecordId,
        kind: Option<RecordKind>,
        author: &Author,
        op: &str,
        f: F,
    ) -> Result<Written>
    where
        F: FnOnce(&mut Transaction<'_>, Ctx<'_>) -> Result<()>,
    {
        self.update_with(id, kind, author, op, ScopeRule::Follow, f)
    }

    fn update_with<F>(
        &self,
        id: RecordId,
        kind: Option<RecordKind>,
        author: &Author,
        op: &str,
        scope: ScopeRule<'_>,
        f: F,
    ) -> Result<Written>
    where
        F: FnOnce(&mut Transaction<'_>, Ctx<'_>) -> Result<()>,
    {
        if matches!(scope, ScopeRule::Follow) && crate::sync::is_leaving(self, id)? {
            // Moved out of this device's scope: what it wrote before is
            // being uploaded; nothing new is taken.
            return Err(Error::OutOfScope { id });
        }
        let tag_key = self.tag_key()?;
        let mut w = self.lock();
        let actual = self.kind_of(id)?;
        if let Some(kind) = kind.filter(|k| *k != actual) {
            return Err(Error::WrongKind {
                id,
                expected: kind.as_str(),
                actual: actual.as_str(),
            });
        }
        let mut loaded = self.checkout(&mut w, id)?;
        let heads = loaded.doc.get_heads();
        let now = now_ms();
        let ctx = Ctx {
            author,
            dev: &self.actor_hex,
            now,
        };
        let result = loaded
            .doc
            .transact_with(|_| commit_options(op, author, now), |tx| f(tx, ctx));
        if let Err(failure) = result {
            // The failed transaction was rolled back; the document is as it was.
            w.cache.put(id, loaded);
            return Err(failure.error);
        }
        if let Some(key) = &tag_key {
            // On error `loaded` is dropped: the record reloads from disk.
            self.tag_local_change(&mut loaded.doc, &heads, key)?;
        }
        let written = self.persist(
            &mut w,
            id,
            loaded,
            Commit {
                heads_before: &heads,
                origin: Origin::Local,
                updated_at: now,
                from: None,
                scope,
                max_document_bytes: None,
            },
            sled::Batch::default(),
        )?;
        drop(w);
        self.make_durable()?;
        Ok(written)
    }

    /// The key this store tags its own changes with, if it does.
    fn tag_key(&self) -> Result<Option<[u8; 32]>> {
        match self.tag_own {
            true => self.intake_key().map(Some),
            false => Ok(None),
        }
    }

    /// Replaces the one change a local transaction made after `heads` by
    /// the same change tagged (see `tag`): the document is rebuilt at
    /// `heads` and the tagged change applied to it.
    fn tag_local_change(
        &self,
        doc: &mut Automerge,
        heads: &[ChangeHash],
        key: &[u8; 32],
    ) -> Result<()> {
        let changes = doc.get_changes(heads);
        let change = match changes.as_slice() {
            // Nothing written (a move to where the record already is).
            [] => return Ok(()),
            [change] => change,
            more => {
                return Err(Error::Document(format!(
                    "a transaction made {} changes",
                    more.len()
                )))
            }
        };
        let tagged = crate::tag::tag(key, change);
        let mut fresh = if heads.is_empty() {
            Automerge::new()
        } else {
            doc.fork_at(heads).map_err(doc::am)?
        };
        fresh.apply_changes([tagged]).map_err(doc::am)?;
        *doc = fresh.with_actor(self.actor.clone());
        Ok(())
    }

    /// Writes what changed in `loaded` since `heads_before` in one atomic
    /// batch (with `extra` entries), updates the in-memory index and puts
    /// the document back into the cache. Does not flush.
    fn persist(
        &self,
        w: &mut Writer,
        id: RecordId,
        mut loaded: Loaded,
        commit: Commit<'_>,
        batch: sled::Batch,
    ) -> Result<Written> {
        let seq = w.next_seq;
        // Everything that calls into Automerge runs under `catch_unwind`;
        // on error or panic `loaded` is dropped, and the record reloads from
        // disk as it was.
        let prepared = catch_unwind(AssertUnwindSafe(|| {
            self.prepare(id, &mut loaded, commit, seq, batch)
        }))
        .map_err(|_| Error::MergePanicked(id))??;
        let Some((batch, meta)) = prepared else {
            w.cache.put(id, loaded);
            return Ok(Written { id, seq: None });
        };
        self.write_point()?;
        self.db.apply_batch(batch)?;
        w.next_seq += 1;
        self.index_mut().insert(meta);
        w.cache.put(id, loaded);
        Ok(Written { id, seq: Some(seq) })
    }

    /// Builds the batch that stores what changed in `loaded` since
    /// `commit.heads_before`, or `None` if nothing did.
    fn prepare(
        &self,
        id: RecordId,
        loaded: &mut Loaded,
        commit: Commit<'_>,
        seq: u64,
        mut batch: sled::Batch,
    ) -> Result<Option<(sled::Batch, RecordMeta)>> {
        let Commit {
            heads_before,
            origin,
            updated_at,
            from,
            scope,
            max_document_bytes,
        } = commit;
        let new_changes = loaded.doc.get_changes(heads_before);
        if new_changes.is_empty() {
            return Ok(None);
        }
        let previous = self.index_read().records.get(&id).map(|m| m.updated_at);
        let updated_at = previous.map_or(updated_at, |p| p.max(updated_at));
        let meta = derive_meta(id, &loaded.doc, updated_at)?;

        // The authoritative scope: set when the record is first stored,
        // changed only by an office move (or, on devices, by the server).
        let table = self.scope_entry(id)?;
        let new_scope = meta.scope();
        let moved_from = match scope {
            ScopeRule::Follow => None,
            ScopeRule::Locked(peer, known_through) => {
                match &table {
                    Some(t) if t.current != new_scope => return Err(Error::ScopeChange { id }),
                    Some(t) if !t.admits(peer.may_access, known_through) => {
                        return Err(Error::OutOfScope { id })
                    }
                    None if !(peer.may_access)(&new_scope) => return Err(Error::OutOfScope { id }),
                    _ => {}
                }
                None
            }
            ScopeRule::Move(old) => Some(old.clone()),
        };
        if table.as_ref().map(|t| &t.current) != Some(&new_scope) {
            let mut entry = table.unwrap_or_default();
            if let Some(old) = &moved_from {
                entry.former.retain(|f| f.scope != *old);
                entry.former.push(FormerScope {
                    scope: old.clone(),
                    moved_at: seq,
                });
            }
            entry.current = new_scope;
            let encoded = bincode::encode_to_vec(&entry, bincode_config())
                .map_err(|e| Error::Metadata(e.to_string()))?;
            batch.insert(key(P_SCOPE, id.as_bytes()), encoded);
        }

        let mut delta = Vec::new();
        for change in &new_changes {
            delta.extend_from_slice(change.raw_bytes());
        }
        // The log carries the change bytes too: serving the feed is then a
        // range read of the log, with no document loaded.
        let log_bytes = delta.clone();
        let storage = &mut loaded.storage;
        if let Some(limit) = max_document_bytes {
            if storage.snapshot_len + storage.chunks_len + delta.len() as u64 > limit as u64 {
                return Err(Error::DocumentTooLarge { id, limit });
            }
        }
        if storage.snapshot_len == 0
            || storage.chunks_len + delta.len() as u64 > storage.snapshot_len
        {
            // Compact: the new snapshot replaces every chunk, in the same batch.
            let snapshot = loaded.doc.save();
            for n in storage.first_chunk..storage.next_chunk {
                batch.remove(chunk_key(id, n));
            }
            storage.snapshot_len = snapshot.len() as u64;
            storage.chunks_len = 0;
            storage.first_chunk = storage.next_chunk;
            batch.insert(key(P_SNAPSHOT, id.as_bytes()), snapshot);
        } else {
            storage.chunks_len += delta.len() as u64;
            batch.insert(chunk_key(id, storage.next_chunk), delta);
            storage.next_chunk += 1;
        }
        batch.insert(key(P_INDEX, id.as_bytes()), encode_index(&meta, *storage)?);
        let entry = StoredLogEntry {
            id: *id.as_bytes(),
            hashes: new_changes.iter().map(|c| c.hash().0).collect(),
            origin,
            from: from.map(|a| a.to_bytes().to_vec()),
            moved_from,
            changes: log_bytes,
        };
        let entry = bincode::encode_to_vec(&entry, bincode_config())
            .map_err(|e| Error::Metadata(e.to_string()))?;
        batch.insert(key(P_LOG, &seq.to_be_bytes()), entry);
        if origin == Origin::Local {
            batch.insert(key(P_PENDING, id.as_bytes()), &seq.to_be_bytes());
        }
        Ok(Some((batch, meta)))
    }

    /// Makes everything written so far durable (sled flush, then fdatasync
    /// as configured). Writes through the `*_unflushed` methods are not
    /// durable until this returns.
    ///
    /// Concurrent callers share flushes (group commit): a caller whose
    /// writes were applied before a flush started waits for that flush
    /// instead of starting its own.
    pub fn make_durable(&self) -> Result<()> {
        self.make_durable_inner()?;
        #[cfg(feature = "failpoints")]
        {
            let hook = self
                .after_durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        Ok(())
    }

    fn make_durable_inner(&self) -> Result<()> {
        if self.durability == Durability::None {
            return Ok(());
        }
        let gate = &self.flush_gate;
        let mut state = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requested += 1;
        let ticket = state.requested;
        loop {
            if state.completed >= ticket {
                return Ok(());
            }
            if !state.flushing {
                state.flushing = true;
                let target = state.requested;
                drop(state);
                // Every entry applied so far is covered by this flush (the
                // writers of the tickets it serves applied theirs first).
                let applied = self.lock().next_seq - 1;
                let result = self.flush_now();
                if result.is_ok() {
                    self.durable_seq
                        .fetch_max(applied, std::sync::atomic::Ordering::SeqCst);
                }
                let mut after = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
                after.flushing = false;
                if result.is_ok() {
                    after.completed = after.completed.max(target);
                }
                gate.done.notify_all();
                return result;
            }
            state = gate
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Flushes to disk whatever the configured durability: for bulk loads
    /// that write with `Durability::None` and make it all durable at the end.
    pub fn flush(&self) -> Result<()> {
        let applied = self.lock().next_seq - 1;
        self.write_point()?;
        self.db.flush()?;
        if let Some(f) = &self.data_file {
            f.sync_data()?;
        }
        self.durable_seq
            .fetch_max(applied, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn flush_now(&self) -> Result<()> {
        self.write_point()?;
        self.db.flush()?;
        if self.durability == Durability::Fsync {
            if let Some(f) = &self.data_file {
                f.sync_data()?;
            }
            self.sync_new_blobs()?;
        }
        Ok(())
    }

    fn blob_names(&self) -> BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(self.path.join("blobs"))
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
            .unwrap_or_default()
    }

    /// sled writes values too large for a log segment to separate blob
    /// files and never syncs them; we do.
    fn sync_new_blobs(&self) -> Result<()> {
        let names = self.blob_names();
        let fresh: Vec<_> = {
            let w = self.lock();
            names.difference(&w.synced_blobs).cloned().collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let dir = self.path.join("blobs");
        for name in &fresh {
            match File::open(dir.join(name)) {
                Ok(f) => f.sync_data()?,
                // sled may have collected it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        File::open(&dir)?.sync_all()?;
        let mut w = self.lock();
        w.synced_blobs = names;
        Ok(())
    }

    // ------------------------------------------------------------ loading

    fn kind_of(&self, id: RecordId) -> Result<RecordKind> {
        let index = self.index_read();
        match index.records.get(&id) {
            Some(m) => m.record_kind().ok_or_else(|| Error::Corrupt {
                id,
                reason: "unknown record kind".into(),
            }),
            None if index.corrupt.contains(&id) => Err(Error::Corrupt {
                id,
                reason: "index entry unreadable".into(),
            }),
            None => Err(Error::NotFound(id)),
        }
    }

    /// Takes the record's document out of the cache, or loads it.
    fn checkout(&self, w: &mut Writer, id: RecordId) -> Result<Loaded> {
        match w.cache.pop(&id) {
            Some(l) => Ok(l),
            None => self.load_from_disk(id),
        }
    }

    fn load_from_disk(&self, id: RecordId) -> Result<Loaded> {
        let storage = match self.db.get(key(P_INDEX, id.as_bytes()))? {
            Some(v) => bincode::decode_from_slice::<StoredIndex, _>(&v, bincode_config())
                .map(|(s, _)| s.storage)
                .unwrap_or_default(),
            None => Storage::default(),
        };
        self.load_with(id, storage)
    }

    /// Loads a record whose chunk accounting is `storage`.
    fn load_with(&self, id: RecordId, storage: Storage) -> Result<Loaded> {
        let corrupt = |reason: String| Error::Corrupt { id, reason };
        let snapshot = self
            .db
            .get(key(P_SNAPSHOT, id.as_bytes()))?
            .ok_or(Error::NotFound(id))?;
        // One load of the snapshot followed by every chunk: Automerge applies
        // all the changes in one go, much cheaper than chunk by chunk.
        let mut bytes = snapshot.to_vec();
        let mut chunks_len = 0u64;
        for item in self.db.scan_prefix(key(P_CHUNK, id.as_bytes())) {
            let (_, chunk) = item?;
            chunks_len += chunk.len() as u64;
            bytes.extend_from_slice(&chunk);
        }
        let loaded = catch_unwind(AssertUnwindSafe(|| -> Result<Loaded> {
            let doc = Automerge::load(&bytes).map_err(|e| corrupt(format!("load: {e}")))?;
            let mut storage = storage;
            storage.snapshot_len = snapshot.len() as u64;
            storage.chunks_len = chunks_len;
            Ok(Loaded {
                doc: doc.with_actor(self.actor.clone()),
                storage,
            })
        }))
        .map_err(|_| corrupt("the CRDT library crashed while loading".into()))??;
        if doc::record_type(&loaded.doc).is_none() {
            return Err(corrupt("not a gridsync record".into()));
        }
        Ok(loaded)
    }

    fn with_doc<T>(&self, id: RecordId, f: impl FnOnce(&Automerge) -> T) -> Result<T> {
        let mut w = self.lock();
        let loaded = self.checkout(&mut w, id)?;
        let out =
            catch_unwind(AssertUnwindSafe(|| f(&loaded.doc))).map_err(|_| Error::Corrupt {
                id,
                reason: "reading the record crashed the CRDT library".into(),
            })?;
        w.cache.put(id, loaded);
        Ok(out)
    }

    // ------------------------------------------------------------ reads

    /// The typed view of an issue.
    pub fn issue(&self, id: RecordId) -> Result<IssueView> {
        self.expect_kind(id, RecordKind::Issue)?;
        self.with_doc(id, |d| issue::read(d, id))
    }

    /// The typed view of a meeting.
    pub fn meeting(&self, id: RecordId) -> Result<MeetingView> {
        self.expect_kind(id, RecordKind::Meeting)?;
        self.with_doc(id, |d| meeting::read(d, id))
    }

    fn expect_kind(&self, id: RecordId, kind: RecordKind) -> Result<()> {
        let actual = self.kind_of(id)?;
        if actual != kind {
            return Err(Error::WrongKind {
                id,
                expected: kind.as_str(),
                actual: actual.as_str(),
            });
        }
        Ok(())
    }

    /// The index entry of a record.
    pub fn meta(&self, id: RecordId) -> Result<Option<RecordMeta>> {
        Ok(self.index_read().records.get(&id).cloned())
    }

    /// Meetings that discuss an issue (the reverse of the meeting's link).
    pub fn meetings_for_issue(&self, issue: RecordId) -> Result<Vec<RecordId>> {
        Ok(self
            .index_read()
            .meetings_of
            .get(&issue)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default())
    }

    /// One page of records matching `q`.
    pub fn list(&self, q: &Query) -> Result<Page> {
        Ok(query::run(q, self.index_read().records.values()))
    }

    /// The office figures over the records `keep` accepts, grouped (see
    /// [`crate::figures`]). Reads only the in-memory index.
    pub fn figures(
        &self,
        by: crate::figures::GroupBy,
        keep: impl Fn(&RecordMeta) -> bool,
        now: i64,
    ) -> crate::figures::Figures {
        let index = self.index_read();
        crate::figures::compute(index.records.values().filter(|m| keep(m)), by, now)
    }

    /// Like [`Store::list`], over only the records `keep` accepts (an
    /// office user's scope, say), before sorting and paging.
    pub fn list_where(&self, q: &Query, keep: impl Fn(&RecordMeta) -> bool) -> Result<Page> {
        Ok(query::run(
            q,
            self.index_read().records.values().filter(|m| keep(m)),
        ))
    }

    /// How many records match `q` (paging ignored).
    pub fn count(&self, q: &Query) -> Result<usize> {
        Ok(self
            .index_read()
            .records
            .values()
            .filter(|m| q.matches(m))
            .count())
    }

    /// Counts of matching records by derived status.
    pub fn count_by_status(&self, q: &Query) -> Result<BTreeMap<String, usize>> {
        Ok(query::count_by_status(
            q,
            self.index_read().records.values(),
        ))
    }

    /// Every record id, in id order.
    pub fn record_ids(&self) -> Result<Vec<RecordId>> {
        Ok(self.index_read().records.keys().copied().collect())
    }

    /// How many records the store holds.
    pub fn len(&self) -> Result<usize> {
        Ok(self.index_read().records.len())
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// How many documents are loaded in memory right now (diagnostics:
    /// queries must not load any).
    pub fn loaded_documents(&self) -> Result<usize> {
        Ok(self.lock().cache.len())
    }

    /// Records whose stored data could not be read at open.
    pub fn corrupt_records(&self) -> Result<Vec<RecordId>> {
        Ok(self.index_read().corrupt.iter().copied().collect())
    }

    /// Checks the store against its own invariants, loading every record:
    /// each log entry's change bytes are the changes its hashes name, and
    /// the record holds them; every change of a record is in the log (the
    /// feed devices pull), unless the record was imported whole or the log
    /// was truncated; every index entry is what its document derives.
    /// Returns the problems found, empty when the store is consistent.
    /// For crash tests and operators; costs a full read of the store.
    pub fn verify(&self) -> Result<Vec<String>> {
        use std::collections::HashSet;
        let mut problems = Vec::new();
        let trusted = ForeignLimits {
            max_bytes: usize::MAX,
            max_changes: usize::MAX,
            max_ops_per_change: usize::MAX,
            max_deps: usize::MAX,
            ..ForeignLimits::default()
        };
        // Per record: the hashes the log names, and whether it was imported
        // whole (an entry without hashes).
        let mut logged: BTreeMap<RecordId, (HashSet<ChangeHash>, bool)> = BTreeMap::new();
        let records: BTreeSet<RecordId> = self.record_ids()?.into_iter().collect();
        for entry in self.log_since(0, usize::MAX)? {
            let slot = logged.entry(entry.id).or_default();
            if entry.origin == Origin::Rebased {
                // The record was replaced: what earlier entries named is
                // not expected in it any more.
                *slot = Default::default();
            }
            if entry.hashes.is_empty() {
                slot.1 = true;
            }
            slot.0.extend(entry.hashes.iter().copied());
            if entry.hashes.is_empty() && entry.changes.is_empty() {
                continue;
            }
            match foreign::parse_changes(entry.id, &entry.changes, &trusted) {
                Ok(changes) => {
                    let mut got: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
                    let mut want = entry.hashes.clone();
                    got.sort();
                    want.sort();
                    if got != want {
                        problems.push(format!(
                            "log entry {} ({}): its bytes hold {} changes, its hashes name {}",
                            entry.seq,
                            entry.id,
                            got.len(),
                            want.len()
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "log entry {} ({}): unreadable change bytes: {e}",
                    entry.seq, entry.id
                )),
            }
        }
        // Sequences start at 1; a higher floor means the log was truncated.
        let whole_log = self.log_floor()? <= 1;
        for id in &records {
            let id = *id;
            let Some(indexed) = self.meta(id)? else {
                problems.push(format!("{id}: stored but not indexed"));
                continue;
            };
            let checked = self.with_doc(id, |d| {
                let hashes: HashSet<ChangeHash> =
                    d.get_changes(&[]).iter().map(|c| c.hash()).collect();
                (hashes, derive_meta(id, d, indexed.updated_at))
            });
            let (hashes, derived) = match checked {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{id}: unreadable: {e}"));
                    continue;
                }
            };
            match derived {
                Ok(meta) if meta == indexed => {}
                Ok(_) => problems.push(format!("{id}: the index disagrees with the document")),
                Err(e) => problems.push(format!("{id}: no index entry derives: {e}")),
            }
            let (in_log, imported) = logged.remove(&id).unwrap_or_default();
            let missing_in_doc = in_log.difference(&hashes).count();
            if missing_in_doc > 0 {
                problems.push(format!(
                    "{id}: the log names {missing_in_doc} changes the record lacks"
                ));
            }
            if whole_log && !imported {
                let missing_in_log = hashes.difference(&in_log).count();
                if missing_in_log > 0 {
                    problems.push(format!(
                        "{id}: {missing_in_log} changes are in the record but not in the log"
                    ));
                }
            }
        }
        Ok(problems)
    }

    // ------------------------------------------------------------ sync support

    /// The record's current heads.
    pub fn heads(&self, id: RecordId) -> Result<Vec<ChangeHash>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| d.get_heads())
    }

    /// The record's changes that `have` does not include, as bytes for
    /// [`Store::apply_changes`] on another replica.
    pub fn changes_since(&self, id: RecordId, have: &[ChangeHash]) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| d.save_after(have))
    }

    /// Like [`Store::changes_since`], but only the changes this store's own
    /// actor made (what a device pushes).
    pub fn own_changes_since(&self, id: RecordId, have: &[ChangeHash]) -> Result<Vec<u8>> {
        self.changes_to_offer(id, have, false)
    }

    /// What a device offers the server of a record: its own changes after
    /// `have`, and with `hand_back` also the server's tagged changes (after
    /// a restore, the server may lack changes of its own; see `tag`).
    pub fn changes_to_offer(
        &self,
        id: RecordId,
        have: &[ChangeHash],
        hand_back: bool,
    ) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| {
            let mut out = Vec::new();
            for c in d.get_changes(have) {
                if c.actor_id() == &self.actor || (hand_back && crate::tag::is_tagged(&c)) {
                    out.extend_from_slice(c.raw_bytes());
                }
            }
            out
        })
    }

    /// A compacted snapshot of the record for [`Store::apply_snapshot`].
    pub fn snapshot(&self, id: RecordId) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| d.save())
    }

    /// The record as stored, without loading it: its snapshot followed by
    /// its change chunks (a valid input to `Automerge::load`), and its
    /// index entry. This is what a server sends a new device.
    pub fn export_record(&self, id: RecordId) -> Result<(Vec<u8>, RecordMeta)> {
        // Under the write lock, so snapshot and chunks are one state.
        let _w = self.lock();
        let meta = self
            .index_read()
            .records
            .get(&id)
            .cloned()
            .ok_or(Error::NotFound(id))?;
        let mut bytes = self
            .db
            .get(key(P_SNAPSHOT, id.as_bytes()))?
            .ok_or(Error::NotFound(id))?
            .to_vec();
        for item in self.db.scan_prefix(key(P_CHUNK, id.as_bytes())) {
            let (_, chunk) = item?;
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, meta))
    }

    /// Stores a record received whole from a trusted server when this store
    /// does not have it yet; otherwise merges it (so local unsynced changes
    /// survive). Its index entry is the one given when the server derives
    /// entries as this build does ([`Import::Derived`]: nothing is loaded),
    /// else derived here from the record. Not yet durable; see
    /// [`Store::apply_changes_unflushed`].
    pub fn import_record_unflushed(
        &self,
        id: RecordId,
        bytes: &[u8],
        index: Import<'_>,
    ) -> Result<Merged> {
        let meta = match index {
            Import::Derived(meta) => {
                if bytes.len() > MAX_SNAPSHOT_BYTES {
                    return Err(Error::MalformedChanges {
                        id,
                        reason: format!(
                            "a record of {} bytes exceeds {MAX_SNAPSHOT_BYTES}",
                            bytes.len()
                        ),
                    });
                }
                if meta.id != *id.as_bytes() || meta.record_kind().is_none() {
                    return Err(Error::MalformedChanges {
                        id,
                        reason: "the record's index entry does not match it".into(),
                    });
                }
                *meta
            }
            Import::Derive { kind, updated_at } => {
                let doc = load_snapshot(id, bytes)?;
                let meta = derive_meta(id, &doc, updated_at)?;
                let named = doc::fixed_str(&doc, "id").and_then(|s| s.parse::<RecordId>().ok());
                if meta.kind != kind || named != Some(id) {
                    return Err(Error::MalformedChanges {
                        id,
                        reason: "the record's index entry does not match it".into(),
                    });
                }
                meta
            }
        };
        let mut w = self.lock();
        if self.index_read().records.contains_key(&id) || self.index_read().corrupt.contains(&id) {
            drop(w);
            return self.apply_snapshot_unflushed(id, bytes);
        }
        let seq = w.next_seq;
        let storage = Storage {
            snapshot_len: bytes.len() as u64,
            ..Storage::default()
        };
        let scope = StoredScope {
            current: meta.scope(),
            former: Vec::new(),
        };
        let entry = StoredLogEntry {
            id: *id.as_bytes(),
            hashes: Vec::new(),
            origin: Origin::Remote,
            from: None,
            moved_from: None,
            changes: Vec::new(),
        };
        let encode_err = |e: bincode::error::EncodeError| Error::Metadata(e.to_string());
        let mut batch = sled::Batch::default();
        batch.insert(key(P_SNAPSHOT, id.as_bytes()), bytes);
        batch.insert(key(P_INDEX, id.as_bytes()), encode_index(&meta, storage)?);
        batch.insert(
            key(P_SCOPE, id.as_bytes()),
            bincode::encode_to_vec(&scope, bincode_config()).map_err(encode_err)?,
        );
        batch.insert(
            key(P_LOG, &seq.to_be_bytes()),
            bincode::encode_to_vec(&entry, bincode_config()).map_err(encode_err)?,
        );
        self.write_point()?;
        self.db.apply_batch(batch)?;
        w.next_seq += 1;
        self.index_mut().insert(meta);
        Ok(Merged {
            id,
            new_changes: 0,
            seq: Some(seq),
            created: true,
        })
    }

    /// The sequence of the latest change-log entry (0 if none), durable or
    /// not yet.
    pub fn log_head(&self) -> Result<u64> {
        Ok(self.lock().next_seq - 1)
    }

    /// The change log's identity. A device's cursor names the log it came
    /// from; when the server's log is not that one (restored from a
    /// backup), the device re-offers its changes and pulls afresh.
    pub fn log_id(&self) -> [u8; 16] {
        *self.log_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a consistent copy of this store to a new store at `dest`
    /// (which must not exist), while the store stays open: writers wait
    /// for the copy, readers do not. Everything is copied — records, the
    /// change log, the scope table, metadata (actor, counters, keys, log
    /// identity) — as it stands at one point. Returns how
    /// many records and the log head the copy holds.
    pub fn backup_to(&self, dest: &Path) -> Result<(usize, u64)> {
        if dest.exists() {
            return Err(Error::InvalidInput {
                field: "backup destination",
                reason: format!("{} exists; back up into a new directory", dest.display()),
            });
        }
        // Writers wait while the copy is read (it reads sled's view, which
        // holds every applied write; flushing is not needed for that).
        let w = self.lock();
        let copy = sled::Config::new().path(dest).open()?;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        for item in self.db.iter() {
            let (k, v) = item?;
            batch.insert(k, v);
            pending += 1;
            if pending == 4096 {
                copy.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        // What the copy shares with this log for good: entries durable
        // here are never numbered again, whatever happens to this process.
        let durable = self
            .durable_seq
            .load(std::sync::atomic::Ordering::SeqCst)
            .min(w.next_seq - 1);
        batch.insert(key(P_META, META_BACKUP_SHARED), &durable.to_be_bytes());
        copy.apply_batch(batch)?;
        copy.flush()?;
        let head = w.next_seq - 1;
        drop(w);
        let records = self.len()?;
        drop(copy);
        make_private(dest)?;
        sync_dir_files(dest)?;
        Ok((records, head))
    }

    /// Gives the change log a new identity, durably: what a restore does,
    /// since the restored log's tail is not the one devices saw. The old
    /// identity is kept as an ancestor with the last sequence both logs
    /// share (the durable head of the live log when the backup was taken,
    /// else this log's head), so a device that knew the old log continues
    /// from there instead of starting over ([`Store::log_shared_with`]).
    /// Returns the new id.
    pub fn renew_log_id(&self) -> Result<[u8; 16]> {
        let id = random_log_id()?;
        let shared = match self.db.get(key(P_META, META_BACKUP_SHARED))? {
            Some(v) => u64::from_be_bytes(
                <[u8; 8]>::try_from(v.as_ref())
                    .map_err(|_| Error::Metadata("bad backup point".into()))?,
            ),
            None => self.durable_head()?,
        }
        .min(self.log_head()?);
        let mut ancestors: Vec<([u8; 16], u64)> = self
            .log_ancestors()?
            .into_iter()
            .map(|(log, s)| (log, s.min(shared)))
            .collect();
        ancestors.push((self.log_id(), shared));
        // Bounded: a log restored many times keeps its latest ancestors.
        if ancestors.len() > 16 {
            ancestors.drain(..ancestors.len() - 16);
        }
        let encoded = bincode::encode_to_vec(&ancestors, bincode_config())
            .map_err(|e| Error::Metadata(e.to_string()))?;
        let mut batch = sled::Batch::default();
        batch.insert(key(P_META, META_LOG_ID), &id[..]);
        batch.insert(key(P_META, META_LOG_ANCESTORS), encoded);
        batch.remove(key(P_META, META_BACKUP_SHARED));
        self.write_point()?;
        self.db.apply_batch(batch)?;
        self.flush_now()?;
        *self.log_id.lock().unwrap_or_else(PoisonError::into_inner) = id;
        Ok(id)
    }

    fn log_ancestors(&self) -> Result<Vec<([u8; 16], u64)>> {
        match self.db.get(key(P_META, META_LOG_ANCESTORS))? {
            None => Ok(Vec::new()),
            Some(v) => bincode::decode_from_slice(&v, bincode_config())
                .map(|(a, _)| a)
                .map_err(|e| Error::Metadata(format!("log ancestors: {e}"))),
        }
    }

    /// When `log` is a log this one continues (this store was restored from
    /// a backup of it), the last sequence the two share: a device whose
    /// cursor came from `log` may continue here from that point.
    pub fn log_shared_with(&self, log: [u8; 16]) -> Result<Option<u64>> {
        Ok(self
            .log_ancestors()?
            .into_iter()
            .rev()
            .find(|(l, _)| *l == log)
            .map(|(_, shared)| shared))
    }

    /// The sequence of the latest change-log entry known to be durable: the
    /// feed is served up to here only. A store that does not flush
    /// (`Durability::None`) counts everything applied.
    pub fn durable_head(&self) -> Result<u64> {
        if self.durability == Durability::None {
            return self.log_head();
        }
        Ok(self.durable_seq.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Up to `limit` change-log entries after sequence `after`.
    pub fn log_since(&self, after: u64, limit: usize) -> Result<Vec<LogEntry>> {
        let start = key(P_LOG, &after.saturating_add(1).to_be_bytes());
        let end = key(P_LOG, &u64::MAX.to_be_bytes());
        let mut out = Vec::new();
        for item in self.db.range(start..=end).take(limit) {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(
                k[1..]
                    .try_into()
                    .map_err(|_| Error::Metadata("bad change-log key".into()))?,
            );
            let (e, _) = bincode::decode_from_slice::<StoredLogEntry, _>(&v, bincode_config())
                .map_err(|e| Error::Metadata(format!("change-log entry {seq}: {e}")))?;
            out.push(LogEntry {
                seq,
                id: RecordId::from_bytes(e.id),
                hashes: e.hashes.into_iter().map(ChangeHash).collect(),
                origin: e.origin,
                from: e.from.map(|a| ActorId::from(a.as_slice())),
                moved_from: e.moved_from,
                changes: e.changes,
            });
        }
        Ok(out)
    }

    /// Merges foreign change bytes into a record, creating it if unknown,
    /// and makes the result durable. Idempotent: changes already present are
    /// ignored. The bytes are checked (see [`crate::foreign`]) before
    /// Automerge sees them; on any error, or a panic inside Automerge, the
    /// record is left as it was.
    pub fn apply_changes(
        &self,
        id: RecordId,
        bytes: &[u8],
        limits: &ForeignLimits,
    ) -> Result<Merged> {
        let incoming = Incoming {
            limits,
            peer: None,
            known_through: 0,
        };
        let merged = self.apply_changes_unflushed(id, bytes, &incoming)?;
        self.make_durable()?;
        Ok(merged)
    }

    /// Like [`Store::apply_changes`], with scope and origin rules, but
    /// **not yet durable**: call [`Store::make_durable`] before telling
    /// anyone the changes are saved. Lets a sync apply many records and pay
    /// for one flush.
    pub fn apply_changes_unflushed(
        &self,
        id: RecordId,
        bytes: &[u8],
        incoming: &Incoming<'_>,
    ) -> Result<Merged> {
        // A device may hand back this server's own changes (after a
        // restore, see `tag`): they are parsed with every other actor
        // refused, and taken only with a valid tag.
        let own_actor = incoming.limits.actor.as_ref();
        let handed_back = self.tag_own && own_actor.is_some();
        let changes = if handed_back {
            let any = ForeignLimits {
                actor: None,
                ..incoming.limits.clone()
            };
            foreign::parse_changes(id, bytes, &any)?
        } else {
            foreign::parse_changes(id, bytes, incoming.limits)?
        };
        let (mine, mut theirs): (Vec<_>, Vec<_>) = changes
            .into_iter()
            .partition(|c| !handed_back || Some(c.actor_id()) == own_actor);
        if !theirs.is_empty() {
            if theirs
                .iter()
                .any(|c| c.actor_id() != &self.actor && !crate::tag::is_tagged(c))
            {
                return Err(Error::MalformedChanges {
                    id,
                    reason: "a change is authored by another device".into(),
                });
            }
            // Another device's change that looks tagged is not the server's:
            // left out (a device cannot tell, and must not be refused for
            // handing it back).
            theirs.retain(|c| c.actor_id() == &self.actor);
            let key = self.intake_key()?;
            if !theirs.iter().all(|c| crate::tag::verify(&key, c)) {
                return Err(Error::Unauthentic {
                    id,
                    reason: "a change in the server's name that the server did not make".into(),
                });
            }
        }
        let scope = match incoming.peer {
            Some(peer) => ScopeRule::Locked(peer, incoming.known_through),
            None => ScopeRule::Follow,
        };
        let cap = Some(incoming.limits.max_document_bytes);
        let from = incoming.peer.map(|p| p.actor);
        let apply = |changes: Vec<automerge::Change>| {
            move |doc: &mut Automerge| -> Result<()> {
                catch_unwind(AssertUnwindSafe(|| doc.apply_changes(changes)))
                    .map_err(|_| Error::MergePanicked(id))?
                    .map_err(|e| merge_error(id, e))
            }
        };
        let time = |changes: &[automerge::Change]| {
            changes.iter().map(|c| c.timestamp()).max().unwrap_or(0)
        };
        if theirs.is_empty() {
            return self.merge(id, time(&mine), from, scope, cap, apply(mine));
        }
        // The server's own changes are taken as its own (no audit of the
        // device's rights: they are the server's words; a move among them
        // is logged as a move), the device's as always. They may depend on
        // each other in turn (a device's note on an office note on a
        // device's note): they are merged in causal order, alternately,
        // each group once every change it depends on is in.
        let mut result = Merged {
            id,
            new_changes: 0,
            seq: None,
            created: false,
        };
        let (mut theirs, mut mine) = (theirs, mine);
        while !theirs.is_empty() || !mine.is_empty() {
            let mut progressed = false;
            for handed in [true, false] {
                let left = if handed { &mut theirs } else { &mut mine };
                let ready = self.take_ready(id, left)?;
                if ready.is_empty() {
                    continue;
                }
                progressed = true;
                let at = time(&ready);
                let merged = if handed {
                    let current = self.scope_entry(id)?.map(|t| t.current);
                    let rule = match &current {
                        Some(old) => ScopeRule::Move(old),
                        None => ScopeRule::Follow,
                    };
                    self.merge(id, at, from, rule, cap, apply(ready))?
                } else {
                    self.merge(id, at, from, scope, cap, apply(ready))?
                };
                result.new_changes += merged.new_changes;
                result.seq = merged.seq.or(result.seq);
                result.created |= merged.created;
            }
            if !progressed {
                return Err(Error::MissingDependencies {
                    id,
                    missing: theirs.len() + mine.len(),
                });
            }
        }
        Ok(result)
    }

    /// Takes out of `left` the changes whose dependencies the record holds
    /// or that depend only on such changes (a causally closed group).
    fn take_ready(
        &self,
        id: RecordId,
        left: &mut Vec<automerge::Change>,
    ) -> Result<Vec<automerge::Change>> {
        let held: BTreeSet<ChangeHash> =
            left.iter().flat_map(|c| c.deps().iter().copied()).collect();
        let held: BTreeSet<ChangeHash> = match self.index_read().records.contains_key(&id) {
            true => self.with_doc(id, |d| {
                held.into_iter()
                    .filter(|h| d.get_change_by_hash(h).is_some())
                    .collect()
            })?,
            false => BTreeSet::new(),
        };
        let mut ready_hashes = held;
        let mut ready = Vec::new();
        loop {
            let before = ready.len();
            let mut rest = Vec::new();
            for c in left.drain(..) {
                if c.deps().iter().all(|d| ready_hashes.contains(d)) {
                    ready_hashes.insert(c.hash());
                    ready.push(c);
                } else {
                    rest.push(c);
                }
            }
            *left = rest;
            if ready.len() == before {
                return Ok(ready);
            }
        }
    }

    /// Merges a compacted snapshot (from a trusted server) into a record,
    /// creating it if unknown, and makes it durable. Local changes the
    /// snapshot lacks survive.
    pub fn apply_snapshot(&self, id: RecordId, bytes: &[u8]) -> Result<Merged> {
        let merged = self.apply_snapshot_unflushed(id, bytes)?;
        self.make_durable()?;
        Ok(merged)
    }

    /// Like [`Store::apply_snapshot`] but not yet durable; see
    /// [`Store::apply_changes_unflushed`].
    pub fn apply_snapshot_unflushed(&self, id: RecordId, bytes: &[u8]) -> Result<Merged> {
        let mut other = load_snapshot(id, bytes)?;
        let max_time = catch_unwind(AssertUnwindSafe(|| {
            other
                .get_changes(&[])
                .iter()
                .map(|c| c.timestamp())
                .max()
                .unwrap_or(0)
        }))
        .map_err(|_| Error::MergePanicked(id))?;
        self.merge(id, max_time, None, ScopeRule::Follow, None, |doc| {
            catch_unwind(AssertUnwindSafe(|| doc.merge(&mut other)))
                .map_err(|_| Error::MergePanicked(id))?
                .map(|_| ())
                .map_err(|e| merge_error(id, e))
        })
    }

    /// Replaces a record that cannot be merged with the server's copy of it
    /// (`bytes`, a snapshot from a trusted server) by that copy plus this
    /// device's own changes the server does not hold, re-authored on top
    /// (see `rebase`). For a phone restored from an old backup, whose new
    /// changes reuse sequence numbers the server already holds. The
    /// re-authored changes are pending, to be pushed; the server is known to
    /// hold its copy. Returns how many local changes were replayed. Not yet
    /// durable; see [`Store::apply_changes_unflushed`].
    pub fn rebase_onto_unflushed(&self, id: RecordId, bytes: &[u8]) -> Result<usize> {
        let server = load_snapshot(id, bytes)?;
        let mut w = self.lock();
        self.kind_of(id)?;
        let loaded = self.checkout(&mut w, id)?;
        let rebased = catch_unwind(AssertUnwindSafe(|| {
            crate::rebase::rebase(id, &loaded.doc, server, &self.actor, &self.actor_hex)
        }));
        let storage = loaded.storage;
        w.cache.put(id, loaded);
        let rebased = rebased.map_err(|_| Error::MergePanicked(id))??;
        let ours = rebased.doc.get_changes(&rebased.server_heads).len();
        let mut batch = sled::Batch::default();
        let heads: Vec<[u8; 32]> = rebased.server_heads.iter().map(|h| h.0).collect();
        batch.insert(
            key(P_SERVER_HEADS, id.as_bytes()),
            bincode::encode_to_vec(&heads, bincode_config())
                .map_err(|e| Error::Metadata(e.to_string()))?,
        );
        if ours == 0 {
            batch.remove(key(P_PENDING, id.as_bytes()));
        } else {
            batch.insert(key(P_PENDING, id.as_bytes()), &w.next_seq.to_be_bytes());
        }
        let replaced = Loaded {
            doc: rebased.doc,
            // A zero snapshot length makes `prepare` write a whole new
            // snapshot and remove every old chunk.
            storage: Storage {
                snapshot_len: 0,
                ..storage
            },
        };
        // Everything is written again (`heads_before` empty): the stored
        // copy is replaced, not extended.
        self.persist(
            &mut w,
            id,
            replaced,
            Commit {
                heads_before: &[],
                origin: Origin::Rebased,
                updated_at: now_ms(),
                from: None,
                scope: ScopeRule::Follow,
                max_document_bytes: None,
            },
            batch,
        )?;
        Ok(rebased.local_changes)
    }

    fn merge(
        &self,
        id: RecordId,
        max_time: i64,
        from: Option<&ActorId>,
        scope: ScopeRule<'_>,
        max_document_bytes: Option<usize>,
        f: impl FnOnce(&mut Automerge) -> Result<()>,
    ) -> Result<Merged> {
        let mut w = self.lock();
        let existing = match self.index_read().records.get(&id) {
            Some(m) => Some(m.record_kind().ok_or_else(|| Error::Corrupt {
                id,
                reason: "unknown record kind".into(),
            })?),
            None => None,
        };
        let mut loaded = match existing {
            Some(_) => self.checkout(&mut w, id)?,
            None => Loaded {
                doc: Automerge::new().with_actor(self.actor.clone()),
                storage: Storage::default(),
            },
        };
        let heads = loaded.doc.get_heads();
        // Set when the sender may no longer write to a record it knew (it
        // learned of a move away): a re-sent push of changes the record
        // already holds is still acknowledged (its first answer may have
        // been lost), anything new is refused.
        let mut only_known = false;
        if let ScopeRule::Locked(peer, known_through) = scope {
            // A push to a record the sender may not write is refused even
            // when it brings nothing new, and so is a push to an unknown
            // record that creates nothing: the answer must not tell which
            // records exist elsewhere.
            let entry = self.scope_entry(id)?;
            let admitted = match &entry {
                Some(t) => t.admits(peer.may_access, known_through),
                None => existing.is_none(),
            };
            if !admitted {
                if entry.is_some_and(|t| t.ever_admitted(peer.may_access)) {
                    only_known = true;
                } else {
                    w.cache.put(id, loaded);
                    return Err(Error::OutOfScope { id });
                }
            }
        }
        // The server reads the record before the merge so the audit can
        // tell what the sender changed.
        let before = match (scope, existing) {
            (ScopeRule::Locked(..), Some(_)) => Some(
                catch_unwind(AssertUnwindSafe(|| audit::Ledger::read(&loaded.doc)))
                    .map_err(|_| Error::MergePanicked(id))?,
            ),
            _ => None,
        };
        // On any error below, `loaded` is dropped without going back into
        // the cache, so the record reloads from disk exactly as it was.
        let checked = catch_unwind(AssertUnwindSafe(|| {
            let new_changes = check_merged(id, existing, &mut loaded.doc, &heads, f)?;
            if let (ScopeRule::Locked(peer, _), true) = (scope, new_changes > 0) {
                let kind = doc::record_type(&loaded.doc)
                    .as_deref()
                    .and_then(RecordKind::parse)
                    .ok_or_else(|| Error::MalformedChanges {
                        id,
                        reason: "not a gridsync record".into(),
                    })?;
                if existing.is_none() && !is_device_made(id) {
                    return Err(Error::Unauthentic {
                        id,
                        reason: "devices create records under ids they make (UUID v7)".into(),
                    });
                }
                audit::check(id, kind, before.as_ref(), &loaded.doc, peer)?;
            }
            Ok(new_changes)
        }))
        .map_err(|_| Error::MergePanicked(id))?;
        let new_changes = checked?;
        if only_known && new_changes > 0 {
            // `loaded` (with the changes merged in memory) is dropped: the
            // record reloads from disk as it was.
            return Err(Error::OutOfScope { id });
        }
        if new_changes == 0 {
            if existing.is_none() && matches!(scope, ScopeRule::Locked(..)) {
                // An empty push to an unknown id: answered like a record
                // elsewhere, so the answer does not tell which ids exist.
                return Err(Error::OutOfScope { id });
            }
            if existing.is_some() {
                w.cache.put(id, loaded);
            }
            return Ok(Merged {
                id,
                new_changes: 0,
                seq: None,
                created: false,
            });
        }
        let written = self.persist(
            &mut w,
            id,
            loaded,
            Commit {
                heads_before: &heads,
                origin: Origin::Remote,
                updated_at: max_time,
                from,
                scope,
                max_document_bytes,
            },
            sled::Batch::default(),
        )?;
        Ok(Merged {
            id,
            new_changes,
            seq: written.seq,
            created: existing.is_none(),
        })
    }

    /// Moves a record to another street, community or grid: the office's
    /// move, the only way a record's scope changes. Writes the new scope
    /// into the document and the scope table in one batch, and logs the old
    /// scope so devices that lose the record can be told to drop it.
    pub fn move_record(&self, id: RecordId, author: &Author, to: &RecordScope) -> Result<Written> {
        for (field, value) in [
            ("street", &to.street),
            ("community", &to.community),
            ("grid", &to.grid),
        ] {
            doc::check_len(field, value, doc::MAX_SHORT)?;
        }
        let from = self
            .scope_of(id)?
            .or_else(|| self.index_read().records.get(&id).map(|m| m.scope()))
            .ok_or(Error::NotFound(id))?;
        self.update_with(id, None, author, "move", ScopeRule::Move(&from), |tx, _| {
            for (field, value) in [
                ("street", &to.street),
                ("community", &to.community),
                ("grid", &to.grid),
            ] {
                doc::put_register(tx, &automerge::ROOT, field, &value.as_str().into())?;
            }
            Ok(())
        })
    }

    /// The record's authoritative scope, if it has one.
    pub fn scope_of(&self, id: RecordId) -> Result<Option<RecordScope>> {
        Ok(self.scope_entry(id)?.map(|e| e.current))
    }

    /// Scopes the record was moved out of, oldest first.
    pub fn former_scopes(&self, id: RecordId) -> Result<Vec<RecordScope>> {
        Ok(self
            .scope_entry(id)?
            .map(|e| e.former.into_iter().map(|f| f.scope).collect())
            .unwrap_or_default())
    }

    fn scope_entry(&self, id: RecordId) -> Result<Option<StoredScope>> {
        match self.db.get(key(P_SCOPE, id.as_bytes()))? {
            None => Ok(None),
            Some(v) => StoredScope::decode(&v)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    id,
                    reason: format!("scope entry: {e}"),
                }),
        }
    }

    /// Removes a record from this store (a device whose scope no longer
    /// includes it). Refused, returning `false`, while the record has local
    /// changes the server has not acknowledged: those are uploaded first.
    pub fn remove_record(&self, id: RecordId) -> Result<bool> {
        let mut w = self.lock();
        if self.db.get(key(P_PENDING, id.as_bytes()))?.is_some() {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        for prefix in [P_SNAPSHOT, P_INDEX, P_SERVER_HEADS, P_SCOPE] {
            batch.remove(key(prefix, id.as_bytes()));
        }
        for item in self.db.scan_prefix(key(P_CHUNK, id.as_bytes())) {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.write_point()?;
        self.db.apply_batch(batch)?;
        w.cache.pop(&id);
        self.index_mut().remove(id);
        drop(w);
        self.make_durable()?;
        Ok(true)
    }

    /// The bytes of the given changes of a record, in causal order, for
    /// another replica. Hashes the record does not have are skipped.
    pub fn changes_by_hash(&self, id: RecordId, hashes: &[ChangeHash]) -> Result<Vec<u8>> {
        self.kind_of(id)?;
        self.with_doc(id, |d| {
            let mut out = Vec::new();
            for h in hashes {
                if let Some(c) = d.get_change_by_hash(h) {
                    out.extend_from_slice(c.raw_bytes());
                }
            }
            out
        })
    }

    /// A small named value kept with the store (sync cursors and the like),
    /// written durably.
    pub fn set_sync_state(&self, name: &str, value: &[u8]) -> Result<()> {
        self.set_sync_state_unflushed(name, value)?;
        self.make_durable()
    }

    /// Like [`Store::set_sync_state`] but not yet durable.
    pub fn set_sync_state_unflushed(&self, name: &str, value: &[u8]) -> Result<()> {
        self.write_point()?;
        self.db.insert(sync_state_key(name), value)?;
        Ok(())
    }

    /// Removes a value written by [`Store::set_sync_state`]; not yet
    /// durable.
    pub fn clear_sync_state_unflushed(&self, name: &str) -> Result<()> {
        self.write_point()?;
        self.db.remove(sync_state_key(name))?;
        Ok(())
    }

    /// A value written by [`Store::set_sync_state`].
    pub fn sync_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(sync_state_key(name))?.map(|v| v.to_vec()))
    }

    /// Records with local changes the server has not acknowledged, oldest
    /// first by their latest change.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([P_PENDING]) {
            let (k, v) = item?;
            let (Some(id), Ok(seq)) = (
                RecordId::from_slice(&k[1..]),
                <[u8; 8]>::try_from(v.as_ref()),
            ) else {
                return Err(Error::Metadata("bad pending entry".into()));
            };
            out.push(Pending {
                id,
                seq: u64::from_be_bytes(seq),
            });
        }
        out.sort_by_key(|p| p.seq);
        Ok(out)
    }

    /// The heads the server is known to have for a record.
    pub fn server_heads(&self, id: RecordId) -> Result<Vec<ChangeHash>> {
        match self.db.get(key(P_SERVER_HEADS, id.as_bytes()))? {
            None => Ok(Vec::new()),
            Some(v) => {
                let (hashes, _) =
                    bincode::decode_from_slice::<Vec<[u8; 32]>, _>(&v, bincode_config())
                        .map_err(|e| Error::Metadata(format!("server heads: {e}")))?;
                Ok(hashes.into_iter().map(ChangeHash).collect())
            }
        }
    }

    /// Records that the server now has `server_heads` for a record, covering
    /// local changes up to log sequence `upto`. The record stays pending if
    /// it was changed again after `upto`, so nothing made during a sync is
    /// forgotten.
    pub fn acknowledge(&self, id: RecordId, upto: u64, server_heads: &[ChangeHash]) -> Result<()> {
        self.acknowledge_all(&[Ack {
            id,
            upto,
            server_heads: server_heads.to_vec(),
        }])
    }

    /// [`Store::acknowledge`] for many records, in one batch and one flush.
    pub fn acknowledge_all(&self, acks: &[Ack]) -> Result<()> {
        self.acknowledge_all_unflushed(acks)?;
        self.make_durable()
    }

    /// Like [`Store::acknowledge_all`] but not yet durable.
    pub fn acknowledge_all_unflushed(&self, acks: &[Ack]) -> Result<()> {
        let _w = self.lock();
        let mut batch = sled::Batch::default();
        for ack in acks {
            let id = ack.id;
            if ack.server_heads.is_empty() {
                batch.remove(key(P_SERVER_HEADS, id.as_bytes()));
            } else {
                let heads: Vec<[u8; 32]> = ack.server_heads.iter().map(|h| h.0).collect();
                let heads = bincode::encode_to_vec(&heads, bincode_config())
                    .map_err(|e| Error::Metadata(e.to_string()))?;
                batch.insert(key(P_SERVER_HEADS, id.as_bytes()), heads);
            }
            let pending = self.db.get(key(P_PENDING, id.as_bytes()))?;
            if let Some(v) = pending {
                let seq = <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::Metadata("bad pending entry".into()))?;
                if seq <= ack.upto {
                    batch.remove(key(P_PENDING, id.as_bytes()));
                }
            }
        }
        self.write_point()?;
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Prepares to re-offer everything to a server whose log is not the one
    /// this device knew (restored from a backup): forgets what the server
    /// was known to hold of every record and marks every record pending,
    /// so the next pushes send all of this device's own changes (the
    /// server keeps what it already has). Records with nothing of this
    /// device's own leave the pending list at the next push.
    pub fn reoffer_all(&self) -> Result<()> {
        let w = self.lock();
        let seq = w.next_seq.saturating_sub(1).to_be_bytes();
        let mut batch = sled::Batch::default();
        for id in self.index_read().records.keys() {
            batch.remove(key(P_SERVER_HEADS, id.as_bytes()));
            if self.db.get(key(P_PENDING, id.as_bytes()))?.is_none() {
                batch.insert(key(P_PENDING, id.as_bytes()), &seq);
            }
        }
        self.write_point()?;
        self.db.apply_batch(batch)?;
        drop(w);
        self.make_durable()
    }

    /// Forgets what the server is known to have for a record, so the next
    /// push sends its whole history (after the server reported missing
    /// dependencies).
    pub fn forget_server_heads(&self, id: RecordId) -> Result<()> {
        self.write_point()?;
        self.db.remove(key(P_SERVER_HEADS, id.as_bytes()))?;
        self.make_durable()
    }

    /// Up to `limit` index entries with ids after `after`, in id order,
    /// that satisfy `keep`.
    pub fn records_after(
        &self,
        after: Option<RecordId>,
        limit: usize,
        mut keep: impl FnMut(&RecordMeta) -> bool,
    ) -> Vec<RecordMeta> {
        use std::ops::Bound;
        let index = self.index_read();
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        index
            .records
            .range((start, Bound::Unbounded))
            .map(|(_, m)| m)
            .filter(|m| keep(m))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Discards change-log entries before sequence `before` (keeping the
    /// log from growing forever on a server). Devices whose cursor is older
    /// then get snapshots instead. Returns how many entries were removed.
    /// The newest entry is always kept: the next sequence number is
    /// recovered from it at open.
    pub fn truncate_log(&self, before: u64) -> Result<usize> {
        let _w = self.lock();
        let before = before.min(_w.next_seq.saturating_sub(1));
        let end = key(P_LOG, &before.to_be_bytes());
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in self.db.range(key(P_LOG, &0u64.to_be_bytes())..end) {
            let (k, _) = item?;
            batch.remove(k);
            n += 1;
        }
        self.write_point()?;
        self.db.apply_batch(batch)?;
        drop(_w);
        self.make_durable()?;
        Ok(n)
    }

    /// The lowest change-log sequence still kept (1 if none was ever
    /// discarded). A cursor older than this cannot be served from the log.
    pub fn log_floor(&self) -> Result<u64> {
        match self.db.scan_prefix([P_LOG]).next() {
            Some(item) => {
                let (k, _) = item?;
                let seq: [u8; 8] = k[1..]
                    .try_into()
                    .map_err(|_| Error::Metadata("bad change-log key".into()))?;
                Ok(u64::from_be_bytes(seq))
            }
            None => Ok(self.lock().next_seq),
        }
    }
}

/// An acknowledgement from the server for one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: RecordId,
    /// The latest local log sequence the pushed changes covered.
    pub upto: u64,
    /// Heads the server now has (empty: unknown).
    pub server_heads: Vec<ChangeHash>,
}

fn commit_options(op: &str, author: &Author, now: i64) -> CommitOptions {
    CommitOptions::default()
        .with_message(format!(
            "{op} by {} ({})",
            author.user,
            author.role.as_str()
        ))
        .with_time(now)
}

fn encode_index(meta: &RecordMeta, storage: Storage) -> Result<Vec<u8>> {
    let stored = StoredIndex {
        meta: meta.clone(),
        storage,
    };
    bincode::encode_to_vec(&stored, bincode_config()).map_err(|e| Error::Metadata(e.to_string()))
}

/// Applies foreign data with `f`, then checks the result: no missing
/// dependencies, and the fixed fields that make the document this record
/// hold one value each, so a foreign change cannot rename, retype or graft
/// a second record's history onto this one. Returns the number of new
/// changes.
/// fdatasyncs every file under `dir` (a backup just written).
fn sync_dir_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_dir_files(&entry.path())?;
        } else {
            File::open(entry.path())?.sync_data()?;
        }
    }
    Ok(())
}

fn random_log_id() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    getrandom::fill(&mut id)
        .map_err(|e| Error::Io(std::io::Error::other(format!("random source: {e}"))))?;
    Ok(id)
}

/// Loads a snapshot received for record `id`, refusing one over the size
/// limit; a panic in Automerge is an error, not a crash.
fn load_snapshot(id: RecordId, bytes: &[u8]) -> Result<Automerge> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(Error::MalformedChanges {
            id,
            reason: format!(
                "snapshot of {} bytes exceeds {MAX_SNAPSHOT_BYTES}",
                bytes.len()
            ),
        });
    }
    catch_unwind(|| Automerge::load(bytes))
        .map_err(|_| Error::MergePanicked(id))?
        .map_err(|e| Error::MalformedChanges {
            id,
            reason: e.to_string(),
        })
}

/// An Automerge refusal to merge, as our error: a reused change number is a
/// diverged history (see [`Error::Diverged`]), anything else malformed.
fn merge_error(id: RecordId, e: automerge::AutomergeError) -> Error {
    match e {
        automerge::AutomergeError::DuplicateSeqNumber(seq, actor) => Error::Diverged {
            id,
            reason: format!("change {seq} of actor {actor} is held with other content"),
        },
        e => Error::MalformedChanges {
            id,
            reason: e.to_string(),
        },
    }
}

fn check_merged(
    id: RecordId,
    existing: Option<RecordKind>,
    doc: &mut Automerge,
    heads: &[ChangeHash],
    f: impl FnOnce(&mut Automerge) -> Result<()>,
) -> Result<usize> {
    f(doc)?;
    let missing = doc.get_missing_deps(&[]);
    if !missing.is_empty() {
        return Err(Error::MissingDependencies {
            id,
            missing: missing.len(),
        });
    }
    let new_changes = doc.get_changes(heads).len();
    if new_changes == 0 {
        return Ok(0);
    }
    let kind = doc::fixed_str(doc, doc::K_TYPE).and_then(|t| RecordKind::parse(&t));
    let named = doc::fixed_str(doc, "id").and_then(|s| s.parse::<RecordId>().ok());
    let kind_ok = match existing {
        Some(k) => kind == Some(k),
        None => kind.is_some(),
    };
    if !kind_ok || named != Some(id) {
        return Err(Error::MalformedChanges {
            id,
            reason: "the changes do not belong to a gridsync record with this id and kind".into(),
        });
    }
    Ok(new_changes)
}

/// Makes a directory and everything in it readable by its owner only
/// (directories 0700, files 0600), whatever the umask was when they were
/// made: a store holds residents' names and phone numbers. Files sled adds
/// later sit inside the 0700 directory.
pub fn make_private(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                make_private(&entry.path())?;
            } else if kind.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Whether an id is one a device makes ([`RecordId::new`], UUID v7).
/// Work orders' ids are derived by the server and may not be claimed by a
/// device's push.
fn is_device_made(id: RecordId) -> bool {
    id.as_bytes()[6] >> 4 == 7
}

/// Derives the index entry of a document.
fn derive_meta(id: RecordId, d: &Automerge, updated_at: i64) -> Result<RecordMeta> {
    match doc::record_type(d).as_deref().and_then(RecordKind::parse) {
        Some(RecordKind::Issue) => Ok(RecordMeta::from_issue(id, &issue::summary(d), updated_at)),
        Some(RecordKind::Meeting) => {
            Ok(RecordMeta::from_meeting(&meeting::read(d, id), updated_at))
        }
        None => Err(Error::MalformedChanges {
            id,
            reason: "not a gridsync record".into(),
        }),
    }
}
