//! The storage seam: the ordered key-value engine a [`Store`](super::Store)
//! (and the server's identity database) keeps its bytes in.
//!
//! Everything above this trait — documents, the index, the change log, the
//! scope table, merge and audit — is one implementation shared by every
//! engine; an engine only stores ordered keys and makes batches durable.
//! Two engines implement it:
//!
//! * `sled` — embedded, one process (phones, the one-machine server). All
//!   that is sled-specific (opening with lock waiting and move-aside,
//!   fdatasync of the data and blob files) lives in `backend/sled.rs`.
//! * `postgres` (feature `postgres`) — a PostgreSQL database that several
//!   server processes share. See `backend/postgres.rs`.
//!
//! # Write turns
//!
//! A store's writes are serialised: one writer at a time computes a batch
//! from the state it holds in memory (index, cached documents, the next
//! log sequence) and applies it. When several processes share an engine,
//! that serialisation must span them: [`Backend::begin_turn`] waits until
//! no other process is writing, and [`Backend::take_news`] tells the first
//! writer inside a new turn whether another process may have written since
//! this one's last turn (the store then follows the change log to catch up
//! before it computes anything). Applied batches belong to
//! the turn; [`Backend::flush`] makes them durable and ends it. Because a
//! turn is exclusive from its first write until its commit, the change log
//! becomes visible to readers in sequence order: a reader never sees entry
//! 11 before entry 10 is visible too (the classic trap of sequences handed
//! out at insert and made visible at commit cannot occur).

mod sled;
pub use self::sled::SledBackend;
pub mod sealed;
pub use self::sealed::{Sealed, StoreKey};

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
pub use self::postgres::PgBackend;

use std::path::Path;

use crate::error::Result;

/// A set of writes applied atomically.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub(crate) ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl AsRef<[u8]>) {
        self.ops.push((key.into(), Some(value.as_ref().to_vec())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Computes a key's new value from its old one (`None`: absent /
/// remove), for [`Backend::update`].
pub type Updater<'a> = &'a mut dyn FnMut(Option<&[u8]>) -> Option<Vec<u8>>;

/// A key's value and the entries of a range, read together.
pub type KeyAndRange = (Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// What a write turn owes the memory of this process (see
/// [`Backend::take_news`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    /// This process already held the turn, or no other process writes to
    /// the engine: what it holds in memory is current.
    Continued,
    /// A new turn: other processes may have written since this one's last
    /// turn; follow the change log before computing.
    Fresh,
    /// This process's last turn failed to commit: its uncommitted writes
    /// are gone, so everything it derived from them in memory must be
    /// read again.
    Reset,
}

/// How hard [`Backend::flush`] works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// Survives a power cut (fdatasync; a synchronous commit).
    Sync,
    /// Survives a killed process.
    Process,
    /// Written in the engine's own time: a crash may take it back (for
    /// notes that are cheap to learn again, such as a file the server
    /// reported stored).
    Lazy,
}

/// Which engine a store or identity database lives in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Embedded sled at the configured path.
    #[default]
    Sled,
    /// A PostgreSQL database (a `postgres://` URL); feature `postgres`.
    Postgres(String),
}

impl Engine {
    /// Whether the engine is shared with other processes.
    pub fn is_shared(&self) -> bool {
        matches!(self, Engine::Postgres(_))
    }
}

