//! Files beside records: attaching a file, which records reference which
//! files (the `f` table, kept in the same batch as the record), what this
//! device has yet to send (`u`), who may have a file, and the downloaded
//! files' cache.
//!
//! The bytes live in the store's file area ([`crate::files`]); this part
//! decides. The rules:
//!
//! * A record references a file when its attachment log, or an action
//!   item's evidence, names the file's hash. The table is written with the
//!   record, by every local write and every merge, so it is exactly as
//!   durable as the record. (A device's records imported whole on their
//!   first download are not read, so their references are not listed
//!   there; only the server answers for scope, and it merges change by
//!   change.)
//! * A caller may download a file only when a record it may access
//!   references it ([`Store::file_visible`]); a device may upload one when
//!   such a record lies, or lay before an office move, in its scope
//!   ([`Store::file_accepts_upload`]).
//! * A device's own files — referenced by a write made on this device while
//!   the file is in its area — are marked unsent in that write's batch and
//!   stay until the server says it holds them; they are never evicted.
//!   Downloaded files are a cache: [`Store::evict_files`] drops the least
//!   recently used beyond a size cap.

use std::io::Read;

use super::*;
use crate::files::{FileHash, Files, StoredFile};
use crate::model::{AttachmentRef, Geo};

/// Where a file is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachTo {
    /// An issue's attachments.
    Issue(RecordId),
    /// A meeting's attachments (a scanned agreement, say).
    Meeting(RecordId),
    /// Evidence on a meeting's action item (the repair, photographed).
    Evidence { meeting: RecordId, item: RecordId },
}

/// What this store holds of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Here in full, at this path; `unsent` while the server does not hold
    /// it yet (this device attached it).
    Here { path: PathBuf, unsent: bool },
    /// A download in progress: `held` of `chunks` chunks.
    Partial { held: u32, chunks: u32 },
    /// Not here (download it on demand).
    Missing,
}

/// Where a device's file bytes of today are counted (store metadata).
const META_FILE_QUOTA: &[u8] = b"file_quota.";

impl Store {
    /// Counts `bytes` against what `device` sent today if that keeps it
    /// within `limit` (see [`crate::files::charge_day`]); false, nothing
    /// counted, otherwise. Kept in the store — one count per device,
    /// updated atomically — so every server node of a shared database
    /// counts the same day. Written lazily: a count a crash loses only
    /// lets the device send those bytes again.
    pub fn charge_file_quota(&self, device: &str, bytes: u64, limit: u64) -> Result<bool> {
        let now = self.now_ms();
        let mut k = key(P_META, META_FILE_QUOTA);
        k.extend_from_slice(device.as_bytes());
        let mut granted = false;
        self.db.update(&k, FlushMode::Lazy, &mut |old| {
            let was = old.and_then(|v| {
                Some((
                    i64::from_be_bytes(v.get(..8)?.try_into().ok()?),
                    u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
                ))
            });
            match crate::files::charge_day(was, bytes, now, limit) {
                Some((day, used)) => {
                    granted = true;
                    let mut v = day.to_be_bytes().to_vec();
                    v.extend_from_slice(&used.to_be_bytes());
                    Some(v)
                }
                None => {
                    granted = false;
                    old.map(<[u8]>::to_vec)
                }
            }
        })?;
        Ok(granted)
    }

