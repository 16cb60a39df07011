//! The shared engine: a PostgreSQL database that several server processes
//! write to (feature `postgres`).
//!
//! # Layout
//!
//! One table per keyspace (`gridsync_records`, `gridsync_identity`) of
//! `(k bytea primary key, v bytea)`: the same ordered keys and values the
//! sled engine holds (PostgreSQL orders `bytea` bytewise, as sled does).
//! Schema versions are listed in `gridsync_schema` and applied at open,
//! under an advisory lock, so that several servers starting at once apply
//! each version once.
//!
//! # Write turns across processes
//!
//! A turn is a transaction on this process's writer connection that first
//! takes a transaction-level advisory lock (one per keyspace): every other
//! process's turn waits until this one commits. The batches a turn applies
//! are kept in memory (`overlay`, read through by this process's reads) and
//! written in one round trip at [`Backend::flush`], which commits. So:
//!
//! * change-log sequences are handed out under the lock and committed in
//!   order, and a commit is visible before its lock is released: any
//!   snapshot that sees entry N+1 sees entry N (no reader can move its
//!   cursor past an entry that commits later);
//! * acknowledged means committed: `flush` returns after the commit (a
//!   synchronous commit for [`FlushMode::Sync`]);
//! * a process killed in its turn loses its uncommitted batches, nothing
//!   else; PostgreSQL releases its lock when the connection drops.
//!
//! Reads go to a small pool of other connections and see committed data
//! plus this process's overlay.
//!
//! Queries run on a private tokio runtime; callers block on them with a
//! plain executor, so the engine may be called from any thread (including
//! one of the server's own runtime, though the server calls the store from
//! blocking threads).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_executor::block_on;
use tokio_postgres::{Client, NoTls};

use super::{Backend, Batch, FlushMode, Turn, Updater};
use crate::error::{Error, Result};

/// Schema versions, applied in order at open. Never edit one that has
/// shipped; add the next.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE IF NOT EXISTS gridsync_records (k bytea PRIMARY KEY, v bytea NOT NULL);
     CREATE TABLE IF NOT EXISTS gridsync_identity (k bytea PRIMARY KEY, v bytea NOT NULL);",
)];

/// The advisory lock under which migrations run.
const MIGRATION_LOCK: i64 = 0x6772_6964_0000;

/// How many idle reader connections are kept.
const POOL_KEEP: usize = 8;

/// A PostgreSQL database as a store's engine.
pub struct PgBackend {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    config: tokio_postgres::Config,
    table: &'static str,
    lock_key: i64,
    pool: Mutex<Vec<Client>>,
    turn: Mutex<TurnState>,
    /// Serialises the start of turns in this process (waiting for the
    /// advisory lock happens outside the `turn` mutex, so reads go on).
    beginning: Mutex<()>,
    describe: String,
}

