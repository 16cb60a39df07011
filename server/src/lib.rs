//! # gridsync-server
//!
//! The sync server: devices push their offline changes and pull everyone
//! else's through `POST /v1/sync`; the server authenticates each device,
//! checks every pushed record against the device's scope and actor, merges
//! off the async runtime, and acknowledges only durable writes.
//!
//! Built for tests: [`run`] takes a bound listener and a shutdown future,
//! so tests bind port 0, and [`app`] can be driven without a socket.

pub mod api;
pub mod backup;
pub mod cli;
pub mod dashboard;
pub mod demo;
pub mod export;
pub mod files;
pub mod gate;
pub mod hotline;
pub mod identity;
pub mod metrics;
pub mod office;
pub mod retention;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::Router;
use gridsync_core::store::backend::Engine;
use gridsync_core::sync::ServerLimits;
use gridsync_core::{Store, StoreConfig};
use sha2::{Digest, Sha256};

pub use api::AppState;

/// Where the server keeps its data and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    /// Serve HTTPS with these files; plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// On SIGTERM or Ctrl-C, how long to keep serving with `/healthz`
    /// answering 503 `draining` before new connections are refused (time
    /// for a load balancer to stop sending work). Requests in flight then
    /// finish and the store is flushed.
    pub drain: Duration,
    /// How long the change log reaches back (see [`retention`]).
    pub retention: retention::Retention,
    /// Where records and identity live: sled under `data_dir` (default),
    /// or a PostgreSQL database several servers share.
    pub engine: Engine,
    /// The largest attached file taken, in bytes.
    pub max_file_bytes: u64,
    /// The file bytes one device may send a day.
    pub file_bytes_per_device_day: u64,
    /// The bytes of search texts the store holds in memory (see
    /// `gridsync_core::StoreConfig::search_cache_bytes`).
    pub search_cache_bytes: usize,
}

