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
//! | `f` | file hash, record id | the record references the file (see `files`) |
//! | `u` | file hash | a file this device attached and the server does not hold yet: its size |
//! | `t` | record id | the record's search text (servers) |
//! | `q` | record id | what a search holds of it in memory: signature, phone key, work-order number, flags (servers) |
//! | `o`, `x`, `w` | | the hotline outbox, parked events, warnings given (servers; see `outbox`) |
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
//! metadata index is held in memory in full, compactly (`index`: about
//! 400 bytes per record, repeated names interned once), with the figures
//! kept per place and month; opening a store reads the index, not the
//! documents. A store that keeps search texts adds about 170 bytes per
//! record to its entries (`search::Held`) and holds texts up to
//! [`StoreConfig::search_cache_bytes`]; the rest stay on disk. sled's own
//! page cache is bounded (`backend::sled::CACHE_BYTES`).
//!
//! # Modules
//!
//! This file holds the types, the layout and the helpers every part
//! shares; each part of `Store` lives in a module of its own: `open`
//! (sled-specific opening, format migration, index load; `format1` reads
//! the old index layout), `durability` (write point, group commit, fsync),
//! `index` (the in-memory index and the figures kept per cell),
//! `cache` (loading documents), `write` (local writes and the server's
//! change tags), `merge` (what other replicas send), `read` (views,
//! queries, change bytes), `log` (the change log, its identity, backups),
//! `scope` (the scope table, moves), `live` (live queries), `replica` (pending records,
//! acknowledgements, sync state), `files` (attaching files, which records
//! reference which files, what a device has yet to send), `outbox` (the
//! hotline events each write records, their endpoints and delivery
//! state) and `verify`.

mod at_rest;
pub mod backend;
mod cache;
mod durability;
mod erase;
mod files;
pub use files::{AttachTo, FileState};
mod follow;
mod index;
mod live;
pub use live::{LiveCallback, LiveHold, Watched};
mod log;
mod merge;
mod open;
mod outbox;
pub use outbox::{
    Attempt, Delivery, Endpoint, OutboxEvent, Parked, DEFAULT_TIMEOUT_MS, MAX_ENDPOINTS,
};
mod read;
mod replica;
pub(crate) use replica::DROP_STATE;
mod scope;
mod search;
mod verify;
mod write;

use std::collections::{BTreeMap, BTreeSet};
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

use backend::{Backend, Batch, FlushMode, Turn};
use index::Index;

const P_META: u8 = b'm';
const P_SNAPSHOT: u8 = b'd';
const P_CHUNK: u8 = b'c';
const P_INDEX: u8 = b'i';
const P_LOG: u8 = b'l';
const P_PENDING: u8 = b'p';
const P_SERVER_HEADS: u8 = b'h';
const P_SCOPE: u8 = b's';
const P_FILE_REF: u8 = b'f';
const P_UNSENT: u8 = b'u';
/// A record's search text (`crate::search`), when the store keeps them.
const P_TEXT: u8 = b't';
/// What a search holds of a record in memory ([`crate::search::Held`]),
/// written in the same batch as its text.
const P_HELD: u8 = b'q';

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

/// The device code enrollment gave this store (see
/// [`Store::adopt_device_code`]); local, never synced.
const META_DEVICE_CODE: &[u8] = b"device_code";

/// Present while a restore is writing into a shared database: a store
/// that holds it does not open (the restore stopped part way).
const META_RESTORING: &[u8] = b"restoring";

/// The key a restore into a shared database writes first and removes last
/// (see `gridsync restore`): while it is there the store refuses to open.
pub fn unfinished_restore_key() -> Vec<u8> {
    key(P_META, META_RESTORING)
}

/// The on-disk format version of this store.
///
/// * 1 — the first.
/// * 2 — index entries list the fields holding values this build does not
///   know (`RecordMeta::unrecognized`). Migrated from 1 in place.
/// * 3 — the file reference table (`f`): which records reference which
///   files. Migrated from 1 and 2 in place.
/// * 4 — meetings' facts carry the due dates of action items still to be
///   verified (`Facts::action_dues`, `actions_verified_dated`): every
///   index entry is derived again. Migrated from 1, 2 and 3 in place.
/// * 5 — what a search holds of each record in memory is stored beside
///   its text (`q`), so that open need not read the texts, and the
///   texts themselves stay on disk. A store that keeps search texts
///   gets it derived at open from the texts it has (`load_texts`); from
///   4, nothing else changes. A build that knows only format 4 would
///   write texts without it, which is why the number changes.
pub const STORE_FORMAT: u64 = 5;

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

