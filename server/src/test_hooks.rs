//! Routes for tests and benches only (feature `test-hooks`, which the
//! tests package turns on for the server it runs — so a `gridsync` built
//! by `cargo test --workspace` has them too; `cargo build -p
//! gridsync-server` and the README's `cargo run` have none of this).
//! Nothing here is in the API description.
//!
//! * `POST /v1/test/raw-upload` — a device's body written whole to a
//!   scratch file and made durable (`fdatasync`), then removed: the least
//!   any upload that is acknowledged only once durable must do, which the
//!   file bench measures its chunked upload against.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use crate::api::{bearer, blocking, core_error, AppError, AppState};

/// The test routes (merged into the main router).
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/test/raw-upload", post(raw_upload))
}

async fn raw_upload(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<StatusCode, AppError> {
    let token = bearer(&headers)?.to_owned();
    let identity = state.identity.clone();
    blocking(move || Ok(identity.authenticate(&token)?)).await?;
    let bytes = crate::gate::read_body(body, crate::gate::announced_length(&headers)).await?;
    let store = state.store.clone();
    blocking(move || {
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let dir = store.files().dir().join("tmp");
            std::fs::create_dir_all(&dir)?;
            let mut name = [0u8; 16];
            getrandom::fill(&mut name).map_err(std::io::Error::other)?;
            let path = dir.join(format!("raw-{}", hex::encode(name)));
            let mut file = std::fs::File::create(&path)?;
            file.write_all(&bytes)?;
            file.sync_data()?;
            std::fs::remove_file(&path)
        };
        write().map_err(|e| core_error(e.into()))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
