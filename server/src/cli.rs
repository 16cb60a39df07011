//! The `gridsync` command line: `gridsync serve [--data-dir DIR] [--listen ADDR]`.

use anyhow::Context;

use crate::Config;

/// Usage text.
pub const USAGE: &str =
    "usage: gridsync serve [--data-dir DIR] [--listen ADDR] [--tls-cert PEM --tls-key PEM] [--drain-seconds N]
                      [--log-keep-days N (default 90)] [--log-keep-entries N]   (0: no bound)
                      [--database postgres://...]   (records and identity on PostgreSQL; several servers may share it)
                      [--max-file-mb N (default 20)] [--file-quota-mb N (per device and day, default 1024)]
                      [--search-cache-mb N (search texts held in memory, default 128; 0: none)]
       gridsync demo --data-dir DIR [--issues N]   (seed a demo district)
       gridsync backup --data-dir DIR --to DEST [--server URL] [--database URL]
                                 (a consistent copy; --server: of the running server)
       gridsync restore --from BACKUP --data-dir DIR [--database URL]   (the server stopped;
                        on PostgreSQL into an empty database)
  environment: GRIDSYNC_DATA_DIR, GRIDSYNC_LISTEN, GRIDSYNC_DATABASE_URL, GRIDSYNC_TLS_CERT, GRIDSYNC_TLS_KEY, GRIDSYNC_DRAIN_SECONDS,
               GRIDSYNC_LOG_KEEP_DAYS, GRIDSYNC_LOG_KEEP_ENTRIES, GRIDSYNC_MAX_FILE_MB, GRIDSYNC_FILE_QUOTA_MB,
               GRIDSYNC_SEARCH_CACHE_MB,
               GRIDSYNC_ADMIN_TOKEN, RUST_LOG (default info), GRIDSYNC_LOG_FORMAT=json";

/// Runs the command line; returns the process exit code.
pub fn main(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("serve") => match serve(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("gridsync: {e:#}");
                1
            }
        },
        Some("demo") => match demo(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("gridsync demo: {e:#}");
                1
            }
        },
        Some("backup") => match backup(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("gridsync backup: {e:#}");
                1
            }
        },
        Some("restore") => match restore(&args[1..]) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("gridsync restore: {e:#}");
                1
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

/// The first line `gridsync serve` prints: where it listens and where its
/// data is.
pub fn banner(addr: &std::net::SocketAddr, data_dir: &std::path::Path, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!(
        "gridsync serving on {scheme}://{addr} with data in {}",
        data_dir.display()
    )
}

