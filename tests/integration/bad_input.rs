//! Bad input gets a typed error and changes nothing; damaged data on disk
//! costs one record, never the store.

use automerge::transaction::Transactable;
use gridsync_core::doc::MAX_SHORT;
use gridsync_core::{Error, ForeignLimits, IssueOp, IssueStatus, RecordId, Store, StoreConfig};
use gridsync_tests::*;

/// Everything observable about a store, to show that a refused input
/// changed nothing.
fn fingerprint(store: &Store) -> impl PartialEq + std::fmt::Debug {
    (
        gridsync_tests::fingerprint(store),
        store.pending().unwrap().len(),
    )
}

fn store_with_issue() -> (Store, RecordId) {
    let store = temp_store("D1");
    let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    (store, id)
}

#[test]
fn unknown_ids_are_not_found() {
    let (store, _) = store_with_issue();
    let before = fingerprint(&store);
    let ghost = RecordId::new();
    assert!(matches!(store.issue(ghost), Err(Error::NotFound(id)) if id == ghost));
    let err = store
        .update_issue(ghost, &worker(1), IssueOp::SetTitle("x".into()))
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert!(matches!(
        store.changes_since(ghost, &[]),
        Err(Error::NotFound(_))
    ));
    assert_eq!(fingerprint(&store), before);
}

#[test]
fn oversized_fields_are_refused() {
    let (store, id) = store_with_issue();
    // Counted in characters (as the API's maxLength): MAX_SHORT of them
    // are taken, one more is not.
    let fits = "长".repeat(MAX_SHORT);
    store
        .update_issue(id, &worker(1), IssueOp::SetTitle(fits.clone()))
        .unwrap();
    let before = fingerprint(&store);
    let long = format!("{fits}长");
    let err = store
        .update_issue(id, &worker(1), IssueOp::SetTitle(long))
        .unwrap_err();
    assert!(
        matches!(err, Error::FieldTooLong { field: "title", .. }),
        "{err}"
    );
    let mut issue = new_issue(2, 1, 1);
    issue.description = "x".repeat(gridsync_core::doc::MAX_TEXT + 1);
    assert!(matches!(
        store.create_issue(&worker(1), issue),
        Err(Error::FieldTooLong {
            field: "description",
            ..
        })
    ));
    assert_eq!(fingerprint(&store), before);
}

#[test]
fn refused_operations_leave_the_record_usable() {
    let (store, id) = store_with_issue();
    let before = fingerprint(&store);
    for to in [
        IssueStatus::Closed,
        IssueStatus::Handled,
        IssueStatus::Draft,
        IssueStatus::Reopened,
    ] {
        let err = advance(&store, id, to).unwrap_err();
        assert_eq!(err.code(), "illegal_transition");
    }
    let err = store
        .update_issue(
            id,
            &worker(1),
            IssueOp::ResolveStatusConflict {
                to: IssueStatus::Closed,
                reason: String::new(),
            },
        )
        .unwrap_err();
    assert_eq!(err.code(), "no_conflict");
    let err = store
        .update_issue(
            id,
            &worker(1),
            IssueOp::AddAttachment(gridsync_core::AttachmentRef {
                hash: "not-a-hash".into(),
                mime: "image/jpeg".into(),
                size: 1,
                caption: String::new(),
                geo: None,
            }),
        )
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert_eq!(fingerprint(&store), before);
    store
        .update_issue(
            id,
            &worker(1),
            IssueOp::Transition {
                to: IssueStatus::Accepted,
                reason: String::new(),
            },
        )
        .unwrap();
}

