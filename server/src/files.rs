//! File transfer endpoints: devices upload the files their records
//! reference, chunk by chunk and resumably, and download the files of
//! records in their scope.
//!
//! * `GET /v1/files/{hash}` — what the server holds of the file: stored or
//!   not, its size, the chunks of an upload in progress (part of an
//!   upload: it follows the upload rule).
//! * `PUT /v1/files/{hash}` — a small file whole, in one request (at
//!   most `files::WHOLE_FILE_BYTES`, two chunks): checked against its
//!   name and stored durably before the answer, which has the same shape
//!   as a chunk's.
//! * `PUT /v1/files/{hash}/chunks/{n}` — chunk `n` (headers
//!   `X-Gridsync-File-Size`, and `X-Gridsync-Chunk-Crc32` — or, from
//!   apps before it, `X-Gridsync-Chunk-Sha256` — to have a chunk damaged
//!   on the way refused at once). The answer says whether the
//!   file is now stored (verified and durable) and how many chunks are
//!   missing.
//! * `GET /v1/files/{hash}/chunks/{n}` — chunk `n` of a stored file, with
//!   its CRC-32 and the file's size in the same headers.
//!
//! Every call needs a device token (the gate checks it before any body is
//! read), and the file must be referenced by a record the device's scope
//! admits — decided by the store (`Store::file_visible` to download,
//! `Store::file_accepts_upload` to upload, which also admits a record
//! moved out of the device's scope); anything else is 404
//! `file_not_found`, like a file that does not exist.
//!
//! The office's side (office token, the same rule on the office user's
//! scope):
//!
//! * `GET /v1/office/files/{hash}` — the file as the office may see it: a
//!   JPEG or PNG with its camera metadata stripped
//!   (`gridsync_core::files::shown_image`: no GPS position, no device
//!   serials), shown inline; anything else only as a download.
//! * `GET /v1/office/files/{hash}/thumbnail` — a JPEG at most 320 pixels
//!   on a side, made once and kept beside the file.
//! * `POST /v1/office/issues/{id}/attachments` and
//!   `/v1/office/meetings/{id}/attachments` — the body is the file (its
//!   `Content-Type` the type, `?caption=` the caption), at most the
//!   request body limit; the record references it in one write.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gridsync_core::files::{
    self, ChunkCheck, ChunkOutcome, FileHash, CHUNK_CRC32_HEADER, CHUNK_SHA256_HEADER, SIZE_HEADER,
};
use serde_json::json;

use crate::api::{bearer, blocking, core_error, ApiQuery, AppError, AppState};
use crate::office::{as_office, parse_id, visible};

/// The file routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/files/{hash}", get(status).put(put_whole))
        .route(
            "/v1/files/{hash}/chunks/{n}",
            get(read_chunk).put(put_chunk),
        )
        .route("/v1/office/files/{hash}", get(office_file))
        .route("/v1/office/files/{hash}/thumbnail", get(office_thumbnail))
        .route(
            "/v1/office/issues/{id}/attachments",
            post(office_attach_issue),
        )
        .route(
            "/v1/office/meetings/{id}/attachments",
            post(office_attach_meeting),
        )
}

fn parse_hash(hash: &str) -> Result<FileHash, AppError> {
    FileHash::parse(hash).map_err(core_error)
}

fn parse_chunk(n: &str) -> Result<u32, AppError> {
    n.parse().map_err(|_| {
        AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "the chunk number must be a non-negative integer",
        )
    })
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// Settles that the caller is a device whose scope admits a record that
/// references the file (for an upload: admits, or admitted before an
/// office move); 404 otherwise. Returns the device's id.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    hash: FileHash,
    upload: bool,
) -> Result<String, AppError> {
    let token = bearer(headers)?.to_owned();
    let identity = state.identity.clone();
    let store = state.store.clone();
    blocking(move || {
        let device = identity.authenticate(&token)?;
        let scope = identity.scope_of(&device.worker)?;
        let may = |s: &gridsync_core::RecordScope| scope.allows(s);
        let visible = if upload {
            store.file_accepts_upload(&hash, &may)
        } else {
            store.file_visible(&hash, &may)
        }
        .map_err(core_error)?;
        if visible {
            Ok(device.id)
        } else {
            Err(core_error(gridsync_core::Error::FileNotFound(
                hash.to_hex(),
            )))
        }
    })
    .await
}

/// [`admit`] for an upload (of a well-formed name), then the body. The body is read even when
/// the upload is refused (the caller's token is good; the gate bounds the
/// body's size and time): a server that answers while the phone is still
/// sending resets the connection, and the phone would see a broken
/// transfer instead of the reason.
async fn admitted_upload(
    state: &AppState,
    headers: &HeaderMap,
    hash: Result<FileHash, AppError>,
    body: axum::body::Body,
    announced: Option<u64>,
) -> Result<(FileHash, String, Bytes), AppError> {
    let admitted = match hash {
        Ok(hash) => admit(state, headers, hash, true)
            .await
            .map(|device| (hash, device)),
        Err(e) => Err(e),
    };
    let bytes = crate::gate::read_body(body, announced).await;
    let (hash, device) = admitted?;
    Ok((hash, device, bytes?))
}

