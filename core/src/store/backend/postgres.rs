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
//! Reads go to a bounded pool of other connections (at most
//! `POOL_MAX`, opened on demand and kept; callers wait for one when all
//! are busy, so a burst of requests never storms the database with new
//! connections) and see committed data plus this process's overlay.
//!
//! Queries run on a private tokio runtime; callers block on them with a
//! plain executor, so the engine may be called from any thread (including
//! one of the server's own runtime, though the server calls the store from
//! blocking threads).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures_executor::block_on;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

use super::{Backend, Batch, FlushMode, KeyAndRange, Turn, Updater};
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

/// The most pooled connections one engine opens (the writer's is extra).
const POOL_MAX: usize = 12;

/// A PostgreSQL database as a store's engine.
pub struct PgBackend {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
    config: tokio_postgres::Config,
    table: &'static str,
    lock_key: i64,
    pool: Mutex<Pool>,
    /// Signalled when a pooled connection is returned or closed.
    pool_freed: std::sync::Condvar,
    turn: Mutex<TurnState>,
    /// Serialises the start of turns in this process (waiting for the
    /// advisory lock happens outside the `turn` mutex, so reads go on).
    beginning: Mutex<()>,
    describe: String,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Client>,
    /// Connections open (idle or in use).
    open: usize,
}

#[derive(Default)]
struct TurnState {
    conn: Option<Client>,
    active: bool,
    /// This process's last turn failed to commit.
    failed: bool,
    /// What the current turn owes the memory (see `take_news`).
    news: Option<Turn>,
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
            pool: Mutex::new(Pool::default()),
            pool_freed: std::sync::Condvar::new(),
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