#[test]
fn malformed_change_bytes_are_refused_and_change_nothing() {
    let (store, id) = store_with_issue();
    let other = temp_store("D2");
    let other_id = other.create_issue(&worker(2), new_issue(2, 1, 1)).unwrap();
    let good = other.changes_since(other_id, &[]).unwrap();
    let before = fingerprint(&store);
    let limits = ForeignLimits::default();

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"definitely not automerge".to_vec()),
        ("empty header", vec![0x85, 0x6f, 0x4a, 0x83]),
        ("truncated", good[..good.len() / 2].to_vec()),
    ];
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    cases.push(("bit flip", flipped));
    let mut compressed = good.clone();
    compressed[8] = 2;
    cases.push(("compressed chunk", compressed));
    let mut doc_chunk = good.clone();
    doc_chunk[8] = 0;
    cases.push(("document chunk", doc_chunk));
    let mut valid_then_garbage = good.clone();
    valid_then_garbage.extend_from_slice(b"trailing junk!");
    cases.push(("valid then garbage", valid_then_garbage));

    for (name, bytes) in &cases {
        for target in [id, other_id, RecordId::new()] {
            let err = store.apply_changes(target, bytes, &limits).unwrap_err();
            assert_eq!(err.code(), "malformed_changes", "{name}: {err}");
        }
    }
    assert_eq!(
        fingerprint(&store),
        before,
        "nothing of a refused input was applied"
    );

    // Oversized input and too many changes.
    let big = vec![0u8; limits.max_bytes + 1];
    assert_eq!(
        store.apply_changes(id, &big, &limits).unwrap_err().code(),
        "malformed_changes"
    );
    let tight = ForeignLimits {
        max_changes: 1,
        ..ForeignLimits::default()
    };
    let mut two = store.changes_since(id, &[]).unwrap();
    store
        .update_issue(id, &worker(1), IssueOp::SetTitle("t".into()))
        .unwrap();
    two = [two, store.changes_since(id, &[]).unwrap()].concat();
    assert_eq!(
        other.apply_changes(id, &two, &tight).unwrap_err().code(),
        "malformed_changes"
    );
}

#[test]
fn changes_with_missing_dependencies_are_refused() {
    let a = temp_store("A");
    let b = temp_store("B");
    let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    let first = a.heads(id).unwrap();
    a.update_issue(id, &worker(1), IssueOp::SetTitle("second".into()))
        .unwrap();
    // Only the second change, without the creation it depends on.
    let tail = a.changes_since(id, &first).unwrap();
    let err = b
        .apply_changes(id, &tail, &ForeignLimits::default())
        .unwrap_err();
    assert!(matches!(err, Error::MissingDependencies { .. }), "{err}");
    assert!(b.is_empty().unwrap());
    assert_eq!(b.log_head().unwrap(), 0);
    // Sent in full, it merges.
    sync_all(&[&a, &b]);
    assert_eq!(b.issue(id).unwrap().title, "second");
}

#[test]
fn foreign_documents_that_are_not_records_are_refused() {
    let store = temp_store("D1");
    let mut doc = automerge::AutoCommit::new();
    doc.put(automerge::ROOT, "hello", "world").unwrap();
    let bytes = doc.save_incremental();
    let err = store
        .apply_changes(RecordId::new(), &bytes, &ForeignLimits::default())
        .unwrap_err();
    assert_eq!(err.code(), "malformed_changes");
    assert!(store.is_empty().unwrap());

    // A valid record pushed under another id is refused too.
    let other = temp_store("D2");
    let id = other.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    let bytes = other.changes_since(id, &[]).unwrap();
    let err = store
        .apply_changes(RecordId::new(), &bytes, &ForeignLimits::default())
        .unwrap_err();
    assert_eq!(err.code(), "malformed_changes");
}

#[test]
fn a_change_that_turns_an_issue_into_a_meeting_is_refused() {
    let a = temp_store("A");
    let b = temp_store("B");
    let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    sync_all(&[&a, &b]);
    let mut doc = automerge::AutoCommit::load(&a.snapshot(id).unwrap()).unwrap();
    let heads = doc.get_heads();
    doc.put(automerge::ROOT, "type", "meeting").unwrap();
    let hostile = doc.save_after(&heads);
    let before = fingerprint(&b);
    let err = b
        .apply_changes(id, &hostile, &ForeignLimits::default())
        .unwrap_err();
    assert_eq!(err.code(), "malformed_changes");
    assert_eq!(fingerprint(&b), before);
    assert!(b.issue(id).is_ok());
}

