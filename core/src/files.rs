//! Files that travel beside records — the photo of a hidden danger, the
//! scanned page of a signed agreement — kept in a content-addressed area
//! on disk.
//!
//! A record holds only an [`AttachmentRef`](crate::AttachmentRef) (the
//! file's SHA-256, size, type); the bytes live here, named by that hash,
//! never inside an Automerge document. The area is a directory:
//!
//! | path | what |
//! |---|---|
//! | `<hh>/<hash>` | a complete file whose SHA-256 was verified (`hh`: the hash's first two hex digits) |
//! | `part/<hash>/data-<size>` | a transfer in progress: the chunks received, each at its place |
//! | `part/<hash>/held-<n>` | chunk `n` is in the data file |
//! | `tmp/` | files being written, renamed into place once synced |
//!
//! Every complete file is written to `tmp/`, synced, and renamed into
//! place (then the directory is synced), so a crash leaves either the
//! whole file or none of it, and a complete file is never half-written.
//! Transfers move in chunks of [`CHUNK_BYTES`]: a transfer cut off resumes
//! from the chunks already held. Chunks are written at their place in the
//! transfer's data file and marked held, not synced (a chunk a power cut
//! takes back is asked for again; one it tears fails the whole file's
//! hash, and the transfer starts over), so a transfer pays for one sync,
//! when the file lands. A file counts as
//! stored only once every chunk is held and the assembled bytes hash to
//! its name. Names are content, so two
//! processes writing the same file (two server nodes on shared storage)
//! write the same bytes, and the rename that lands second changes nothing.
//!
//! # Sealed files
//!
//! An encrypted store's area (see `store::backend::sealed`) keeps every
//! complete file and every transfer's data file sealed under the store's
//! key, chunk by chunk: a header (`GSF1`, an id) and one sealed segment
//! per chunk, at a fixed place, so a chunk is read or received on its own.
//! The content never reaches the disk in the clear. The file at
//! [`Files::path`] is then not the content: read it with
//! [`Files::read_all`]. Names (the content's SHA-256) stay as they are.
//!
//! This module does no network I/O and decides nothing about who may have
//! a file: the store (`store/files.rs`) keeps which records reference which
//! files and answers that.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::seal::{Sealer, OVERHEAD};

/// The size of the chunks files travel in (the last one may be shorter).
pub const CHUNK_BYTES: usize = 256 * 1024;
/// A file at most this large may travel whole, in one request, instead of
/// chunk by chunk: a cut then re-sends at most one chunk the server had
/// already received, as a chunked transfer may.
pub const WHOLE_FILE_BYTES: usize = 2 * CHUNK_BYTES;

/// The largest file accepted unless configured otherwise.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 20 << 20;

/// The file bytes one device may send in a day unless configured
/// otherwise: 1 GiB, some 2,000 photos.
pub const DEFAULT_FILE_BYTES_PER_DEVICE_DAY: u64 = 1 << 30;

/// A device's file bytes of one day (UTC), counted against its daily
/// quota: `(day, bytes)`, the day as days since the Unix epoch.
pub type DayCount = (i64, u64);

/// The count after charging `bytes` at `now_ms` to what the device has
/// sent (`was`), if that keeps it within `limit`; `None` (nothing
/// counted) otherwise. Yesterday's count does not carry over.
pub fn charge_day(was: Option<DayCount>, bytes: u64, now_ms: i64, limit: u64) -> Option<DayCount> {
    let day = now_ms.div_euclid(86_400_000);
    let used = was.filter(|(d, _)| *d == day).map_or(0, |(_, n)| n);
    used.checked_add(bytes)
        .filter(|total| *total <= limit)
        .map(|total| (day, total))
}

/// How long a file no record references (and an abandoned transfer) is
/// kept before the server removes it: a day, which covers a file taken in
/// a moment before the write that references it and a transfer that
/// pauses overnight.
pub const UNREFERENCED_GRACE_MS: i64 = 24 * 3600 * 1000;

/// A file's name: the SHA-256 of its content.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileHash(pub [u8; 32]);

impl FileHash {
    /// Parses 64 hex digits (either case).
    pub fn parse(hex_digits: &str) -> Result<FileHash> {
        let mut out = [0u8; 32];
        if hex_digits.len() != 64 || hex::decode_to_slice(hex_digits, &mut out).is_err() {
            return Err(Error::InvalidInput {
                field: "file hash",
                reason: "expected 64 hex digits (SHA-256)".into(),
            });
        }
        Ok(FileHash(out))
    }

    /// Lower-case hex, as records and paths spell it.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> FileHash {
        FileHash(Sha256::digest(bytes).into())
    }
}

impl std::fmt::Debug for FileHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileHash({})", self.to_hex())
    }
}

impl std::fmt::Display for FileHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// How many chunks a file of `size` bytes travels in (an empty file: one,
/// empty).
pub fn chunk_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(CHUNK_BYTES as u64).max(1)).unwrap_or(u32::MAX)
}

/// The length of chunk `n` of a file of `size` bytes (`None`: no such
/// chunk).
pub fn chunk_len(size: u64, n: u32) -> Option<usize> {
    if n >= chunk_count(size) {
        return None;
    }
    let start = u64::from(n) * CHUNK_BYTES as u64;
    Some(usize::try_from((size - start.min(size)).min(CHUNK_BYTES as u64)).unwrap_or(0))
}

/// A transfer in progress, as the receiving side holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Partial {
    /// The size announced when the first chunk came (none yet: `None`).
    pub size: Option<u64>,
    /// The chunks held.
    pub held: BTreeSet<u32>,
}

/// The header naming a file's size on the chunk routes.
pub const SIZE_HEADER: &str = "X-Gridsync-File-Size";
/// The header naming a chunk's CRC-32 (8 hex digits), sent with every
/// chunk both ways: a chunk damaged on the way is refused at once.
pub const CHUNK_CRC32_HEADER: &str = "X-Gridsync-Chunk-Crc32";
/// The header naming a chunk's SHA-256 (hex), which apps before the
/// CRC-32 sent instead; still accepted.
pub const CHUNK_SHA256_HEADER: &str = "X-Gridsync-Chunk-Sha256";

/// What a sender says a chunk hashes to, so that a chunk damaged on the
/// way is refused on its own instead of failing the whole file. Only a
/// check against damage: the file's SHA-256, checked when it is whole,
/// is what makes it trusted, so the cheap CRC-32 is the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkCheck {
    /// CRC-32 (IEEE), as [`ChunkCheck::of`] gives.
    Crc32(u32),
    /// SHA-256.
    Sha256([u8; 32]),
}

