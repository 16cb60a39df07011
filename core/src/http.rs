//! A small blocking HTTP(S) client for the sync protocol (feature `http`).
//!
//! `https://` addresses are verified against the usual web roots (rustls
//! with the webpki roots), or, once [`pin_certificate`] is called, against
//! that certificate only. Phone apps may instead bring their own HTTP stack
//! and drive [`crate::sync::Client`] directly; this client serves the FFI's
//! built-in sync, tests and tools. It is the only module of the crate that
//! touches the network.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::error::{Error, Result};
use crate::lifecycle::{DeviceOrder, ORDER_HEADER, PENDING_HEADER, WIPE_CODE};
use crate::store::Store;
use crate::sync::{Client, Progress, SyncReport, MAX_MESSAGE_BYTES};

/// What a device receives when it enrolls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrollment {
    pub device_id: String,
    /// The code to open the store with, for case numbers.
    pub device_code: String,
    /// The bearer token for sync. Keep it secret.
    pub token: String,
    /// The worker the device acts for, and the role it acts in: what the
    /// app writes as the author of every operation (the server refuses
    /// changes by anyone else).
    pub worker: String,
    pub role: crate::Role,
}

/// The certificate(s) `https://` servers must present, when pinned.
static PINNED: Mutex<Option<Vec<Certificate<'static>>>> = Mutex::new(None);

/// Trusts only the certificate(s) in `pem` for `https://` from now on (a
/// server with a self-signed or private-CA certificate); `None` goes back
/// to the usual web roots. Applies to the whole process.
pub fn pin_certificate(pem: Option<&[u8]>) -> Result<()> {
    let certs = match pem {
        None => None,
        Some(pem) => {
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::InvalidInput {
                    field: "certificate",
                    reason: e.to_string(),
                })?;
            if certs.is_empty() {
                return Err(Error::InvalidInput {
                    field: "certificate",
                    reason: "no PEM certificate found".into(),
                });
            }
            Some(certs)
        }
    };
    *PINNED.lock().unwrap_or_else(PoisonError::into_inner) = certs;
    Ok(())
}

fn agent() -> ureq::Agent {
    let roots = match &*PINNED.lock().unwrap_or_else(PoisonError::into_inner) {
        Some(certs) => RootCerts::new_with_certs(certs),
        None => RootCerts::WebPki,
    };
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .into()
}

fn url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

fn transport(e: ureq::Error) -> Error {
    Error::Transport(e.to_string())
}

/// Turns a non-2xx response into [`Error::Rejected`] with the server's
/// stable code.
fn rejected(status: u16, body: &[u8]) -> Error {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    Error::Rejected {
        status,
        code: field("code"),
        message: field("message"),
    }
}

/// The body of a response (at most `limit` bytes), or the server's
/// refusal as [`Error::Rejected`] when the status is not 200.
fn answer(mut response: ureq::http::Response<ureq::Body>, limit: u64) -> Result<Vec<u8>> {
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_vec()
        .map_err(transport)?;
    if status != 200 {
        return Err(rejected(status, &bytes));
    }
    Ok(bytes)
}

/// Redeems a one-time enrollment code for the store's actor, and gives
/// the store the device code the server assigned (durably: no reopening).
/// A store enrolled before is refused with [`Error::AlreadyEnrolled`]
/// before anything is sent, so the code stays unused.
pub fn enroll(base_url: &str, code: &str, store: &Store) -> Result<Enrollment> {
    if store.is_erased() {
        return Err(Error::Erased);
    }
    if store.is_enrolled()? {
        return Err(Error::AlreadyEnrolled);
    }
    let body = serde_json::json!({ "code": code, "actor": store.actor().to_hex_string() });
    let bytes = answer(
        agent()
            .post(url(base_url, "/v1/enroll"))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .map_err(transport)?,
        1 << 20,
    )?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Transport(format!("bad enrollment response: {e}")))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Transport(format!("enrollment response lacks {k}")))
    };
    let role = field("role")?;
    let device_code = field("device_code")?;
    store.adopt_device_code(&device_code)?;
    Ok(Enrollment {
        device_id: field("device_id")?,
        device_code,
        token: field("token")?,
        worker: field("worker")?,
        role: crate::Role::parse(&role)
            .ok_or_else(|| Error::Transport(format!("enrollment response names role {role:?}")))?,
    })
}

/// Sends one request to `POST /v1/sync` and returns the response bytes.
pub fn post_sync(base_url: &str, token: &str, request: &[u8]) -> Result<Vec<u8>> {
    Ok(post_sync_as(base_url, token, request, None)?.0)
}