/// A certificate chain and its private key, PEM files, for HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads the certificate chain and key and makes the TLS acceptor
/// `run_tls` serves with (TLS 1.2 and 1.3, rustls with ring).
pub fn tls_acceptor(files: &TlsFiles) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key from {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not belong together")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The data directory used when none is given.
pub const DEFAULT_DATA_DIR: &str = "gridsync-data";
/// The address used when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// How long one request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests served at once; more wait.
pub const MAX_CONCURRENT_REQUESTS: usize = 64;
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a server on a shared database follows what the others
/// wrote: an office read on one server shows a write made through another
/// within this (plus one query), and a sync round is always current.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(200);

/// How long shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Config {
    /// Defaults, overridden by `GRIDSYNC_DATA_DIR` / `GRIDSYNC_LISTEN` /
    /// `GRIDSYNC_TLS_CERT` + `GRIDSYNC_TLS_KEY`, then by `--data-dir DIR` /
    /// `--listen ADDR` / `--tls-cert FILE` + `--tls-key FILE`.
    pub fn from_args(
        args: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut config = Config {
            data_dir: env("GRIDSYNC_DATA_DIR")
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
                .into(),
            listen: env("GRIDSYNC_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
            tls: None,
            drain: Duration::ZERO,
            retention: retention::Retention::default(),
            engine: Engine::Sled,
            max_file_bytes: gridsync_core::files::DEFAULT_MAX_FILE_BYTES,
            file_bytes_per_device_day: gridsync_core::files::DEFAULT_FILE_BYTES_PER_DEVICE_DAY,
            search_cache_bytes: gridsync_core::store::DEFAULT_SEARCH_CACHE_BYTES,
        };
        if let Some(url) = env("GRIDSYNC_DATABASE_URL").filter(|u| !u.is_empty()) {
            config.engine = database(url)?;
        }
        // 0 lifts a bound.
        let keep_days = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|d| *d <= 36_500)
                .map(|d| (d > 0).then(|| Duration::from_secs(d * 86_400)))
                .ok_or_else(|| format!("log keep days must be 0 to 36500, not {v:?}"))
        };
        let keep_entries = |v: &str| {
            v.parse::<u64>()
                .map(|n| (n > 0).then_some(n))
                .map_err(|_| format!("log keep entries must be a count, not {v:?}"))
        };
        if let Some(v) = env("GRIDSYNC_LOG_KEEP_DAYS") {
            config.retention.keep_age = keep_days(&v)?;
        }
        if let Some(v) = env("GRIDSYNC_LOG_KEEP_ENTRIES") {
            config.retention.keep_entries = keep_entries(&v)?;
        }
        let seconds = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|s| *s <= 3600)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("drain seconds must be 0 to 3600, not {v:?}"))
        };
        if let Some(v) = env("GRIDSYNC_DRAIN_SECONDS") {
            config.drain = seconds(&v)?;
        }
        let mib = |name: &str, v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|m| (1..=1 << 20).contains(m))
                .map(|m| m << 20)
                .ok_or_else(|| format!("{name} must be 1 to 1048576 MiB, not {v:?}"))
        };
        if let Some(v) = env("GRIDSYNC_MAX_FILE_MB") {
            config.max_file_bytes = mib("the largest file", &v)?;
        }
        if let Some(v) = env("GRIDSYNC_FILE_QUOTA_MB") {
            config.file_bytes_per_device_day = mib("the daily file quota", &v)?;
        }
        // 0: no text held, every one a search needs is read from the store.
        let cache_mib = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|m| *m <= 1 << 20)
                .map(|m| m << 20)
                .ok_or_else(|| format!("the search cache must be 0 to 1048576 MiB, not {v:?}"))
        };
        if let Some(v) = env("GRIDSYNC_SEARCH_CACHE_MB") {
            config.search_cache_bytes = cache_mib(&v)?;
        }
        let mut cert = env("GRIDSYNC_TLS_CERT").map(PathBuf::from);
        let mut key = env("GRIDSYNC_TLS_KEY").map(PathBuf::from);
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--data-dir" => config.data_dir = value("--data-dir")?.into(),
                "--listen" => config.listen = value("--listen")?,
                "--tls-cert" => cert = Some(value("--tls-cert")?.into()),
                "--tls-key" => key = Some(value("--tls-key")?.into()),
                "--drain-seconds" => config.drain = seconds(&value("--drain-seconds")?)?,
                "--database" => config.engine = database(value("--database")?)?,
                "--log-keep-days" => {
                    config.retention.keep_age = keep_days(&value("--log-keep-days")?)?;
                }
                "--log-keep-entries" => {
                    config.retention.keep_entries = keep_entries(&value("--log-keep-entries")?)?;
                }
                "--max-file-mb" => {
                    config.max_file_bytes = mib("the largest file", &value("--max-file-mb")?)?;
                }
                "--search-cache-mb" => {
                    config.search_cache_bytes = cache_mib(&value("--search-cache-mb")?)?;
                }
                "--file-quota-mb" => {
                    config.file_bytes_per_device_day =
                        mib("the daily file quota", &value("--file-quota-mb")?)?;
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        config.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together".into()),
        };
        Ok(config)
    }
}

/// The engine a `--database` / `GRIDSYNC_DATABASE_URL` value names.
pub fn database(url: String) -> Result<Engine, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Engine::Postgres(url))
    } else {
        Err("the database must be a postgres:// or postgresql:// URL".to_owned())
    }
}