impl ChunkCheck {
    /// The CRC-32 of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkCheck::Crc32(crc32fast::hash(bytes))
    }

    /// Reads a check from its header value: the CRC-32 as 8 hex digits
    /// (`crc32`) or the SHA-256 as 64 (`sha256`).
    pub fn parse(crc32: Option<&str>, sha256: Option<&str>) -> Result<Option<Self>> {
        if let Some(v) = crc32 {
            return match (v.len(), u32::from_str_radix(v, 16)) {
                (8, Ok(c)) => Ok(Some(ChunkCheck::Crc32(c))),
                _ => Err(Error::InvalidInput {
                    field: "chunk crc32",
                    reason: "must be 8 hex digits".into(),
                }),
            };
        }
        sha256
            .map(|v| FileHash::parse(v).map(|h| ChunkCheck::Sha256(h.0)))
            .transpose()
    }

    /// The CRC-32's header value (8 hex digits), when this is one.
    pub fn crc32_hex(&self) -> Option<String> {
        match self {
            ChunkCheck::Crc32(c) => Some(format!("{c:08x}")),
            ChunkCheck::Sha256(_) => None,
        }
    }

    /// Whether `bytes` match.
    pub fn holds(&self, bytes: &[u8]) -> bool {
        match self {
            ChunkCheck::Crc32(c) => crc32fast::hash(bytes) == *c,
            ChunkCheck::Sha256(h) => FileHash::of(bytes).0 == *h,
        }
    }
}

/// What storing a chunk came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Held; this many chunks are still missing.
    Held { missing: u32 },
    /// That was the last one: the file is complete and verified.
    Complete,
}

/// A complete file in the area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    pub hash: FileHash,
    pub size: u64,
    /// When it was last written or read (milliseconds since the epoch).
    pub used_ms: i64,
}

/// The content-addressed file area (see the module documentation).
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    /// Remove the whole area on drop (a temporary store's).
    temporary: bool,
    /// An encrypted store's: every complete file and every transfer in
    /// progress is kept sealed (see "Sealed files" above).
    sealer: Option<Arc<Sealer>>,
    /// Tests: every write fails as on a full disk.
    #[cfg(feature = "failpoints")]
    full: std::sync::atomic::AtomicBool,
}

impl Drop for Files {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::Io(e)
}

/// Syncs a directory, so a rename inside it survives a power cut.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all().map_err(io_error)
}