/// Like [`post_sync`], reporting `pending` (the records this device has
/// not had acknowledged, for the admin's device list) and returning the
/// order the answer carries. A refusal ordering a wipe is
/// [`Error::Rejected`] with status 410 and code [`WIPE_CODE`]
/// ([`wipe_ordered`]).
pub fn post_sync_as(
    base_url: &str,
    token: &str,
    request: &[u8],
    pending: Option<usize>,
) -> Result<(Vec<u8>, Option<DeviceOrder>)> {
    let mut call = agent()
        .post(url(base_url, "/v1/sync"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/octet-stream");
    if let Some(n) = pending {
        call = call.header(PENDING_HEADER, n.to_string());
    }
    let response = call.send(request).map_err(transport)?;
    let order = response
        .headers()
        .get(ORDER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(DeviceOrder::parse);
    Ok((answer(response, MAX_MESSAGE_BYTES as u64)?, order))
}

/// Whether an error is the server ordering this device to erase its
/// store at once.
pub fn wipe_ordered(e: &Error) -> bool {
    matches!(e, Error::Rejected { status: 410, code, .. } if code == WIPE_CODE)
}

/// What [`obey`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Obeyed {
    /// The store was erased.
    pub erased: bool,
    /// Records with work the server never received, erased with it (a
    /// wipe's; a retirement erases only when there are none).
    pub discarded: usize,
    /// The server knows: the report reached it. When it did not, sync
    /// again with the same token later: the order comes again, and the
    /// report with it.
    pub reported: bool,
}

/// Carries out the server's order for this device: a wipe erases the
/// store at once; a retirement erases it only when nothing is left to
/// send (records and files: see [`Store::ready_to_retire`]), otherwise it
/// waits for the next sync. After erasing, reports to
/// `POST /v1/device/erased`.
pub fn obey(store: &Store, base_url: &str, token: &str, order: DeviceOrder) -> Result<Obeyed> {
    if order == DeviceOrder::Retire && !store.ready_to_retire()? {
        return Ok(Obeyed::default());
    }
    let discarded = store.erase()?;
    let body = serde_json::json!({ "order": order.as_str(), "discarded": discarded });
    let reported = agent()
        .post(url(base_url, "/v1/device/erased"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(transport)
        .and_then(|r| answer(r, 1 << 16))
        .is_ok();
    Ok(Obeyed {
        erased: true,
        discarded,
        reported,
    })
}

/// Syncs the store with the server until nothing is left to push or pull.
/// Blocks the calling thread. Orders for the device are not carried out
/// here (see [`sync_device`]).
pub fn sync(store: &Store, base_url: &str, token: &str) -> Result<SyncReport> {
    sync_with_progress(store, base_url, token, |_| {})
}

/// What [`sync_device`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSync {
    /// The records' sync (none when the server ordered a wipe).
    pub report: Option<SyncReport>,
    /// The files sent.
    pub files: FilesReport,
    /// The server's order for this device, if it gave one.
    pub order: Option<DeviceOrder>,
    /// What carrying it out did.
    pub obeyed: Obeyed,
}

/// A device's whole sync, as an app runs it: records, then this device's
/// files, then the server's order for the device (see [`obey`]).
/// `before_round` runs before each request and before the files (an
/// `Err` stops the sync there: cancellation); `progress` after each
/// round, `file_progress` with the chunks sent so far. The records the
/// sync changed are added to `changed`, also when it fails part way.
pub fn sync_device(
    store: &Store,
    base_url: &str,
    token: &str,
    mut before_round: impl FnMut() -> Result<()>,
    progress: impl FnMut(&Progress),
    file_progress: impl FnMut(usize) + Send,
    changed: &mut Vec<crate::RecordId>,
) -> Result<DeviceSync> {
    let mut order = None;
    let mut client = Client::new(store);
    let report = client.run_with_progress(
        |request| {
            before_round()?;
            let pending = store.pending()?.len();
            let (bytes, o) = post_sync_as(base_url, token, &request, Some(pending))?;
            order = o;
            Ok(bytes)
        },
        progress,
    );
    // What was merged before a failure is there too.
    changed.extend(client.take_changed());
    let report = match report {
        Ok(r) => r,
        Err(e) if wipe_ordered(&e) => {
            let obeyed = obey(store, base_url, token, DeviceOrder::Wipe)?;
            return Ok(DeviceSync {
                order: Some(DeviceOrder::Wipe),
                obeyed,
                ..DeviceSync::default()
            });
        }
        Err(e) => return Err(e),
    };
    before_round()?;
    let files = upload_files(store, base_url, token, file_progress)?;
    let obeyed = match order {
        Some(o) => obey(store, base_url, token, o)?,
        None => Obeyed::default(),
    };
    Ok(DeviceSync {
        report: Some(report),
        files,
        order,
        obeyed,
    })
}

/// Like [`sync`], calling `progress` after every round.
pub fn sync_with_progress(
    store: &Store,
    base_url: &str,
    token: &str,
    progress: impl FnMut(&Progress),
) -> Result<SyncReport> {
    Client::new(store).run_with_progress(|request| post_sync(base_url, token, &request), progress)
}

/// What [`upload_files`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilesReport {
    /// Files the server now holds (sent now or found there already).
    pub stored: usize,
    /// Chunks sent.
    pub chunks_sent: usize,
    /// Files left for later: the server does not know a record that
    /// references them yet (sync first), or refused them.
    pub left: usize,
}

use crate::files::{ChunkCheck, CHUNK_CRC32_HEADER, CHUNK_SHA256_HEADER, SIZE_HEADER};

fn files_url(base_url: &str, hash: &crate::files::FileHash, rest: &str) -> String {
    url(base_url, &format!("/v1/files/{}{rest}", hash.to_hex()))
}

/// What the server holds of a file: `(stored, held chunks)`.
fn file_status(
    agent: &ureq::Agent,
    base_url: &str,
    token: &str,
    hash: &crate::files::FileHash,
) -> Result<(bool, std::collections::BTreeSet<u32>)> {
    let bytes = answer(
        agent
            .get(files_url(base_url, hash, ""))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(transport)?,
        1 << 20,
    )?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Transport(format!("bad file status: {e}")))?;
    let stored = v.get("stored").and_then(|s| s.as_bool()).unwrap_or(false);
    let held = v
        .get("held")
        .and_then(|h| h.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect()
        })
        .unwrap_or_default();
    Ok((stored, held))
}

