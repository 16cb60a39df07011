//! A hotline platform for tests: a real HTTP/1.1 server in the test
//! process that takes gridsync's event POSTs and answers as a script says
//! — 200, 500, an answer later than the sender waits, a connection closed
//! without an answer, a permanent refusal — recording every request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 200: taken.
    Take,
    /// 500: the receiver failed; not taken.
    Fail,
    /// Taken, but answered 200 only after this long (later than the
    /// sender waits): the sender must try again, and the receiver sees a
    /// repeat.
    Slow(Duration),
    /// The connection closed with no answer; not taken.
    Hang,
    /// 422: refused for good; not taken.
    Refuse,
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub answer: Answer,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// Whether the receiver took it (answered 200, in time or late).
    pub fn taken(&self) -> bool {
        matches!(self.answer, Answer::Take | Answer::Slow(_))
    }
}

type Script = dyn Fn(usize, &serde_json::Value) -> Answer + Send + Sync;

/// The running receiver; it stops accepting when dropped.
pub struct Receiver {
    pub url: String,
    log: Arc<Mutex<Vec<Received>>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("url", &self.url).finish()
    }
}

impl Receiver {
    /// Starts a receiver on a free port; `script(n, body)` decides the
    /// answer to the `n`-th request (from 0).
    pub fn start(
        script: impl Fn(usize, &serde_json::Value) -> Answer + Send + Sync + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/events", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let counter = Arc::new(Mutex::new(0usize));
        let shared = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, script, counter) = (shared.clone(), script.clone(), counter.clone());
                std::thread::spawn(move || serve(stream, &log, &*script, &counter));
            }
        });
        Receiver { url, log }
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The requests taken so far, in arrival order.
    pub fn taken(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::taken)
            .collect()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, script: &Script, counter: &Mutex<usize>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let n = {
            let mut c = counter.lock().unwrap();
            *c += 1;
            *c - 1
        };
        let answer = script(n, &json);
        log.lock().unwrap().push(Received {
            headers,
            body,
            answer,
        });
        let reply = |w: &mut TcpStream, status: &str, text: &str| {
            let _ = write!(
                w,
                "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            let _ = w.flush();
        };
        match answer {
            Answer::Take => reply(&mut writer, "200 OK", "ok"),
            Answer::Fail => reply(&mut writer, "500 Internal Server Error", "down"),
            Answer::Refuse => reply(
                &mut writer,
                "422 Unprocessable Entity",
                "unknown work order",
            ),
            Answer::Slow(d) => {
                std::thread::sleep(d);
                reply(&mut writer, "200 OK", "ok");
                return;
            }
            Answer::Hang => {
                let _ = writer.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}
