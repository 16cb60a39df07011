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

/// Redeems a one-time enrollment code for the store's actor.
pub fn enroll(base_url: &str, code: &str, store: &Store) -> Result<Enrollment> {
    let body = serde_json::json!({ "code": code, "actor": store.actor().to_hex_string() });
    let mut response = agent()
        .post(url(base_url, "/v1/enroll"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(transport)?;
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .map_err(transport)?;
    if status != 200 {
        return Err(rejected(status, &bytes));
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Transport(format!("bad enrollment response: {e}")))?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Transport(format!("enrollment response lacks {k}")))
    };
    let role = field("role")?;
    Ok(Enrollment {
        device_id: field("device_id")?,
        device_code: field("device_code")?,
        token: field("token")?,
        worker: field("worker")?,
        role: crate::Role::parse(&role)
            .ok_or_else(|| Error::Transport(format!("enrollment response names role {role:?}")))?,
    })
}

/// Sends one request to `POST /v1/sync` and returns the response bytes.
pub fn post_sync(base_url: &str, token: &str, request: &[u8]) -> Result<Vec<u8>> {
    let mut response = agent()
        .post(url(base_url, "/v1/sync"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/octet-stream")
        .send(request)
        .map_err(transport)?;
    let status = response.status().as_u16();
    let bytes = response
        .body_mut()
        .with_config()
        .limit(MAX_MESSAGE_BYTES as u64)
        .read_to_vec()
        .map_err(transport)?;
    if status != 200 {
        return Err(rejected(status, &bytes));
    }
    Ok(bytes)
}

/// Syncs the store with the server until nothing is left to push or pull.
/// Blocks the calling thread.
pub fn sync(store: &Store, base_url: &str, token: &str) -> Result<SyncReport> {
    sync_with_progress(store, base_url, token, |_| {})
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