/// The admin token: `GRIDSYNC_ADMIN_TOKEN` if set, else the content of
/// `<data-dir>/admin-token`, created with a fresh random value (readable by
/// the owner only) on first start.
pub fn admin_token(
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    if let Some(t) = env("GRIDSYNC_ADMIN_TOKEN").filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(t.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = identity::secret().map_err(|e| anyhow::anyhow!("{e}"))?;
            let token = hex::encode(secret);
            write_private(&path, &token)?;
            Ok(token)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

/// Opens the server's record store and identity database in `data_dir`.
pub fn open(data_dir: &Path, admin_token: &str) -> anyhow::Result<AppState> {
    open_on(&Engine::Sled, data_dir, admin_token)
}

/// The record store's configuration for a server on `engine` with data
/// directory `data_dir`.
pub fn store_config(engine: &Engine, data_dir: &Path) -> StoreConfig {
    let mut config = StoreConfig::new(data_dir.join("store"), "SRV");
    // The office's and intake's changes are tagged, so phones can hand them
    // back after a restore from a backup.
    config.tag_own_changes = true;
    // The office finds cases by what is written in them.
    config.search = true;
    config.outbox = true;
    config.engine = engine.clone();
    config
}

/// The file in the data directory that holds the district's deadline
/// table (see `gridsync_core::deadlines`).
pub const DEADLINE_TABLE_FILE: &str = "deadlines.json";

/// The deadline table in `data_dir/deadlines.json`, or the national
/// default without one; a file that does not parse or gives impossible
/// hours stops the server with the reason.
pub fn deadline_table(data_dir: &Path) -> anyhow::Result<gridsync_core::DeadlineTable> {
    let path = data_dir.join(DEADLINE_TABLE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => gridsync_core::DeadlineTable::from_json(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Opens the server's record store and identity database on `engine`
/// (sled in `data_dir`, or PostgreSQL; the data directory keeps the admin
/// token either way).
pub fn open_on(engine: &Engine, data_dir: &Path, admin_token: &str) -> anyhow::Result<AppState> {
    open_holding(
        engine,
        data_dir,
        admin_token,
        gridsync_core::store::DEFAULT_SEARCH_CACHE_BYTES,
    )
}

/// [`open_on`], the store holding at most `search_cache_bytes` of search
/// texts in memory.
pub fn open_holding(
    engine: &Engine,
    data_dir: &Path,
    admin_token: &str,
    search_cache_bytes: usize,
) -> anyhow::Result<AppState> {
    std::fs::create_dir_all(data_dir)?;
    let mut config = store_config(engine, data_dir);
    config.search_cache_bytes = search_cache_bytes;
    config.deadlines = deadline_table(data_dir)?;
    let store = Store::open(config)?;
    let identity = identity::Identity::open(engine, &data_dir.join("identity"))
        .map_err(|e| anyhow::anyhow!("opening the identity database: {e}"))?;
    // Residents' data: the whole data directory is its owner's only.
    gridsync_core::store::make_private(data_dir)?;
    Ok(AppState {
        store: Arc::new(store),
        identity: Arc::new(identity),
        metrics: Arc::default(),
        limits: ServerLimits::default(),
        admin_digest: Sha256::digest(admin_token.as_bytes()).into(),
        slots: Arc::default(),
        draining: Arc::default(),
    })
}

/// The HTTP application with its protective layers: body size limit,
/// per-request timeout, a concurrency limit, panics turned into 500s,
/// the `Authorization` header hidden from logs, and request tracing.
pub fn app(state: AppState) -> Router {
    use tower_http::catch_panic::CatchPanicLayer;
    use tower_http::limit::RequestBodyLimitLayer;
    use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
    use tower_http::timeout::TimeoutLayer;
    use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};

    let gate = axum::middleware::from_fn_with_state(state.clone(), gate::gate);
    api::router(state)
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(api::MAX_BODY_BYTES))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            MAX_CONCURRENT_REQUESTS,
        ))
        // Outside the concurrency limit: a caller without valid credentials
        // is turned away before it holds a slot or sends a body.
        .layer(gate)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            api::AppError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the server could not complete the request",
            )
            .into_response_boxed()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
        ]))
}

/// On an engine other servers write to, follows what they commit every
/// [`FOLLOW_EVERY`] (and ends a write turn a failed request left open);
/// the task ends with the returned guard.
fn follow_other_servers(store: Arc<Store>) -> Option<AbortOnDrop> {
    if !store.is_shared() {
        return None;
    }
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(FOLLOW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let store = store.clone();
            let done = tokio::task::spawn_blocking(move || {
                store.make_durable()?;
                store.follow()
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::error!(error = %e, "following the other servers");
            }
        }
    });
    Some(AbortOnDrop(task))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves `app` over plain HTTP on `listener` until `shutdown` completes,