fn random_name() -> Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| Error::Storage(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// Refuses a file too large to travel whole ([`WHOLE_FILE_BYTES`]).
pub fn check_whole(hash: &FileHash, size: u64) -> Result<()> {
    if size <= WHOLE_FILE_BYTES as u64 {
        return Ok(());
    }
    Err(Error::FileRejected {
        hash: hash.to_hex(),
        reason: format!(
            "a file of {size} bytes is sent chunk by chunk, not whole (at most {WHOLE_FILE_BYTES})"
        ),
    })
}

impl Files {
    /// Opens (creating) the area at `dir`; `temporary` removes it on drop.
    pub fn open(dir: &Path, temporary: bool) -> Result<Files> {
        Files::open_sealed(dir, temporary, None)
    }

    /// Like [`Files::open`], the files sealed by `sealer` (an encrypted
    /// store's area).
    pub(crate) fn open_sealed(
        dir: &Path,
        temporary: bool,
        sealer: Option<Arc<Sealer>>,
    ) -> Result<Files> {
        for sub in ["part", "tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let files = Files {
            dir: dir.to_path_buf(),
            temporary,
            sealer,
            #[cfg(feature = "failpoints")]
            full: Default::default(),
        };
        // Whatever a crash left half-written in tmp/ is no file yet. Only
        // what is an hour old goes: another process sharing the area (a
        // second server node) may be writing the rest right now.
        let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        if let Ok(entries) = fs::read_dir(dir.join("tmp")) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < stale);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(files)
    }

    /// Tests (feature `failpoints`): from now on every write fails as on a
    /// full disk (`false`: space again).
    #[cfg(feature = "failpoints")]
    pub fn simulate_full_disk(&self, full: bool) {
        self.full.store(full, std::sync::atomic::Ordering::SeqCst);
    }

    /// Fails as a full disk would, when a test says so.
    fn space(&self) -> Result<()> {
        #[cfg(feature = "failpoints")]
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull).into());
        }
        Ok(())
    }

    /// The directory the area lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the complete file `hash` lives (whether or not it is there).
    pub fn path(&self, hash: &FileHash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// Whether the complete file is here.
    pub fn has(&self, hash: &FileHash) -> bool {
        self.path(hash).is_file()
    }

    /// The size of the complete file, if here (its content's, sealed or
    /// not).
    pub fn size(&self, hash: &FileHash) -> Option<u64> {
        fs::metadata(self.path(hash))
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| self.content_len(m.len()))
    }

    /// Whether the files here are sealed (an encrypted store's): the file
    /// at [`Files::path`] is then not the content; read it with
    /// [`Files::read_all`].
    pub fn is_sealed(&self) -> bool {
        self.sealer.is_some()
    }

    /// The content's length of a stored file of `stored` bytes.
    fn content_len(&self, stored: u64) -> Option<u64> {
        match self.sealer {
            None => Some(stored),
            Some(_) => sealed_content_len(stored),
        }
    }

    /// Writes `content` (a file whose hash is known) to `file` as stored.
    fn write_content(&self, file: &mut File, hash: &FileHash, content: &[u8]) -> Result<()> {
        let Some(sealer) = &self.sealer else {
            return Ok(file.write_all(content)?);
        };
        let id = transfer_id(hash);
        file.write_all(&sealed_header(&id))?;
        let count = chunk_count(content.len() as u64);
        for n in 0..count {
            let start = n as usize * CHUNK_BYTES;
            let end = (start + CHUNK_BYTES).min(content.len());
            let aad = segment_aad(&id, n, n + 1 == count);
            file.write_all(&sealer.seal(&aad, &content[start..end])?)?;
        }
        Ok(())
    }

    /// Opens the stored file at `path`, with its content's length.
    fn open_stored(&self, path: &Path, hash: &FileHash) -> Result<(File, u64)> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::FileNotFound(hash.to_hex()))
            }
            Err(e) => return Err(e.into()),
        };
        let stored = file.metadata()?.len();
        let size = self.content_len(stored).ok_or_else(|| damaged_file(hash))?;
        Ok((file, size))
    }

    /// Reads the stored file at `path` as content: whole, at most `max`
    /// bytes of content ([`Error::InvalidInput`] beyond).
    fn read_content(&self, path: &Path, hash: &FileHash, max: u64) -> Result<Vec<u8>> {
        let (mut file, size) = self.open_stored(path, hash)?;
        if size > max {
            return Err(Error::InvalidInput {
                field: "file",
                reason: format!("larger than {max} bytes"),
            });
        }
        let Some(sealer) = &self.sealer else {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            return Ok(bytes);
        };
        let mut sealed = Vec::new();
        file.read_to_end(&mut sealed)?;
        let id = read_sealed_header(&sealed).ok_or_else(|| damaged_file(hash))?;
        let count = chunk_count(size);
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        for n in 0..count {
            let start = SEALED_HEADER + n as usize * SEALED_SEGMENT;
            let end = (start + SEALED_SEGMENT).min(sealed.len());
            let aad = segment_aad(&id, n, n + 1 == count);
            let plain = sealed
                .get(start..end)
                .and_then(|seg| sealer.open(&aad, seg))
                .ok_or_else(|| damaged_file(hash))?;
            out.extend_from_slice(&plain);
        }
        Ok(out)
    }

    /// The content of the complete file `hash` (decrypted in an encrypted
    /// store), if at most `max` bytes.
    pub fn read_all(&self, hash: &FileHash, max: u64) -> Result<Vec<u8>> {
        self.read_content(&self.path(hash), hash, max)
    }

    /// Puts every complete file of this area into `dest` (another store's
    /// area, sealed as that one is): what rotating a key does. Transfers
    /// in progress are left (they are asked for again). Returns how many.
    pub(crate) fn copy_resealed(&self, dest: &Files) -> Result<usize> {
        let mut n = 0;
        for f in self.list()? {
            let content = self.read_all(&f.hash, u64::MAX)?;
            let to = dest.path(&f.hash);
            let (tmp, ()) = dest.write_tmp(|file| dest.write_content(file, &f.hash, &content))?;
            dest.land(&tmp, &to)?;
            n += 1;
        }
        Ok(n)
    }

    fn part_dir(&self, hash: &FileHash) -> PathBuf {
        self.dir.join("part").join(hash.to_hex())
    }

    /// Writes `fill`'s output to a new file in `tmp/`, synced; returns its
    /// path and what `fill` returned. Removed again when `fill` fails.
    fn write_tmp<T>(&self, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<(PathBuf, T)> {
        self.space()?;
        let path = self.dir.join("tmp").join(random_name()?);
        let mut file = File::create(&path)?;
        let written = fill(&mut file).and_then(|t| {
            file.sync_data()?;
            Ok(t)
        });
        match written {
            Ok(t) => Ok((path, t)),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Moves a synced file from `tmp/` to `to` and syncs its directory
    /// (and those above it in the area, when that directory is new).
    fn land(&self, tmp: &Path, to: &Path) -> Result<()> {
        let parent = to.parent().unwrap_or(&self.dir);
        if !parent.is_dir() {
            if let Err(e) = fs::create_dir_all(parent) {
                let _ = fs::remove_file(tmp);
                return Err(e.into());
            }
            // The new directories' names must last as well: sync each
            // directory above, up to the area's.
            let mut above = parent.parent();
            while let Some(dir) = above.filter(|d| d.starts_with(&self.dir)) {
                sync_dir(dir)?;
                above = dir.parent();
            }
        }
        if let Err(e) = fs::rename(tmp, to) {
            let _ = fs::remove_file(tmp);
            return Err(e.into());
        }
        sync_dir(parent)
    }

    /// Streams `src` into the area, hashing as it reads (never holding the
    /// whole file in memory), and lands it under its hash, durably.
    /// Refused with [`Error::FileTooLarge`] past `max_bytes` (nothing
    /// kept). Returns the hash and the size.
    pub fn import(&self, src: &mut dyn Read, max_bytes: u64) -> Result<(FileHash, u64)> {
        let (tmp, (hash, size)) = self.write_tmp(|file| {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            // Sealed: segments of a chunk each, under a random id; one is
            // sealed only once more content follows it (or at the end, as
            // the last).
            let mut segment = Sealing::start(self.sealer.as_deref(), file)?;
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                size += n as u64;
                if size > max_bytes {
                    return Err(Error::FileTooLarge {
                        size,
                        limit: max_bytes,
                    });
                }
                hasher.update(&buf[..n]);
                match &mut segment {
                    Some(s) => s.write(file, &buf[..n])?,
                    None => file.write_all(&buf[..n])?,
                }
            }
            if let Some(s) = segment {
                s.finish(file)?;
            }
            Ok((FileHash(hasher.finalize().into()), size))
        })?;
        let to = self.path(&hash);
        if to.is_file() {
            // Already here (the same photo attached twice).
            let _ = fs::remove_file(&tmp);
        } else {
            self.land(&tmp, &to)?;
        }
        Ok((hash, size))
    }

    /// The transfer of `hash` in progress here (nothing held: empty).
    pub fn partial(&self, hash: &FileHash) -> Result<Partial> {
        let dir = self.part_dir(hash);
        let mut partial = Partial::default();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(partial),
            Err(e) => return Err(e.into()),
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_prefix("held-") {
                if let Ok(n) = n.parse::<u32>() {
                    partial.held.insert(n);
                }
            } else if let Some(size) = name.strip_prefix("data-") {
                partial.size = size.parse().ok();
            }
        }
        Ok(partial)
    }

    /// Receives chunk `n` of the file `hash` of `size` bytes and keeps it
    /// (whole, not yet synced: a power cut may take it back, and it is then
    /// asked for again). The chunk must have exactly the length its place in the
    /// file gives it and, when the sender named its check, match it;
    /// a transfer announced with another size is refused (the file's name
    /// fixes its content, so its size cannot change). When every chunk is
    /// held the file is assembled, verified against its name and landed,
    /// durably, before this returns [`ChunkOutcome::Complete`]; a file that
    /// does not verify is refused and its chunks dropped, so the sender
    /// starts it again.
    pub fn put_chunk(
        &self,
        hash: &FileHash,
        size: u64,
        n: u32,
        bytes: &[u8],
        check: Option<ChunkCheck>,
    ) -> Result<ChunkOutcome> {
        if self.has(hash) {
            return Ok(ChunkOutcome::Complete);
        }
        let rejected = |reason: String| Error::FileRejected {
            hash: hash.to_hex(),
            reason,
        };
        let Some(expected) = chunk_len(size, n) else {
            return Err(rejected(format!(
                "chunk {n} is past the end of a file of {size} bytes ({} chunks)",
                chunk_count(size)
            )));
        };
        if bytes.len() != expected {
            return Err(rejected(format!(
                "chunk {n} of a file of {size} bytes has {expected} bytes, not {}",
                bytes.len()
            )));
        }
        if let Some(check) = check {
            if !check.holds(bytes) {
                return Err(rejected(format!(
                    "chunk {n} does not match its check (damaged on the way)"
                )));
            }
        }
        let dir = self.part_dir(hash);
        let mut partial = self.partial(hash)?;
        if let Some(s) = partial.size.filter(|s| *s != size) {
            return Err(rejected(format!(
                "the transfer began as a file of {s} bytes, not {size}"
            )));
        }
        // The chunk goes to its place in the transfer's data file, then a
        // marker says it is held. Neither is synced: what a power cut
        // takes back is asked for again, and a chunk it tore fails the
        // whole file's hash below (the transfer then starts over). Two
        // processes writing the same chunk write the same bytes.
        if !partial.held.contains(&n) {
            self.space()?;
            fs::create_dir_all(&dir)?;
            let data = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("data-{size}")))?;
            match &self.sealer {
                None => write_all_at(&data, bytes, u64::from(n) * CHUNK_BYTES as u64)?,
                Some(sealer) => {
                    // Sealed in place. Two writers of one chunk write
                    // different nonces; a segment they tore does not open
                    // and the file is refused at assembly (and sent
                    // again), as a torn plain chunk fails the hash.
                    let id = transfer_id(hash);
                    write_all_at(&data, &sealed_header(&id), 0)?;
                    let aad = segment_aad(&id, n, n + 1 == chunk_count(size));
                    let at = (SEALED_HEADER + n as usize * SEALED_SEGMENT) as u64;
                    write_all_at(&data, &sealer.seal(&aad, bytes)?, at)?;
                }
            }
            File::create(dir.join(format!("held-{n}")))?;
            partial.size = Some(size);
            partial.held.insert(n);
        }
        let missing = (0..chunk_count(size))
            .filter(|c| !partial.held.contains(c))
            .count() as u32;
        if missing > 0 {
            return Ok(ChunkOutcome::Held { missing });
        }
        self.assemble(hash, size)?;
        Ok(ChunkOutcome::Complete)
    }

    /// Joins the chunks of a complete transfer, checks the whole against
    /// its name, and lands it; the chunks are removed either way.
    fn assemble(&self, hash: &FileHash, size: u64) -> Result<()> {
        let dir = self.part_dir(hash);
        let data = dir.join(format!("data-{size}"));
        let checked = (|| -> Result<bool> {
            if self.sealer.is_some() {
                // The content, opened segment by segment, against the name.
                let file = File::open(&data)?;
                if self.content_len(file.metadata()?.len()) != Some(size) {
                    return Ok(false);
                }
                let ok = self
                    .read_content(&data, hash, u64::MAX)
                    .is_ok_and(|content| FileHash::of(&content) == *hash);
                if ok {
                    file.sync_data()?;
                }
                return Ok(ok);
            }
            let mut file = File::open(&data)?;
            if file.metadata()?.len() != size {
                return Ok(false);
            }
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match file.read(&mut buf)? {
                    0 => break,
                    n => hasher.update(&buf[..n]),
                }
            }
            if FileHash(hasher.finalize().into()) != *hash {
                return Ok(false);
            }
            // The one sync a transfer pays for.
            file.sync_data()?;
            Ok(true)
        })();
        let result = match checked {
            Ok(true) => {
                // Moved out of the transfer's directory, then into place.
                let tmp = self.dir.join("tmp").join(random_name()?);
                fs::rename(&data, &tmp)?;
                self.land(&tmp, &self.path(hash))
            }
            Ok(false) => Err(Error::FileRejected {
                hash: hash.to_hex(),
                reason: "the assembled file does not match its SHA-256; send it again".into(),
            }),
            Err(e) => return Err(e),
        };
        let _ = fs::remove_dir_all(&dir);
        result
    }

    /// Receives the whole file `hash` in one piece (a small file, at most
    /// [`WHOLE_FILE_BYTES`]): checked against its name, then landed,
    /// durably, before this returns. A file that does not match is
    /// refused and nothing is kept.
    pub fn put_whole(&self, hash: &FileHash, bytes: &[u8]) -> Result<()> {
        if self.has(hash) {
            return Ok(());
        }
        check_whole(hash, bytes.len() as u64)?;
        if FileHash::of(bytes) != *hash {
            return Err(Error::FileRejected {
                hash: hash.to_hex(),
                reason: "the file does not match its SHA-256 (damaged on the way); send it again"
                    .into(),
            });
        }
        let (tmp, ()) = self.write_tmp(|file| self.write_content(file, hash, bytes))?;
        let to = self.path(hash);
        if to.is_file() {
            let _ = fs::remove_file(&tmp);
            return Ok(());
        }
        self.land(&tmp, &to)
    }

    /// The whole of the complete file `hash`, when it is small enough to
    /// travel whole ([`WHOLE_FILE_BYTES`]).
    pub fn read_whole(&self, hash: &FileHash) -> Result<Vec<u8>> {
        self.read_all(hash, WHOLE_FILE_BYTES as u64)
            .map_err(|e| match e {
                Error::InvalidInput { .. } => Error::InvalidInput {
                    field: "file",
                    reason: format!("larger than {WHOLE_FILE_BYTES} bytes: it travels in chunks"),
                },
                other => other,
            })
    }

    /// Chunk `n` of the complete file `hash`.
    pub fn read_chunk(&self, hash: &FileHash, n: u32) -> Result<Vec<u8>> {
        let (mut file, size) = self.open_stored(&self.path(hash), hash)?;
        let Some(len) = chunk_len(size, n) else {
            return Err(Error::InvalidInput {
                field: "chunk",
                reason: format!("file has {} chunks", chunk_count(size)),
            });
        };
        use std::io::{Seek, SeekFrom};
        let Some(sealer) = &self.sealer else {
            file.seek(SeekFrom::Start(u64::from(n) * CHUNK_BYTES as u64))?;
            let mut buf = vec![0u8; len];
            file.read_exact(&mut buf)?;
            return Ok(buf);
        };
        let mut header = [0u8; SEALED_HEADER];
        file.read_exact(&mut header)?;
        let id = read_sealed_header(&header).ok_or_else(|| damaged_file(hash))?;
        file.seek(SeekFrom::Start(
            (SEALED_HEADER + n as usize * SEALED_SEGMENT) as u64,
        ))?;
        let mut segment = vec![0u8; len + OVERHEAD];
        file.read_exact(&mut segment)?;
        let aad = segment_aad(&id, n, n + 1 == chunk_count(size));
        sealer
            .open(&aad, &segment)
            .ok_or_else(|| damaged_file(hash))
    }

    /// Something made from the complete file `hash` (a thumbnail): read
    /// from `derived/<kind>/<hash>` when made before, else made by `make`
    /// and kept there (written whole or not at all, like every file here).
    pub fn derived(
        &self,
        hash: &FileHash,
        kind: &str,
        make: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let path = self.dir.join("derived").join(kind).join(hash.to_hex());
        match fs::read(&path) {
            Ok(bytes) => return Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let original = self.read_all(hash, u64::MAX)?;
        let made = make(&original)?;
        let (tmp, ()) = self.write_tmp(|f| Ok(f.write_all(&made)?))?;
        self.land(&tmp, &path)?;
        Ok(made)
    }

    /// Marks the file as used now (the cache evicts the longest unused).
    pub fn touch(&self, hash: &FileHash) {
        if let Ok(f) = File::options().append(true).open(self.path(hash)) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }

    /// Removes the complete file and any transfer of it.
    pub fn remove(&self, hash: &FileHash) -> Result<()> {
        match fs::remove_file(self.path(hash)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let _ = fs::remove_dir_all(self.part_dir(hash));
        if let Ok(kinds) = fs::read_dir(self.dir.join("derived")) {
            for kind in kinds.flatten() {
                let _ = fs::remove_file(kind.path().join(hash.to_hex()));
            }
        }
        Ok(())
    }

    /// Removes every file, transfer and derived image (the area stays,
    /// empty): what erasing a device's store does.
    pub fn remove_all(&self) -> Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(entry.path())?;
            } else {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Every complete file.
    pub fn list(&self) -> Result<Vec<StoredFile>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.dir)?.flatten() {
            let name = shard.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path())?.flatten() {
                let Ok(hash) = FileHash::parse(&e.file_name().to_string_lossy()) else {
                    continue;
                };
                let Ok(meta) = e.metadata() else { continue };
                let used_ms = meta.modified().map_or(0, millis);
                out.push(StoredFile {
                    hash,
                    size: self.content_len(meta.len()).unwrap_or(meta.len()),
                    used_ms,
                });
            }
        }
        Ok(out)
    }

    /// Puts every complete file into a new area at `dest` (a backup):
    /// hard links where the file system allows (complete files never
    /// change in place), synced copies elsewhere. Returns how many.
    pub fn copy_to(&self, dest: &Path) -> Result<usize> {
        let copy = Files::open(dest, false)?;
        let mut n = 0;
        for f in self.list()? {
            let to = copy.path(&f.hash);
            if to.is_file() {
                continue;
            }
            let parent = to.parent().unwrap_or(dest);
            fs::create_dir_all(parent)?;
            if fs::hard_link(self.path(&f.hash), &to).is_err() {
                let mut src = File::open(self.path(&f.hash))?;
                let (tmp, ()) = copy.write_tmp(|file| {
                    std::io::copy(&mut src, file)?;
                    Ok(())
                })?;
                copy.land(&tmp, &to)?;
            }
            n += 1;
        }
        for shard in fs::read_dir(dest)?.flatten() {
            if shard.path().is_dir() {
                sync_dir(&shard.path())?;
            }
        }
        sync_dir(dest)?;
        Ok(n)
    }

    /// Transfers in progress: their hashes and when a chunk last came.
    pub fn partials(&self) -> Result<Vec<(FileHash, i64)>> {
        Ok(fs::read_dir(self.dir.join("part"))?
            .flatten()
            .filter_map(|e| {
                let hash = FileHash::parse(&e.file_name().to_string_lossy()).ok()?;
                let used = e.metadata().ok()?.modified().ok()?;
                Some((hash, millis(used)))
            })
            .collect())
    }
}

