//! A real server for tests: in process on port 0, or as a child process
//! that can be killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use gridsync_core::{Store, StoreConfig};

/// The admin token every test server uses.
pub const ADMIN: &str = "test-admin-token";

/// A running server.
pub struct TestServer {
    pub url: String,
    /// The server's store (in-process servers only), for inspection.
    pub store: Option<std::sync::Arc<Store>>,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    child: Option<Child>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("url", &self.url)
            .finish()
    }
}

impl TestServer {
    /// Starts a server in this process on a free port.
    pub fn start(data_dir: &Path) -> TestServer {
        Self::start_with(data_dir, None, |_| {})
    }

    /// Starts a server in this process with its state adjusted first
    /// (limits, say).
    pub fn start_configured(
        data_dir: &Path,
        configure: impl FnOnce(&mut gridsync_server::AppState),
    ) -> TestServer {
        Self::start_with(data_dir, None, configure)
    }

    /// Starts a server in this process on a free port, serving HTTPS with
    /// the given certificate and key (its URL is `https://127.0.0.1:…`).
    pub fn start_tls(data_dir: &Path, tls: &gridsync_server::TlsFiles) -> TestServer {
        Self::start_with(data_dir, Some(tls), |_| {})
    }

    fn start_with(
        data_dir: &Path,
        tls: Option<&gridsync_server::TlsFiles>,
        configure: impl FnOnce(&mut gridsync_server::AppState),
    ) -> TestServer {
        let acceptor = tls.map(|t| gridsync_server::tls_acceptor(t).unwrap());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let engine = crate::engine::engine_for(data_dir);
        let mut state = gridsync_server::open_on(&engine, data_dir, ADMIN).unwrap();
        configure(&mut state);
        let store = state.store.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                gridsync_server::run_tls(listener, state, acceptor, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        TestServer {
            url: format!("{scheme}://{addr}"),
            store: Some(store),
            data_dir: data_dir.to_owned(),
            shutdown: Some(tx),
            thread: Some(thread),
            child: None,
        }
    }

    /// Starts the real `gridsync serve` as a child process.
    pub fn spawn(exe: &str, data_dir: &Path, listen: &str) -> TestServer {
        Self::spawn_logging(exe, data_dir, listen, None)
    }

    /// Like [`TestServer::spawn`]; with `log`, the server logs at debug
    /// level into that file.
    pub fn spawn_logging(
        exe: &str,
        data_dir: &Path,
        listen: &str,
        log: Option<&Path>,
    ) -> TestServer {
        Self::spawn_with(exe, data_dir, listen, log, &[])
    }

    /// Like [`TestServer::spawn_logging`], with more arguments for `serve`.
    pub fn spawn_with(
        exe: &str,
        data_dir: &Path,
        listen: &str,
        log: Option<&Path>,
        extra: &[&str],
    ) -> TestServer {
        let mut command = Command::new(exe);
        command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("GRIDSYNC_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", if log.is_some() { "debug" } else { "warn" })
            .stdout(Stdio::piped());
        if let gridsync_core::store::backend::Engine::Postgres(url) =
            crate::engine::engine_for(data_dir)
        {
            command.args(["--database", &url]);
        }
        if let Some(path) = log {
            command.stderr(std::fs::File::create(path).unwrap());
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The banner comes once the store is open (after a line saying the
        // server listens and opens its data).
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| gridsync_server::cli::address_in_banner(&line).map(str::to_owned))
            .expect("the server printed no banner");
        // Keep draining stdout so the child never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        TestServer {
            url: format!("http://{addr}"),
            store: None,
            data_dir: data_dir.to_owned(),
            shutdown: None,
            thread: None,
            child: Some(child),
        }
    }

    /// The process id of a child-process server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM to a child-process server and returns at once; the
    /// child is waited for on drop.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            #[allow(unsafe_code)]
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
    }

    /// Waits for a child-process server to exit; its exit code.
    pub fn wait(mut self) -> Option<i32> {
        self.child.take().and_then(|mut c| c.wait().ok()?.code())
    }

