//! Backups and restores of a server's data directory.
//!
//! A backup is a directory holding a copy of the record store (`store/`)
//! and of the identity database (`identity/`), taken while the server runs
//! (`POST /v1/admin/backup`, which `gridsync backup --server URL` calls) or
//! while it is stopped (`gridsync backup`), and a `BACKUP` file saying what
//! it holds. The record store is copied at one point (writers wait for the
//! copy); the identity database right after it.
//!
//! A restore (`gridsync restore`, the server stopped) moves the current
//! stores aside, puts the backup's in place and gives the restored change
//! log a new identity. On PostgreSQL (`--database URL`) a backup is the
//! same sled copy, taken inside a write turn (every node's writes wait
//! for it); a restore writes the backup into an empty database (it
//! refuses one that holds records: nothing is moved aside there). Devices notice the new log at their next sync: they
//! offer every change of their own again (so whatever a phone still holds
//! comes back, including what the server had acknowledged after the
//! backup) and follow the restored log from its start (`sync::serve`,
//! `SyncResponse::reset`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use gridsync_core::{Store, StoreConfig};

use crate::api::AppState;
use crate::identity::Identity;
use gridsync_core::store::backend::Engine;
use gridsync_core::Clock;

/// What a backup holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub to: PathBuf,
    pub records: usize,
    /// The record store's change-log head in the backup.
    pub log_head: u64,
    /// Entries of the identity database (organisation, devices, logins).
    pub identity_entries: usize,
}

/// Backs up an open server (its stores stay in use) into `dest`, a new
/// directory given as an absolute path.
pub fn backup_open(state: &AppState, dest: &Path) -> anyhow::Result<Summary> {
    backup(&state.store, &state.identity, dest)
}

/// Backs up the stores of a stopped server's data directory, or (on
/// PostgreSQL) of the database, whose servers may keep running.
pub fn backup_stopped(engine: &Engine, data_dir: &Path, dest: &Path) -> anyhow::Result<Summary> {
    let store = Store::open(crate::store_config(engine, data_dir)).with_context(|| {
        format!(
            "opening {} (if the server is running, pass --server URL)",
            data_dir.display()
        )
    })?;
    let identity = Identity::open(engine, &data_dir.join("identity"))
        .map_err(|e| anyhow::anyhow!("opening the identity database: {e}"))?;
    backup(&store, &identity, dest)
}

