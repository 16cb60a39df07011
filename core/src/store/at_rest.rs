//! Encryption at rest, decided at open: which key the store's engine is
//! wrapped with (`backend::sealed`), encrypting a plain store, rotating to
//! a new key, and finishing a rewrite a crash interrupted.
//!
//! # The rules
//!
//! | store on disk | `key` | `previous_key` | result |
//! |---|---|---|---|
//! | empty | none | — | plain store |
//! | empty | K | — | encrypted under K |
//! | plain, not empty | none | — | plain store |
//! | plain, not empty | K | — | rewritten encrypted under K |
//! | under K | K | — | opens |
//! | under P | K | P | rewritten under K (rotation) |
//! | under P | none | P | rewritten plain |
//! | encrypted | anything else | | [`Error::WrongKey`], nothing touched |
//!
//! # Rewriting
//!
//! Encrypting a plain store and rotating keys rewrite every value into a
//! new sled directory beside the store (`<path>.rewrite`), seal the
//! attached files into it under the new key, sync it, mark it complete, and swap it in by
//! two renames (`<path>` → `<path>.rewrite-old`, `<path>.rewrite` →
//! `<path>`); the old directory is then deleted. A crash at any point
//! leaves a store that opens with one of the two keys: before the mark,
//! the old store is intact and the unfinished copy is discarded at the
//! next open; after it, the next open finishes the swap. Rewriting, not
//! re-sealing in place, is what leaves no value of the old key (or no
//! plain value) in the store's files: sled keeps overwritten values in
//! its segments until it reuses them. (The deleted files' blocks remain
//! on the flash until the file system reuses them; phones' file-based
//! encryption covers those.)

use std::fs;
use std::sync::Arc;

use super::*;
use crate::files::Files;
use crate::seal::Sealer;
use backend::sealed;
use backend::{Sealed, SledBackend, StoreKey};

/// Inside a rewritten directory: every value and file is in place.
const COMPLETE: &str = "REWRITE-COMPLETE";

/// Opens the store's engine, wrapped as its key says, after finishing or
/// discarding an interrupted rewrite and doing the rewrite `config` asks
/// for.
pub(super) fn open_engine(config: &StoreConfig) -> Result<Box<dyn Backend>> {
    let (key, previous) = (config.key.as_ref(), config.previous_key.as_ref());
    let open = || backend::open(&config.engine, &config.path, "records", config.temporary);
    if config.engine.is_shared() {
        if key.is_some() || previous.is_some() {
            return Err(Error::InvalidInput {
                field: "key",
                reason: "a store on PostgreSQL is encrypted at rest by the database \
                         (its disk or tablespace encryption); store keys are for stores on sled"
                    .into(),
            });
        }
        return open();
    }
    if (key.is_some() || previous.is_some()) && config.files_dir.is_some() {
        return Err(Error::InvalidInput {
            field: "key",
            reason: "an encrypted store keeps its files in its own directory (no files_dir)".into(),
        });
    }
    if !config.temporary {
        super::erase::clear_erased(&config.path)?;
        finish_rewrite(&config.path)?;
    }
    let db = open()?;
    let from = if sealed::is_sealed(db.as_ref())? {
        if let Some(k) = key.filter(|k| sealed::opens_with(db.as_ref(), k).unwrap_or(false)) {
            return Ok(Box::new(Sealed::open(db, k)?));
        }
        match previous {
            Some(p) if sealed::opens_with(db.as_ref(), p)? => Some(p),
            _ => {
                return Err(Error::WrongKey(match key {
                    None => "this store is encrypted: open it with its key".into(),
                    Some(_) => "the key given is not this store's key".into(),
                }))
            }
        }
    } else {
        match key {
            None => return Ok(db),
            Some(k) if sealed::is_empty(db.as_ref())? => {
                return Ok(Box::new(Sealed::create(db, k)?));
            }
            Some(_) => None,
        }
    };
    if config.temporary {
        return Err(Error::InvalidInput {
            field: "key",
            reason: "a temporary store cannot be rewritten under another key".into(),
        });
    }
    rewrite(config, db, from, key)?;
    let db = open()?;
    match key {
        Some(k) => Ok(Box::new(Sealed::open(db, k)?)),
        None => Ok(db),
    }
}