/// The ordered key-value engine under a store. Keys sort bytewise.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The value at `key`, including this process's applied, not yet
    /// durable writes.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// [`Backend::get`] for several keys, in order (one statement on an
    /// engine other processes write to).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Up to `limit` entries with `start <= key < end`, in key order
    /// (`reverse`: from the end).
    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;

    /// The value at `key` and the entries of `start..end`, read as one
    /// state.
    fn get_and_range(&self, key: &[u8], start: &[u8], end: &[u8]) -> Result<KeyAndRange> {
        Ok((self.get(key)?, self.range(start, end, usize::MAX, false)?))
    }

    /// [`Backend::get_and_range`] for several keys at once (one statement
    /// on an engine other processes write to): `(key, start, end)` each.
    fn get_and_range_many(
        &self,
        reads: &[(Vec<u8>, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<KeyAndRange>> {
        reads
            .iter()
            .map(|(k, s, e)| self.get_and_range(k, s, e))
            .collect()
    }

    /// Begins this process's write turn, or continues the one it holds;
    /// waits while another process holds one. What a new turn owes the
    /// memory is then taken with [`Backend::take_news`].
    fn begin_turn(&self) -> Result<()>;

    /// What the current turn owes the memory of this process, taken (the
    /// first writer inside a new turn catches up; the others find
    /// [`Turn::Continued`]). Set when the turn begins, atomically with it.
    fn take_news(&self) -> Turn {
        Turn::Continued
    }

    /// Puts back what [`Backend::take_news`] took (catching up failed).
    fn owe_news(&self, _news: Turn) {}

    /// Applies a batch atomically within the current turn (visible to this
    /// process at once, durable after [`Backend::flush`]).
    fn apply(&self, batch: Batch) -> Result<()>;

    /// Makes every applied batch durable and ends the turn.
    fn flush(&self, mode: FlushMode) -> Result<()>;

    /// Atomically replaces the value at `key` by `f(old)` (`None`
    /// removes it) and makes it durable as `mode` says, outside any turn;
    /// returns the old value. `f` may run more than once.
    fn update(&self, key: &[u8], mode: FlushMode, f: Updater<'_>) -> Result<Option<Vec<u8>>>;

    /// Applies a batch atomically and durably as `mode` says, on its own,
    /// outside any turn (for keys no turn writes: the identity database).
    fn write_now(&self, batch: Batch, mode: FlushMode) -> Result<()>;

    /// Whether other processes write to this engine too.
    fn is_shared(&self) -> bool {
        false
    }

    /// Whether this process holds a write turn now (always false on an
    /// engine no other process writes to).
    fn holds_turn(&self) -> bool {
        false
    }

    /// The engine under this one when this one transforms values (an
    /// encrypted store's sealed bytes): what a backup copies, so that the
    /// copy is exactly as sealed as the store.
    fn raw(&self) -> Option<&dyn Backend> {
        None
    }

    /// How `value` is stored at `key` in [`Backend::raw`]'s engine (sealed,
    /// for an encrypted store): for a value added to a raw copy.
    fn stored_form(&self, _key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        Ok(value.to_vec())
    }

    /// Where the data lives, for messages (never a password).
    fn describe(&self) -> String;
}

/// Every key starting with `prefix`, in order, read a page at a time.
pub fn scan<'a>(backend: &'a dyn Backend, prefix: &[u8]) -> Scan<'a> {
    Scan {
        backend,
        next: prefix.to_vec(),
        end: prefix_end(prefix),
        page: Vec::new(),
        done: false,
    }
}

/// The first key after every key starting with `prefix` (empty: none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): up to the end of the keyspace.
    vec![u8::MAX; 64]
}

/// See [`scan`].
#[derive(Debug)]
pub struct Scan<'a> {
    backend: &'a dyn Backend,
    next: Vec<u8>,
    end: Vec<u8>,
    page: Vec<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

const SCAN_PAGE: usize = 512;

impl Iterator for Scan<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() {
            if self.done {
                return None;
            }
            match self.backend.range(&self.next, &self.end, SCAN_PAGE, false) {
                Ok(mut page) => {
                    if page.len() < SCAN_PAGE {
                        self.done = true;
                    }
                    if let Some((k, _)) = page.last() {
                        let mut after = k.clone();
                        after.push(0);
                        self.next = after;
                    }
                    page.reverse();
                    self.page = page;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        self.page.pop().map(Ok)
    }
}

/// The last entry whose key starts with `prefix`.
pub fn last(backend: &dyn Backend, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    Ok(backend
        .range(prefix, &prefix_end(prefix), 1, true)?
        .into_iter()
        .next())
}

/// The first entry whose key starts with `prefix`.
pub fn first(backend: &dyn Backend, prefix: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    Ok(backend
        .range(prefix, &prefix_end(prefix), 1, false)?
        .into_iter()
        .next())
}

/// Opens the engine for the keyspace `space` ("records", "identity"):
/// sled at `path`, or the PostgreSQL database's table for that space.
pub fn open(
    engine: &Engine,
    path: &Path,
    space: &str,
    temporary: bool,
) -> Result<Box<dyn Backend>> {
    match engine {
        Engine::Sled => Ok(Box::new(SledBackend::open(path, temporary)?)),
        #[cfg(feature = "postgres")]
        Engine::Postgres(url) => Ok(Box::new(PgBackend::open(url, space)?)),
        #[cfg(not(feature = "postgres"))]
        Engine::Postgres(_) => {
            let _ = space;
            Err(crate::Error::Storage(
                "this build has no PostgreSQL support (feature `postgres`)".into(),
            ))
        }
    }
}
