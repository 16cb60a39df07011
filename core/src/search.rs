//! Finding records by what is written in them, without loading documents.
//!
//! A store configured for it ([`crate::StoreConfig::search`]; the
//! server's is) derives a [`SearchText`] from every record at each write,
//! keeps it beside the record's index entry in the same atomic batch, and
//! holds in memory, for every record, only a [`Held`]: a signature of the
//! text, a key of the reporter's phone, the work-order number and a few
//! flags (about 170 bytes). A query's terms must each occur somewhere
//! in the text, after both are [normalized](normalize): so partial Chinese
//! words (楼道, 电动车充电) and addresses with numbers (幸福路12号) match
//! without a word segmenter, and case numbers and work-order numbers
//! match as written.
//!
//! The text is taken from the record *as a role without access to
//! personal data sees it* ([`policy::without_personal_data`]): a search
//! never finds a case by a resident's name or phone number, whoever
//! searches. The reporter's phone is kept apart, digits only, for exact
//! lookups by the roles that may see it (the caller checks
//! [`policy::sees_personal_data`]).
//!
//! A query passes over the records its other filters leave, rules most
//! out by their signatures, and reads the texts of the rest: from the
//! store's cache of recently written texts (a budget of bytes,
//! [`crate::StoreConfig::search_cache_bytes`]), else from the store (the
//! bench `store` has both rows for 100,000 issues). So a server's memory
//! grows by the `Held`s with its records, not by their texts (at most
//! [`MAX_TEXT_BYTES`] each).

use bincode::{Decode, Encode};

use crate::error::{Error, Result};
use crate::issue::IssueView;
use crate::meeting::MeetingView;
use crate::policy;

/// The most text kept per record (longer texts keep their beginning: the
/// numbers, title, address and description come first).
pub const MAX_TEXT_BYTES: usize = 4096;
/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;

/// What a record can be found by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct SearchText {
    /// Normalized text, fields separated by spaces.
    pub text: String,
    /// The reporter's phone number, digits only (issues; may be empty).
    pub phone: String,
    /// The 12345 work-order number, normalized (issues that came from
    /// the hotline; else empty).
    pub work_order: String,
    /// The office has put the case under supervision.
    pub supervised: bool,
    /// Notes, visits or photos arrived after the case was closed.
    pub activity_after_close: bool,
    /// A handler's extension request awaits the office's answer.
    pub extension_requested: bool,
}

/// Folds what people type in different ways to one form: full-width
/// letters, digits and signs to their ASCII forms, letters to lower case,
/// and every run of white space (the ideographic space included) to one
/// space.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        let c = match c {
            '\u{3000}' => ' ',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        };
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The digits of a phone number as written (`138 1234-5678` → `13812345678`).
pub fn phone_digits(phone: &str) -> String {
    normalize(phone)
        .chars()
        .filter(char::is_ascii_digit)
        .collect()
}

fn collect<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut text = String::new();
    for part in parts {
        let part = normalize(part);
        if part.is_empty() {
            continue;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&part);
        if text.len() >= MAX_TEXT_BYTES {
            break;
        }
    }
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The search text of an issue.
pub fn of_issue(view: IssueView) -> SearchText {
    let phone = phone_digits(&view.reporter.phone);
    let supervised = view.supervised;
    let activity_after_close = !view.activity_after_close.is_empty();
    let extension_requested = view.extension_requested;
    let v = policy::without_personal_data(view);
    let kind = v.kind.map(|k| k.as_str()).unwrap_or_default();
    let urgency = v.urgency.map(|u| u.as_str()).unwrap_or_default();
    let text = collect(
        [
            v.case_no.as_str(),
            v.external_ref.as_deref().unwrap_or_default(),
            v.title.as_str(),
            v.location.address.as_str(),
            v.location.building.as_str(),
            v.category.as_str(),
            kind,
            urgency,
            v.lead_unit.as_deref().unwrap_or_default(),
            v.description.as_str(),
            v.original_statement.as_str(),
            v.resolution_summary.as_str(),
            v.reply_to_citizen.as_str(),
        ]
        .into_iter()
        .chain(v.tags.iter().map(String::as_str))
        .chain(v.timeline.iter().map(|e| e.text.as_str()))
        .chain(v.return_visits.iter().map(|r| r.note.as_str())),
    );
    let work_order = normalize(v.external_ref.as_deref().unwrap_or_default());
    SearchText {
        text,
        phone,
        work_order,
        supervised,
        activity_after_close,
        extension_requested,
    }
}

