//! Encryption at rest: what a phone's store leaves on its storage.
//!
//! The test writes records holding a resident's name, phone number, a
//! title and long notes on encrypted stores (one that creates them, one
//! that receives them through the server), then reads every byte of
//! every file under the stores looking for those texts in UTF-8, UTF-16
//! and inside anything that inflates as DEFLATE (Automerge compresses a
//! document's larger columns; zlib and gzip streams are DEFLATE after a
//! short header). The finder is shown to find each form, and to find the
//! texts in a plain store written the same way.

use std::io::Write;
use std::path::{Path, PathBuf};

use gridsync_core::files::FileHash;
use gridsync_core::{AttachTo, IssueOp, Reporter, Store, StoreConfig, StoreKey, TimelineKind};
use gridsync_tests::*;

const PHONE: &str = "13912345678";
const NAME: &str = "欧阳秀兰";
const TITLE: &str = "幸福路七号楼道电动车飞线充电";
/// Long enough, repeated in several notes, for Automerge to compress the
/// column that holds it when it saves the document.
const NOTE: &str = "Mrs Ouyang reports the charger cable through the stairwell window again";
/// In the attached photo's bytes.
const PHOTO: &str = "EXIF: stairwell of building 7, unit 302, Ouyang family";

fn secrets() -> Vec<&'static str> {
    vec![PHONE, NAME, TITLE, NOTE, PHOTO]
}

fn photo() -> Vec<u8> {
    let mut bytes = b"\xff\xd8\xff\xe1".to_vec();
    bytes.extend_from_slice(PHOTO.as_bytes());
    bytes.extend((0..300_000u32).map(|i| (i % 253) as u8));
    bytes
}