/// then flushes the store.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_tls(listener, state, None, shutdown).await
}

/// Like [`run`], over TLS when `tls` is given (see [`tls_acceptor`]).
pub async fn run_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let draining = state.draining.clone();
    let _following = follow_other_servers(store.clone());
    let _delivering = hotline::start(store.clone());
    let warm = store.clone();
    drop(tokio::task::spawn_blocking(move || warm.warm_figures()));
    let app = app(state);
    let builder = connection_builder();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Some(stream) = accepted_or_wait(accepted).await {
                    serve_connection(stream, app.clone(), &builder, tls.clone(), Some(graceful.watcher()));
                }
            }
            () = &mut shutdown => break,
        }
    }
    draining.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight at shutdown");
    }
    store
        .make_durable()
        .map_err(|e| std::io::Error::other(e.to_string()))
}

type ConnectionBuilder = hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>;

/// HTTP/1 and HTTP/2 connections whose headers must arrive in time: a
/// client that opens connections and trickles bytes holds nothing for long.
fn connection_builder() -> ConnectionBuilder {
    let mut builder = ConnectionBuilder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
}

/// The accepted connection, or `None` after a short pause when accepting
/// failed (out of file descriptors, say).
async fn accepted_or_wait(
    accepted: std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
) -> Option<tokio::net::TcpStream> {
    match accepted {
        Ok((stream, _)) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "accepting a connection");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Serves one connection with `app` on a task of its own, over TLS when
/// `tls` is given, watched for graceful shutdown when `watcher` is.
fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    builder: &ConnectionBuilder,
    tls: Option<tokio_rustls::TlsAcceptor>,
    watcher: Option<hyper_util::server::graceful::Watcher>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let service = TowerToHyperService::new(app);
    let builder = builder.clone();
    tokio::spawn(async move {
        let result = match tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                match watcher {
                    Some(w) => w.watch(conn.into_owned()).await,
                    None => conn.await,
                }
            }
            Some(acceptor) => {
                // The handshake is held to the header deadline too.
                let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
                let Ok(Ok(stream)) = handshake.await else {
                    tracing::debug!("TLS handshake failed or timed out");
                    return;
                };
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                match watcher {
                    Some(w) => w.watch(conn.into_owned()).await,
                    None => conn.await,
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "connection ended");
        }
    });
}