fn beside(path: &Path, suffix: &str) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| Error::InvalidInput {
        field: "path",
        reason: format!("{} names no directory", path.display()),
    })?;
    let mut name = name.to_os_string();
    name.push(format!(".{suffix}"));
    Ok(path.with_file_name(name))
}

fn sync_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Finishes a swap a crash interrupted, or discards a copy that was not
/// complete (the store it was made from is intact).
fn finish_rewrite(path: &Path) -> Result<()> {
    let new = beside(path, "rewrite")?;
    let old = beside(path, "rewrite-old")?;
    if new.exists() {
        if path.exists() {
            // Before the swap: the store in place is the one to open.
            fs::remove_dir_all(&new)?;
        } else if new.join(COMPLETE).exists() {
            fs::rename(&new, path)?;
            sync_parent(path)?;
        } else {
            return Err(Error::Storage(format!(
                "{} is missing and the copy beside it is incomplete",
                path.display()
            )));
        }
    }
    if old.exists() && path.exists() {
        fs::remove_dir_all(&old)?;
    }
    match fs::remove_file(path.join(COMPLETE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Rewrites the store in `db` (sealed under `from`, or plain) into a new
/// directory under `to` (or plain), then swaps it in. `db` is closed.
fn rewrite(
    config: &StoreConfig,
    db: Box<dyn Backend>,
    from: Option<&StoreKey>,
    to: Option<&StoreKey>,
) -> Result<()> {
    let path = &config.path;
    let new = beside(path, "rewrite")?;
    let old = beside(path, "rewrite-old")?;
    if new.exists() {
        fs::remove_dir_all(&new)?;
    }
    let source: Box<dyn Backend> = match from {
        Some(k) => Box::new(Sealed::open(db, k)?),
        None => db,
    };
    {
        let raw: Box<dyn Backend> = Box::new(SledBackend::open(&new, false)?);
        let target: Box<dyn Backend> = match to {
            Some(k) => Box::new(Sealed::create(raw, k)?),
            None => raw,
        };
        let mut batch = Batch::default();
        for item in backend::scan(source.as_ref(), &[]) {
            let (k, v) = item?;
            batch.insert(k, v);
            if batch.len() == 4096 {
                target.apply(std::mem::take(&mut batch))?;
            }
        }
        target.apply(batch)?;
        target.flush(FlushMode::Sync)?;
    }
    drop(source);
    if path.join("files").exists() {
        // The attached files, opened under the old key, sealed under the
        // new one (transfers in progress are asked for again).
        let sealer = |k: Option<&StoreKey>| -> Result<Option<Arc<Sealer>>> {
            Ok(k.map(Sealer::new).transpose()?.map(Arc::new))
        };
        let old_files = Files::open_sealed(&path.join("files"), false, sealer(from)?)?;
        let new_files = Files::open_sealed(&new.join("files"), false, sealer(to)?)?;
        old_files.copy_resealed(&new_files)?;
    }
    sync_dir_files(&new)?;
    fs::File::create(new.join(COMPLETE))?.sync_all()?;
    fs::File::open(&new)?.sync_all()?;
    #[cfg(feature = "failpoints")]
    if config.stop_rewrite_before_swap {
        return Err(Error::Storage("stopped before the swap (test)".into()));
    }
    fs::rename(path, &old)?;
    fs::rename(&new, path)?;
    sync_parent(path)?;
    fs::remove_dir_all(&old)?;
    fs::remove_file(path.join(COMPLETE))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Reporter, Role};

    fn config(path: &Path, key: Option<&StoreKey>, previous: Option<&StoreKey>) -> StoreConfig {
        let mut config = StoreConfig::new(path, "P1");
        config.durability = Durability::Flush;
        config.key = key.cloned();
        config.previous_key = previous.cloned();
        config
    }

    fn record(store: &Store) -> RecordId {
        let worker = Author::new("w1", Role::GridWorker);
        let mut new = sample_issue("楼道堆物", "G1");
        new.reporter = Reporter {
            name: "张三".into(),
            phone: "13800138000".into(),
            ..Reporter::default()
        };
        store.create_issue(&worker, new).unwrap()
    }

    fn title(store: &Store, id: RecordId) -> String {
        store.issue(id).unwrap().title
    }

    fn code(r: Result<Store>) -> &'static str {
        r.map(|_| ()).unwrap_err().code()
    }

    #[test]
    fn an_encrypted_store_opens_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let (k, other) = (StoreKey::generate().unwrap(), StoreKey::generate().unwrap());
        let store = Store::open(config(&path, Some(&k), None)).unwrap();
        let id = record(&store);
        drop(store);
        assert_eq!(code(Store::open(config(&path, None, None))), "wrong_key");
        assert_eq!(
            code(Store::open(config(&path, Some(&other), None))),
            "wrong_key"
        );
        // A wrong "previous" key does not open it either.
        assert_eq!(
            code(Store::open(config(&path, Some(&other), Some(&other)))),
            "wrong_key"
        );
        let store = Store::open(config(&path, Some(&k), None)).unwrap();
        assert_eq!(title(&store, id), "楼道堆物");
        store.verify().unwrap();
    }

    #[test]
    fn a_plain_store_is_encrypted_when_opened_with_a_key_and_keys_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = Store::open(config(&path, None, None)).unwrap();
        let id = record(&store);
        let head = store.log_head().unwrap();
        drop(store);

        let k1 = StoreKey::generate().unwrap();
        let store = Store::open(config(&path, Some(&k1), None)).unwrap();
        assert_eq!(title(&store, id), "楼道堆物");
        assert_eq!(store.log_head().unwrap(), head);
        let second = record(&store);
        drop(store);
        assert_eq!(code(Store::open(config(&path, None, None))), "wrong_key");
        assert!(!beside(&path, "rewrite").unwrap().exists());
        assert!(!beside(&path, "rewrite-old").unwrap().exists());

        // Rotation: the new key, with the old one as previous.
        let k2 = StoreKey::generate().unwrap();
        let store = Store::open(config(&path, Some(&k2), Some(&k1))).unwrap();
        assert_eq!(title(&store, second), "楼道堆物");
        assert_eq!(store.len().unwrap(), 2);
        drop(store);
        assert_eq!(
            code(Store::open(config(&path, Some(&k1), None))),
            "wrong_key"
        );
        // Opening again with both is simply opening with the new one.
        drop(Store::open(config(&path, Some(&k2), Some(&k1))).unwrap());

        // And back to plain.
        let store = Store::open(config(&path, None, Some(&k2))).unwrap();
        assert_eq!(store.len().unwrap(), 2);
        store.verify().unwrap();
        drop(store);
        let store = Store::open(config(&path, None, None)).unwrap();
        assert_eq!(title(&store, id), "楼道堆物");
    }

    #[test]
    fn an_incomplete_copy_is_discarded_and_a_complete_one_swapped_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let k1 = StoreKey::generate().unwrap();
        let store = Store::open(config(&path, Some(&k1), None)).unwrap();
        let id = record(&store);
        drop(store);
        // A copy a crash interrupted before it was complete.
        let new = beside(&path, "rewrite").unwrap();
        fs::create_dir_all(&new).unwrap();
        fs::write(new.join("db"), b"partial").unwrap();
        let store = Store::open(config(&path, Some(&k1), None)).unwrap();
        assert_eq!(title(&store, id), "楼道堆物");
        assert!(!new.exists());
        drop(store);
        // A complete copy, the old store renamed away, the crash before the
        // second rename: the next open finishes the swap.
        let k2 = StoreKey::generate().unwrap();
        drop(Store::open(config(&path, Some(&k2), Some(&k1))).unwrap());
        fs::rename(&path, &new).unwrap();
        fs::write(new.join(COMPLETE), b"").unwrap();
        let old = beside(&path, "rewrite-old").unwrap();
        fs::create_dir_all(&old).unwrap();
        let store = Store::open(config(&path, Some(&k2), None)).unwrap();
        assert_eq!(title(&store, id), "楼道堆物");
        assert!(!new.exists() && !old.exists());
        assert!(!path.join(COMPLETE).exists());
    }

    #[test]
    fn a_key_for_a_temporary_store_seals_it_and_values_are_not_plain() {
        let k = StoreKey::generate().unwrap();
        let mut config = StoreConfig::new("", "P1");
        config.temporary = true;
        config.key = Some(k);
        let store = Store::open(config).unwrap();
        let id = record(&store);
        let raw = store.db.raw().expect("sealed");
        let mut seen = 0;
        for item in backend::scan(raw, &[]) {
            let (_, v) = item.unwrap();
            seen += 1;
            assert!(!v.windows(11).any(|w| w == b"13800138000"));
        }
        assert!(seen > 5, "{seen} values");
        assert_eq!(title(&store, id), "楼道堆物");
    }
}