/// The search text of a meeting.
pub fn of_meeting(view: MeetingView) -> SearchText {
    let v = policy::meeting_without_personal_data(view);
    let text = collect(
        [
            v.meeting_no.as_str(),
            v.topic.as_str(),
            v.venue.as_str(),
            v.group_ref.as_str(),
            v.location.address.as_str(),
            v.agenda.as_str(),
            v.minutes.as_str(),
        ]
        .into_iter()
        .chain(v.agreements.iter().map(|e| e.text.as_str()))
        .chain(v.legal_guidance.iter().map(|e| e.text.as_str()))
        .chain(v.action_items.iter().map(|a| a.text.as_str())),
    );
    SearchText {
        text,
        ..SearchText::default()
    }
}

/// 64-bit words of a [`Held`] signature: 1,024 bits.
const SIG_WORDS: usize = 16;

type Signature = [u64; SIG_WORDS];

fn set_feature(sig: &mut Signature, feature: u64) {
    let bit = (feature.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize;
    sig[bit / 64] |= 1 << (bit % 64);
}

/// Sets a bit for every character and every pair of adjacent characters
/// within a word of `text`.
fn add_features(sig: &mut Signature, text: &str) {
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if c == ' ' {
            prev = None;
            continue;
        }
        set_feature(sig, c as u64);
        if let Some(p) = prev {
            set_feature(sig, (1 << 63) | ((p as u64) << 32) | c as u64);
        }
        prev = Some(c);
    }
}

/// What a store holds in memory for each record's search: a signature
/// of the characters and character pairs in its text (1,024 bits, a
/// Bloom filter: a term whose bits are not all set cannot occur, so most
/// records are passed over without reading their text), the reporter's
/// phone as a key, the work-order number and the flags. The text itself
/// stays in the store (see `store/search.rs`): only the records a
/// signature lets through are read. About 170 bytes a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    sig: Signature,
    /// [`phone_key`] of the reporter's phone digits; 0: none.
    phone: u64,
    work_order: Box<str>,
    flags: u8,
}

const SUPERVISED: u8 = 1;
const ACTIVITY_AFTER_CLOSE: u8 = 2;
const EXTENSION_REQUESTED: u8 = 4;

/// [`Held`] as stored (bincode).
#[derive(Encode, Decode)]
struct StoredHeld {
    sig: [u8; SIG_WORDS * 8],
    phone: u64,
    work_order: String,
    flags: u8,
}

impl From<&SearchText> for Held {
    fn from(text: &SearchText) -> Held {
        let mut sig = [0; SIG_WORDS];
        add_features(&mut sig, &text.text);
        let mut flags = 0;
        for (set, flag) in [
            (text.supervised, SUPERVISED),
            (text.activity_after_close, ACTIVITY_AFTER_CLOSE),
            (text.extension_requested, EXTENSION_REQUESTED),
        ] {
            if set {
                flags |= flag;
            }
        }
        Held {
            sig,
            phone: phone_key(&text.phone),
            work_order: text.work_order.as_str().into(),
            flags,
        }
    }
}

impl Held {
    /// The 12345 work-order number, normalized (empty: none).
    pub fn work_order(&self) -> &str {
        &self.work_order
    }

    pub fn supervised(&self) -> bool {
        self.flags & SUPERVISED != 0
    }

    pub fn activity_after_close(&self) -> bool {
        self.flags & ACTIVITY_AFTER_CLOSE != 0
    }