/// The forms a text is looked for in.
fn forms(text: &str) -> Vec<(&'static str, Vec<u8>)> {
    let le: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let be: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    vec![
        ("UTF-8", text.as_bytes().to_vec()),
        ("UTF-16LE", le),
        ("UTF-16BE", be),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// Every (file, text, form) found under `dir`: plain forms anywhere, and
/// any form inside whatever inflates from any offset.
fn findings(dir: &Path, texts: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let wanted: Vec<(&str, &str, Vec<u8>)> = texts
        .iter()
        .flat_map(|t| forms(t).into_iter().map(move |(f, b)| (*t, f, b)))
        .collect();
    let shortest = wanted.iter().map(|w| w.2.len()).min().unwrap_or(1);
    let mut found = Vec::new();
    let mut inflater = flate2::Decompress::new(false);
    let mut out = vec![0u8; 64 * 1024];
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let name = file.strip_prefix(dir).unwrap().display().to_string();
        for (text, form, pattern) in &wanted {
            if contains(&bytes, pattern) {
                found.push(format!("{name}: {text:?} as {form}"));
            }
        }
        for start in 0..bytes.len() {
            // Runs of zeros (sled's unused space) start no stream worth
            // reading: a stored block of length 0 inflates to nothing.
            if bytes[start] == 0 {
                continue;
            }
            inflater.reset(false);
            let _ = inflater.decompress(&bytes[start..], &mut out, flate2::FlushDecompress::Sync);
            let n = inflater.total_out() as usize;
            if n < shortest {
                continue;
            }
            for (text, form, pattern) in &wanted {
                if contains(&out[..n], pattern) {
                    found.push(format!(
                        "{name}: {text:?} as {form}, compressed at offset {start}"
                    ));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn config(path: &Path, code: &str, key: Option<&StoreKey>) -> StoreConfig {
    let mut config = StoreConfig::new(path, code);
    config.key = key.cloned();
    config
}

/// Records with the texts in them, written on `device` and synced through
/// `server` to `other`.
fn write_and_sync(device: &Store, other: &Store, server: &Store) {
    let author = worker(1);
    let mut new = new_issue(0, 1, 1);
    new.title = TITLE.into();
    new.reporter = Reporter {
        name: NAME.into(),
        phone: PHONE.into(),
        anonymous: false,
        may_call_back: true,
    };
    let id = device.create_issue(&author, new).unwrap();
    for i in 0..8 {
        device
            .update_issue(
                id,
                &author,
                IssueOp::AddTimeline {
                    kind: TimelineKind::Note,
                    text: format!("{NOTE} ({i}); {NOTE}"),
                },
            )
            .unwrap();
    }
    device
        .attach_file(
            AttachTo::Issue(id),
            &author,
            &mut &photo()[..],
            "image/jpeg",
            "楼道",
            None,
            1 << 22,
        )
        .unwrap();
    for i in 1..20 {
        device.create_issue(&author, new_issue(i, 1, 1)).unwrap();
    }
    sync_in_process(device, server, &["G1"]);
    sync_in_process(other, server, &["G1"]);
    assert_eq!(other.issue(id).unwrap().reporter.phone, PHONE);
}

#[test]
fn the_finder_finds_each_form_it_claims_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut plant = |bytes: &[u8], at: usize| {
        noise.splice(at..at, bytes.iter().copied());
    };
    plant(&forms(PHONE)[2].1, 100);
    let mut deflated = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflated.write_all(NOTE.repeat(3).as_bytes()).unwrap();
    plant(&deflated.finish().unwrap(), 2000);
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(forms(TITLE)[1].1.as_slice()).unwrap();
    plant(&zlib.finish().unwrap(), 3000);
    std::fs::write(dir.path().join("blob"), &noise).unwrap();
    let found = findings(dir.path(), &secrets());
    let has = |what: &str| found.iter().any(|f| f.contains(what));
    assert!(has(&format!("{PHONE:?} as UTF-16BE")), "{found:#?}");
    assert!(has(&format!("{NOTE:?} as UTF-8, compressed")), "{found:#?}");
    assert!(
        has(&format!("{TITLE:?} as UTF-16LE, compressed")),
        "{found:#?}"
    );
    assert!(!has(NAME), "{found:#?}");
}

#[test]
fn no_text_of_a_record_is_found_in_an_encrypted_stores_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = temp_store("SRV");

    // The same records on plain stores: the finder finds them there.
    let (plain_a, plain_b) = (dir.path().join("plain-a"), dir.path().join("plain-b"));
    let a = Store::open(config(&plain_a, "PA", None)).unwrap();
    let b = Store::open(config(&plain_b, "PB", None)).unwrap();
    write_and_sync(&a, &b, &server);
    drop((a, b));
    let found = findings(&plain_a, &secrets());
    for text in secrets() {
        assert!(
            found.iter().any(|f| f.contains(&format!("{text:?}"))),
            "{text} not found in a plain store: {found:#?}"
        );
    }
    assert!(!findings(&plain_b, &[PHONE]).is_empty());

    let key_a = StoreKey::generate().unwrap();
    let key_b = StoreKey::generate().unwrap();
    let (sealed_a, sealed_b) = (dir.path().join("sealed-a"), dir.path().join("sealed-b"));
    let a = Store::open(config(&sealed_a, "SA", Some(&key_a))).unwrap();
    let b = Store::open(config(&sealed_b, "SB", Some(&key_b))).unwrap();
    write_and_sync(&a, &b, &server);
    drop((a, b));
    for store in [&sealed_a, &sealed_b] {
        let found = findings(store, &secrets());
        assert!(found.is_empty(), "{}: {found:#?}", store.display());
    }

    // A plain store encrypted at open, then its key rotated: nothing of the
    // plain store or of the first key's values is left behind.
    let a = Store::open(config(&plain_a, "PA", Some(&key_a))).unwrap();
    assert_eq!(a.len().unwrap(), 20);
    drop(a);
    assert!(findings(&plain_a, &secrets()).is_empty());
    let mut rotate = config(&plain_a, "PA", Some(&key_b));
    rotate.previous_key = Some(key_a.clone());
    let a = Store::open(rotate).unwrap();
    a.verify().unwrap();
    // The photo came along, sealed under the new key.
    let hash = FileHash::of(&photo());
    assert_eq!(a.files().read_all(&hash, u64::MAX).unwrap(), photo());
    drop(a);
    assert!(findings(&plain_a, &secrets()).is_empty());
    let err = Store::open(config(&plain_a, "PA", Some(&key_a))).unwrap_err();
    assert_eq!(err.code(), "wrong_key");
}

#[test]
fn a_rotation_stopped_before_the_swap_leaves_the_store_under_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (old, new) = (StoreKey::generate().unwrap(), StoreKey::generate().unwrap());
    let store = Store::open(config(&path, "P1", Some(&old))).unwrap();
    let id = store.create_issue(&worker(1), new_issue(0, 1, 1)).unwrap();
    let head = store.log_head().unwrap();
    drop(store);
    let mut rotate = config(&path, "P1", Some(&new));
    rotate.previous_key = Some(old.clone());
    rotate.stop_rewrite_before_swap = true;
    assert!(Store::open(rotate.clone()).is_err());
    // The copy under the new key is complete beside the store, which still
    // opens with the old key only.
    let mut copy = path.clone().into_os_string();
    copy.push(".rewrite");
    assert!(Path::new(&copy).exists());
    assert_eq!(
        Store::open(config(&path, "P1", Some(&new)))
            .unwrap_err()
            .code(),
        "wrong_key"
    );
    let store = Store::open(config(&path, "P1", Some(&old))).unwrap();
    assert_eq!(store.log_head().unwrap(), head);
    drop(store);
    assert!(!Path::new(&copy).exists(), "the stale copy is discarded");
    rotate.stop_rewrite_before_swap = false;
    let store = Store::open(rotate).unwrap();
    assert_eq!(store.issue(id).unwrap().title, new_issue(0, 1, 1).title);
    assert_eq!(store.log_head().unwrap(), head);
}