#[derive(Default)]
struct TurnState {
    conn: Option<Client>,
    active: bool,
    /// This process's last turn failed to commit.
    failed: bool,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBackend")
            .field("database", &self.describe)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn pg(e: tokio_postgres::Error) -> Error {
    Error::Storage(format!("postgres: {e}"))
}

fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl PgBackend {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// key=value string), applies pending schema versions, and uses the
    /// table of keyspace `space` ("records" or "identity").
    pub fn open(url: &str, space: &str) -> Result<PgBackend> {
        let table = match space {
            "records" => "gridsync_records",
            "identity" => "gridsync_identity",
            other => {
                return Err(Error::InvalidInput {
                    field: "keyspace",
                    reason: format!("no PostgreSQL table for keyspace {other:?}"),
                })
            }
        };
        let config: tokio_postgres::Config = url.parse().map_err(|e| Error::InvalidInput {
            field: "database",
            reason: format!("not a PostgreSQL connection string: {e}"),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gridsync-pg")
            .enable_all()
            .build()?;
        let backend = PgBackend {
            rt: Some(rt),
            config,
            table,
            lock_key: 0x6772_6964_0000 + if space == "records" { 1 } else { 2 },
            pool: Mutex::new(Vec::new()),
            turn: Mutex::new(TurnState::default()),
            beginning: Mutex::new(()),
            describe: redact(url),
        };
        backend.migrate()?;
        Ok(backend)
    }

    /// Runs a query future on the private runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = std::result::Result<T, tokio_postgres::Error>> + Send + 'static,
    ) -> Result<T> {
        let Some(rt) = &self.rt else {
            return Err(Error::Storage("postgres: the engine is closed".into()));
        };
        match block_on(rt.spawn(fut)) {
            Ok(r) => r.map_err(pg),
            Err(e) => Err(Error::Storage(format!("postgres task failed: {e}"))),
        }
    }

    fn connect(&self) -> Result<Client> {
        let config = self.config.clone();
        let client = self.run(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                // Ends when the client is dropped or the server goes away;
                // the client's next query then fails and is not reused.
                let _ = connection.await;
            });
            Ok(client)
        })?;
        Ok(client)
    }

    /// A pooled connection (a new one when none is idle).
    fn pooled(&self) -> Result<Client> {
        match guard(&self.pool).pop() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect(),
        }
    }

    /// Runs `f` on a pooled connection, which goes back to the pool unless
    /// the query failed.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Client) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let client = self.pooled()?;
        let result = f(&client).map_err(pg);
        if result.is_ok() {
            self.give_back(client);
        }
        result
    }

    fn give_back(&self, client: Client) {
        let mut pool = guard(&self.pool);
        if pool.len() < POOL_KEEP {
            pool.push(client);
        }
    }

    fn migrate(&self) -> Result<()> {
        let mut client = self.connect()?;
        let done: Result<()> = block_on(async {
            let tx = client.transaction().await.map_err(pg)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg)?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS gridsync_schema \
                 (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(pg)?;
            let row = tx
                .query_one("SELECT coalesce(max(version), 0) FROM gridsync_schema", &[])
                .await
                .map_err(pg)?;
            let current: i32 = row.get(0);
            let newest = MIGRATIONS.last().map_or(0, |m| m.0);
            if current > newest {
                return Err(Error::Metadata(format!(
                    "the database was set up by a newer version of gridsync (schema {current}; \
                     this build knows schemas up to {newest})"
                )));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                tx.batch_execute(sql).await.map_err(pg)?;
                tx.execute(
                    "INSERT INTO gridsync_schema (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(pg)?;
            }
            tx.commit().await.map_err(pg)
        });
        done
    }

    /// Overlay entries in `start..end` (this process's uncommitted writes).
    fn overlay_range(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let turn = guard(&self.turn);
        if turn.overlay.is_empty() || start >= end {
            return Vec::new();
        }
        turn.overlay
            .range(start.to_vec()..end.to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn select_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let sql = format!(
            "SELECT k, v FROM {} WHERE k >= $1 AND k < $2 ORDER BY k {} LIMIT $3",
            self.table,
            if reverse { "DESC" } else { "ASC" }
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            let rows = block_on(c.query(&sql, &[&start, &end, &limit]))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Connections close (an open turn rolls back on the server);
        // without waiting, since the last handle may be dropped on an
        // async thread.
        for c in guard(&self.pool).drain(..) {
            drop(c);
        }
        guard(&self.turn).conn = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes rows (`None` deletes) in the open transaction on `conn`: one
/// statement for the deletes, one for the upserts.
async fn write_rows(
    conn: &Client,
    table: &str,
    mode: FlushMode,
    rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (mut put_k, mut put_v, mut del) = (Vec::new(), Vec::new(), Vec::new());
    for (k, v) in rows {
        match v {
            Some(v) => {
                put_k.push(k);
                put_v.push(v);
            }
            None => del.push(k),
        }
    }
    if mode == FlushMode::Process {
        conn.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
    }
    if !del.is_empty() {
        let delete = format!("DELETE FROM {table} WHERE k = ANY($1::bytea[])");
        conn.execute(&delete, &[&del]).await?;
    }
    if !put_k.is_empty() {
        let upsert = format!(
            "INSERT INTO {table} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
        );
        conn.execute(&upsert, &[&put_k, &put_v]).await?;
    }
    Ok(())
}

/// Merges committed rows with overlay entries (the overlay wins), in key
/// order (`reverse`: descending), at most `limit`.
fn merge(
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    overlay: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    limit: usize,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    if overlay.is_empty() {
        return rows;
    }
    let mut all: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
        rows.into_iter().map(|(k, v)| (k, Some(v))).collect();
    all.extend(overlay);
    let live = all.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
    if reverse {
        let mut out: Vec<_> = live.collect();
        out.reverse();
        out.truncate(limit);
        out
    } else {
        live.take(limit).collect()
    }
}

impl Backend for PgBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = guard(&self.turn).overlay.get(key) {
            return Ok(v.clone());
        }
        let sql = format!("SELECT v FROM {} WHERE k = $1", self.table);
        self.with_reader(|c| Ok(block_on(c.query_opt(&sql, &[&key]))?.map(|r| r.get(0))))
    }

    fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let overlay = self.overlay_range(start, end);
        // Overlay entries can hide or replace at most that many rows.
        let rows = self.select_range(start, end, limit.saturating_add(overlay.len()), reverse)?;
        Ok(merge(rows, overlay, limit, reverse))
    }

    fn get_and_range(
        &self,
        key: &[u8],
        start: &[u8],
        end: &[u8],
    ) -> Result<(Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>)> {
        let overlay_key = guard(&self.turn).overlay.get(key).cloned();
        let overlay = self.overlay_range(start, end);
        let sql = format!(
            "SELECT k, v FROM {} WHERE k = $1 OR (k >= $2 AND k < $3) ORDER BY k",
            self.table
        );
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self.with_reader(|c| {
            let rows = block_on(c.query(&sql, &[&key, &start, &end]))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        let mut value = None;
        let mut ranged = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            if k == key {
                value = Some(v);
            } else {
                ranged.push((k, v));
            }
        }
        let value = match overlay_key {
            Some(v) => v,
            None => value,
        };
        Ok((value, merge(ranged, overlay, usize::MAX, false)))
    }

    fn begin_turn(&self) -> Result<Turn> {
        let _one = guard(&self.beginning);
        let conn = {
            let mut turn = guard(&self.turn);
            if turn.active {
                return Ok(Turn::Continued);
            }
            turn.conn.take()
        };
        let conn = match conn {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        // Waits here while another process holds its turn.
        block_on(async {
            conn.batch_execute("BEGIN").await?;
            conn.execute("SELECT pg_advisory_xact_lock($1)", &[&self.lock_key])
                .await
        })
        .map_err(pg)?;
        let mut turn = guard(&self.turn);
        turn.conn = Some(conn);
        turn.active = true;
        Ok(if std::mem::take(&mut turn.failed) {
            Turn::Reset
        } else {
            Turn::Fresh
        })
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut turn = guard(&self.turn);
        if !turn.active {
            return Err(Error::Storage(
                "postgres: a write outside a write turn (a bug in gridsync)".into(),
            ));
        }
        for (k, v) in batch.ops {
            turn.overlay.insert(k, v);
        }
        Ok(())
    }

    fn flush(&self, mode: FlushMode) -> Result<()> {
        // Held through the commit: a read that misses the overlay must
        // find the committed row.
        let mut turn = guard(&self.turn);
        if !turn.active {
            return Ok(());
        }
        let overlay = std::mem::take(&mut turn.overlay);
        let Some(conn) = turn.conn.take() else {
            turn.active = false;
            turn.failed = true;
            return Err(Error::Storage("postgres: writer connection lost".into()));
        };
        let committed = block_on(async {
            write_rows(&conn, self.table, mode, overlay).await?;
            conn.batch_execute("COMMIT").await
        });
        turn.active = false;
        match committed {
            Ok(()) => {
                turn.conn = Some(conn);
                Ok(())
            }
            Err(e) => {
                // The transaction is gone (the connection is dropped with
                // it); what this process derived from it must be re-read.
                turn.failed = true;
                Err(pg(e))
            }
        }
    }

    fn update(&self, key: &[u8], mode: FlushMode, f: Updater<'_>) -> Result<Option<Vec<u8>>> {
        let table = self.table;
        loop {
            let k = key.to_vec();
            let select = format!("SELECT v FROM {table} WHERE k = $1 FOR UPDATE");
            let client = self.pooled()?;
            // Read, decide, write, in one transaction on one connection.
            let old: Option<Vec<u8>> = block_on(async {
                client.batch_execute("BEGIN").await?;
                if mode == FlushMode::Process {
                    client
                        .batch_execute("SET LOCAL synchronous_commit = off")
                        .await?;
                }
                Ok::<_, tokio_postgres::Error>(
                    client.query_opt(&select, &[&k]).await?.map(|r| r.get(0)),
                )
            })
            .map_err(pg)?;
            let new = f(old.as_deref());
            let wrote: std::result::Result<bool, tokio_postgres::Error> = block_on(async {
                let n = match (&old, &new) {
                    (_, None) => {
                        client
                            .execute(&format!("DELETE FROM {table} WHERE k = $1"), &[&k])
                            .await?;
                        1
                    }
                    (Some(_), Some(v)) => {
                        client
                            .execute(&format!("UPDATE {table} SET v = $2 WHERE k = $1"), &[&k, v])
                            .await?
                    }
                    // Another process may insert the same key meanwhile
                    // (no row to lock yet): then try again.
                    (None, Some(v)) => {
                        client
                            .execute(
                                &format!(
                                    "INSERT INTO {table} (k, v) VALUES ($1, $2) \
                                         ON CONFLICT (k) DO NOTHING"
                                ),
                                &[&k, v],
                            )
                            .await?
                    }
                };
                if n == 1 {
                    client.batch_execute("COMMIT").await?;
                    Ok(true)
                } else {
                    client.batch_execute("ROLLBACK").await?;
                    Ok(false)
                }
            });
            let wrote = wrote.map_err(pg)?;
            self.give_back(client);
            if wrote {
                return Ok(old);
            }
        }
    }

    fn write_now(&self, batch: Batch, mode: FlushMode) -> Result<()> {
        let mut latest: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (k, v) in batch.ops {
            latest.insert(k, v);
        }
        let conn = self.pooled()?;
        block_on(async {
            conn.batch_execute("BEGIN").await?;
            write_rows(&conn, self.table, mode, latest).await?;
            conn.batch_execute("COMMIT").await
        })
        .map_err(pg)?;
        self.give_back(conn);
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn holds_turn(&self) -> bool {
        guard(&self.turn).active
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}