/// Requests in flight while files upload: files' durable landings on the
/// server overlap other files' transfers (the server allows a device
/// four requests at once, `gate::PER_DEVICE_REQUESTS`).
pub const UPLOAD_STREAMS: usize = 4;

/// Sends one file's missing chunks; `Some(true)` once the server reports
/// it stored, `None` when the server does not take it (yet).
fn upload_one(
    agent: &ureq::Agent,
    store: &Store,
    base_url: &str,
    token: &str,
    (hash, size): (crate::files::FileHash, u64),
    sent: &dyn Fn(),
) -> Result<Option<bool>> {
    use crate::files::chunk_count;
    let chunks = chunk_count(size);
    // A small file travels whole, without asking first: the answer says
    // whether the server takes the file, and a cut re-sends at most the
    // one chunk the server had already received.
    if size <= crate::files::WHOLE_FILE_BYTES as u64 {
        let bytes = store.files().read_whole(&hash)?;
        let response = agent
            .put(files_url(base_url, &hash, ""))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(transport)?;
        match answer(response, 1 << 20) {
            Ok(_) => {
                for _ in 0..chunks {
                    sent();
                }
                return Ok(Some(true));
            }
            // Not (yet) a file of a record the server has: later.
            Err(Error::Rejected { status: 404, .. }) => return Ok(None),
            // A server from before whole-file uploads: chunk by chunk.
            Err(Error::Rejected { status: 405, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // A larger one asks which chunks the server holds and sends only the
    // others.
    let held = match file_status(agent, base_url, token, &hash) {
        Ok((true, _)) => return Ok(Some(true)),
        Ok((false, held)) => held,
        Err(Error::Rejected { status: 404, .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    for n in (0..chunks).filter(|n| !held.contains(n)) {
        let chunk = store.files().read_chunk(&hash, n)?;
        let response = agent
            .put(files_url(base_url, &hash, &format!("/chunks/{n}")))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/octet-stream")
            .header(SIZE_HEADER, size.to_string())
            .header(
                CHUNK_CRC32_HEADER,
                ChunkCheck::of(&chunk).crc32_hex().unwrap_or_default(),
            )
            .send(&chunk[..])
            .map_err(transport)?;
        let bytes = match answer(response, 1 << 20) {
            Ok(bytes) => bytes,
            Err(Error::Rejected { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        sent();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if v.get("stored").and_then(|s| s.as_bool()) == Some(true) {
            return Ok(Some(true));
        }
    }
    Ok(Some(false))
}

/// Sends the files this device attached that the server does not hold
/// yet, [`UPLOAD_STREAMS`] at a time, each resuming from the chunks the
/// server already has, and marks each one the server reports stored
/// (verified and durable there). Run it after [`sync`]: the server takes
/// a file only once it knows a record that references it. `progress` is
/// called after every chunk with the chunks sent so far. The first error
/// stops the upload (what was stored stays marked).
pub fn upload_files(
    store: &Store,
    base_url: &str,
    token: &str,
    progress: impl FnMut(usize) + Send,
) -> Result<FilesReport> {
    let queue = Mutex::new(store.unsent_files()?.into_iter());
    let report = Mutex::new(FilesReport::default());
    let progress = Mutex::new(progress);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..UPLOAD_STREAMS {
            scope.spawn(|| {
                let agent = agent();
                loop {
                    if failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_some()
                    {
                        return;
                    }
                    let Some(next) = queue.lock().unwrap_or_else(PoisonError::into_inner).next()
                    else {
                        return;
                    };
                    let sent = || {
                        let n = {
                            let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
                            r.chunks_sent += 1;
                            r.chunks_sent
                        };
                        (progress.lock().unwrap_or_else(PoisonError::into_inner))(n);
                    };
                    let outcome =
                        upload_one(&agent, store, base_url, token, next, &sent).and_then(|done| {
                            if done == Some(true) {
                                store.file_sent(&next.0)?;
                            }
                            Ok(done)
                        });
                    let mut r = report.lock().unwrap_or_else(PoisonError::into_inner);
                    match outcome {
                        Ok(Some(true)) => r.stored += 1,
                        Ok(_) => r.left += 1,
                        Err(e) => {
                            failed
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_or_insert(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(report.into_inner().unwrap_or_else(PoisonError::into_inner)),
    }
}

/// Downloads the files the records on this device reference and it does
/// not hold, those of the most recently changed records first, until
/// `budget_bytes` more are held (for an app on Wi-Fi: the photos of the
/// worker's own grid ready before they go out). Files the server does not
/// hold yet are skipped. Returns how many were fetched.
pub fn prefetch_files(
    store: &Store,
    base_url: &str,
    token: &str,
    budget_bytes: u64,
) -> Result<usize> {
    let mut left = budget_bytes;
    let mut fetched = 0;
    for (hash, size) in store.missing_files()? {
        if size > left {
            continue;
        }
        match fetch_file(store, base_url, token, &hash, size, |_, _| {}) {
            Ok(_) => {
                left -= size;
                fetched += 1;
            }
            // Not uploaded yet, or no longer the device's: later, or never.
            Err(Error::Rejected { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(fetched)
}

/// The local path of the file `hash` (of `size` bytes, as the record's
/// attachment says), downloading it first if it is not here: chunk by
/// chunk, resuming from the chunks already held, each checked against
/// the SHA-256 the server sends with it and the whole against its name.
/// `progress` is called after every chunk with `(held, chunks)`.
pub fn fetch_file(
    store: &Store,
    base_url: &str,
    token: &str,
    hash: &crate::files::FileHash,
    size: u64,
    mut progress: impl FnMut(u32, u32),
) -> Result<std::path::PathBuf> {
    use crate::files::{chunk_count, ChunkOutcome};
    let area = store.files();
    if area.has(hash) {
        area.touch(hash);
        return Ok(area.path(hash));
    }
    let chunks = chunk_count(size);
    let held = area.partial(hash)?.held;
    let mut count = held.len() as u32;
    let agent = agent();
    for n in (0..chunks).filter(|n| !held.contains(n)) {
        let response = agent
            .get(files_url(base_url, hash, &format!("/chunks/{n}")))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(transport)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let check = ChunkCheck::parse(
            header(CHUNK_CRC32_HEADER).as_deref(),
            header(CHUNK_SHA256_HEADER).as_deref(),
        )
        .map_err(|e| Error::Transport(format!("bad chunk check from the server: {e}")))?;
        let bytes = answer(response, crate::files::CHUNK_BYTES as u64 + 1)?;
        let outcome = area.put_chunk(hash, size, n, &bytes, check)?;
        count += 1;
        progress(count, chunks);
        if outcome == ChunkOutcome::Complete {
            break;
        }
    }
    if !area.has(hash) {
        return Err(Error::FileRejected {
            hash: hash.to_hex(),
            reason: "the download ended incomplete".into(),
        });
    }
    Ok(area.path(hash))
}