async fn status(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let hash = parse_hash(&hash)?;
    admit(&state, &headers, hash, true).await?;
    let store = state.store.clone();
    blocking(move || {
        let area = store.files();
        if let Some(size) = area.size(&hash) {
            return Ok(Json(json!({
                "hash": hash.to_hex(),
                "stored": true,
                "size": size,
                "chunks": files::chunk_count(size),
                "held": [],
            })));
        }
        let partial = area.partial(&hash).map_err(core_error)?;
        Ok(Json(json!({
            "hash": hash.to_hex(),
            "stored": false,
            "size": partial.size,
            "chunks": partial.size.map(files::chunk_count),
            "held": partial.held,
        })))
    })
    .await
}

async fn put_whole(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    req: axum::extract::Request,
) -> Result<Json<serde_json::Value>, AppError> {
    let (parts, body) = req.into_parts();
    let announced = crate::gate::announced_length(&parts.headers);
    let (hash, device, bytes) =
        admitted_upload(&state, &parts.headers, parse_hash(&hash), body, announced).await?;
    let size = bytes.len() as u64;
    files::check_whole(&hash, size).map_err(core_error)?;
    if size > state.limits.max_file_bytes {
        return Err(core_error(gridsync_core::Error::FileTooLarge {
            size,
            limit: state.limits.max_file_bytes,
        }));
    }
    let store = state.store.clone();
    let limit = state.limits.file_bytes_per_device_day;
    blocking(move || {
        charge_quota(&store, &device, size, limit)?;
        store.files().put_whole(&hash, &bytes).map_err(core_error)?;
        Ok(Json(json!({
            "hash": hash.to_hex(),
            "stored": true,
            "missing": 0,
        })))
    })
    .await
}

/// Counts `bytes` against the device's daily file quota (kept in the
/// store: every node counts the same day); 429 `file_quota` once it is
/// spent. Blocks on the store.
fn charge_quota(
    store: &gridsync_core::Store,
    device: &str,
    bytes: u64,
    limit: u64,
) -> Result<(), AppError> {
    if store
        .charge_file_quota(device, bytes, limit)
        .map_err(core_error)?
    {
        return Ok(());
    }
    Err(AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "file_quota",
        format!(
            "this device has sent its {} MiB of files for today; the rest wait until tomorrow",
            limit >> 20
        ),
    ))
}

async fn put_chunk(
    State(state): State<AppState>,
    Path((hash, n)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Result<Json<serde_json::Value>, AppError> {
    let (parts, body) = req.into_parts();
    let n = parse_chunk(&n);
    let announced = crate::gate::announced_length(&parts.headers);
    let (hash, device, bytes) =
        admitted_upload(&state, &parts.headers, parse_hash(&hash), body, announced).await?;
    let n = n?;
    let size: u64 = header_value(&parts.headers, SIZE_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("the {SIZE_HEADER} header must give the file's size in bytes"),
            )
        })?;
    if size > state.limits.max_file_bytes {
        return Err(core_error(gridsync_core::Error::FileTooLarge {
            size,
            limit: state.limits.max_file_bytes,
        }));
    }
    let check = ChunkCheck::parse(
        header_value(&parts.headers, CHUNK_CRC32_HEADER).as_deref(),
        header_value(&parts.headers, CHUNK_SHA256_HEADER).as_deref(),
    )
    .map_err(core_error)?;
    let store = state.store.clone();
    let limit = state.limits.file_bytes_per_device_day;
    blocking(move || {
        charge_quota(&store, &device, bytes.len() as u64, limit)?;
        let outcome = store
            .files()
            .put_chunk(&hash, size, n, &bytes, check)
            .map_err(core_error)?;
        let missing = match outcome {
            ChunkOutcome::Complete => 0,
            ChunkOutcome::Held { missing } => missing,
        };
        Ok(Json(json!({
            "hash": hash.to_hex(),
            "stored": outcome == ChunkOutcome::Complete,
            "missing": missing,
        })))
    })
    .await
}

