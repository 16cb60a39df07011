//! Live queries: an app registers a list query (or one record) with a
//! callback and receives the new result page whenever a write changes it
//! — a local write on any thread, or a sync round.
//!
//! * Computed from the in-memory index (`Store::list`), never from
//!   documents.
//! * Coalesced: every write marks its record; the marks are taken at once
//!   when no sync round holds them back (`Store::hold_live`, which
//!   `sync::Client::apply_response` takes for a round), so a round or a
//!   burst of writes gives at most one callback per query.
//! * Only queries a marked record can affect are evaluated again: one
//!   whose result held the record, or whose filters it matches now
//!   (each query keeps the ids of everything it matched).
//! * Delivered on one thread per store, never the caller's; a callback
//!   fires only when the page differs from the last one delivered (the
//!   first result is delivered once at registration).
//! * [`Store::unwatch`] returns once no callback of that query runs (when
//!   called from inside one, once that callback has returned); nothing is
//!   delivered after it.
//!
//! Filters that depend on the time (`overdue`, `due_soon`) are judged
//! when a write touches a record, not as the clock moves.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Weak};
use std::time::Duration;

use super::*;

/// What a live query watches.
#[derive(Clone, Debug)]
pub enum Watched {
    /// A list (filters, sort, paging as [`Store::list`]).
    List(Box<Query>),
    /// One record: a page of its index entry, empty once it is gone.
    Record(RecordId),
}

/// Receives a live query's pages.
pub type LiveCallback = Box<dyn Fn(Page) + Send + Sync>;

struct Watcher {
    what: Watched,
    callback: LiveCallback,
    /// Cleared by `unwatch`: nothing more is delivered.
    active: std::sync::atomic::AtomicBool,
    /// The last page delivered and the ids of every record that matched
    /// then; held while the callback runs.
    last: Mutex<Option<(Page, HashSet<RecordId>)>>,
}

#[derive(Default)]
struct LiveState {
    watchers: BTreeMap<u64, Arc<Watcher>>,
    next: u64,
    /// Records written since the last evaluation.
    dirty: BTreeSet<RecordId>,
    /// Queries registered since: evaluated and delivered whatever changed.
    fresh: Vec<u64>,
    /// Sync rounds in progress (marks wait for them).
    holds: usize,
    /// Whether the delivery thread runs.
    running: bool,
    /// The delivery thread's id, while it runs.
    thread: Option<std::thread::ThreadId>,
}

/// The live queries of one store.
#[derive(Default)]
pub(super) struct Live {
    state: Mutex<LiveState>,
    wake: Condvar,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a written record (cheap when nothing is registered).
    pub(super) fn touch(&self, id: RecordId) {
        let mut st = self.lock();
        if st.watchers.is_empty() {
            return;
        }
        st.dirty.insert(id);
        if st.holds == 0 {
            self.wake.notify_all();
        }
    }
}

/// Holds live-query delivery back while it lives (a sync round): the
/// marks of its writes are taken together when it ends.
#[derive(Debug)]
pub struct LiveHold<'a>(&'a Live);

impl Drop for LiveHold<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.holds = st.holds.saturating_sub(1);
        if st.holds == 0 && !st.dirty.is_empty() {
            self.0.wake.notify_all();
        }
    }
}