    pub fn extension_requested(&self) -> bool {
        self.flags & EXTENSION_REQUESTED != 0
    }

    /// Whether the reporter's phone is the one `key` ([`phone_key`]) names.
    pub fn has_phone(&self, key: u64) -> bool {
        self.phone != 0 && self.phone == key
    }

    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut sig = [0u8; SIG_WORDS * 8];
        for (bytes, word) in sig.chunks_exact_mut(8).zip(&self.sig) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        bincode::encode_to_vec(
            StoredHeld {
                sig,
                phone: self.phone,
                work_order: self.work_order.to_string(),
                flags: self.flags,
            },
            bincode::config::standard(),
        )
        .map_err(|e| Error::Metadata(e.to_string()))
    }

    /// Reads the stored form (`None`: not one).
    pub fn decode(bytes: &[u8]) -> Option<Held> {
        let (stored, read) = bincode::decode_from_slice::<StoredHeld, _>(
            bytes,
            bincode::config::standard().with_limit::<{ 1 << 16 }>(),
        )
        .ok()?;
        if read != bytes.len() {
            return None;
        }
        let mut sig = [0; SIG_WORDS];
        for (word, bytes) in sig.iter_mut().zip(stored.sig.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().ok()?);
        }
        Some(Held {
            sig,
            phone: stored.phone,
            work_order: stored.work_order.into(),
            flags: stored.flags,
        })
    }
}

