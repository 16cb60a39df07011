//! Search texts (see [`crate::search`]): derived at every write of a store
//! that keeps them and written in the same atomic batch as the record's
//! index entry, under two keys: the text (`t`), and what a search holds
//! of it in memory (`q`, a [`Held`]: signature, phone key, work-order
//! number, flags), which open reads into the index entries. The texts
//! themselves are read from the store when a search needs them, through
//! a bounded cache of the most recently written ones ([`TextCache`]).

use std::collections::{HashMap, HashSet, VecDeque};

use automerge::Automerge;

use super::{backend, bincode_config, key, Batch, FlushMode, Store, P_HELD, P_TEXT};
use crate::doc;
use crate::error::{Error, Result};
use crate::ids::{RecordId, RecordKind};
use crate::search::{self, Held, SearchText, TextSource};
use crate::{issue, meeting};

/// How many derived texts go in one batch when they are derived at open.
const DERIVE_BATCH: usize = 1_000;

/// What a text in the cache costs beside its bytes: its map slot, its
/// place in the queue, its allocation.
const CACHED_COST: usize = 64;

/// Search texts held in memory, up to a budget of bytes: a text written
/// is held (the oldest held ones leave when the budget is reached); a
/// text read for a search is not, so that one search over everything
/// does not push out what later ones would find.
#[derive(Debug, Default)]
pub(crate) struct TextCache {
    texts: HashMap<RecordId, Box<str>>,
    /// Held ids, oldest first (an id removed and held again may appear
    /// twice; the queue is compacted when such stale places pile up).
    order: VecDeque<RecordId>,
    bytes: usize,
    budget: usize,
}

impl TextCache {
    pub(super) fn new(budget: usize) -> TextCache {
        TextCache {
            budget,
            ..TextCache::default()
        }
    }

    fn cost(text: &str) -> usize {
        text.len() + CACHED_COST
    }

    pub(super) fn get(&self, id: &RecordId) -> Option<&str> {
        self.texts.get(id).map(|t| &**t)
    }

    /// Whether a text of `len` bytes fits without pushing another out.
    fn has_room(&self, len: usize) -> bool {
        self.bytes + len + CACHED_COST <= self.budget
    }

    /// Holds `text` as the record's (in the place its earlier text had,
    /// if one was held), pushing the oldest held texts out when the
    /// budget is reached.
    pub(super) fn put(&mut self, id: RecordId, text: &str) {
        let cost = Self::cost(text);
        if cost > self.budget {
            self.remove(&id);
            return;
        }
        match self.texts.get_mut(&id) {
            Some(old) => {
                self.bytes = self.bytes - Self::cost(old) + cost;
                *old = text.into();
            }
            None => {
                self.bytes += cost;
                self.texts.insert(id, text.into());
                self.order.push_back(id);
            }
        }
        while self.bytes > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if oldest == id {
                // Not the one just written (it alone fits).
                self.order.push_back(id);
                continue;
            }
            if let Some(t) = self.texts.remove(&oldest) {
                self.bytes -= Self::cost(&t);
            }
        }
        if self.order.len() > 2 * self.texts.len() + 1024 {
            let mut seen = HashSet::with_capacity(self.texts.len());
            let texts = &self.texts;
            self.order
                .retain(|id| texts.contains_key(id) && seen.insert(*id));
        }
    }

    pub(super) fn remove(&mut self, id: &RecordId) {
        if let Some(t) = self.texts.remove(id) {
            self.bytes -= Self::cost(&t);
        }
    }

    /// Bytes held, as the budget counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn len(&self) -> usize {
        self.texts.len()
    }
}

/// A record's search text as a write keeps it: the text, and what is
/// held of it in memory.
pub(super) struct Kept {
    text: String,
    held: Held,
}

/// The stored search texts of `ids`, in order (`None`: none kept), in one
/// read of the engine.
fn read_texts(db: &dyn backend::Backend, ids: &[RecordId]) -> Result<Vec<Option<SearchText>>> {
    let keys: Vec<Vec<u8>> = ids.iter().map(|id| key(P_TEXT, id.as_bytes())).collect();
    Ok(db
        .get_many(&keys)?
        .into_iter()
        .map(|v| v.as_deref().and_then(decode_text))
        .collect())
}

/// The texts a search reads: held ones from the cache, the others from
/// the store, a batch at a time.
pub(super) struct Bodies<'a> {
    pub cache: &'a TextCache,
    pub db: &'a dyn backend::Backend,
}

impl TextSource for Bodies<'_> {
    fn texts(&self, ids: &[RecordId], found: &mut dyn FnMut(usize, &str)) -> Result<()> {
        let mut missing = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match self.cache.get(id) {
                Some(text) => found(i, text),
                None => missing.push(i),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let asked: Vec<RecordId> = missing.iter().map(|&i| ids[i]).collect();
        for (&i, text) in missing.iter().zip(read_texts(self.db, &asked)?) {
            if let Some(text) = text {
                found(i, &text.text);
            }
        }
        Ok(())
    }
}

