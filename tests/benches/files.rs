//! File transfer over loopback HTTP against a real `gridsync serve`
//! process: throughput of a phone uploading 100 photos of 500 KB against
//! a raw HTTP upload of the same bytes to the same server process (the
//! baseline, measured in the same run), the resident memory both sides
//! grow by while 200 MB of files move, and what a transfer cut at 50 %
//! sends again. Prints a table.
//!
//! `cargo bench -p gridsync-tests --bench files` (run from `tests/`);
//! `-- --upload-only` stops after the throughput rows.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use gridsync_core::files::{FileHash, CHUNK_BYTES};
use gridsync_core::http::{fetch_file, upload_files, UPLOAD_STREAMS};
use gridsync_core::AttachTo;
use gridsync_tests::server::{TestDevice, TestServer};
use gridsync_tests::{cpu_ms, new_issue, peak_rss_kib, proc_file, rss_kib};

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

/// Where a baseline's raw upload goes.
#[derive(Clone, Copy)]
enum Raw {
    /// `/v1/sync`, which reads the whole body before it refuses it: the
    /// transport alone.
    Discarded,
    /// The test-only `/v1/test/raw-upload`, which writes the body to a
    /// file and makes it durable: the least an upload acknowledged only
    /// once durable must do.
    Durable,
}

/// A baseline: the same bytes POSTed raw, one request per photo, to the
/// same server process, `streams` requests in flight, each over a fresh
/// agent like the client's.
fn raw_upload(
    url: &str,
    device: &TestDevice,
    hashes: &[FileHash],
    to: Raw,
    streams: usize,
) -> Duration {
    let (path, expect) = match to {
        Raw::Discarded => ("/v1/sync", 400),
        Raw::Durable => ("/v1/test/raw-upload", 204),
    };
    let start = Instant::now();
    std::thread::scope(|s| {
        for part in hashes.chunks(hashes.len().div_ceil(streams)) {
            s.spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for hash in part {
                    let bytes = std::fs::read(device.store.files().path(hash)).unwrap();
                    let mut response = agent
                        .post(format!("{url}{path}"))
                        .header("Authorization", format!("Bearer {}", device.token))
                        .header("Content-Type", "application/octet-stream")
                        .send(&bytes[..])
                        .unwrap();
                    assert_eq!(response.status(), expect);
                    // Read to the end, so that the connection is kept.
                    response.body_mut().read_to_vec().unwrap();
                }
            });
        }
    });
    start.elapsed()
}

/// CPU milliseconds used by the server and by this process.
#[derive(Clone, Copy, Default)]
struct Cpu {
    server: f64,
    phone: f64,
}

impl Cpu {
    /// Runs `f`, adding what the server (`server`) and this process
    /// spent meanwhile.
    fn during<T>(&mut self, server: Option<u32>, f: impl FnOnce() -> T) -> T {
        let (s, p) = (cpu_ms(server), cpu_ms(None));
        let out = f();
        self.server += cpu_ms(server) - s;
        self.phone += cpu_ms(None) - p;
        out
    }

    /// Per upload, as a table cell.
    fn per(&self, uploads: f64) -> String {
        format!(
            "CPU per photo: server {:.2} ms, phone {:.2} ms",
            self.server / uploads,
            self.phone / uploads
        )
    }
}

/// Starts the peak resident memory (VmHWM) afresh at the current one.
fn reset_peak(pid: Option<u32>) {
    std::fs::write(proc_file(pid, "clear_refs"), "5").unwrap();
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

    // Throughput: 100 photos of 500 KB, five rounds, the baselines and
    // ours alternating within each round.
    let photos = 100;
    let size = 500_000;
    let streams = UPLOAD_STREAMS;
    let baselines = [
        ("discarded, one at a time", Raw::Discarded, 1),
        ("discarded, as many in flight", Raw::Discarded, streams),
        ("written durably, one at a time", Raw::Durable, 1),
        ("written durably, as many in flight", Raw::Durable, streams),
    ];
    let rounds = 5u64;
    let mut ours = Vec::new();
    let mut raw = vec![Vec::new(); baselines.len()];
    // CPU used by the server and by this process (the phone's side), per
    // way of uploading, over all rounds.
    let mut ours_cpu = Cpu::default();
    let mut raw_cpu = vec![Cpu::default(); baselines.len()];
    for round in 0..rounds {
        let hashes = attach_all(&phone, tmp.path(), photos, size, round + 1);
        phone.sync().unwrap();
        for ((times, cpu), (_, to, n)) in raw.iter_mut().zip(&mut raw_cpu).zip(baselines) {
            times.push(cpu.during(pid, || raw_upload(&server.url, &phone, &hashes, to, n)));
        }
        let (report, took) = ours_cpu.during(pid, || {
            let start = Instant::now();
            let report = upload_files(&phone.store, &phone.url, &phone.token, |_| {}).unwrap();
            (report, start.elapsed())
        });
        ours.push(took);
        assert_eq!(report.stored, photos);
    }
    let uploads = (rounds as usize * photos) as f64;
    let bytes = (photos * size) as u64;
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        mib_per_s(bytes, times[times.len() / 2])
    };
    let o = median(&mut ours);
    rows.push((
        format!(
            "upload, 100 photos of 500 KB (median of 5; ours with {streams} requests in flight)"
        ),
        format!("{o:.1} MiB/s; {}", ours_cpu.per(uploads)),
    ));
    for (((label, _, _), mut times), cpu) in baselines.into_iter().zip(raw).zip(raw_cpu) {
        let r = median(&mut times);
        rows.push((
            format!("  raw HTTP baseline, the same bytes {label}"),
            format!(
                "{r:.1} MiB/s: ours {:.2}x (goal >= 0.8); {}",
                o / r,
                cpu.per(uploads)
            ),
        ));
    }
    // What checking a photo against its name costs, alone: a floor under
    // the CPU an upload that verifies every file spends beyond a raw one.
    let path = tmp.path().join("hashed.jpg");
    write_photo(&path, size, 77);
    let photo = std::fs::read(&path).unwrap();
    let mut hashing: Vec<Duration> = (0..51)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(FileHash::of(std::hint::black_box(&photo)));
            start.elapsed()
        })
        .collect();
    hashing.sort();
    rows.push((
        "  SHA-256 of one 500 KB photo, in this process (median of 51)".into(),
        format!("{:.3} ms", hashing[hashing.len() / 2].as_secs_f64() * 1e3),
    ));
    if std::env::args().any(|a| a == "--upload-only") {
        print_table(rows);
        return;
    }

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

    print_table(rows);
}

fn print_table(rows: Vec<(String, String)>) {
    println!("\n| files (loopback HTTP, a real `gridsync serve`) | |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
