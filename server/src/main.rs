//! `gridsync serve [--data-dir DIR] [--listen ADDR]`

use std::sync::Arc;

use anyhow::Context;
use gridsync_server::Config;

const USAGE: &str = "usage: gridsync serve [--data-dir DIR] [--listen ADDR]
  environment: GRIDSYNC_DATA_DIR, GRIDSYNC_LISTEN";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {}
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
    let config = Config::from_args(&args[1..], |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{e}\n{USAGE}"))?;
    let store = gridsync_server::open_store(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        println!(
            "gridsync serving on http://{} with data in {}",
            listener.local_addr()?,
            config.data_dir.display()
        );
        gridsync_server::run(listener, store, shutdown_signal()).await?;
        println!("gridsync stopped");
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
