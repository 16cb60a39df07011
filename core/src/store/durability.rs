//! Durability: the write point (crash failpoints), write turns, group commit, and the engine's flush.

use super::*;

impl Store {
    /// Test hook (feature `failpoints`): the store "crashes" after `writes`
    /// more writes to sled; every later write or flush fails with an I/O
    /// error. Drop the store and reopen it to model a restart.
    #[cfg(feature = "failpoints")]
    pub fn crash_after_writes(&self, writes: u64) {
        self.crash.arm(writes);
    }

    /// Test hook (feature `failpoints`): runs `f` once, when the next
    /// [`Store::make_durable`] has completed, before it returns. Lets a test
    /// put another request's write between a round's flush and its paging
    /// of the feed.
    #[cfg(feature = "failpoints")]
    pub fn after_next_durable(&self, f: impl FnOnce() + Send + 'static) {
        *self
            .after_durable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(f));
    }

    /// Every write to sled passes here first (a no-op unless the
    /// `failpoints` feature is on and a crash is armed).
    #[inline]
    pub(super) fn write_point(&self) -> Result<()> {
        #[cfg(feature = "failpoints")]
        if !self.crash.pass() {
            return Err(Error::Io(std::io::Error::other("simulated crash")));
        }
        Ok(())
    }

    /// Makes everything written so far durable (sled flush, then fdatasync
    /// as configured). Writes through the `*_unflushed` methods are not
    /// durable until this returns.
    ///
    /// Concurrent callers share flushes (group commit): a caller whose
    /// writes were applied before a flush started waits for that flush
    /// instead of starting its own.
    pub fn make_durable(&self) -> Result<()> {
        self.make_durable_inner()?;
        #[cfg(feature = "failpoints")]
        {
            let hook = self
                .after_durable
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(hook) = hook {
                hook();
            }
        }
        Ok(())
    }

    pub(super) fn make_durable_inner(&self) -> Result<()> {
        if self.durability == Durability::None {
            return Ok(());
        }
        let gate = &self.flush_gate;
        let mut state = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.requested += 1;
        let ticket = state.requested;
        loop {
            if state.completed >= ticket {
                return Ok(());
            }
            if !state.flushing {
                state.flushing = true;
                let target = state.requested;
                drop(state);
                // Every entry applied so far is covered by this flush (the
                // writers of the tickets it serves applied theirs first).
                let result = self.flush_turn();
                let mut after = gate.state.lock().unwrap_or_else(PoisonError::into_inner);
                after.flushing = false;
                if result.is_ok() {
                    after.completed = after.completed.max(target);
                }
                gate.done.notify_all();
                return result;
            }
            state = gate
                .done
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Flushes to disk whatever the configured durability: for bulk loads
    /// that write with `Durability::None` and make it all durable at the end.
    pub fn flush(&self) -> Result<()> {
        self.write_point()?;
        let w = self.lock();
        let applied = w.next_seq - 1;
        let events = self
            .outbox_applied
            .load(std::sync::atomic::Ordering::SeqCst);
        self.db.flush(FlushMode::Sync)?;
        drop(w);
        self.durable_seq
            .fetch_max(applied, std::sync::atomic::Ordering::SeqCst);
        self.outbox_durable
            .fetch_max(events, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Ends the write turn, making what it applied durable, and moves the
    /// durable head. On an engine other processes share, the turn ends
    /// under the write lock: a writer of this process that is computing a
    /// batch from what the turn made current must finish first. (On sled
    /// the flush runs beside new writes: group commit.)
    fn flush_turn(&self) -> Result<()> {
        self.write_point()?;
        let mode = match self.durability {
            Durability::Fsync => FlushMode::Sync,
            _ => FlushMode::Process,
        };
        let applied;
        let events;
        let result = if self.db.is_shared() {
            let mut w = self.lock();
            applied = w.next_seq - 1;
            events = self
                .outbox_applied
                .load(std::sync::atomic::Ordering::SeqCst);
            let flushed = self.db.flush(mode);
            if flushed.is_err() {
                // The transaction is gone with everything the turn applied:
                // what memory derived from it goes too. (If the database
                // cannot be read now either, the next turn does it.)
                if self.reload_locked(&mut w).is_ok() {
                    self.db.take_news();
                }
            }
            flushed
        } else {
            let w = self.lock();
            applied = w.next_seq - 1;
            events = self
                .outbox_applied
                .load(std::sync::atomic::Ordering::SeqCst);
            drop(w);
            self.db.flush(mode)
        };
        if result.is_ok() {
            self.durable_seq
                .fetch_max(applied, std::sync::atomic::Ordering::SeqCst);
            self.outbox_durable
                .fetch_max(events, std::sync::atomic::Ordering::SeqCst);
        }
        result
    }

    /// Flushes now, outside group commit.
    pub(super) fn flush_now(&self) -> Result<()> {
        self.flush_turn()
    }

    /// Takes the write lock and this process's write turn. When the turn
    /// is new on an engine other processes write to, the index and caches
    /// first follow what they wrote (see [`Store::follow`]).
    ///
    /// The turn is taken before the write lock, so that waiting for
    /// another server's turn never blocks this process's readers. Whoever
    /// next holds the write lock inside the turn does the catching up
    /// (`Backend::take_news`), and a turn that ended in between (another request
    /// made it durable) is taken again.
    pub(super) fn lock_writes(&self) -> Result<MutexGuard<'_, Writer>> {
        loop {
            self.db.begin_turn()?;
            let mut w = self.lock();
            if self.db.is_shared() && !self.db.holds_turn() {
                continue;
            }
            let news = self.db.take_news();
            let caught_up = match news {
                Turn::Continued => Ok(()),
                Turn::Fresh => self.follow_locked(&mut w).map(drop),
                Turn::Reset => self.reload_locked(&mut w),
            };
            if let Err(e) = caught_up {
                // Still owed by the next writer of this turn.
                self.db.owe_news(news);
                return Err(e);
            }
            return Ok(w);
        }
    }
}