/// Writes `bytes` at `offset` of `file`.
#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    Ok(file.write_all_at(bytes, offset)?)
}

/// Writes `bytes` at `offset` of `file`.
#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut offset: u64) -> Result<()> {
    use std::os::windows::fs::FileExt;
    while !bytes.is_empty() {
        let n = file.seek_write(bytes, offset)?;
        bytes = &bytes[n..];
        offset += n as u64;
    }
    Ok(())
}

/// A sealed file: `GSF1`, a 16-byte id, then one sealed segment per
/// chunk of content (`backend::sealed` values: 41 bytes each beyond the
/// content), the segment's number, whether it is the last and the file's
/// id as associated data — so segments cannot be moved within a file or
/// between files, and a file cut short does not open.
const SEALED_MAGIC: &[u8; 4] = b"GSF1";
const SEALED_HEADER: usize = 4 + 16;
const SEALED_SEGMENT: usize = CHUNK_BYTES + OVERHEAD;

fn sealed_header(id: &[u8; 16]) -> [u8; SEALED_HEADER] {
    let mut h = [0u8; SEALED_HEADER];
    h[..4].copy_from_slice(SEALED_MAGIC);
    h[4..].copy_from_slice(id);
    h
}

fn read_sealed_header(bytes: &[u8]) -> Option<[u8; 16]> {
    if bytes.get(..4)? != SEALED_MAGIC {
        return None;
    }
    bytes.get(4..SEALED_HEADER)?.try_into().ok()
}