fn file_ref_key(hash: &crate::files::FileHash, id: RecordId) -> Vec<u8> {
    let mut k = key(P_FILE_REF, &hash.0);
    k.extend_from_slice(id.as_bytes());
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

/// [`StoreConfig::search_cache_bytes`] unless set: 128 MiB, the texts of
/// about 100,000 cases of a page of text each.
pub const DEFAULT_SEARCH_CACHE_BYTES: usize = 128 << 20;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub path: PathBuf,
    /// A short code unique to this device (given at enrollment). Case and
    /// meeting numbers are `{code}-{n}`, so offline numbering never collides.
    /// A store that enrollment gave a code (`Store::adopt_device_code`)
    /// keeps that one whatever is passed here; empty opens a store not
    /// enrolled yet, which records nothing until it is.
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
    /// Keep a search text per record (see [`crate::search`]) so that
    /// lists can find records by what is written in them: the server's
    /// store does; a device's has no use for it. Turned on for a store
    /// that had it off, the texts are derived once at open; turned off,
    /// they are removed.
    pub search: bool,
    /// How many bytes of search texts to hold in memory (with
    /// [`StoreConfig::search`]): the most recently written ones, read at
    /// open from the most recently changed records on. A search reads
    /// the texts it needs that are not held from the store. What every
    /// record's search needs in memory beside (about 170 bytes) is held
    /// whatever this is.
    pub search_cache_bytes: usize,
    /// Keep the hotline outbox (see [`crate::hotline`]): every write that
    /// changes a 12345 case as the hotline cares about stores the events
    /// in the same batch. The server's store does; a device's does not.
    pub outbox: bool,
    /// How long a case has, per urgency and category (see
    /// [`crate::deadlines`]): written into a case when its urgency or
    /// category is set here. The national default unless set.
    pub deadlines: crate::DeadlineTable,
    /// The engine the store keeps its bytes in: sled under `path` (the
    /// default), or a PostgreSQL database shared by several servers.
    pub engine: backend::Engine,
    /// Where attached files live (see [`crate::files`]): `path/files`
    /// unless set. Servers sharing a PostgreSQL database must all name
    /// the same shared directory here.
    pub files_dir: Option<PathBuf>,
    /// Where "now" comes from (the system clock unless a test sets one).
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Encrypt the store at rest under this key (see `backend::sealed`):
    /// a new store is created encrypted, a plain one is encrypted at open,
    /// an encrypted one opens only with its key ([`Error::WrongKey`]).
    /// sled only: on PostgreSQL the database's own encryption at rest
    /// applies.
    pub key: Option<backend::StoreKey>,
    /// The key the store was encrypted with until now, when rotating: a
    /// store still under this key is rewritten under `key` at open (or
    /// decrypted, when `key` is `None`). See `at_rest`.
    pub previous_key: Option<backend::StoreKey>,
    /// Tests: stop a format migration, as a crash would, after deriving
    /// this many index entries and before writing any.
    #[cfg(feature = "failpoints")]
    pub stop_migration_after: Option<usize>,
    /// Tests: stop a rewrite under another key (see `at_rest`), as a crash
    /// would, once the copy is complete and before it is swapped in.
    #[cfg(feature = "failpoints")]
    pub stop_rewrite_before_swap: bool,
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
            search: false,
            search_cache_bytes: DEFAULT_SEARCH_CACHE_BYTES,
            outbox: false,
            deadlines: crate::DeadlineTable::default(),
            engine: backend::Engine::Sled,
            files_dir: None,
            clock: crate::clock::system(),
            key: None,
            previous_key: None,
            #[cfg(feature = "failpoints")]
            stop_migration_after: None,
            #[cfg(feature = "failpoints")]
            stop_rewrite_before_swap: false,
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

mod format1;
mod format3;

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
    /// The scope may not change, and must be admitted (server merges);
    /// the changes are the device's, audited, and touch the objects named
    /// (see `audit::touched_ids`).
    Locked(&'a Peer<'a>, u64, &'a [String]),
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
}

/// A gridsync record store on one device or server.
///
/// All methods take `&self`; the store is `Send + Sync` and can be shared
/// between threads. Writes are serialised; queries run concurrently.
pub struct Store {
    db: Box<dyn Backend>,
    path: PathBuf,
    actor: ActorId,
    actor_hex: String,
    /// See [`StoreConfig::device_code`]; set once by enrollment.
    device_code: RwLock<String>,
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
    /// See [`StoreConfig::search`].
    search: bool,
    /// See [`StoreConfig::search_cache_bytes`].
    search_cache_bytes: usize,
    /// The live queries (see `live`).
    live: std::sync::Arc<live::Live>,
    /// See [`StoreConfig::outbox`].
    outbox: bool,
    /// The last outbox event sequence applied, and the last made durable
    /// (delivery reads no further).
    outbox_applied: std::sync::atomic::AtomicU64,
    outbox_durable: std::sync::atomic::AtomicU64,
    /// See [`StoreConfig::deadlines`].
    deadlines: crate::DeadlineTable,
    /// The attached files' area.
    files: crate::files::Files,
    /// Set by [`Store::erase`].
    erased: std::sync::atomic::AtomicBool,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
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
            .field("device_code", &self.device_code())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The current time by this store's clock ([`StoreConfig::clock`]):
    /// the one "now" of everything built on the store.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

impl Store {
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
            std::fs::File::open(entry.path())?.sync_data()?;
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

/// A grid worker's new issue in grid `grid` of S1/C1 (unit tests).
#[cfg(test)]
pub(crate) fn sample_issue(title: &str, grid: &str) -> NewIssue {
    use crate::{IssueKind, Location, Reporter, Source, Urgency};
    NewIssue {
        source: Source::GridPatrol,
        external_ref: None,
        original_statement: String::new(),
        capture_geo: None,
        title: title.into(),
        kind: IssueKind::Demand,
        category: "facilities.lighting".into(),
        urgency: Urgency::Blue,
        reporter: Reporter::default(),
        location: Location {
            street: "S1".into(),
            community: "C1".into(),
            grid: grid.into(),
            ..Location::default()
        },
        description: String::new(),
        report: true,
    }
}