    /// The store's file area.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// Attaches the file read from `src` to a record on behalf of `author`:
    /// the bytes are streamed into the file area under their SHA-256
    /// (never held whole in memory) and synced, then the record's
    /// reference is written — with the file marked as this device's to
    /// send, in the same durable batch. Refused, keeping nothing in the
    /// record, when the file exceeds `max_bytes` or the author's role may
    /// not attach; a file left without reference by a refused write is
    /// removed by [`Store::collect_unreferenced_files`].
    #[allow(clippy::too_many_arguments)]
    pub fn attach_file(
        &self,
        to: AttachTo,
        author: &Author,
        src: &mut dyn Read,
        mime: &str,
        caption: &str,
        geo: Option<Geo>,
        max_bytes: u64,
    ) -> Result<AttachmentRef> {
        let (hash, size) = self.files.import(src, max_bytes)?;
        let file = AttachmentRef {
            hash: hash.to_hex(),
            mime: mime.to_owned(),
            size,
            caption: caption.to_owned(),
            geo,
        };
        match to {
            AttachTo::Issue(id) => {
                self.act_on_issue(id, author, IssueOp::AddAttachment(file.clone()))?;
            }
            AttachTo::Meeting(id) => {
                self.act_on_meeting(id, author, MeetingOp::AddAttachment(file.clone()))?;
            }
            AttachTo::Evidence { meeting, item } => {
                self.act_on_meeting(
                    meeting,
                    author,
                    MeetingOp::AddActionEvidence {
                        item,
                        file: file.clone(),
                    },
                )?;
            }
        }
        Ok(file)
    }

    /// Adds to `batch` the file references of `doc` (record `id`) not yet
    /// listed, and, for a local write on a device, marks the files it holds
    /// as unsent.
    pub(super) fn note_file_refs(
        &self,
        id: RecordId,
        doc: &Automerge,
        origin: Origin,
        batch: &mut Batch,
    ) -> Result<()> {
        for hash in crate::model::file_hashes(doc) {
            let k = file_ref_key(&hash, id);
            if self.db.get(&k)?.is_some() {
                continue;
            }
            batch.insert(k, []);
            if origin == Origin::Local && !self.tag_own {
                if let Some(size) = self.files.size(&hash) {
                    batch.insert(key(P_UNSENT, &hash.0), size.to_be_bytes());
                }
            }
        }
        Ok(())
    }

    /// The records that reference the file.
    pub fn file_refs(&self, hash: &FileHash) -> Result<Vec<RecordId>> {
        backend::scan(self.db.as_ref(), &key(P_FILE_REF, &hash.0))
            .map(|item| {
                let (k, _) = item?;
                RecordId::from_slice(&k[33..])
                    .ok_or_else(|| Error::Metadata("bad file reference key".into()))
            })
            .collect()
    }

    /// Whether a record whose scope `may_access` admits references the
    /// file: the rule for who may download it. A caller it does not admit
    /// is answered as if the file did not exist.
    pub fn file_visible(
        &self,
        hash: &FileHash,
        may_access: &dyn Fn(&RecordScope) -> bool,
    ) -> Result<bool> {
        self.any_referencing_scope(hash, |entry| may_access(&entry.current))
    }

    /// Whether a device whose scope `may_access` admits may send the file:
    /// a record that references it lies in its scope now, or did before an
    /// office move took it out (a photo taken before the worker learned of
    /// the move still reaches the server; sending it reveals nothing the
    /// worker did not hold). Downloads follow [`Store::file_visible`].
    pub fn file_accepts_upload(
        &self,
        hash: &FileHash,
        may_access: &dyn Fn(&RecordScope) -> bool,
    ) -> Result<bool> {
        self.any_referencing_scope(hash, |entry| entry.ever_admitted(may_access))
    }