/// A transfer's id: the same for every writer of its chunks.
fn transfer_id(hash: &FileHash) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.0[..16]);
    id
}

fn segment_aad(id: &[u8; 16], n: u32, last: bool) -> Vec<u8> {
    let mut aad = Vec::with_capacity(40);
    aad.extend_from_slice(b"gridsync file segment\0");
    aad.extend_from_slice(id);
    aad.extend_from_slice(&n.to_be_bytes());
    aad.push(u8::from(last));
    aad
}

/// The content length of a sealed file of `stored` bytes (`None`: no
/// sealed file has that length).
fn sealed_content_len(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(SEALED_HEADER as u64)?;
    let (full, rest) = (body / SEALED_SEGMENT as u64, body % SEALED_SEGMENT as u64);
    match rest {
        0 if full > 0 => Some(full * CHUNK_BYTES as u64),
        r if r >= OVERHEAD as u64 => Some(full * CHUNK_BYTES as u64 + r - OVERHEAD as u64),
        _ => None,
    }
}

fn damaged_file(hash: &FileHash) -> Error {
    Error::FileRejected {
        hash: hash.to_hex(),
        reason: "the stored file does not open under the store's key: it is damaged".into(),
    }
}

/// Sealing a stream of content as it is imported (its hash not yet
/// known: the id is random).
struct Sealing<'a> {
    sealer: &'a Sealer,
    id: [u8; 16],
    n: u32,
    held: Vec<u8>,
}

impl<'a> Sealing<'a> {
    fn start(sealer: Option<&'a Sealer>, file: &mut File) -> Result<Option<Sealing<'a>>> {
        let Some(sealer) = sealer else {
            return Ok(None);
        };
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| Error::Io(std::io::Error::other(format!("random source: {e}"))))?;
        file.write_all(&sealed_header(&id))?;
        Ok(Some(Sealing {
            sealer,
            id,
            n: 0,
            held: Vec::with_capacity(CHUNK_BYTES),
        }))
    }

    fn write(&mut self, file: &mut File, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            if self.held.len() == CHUNK_BYTES {
                // More follows: the held chunk is not the last.
                let aad = segment_aad(&self.id, self.n, false);
                file.write_all(&self.sealer.seal(&aad, &self.held)?)?;
                self.held.clear();
                self.n += 1;
            }
            let take = (CHUNK_BYTES - self.held.len()).min(bytes.len());
            self.held.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        Ok(())
    }