    /// A pooled connection: an idle one, a new one while fewer than
    /// `POOL_MAX` are open, else the next one returned. Give it back with
    /// `give_back`, or `discard` it after a failure.
    fn pooled(&self) -> Result<Client> {
        let mut pool = guard(&self.pool);
        loop {
            while let Some(c) = pool.idle.pop() {
                if !c.is_closed() {
                    return Ok(c);
                }
                pool.open -= 1;
            }
            if pool.open < POOL_MAX {
                pool.open += 1;
                drop(pool);
                return self.connect().inspect_err(|_| self.discard());
            }
            pool = self
                .pool_freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Runs `f` on a pooled connection, which goes back to the pool unless
    /// the query failed.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Client) -> std::result::Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        let client = self.pooled()?;
        match f(&client) {
            Ok(v) => {
                self.give_back(client);
                Ok(v)
            }
            Err(e) => {
                drop(client);
                self.discard();
                Err(pg(e))
            }
        }
    }

    fn give_back(&self, client: Client) {
        guard(&self.pool).idle.push(client);
        self.pool_freed.notify_one();
    }

    /// A pooled connection was dropped (it failed).
    fn discard(&self) {
        guard(&self.pool).open -= 1;
        self.pool_freed.notify_one();
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
            let rows = block_on(c.query_typed(
                &sql,
                &[
                    (&start, Type::BYTEA),
                    (&end, Type::BYTEA),
                    (&limit, Type::INT8),
                ],
            ))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        // Connections close (an open turn rolls back on the server);
        // without waiting, since the last handle may be dropped on an
        // async thread.
        for c in guard(&self.pool).idle.drain(..) {
            drop(c);
        }
        guard(&self.turn).conn = None;
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes rows (`None` deletes) in the open transaction on `conn` and
/// commits it (synchronously only when `mode` is `Sync`): one statement
/// for the deletes and upserts, sent together with the `COMMIT` (the
/// client pipelines them: one round trip). A failed write makes the
/// `COMMIT` a rollback, and the write's error is returned.
async fn write_and_commit(
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
    let write = format!(
        "WITH gone AS (DELETE FROM {table} WHERE k = ANY($1::bytea[])) \
         INSERT INTO {table} (k, v) SELECT * FROM unnest($2::bytea[], $3::bytea[]) \
         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
    );
    let relax = async {
        if mode != FlushMode::Sync {
            conn.batch_execute("SET LOCAL synchronous_commit = off")
                .await
        } else {
            Ok(())
        }
    };
    let written = async {
        if del.is_empty() && put_k.is_empty() {
            Ok(0)
        } else {
            // Typed: parse, bind and execute go out at once, no prepare
            // round trip, so the COMMIT below is sent after it.
            let arrays = Type::BYTEA_ARRAY;
            conn.execute_typed(
                &write,
                &[
                    (&del, arrays.clone()),
                    (&put_k, arrays.clone()),
                    (&put_v, arrays),
                ],
            )
            .await
        }
    };
    futures_util::future::try_join3(relax, written, conn.batch_execute("COMMIT")).await?;
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
        self.with_reader(|c| {
            let row = block_on(c.query_typed_opt(&sql, &[(&key, Type::BYTEA)]))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out: Vec<Option<Option<Vec<u8>>>> = {
            let turn = guard(&self.turn);
            keys.iter().map(|k| turn.overlay.get(k).cloned()).collect()
        };
        let asked: Vec<&[u8]> = keys
            .iter()
            .zip(&out)
            .filter(|(_, o)| o.is_none())
            .map(|(k, _)| k.as_slice())
            .collect();
        if !asked.is_empty() {
            // Each key looked up on its own through the primary key (see
            // `get_and_range_many`).
            let sql = format!(
                "SELECT r.i, t.v FROM unnest($1::bytea[]) WITH ORDINALITY AS r(k, i) \
                   CROSS JOIN LATERAL (SELECT v FROM {} WHERE k = r.k OFFSET 0) t",
                self.table
            );
            let rows: Vec<(i64, Vec<u8>)> = self.with_reader(|c| {
                let rows = block_on(c.query_typed(&sql, &[(&asked, Type::BYTEA_ARRAY)]))?;
                Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
            })?;
            let mut found: Vec<Option<Vec<u8>>> = vec![None; asked.len()];
            for (i, v) in rows {
                if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| found.get_mut(i)) {
                    *slot = Some(v);
                }
            }
            let mut found = found.into_iter();
            for o in out.iter_mut().filter(|o| o.is_none()) {
                *o = Some(found.next().flatten());
            }
        }
        Ok(out.into_iter().map(Option::flatten).collect())
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

    fn get_and_range(&self, key: &[u8], start: &[u8], end: &[u8]) -> Result<KeyAndRange> {
        let overlay_key = guard(&self.turn).overlay.get(key).cloned();
        let overlay = self.overlay_range(start, end);
        let sql = format!(
            "SELECT k, v FROM {} WHERE k = $1 OR (k >= $2 AND k < $3) ORDER BY k",
            self.table
        );
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self.with_reader(|c| {
            let rows = block_on(c.query_typed(
                &sql,
                &[
                    (&key, Type::BYTEA),
                    (&start, Type::BYTEA),
                    (&end, Type::BYTEA),
                ],
            ))?;
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

    fn get_and_range_many(
        &self,
        reads: &[(Vec<u8>, Vec<u8>, Vec<u8>)],
    ) -> Result<Vec<KeyAndRange>> {
        if reads.len() <= 1 {
            return reads
                .iter()
                .map(|(k, s, e)| self.get_and_range(k, s, e))
                .collect();
        }
        let keys: Vec<&[u8]> = reads.iter().map(|r| r.0.as_slice()).collect();
        let starts: Vec<&[u8]> = reads.iter().map(|r| r.1.as_slice()).collect();
        let ends: Vec<&[u8]> = reads.iter().map(|r| r.2.as_slice()).collect();
        let table = self.table;
        // Each read's key and its range, tagged with the read's position.
        // Each is looked up on its own through the primary key (a lateral
        // subquery the planner may not flatten, `OFFSET 0`): a join would
        // let it choose a scan of the whole table where statistics are
        // missing or stale, as after a restore or a bulk load.
        let sql = format!(
            "SELECT r.i, t.k, t.v FROM unnest($1::bytea[]) WITH ORDINALITY AS r(k, i) \
               CROSS JOIN LATERAL (SELECT k, v FROM {table} WHERE k = r.k OFFSET 0) t \
             UNION ALL \
             SELECT r.i, t.k, t.v FROM unnest($2::bytea[], $3::bytea[]) WITH ORDINALITY AS r(s, e, i) \
               CROSS JOIN LATERAL (SELECT k, v FROM {table} WHERE k >= r.s AND k < r.e OFFSET 0) t \
             ORDER BY 1, 2"
        );
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = self.with_reader(|c| {
            let a = Type::BYTEA_ARRAY;
            let rows = block_on(c.query_typed(
                &sql,
                &[(&keys, a.clone()), (&starts, a.clone()), (&ends, a)],
            ))?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })?;
        let mut out: Vec<KeyAndRange> = reads.iter().map(|_| (None, Vec::new())).collect();
        for (i, k, v) in rows {
            let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) else {
                continue;
            };
            if k == reads[(i - 1) as usize].0 {
                slot.0 = Some(v);
            } else {
                slot.1.push((k, v));
            }
        }
        // This process's uncommitted writes win.
        for ((key, start, end), slot) in reads.iter().zip(out.iter_mut()) {
            if let Some(v) = guard(&self.turn).overlay.get(key) {
                slot.0 = v.clone();
            }
            let overlay = self.overlay_range(start, end);
            if !overlay.is_empty() {
                slot.1 = merge(std::mem::take(&mut slot.1), overlay, usize::MAX, false);
            }
        }
        Ok(out)
    }

    fn begin_turn(&self) -> Result<()> {
        let _one = guard(&self.beginning);
        let conn = {
            let mut turn = guard(&self.turn);
            if turn.active {
                return Ok(());
            }
            turn.conn.take()
        };
        let conn = match conn {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        // Waits here while another process holds its turn.
        let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({})", self.lock_key);
        block_on(conn.batch_execute(&begin)).map_err(pg)?;
        let mut turn = guard(&self.turn);
        turn.conn = Some(conn);
        turn.active = true;
        let news = if std::mem::take(&mut turn.failed) {
            Turn::Reset
        } else {
            Turn::Fresh
        };
        turn.news = Some(news);
        Ok(())
    }

    fn take_news(&self) -> Turn {
        guard(&self.turn).news.take().unwrap_or(Turn::Continued)
    }

    fn owe_news(&self, news: Turn) {
        let mut turn = guard(&self.turn);
        if turn.active && news != Turn::Continued {
            // A reset outranks a follow.
            if turn.news != Some(Turn::Reset) {
                turn.news = Some(news);
            }
        }
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
        let committed = block_on(write_and_commit(&conn, self.table, mode, overlay));
        turn.active = false;
        turn.news = None;
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
            let old: Option<Vec<u8>> = match block_on(async {
                client
                    .batch_execute(if mode != FlushMode::Sync {
                        "BEGIN; SET LOCAL synchronous_commit = off"
                    } else {
                        "BEGIN"
                    })
                    .await?;
                Ok::<_, tokio_postgres::Error>(
                    client
                        .query_typed_opt(&select, &[(&k, Type::BYTEA)])
                        .await?
                        .map(|r| r.get(0)),
                )
            }) {
                Ok(old) => old,
                Err(e) => {
                    drop(client);
                    self.discard();
                    return Err(pg(e));
                }
            };
            let new = f(old.as_deref());
            let wrote: std::result::Result<bool, tokio_postgres::Error> = block_on(async {
                let b = Type::BYTEA;
                let n = match (&old, &new) {
                    (_, None) => {
                        let delete = format!("DELETE FROM {table} WHERE k = $1");
                        client.execute_typed(&delete, &[(&k, b)]).await?;
                        1
                    }
                    (Some(_), Some(v)) => {
                        let update = format!("UPDATE {table} SET v = $2 WHERE k = $1");
                        client
                            .execute_typed(&update, &[(&k, b.clone()), (v, b)])
                            .await?
                    }
                    // Another process may insert the same key meanwhile
                    // (no row to lock yet): then try again.
                    (None, Some(v)) => {
                        let insert = format!(
                            "INSERT INTO {table} (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING"
                        );
                        client
                            .execute_typed(&insert, &[(&k, b.clone()), (v, b)])
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
            let wrote = match wrote {
                Ok(w) => w,
                Err(e) => {
                    drop(client);
                    self.discard();
                    return Err(pg(e));
                }
            };
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
        let written = block_on(async {
            let (begun, written) = futures_util::future::join(
                conn.batch_execute("BEGIN"),
                write_and_commit(&conn, self.table, mode, latest),
            )
            .await;
            begun.and(written)
        });
        match written {
            Ok(()) => {
                self.give_back(conn);
                Ok(())
            }
            Err(e) => {
                drop(conn);
                self.discard();
                Err(pg(e))
            }
        }
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
