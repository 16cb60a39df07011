//! File transfer endpoints: devices upload the files their records
//! reference, chunk by chunk and resumably, and download the files of
//! records in their scope.
//!
//! * `GET /v1/files/{hash}` — what the server holds of the file: stored or
//!   not, its size, the chunks of an upload in progress.
//! * `PUT /v1/files/{hash}/chunks/{n}` — chunk `n` (headers
//!   `X-Gridsync-File-Size`, and `X-Gridsync-Chunk-Sha256` to have a chunk
//!   damaged on the way refused at once). The answer says whether the
//!   file is now stored (verified and durable) and how many chunks are
//!   missing.
//! * `GET /v1/files/{hash}/chunks/{n}` — chunk `n` of a stored file, with
//!   its SHA-256 and the file's size in the same headers.
//!
//! Every call needs a device token (the gate checks it before any body is
//! read), and the file must be referenced by a record the device's scope
//! admits — decided by the store (`Store::file_visible`); anything else is
//! 404 `file_not_found`, like a file that does not exist.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gridsync_core::files::{self, ChunkOutcome, FileHash};
use serde_json::json;

use crate::api::{bearer, blocking, core_error, AppError, AppState};

/// The header naming a file's size.
pub const SIZE_HEADER: &str = "x-gridsync-file-size";
/// The header naming a chunk's SHA-256 (hex).
pub const CHUNK_SHA_HEADER: &str = "x-gridsync-chunk-sha256";

/// The file routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/files/{hash}", get(status)).route(
        "/v1/files/{hash}/chunks/{n}",
        get(read_chunk).put(put_chunk),
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
/// references the file; 404 otherwise.
async fn admit(state: &AppState, headers: &HeaderMap, hash: FileHash) -> Result<(), AppError> {
    let token = bearer(headers)?.to_owned();
    let identity = state.identity.clone();
    let store = state.store.clone();
    blocking(move || {
        let device = identity.authenticate(&token)?;
        let scope = identity.scope_of(&device.worker)?;
        let visible = store
            .file_visible(&hash, &|s| scope.allows(s))
            .map_err(core_error)?;
        if visible {
            Ok(())
        } else {
            Err(core_error(gridsync_core::Error::FileNotFound(
                hash.to_hex(),
            )))
        }
    })
    .await
}

async fn status(
    State(state): State<AppState>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, AppError> {
    let hash = parse_hash(&hash)?;
    admit(&state, &headers, hash).await?;
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

async fn put_chunk(
    State(state): State<AppState>,
    Path((hash, n)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Result<Json<serde_json::Value>, AppError> {
    let (parts, body) = req.into_parts();
    let hash = parse_hash(&hash)?;
    let n = parse_chunk(&n)?;
    admit(&state, &parts.headers, hash).await?;
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
    let chunk_sha = match header_value(&parts.headers, CHUNK_SHA_HEADER) {
        None => None,
        Some(v) => Some(FileHash::parse(&v).map_err(core_error)?.0),
    };
    let announced = crate::gate::announced_length(&parts.headers);
    let bytes: Bytes = crate::gate::read_body(body, announced).await?;
    let store = state.store.clone();
    blocking(move || {
        let outcome = store
            .files()
            .put_chunk(&hash, size, n, &bytes, chunk_sha)
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
    admit(&state, &headers, hash).await?;
    let store = state.store.clone();
    let (bytes, size) = blocking(move || {
        let area = store.files();
        let bytes = area.read_chunk(&hash, n).map_err(core_error)?;
        let size = area.size(&hash).unwrap_or(0);
        Ok((bytes, size))
    })
    .await?;
    let sha = FileHash::of(&bytes).to_hex();
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&sha) {
        h.insert(CHUNK_SHA_HEADER, v);
    }
    h.insert(SIZE_HEADER, HeaderValue::from(size));
    Ok(response)
}