fn decode_text(bytes: &[u8]) -> Option<SearchText> {
    bincode::decode_from_slice::<SearchText, _>(bytes, bincode_config())
        .ok()
        .map(|(t, _)| t)
}

impl Store {
    /// Whether this store keeps search texts ([`crate::StoreConfig::search`]).
    pub fn keeps_search_texts(&self) -> bool {
        self.search
    }

    /// How many search texts are held in memory, and their bytes as
    /// [`crate::StoreConfig::search_cache_bytes`] counts them.
    pub fn search_texts_held(&self) -> (usize, usize) {
        let index = self.index_read();
        (index.texts.len(), index.texts.bytes())
    }

    /// The texts of a search to run under `index`: held ones from its
    /// cache, the others read from the store.
    pub(super) fn bodies<'a>(&'a self, index: &'a super::index::Index) -> Bodies<'a> {
        Bodies {
            cache: &index.texts,
            db: self.db.as_ref(),
        }
    }

    /// The stored search texts of `ids`, in order (`None`: none kept).
    pub(super) fn search_texts(&self, ids: &[RecordId]) -> Result<Vec<Option<SearchText>>> {
        read_texts(self.db.as_ref(), ids)
    }

    /// The search text to keep for a record, when this store keeps them.
    pub(super) fn derive_text(&self, id: RecordId, d: &Automerge) -> Option<SearchText> {
        if !self.search {
            return None;
        }
        Some(
            match doc::record_type(d).as_deref().and_then(RecordKind::parse) {
                Some(RecordKind::Issue) => search::of_issue(issue::read(d, id)),
                Some(RecordKind::Meeting) => search::of_meeting(meeting::read(d, id)),
                None => SearchText::default(),
            },
        )
    }

    /// Adds the text and what is held of it to `batch`.
    pub(super) fn put_text(batch: &mut Batch, id: RecordId, text: SearchText) -> Result<Kept> {
        let encoded = bincode::encode_to_vec(&text, bincode_config())
            .map_err(|e| Error::Metadata(e.to_string()))?;
        batch.insert(key(P_TEXT, id.as_bytes()), encoded);
        let held = Held::from(&text);
        batch.insert(key(P_HELD, id.as_bytes()), held.encode()?);
        Ok(Kept {
            text: text.text,
            held,
        })
    }

    /// Derives the text of the record `d` (when this store keeps them)
    /// and adds it to `batch`.
    pub(super) fn keep_text(
        &self,
        batch: &mut Batch,
        id: RecordId,
        d: &Automerge,
    ) -> Result<Option<Kept>> {
        self.derive_text(id, d)
            .map(|t| Self::put_text(batch, id, t))
            .transpose()
    }

    /// After a write of `id` that kept `kept` has been applied: the index
    /// entry (already replaced) gets what is held of it, the cache the
    /// text.
    pub(super) fn text_written(index: &mut super::index::Index, id: RecordId, kept: Kept) {
        index.set_search(id, Some(kept.held));
        index.texts.put(id, &kept.text);
    }

    /// Reads what is held of every record's text into the index entries
    /// (after [`Store::load_index`]) and fills the cache from the most
    /// recently changed records on. At open (`derive`), records that
    /// have nothing held yet — a store that kept no texts before, or
    /// one written before format 5 kept them apart — get it derived
    /// from their text, or from their document where they have no text,
    /// once, and written; a store that keeps none removes any it finds,
    /// so that no text outlives the writes that would have kept it
    /// current.
    pub(super) fn load_texts(&self, derive: bool) -> Result<()> {
        if !self.search {
            if derive {
                let mut batch = Batch::default();
                for prefix in [P_TEXT, P_HELD] {
                    for item in backend::scan(self.db.as_ref(), &[prefix]) {
                        batch.remove(item?.0);
                    }
                }
                if !batch.is_empty() {
                    self.db.begin_turn()?;
                    self.db.apply(batch)?;
                    self.db.flush(FlushMode::Sync)?;
                }
            }
            return Ok(());
        }
        let mut index = self.index_mut();
        index.texts = TextCache::new(self.search_cache_bytes);
        for item in backend::scan(self.db.as_ref(), &[P_HELD]) {
            let (k, v) = item?;
            // One that cannot be read is derived again below.
            if let (Some(id), Some(held)) = (RecordId::from_slice(&k[1..]), Held::decode(&v)) {
                index.set_search(id, Some(held));
            }
        }
        let missing: HashSet<RecordId> = index
            .entries()
            .filter(|e| e.search.is_none())
            .map(|e| e.id)
            .collect();
        drop(index);
        if derive && !missing.is_empty() {
            self.derive_held(missing)?;
        }
        self.fill_cache()
    }

