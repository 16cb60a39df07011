//! Encryption at rest: an engine wrapper that seals every value it writes
//! with XChaCha20-Poly1305 under the key the app supplies, and opens what
//! it reads.
//!
//! # What is sealed
//!
//! Every value of every key — record bytes, change-log entries, index
//! entries, pending and sync bookkeeping, metadata, and sled's blob files
//! (which hold large values) — because the wrapper sits under all of
//! them. Keys stay in the clear: they are one-byte prefixes with record
//! ids (random, or derived from a work-order number under the store's
//! own secret), file hashes, big-endian sequence numbers and metadata
//! names, which the engine needs for ordering and which carry no
//! content.
//!
//! # Format
//!
//! A sealed value (`crate::seal`) is 41 bytes more than the plain value.
//! The associated data is the value's key, so a value moved to another
//! key (one record's bytes under another's id) fails to open instead of
//! being read as that record.
//!
//! The store says it is sealed, and with which key, by one value at
//! [`MARKER`] (a key outside every prefix the store uses): a known text
//! sealed under the key. Opening with another key fails that check and
//! touches nothing ([`Error::WrongKey`]).
//!
//! Rotating to a new key, and sealing a store that was plain, rewrite the
//! store into a new directory and swap it in (see `store::open`): at
//! every moment the store on disk opens with one of the two keys.

use super::{Backend, Batch, FlushMode, KeyAndRange, Turn, Updater};
use crate::error::{Error, Result};
use crate::seal::Sealer;
pub use crate::seal::{StoreKey, OVERHEAD};

/// Where a sealed store keeps its key check. No store prefix is `!`.
pub const MARKER: &[u8] = b"!sealed";

/// What the key check seals.
const CHECK: &[u8] = b"gridsync sealed store, format 1";

fn damaged(key: &[u8]) -> Error {
    Error::Storage(format!(
        "a stored value (key {}) does not open under the store's key: the store is damaged",
        String::from_utf8_lossy(&key[..key.len().min(1)])
    ))
}

/// Whether the engine holds a sealed store.
pub fn is_sealed(inner: &dyn Backend) -> Result<bool> {
    Ok(inner.get(MARKER)?.is_some())
}

/// Whether the engine holds nothing at all.
pub fn is_empty(inner: &dyn Backend) -> Result<bool> {
    Ok(inner.range(&[], &[u8::MAX; 8], 1, false)?.is_empty())
}

/// Whether `key` opens the sealed store in `inner`.
pub fn opens_with(inner: &dyn Backend, key: &StoreKey) -> Result<bool> {
    let Some(check) = inner.get(MARKER)? else {
        return Ok(false);
    };
    Ok(Sealer::new(key)?
        .open(MARKER, &check)
        .is_some_and(|c| c == CHECK))
}

/// An engine whose values are sealed under one key.
pub struct Sealed {
    inner: Box<dyn Backend>,
    sealer: Sealer,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Sealed {
    /// Seals the engine, which must hold nothing yet, under `key`: writes
    /// the key check durably.
    pub fn create(inner: Box<dyn Backend>, key: &StoreKey) -> Result<Sealed> {
        if !is_empty(inner.as_ref())? {
            return Err(Error::Storage(
                "only an empty store can be sealed in place".into(),
            ));
        }
        let sealer = Sealer::new(key)?;
        let mut batch = Batch::default();
        batch.insert(MARKER, sealer.seal(MARKER, CHECK)?);
        inner.write_now(batch, FlushMode::Sync)?;
        Ok(Sealed { inner, sealer })
    }

    /// Opens the sealed store in the engine with `key`:
    /// [`Error::WrongKey`] when the key is not the store's (or the store
    /// is not sealed), and nothing is touched.
    pub fn open(inner: Box<dyn Backend>, key: &StoreKey) -> Result<Sealed> {
        if !is_sealed(inner.as_ref())? {
            return Err(Error::WrongKey(
                "this store is not encrypted; open it without a key".into(),
            ));
        }
        if !opens_with(inner.as_ref(), key)? {
            return Err(Error::WrongKey(
                "the key given is not this store's key".into(),
            ));
        }
        Ok(Sealed {
            inner,
            sealer: Sealer::new(key)?,
        })
    }

    fn open_value(&self, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        self.sealer.open(key, sealed).ok_or_else(|| damaged(key))
    }

    fn open_entries(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        entries
            .into_iter()
            .filter(|(k, _)| k != MARKER)
            .map(|(k, v)| {
                let plain = self.open_value(&k, &v)?;
                Ok((k, plain))
            })
            .collect()
    }

    fn seal_batch(&self, batch: Batch) -> Result<Batch> {
        let mut sealed = Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => {
                    let v = self.sealer.seal(&k, &v)?;
                    sealed.insert(k, v);
                }
                None => sealed.remove(k),
            }
        }
        Ok(sealed)
    }
}

