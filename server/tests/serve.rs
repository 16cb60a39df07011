//! The main job as README.md gives it: `gridsync serve` starts on a data
//! directory, answers `GET /healthz`, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_answers_healthz_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridsync"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("gridsync listening on "), "{first}");
    let banner = lines.next().unwrap().unwrap();
    let addr = gridsync_server::cli::address_in_banner(&banner)
        .unwrap()
        .to_owned();
    assert!(
        banner.contains(&dir.path().display().to_string()),
        "{banner}"
    );

    let response = get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""status":"ok""#), "{response}");
    assert!(get(&addr, "/nope").starts_with("HTTP/1.1 404"));

    #[allow(unsafe_code)]
    // SAFETY: signalling our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(rest[0].starts_with("admin token in "), "{rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("gridsync stopped"));
    assert!(dir.path().join("admin-token").exists());
    assert!(dir.path().join("store").join("db").exists());
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_gridsync"))
        .args(["serve", "--bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: gridsync serve"));
}

#[test]
fn healthz_says_starting_until_the_store_is_open() {
    // The store's opening (which migrates an older store format) is held
    // until the test lets it go: meanwhile every request gets 503
    // `starting` and the connection closes; then the same listener serves.
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let data = dir.path().to_owned();
    let server = runtime.spawn(async move {
        let state = gridsync_server::open_while_starting(&listener, None, move || {
            held.recv().unwrap();
            gridsync_server::open(&data, "admin")
        })
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(gridsync_server::run(listener, state, async {
            let _ = stopped.await;
        }));
        (stop, serving)
    });
    for path in ["/healthz", "/v1/sync"] {
        let response = get(&addr, path);
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(response.contains(r#""code":"starting""#), "{response}");
        assert!(response.to_ascii_lowercase().contains("connection: close"));
        assert!(response.to_ascii_lowercase().contains("retry-after: 5"));
    }
    release.send(()).unwrap();
    let (stop, serving) = runtime.block_on(server).unwrap();
    let response = get(&addr, "/healthz");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""status":"ok""#), "{response}");
    stop.send(()).unwrap();
    runtime.block_on(serving).unwrap().unwrap();
}
