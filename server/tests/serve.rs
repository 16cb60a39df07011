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
