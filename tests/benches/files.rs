//! File transfer over loopback HTTP against a real `gridsync serve`
//! process: throughput of a phone uploading 100 photos of 500 KB against
//! a raw HTTP upload of the same bytes to the same server process (the
//! baseline, measured in the same run), the resident memory both sides
//! grow by while 200 MB of files move, and what a transfer cut at 50 %
//! sends again. Prints a table.
//!
//! `cargo bench -p gridsync-tests --bench files` (run from `tests/`).

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use gridsync_core::files::{FileHash, CHUNK_BYTES};
use gridsync_core::http::{fetch_file, upload_files};
use gridsync_core::AttachTo;
use gridsync_tests::server::{TestDevice, TestServer};
use gridsync_tests::{new_issue, peak_rss_kib, rss_kib};

const SERVER: &str = env!("CARGO_BIN_EXE_gridsync-under-test");

/// Writes `len` pseudo-random bytes (incompressible, like a JPEG) to
/// `path` without holding them in memory.
fn write_photo(path: &Path, len: usize, seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = [0u8; 8];
    for _ in 0..len.div_ceil(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.copy_from_slice(&x.to_le_bytes());
        f.write_all(&buf).unwrap();
    }
    drop(f);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len as u64)
        .unwrap();
}

fn attach_all(
    device: &TestDevice,
    dir: &Path,
    count: usize,
    len: usize,
    seed: u64,
) -> Vec<FileHash> {
    let id = device
        .store
        .create_issue(&device.author, new_issue(seed as usize, 1, 1))
        .unwrap();
    (0..count)
        .map(|n| {
            let path = dir.join(format!("photo-{seed}-{n}.jpg"));
            write_photo(&path, len, seed * 1_000 + n as u64);
            let mut f = std::fs::File::open(&path).unwrap();
            let file = device
                .store
                .attach_file(
                    AttachTo::Issue(id),
                    &device.author,
                    &mut f,
                    "image/jpeg",
                    "",
                    None,
                    20 << 20,
                )
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            FileHash::parse(&file.hash).unwrap()
        })
        .collect()
}

/// The baseline: the same bytes POSTed raw, one request per photo, to the
/// same server process (`/v1/sync` reads the whole body before it
/// refuses it), over a fresh agent like the client's.
fn raw_upload(url: &str, token: &str, device: &TestDevice, hashes: &[FileHash]) -> Duration {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = Instant::now();
    for hash in hashes {
        let bytes = std::fs::read(device.store.files().path(hash)).unwrap();
        let status = agent
            .post(format!("{url}/v1/sync"))
            .header("Authorization", format!("Bearer {token}"))
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .unwrap()
            .status();
        assert_eq!(status, 400);
    }
    start.elapsed()
}

/// Starts the peak resident memory (VmHWM) afresh at the current one.
fn reset_peak(pid: Option<u32>) {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/clear_refs"),
        None => "/proc/self/clear_refs".to_owned(),
    };
    std::fs::write(path, "5").unwrap();
}