    /// Derives and writes what is held for `missing` records: from the
    /// texts the store has (read in key order), from their documents for
    /// the rest.
    fn derive_held(&self, mut missing: HashSet<RecordId>) -> Result<()> {
        let mut batch = Batch::default();
        let mut derived = Vec::new();
        let write = |batch: &mut Batch, derived: &mut Vec<(RecordId, Held)>| -> Result<()> {
            self.db.begin_turn()?;
            self.db.apply(std::mem::take(batch))?;
            self.db.flush(FlushMode::Sync)?;
            let mut index = self.index_mut();
            for (id, held) in derived.drain(..) {
                index.set_search(id, Some(held));
            }
            Ok(())
        };
        for item in backend::scan(self.db.as_ref(), &[P_TEXT]) {
            let (k, v) = item?;
            let Some(id) = RecordId::from_slice(&k[1..]).filter(|id| missing.contains(id)) else {
                continue;
            };
            // A text that cannot be read (an older build's layout) is
            // derived again from the document below.
            if let Some(text) = decode_text(&v) {
                missing.remove(&id);
                derived.push((id, Self::put_text(&mut batch, id, text)?.held));
                if batch.len() >= DERIVE_BATCH {
                    write(&mut batch, &mut derived)?;
                }
            }
        }
        for id in missing {
            // A record that cannot be loaded is listed as corrupt by
            // the index; it has no text until it is written again.
            if let Ok(loaded) = self.load_from_disk(id) {
                if let Some(kept) = self.keep_text(&mut batch, id, &loaded.doc)? {
                    derived.push((id, kept.held));
                }
            }
            if batch.len() >= DERIVE_BATCH {
                write(&mut batch, &mut derived)?;
            }
        }
        if !batch.is_empty() {
            write(&mut batch, &mut derived)?;
        }
        Ok(())
    }

    /// Fills the text cache with the texts of the most recently changed
    /// records, until its budget is reached.
    fn fill_cache(&self) -> Result<()> {
        let mut recent: Vec<(i64, RecordId)> = {
            let index = self.index_read();
            index.entries().map(|e| (e.updated_at, e.id)).collect()
        };
        recent.sort_unstable_by(|a, b| b.cmp(a));
        // Oldest first into the cache, so that the newest leave it last.
        let mut chosen = Vec::new();
        let mut room = self.search_cache_bytes;
        for chunk in recent.chunks(DERIVE_BATCH) {
            let ids: Vec<RecordId> = chunk.iter().map(|(_, id)| *id).collect();
            for (id, text) in ids.iter().zip(self.search_texts(&ids)?) {
                let Some(text) = text else {
                    continue;
                };
                let cost = TextCache::cost(&text.text);
                if cost > room {
                    room = 0;
                    break;
                }
                room -= cost;
                chosen.push((*id, text.text));
            }
            if room == 0 {
                break;
            }
        }
        let mut index = self.index_mut();
        for (id, text) in chosen.into_iter().rev() {
            if !index.texts.has_room(text.len()) {
                break;
            }
            index.texts.put(id, &text);
        }
        Ok(())
    }

    /// Reads one record's text again (another server wrote the record);
    /// what is held of it is derived from it.
    pub(super) fn reload_text(&self, id: RecordId) -> Result<()> {
        if !self.search {
            return Ok(());
        }
        let text = self.search_texts(&[id])?.pop().flatten();
        let mut index = self.index_mut();
        match text {
            Some(t) => {
                index.set_search(id, Some(Held::from(&t)));
                index.texts.put(id, &t.text);
            }
            None => {
                index.set_search(id, None);
                index.texts.remove(&id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> RecordId {
        RecordId::from_bytes([n; 16])
    }

    #[test]
    fn the_cache_keeps_the_latest_texts_within_its_budget() {
        let text = "楼".repeat(100); // 300 bytes
        let cost = TextCache::cost(&text);
        let mut cache = TextCache::new(3 * cost);
        for n in 0..5 {
            cache.put(id(n), &text);
            assert!(cache.bytes() <= 3 * cost);
        }
        // The oldest went first.
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&id(0)).is_none() && cache.get(&id(1)).is_none());
        assert_eq!(cache.get(&id(4)), Some(text.as_str()));
        // A text written again replaces the held one, costs what it is.
        cache.put(id(3), "楼道");
        assert_eq!(cache.get(&id(3)), Some("楼道"));
        assert_eq!(cache.bytes(), 2 * cost + TextCache::cost("楼道"));
        cache.remove(&id(3));
        assert_eq!(cache.bytes(), 2 * cost);
        // A text larger than the whole budget is not held.
        cache.put(id(9), &"楼".repeat(400));
        assert!(cache.get(&id(9)).is_none());
        assert_eq!(cache.bytes(), 2 * cost);
        // Removing and holding again does not grow the queue without end.
        for _ in 0..10_000 {
            cache.put(id(4), "a");
            cache.remove(&id(4));
        }
        assert!(cache.order.len() <= 2 * cache.len() + 1024 + 1);
        assert!(TextCache::new(0).get(&id(0)).is_none());
    }
}