fn backup(store: &Store, identity: &Identity, dest: &Path) -> anyhow::Result<Summary> {
    if !dest.is_absolute() {
        anyhow::bail!("the backup destination must be an absolute path");
    }
    if dest.exists() {
        anyhow::bail!("{} exists; back up into a new directory", dest.display());
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    gridsync_core::store::make_private(dest)?;
    let (records, log_head) = store.backup_to(&dest.join("store"))?;
    let identity_entries = identity
        .backup_to(&dest.join("identity"))
        .map_err(|e| anyhow::anyhow!("backing up the identity database: {e}"))?;
    let summary = Summary {
        to: dest.to_owned(),
        records,
        log_head,
        identity_entries,
    };
    std::fs::write(
        dest.join("BACKUP"),
        format!(
            "gridsync backup\nrecords {records}\nlog_head {log_head}\nidentity_entries {identity_entries}\ntaken_at_ms {}\n",
            store.now_ms()
        ),
    )?;
    gridsync_core::store::make_private(dest)?;
    Ok(summary)
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub records: usize,
    /// Where the stores that were replaced were moved.
    pub replaced: Option<PathBuf>,
    /// The restored log's new identity, hex.
    pub log_id: String,
}

/// Puts the backup in `from` in place in `data_dir` (the server must be
/// stopped). The stores there are moved aside into
/// `<data-dir>/replaced-<ms>/`, never deleted. The admin token stays.
pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<Restored> {
    restore_on(&Engine::Sled, from, data_dir)
}

/// [`restore`] onto `engine`: on PostgreSQL the backup is written into
/// the database, which must hold no records (make a fresh one).
pub fn restore_on(engine: &Engine, from: &Path, data_dir: &Path) -> anyhow::Result<Restored> {
    for part in ["store", "identity", "BACKUP"] {
        if !from.join(part).exists() {
            anyhow::bail!("{} is not a gridsync backup (no {part})", from.display());
        }
    }
    if engine.is_shared() {
        return restore_into_database(engine, from, data_dir);
    }
    std::fs::create_dir_all(data_dir)?;
    // Refuse while a server holds the stores: opening them takes their
    // locks.
    let mut replaced = None;
    if data_dir.join("store").exists() || data_dir.join("identity").exists() {
        let probe = Store::open(StoreConfig::new(data_dir.join("store"), "SRV"))
            .context("the data directory is in use; stop the server before restoring")?;
        drop(probe);
        let aside = data_dir.join(format!("replaced-{}", gridsync_core::SystemClock.now_ms()));
        std::fs::create_dir_all(&aside)?;
        for part in ["store", "identity"] {
            let path = data_dir.join(part);
            if path.exists() {
                std::fs::rename(&path, aside.join(part))
                    .with_context(|| format!("moving {} aside", path.display()))?;
            }
        }
        replaced = Some(aside);
    }
    for part in ["store", "identity"] {
        copy_tree(&from.join(part), &data_dir.join(part))?;
    }
    gridsync_core::store::make_private(data_dir)?;
    renew_and_verify(&Engine::Sled, data_dir, replaced)
}

/// Gives the restored log a new identity and checks the restored store.
fn renew_and_verify(
    engine: &Engine,
    data_dir: &Path,
    replaced: Option<PathBuf>,
) -> anyhow::Result<Restored> {
    let store = Store::open(crate::store_config(engine, data_dir))?;
    let log_id = store.renew_log_id()?;
    let problems = store.verify()?;
    if !problems.is_empty() {
        anyhow::bail!(
            "the restored store does not verify: {}",
            problems.join("; ")
        );
    }
    Ok(Restored {
        records: store.len()?,
        replaced,
        log_id: hex::encode(log_id),
    })
}

/// Writes the backup's keyspaces into an empty shared database, a few
/// thousand keys per transaction (memory stays bounded however large the
/// store), then renews the log identity and verifies. A marker written
/// first and removed last keeps a restore that stopped part way from
/// being opened as a store.
fn restore_into_database(
    engine: &Engine,
    from: &Path,
    data_dir: &Path,
) -> anyhow::Result<Restored> {
    use gridsync_core::store::backend::{self, Batch, FlushMode};
    /// Keys per transaction.
    const CHUNK: usize = 5_000;
    let mut targets = Vec::new();
    for space in ["records", "identity"] {
        let target = backend::open(engine, data_dir, space, false)?;
        if backend::first(target.as_ref(), &[])?.is_some() {
            anyhow::bail!(
                "the database already holds gridsync data ({space}); restore into an empty database"
            );
        }
        targets.push((space, target));
    }
    let marker = gridsync_core::store::unfinished_restore_key();
    let mut begun = Batch::default();
    begun.insert(marker.clone(), [1u8]);
    targets[0].1.write_now(begun, FlushMode::Sync)?;
    for (space, target) in &targets {
        let dir = from.join(if *space == "records" {
            "store"
        } else {
            "identity"
        });
        let source = backend::SledBackend::open(&dir, false)?;
        let mut batch = Batch::default();
        for item in backend::scan(&source, &[]) {
            let (k, v) = item?;
            if k != marker {
                batch.insert(k, v);
            }
            if batch.len() == CHUNK {
                target.write_now(std::mem::take(&mut batch), FlushMode::Process)?;
            }
        }
        target.write_now(batch, FlushMode::Sync)?;
    }
    // The attached files, into this server's file area (on several nodes:
    // the shared directory they all use).
    let files = from.join("store").join("files");
    if files.is_dir() {
        copy_tree(&files, &data_dir.join("store").join("files"))?;
    }
    let mut done = Batch::default();
    done.remove(marker);
    targets[0].1.write_now(done, FlushMode::Sync)?;
    drop(targets);
    renew_and_verify(engine, data_dir, None)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
            std::fs::File::open(&target)?.sync_data()?;
        }
    }
    Ok(())
}