/// How long the delivery thread sleeps between checks that its store
/// still exists.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Store {
    /// Registers a live query; `callback` receives its first page soon,
    /// then each new page, on the store's delivery thread. Returns the id
    /// to [`Store::unwatch`] it with. A query a list would refuse is
    /// refused here.
    pub fn watch(self: &Arc<Self>, what: Watched, callback: LiveCallback) -> Result<u64> {
        if let Watched::List(q) = &what {
            self.checked(q)?;
        }
        let watcher = Arc::new(Watcher {
            what,
            callback,
            active: std::sync::atomic::AtomicBool::new(true),
            last: Mutex::new(None),
        });
        let mut st = self.live.lock();
        st.next += 1;
        let id = st.next;
        st.watchers.insert(id, watcher);
        st.fresh.push(id);
        if !st.running {
            st.running = true;
            let weak = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("gridsync-live".into())
                .spawn(move || deliver(&weak));
            if let Err(e) = spawned {
                st.running = false;
                st.watchers.remove(&id);
                return Err(Error::Io(e));
            }
        }
        self.live.wake.notify_all();
        Ok(id)
    }

    /// Stops a live query: when this returns no callback of it runs (or,
    /// called from inside its own callback, none begins after it) and none
    /// will. Unknown ids are ignored.
    pub fn unwatch(&self, id: u64) {
        let (watcher, on_thread) = {
            let mut st = self.live.lock();
            (
                st.watchers.remove(&id),
                st.thread == Some(std::thread::current().id()),
            )
        };
        if let Some(w) = watcher {
            w.active.store(false, std::sync::atomic::Ordering::SeqCst);
            if !on_thread {
                // Waits for a callback in progress.
                drop(w.last.lock().unwrap_or_else(PoisonError::into_inner));
            }
        }
    }

    /// How many live queries are registered.
    pub fn live_queries(&self) -> usize {
        self.live.lock().watchers.len()
    }

    /// Holds delivery back until the guard drops (a sync round takes one).
    pub fn hold_live(&self) -> LiveHold<'_> {
        self.live.lock().holds += 1;
        LiveHold(&self.live)
    }

    /// Evaluates a batch: for each watcher that a write to `dirty` may
    /// affect (or that is fresh), its new page (`None`: the same as
    /// delivered, known without building it) and matching ids. One hold
    /// of the index; list queries scan only their grid's entries when
    /// they name one.
    fn live_batch(
        &self,
        watchers: &[(Arc<Watcher>, bool)],
        dirty: &BTreeSet<RecordId>,
    ) -> Vec<(Arc<Watcher>, Option<Page>, HashSet<RecordId>)> {
        let index = self.index_read();
        let names = index.names();
        let mut by_grid: Option<std::collections::HashMap<&str, Vec<&crate::entry::Entry>>> = None;
        let mut out = Vec::new();
        for (w, fresh) in watchers {
            if !w.active.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            match &w.what {
                Watched::Record(id) => {
                    if !fresh && !dirty.contains(id) {
                        continue;
                    }
                    let items: Vec<RecordMeta> = index.meta(*id).into_iter().collect();
                    let ids = items.iter().map(RecordMeta::record_id).collect();
                    let total = items.len();
                    out.push((w.clone(), Some(Page { items, total }), ids));
                }
                Watched::List(q) => {
                    let Ok(q) = self.checked(q) else { continue };
                    let matcher = query::Matcher::new(&q, names, |_| true);
                    let bodies = self.bodies(&index);
                    // A text that cannot be read counts as a match: the
                    // query runs again below and reports what it finds.
                    let matches = |id: &RecordId| {
                        index
                            .get(*id)
                            .is_some_and(|e| matcher.matches_fully(e, &bodies).unwrap_or(true))
                    };
                    // A write can change the result only if its record
                    // matched before or matches now.
                    let affected = *fresh
                        || w.last
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .as_ref()
                            .is_none_or(|(_, before)| {
                                dirty.iter().any(|id| before.contains(id) || matches(id))
                            });
                    if !affected {
                        continue;
                    }
                    let result = match q.grid.as_deref() {
                        Some(grid) => {
                            let groups = by_grid.get_or_insert_with(|| {
                                let mut m: std::collections::HashMap<&str, Vec<_>> =
                                    std::collections::HashMap::new();
                                for e in index.entries() {
                                    m.entry(names.scope(e.place).grid.as_str())
                                        .or_default()
                                        .push(e);
                                }
                                m
                            });
                            let entries = groups.get(grid).map(Vec::as_slice).unwrap_or_default();
                            query::run_entries(&q, names, entries.iter().copied(), &bodies)
                        }
                        None => query::run_entries(&q, names, index.entries(), &bodies),
                    };
                    // A text that could not be read: the query is evaluated
                    // again at the next write.
                    let Ok((entries, total, ids)) = result else {
                        continue;
                    };
                    let ids: HashSet<RecordId> = ids.into_iter().collect();
                    // The same records in the same order, none of them
                    // written: the page is what was delivered.
                    let same = !fresh
                        && !entries.iter().any(|e| dirty.contains(&e.id))
                        && w.last
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .as_ref()
                            .is_some_and(|(p, _)| {
                                p.total == total
                                    && p.items.len() == entries.len()
                                    && p.items
                                        .iter()
                                        .zip(&entries)
                                        .all(|(m, e)| m.id == *e.id.as_bytes())
                            });
                    if same {
                        out.push((w.clone(), None, ids));
                    } else {
                        let items = entries.iter().map(|e| e.meta(names)).collect();
                        out.push((w.clone(), Some(Page { items, total }), ids));
                    }
                }
            }
        }
        out
    }
}

