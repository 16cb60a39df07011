//! Search texts (see [`crate::search`]): derived at every write of a store
//! that keeps them, in the same atomic batch as the record's index entry,
//! and held in memory beside the index.

use std::collections::HashMap;

use automerge::Automerge;

use super::{backend, bincode_config, key, Batch, FlushMode, Store, P_TEXT};
use crate::doc;
use crate::error::{Error, Result};
use crate::ids::{RecordId, RecordKind};
use crate::search::{self, Held, SearchText};
use crate::{issue, meeting};

/// How many derived texts go in one batch when they are derived at open.
const DERIVE_BATCH: usize = 1_000;

impl Store {
    /// Whether this store keeps search texts ([`crate::StoreConfig::search`]).
    pub fn keeps_search_texts(&self) -> bool {
        self.search
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

    /// Adds the text to `batch`.
    pub(super) fn put_text(batch: &mut Batch, id: RecordId, text: &SearchText) -> Result<()> {
        let encoded = bincode::encode_to_vec(text, bincode_config())
            .map_err(|e| Error::Metadata(e.to_string()))?;
        batch.insert(key(P_TEXT, id.as_bytes()), encoded);
        Ok(())
    }

    fn read_texts(&self) -> Result<HashMap<RecordId, Held>> {
        let mut texts = HashMap::new();
        for item in backend::scan(self.db.as_ref(), &[P_TEXT]) {
            let (k, v) = item?;
            let Some(id) = RecordId::from_slice(&k[1..]) else {
                continue;
            };
            // One that cannot be read (an older build's layout) is
            // derived again at open.
            if let Ok((text, _)) = bincode::decode_from_slice::<SearchText, _>(&v, bincode_config())
            {
                texts.insert(id, text.into());
            }
        }
        Ok(texts)
    }

    /// Reads the texts into memory (after [`Store::load_index`]). At open
    /// (`derive`), the texts of records that have none yet — a store that
    /// kept none before — are derived from their documents, once, and
    /// written; a store that keeps none removes any it finds, so that no
    /// text outlives the writes that would have kept it current.
    pub(super) fn load_texts(&self, derive: bool) -> Result<()> {
        if !self.search {
            if derive {
                let mut batch = Batch::default();
                for item in backend::scan(self.db.as_ref(), &[P_TEXT]) {
                    batch.remove(item?.0);
                }
                if !batch.is_empty() {
                    self.db.begin_turn()?;
                    self.db.apply(batch)?;
                    self.db.flush(FlushMode::Sync)?;
                }
            }
            return Ok(());
        }
        let mut texts = self.read_texts()?;
        if derive {
            let missing: Vec<RecordId> = self
                .index_read()
                .ids()
                .filter(|id| !texts.contains_key(id))
                .collect();
            let mut batch = Batch::default();
            for (n, id) in missing.iter().enumerate() {
                // A record that cannot be loaded is listed as corrupt by
                // the index; it has no text until it is written again.
                if let Ok(loaded) = self.load_from_disk(*id) {
                    if let Some(text) = self.derive_text(*id, &loaded.doc) {
                        Self::put_text(&mut batch, *id, &text)?;
                        texts.insert(*id, text.into());
                    }
                }
                if batch.len() >= DERIVE_BATCH || (n + 1 == missing.len() && !batch.is_empty()) {
                    self.db.begin_turn()?;
                    self.db.apply(std::mem::take(&mut batch))?;
                    self.db.flush(FlushMode::Sync)?;
                }
            }
        }
        self.index_mut().texts = texts;
        Ok(())
    }

    /// Reads one record's text again (another server wrote the record).
    pub(super) fn reload_text(&self, id: RecordId) -> Result<()> {
        if !self.search {
            return Ok(());
        }
        let text = self
            .db
            .get(&key(P_TEXT, id.as_bytes()))?
            .and_then(|v| bincode::decode_from_slice::<SearchText, _>(&v, bincode_config()).ok())
            .map(|(t, _)| t);
        let mut index = self.index_mut();
        match text {
            Some(t) => index.texts.insert(id, t.into()),
            None => index.texts.remove(&id),
        };
        Ok(())
    }
}