/// Runs `open` (opening the data directory, which migrates an older store
/// format in place and may take a while) off the runtime, and meanwhile
/// answers every request on `listener` with 503 `starting` and
/// `Connection: close`, so load balancers and devices see a server that is
/// up but not ready (`/healthz` answers `{"status": "starting"}`). Returns
/// what `open` returned; the caller then serves with [`run_tls`] on the
/// same listener.
pub async fn open_while_starting(
    listener: &tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    open: impl FnOnce() -> anyhow::Result<AppState> + Send + 'static,
) -> anyhow::Result<AppState> {
    let starting = Router::new().fallback(|| async {
        let body = axum::Json(serde_json::json!({
            "status": "starting",
            "code": "starting",
            "message": "the server is opening its data (a store migration may be running); try again shortly",
        }));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONNECTION, "close"), (header::RETRY_AFTER, "5")],
            body,
        )
    });
    let builder = connection_builder();
    let mut opening = tokio::task::spawn_blocking(open);
    loop {
        tokio::select! {
            opened = &mut opening => {
                return opened.map_err(|e| anyhow::anyhow!("opening the data directory: {e}"))?;
            }
            accepted = listener.accept() => {
                if let Some(stream) = accepted_or_wait(accepted).await {
                    serve_connection(stream, starting.clone(), &builder, tls.clone(), None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_environment_which_overrides_defaults() {
        let none = |_: &str| None;
        let c = Config::from_args(&[], none).unwrap();
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.listen, DEFAULT_LISTEN);
        let env = |k: &str| (k == "GRIDSYNC_LISTEN").then(|| "0.0.0.0:9".to_string());
        assert_eq!(Config::from_args(&[], env).unwrap().listen, "0.0.0.0:9");
        let c = Config::from_args(&args(&["--listen", "127.0.0.1:1", "--data-dir", "/d"]), env)
            .unwrap();
        assert_eq!(
            (c.listen.as_str(), c.data_dir),
            ("127.0.0.1:1", PathBuf::from("/d"))
        );
        assert!(Config::from_args(&args(&["--listen"]), none).is_err());
        let c =
            Config::from_args(&args(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]), none).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
        assert!(Config::from_args(&args(&["--tls-cert", "c.pem"]), none).is_err());
        assert!(Config::from_args(&args(&["--what"]), none).is_err());
        // The drain time: none unless asked for, bounded.
        assert_eq!(c.drain, Duration::ZERO);
        let env = |k: &str| (k == "GRIDSYNC_DRAIN_SECONDS").then(|| "7".to_owned());
        assert_eq!(
            Config::from_args(&[], env).unwrap().drain,
            Duration::from_secs(7)
        );
        let flag = Config::from_args(&args(&["--drain-seconds", "2"]), env).unwrap();
        assert_eq!(flag.drain, Duration::from_secs(2));
        for bad in ["-1", "x", "3601"] {
            assert!(Config::from_args(&args(&["--drain-seconds", bad]), none).is_err());
        }
        // The log: 90 days by default, no count limit; 0 lifts a bound.
        assert_eq!(c.retention, retention::Retention::default());
        assert_eq!(c.retention.keep_age, Some(Duration::from_secs(90 * 86_400)));
        let env = |k: &str| (k == "GRIDSYNC_LOG_KEEP_ENTRIES").then(|| "5000".to_owned());
        let c = Config::from_args(&args(&["--log-keep-days", "0"]), env).unwrap();
        assert_eq!(
            c.retention,
            retention::Retention {
                keep_age: None,
                keep_entries: Some(5000)
            }
        );
        for bad in [&["--log-keep-days", "x"][..], &["--log-keep-entries", "-3"]] {
            assert!(Config::from_args(&args(bad), none).is_err());
        }
        // File limits: MiB, from the environment or flags.
        let d = Config::from_args(&[], none).unwrap();
        assert_eq!(
            (d.max_file_bytes, d.file_bytes_per_device_day),
            (20 << 20, 1 << 30)
        );
        let env = |k: &str| (k == "GRIDSYNC_MAX_FILE_MB").then(|| "50".to_owned());
        let c = Config::from_args(&args(&["--file-quota-mb", "100"]), env).unwrap();
        assert_eq!(
            (c.max_file_bytes, c.file_bytes_per_device_day),
            (50 << 20, 100 << 20)
        );
        for bad in [&["--max-file-mb", "0"][..], &["--file-quota-mb", "lots"]] {
            assert!(Config::from_args(&args(bad), none).is_err());
        }
        // The search cache: MiB, 0 allowed.
        assert_eq!(d.search_cache_bytes, 128 << 20);
        let env = |k: &str| (k == "GRIDSYNC_SEARCH_CACHE_MB").then(|| "0".to_owned());
        assert_eq!(Config::from_args(&[], env).unwrap().search_cache_bytes, 0);
        let c = Config::from_args(&args(&["--search-cache-mb", "512"]), none).unwrap();
        assert_eq!(c.search_cache_bytes, 512 << 20);
        for bad in [
            &["--search-cache-mb", "-1"][..],
            &["--search-cache-mb", "2000000"],
        ] {
            assert!(Config::from_args(&args(bad), none).is_err());
        }
    }

    #[test]
    fn the_admin_token_is_created_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let first = admin_token(dir.path(), none).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(admin_token(dir.path(), none).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin-token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let env = |k: &str| (k == "GRIDSYNC_ADMIN_TOKEN").then(|| "from-env".to_string());
        assert_eq!(admin_token(dir.path(), env).unwrap(), "from-env");
    }
}