    /// Kills a child-process server with SIGKILL.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            #[allow(unsafe_code)]
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// Stops the server (gracefully).
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut c) = self.child.take() {
            #[allow(unsafe_code)]
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// POSTs JSON with the admin token; returns status and body.
    pub fn admin(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        post_json(&format!("{}{path}", self.url), Some(ADMIN), body)
    }

    /// Creates street S1, community C1 with grids G1 and G2, and workers
    /// `w1` (G1), `w2` (G2) and `office` (all of C1).
    pub fn setup_org(&self) {
        let ok =
            |(status, body): (u16, serde_json::Value)| assert!(status < 300, "{status} {body}");
        ok(self.admin(
            "/v1/admin/streets",
            serde_json::json!({"id": "S1", "name": "幸福街道"}),
        ));
        ok(self.admin(
            "/v1/admin/communities",
            serde_json::json!({"id": "C1", "street": "S1"}),
        ));
        for g in ["G1", "G2"] {
            ok(self.admin(
                "/v1/admin/grids",
                serde_json::json!({"id": g, "community": "C1"}),
            ));
        }
        ok(self.admin(
            "/v1/admin/workers",
            serde_json::json!({"id": "w1", "grids": ["G1"]}),
        ));
        ok(self.admin(
            "/v1/admin/workers",
            serde_json::json!({"id": "w2", "grids": ["G2"]}),
        ));
        ok(self.admin(
            "/v1/admin/workers",
            serde_json::json!({"id": "office", "communities": ["C1"]}),
        ));
    }

    /// Creates an office login for `worker` in `role`; returns its token.
    pub fn office_token(&self, worker: &str, role: &str) -> String {
        let (status, body) = self.admin(
            "/v1/admin/office-users",
            serde_json::json!({"worker": worker, "role": role}),
        );
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// GETs `path` with an office token.
    pub fn office_get(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        get_json(&format!("{}{path}", self.url), Some(token))
    }

    /// POSTs JSON to `path` with an office token.
    pub fn office_post(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        post_json(&format!("{}{path}", self.url), Some(token), body)
    }

    /// Enrolls a new device of `worker` with a store in `dir`.
    pub fn enroll(&self, worker: &str, dir: &Path) -> TestDevice {
        let (status, body) = self.admin(
            "/v1/admin/enrollments",
            serde_json::json!({"worker": worker}),
        );
        assert_eq!(status, 200, "{body}");
        let code = body["code"].as_str().unwrap().to_owned();
        let mut config = StoreConfig::new(dir, "NEW");
        config.durability = gridsync_core::Durability::Flush;
        let store = Store::open(config).unwrap();
        let enrollment = gridsync_core::http::enroll(&self.url, &code, &store).unwrap();
        drop(store);
        let mut config = StoreConfig::new(dir, enrollment.device_code.clone());
        config.durability = gridsync_core::Durability::Flush;
        TestDevice {
            store: Store::open(config).unwrap(),
            author: gridsync_core::Author::new(enrollment.worker, enrollment.role),
            token: enrollment.token,
            id: enrollment.device_id,
            url: self.url.clone(),
        }
    }
}

impl TestServer {
    /// The server store's log head and every record's heads.
    pub fn fingerprint(
        &self,
    ) -> (
        u64,
        Vec<(gridsync_core::RecordId, Vec<gridsync_core::ChangeHash>)>,
    ) {
        crate::fingerprint(self.store.as_ref().expect("an in-process server"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// An enrolled device.
#[derive(Debug)]
pub struct TestDevice {
    pub store: Store,
    /// Who the server knows this device to act for, as enrollment said.
    pub author: gridsync_core::Author,
    pub token: String,
    pub id: String,
    pub url: String,
}

impl TestDevice {
    /// Syncs over HTTP until done.
    pub fn sync(&self) -> gridsync_core::Result<gridsync_core::sync::SyncReport> {
        gridsync_core::http::sync(&self.store, &self.url, &self.token)
    }
}

/// POSTs JSON, returns status and body (any status).
pub fn post_json(
    url: &str,
    bearer: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    send_json(test_agent().post(url), bearer, &body)
}

/// Sends a JSON body; returns status and body (any status).
fn send_json(
    req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut req = req.header("Content-Type", "application/json");
    if let Some(b) = bearer {
        req = req.header("Authorization", format!("Bearer {b}"));
    }
    let mut resp = req.send(body.to_string()).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The tests' own HTTP client: any status is an answer, and a test
/// server's self-signed certificate is accepted (what devices verify is
/// tested through `gridsync_core::http`, which does verify).
fn test_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .disable_verification(true)
                .build(),
        )
        .build()
        .into()
}

/// GETs JSON, returns status and body (any status).
pub fn get_json(url: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    call_json(test_agent().get(url), bearer)
}

/// Sends a request without a body; returns status and JSON body (any
/// status).
fn call_json(
    mut req: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
    bearer: Option<&str>,
) -> (u16, serde_json::Value) {
    if let Some(b) = bearer {
        req = req.header("Authorization", format!("Bearer {b}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// POSTs raw bytes to the sync endpoint; returns status and body.
pub fn post_raw(url: &str, bearer: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
    let agent = test_agent();
    let mut req = agent
        .post(format!("{url}/v1/sync"))
        .header("Content-Type", "application/octet-stream");
    if let Some(b) = bearer {
        req = req.header("Authorization", format!("Bearer {b}"));
    }
    match req.send(body) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .unwrap_or_default();
            (status, bytes)
        }
        // The server may close the connection on an oversized body.
        Err(e) => (0, e.to_string().into_bytes()),
    }
}

/// POSTs raw bytes of a content type; returns status and JSON body.
pub fn post_bytes(
    url: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let agent = test_agent();
    let mut req = agent.post(url).header("Content-Type", content_type);
    if let Some(b) = bearer {
        req = req.header("Authorization", format!("Bearer {b}"));
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// PUTs raw bytes with extra headers; returns status and JSON body.
pub fn put_bytes(
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, serde_json::Value) {
    let agent = test_agent();
    let mut req = agent
        .put(url)
        .header("Content-Type", "application/octet-stream");
    if let Some(b) = bearer {
        req = req.header("Authorization", format!("Bearer {b}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// PUTs JSON; returns status and body (any status).
pub fn put_json(
    url: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    send_json(test_agent().put(url), bearer, body)
}

/// DELETEs; returns status and body (any status).
pub fn delete(url: &str, bearer: Option<&str>) -> (u16, serde_json::Value) {
    call_json(test_agent().delete(url), bearer)
}

/// GETs raw bytes; returns status and body.
pub fn get_bytes(url: &str, bearer: Option<&str>) -> (u16, Vec<u8>) {
    let agent = test_agent();
    let mut req = agent.get(url);
    if let Some(b) = bearer {
        req = req.header("Authorization", format!("Bearer {b}"));
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap_or_default();
    (status, bytes)
}