    /// Whether `admits` holds for the scope entry of a record referencing
    /// the file.
    fn any_referencing_scope(
        &self,
        hash: &FileHash,
        admits: impl Fn(&StoredScope) -> bool,
    ) -> Result<bool> {
        for id in self.file_refs(hash)? {
            if self.scope_entry(id)?.is_some_and(|entry| admits(&entry)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The files this device attached that the server does not hold yet,
    /// with their sizes.
    pub fn unsent_files(&self) -> Result<Vec<(FileHash, u64)>> {
        backend::scan(self.db.as_ref(), &[P_UNSENT])
            .map(|item| {
                let (k, v) = item?;
                let hash = <[u8; 32]>::try_from(&k[1..])
                    .map_err(|_| Error::Metadata("bad unsent-file key".into()))?;
                let size = <[u8; 8]>::try_from(v.as_slice())
                    .map(u64::from_be_bytes)
                    .map_err(|_| Error::Metadata("bad unsent-file size".into()))?;
                Ok((FileHash(hash), size))
            })
            .collect()
    }

    /// Records that the server holds the file (durably there), so that it
    /// may be evicted here.
    pub fn file_sent(&self, hash: &FileHash) -> Result<()> {
        let mut batch = Batch::default();
        batch.remove(key(P_UNSENT, &hash.0));
        // Lazily: a note lost to a crash only means the phone asks the
        // server once more and hears the file is stored.
        self.db.write_now(batch, FlushMode::Lazy)
    }

    /// What this store holds of the file.
    pub fn file_state(&self, hash: &FileHash) -> Result<FileState> {
        if self.files.has(hash) {
            let unsent = self.db.get(&key(P_UNSENT, &hash.0))?.is_some();
            return Ok(FileState::Here {
                path: self.files.path(hash),
                unsent,
            });
        }
        let partial = self.files.partial(hash)?;
        Ok(match partial.size {
            Some(size) => FileState::Partial {
                held: partial.held.len() as u32,
                chunks: crate::files::chunk_count(size),
            },
            None => FileState::Missing,
        })
    }

    /// The files the records here reference that are not here yet (with
    /// their sizes as the records give them), those of the most recently
    /// changed records first: what a prefetch on Wi-Fi fetches.
    pub fn missing_files(&self) -> Result<Vec<(FileHash, u64)>> {
        let mut records: Vec<(i64, RecordId, RecordKind)> = {
            let index = self.index_read();
            self.record_ids()?
                .into_iter()
                .filter_map(|id| {
                    let entry = index.get(id)?;
                    Some((entry.updated_at, id, index.kind(id)??))
                })
                .collect()
        };
        records.sort_by_key(|(at, id, _)| std::cmp::Reverse((*at, *id)));
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        for (_, id, kind) in records {
            let attachments = match kind {
                RecordKind::Issue => self.issue(id)?.attachments,
                RecordKind::Meeting => {
                    let m = self.meeting(id)?;
                    let mut all = m.attachments;
                    for item in m.action_items {
                        all.extend(item.evidence);
                    }
                    all
                }
            };
            for a in attachments {
                let Ok(hash) = FileHash::parse(&a.file.hash) else {
                    continue;
                };
                if seen.insert(hash) && !self.files.has(&hash) {
                    missing.push((hash, a.file.size));
                }
            }
        }
        Ok(missing)
    }

    /// Drops the least recently used files until the area holds at most
    /// `cap_bytes`, never one this device has yet to send; returns how
    /// many bytes were freed.
    pub fn evict_files(&self, cap_bytes: u64) -> Result<u64> {
        let unsent: BTreeSet<FileHash> = self.unsent_files()?.into_iter().map(|(h, _)| h).collect();
        let mut files: Vec<StoredFile> = self.files.list()?;
        let mut total: u64 = files.iter().map(|f| f.size).sum();
        files.sort_by_key(|f| f.used_ms);
        let mut freed = 0;
        for f in files {
            if total <= cap_bytes {
                break;
            }
            if unsent.contains(&f.hash) {
                continue;
            }
            self.files.remove(&f.hash)?;
            total -= f.size;
            freed += f.size;
        }
        Ok(freed)
    }

    /// Removes files no record references, and transfers abandoned, that
    /// have not been used for `grace_ms`; returns how many files were
    /// removed. The grace period covers a file imported a moment before
    /// the write that references it. For the server: a device's reference
    /// table does not list records imported whole (devices bound their
    /// area with [`Store::evict_files`]).
    pub fn collect_unreferenced_files(&self, grace_ms: i64) -> Result<usize> {
        let now = self.now_ms();
        for (hash, used_ms) in self.files.partials()? {
            if now - used_ms >= grace_ms {
                self.files.remove(&hash)?;
            }
        }
        let mut removed = 0;
        for f in self.files.list()? {
            if now - f.used_ms < grace_ms {
                continue;
            }
            let unsent = self.db.get(&key(P_UNSENT, &f.hash.0))?.is_some();
            if unsent || !self.file_refs(&f.hash)?.is_empty() {
                continue;
            }
            self.files.remove(&f.hash)?;
            removed += 1;
        }
        Ok(removed)
    }
}