#[test]
fn snapshots_that_do_not_parse_are_refused() {
    let (store, id) = store_with_issue();
    let before = fingerprint(&store);
    let mut snap = store.snapshot(id).unwrap();
    snap.truncate(snap.len() - 5);
    assert_eq!(
        store.apply_snapshot(id, &snap).unwrap_err().code(),
        "malformed_changes"
    );
    assert_eq!(
        store.apply_snapshot(id, b"junk").unwrap_err().code(),
        "malformed_changes"
    );
    assert_eq!(fingerprint(&store), before);
    // A good snapshot of a newer state merges and keeps local edits.
    let other = temp_store("D2");
    other
        .apply_snapshot(id, &store.snapshot(id).unwrap())
        .unwrap();
    other
        .update_issue(id, &office(), IssueOp::SetCategory("roads".into()))
        .unwrap();
    store
        .update_issue(id, &worker(1), IssueOp::SetTitle("local".into()))
        .unwrap();
    store
        .apply_snapshot(id, &other.snapshot(id).unwrap())
        .unwrap();
    let v = store.issue(id).unwrap();
    assert_eq!((v.title.as_str(), v.category.as_str()), ("local", "roads"));
}

#[test]
fn a_corrupt_record_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = {
        let store = open_store(dir.path(), "D1");
        let good = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        let bad = store.create_issue(&worker(1), new_issue(2, 1, 1)).unwrap();
        (good, bad)
    };
    {
        let db = raw_sled(dir.path());
        let mut k = vec![b'd'];
        k.extend_from_slice(bad.as_bytes());
        let mut snap = db.get(&k).unwrap().unwrap().to_vec();
        let len = snap.len();
        snap.truncate(len / 2); // a torn write
        db.insert(&k, snap).unwrap();
        db.flush().unwrap();
    }
    let store = open_store(dir.path(), "D1");
    assert!(store.issue(good).is_ok());
    let err = store.issue(bad).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { id, .. } if id == bad),
        "{err}"
    );
    let err = store
        .update_issue(bad, &worker(1), IssueOp::SetTitle("x".into()))
        .unwrap_err();
    assert_eq!(err.code(), "corrupt_record");
    // Queries still see both (the index is intact) and the good one works.
    assert_eq!(store.len().unwrap(), 2);
    store
        .update_issue(good, &worker(1), IssueOp::SetTitle("fine".into()))
        .unwrap();
}

#[test]
fn a_damaged_index_entry_is_rebuilt_from_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = open_store(dir.path(), "D1");
        store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap()
    };
    {
        let db = raw_sled(dir.path());
        let mut k = vec![b'i'];
        k.extend_from_slice(id.as_bytes());
        db.insert(&k, b"\xff\xff\xff not an index entry".to_vec())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open_store(dir.path(), "D1");
    assert!(store.corrupt_records().unwrap().is_empty());
    assert_eq!(store.meta(id).unwrap().unwrap().grid, "G1");
}

#[test]
fn a_store_sled_refuses_is_moved_aside_not_deleted() {
    let parent = tempfile::tempdir().unwrap();
    let path = parent.path().join("store");
    {
        let store = open_store(&path, "D1");
        store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    }
    // Damage sled's own files.
    let data = path.join("db");
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, vec![0xA5u8; len.max(4096)]).unwrap();
    std::fs::write(path.join("conf"), b"segment_size: banana\n").unwrap();
    let err = Store::open(StoreConfig::new(&path, "D1")).unwrap_err();
    let Error::StoreMovedAside { moved_to, .. } = &err else {
        panic!("expected the store to be moved aside, got {err}");
    };
    assert!(
        std::path::Path::new(moved_to).join("db").exists(),
        "the damaged files are kept"
    );
    // The next open starts fresh.
    let store = open_store(&path, "D1");
    assert!(store.is_empty().unwrap());
}

