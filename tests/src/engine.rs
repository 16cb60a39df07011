//! Running a suite on both engines: sled, and PostgreSQL.
//!
//! A test body run through [`on_postgres`] gets, for every store path it
//! opens with the helpers here ([`crate::open_store`], [`crate::temp_store`],
//! [`crate::server::TestServer::start`]), a PostgreSQL database of its own
//! (the same path opens the same database again, as a reopened directory
//! would); every database it created is dropped when the body returns or
//! panics. [`on_both_engines!`](crate::on_both_engines) writes each test
//! twice, once per engine, from one body.
//!
//! The server is `GRIDSYNC_TEST_POSTGRES` (a `postgres://` URL without a
//! database), by default `postgres://postgres@127.0.0.1:5432`: on the
//! project's machines a PostgreSQL server runs there, and `.ci/run` starts
//! one where none does.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use gridsync_core::store::backend::Engine;

/// The PostgreSQL server tests use, without a database name.
pub fn postgres_server() -> String {
    std::env::var("GRIDSYNC_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned())
}

#[derive(Default)]
struct Databases {
    by_path: HashMap<PathBuf, String>,
    created: Vec<String>,
}

thread_local! {
    static SCOPE: RefCell<Option<Databases>> = const { RefCell::new(None) };
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Runs one statement against the server's `postgres` database, on a
/// thread of its own (callers may be inside a runtime).
pub fn admin(sql: String) {
    let url = format!("{}/postgres", postgres_server());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to PostgreSQL at {url}: {e}"));
            let conn = tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            drop(client);
            let _ = conn.await;
        });
    })
    .join()
    .unwrap();
}

/// A new, empty database (dropped when the enclosing [`on_postgres`]
/// ends); returns its URL.
pub fn fresh_database() -> String {
    let name = format!(
        "gst_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    admin(format!("CREATE DATABASE {name}"));
    SCOPE.with(|s| {
        if let Some(dbs) = s.borrow_mut().as_mut() {
            dbs.created.push(name.clone());
        }
    });
    format!("{}/{name}", postgres_server())
}

/// The engine a store at `path` opens on: sled outside [`on_postgres`],
/// else the database made for that path.
pub fn engine_for(path: &Path) -> Engine {
    let known = SCOPE.with(|s| {
        s.borrow()
            .as_ref()
            .map(|dbs| dbs.by_path.get(path).cloned())
    });
    match known {
        None => Engine::Sled,
        Some(Some(url)) => Engine::Postgres(url),
        Some(None) => {
            let url = fresh_database();
            SCOPE.with(|s| {
                if let Some(dbs) = s.borrow_mut().as_mut() {
                    dbs.by_path.insert(path.to_owned(), url.clone());
                }
            });
            Engine::Postgres(url)
        }
    }
}

/// Whether the calling test runs on PostgreSQL.
pub fn on_postgres_now() -> bool {
    SCOPE.with(|s| s.borrow().is_some())
}

struct DropAll;

impl Drop for DropAll {
    fn drop(&mut self) {
        let dbs = SCOPE.with(|s| s.borrow_mut().take()).unwrap_or_default();
        for name in dbs.created {
            admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// Runs `f` with every store it opens through the helpers on PostgreSQL.
pub fn on_postgres<T>(f: impl FnOnce() -> T) -> T {
    SCOPE.with(|s| *s.borrow_mut() = Some(Databases::default()));
    let _drop = DropAll;
    f()
}

/// Writes each test twice: `sled::name` and `postgres::name`, the second
/// run inside [`on_postgres`].
#[macro_export]
macro_rules! on_both_engines {
    ($( $(#[$meta:meta])* fn $name:ident() $body:block )*) => {
        mod sled {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$meta])* fn $name() $body )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$meta])* fn $name() { $crate::engine::on_postgres(|| $body) } )*
        }
    };
}

/// The raw engine under the store at `path` (to inspect what it holds).
pub fn raw_backend(path: &Path) -> Box<dyn gridsync_core::store::backend::Backend> {
    gridsync_core::store::backend::open(&engine_for(path), path, "records", false).unwrap()
}

/// Makes the store at `path` open the database at `url` (a second server
/// node on the first one's database). Only inside [`on_postgres`].
pub fn use_database(path: &Path, url: &str) {
    SCOPE.with(|s| {
        s.borrow_mut()
            .as_mut()
            .expect("use_database inside on_postgres")
            .by_path
            .insert(path.to_owned(), url.to_owned());
    });
}

/// The URL of the database the store at `path` opens (creating it).
pub fn database_of(path: &Path) -> String {
    match engine_for(path) {
        Engine::Postgres(url) => url,
        Engine::Sled => panic!("database_of inside on_postgres"),
    }
}