/// The delivery thread: waits for marks (and no hold), evaluates the
/// queries they may affect, and calls back those whose page changed. Ends
/// when no query is registered or the store is gone.
fn deliver(store: &Weak<Store>) {
    let live = match store.upgrade() {
        Some(s) => Arc::clone(&s.live),
        None => return,
    };
    live.lock().thread = Some(std::thread::current().id());
    loop {
        let mut st = live.lock();
        loop {
            if st.watchers.is_empty() || store.strong_count() == 0 {
                st.running = false;
                st.thread = None;
                return;
            }
            if !st.fresh.is_empty() || (!st.dirty.is_empty() && st.holds == 0) {
                break;
            }
            st = live
                .wake
                .wait_timeout(st, IDLE_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let dirty = if st.holds == 0 {
            std::mem::take(&mut st.dirty)
        } else {
            BTreeSet::new()
        };
        let fresh: HashSet<u64> = st.fresh.drain(..).collect();
        let watchers: Vec<(u64, Arc<Watcher>)> =
            st.watchers.iter().map(|(k, w)| (*k, w.clone())).collect();
        drop(st);
        let Some(store) = store.upgrade() else {
            continue;
        };
        if dirty.is_empty() && fresh.is_empty() {
            continue;
        }
        let batch: Vec<(Arc<Watcher>, bool)> = watchers
            .into_iter()
            .map(|(id, w)| (w, fresh.contains(&id)))
            .collect();
        // Pages are computed under one hold of the index, callbacks run
        // after it is released (a callback may read the store).
        for (w, page, ids) in store.live_batch(&batch, &dirty) {
            let mut last = w.last.lock().unwrap_or_else(PoisonError::into_inner);
            if !w.active.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let Some(page) = page else {
                if let Some((_, kept)) = last.as_mut() {
                    *kept = ids;
                }
                continue;
            };
            let changed = last.as_ref().is_none_or(|(p, _)| *p != page);
            *last = Some((page.clone(), ids));
            if changed {
                // A panic in an app's callback must not end delivery.
                let _ = catch_unwind(AssertUnwindSafe(|| (w.callback)(page)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::Role;

    fn store() -> Arc<Store> {
        let mut config = StoreConfig::new("", "P1");
        config.temporary = true;
        config.search = true;
        Arc::new(Store::open(config).unwrap())
    }

    fn new_issue(title: &str, grid: &str) -> NewIssue {
        super::super::sample_issue(title, grid)
    }

    fn titles(page: &Page) -> Vec<String> {
        page.items.iter().map(|m| m.title.clone()).collect()
    }

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_live_list_follows_writes_once_per_batch_and_stops_when_unwatched() {
        let store = store();
        let worker = Author::new("w1", Role::GridWorker);
        store
            .create_issue(&worker, new_issue("路灯不亮", "G1"))
            .unwrap();
        let (tx, rx) = mpsc::channel::<(Page, std::thread::ThreadId)>();
        let mut q = Query::issues();
        q.grid = Some("G1".into());
        q.sort = crate::Sort::CreatedAsc;
        let id = store
            .watch(
                Watched::List(Box::new(q)),
                Box::new(move |page| {
                    let _ = tx.send((page, std::thread::current().id()));
                }),
            )
            .unwrap();
        let (first, thread) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(titles(&first), ["路灯不亮"]);
        assert_ne!(
            thread,
            std::thread::current().id(),
            "delivered off the caller's thread"
        );

        // A write on another thread.
        let writer = store.clone();
        let w = worker.clone();
        std::thread::spawn(move || {
            writer
                .create_issue(&w, new_issue("井盖缺失", "G1"))
                .unwrap()
        })
        .join()
        .unwrap();
        let (page, _) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(titles(&page), ["路灯不亮", "井盖缺失"]);
        assert_eq!(page.total, 2);

        // A write the query cannot see changes nothing it shows.
        store
            .create_issue(&worker, new_issue("别的网格", "G2"))
            .unwrap();
        // Three writes under one hold (a sync round): one page.
        {
            let _hold = store.hold_live();
            for t in ["一", "二", "三"] {
                store.create_issue(&worker, new_issue(t, "G1")).unwrap();
            }
            assert!(
                rx.recv_timeout(Duration::from_millis(200)).is_err(),
                "held back"
            );
        }
        let (page, _) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(page.total, 5);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the G2 write and the batch gave one page"
        );

        store.unwatch(id);
        assert_eq!(store.live_queries(), 0);
        store
            .create_issue(&worker, new_issue("之后", "G1"))
            .unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }

    /// Not a live query: the longest description a phone may write is
    /// one change another store (a server, with the default limits)
    /// takes.
    #[test]
    fn the_longest_text_a_store_writes_is_a_change_others_take() {
        let phone = store();
        let worker = Author::new("w1", Role::GridWorker);
        let mut new = new_issue("长描述", "G1");
        new.description = "x".repeat(crate::doc::MAX_TEXT);
        let id = phone.create_issue(&worker, new).unwrap();
        let server = store();
        let bytes = phone.changes_since(id, &[]).unwrap();
        server
            .apply_changes(id, &bytes, &crate::ForeignLimits::default())
            .unwrap();
        assert_eq!(
            server.issue(id).unwrap().description.len(),
            crate::doc::MAX_TEXT
        );
    }

    #[test]
    fn a_watched_record_reports_its_changes_and_a_bad_query_is_refused() {
        let store = store();
        let worker = Author::new("w1", Role::GridWorker);
        let id = store
            .create_issue(&worker, new_issue("楼道堆物", "G1"))
            .unwrap();
        let (tx, rx) = mpsc::channel::<Page>();
        let watch = store
            .watch(
                Watched::Record(id),
                Box::new(move |page| {
                    let _ = tx.send(page);
                }),
            )
            .unwrap();
        assert_eq!(rx.recv_timeout(WAIT).unwrap().items[0].status, "reported");
        store
            .update_issue(
                id,
                &worker,
                crate::IssueOp::Transition {
                    to: crate::IssueStatus::InProgress,
                    reason: String::new(),
                },
            )
            .unwrap();
        assert_eq!(
            rx.recv_timeout(WAIT).unwrap().items[0].status,
            "in_progress"
        );
        store.unwatch(watch);
        let mut bad = Query::issues();
        bad.statuses = vec!["close".into()];
        assert!(matches!(
            store.watch(Watched::List(Box::new(bad)), Box::new(|_| {})),
            Err(Error::InvalidInput { .. })
        ));
    }
}
