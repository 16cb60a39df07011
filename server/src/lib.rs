//! # gridsync-server
//!
//! The sync server. For now it opens the embedded store and answers
//! `GET /healthz`; the sync endpoint, identity and scope come with the sync
//! work. The server is built for tests: [`run`] takes a bound listener and a
//! shutdown future, so tests bind port 0, and [`app`] can be driven without
//! a socket.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use gridsync_core::{Store, StoreConfig};

/// Where the server keeps its data and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
}

/// The data directory used when none is given.
pub const DEFAULT_DATA_DIR: &str = "gridsync-data";
/// The address used when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

impl Config {
    /// Defaults, overridden by `GRIDSYNC_DATA_DIR` / `GRIDSYNC_LISTEN`, then
    /// by `--data-dir DIR` / `--listen ADDR`.
    pub fn from_args(
        args: &[String],
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut config = Config {
            data_dir: env("GRIDSYNC_DATA_DIR")
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into())
                .into(),
            listen: env("GRIDSYNC_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
        };
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
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(config)
    }
}

/// Opens the server's store in `data_dir`.
pub fn open_store(data_dir: &std::path::Path) -> gridsync_core::Result<Store> {
    Store::open(StoreConfig::new(data_dir.join("store"), "SRV"))
}

#[derive(Clone)]
struct AppState {
    store: Arc<Store>,
}

/// The HTTP application.
pub fn app(store: Arc<Store>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(AppState { store })
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let records = state.store.len().unwrap_or(0);
    Json(serde_json::json!({ "status": "ok", "records": records }))
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn run(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await
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
        assert!(Config::from_args(&args(&["--what"]), none).is_err());
    }
}
