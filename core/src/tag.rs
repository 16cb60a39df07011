//! Tags on the server's own changes, so that the server can take them back
//! from a device after a restore.
//!
//! The office's actions and 12345 intake are changes the server itself
//! authors. When the server is restored from a backup, those made after
//! the backup are gone from it, but every device that pulled them still
//! holds them. A device may hand back only changes the server can tell
//! from forgeries: the server tags each change it makes with an HMAC-SHA256
//! of the change's content under a secret it keeps in its store (and so in
//! its backups), written into the change's message. A device re-offers
//! tagged changes after a restore; the server verifies the tag and takes
//! the change as its own.
//!
//! The tag cannot cover itself, so it covers the change as it would be
//! without the tag: the same operations, actor, sequence, dependencies and
//! time, and the message before the tag. Automerge encodes a change
//! deterministically from those fields, so the signer and the verifier
//! compute the same hash.

use automerge::{Change, ChangeHash, ExpandedChange};
use hmac::{KeyInit, Mac};

/// Separates the tag from the message it follows.
const MARK: &str = "\ngst1 ";
const DOMAIN: &[u8] = b"gridsync change tag v1\0";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The MAC over the change's untagged hash, ready to finalize or verify.
fn mac(key: &[u8; 32], untagged: ChangeHash) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(DOMAIN);
    mac.update(&untagged.0);
    mac
}

/// The change's fields with its message cut before any tag, and the tag
/// found (if any).
fn split(change: &Change) -> (ExpandedChange, Option<String>) {
    let mut expanded = change.decode();
    expanded.hash = None;
    let mut tag = None;
    if let Some(message) = &expanded.message {
        if let Some((before, t)) = message.rsplit_once(MARK) {
            tag = Some(t.to_owned());
            expanded.message = (!before.is_empty()).then(|| before.to_owned());
        }
    }
    (expanded, tag)
}

/// The change with its tag under `key` in its message (replacing any).
pub(crate) fn tag(key: &[u8; 32], change: &Change) -> Change {
    let (mut expanded, _) = split(change);
    let untagged = Change::from(expanded.clone()).hash();
    let base = expanded.message.take().unwrap_or_default();
    let tag = mac(key, untagged).finalize().into_bytes();
    expanded.message = Some(format!("{base}{MARK}{}", hex::encode(tag)));
    Change::from(expanded)
}

/// Whether the change carries a tag at all (a device cannot verify it).
pub(crate) fn is_tagged(change: &Change) -> bool {
    change.message().is_some_and(|m| m.contains(MARK))
}

/// Whether the change carries a valid tag under `key`.
pub(crate) fn verify(key: &[u8; 32], change: &Change) -> bool {
    let (expanded, tag) = split(change);
    let Some(tag) = tag else {
        return false;
    };
    let Ok(tag) = hex::decode(tag) else {
        return false;
    };
    let untagged = Change::from(expanded).hash();
    // Compared in constant time.
    mac(key, untagged).verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ReadDoc, ROOT};

    fn change_with(message: &str) -> (AutoCommit, Change) {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "title", "楼道灯不亮").unwrap();
        doc.commit_with(automerge::transaction::CommitOptions::default().with_message(message));
        let change = doc.get_last_local_change().unwrap().clone();
        (doc, change)
    }

    #[test]
    fn a_tagged_change_verifies_and_keeps_its_effect() {
        let key = [7u8; 32];
        let (_, change) = change_with("add_timeline by office (office)");
        assert!(!verify(&key, &change));
        let tagged = tag(&key, &change);
        assert!(is_tagged(&tagged));
        assert!(verify(&key, &tagged));
        assert!(!verify(&[8u8; 32], &tagged), "another key");
        assert!(tagged
            .message()
            .unwrap()
            .starts_with("add_timeline by office (office)"));
        // Same operations: a document built from the tagged change reads
        // the same.
        let mut doc = automerge::Automerge::new();
        doc.apply_changes([tagged.clone()]).unwrap();
        assert_eq!(
            doc.get(ROOT, "title").unwrap().unwrap().0.as_str(),
            Some("楼道灯不亮")
        );
        // Tagging again gives the same change.
        assert_eq!(tag(&key, &tagged).hash(), tagged.hash());
    }

    #[test]
    fn a_tag_moved_to_other_content_fails() {
        let key = [7u8; 32];
        let (_, a) = change_with("close by office (office)");
        let tagged = tag(&key, &a);
        let stolen = tagged.message().unwrap().rsplit_once(MARK).unwrap().1;
        let (_, b) = change_with(&format!("close by office (office){MARK}{stolen}"));
        assert!(!verify(&key, &b));
        let (_, c) = change_with("no tag here");
        assert!(!verify(&key, &c));
    }
}