#[test]
fn a_store_open_elsewhere_is_not_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), "D1");
    let id = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    let err = Store::open(StoreConfig::new(dir.path(), "D1")).unwrap_err();
    assert!(!matches!(err, Error::StoreMovedAside { .. }), "{err}");
    assert!(dir.path().join("db").exists());
    assert!(store.issue(id).is_ok());
}

/// Recomputes an Automerge chunk's checksum after its body was altered, so
/// the mutation reaches Automerge's decoder instead of our checksum check.
fn fix_checksum(chunk: &mut [u8]) {
    use sha2::Digest;
    // The checksum covers the chunk type, the length and the body.
    let digest = sha2::Sha256::digest(&chunk[8..]);
    chunk[4..8].copy_from_slice(&digest[..4]);
}

#[test]
fn automerge_panics_on_hostile_changes_are_caught_and_change_nothing() {
    // A real panic inside Automerge 0.12: a change that names, among the
    // other actors its operations refer to, an actor the document has never
    // seen makes `apply_changes` unwrap a failed lookup. Our shape checks
    // cannot see this (the bytes are a well-formed change with a correct
    // checksum), so the merge guard must catch it.
    let a = temp_store("A");
    let b = temp_store("B");
    let id = a.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
    sync_all(&[&a, &b]);
    let base = b.heads(id).unwrap();
    b.update_issue(id, &worker(2), IssueOp::SetTitle("改过的标题".into()))
        .unwrap();
    let change = b.changes_since(id, &base).unwrap();
    assert_eq!(split_changes(&change).len(), 1);

    // The change refers to A's operations, so A's actor is among its other
    // actors. Alter one byte of that actor id and re-seal the chunk.
    let parsed = automerge::Change::from_bytes(change.clone()).unwrap();
    let other = parsed.other_actor_ids()[0].to_bytes().to_vec();
    assert_eq!(other, a.actor().to_bytes());
    let at = change
        .windows(other.len())
        .rposition(|w| w == other.as_slice())
        .unwrap();
    let mut hostile = change.clone();
    hostile[at + other.len() - 1] ^= 0x01;
    fix_checksum(&mut hostile);

    let before = fingerprint(&a);
    let err = a
        .apply_changes(id, &hostile, &ForeignLimits::default())
        .unwrap_err();
    assert!(matches!(err, Error::MergePanicked(x) if x == id), "{err}");
    assert_eq!(fingerprint(&a), before, "the record is as it was");
    // The store and the record keep working, and the genuine change merges.
    assert_eq!(a.issue(id).unwrap().title, new_issue(1, 1, 1).title);
    a.apply_changes(id, &change, &ForeignLimits::default())
        .unwrap();
    assert_eq!(a.issue(id).unwrap().title, "改过的标题");
}

#[test]
fn verify_reports_a_change_missing_from_the_log_and_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = open_store(dir.path(), "D1");
        let a = store.create_issue(&worker(1), new_issue(1, 1, 1)).unwrap();
        add_note(&store, a, &worker(1), "记录");
        let b = store.create_issue(&worker(1), new_issue(2, 1, 1)).unwrap();
        assert_eq!(store.verify().unwrap(), Vec::<String>::new());
        (a, b)
    };
    {
        let db = raw_sled(dir.path());
        // Lose the log entry of the note (the second entry of the log).
        let (k, _) = db.scan_prefix(b"l").nth(1).unwrap().unwrap();
        db.remove(k).unwrap();
        let mut k = vec![b'd'];
        k.extend_from_slice(b.as_bytes());
        let mut snap = db.get(&k).unwrap().unwrap().to_vec();
        snap.truncate(snap.len() / 2);
        db.insert(&k, snap).unwrap();
        db.flush().unwrap();
    }
    let store = open_store(dir.path(), "D1");
    let problems = store.verify().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("{a}")) && problems[0].contains("not in the log"),
        "{problems:?}"
    );
    assert!(
        problems[1].starts_with(&format!("{b}")) && problems[1].contains("unreadable"),
        "{problems:?}"
    );
}
