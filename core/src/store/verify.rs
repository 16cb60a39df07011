//! The store's check of itself (`Store::verify`).

use super::*;

impl Store {
    /// Checks the store against its own invariants, loading every record:
    /// each log entry's change bytes are the changes its hashes name, and
    /// the record holds them; every change of a record is in the log (the
    /// feed devices pull), unless the record was imported whole or the log
    /// was truncated; every index entry is what its document derives.
    /// Returns the problems found, empty when the store is consistent.
    /// For crash tests and operators; costs a full read of the store.
    pub fn verify(&self) -> Result<Vec<String>> {
        use std::collections::HashSet;
        let mut problems = Vec::new();
        let trusted = ForeignLimits {
            max_bytes: usize::MAX,
            max_changes: usize::MAX,
            max_ops_per_change: usize::MAX,
            max_deps: usize::MAX,
            ..ForeignLimits::default()
        };
        // Per record: the hashes the log names, and whether it was imported
        // whole (an entry without hashes).
        let mut logged: BTreeMap<RecordId, (HashSet<ChangeHash>, bool)> = BTreeMap::new();
        let records: BTreeSet<RecordId> = self.record_ids()?.into_iter().collect();
        for entry in self.log_since(0, usize::MAX)? {
            let slot = logged.entry(entry.id).or_default();
            if entry.origin == Origin::Rebased {
                // The record was replaced: what earlier entries named is
                // not expected in it any more.
                *slot = Default::default();
            }
            if entry.hashes.is_empty() {
                slot.1 = true;
            }
            slot.0.extend(entry.hashes.iter().copied());
            if entry.hashes.is_empty() && entry.changes.is_empty() {
                continue;
            }
            match foreign::parse_changes(entry.id, &entry.changes, &trusted) {
                Ok(changes) => {
                    let mut got: Vec<ChangeHash> = changes.iter().map(|c| c.hash()).collect();
                    let mut want = entry.hashes.clone();
                    got.sort();
                    want.sort();
                    if got != want {
                        problems.push(format!(
                            "log entry {} ({}): its bytes hold {} changes, its hashes name {}",
                            entry.seq,
                            entry.id,
                            got.len(),
                            want.len()
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "log entry {} ({}): unreadable change bytes: {e}",
                    entry.seq, entry.id
                )),
            }
        }
        // Sequences start at 1; a higher floor means the log was truncated.
        let whole_log = self.log_floor()? <= 1;
        for id in &records {
            let id = *id;
            let Some(indexed) = self.meta(id)? else {
                problems.push(format!("{id}: stored but not indexed"));
                continue;
            };
            let checked = self.with_doc(id, |d| {
                let hashes: HashSet<ChangeHash> =
                    d.get_changes(&[]).iter().map(|c| c.hash()).collect();
                (hashes, derive_meta(id, d, indexed.updated_at))
            });
            let (hashes, derived) = match checked {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!("{id}: unreadable: {e}"));
                    continue;
                }
            };
            match derived {
                Ok(meta) if meta == indexed => {}
                Ok(_) => problems.push(format!("{id}: the index disagrees with the document")),
                Err(e) => problems.push(format!("{id}: no index entry derives: {e}")),
            }
            let (in_log, imported) = logged.remove(&id).unwrap_or_default();
            let missing_in_doc = in_log.difference(&hashes).count();
            if missing_in_doc > 0 {
                problems.push(format!(
                    "{id}: the log names {missing_in_doc} changes the record lacks"
                ));
            }
            if whole_log && !imported {
                let missing_in_log = hashes.difference(&in_log).count();
                if missing_in_log > 0 {
                    problems.push(format!(
                        "{id}: {missing_in_log} changes are in the record but not in the log"
                    ));
                }
            }
        }
        Ok(problems)
    }

    // ------------------------------------------------------------ sync support
}