impl Backend for Sealed {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if key == MARKER {
            return Ok(None);
        }
        self.inner
            .get(key)?
            .map(|v| self.open_value(key, &v))
            .transpose()
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = self.inner.range(start, end, limit, reverse)?;
        // The key check is not the store's: when a range holds it, read one
        // more so the caller still gets `limit` entries.
        if entries.iter().any(|(k, _)| k == MARKER) && entries.len() == limit {
            entries = self
                .inner
                .range(start, end, limit.saturating_add(1), reverse)?;
        }
        self.open_entries(entries)
    }

    fn get_and_range(&self, key: &[u8], start: &[u8], end: &[u8]) -> Result<KeyAndRange> {
        let (value, entries) = self.inner.get_and_range(key, start, end)?;
        let value = match value {
            Some(v) if key != MARKER => Some(self.open_value(key, &v)?),
            _ => None,
        };
        Ok((value, self.open_entries(entries)?))
    }

    fn get_and_range_many(
        &self,
        reads: &[(Vec<u8>, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<KeyAndRange>> {
        let read = self.inner.get_and_range_many(reads)?;
        read.into_iter()
            .zip(reads)
            .map(|((value, entries), (key, _, _))| {
                let value = match value {
                    Some(v) if key.as_slice() != MARKER => Some(self.open_value(key, &v)?),
                    _ => None,
                };
                Ok((value, self.open_entries(entries)?))
            })
            .collect()
    }

    fn begin_turn(&self) -> Result<()> {
        self.inner.begin_turn()
    }

    fn take_news(&self) -> Turn {
        self.inner.take_news()
    }

    fn owe_news(&self, news: Turn) {
        self.inner.owe_news(news)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        self.inner.apply(self.seal_batch(batch)?)
    }

    fn flush(&self, mode: FlushMode) -> Result<()> {
        self.inner.flush(mode)
    }

    fn update(&self, key: &[u8], mode: FlushMode, f: Updater<'_>) -> Result<Option<Vec<u8>>> {
        let mut failed: Option<Error> = None;
        let old = self.inner.update(key, mode, &mut |old| {
            failed = None;
            let plain = match old.map(|v| self.open_value(key, v)).transpose() {
                Ok(plain) => plain,
                Err(e) => {
                    // Leave the value as it was.
                    failed = Some(e);
                    return old.map(<[u8]>::to_vec);
                }
            };
            match f(plain.as_deref()).map(|new| self.sealer.seal(key, &new)) {
                None => None,
                Some(Ok(sealed)) => Some(sealed),
                Some(Err(e)) => {
                    failed = Some(e);
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        old.map(|v| self.open_value(key, &v)).transpose()
    }

    fn write_now(&self, batch: Batch, mode: FlushMode) -> Result<()> {
        self.inner.write_now(self.seal_batch(batch)?, mode)
    }

    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    fn holds_turn(&self) -> bool {
        self.inner.holds_turn()
    }

    fn raw(&self) -> Option<&dyn Backend> {
        Some(self.inner.as_ref())
    }

    fn stored_form(&self, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        self.sealer.seal(key, value)
    }

    fn describe(&self) -> String {
        format!("{} (encrypted)", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::SledBackend;

    fn temp() -> Box<dyn Backend> {
        Box::new(SledBackend::open(std::path::Path::new(""), true).expect("sled"))
    }

    #[test]
    fn values_round_trip_and_are_bound_to_their_keys() {
        let key = StoreKey::generate().unwrap();
        let sealed = Sealed::create(temp(), &key).unwrap();
        let mut batch = Batch::default();
        batch.insert(b"da".to_vec(), b"13800138000");
        batch.insert(b"db".to_vec(), b"");
        sealed.apply(batch).unwrap();
        assert_eq!(sealed.get(b"da").unwrap().unwrap(), b"13800138000");
        assert_eq!(sealed.get(b"db").unwrap().unwrap(), b"");
        let raw = sealed.raw().unwrap();
        let stored = raw.get(b"da").unwrap().unwrap();
        assert_eq!(stored.len(), 11 + OVERHEAD);
        assert!(!stored.windows(11).any(|w| w == b"13800138000"));
        // Moved to another key, a value does not open there.
        let mut batch = Batch::default();
        batch.insert(b"db".to_vec(), &stored);
        raw.apply(batch).unwrap();
        assert_eq!(sealed.get(b"db").unwrap_err().code(), "storage");
        // The key check is not one of the store's values.
        assert_eq!(sealed.get(MARKER).unwrap(), None);
        let all = sealed.range(b"", &[0xff], 10, false);
        assert!(all.is_err(), "db does not open: {all:?}");
    }

    #[test]
    fn ranges_skip_the_key_check_and_still_fill_their_limit() {
        let key = StoreKey::generate().unwrap();
        let sealed = Sealed::create(temp(), &key).unwrap();
        let mut batch = Batch::default();
        batch.insert(b" a".to_vec(), b"1");
        batch.insert(b"a".to_vec(), b"2");
        sealed.apply(batch).unwrap();
        let got = sealed.range(b"", &[0xff], 2, false).unwrap();
        assert_eq!(
            got,
            vec![
                (b" a".to_vec(), b"1".to_vec()),
                (b"a".to_vec(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn the_wrong_key_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let open =
            || -> Box<dyn Backend> { Box::new(SledBackend::open(dir.path(), false).unwrap()) };
        let key = StoreKey::generate().unwrap();
        let sealed = Sealed::create(open(), &key).unwrap();
        let mut batch = Batch::default();
        batch.insert(b"m1".to_vec(), b"x");
        sealed.apply(batch).unwrap();
        sealed.flush(FlushMode::Sync).unwrap();
        let before = sealed
            .raw()
            .unwrap()
            .range(b"", &[0xff; 8], 100, false)
            .unwrap();
        drop(sealed);
        let other = StoreKey::generate().unwrap();
        let err = Sealed::open(open(), &other).unwrap_err();
        assert_eq!(err.code(), "wrong_key");
        let inner = open();
        assert!(!opens_with(inner.as_ref(), &other).unwrap());
        assert!(opens_with(inner.as_ref(), &key).unwrap());
        assert_eq!(inner.range(b"", &[0xff; 8], 100, false).unwrap(), before);
        let err = Sealed::open(inner, &other).unwrap_err();
        assert!(err.to_string().contains("not this store's key"), "{err}");
        assert!(StoreKey::from_bytes(&[0; 31]).is_err());
        assert_eq!(format!("{key:?}"), "StoreKey(..)");
    }

    #[test]
    fn an_update_seals_what_it_writes_and_returns_the_old_value_opened() {
        let key = StoreKey::generate().unwrap();
        let sealed = Sealed::create(temp(), &key).unwrap();
        let old = sealed
            .update(b"mq", FlushMode::Lazy, &mut |old| {
                assert_eq!(old, None);
                Some(b"one".to_vec())
            })
            .unwrap();
        assert_eq!(old, None);
        let old = sealed
            .update(b"mq", FlushMode::Lazy, &mut |old| {
                assert_eq!(old, Some(&b"one"[..]));
                Some(b"two".to_vec())
            })
            .unwrap();
        assert_eq!(old.as_deref(), Some(&b"one"[..]));
        assert_eq!(sealed.get(b"mq").unwrap().as_deref(), Some(&b"two"[..]));
        let raw = sealed.raw().unwrap().get(b"mq").unwrap().unwrap();
        assert_eq!(raw.len(), 3 + OVERHEAD);
    }
}