    fn finish(self, file: &mut File) -> Result<()> {
        let aad = segment_aad(&self.id, self.n, true);
        file.write_all(&self.sealer.seal(&aad, &self.held)?)?;
        Ok(())
    }
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_area(dir: &Path) -> Files {
        let key = crate::StoreKey::generate().unwrap();
        Files::open_sealed(dir, false, Some(Arc::new(Sealer::new(&key).unwrap()))).unwrap()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_sealed_area_keeps_no_content_in_the_clear_and_reads_it_back() {
        let tmp = tempfile::tempdir().unwrap();
        let files = sealed_area(tmp.path());
        // Three chunks and a bit, a marker in the first and the last.
        let mut content: Vec<u8> = (0..CHUNK_BYTES * 3 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        content[10..26].copy_from_slice(b"RESIDENT-PHOTO-1");
        let end = content.len() - 20;
        content[end..end + 16].copy_from_slice(b"RESIDENT-PHOTO-2");
        let (hash, size) = files.import(&mut &content[..], u64::MAX).unwrap();
        assert_eq!((hash, size), (FileHash::of(&content), content.len() as u64));
        assert_eq!(files.size(&hash), Some(size));
        assert_eq!(files.read_all(&hash, u64::MAX).unwrap(), content);
        for n in 0..chunk_count(size) {
            let start = n as usize * CHUNK_BYTES;
            let len = chunk_len(size, n).unwrap();
            assert_eq!(
                files.read_chunk(&hash, n).unwrap(),
                &content[start..start + len]
            );
        }
        let stored = fs::read(files.path(&hash)).unwrap();
        assert!(!contains(&stored, b"RESIDENT-PHOTO"));
        assert_eq!(files.list().unwrap()[0].size, size);

        // Received chunk by chunk, out of order, into another sealed area.
        let other = sealed_area(&tmp.path().join("other"));
        for n in [3, 1, 0, 2] {
            let outcome = other
                .put_chunk(&hash, size, n, &files.read_chunk(&hash, n).unwrap(), None)
                .unwrap();
            assert_eq!(outcome == ChunkOutcome::Complete, n == 2);
        }
        assert_eq!(other.read_all(&hash, u64::MAX).unwrap(), content);
        let mut all = Vec::new();
        for entry in walk(&tmp.path().join("other")) {
            all.extend(fs::read(entry).unwrap());
        }
        assert!(!contains(&all, b"RESIDENT-PHOTO"));

        // Small files whole, empty ones too.
        for small in [&b""[..], b"RESIDENT-PHOTO-3"] {
            let h = FileHash::of(small);
            other.put_whole(&h, small).unwrap();
            assert_eq!(other.read_whole(&h).unwrap(), small);
            assert_eq!(other.size(&h), Some(small.len() as u64));
        }

        // A damaged segment does not open; another key opens nothing.
        let mut damaged = stored.clone();
        damaged[SEALED_HEADER + 5] ^= 1;
        fs::write(files.path(&hash), &damaged).unwrap();
        assert_eq!(
            files.read_chunk(&hash, 0).unwrap_err().code(),
            "file_rejected"
        );
        assert!(files.read_chunk(&hash, 1).is_ok());
        fs::write(files.path(&hash), &stored).unwrap();
        let stranger = Files::open_sealed(
            tmp.path(),
            false,
            Some(Arc::new(
                Sealer::new(&crate::StoreKey::generate().unwrap()).unwrap(),
            )),
        )
        .unwrap();
        assert!(stranger.read_all(&hash, u64::MAX).is_err());
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }

    #[test]
    fn sealed_lengths_map_to_content_lengths() {
        for size in [
            0u64,
            1,
            1000,
            CHUNK_BYTES as u64,
            CHUNK_BYTES as u64 + 1,
            5 * CHUNK_BYTES as u64,
        ] {
            let stored =
                SEALED_HEADER as u64 + size + u64::from(chunk_count(size)) * OVERHEAD as u64;
            assert_eq!(sealed_content_len(stored), Some(size), "{size}");
        }
        assert_eq!(sealed_content_len(3), None);
        assert_eq!(sealed_content_len(SEALED_HEADER as u64 + 5), None);
    }

    #[test]
    fn a_device_may_send_its_quota_a_day() {
        let day = 86_400_000;
        let c = charge_day(None, 600, 5, 1000);
        assert_eq!(c, Some((0, 600)));
        assert_eq!(charge_day(c, 500, 6, 1000), None);
        let c = charge_day(c, 400, 8, 1000);
        assert_eq!(c, Some((0, 1000)));
        assert_eq!(charge_day(c, 1, 9, 1000), None);
        assert_eq!(charge_day(None, u64::MAX, 9, u64::MAX), Some((0, u64::MAX)));
        assert_eq!(charge_day(Some((0, u64::MAX)), 1, 9, u64::MAX), None);
        // The next day starts afresh.
        assert_eq!(charge_day(c, 1000, day + 1, 1000), Some((1, 1000)));
    }

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn opening_clears_only_stale_leftovers_of_tmp() {
        let dir = tempfile::tempdir().unwrap();
        drop(Files::open(dir.path(), false).unwrap());
        let tmp = dir.path().join("tmp");
        fs::write(tmp.join("old"), b"x").unwrap();
        fs::write(tmp.join("busy"), b"y").unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        File::options()
            .append(true)
            .open(tmp.join("old"))
            .unwrap()
            .set_modified(day_ago)
            .unwrap();
        // Another process opens the shared area meanwhile.
        drop(Files::open(dir.path(), false).unwrap());
        assert!(!tmp.join("old").exists());
        assert!(tmp.join("busy").exists(), "another writer's file was taken");
    }

    #[test]
    fn chunks_cover_a_file_exactly() {
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_len(0, 0), Some(0));
        assert_eq!(chunk_count(CHUNK_BYTES as u64), 1);
        assert_eq!(chunk_count(CHUNK_BYTES as u64 + 1), 2);
        assert_eq!(chunk_len(CHUNK_BYTES as u64 + 1, 1), Some(1));
        assert_eq!(chunk_len(CHUNK_BYTES as u64 + 1, 2), None);
    }

    #[test]
    fn a_small_file_lands_whole_only_when_it_matches_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path(), false).unwrap();
        let data = bytes(WHOLE_FILE_BYTES);
        let hash = FileHash::of(&data);
        let mut damaged = data.clone();
        damaged[10] ^= 1;
        let e = files.put_whole(&hash, &damaged).unwrap_err();
        assert_eq!(e.code(), "file_rejected");
        assert!(!files.has(&hash));
        assert_eq!(
            files.read_whole(&hash).unwrap_err().code(),
            "file_not_found"
        );
        files.put_whole(&hash, &data).unwrap();
        assert_eq!(files.read_whole(&hash).unwrap(), data);
        // Again: already here, nothing to do.
        files.put_whole(&hash, &data).unwrap();
        // One byte more travels in chunks, both ways.
        let large = bytes(WHOLE_FILE_BYTES + 1);
        let large_hash = FileHash::of(&large);
        let e = files.put_whole(&large_hash, &large).unwrap_err();
        assert_eq!(e.code(), "file_rejected");
        assert!(!files.has(&large_hash));
        let (imported, _) = files.import(&mut &large[..], 1 << 30).unwrap();
        assert_eq!(
            files.read_whole(&imported).unwrap_err().code(),
            "invalid_input"
        );
        // Nothing is left behind in tmp/.
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_file_sent_in_chunks_in_any_order_lands_verified() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path(), false).unwrap();
        let data = bytes(2 * CHUNK_BYTES + 1000);
        let hash = FileHash::of(&data);
        let size = data.len() as u64;
        let chunk = |n: u32| {
            let s = n as usize * CHUNK_BYTES;
            &data[s..(s + CHUNK_BYTES).min(data.len())]
        };
        assert_eq!(
            files.put_chunk(&hash, size, 2, chunk(2), None).unwrap(),
            ChunkOutcome::Held { missing: 2 }
        );
        // A repeated chunk changes nothing.
        assert_eq!(
            files.put_chunk(&hash, size, 2, chunk(2), None).unwrap(),
            ChunkOutcome::Held { missing: 2 }
        );
        files
            .put_chunk(&hash, size, 0, chunk(0), Some(ChunkCheck::of(chunk(0))))
            .unwrap();
        assert_eq!(files.partial(&hash).unwrap().held, BTreeSet::from([0, 2]));
        assert!(!files.has(&hash));
        assert_eq!(
            files.put_chunk(&hash, size, 1, chunk(1), None).unwrap(),
            ChunkOutcome::Complete
        );
        assert_eq!(fs::read(files.path(&hash)).unwrap(), data);
        assert_eq!(files.partial(&hash).unwrap(), Partial::default());
        assert_eq!(files.read_chunk(&hash, 2).unwrap(), chunk(2));
    }

    #[test]
    fn bad_chunks_and_a_wrong_whole_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path(), false).unwrap();
        let data = bytes(CHUNK_BYTES + 10);
        let hash = FileHash::of(&data);
        let size = data.len() as u64;
        let mut damaged = data[..CHUNK_BYTES].to_vec();
        damaged[7] ^= 1;
        // Refused by either check a sender may name (the CRC-32 apps send,
        // the SHA-256 older apps sent), and nothing kept.
        for check in [
            ChunkCheck::of(&data[..CHUNK_BYTES]),
            ChunkCheck::Sha256(FileHash::of(&data[..CHUNK_BYTES]).0),
        ] {
            assert!(check.holds(&data[..CHUNK_BYTES]));
            let e = files
                .put_chunk(&hash, size, 0, &damaged, Some(check))
                .unwrap_err();
            assert_eq!(e.code(), "file_rejected");
            assert!(files.partial(&hash).unwrap().held.is_empty());
        }
        // A chunk of the wrong length, and one past the end.
        for (n, chunk) in [(0, &data[..10]), (2, &data[..0])] {
            let e = files.put_chunk(&hash, size, n, chunk, None).unwrap_err();
            assert_eq!(e.code(), "file_rejected");
        }
        assert_eq!(
            files
                .put_chunk(&hash, size, 1, &data[CHUNK_BYTES..], None)
                .unwrap(),
            ChunkOutcome::Held { missing: 1 }
        );
        // The same name announced with another size.
        let e = files
            .put_chunk(&hash, size + 1, 0, &data[..CHUNK_BYTES], None)
            .unwrap_err();
        assert_eq!(e.code(), "file_rejected");
        // Damaged without a chunk hash: the whole does not verify, and
        // the transfer starts over.
        let e = files.put_chunk(&hash, size, 0, &damaged, None).unwrap_err();
        assert_eq!(e.code(), "file_rejected");
        assert!(!files.has(&hash));
        assert_eq!(files.partial(&hash).unwrap(), Partial::default());
    }

    #[test]
    fn chunk_checks_parse_from_their_headers() {
        let crc = ChunkCheck::of(b"chunk");
        let hex = crc.crc32_hex().unwrap();
        assert_eq!(hex.len(), 8);
        assert_eq!(ChunkCheck::parse(Some(&hex), None).unwrap(), Some(crc));
        let sha = FileHash::of(b"chunk");
        assert_eq!(
            ChunkCheck::parse(None, Some(&sha.to_hex())).unwrap(),
            Some(ChunkCheck::Sha256(sha.0))
        );
        assert_eq!(ChunkCheck::parse(None, None).unwrap(), None);
        for bad in ["", "1234567", "123456789", "zzzzzzzz"] {
            let e = ChunkCheck::parse(Some(bad), None).unwrap_err();
            assert_eq!(e.code(), "invalid_input", "{bad:?}");
        }
        assert!(ChunkCheck::parse(None, Some("00")).is_err());
    }

    #[test]
    fn import_streams_and_refuses_what_is_too_large() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(dir.path(), false).unwrap();
        let data = bytes(300_000);
        let (hash, size) = files.import(&mut data.as_slice(), 1 << 20).unwrap();
        assert_eq!((hash, size), (FileHash::of(&data), 300_000));
        assert_eq!(fs::read(files.path(&hash)).unwrap(), data);
        // Again: deduplicated.
        assert_eq!(files.import(&mut data.as_slice(), 1 << 20).unwrap().0, hash);
        assert_eq!(files.list().unwrap().len(), 1);
        let e = files.import(&mut data.as_slice(), 1000).unwrap_err();
        assert_eq!(e.code(), "file_too_large");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}