/// [`raw_upload`] with two requests in flight, as our upload has.
fn raw_upload_two(url: &str, token: &str, device: &TestDevice, hashes: &[FileHash]) -> Duration {
    let start = Instant::now();
    let (a, b) = hashes.split_at(hashes.len() / 2);
    std::thread::scope(|s| {
        s.spawn(|| raw_upload(url, token, device, a));
        s.spawn(|| raw_upload(url, token, device, b));
    });
    start.elapsed()
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let tmp = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
    let data = tmp.path().join("server");
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    server.setup_org();
    let phone = server.enroll("w1", &tmp.path().join("phone"));
    let reader = server.enroll("w1", &tmp.path().join("reader"));
    let pid = server.pid();
    let mut rows: Vec<(String, String)> = Vec::new();

    // Throughput: 100 photos of 500 KB, five rounds each way, alternating.
    let photos = 100;
    let size = 500_000;
    let mut ours = Vec::new();
    let mut raw = Vec::new();
    let mut raw_two = Vec::new();
    for round in 0..5u64 {
        let hashes = attach_all(&phone, tmp.path(), photos, size, round + 1);
        phone.sync().unwrap();
        raw.push(raw_upload(&server.url, &phone.token, &phone, &hashes));
        raw_two.push(raw_upload_two(&server.url, &phone.token, &phone, &hashes));
        let start = Instant::now();
        let report = upload_files(&phone.store, &phone.url, &phone.token, |_| {}).unwrap();
        ours.push(start.elapsed());
        assert_eq!(report.stored, photos);
    }
    ours.sort();
    raw.sort();
    raw_two.sort();
    let bytes = (photos * size) as u64;
    let (o, r) = (mib_per_s(bytes, ours[2]), mib_per_s(bytes, raw[2]));
    let r2 = mib_per_s(bytes, raw_two[2]);
    rows.push((
        "upload, 100 photos of 500 KB (median of 5; ours with 2 requests in flight)".into(),
        format!(
            "{o:.1} MiB/s; raw HTTP one request at a time {r:.1} MiB/s: {:.2}x (goal >= 0.8); \
             raw with two in flight {r2:.1} MiB/s: {:.2}x",
            o / r,
            o / r2
        ),
    ));

    // Memory: 200 MB up from one phone and down to another.
    reset_peak(pid);
    reset_peak(None);
    let server_before = rss_kib(pid);
    let phone_before = rss_kib(None);
    let big = attach_all(&phone, tmp.path(), 10, 20_000_000, 99);
    phone.sync().unwrap();
    let start = Instant::now();
    upload_files(&phone.store, &phone.url, &phone.token, |_| {}).unwrap();
    let up = start.elapsed();
    reader.sync().unwrap();
    let start = Instant::now();
    for hash in &big {
        fetch_file(
            &reader.store,
            &reader.url,
            &reader.token,
            hash,
            20_000_000,
            |_, _| {},
        )
        .unwrap();
    }
    let down = start.elapsed();
    let server_growth = peak_rss_kib(pid).saturating_sub(server_before);
    let phone_growth = peak_rss_kib(None).saturating_sub(phone_before);
    rows.push((
        "200 MB up, then down to a second phone".into(),
        format!(
            "{:.1} MiB/s up, {:.1} MiB/s down",
            mib_per_s(200_000_000, up),
            mib_per_s(200_000_000, down)
        ),
    ));
    rows.push((
        "resident memory growth meanwhile (goal < 32 MiB each)".into(),
        format!(
            "server {:.1} MiB, phones' process {:.1} MiB",
            server_growth as f64 / 1024.0,
            phone_growth as f64 / 1024.0
        ),
    ));

    // A transfer cut at 50 %: the server killed (-9) once half the chunks
    // are acknowledged, started again, the upload resumed.
    let cut = attach_all(&phone, tmp.path(), 1, 20_000_000, 7);
    phone.sync().unwrap();
    let chunks = gridsync_core::files::chunk_count(20_000_000);
    let pid_text = pid.unwrap().to_string();
    let first = upload_files(&phone.store, &phone.url, &phone.token, |sent| {
        if sent == chunks as usize / 2 {
            std::process::Command::new("kill")
                .args(["-9", &pid_text])
                .status()
                .unwrap();
        }
    });
    assert!(first.is_err());
    server.kill();
    let server = TestServer::spawn(SERVER, &data, "127.0.0.1:0");
    let resumed = upload_files(&phone.store, &server.url, &phone.token, |_| {}).unwrap();
    assert_eq!(resumed.stored, 1);
    let again = resumed.chunks_sent as i64 - (chunks as i64 - chunks as i64 / 2);
    rows.push((
        "a 20 MB upload cut at 50 % by kill -9 of the server".into(),
        format!(
            "{} of {chunks} chunks sent after the restart: {} chunk(s), {} bytes again (goal <= one chunk, {CHUNK_BYTES} bytes)",
            resumed.chunks_sent,
            again,
            again.max(0) as usize * CHUNK_BYTES
        ),
    ));
    assert!(server.store.is_none());
    assert_eq!(cut.len(), 1);
    drop(server);

    println!("\n| files (loopback HTTP, a real `gridsync serve`) | |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