/// What a [`Held`] keeps of a phone number's digits: the first 8 bytes
/// of their SHA-256 (never 0; 0 for no digits). Two numbers share a key
/// with a probability of about 2^-64.
pub fn phone_key(digits: &str) -> u64 {
    if digits.is_empty() {
        return 0;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(digits.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first) | 1
}

/// Where a search reads the texts of the records the signatures let
/// through.
pub(crate) trait TextSource {
    /// Calls `found(i, text)` with the [`SearchText::text`] of `ids[i]`,
    /// for each of `ids` that has one kept.
    fn texts(&self, ids: &[crate::ids::RecordId], found: &mut dyn FnMut(usize, &str))
        -> Result<()>;
}

/// A query's search terms: every one must occur in a record's text.
#[derive(Clone, Debug, Default)]
pub struct Terms {
    finders: Vec<memchr::memmem::Finder<'static>>,
    /// The signature bits every term needs.
    mask: Signature,
}

impl Terms {
    /// Reads what was typed into the search box: terms separated by
    /// white space, at most [`MAX_QUERY_CHARS`] characters in all.
    pub fn parse(q: &str) -> Result<Terms> {
        if q.chars().count() > MAX_QUERY_CHARS {
            return Err(Error::InvalidInput {
                field: "q",
                reason: format!("a search is at most {MAX_QUERY_CHARS} characters"),
            });
        }
        let normalized = normalize(q);
        let mut terms: Vec<String> = Vec::new();
        for t in normalized.split(' ').filter(|t| !t.is_empty()) {
            if !terms.iter().any(|x| x == t) {
                terms.push(t.to_owned());
            }
        }
        // The longest first: it is the least likely to occur, and a
        // record fails at its first missing term.
        terms.sort_by_key(|t| std::cmp::Reverse(t.len()));
        let mut mask = [0; SIG_WORDS];
        for t in &terms {
            add_features(&mut mask, t);
        }
        Ok(Terms {
            finders: terms
                .iter()
                .map(|t| memchr::memmem::Finder::new(t.as_bytes()).into_owned())
                .collect(),
            mask,
        })
    }

    /// No terms: everything matches.
    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// Whether every term occurs in `text` (a [`SearchText::text`]).
    pub fn matches(&self, text: &str) -> bool {
        self.finders
            .iter()
            .all(|t| t.find(text.as_bytes()).is_some())
    }

    /// Whether the terms may occur in the text `held` was made from:
    /// `false` means they do not; `true` needs [`Terms::matches`] on the
    /// text to be sure.
    pub fn may_match(&self, held: &Held) -> bool {
        held.sig.iter().zip(&self.mask).all(|(s, m)| s & m == *m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_variants_fold_to_one_form() {
        assert_eq!(normalize("  幸福路１２号　3栋  "), "幸福路12号 3栋");
        assert_eq!(normalize("SRV-003001"), "srv-003001");
        assert_eq!(normalize("ＡＢＣ\tdef\n"), "abc def");
        assert_eq!(phone_digits("138 1234-5678"), "13812345678");
        assert_eq!(phone_digits("１３８１２３４５６７８"), "13812345678");
    }

    #[test]
    fn every_term_must_occur() {
        let text = normalize("楼道堆放杂物 电动车充电 幸福路12号 srv-003001");
        for (q, hit) in [
            ("楼道", true),
            ("电动车充电", true),
            ("幸福路12号", true),
            ("幸福路１２号", true),
            ("楼道 充电", true),
            ("楼道 漏水", false),
            ("SRV-003001", true),
            ("", true),
            ("   ", true),
        ] {
            assert_eq!(Terms::parse(q).unwrap().matches(&text), hit, "{q:?}");
        }
    }

    #[test]
    fn a_signature_never_rules_out_a_match() {
        let text = normalize("楼道堆放杂物 电动车充电 幸福路12号 srv-003001 a");
        let held = Held::from(&SearchText {
            text: text.clone(),
            ..SearchText::default()
        });
        for q in ["楼道", "车充", "12号", "srv-0030", "道", "a", "杂物 12"] {
            let terms = Terms::parse(q).unwrap();
            assert!(terms.matches(&text), "{q}");
            assert!(terms.may_match(&held), "{q}");
        }
        // Across a word boundary there is no pair: ruled out by the
        // signature alone.
        let terms = Terms::parse("物电").unwrap();
        assert!(!terms.matches(&text) && !terms.may_match(&held));
        assert!(!Terms::parse("漏水").unwrap().may_match(&held));
    }

    #[test]
    fn what_is_held_is_stored_and_read_back_whole() {
        let text = SearchText {
            text: normalize("楼道堆放杂物 幸福路12号"),
            phone: phone_digits("138 1234-5678"),
            work_order: "gd2026000123".into(),
            supervised: true,
            activity_after_close: false,
            extension_requested: true,
        };
        let held = Held::from(&text);
        assert_eq!(Held::decode(&held.encode().unwrap()), Some(held.clone()));
        assert!(held.supervised() && !held.activity_after_close() && held.extension_requested());
        assert_eq!(held.work_order(), "gd2026000123");
        assert!(held.has_phone(phone_key("13812345678")));
        assert!(!held.has_phone(phone_key("13812345679")));
        // No phone matches no key, not even the key of no digits.
        let none = Held::from(&SearchText::default());
        assert!(!none.has_phone(phone_key("")) && !held.has_phone(phone_key("")));
        // Bytes that are not a stored one, or have more after it, are refused.
        let mut longer = held.encode().unwrap();
        longer.push(0);
        assert_eq!(Held::decode(&longer), None);
        assert_eq!(Held::decode(b"\x01"), None);
    }

    #[test]
    fn a_too_long_search_is_refused() {
        let long = "楼".repeat(MAX_QUERY_CHARS + 1);
        assert_eq!(Terms::parse(&long).unwrap_err().code(), "invalid_input");
        let many = (0..60).map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
        assert!(many.chars().count() <= MAX_QUERY_CHARS);
        assert!(Terms::parse(&many).is_ok());
    }

    #[test]
    fn long_texts_keep_their_beginning_whole() {
        let long = "楼".repeat(MAX_TEXT_BYTES);
        let text = collect(["srv-1", long.as_str(), "漏水"]);
        assert!(text.len() <= MAX_TEXT_BYTES);
        assert!(text.starts_with("srv-1 楼"));
        assert!(!text.contains("漏水"));
    }
}