/// What an office may be shown of a file: the bytes with the metadata a
/// camera writes stripped — EXIF (with its GPS position and device
/// serials), XMP, IPTC and comments from a JPEG; EXIF and text chunks from
/// a PNG — keeping only a JPEG's orientation, so the photo stands the
/// right way up. `None` when the bytes are not a well-formed JPEG or PNG:
/// such a file is offered as a download, never shown.
pub fn shown_image(bytes: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return strip_jpeg(bytes).map(|b| ("image/jpeg", b));
    }
    if bytes.starts_with(PNG_SIGNATURE) {
        return strip_png(bytes).map(|b| ("image/png", b));
    }
    None
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn strip_jpeg(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..2]);
    let mut at = 2;
    let mut orientation = None;
    loop {
        // Markers may be padded with 0xFF bytes.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        if *bytes.get(at)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(at + 1)?;
        if marker == 0xD9 {
            out.extend_from_slice(&bytes[at..at + 2]);
            return Some(out);
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            out.extend_from_slice(&bytes[at..at + 2]);
            at += 2;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([
            *bytes.get(at + 2)?,
            *bytes.get(at + 3)?,
        ]));
        if len < 2 {
            return None;
        }
        let end = at + 2 + len;
        let segment = bytes.get(at..end)?;
        let payload = &segment[4..];
        match marker {
            // APP1 (EXIF, XMP): dropped; the orientation is kept apart.
            0xE1 => {
                if payload.starts_with(b"Exif\0\0") {
                    orientation = orientation.or_else(|| exif_orientation(&payload[6..]));
                }
            }
            // APP3–APP13, APP15 (IPTC, vendor data) and comments: dropped.
            0xE3..=0xED | 0xEF | 0xFE => {}
            // Start of scan: the rest is image data up to the end.
            0xDA => {
                if let Some(o) = orientation.filter(|o| *o != 1) {
                    insert_after_jfif(&mut out, &orientation_exif(o));
                }
                out.extend_from_slice(&bytes[at..]);
                return Some(out);
            }
            _ => out.extend_from_slice(segment),
        }
        at = end;
    }
}