/// The listening address in a [`banner`] line (for scripts and tests that
/// start the server on port 0; the banner is printed once the server is
/// ready, after a line saying it is listening and opening its data).
pub fn address_in_banner(line: &str) -> Option<&str> {
    line.strip_prefix("gridsync serving on ")?
        .split("://")
        .nth(1)?
        .split_whitespace()
        .next()
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal: a file or a pipe gets plain text
    // that log shippers read.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // Ignore the error of a second initialisation (tests may call twice).
    if std::env::var("GRIDSYNC_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The engine `--database URL` or `GRIDSYNC_DATABASE_URL` names (sled
/// without either).
fn database(args: &[String]) -> anyhow::Result<gridsync_core::store::backend::Engine> {
    let url = flag_value(args, "--database")
        .map(str::to_owned)
        .or_else(|| std::env::var("GRIDSYNC_DATABASE_URL").ok())
        .filter(|u| !u.is_empty());
    match url {
        None => Ok(gridsync_core::store::backend::Engine::Sled),
        Some(u) => crate::database(u).map_err(anyhow::Error::msg),
    }
}

fn backup(args: &[String]) -> anyhow::Result<()> {
    let (Some(dir), Some(to)) = (flag_value(args, "--data-dir"), flag_value(args, "--to")) else {
        anyhow::bail!("--data-dir DIR and --to DEST are required\n{USAGE}");
    };
    let dir = std::path::PathBuf::from(dir);
    let to = std::path::absolute(to).context("the destination path")?;
    let summary = match flag_value(args, "--server") {
        None => crate::backup::backup_stopped(&database(args)?, &dir, &to)?,
        Some(url) => {
            // The running server writes the backup itself, at one point.
            let token = crate::admin_token(&dir, |k| std::env::var(k).ok())?;
            let body = serde_json::json!({ "to": to });
            let mut response = ureq::post(format!("{}/v1/admin/backup", url.trim_end_matches('/')))
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .config()
                .http_status_as_error(false)
                .build()
                .send(body.to_string())
                .with_context(|| format!("asking {url} for a backup"))?;
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string()?;
            if status != 200 {
                anyhow::bail!("the server answered {status}: {text}");
            }
            let v: serde_json::Value = serde_json::from_str(&text)?;
            crate::backup::Summary {
                to: to.clone(),
                records: v["records"].as_u64().unwrap_or(0) as usize,
                log_head: v["log_head"].as_u64().unwrap_or(0),
                identity_entries: v["identity_entries"].as_u64().unwrap_or(0) as usize,
            }
        }
    };
    println!(
        "backed up {} records (log head {}) and {} identity entries into {}",
        summary.records,
        summary.log_head,
        summary.identity_entries,
        summary.to.display()
    );
    Ok(())
}

fn restore(args: &[String]) -> anyhow::Result<()> {
    let (Some(from), Some(dir)) = (flag_value(args, "--from"), flag_value(args, "--data-dir"))
    else {
        anyhow::bail!("--from BACKUP and --data-dir DIR are required\n{USAGE}");
    };
    let restored = crate::backup::restore_on(
        &database(args)?,
        std::path::Path::new(from),
        std::path::Path::new(dir),
    )?;
    println!(
        "restored {} records into {}; the log's new identity is {}",
        restored.records, dir, restored.log_id
    );
    if let Some(aside) = restored.replaced {
        println!("the stores it replaced are in {}", aside.display());
    }
    println!("devices offer their changes again at their next sync");
    Ok(())
}

fn demo(args: &[String]) -> anyhow::Result<()> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let Some(dir) = value("--data-dir") else {
        anyhow::bail!("--data-dir DIR is required\n{USAGE}");
    };
    let issues = match value("--issues") {
        Some(n) => n.parse().context("--issues takes a number")?,
        None => 3000,
    };
    let dir = std::path::PathBuf::from(dir);
    println!(
        "seeding a demo district of {issues} cases into {} …",
        dir.display()
    );
    let seeded = crate::demo::seed(&dir, issues)?;
    println!(
        "done: {} cases, {} council meetings, {} status conflicts",
        seeded.issues, seeded.meetings, seeded.conflicts
    );
    println!(
        "\nstart the server:\n  gridsync serve --data-dir {}",
        dir.display()
    );
    println!("then open http://127.0.0.1:8787/ and log in with an office token:");
    for (user, role, token) in &seeded.logins {
        println!("  {role:<10} ({user}): {token}");
    }
    Ok(())
}

/// Prints a line for whoever started the server; a closed stdout (the
/// parent stopped reading) is not the server's failure, so it is ignored
/// instead of panicking as `println!` would.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// How many arenas glibc's allocator may keep (its default is eight per
/// core). Each thread that finds the arenas busy makes another one, and
/// every arena keeps the memory freed in it for later, so a server whose
/// threads take turns reading and evicting pages (sled's cache, search)
/// held the sum of every arena's peak: at 100,000 cases, 346–400 MiB
/// resident against a heap that never passed 245 MiB. One arena: at
/// 1,000,000 cases on sled the resident peak was 974 MiB with one, 1057
/// with two; small allocations stay in each thread's cache (tcache)
/// either way, and the bench rows moved within their noise
/// (ARCHITECTURE.md, "Scale").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_ARENAS: libc::c_int = 1;

/// Caps glibc's allocator arenas at [`MALLOC_ARENAS`], before the runtime
/// starts its threads, unless the operator chose a number
/// (`MALLOC_ARENA_MAX`, which glibc itself reads). Nothing to do with
/// other C libraries.
#[allow(unsafe_code)]
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` sets one of glibc's allocator tunables; it
        // takes no pointers and is called before this process starts
        // other threads of its own.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let config = Config::from_args(args, |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{e}\n{USAGE}"))?;
    init_logging();
    cap_malloc_arenas();
    // Residents' names and phone numbers live in the data directory:
    // whatever the caller's umask, what the server creates is its owner's
    // only (directories 0700, files 0600).
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let token = crate::admin_token(&config.data_dir, |k| std::env::var(k).ok())?;
    let tls = config.tls.as_ref().map(crate::tls_acceptor).transpose()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        // Listening from the start: while the store opens (and an older
        // store format migrates) every request is answered 503 `starting`.
        say(&format!(
            "gridsync listening on {addr}, opening the data directory {}",
            config.data_dir.display()
        ));
        let data_dir = config.data_dir.clone();
        let engine = config.engine.clone();
        let (max_file, quota) = (config.max_file_bytes, config.file_bytes_per_device_day);
        let search_cache = config.search_cache_bytes;
        let state = crate::open_while_starting(&listener, tls.clone(), move || {
            let mut state = crate::open_holding(&engine, &data_dir, &token, search_cache)?;
            state.limits.max_file_bytes = max_file;
            state.limits.file_bytes_per_device_day = quota;
            Ok(state)
        })
        .await
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
        say(&banner(&addr, &config.data_dir, tls.is_some()));
        if std::env::var_os("GRIDSYNC_ADMIN_TOKEN").is_none() {
            say(&format!(
                "admin token in {}",
                config.data_dir.join("admin-token").display()
            ));
        }
        // The change log's retention and the collection of unreferenced
        // files, applied now and every hour.
        let store = state.store.clone();
        let policy = config.retention;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::retention::TICK);
            loop {
                every.tick().await;
                let log = store.clone();
                let now = log.now_ms();
                let done =
                    tokio::task::spawn_blocking(move || crate::retention::tick(&log, &policy, now))
                        .await;
                match done {
                    Ok(Ok(t)) if t.removed > 0 => {
                        tracing::info!(
                            removed = t.removed,
                            floor = t.floor,
                            "change log truncated"
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "applying the log retention"),
                    Err(e) => tracing::error!(error = %e, "applying the log retention"),
                }
                // Files no record references any more, after their grace.
                let files = store.clone();
                let done = tokio::task::spawn_blocking(move || {
                    files.collect_unreferenced_files(gridsync_core::files::UNREFERENCED_GRACE_MS)
                })
                .await;
                match done {
                    Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "unreferenced files removed"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "collecting unreferenced files"),
                    Err(e) => tracing::error!(error = %e, "collecting unreferenced files"),
                }
            }
        });
        // On the signal: readiness goes to 503 at once, new work is still
        // taken for the drain time, then `run_tls` stops accepting, lets
        // requests in flight finish and flushes.
        let draining = state.draining.clone();
        let drain = config.drain;
        let shutdown = async move {
            shutdown_signal().await;
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            if !drain.is_zero() {
                say(&format!("draining for {} s", drain.as_secs()));
                tokio::time::sleep(drain).await;
            }
        };
        crate::run_tls(listener, state, tls, shutdown).await?;
        say("gridsync stopped");
        anyhow::Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_banner_address_round_trips() {
        let addr: std::net::SocketAddr = "127.0.0.1:4321".parse().unwrap();
        for tls in [false, true] {
            let line = super::banner(&addr, std::path::Path::new("data dir"), tls);
            assert_eq!(super::address_in_banner(&line), Some("127.0.0.1:4321"));
            assert_eq!(line.contains("https://"), tls);
        }
        assert_eq!(super::address_in_banner("no address here"), None);
    }
}