async fn read_chunk(
    State(state): State<AppState>,
    Path((hash, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let hash = parse_hash(&hash)?;
    let n = parse_chunk(&n)?;
    admit(&state, &headers, hash, false).await?;
    let store = state.store.clone();
    let (bytes, size) = blocking(move || {
        let area = store.files();
        let bytes = area.read_chunk(&hash, n).map_err(core_error)?;
        let size = area.size(&hash).unwrap_or(0);
        Ok((bytes, size))
    })
    .await?;
    let crc = ChunkCheck::of(&bytes).crc32_hex().unwrap_or_default();
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&crc) {
        h.insert(CHUNK_CRC32_HEADER, v);
    }
    h.insert(SIZE_HEADER, HeaderValue::from(size));
    Ok(response)
}

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_PIXELS: u32 = 320;

/// The largest image decoded for a thumbnail (pixels on a side), and the
/// memory the decoder may take: a photo bigger than that gets no
/// thumbnail (422) rather than costing the server its memory.
const MAX_DECODED_PIXELS: u32 = 12_000;
const MAX_DECODE_BYTES: u64 = 256 << 20;

/// A JPEG thumbnail of an image, upright (the EXIF orientation applied).
/// It carries no metadata: it is encoded afresh.
pub fn thumbnail(bytes: &[u8]) -> gridsync_core::Result<Vec<u8>> {
    use image::ImageDecoder;
    let refuse = |reason: String| gridsync_core::Error::FileRejected {
        hash: FileHash::of(bytes).to_hex(),
        reason,
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| refuse(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODED_PIXELS);
    limits.max_image_height = Some(MAX_DECODED_PIXELS);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| refuse(format!("not an image this server reads: {e}")))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(|e| refuse(e.to_string()))?;
    img.apply_orientation(orientation);
    let small = img
        .thumbnail(THUMBNAIL_PIXELS, THUMBNAIL_PIXELS)
        .into_rgb8();
    let mut out = std::io::Cursor::new(Vec::new());
    small
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(out.into_inner())
}

/// Settles that the office user's scope admits a record referencing the
/// file; 404 otherwise.
fn office_sees(
    state: &AppState,
    ctx: &crate::office::OfficeCtx,
    hash: &FileHash,
) -> Result<(), AppError> {
    let visible = state
        .store
        .file_visible(hash, &|s| ctx.scope.allows(s))
        .map_err(core_error)?;
    if visible {
        Ok(())
    } else {
        Err(core_error(gridsync_core::Error::FileNotFound(
            hash.to_hex(),
        )))
    }
}

fn file_response(content_type: &'static str, inline: bool, bytes: Vec<u8>) -> Response {
    use axum::http::header;
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Whatever a file holds, it runs nothing in the office's browser.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400, immutable"),
    );
    if !inline {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment"),
        );
    }
    response
}

async fn office_file(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let hash = parse_hash(&hash)?;
    as_office(&state, &headers, move |state, ctx| {
        office_sees(state, &ctx, &hash)?;
        let bytes = std::fs::read(state.store.files().path(&hash)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                core_error(gridsync_core::Error::FileNotFound(hash.to_hex()))
            } else {
                core_error(e.into())
            }
        })?;
        Ok(match files::shown_image(&bytes) {
            Some((mime, shown)) => file_response(mime, true, shown),
            None => file_response("application/octet-stream", false, bytes),
        })
    })
    .await
}

async fn office_thumbnail(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let hash = parse_hash(&hash)?;
    as_office(&state, &headers, move |state, ctx| {
        office_sees(state, &ctx, &hash)?;
        let thumb = state
            .store
            .files()
            .derived(&hash, "thumbnail", thumbnail)
            .map_err(core_error)?;
        Ok(file_response("image/jpeg", true, thumb))
    })
    .await
}

#[derive(serde::Deserialize)]
struct Caption {
    #[serde(default)]
    caption: String,
    /// Meetings: the action item the file is evidence for.
    #[serde(default)]
    item: Option<String>,
}

async fn office_attach_issue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<Caption>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    office_attach(state, id, q, req, false).await
}

async fn office_attach_meeting(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<Caption>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    office_attach(state, id, q, req, true).await
}

/// Attaches the request body to the record as the office user: to an
/// issue, a meeting, or as evidence on a meeting's action item (`item`).
async fn office_attach(
    state: AppState,
    id: String,
    q: Caption,
    req: axum::extract::Request,
    meeting: bool,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    let id = parse_id(&id)?;
    let (parts, body) = req.into_parts();
    let mime = header_value(&parts.headers, "content-type")
        .unwrap_or_else(|| "application/octet-stream".into());
    // Who asks and whether the record is theirs, before the body is read.
    let item = q.item;
    let caption = q.caption;
    let to = as_office(&state, &parts.headers, move |state, ctx| {
        visible(state, &ctx, id)?;
        Ok(match (meeting, item) {
            (false, None) => gridsync_core::AttachTo::Issue(id),
            (true, None) => gridsync_core::AttachTo::Meeting(id),
            (true, Some(item)) => gridsync_core::AttachTo::Evidence {
                meeting: id,
                item: parse_id(&item)?,
            },
            (false, Some(_)) => {
                return Err(AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    "item: only a meeting's action items take evidence",
                ))
            }
        })
    })
    .await?;
    let announced = crate::gate::announced_length(&parts.headers);
    let bytes: Bytes = crate::gate::read_body(body, announced).await?;
    let limit = state.limits.max_file_bytes;
    as_office(&state, &parts.headers, move |state, ctx| {
        let file = state
            .store
            .attach_file(
                to,
                &ctx.author,
                &mut &bytes[..],
                &mime,
                &caption,
                None,
                limit,
            )
            .map_err(core_error)?;
        Ok((
            StatusCode::CREATED,
            Json(serde_json::to_value(&file).unwrap_or_default()),
        ))
    })
    .await
}