/// Puts a segment after SOI and any APP0 (JFIF) segment that follows it.
fn insert_after_jfif(out: &mut Vec<u8>, segment: &[u8]) {
    let mut at = 2;
    if out.get(2..4) == Some(&[0xFF, 0xE0]) {
        if let Some(len) = out.get(4..6) {
            at = 4 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        }
    }
    let at = at.min(out.len());
    out.splice(at..at, segment.iter().copied());
}

/// The orientation (tag 0x0112) in IFD0 of a TIFF block.
fn exif_orientation(tiff: &[u8]) -> Option<u16> {
    let big = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |i: usize| -> Option<u16> {
        let b = [*tiff.get(i)?, *tiff.get(i + 1)?];
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |i: usize| -> Option<u32> {
        let b = [
            *tiff.get(i)?,
            *tiff.get(i + 1)?,
            *tiff.get(i + 2)?,
            *tiff.get(i + 3)?,
        ];
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?);
    (0..count.min(256)).find_map(|n| {
        let entry = ifd + 2 + n * 12;
        (u16_at(entry)? == 0x0112)
            .then(|| u16_at(entry + 8))
            .flatten()
            .filter(|o| (1..=8).contains(o))
    })
}

/// An APP1 segment with an EXIF block holding only the orientation.
fn orientation_exif(orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big-endian, IFD0 at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // padding of the value field
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut seg = vec![0xFF, 0xE1];
    let len = u16::try_from(2 + 6 + tiff.len()).unwrap_or(u16::MAX);
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(b"Exif\0\0");
    seg.extend_from_slice(&tiff);
    seg
}

fn strip_png(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut at = PNG_SIGNATURE.len();
    while at < bytes.len() {
        let len =
            usize::try_from(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?)).ok()?;
        let kind = bytes.get(at + 4..at + 8)?;
        let end = at.checked_add(12)?.checked_add(len)?;
        let chunk = bytes.get(at..end)?;
        if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            out.extend_from_slice(chunk);
        }
        if kind == b"IEND" {
            return Some(out);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod shown_tests {
    use super::*;

    /// A JPEG's skeleton: SOI, JFIF, an EXIF block with a GPS-ish tag and
    /// orientation 6, a comment, a quantisation table, SOS with data, EOI.
    fn camera_jpeg(orientation: u16) -> Vec<u8> {
        let mut tiff = b"II\x2a\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&2u16.to_le_bytes());
        // GPSInfo pointer (0x8825) and Orientation.
        for (tag, value) in [(0x8825u16, 0x1234u16), (0x0112, orientation)] {
            tiff.extend_from_slice(&tag.to_le_bytes());
            tiff.extend_from_slice(&3u16.to_le_bytes());
            tiff.extend_from_slice(&1u32.to_le_bytes());
            tiff.extend_from_slice(&value.to_le_bytes());
            tiff.extend_from_slice(&[0, 0]);
        }
        tiff.extend_from_slice(&0u32.to_le_bytes());
        tiff.extend_from_slice(b"GPS 31.2304N 121.4737E serial XYZ");
        let seg = |marker: u8, payload: &[u8]| {
            let mut s = vec![0xFF, marker];
            s.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
            s.extend_from_slice(payload);
            s
        };
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(&tiff);
        let mut j = vec![0xFF, 0xD8];
        j.extend(seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        j.extend(seg(0xE1, &exif));
        j.extend(seg(0xFE, b"shot by worker w1"));
        j.extend(seg(0xDB, &[0u8; 65]));
        j.extend(seg(0xDA, &[1, 1, 0, 0, 63, 0]));
        j.extend_from_slice(&[0x12, 0x34, 0xFF, 0x00, 0x56]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_jpeg_is_shown_without_its_metadata_but_the_right_way_up() {
        let original = camera_jpeg(6);
        let (mime, shown) = shown_image(&original).unwrap();
        assert_eq!(mime, "image/jpeg");
        assert!(contains(&original, b"GPS 31.2304N"));
        assert!(!contains(&shown, b"GPS 31.2304N"));
        assert!(!contains(&shown, b"shot by worker"));
        // The orientation survives, alone, right after the JFIF segment.
        let exif_at = shown.windows(6).position(|w| w == b"Exif\0\0").unwrap();
        assert_eq!(exif_orientation(&shown[exif_at + 6..]), Some(6));
        assert_eq!(&shown[2..4], &[0xFF, 0xE0]);
        // The image data is untouched.
        assert!(shown.ends_with(&[0x12, 0x34, 0xFF, 0x00, 0x56, 0xFF, 0xD9]));
        // Upright photos carry no EXIF at all.
        let (_, upright) = shown_image(&camera_jpeg(1)).unwrap();
        assert!(!contains(&upright, b"Exif"));
    }

    #[test]
    fn a_png_loses_its_text_and_exif_chunks() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c
        };
        let mut png = PNG_SIGNATURE.to_vec();
        png.extend(chunk(b"IHDR", &[0; 13]));
        png.extend(chunk(b"tEXt", b"Comment\0GPS 31.2304N"));
        png.extend(chunk(b"eXIf", b"MM\0*GPS"));
        png.extend(chunk(b"IDAT", &[1, 2, 3]));
        png.extend(chunk(b"IEND", &[]));
        let (mime, shown) = shown_image(&png).unwrap();
        assert_eq!(mime, "image/png");
        assert!(!contains(&shown, b"GPS"));
        assert!(contains(&shown, b"IDAT"));
    }

    #[test]
    fn anything_else_is_never_shown() {
        for bytes in [
            &b"<html><script>alert(1)</script>"[..],
            &[0xFF, 0xD8, 0xFF, 0xE1, 0xFF, 0xFF][..],
            &[0xFF, 0xD8][..],
            PNG_SIGNATURE,
            b"",
        ] {
            assert_eq!(shown_image(bytes), None, "{bytes:?}");
        }
    }
}
