//! A device process for crash tests: opens a device store and syncs it
//! with a server over and over, printing `synced` after each complete
//! sync, until killed.
//!
//! `device-syncer STORE_DIR DEVICE_CODE URL TOKEN`

use std::io::Write;

use gridsync_core::{Store, StoreConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, code, url, token] = args.as_slice() else {
        anyhow::bail!("usage: device-syncer STORE_DIR DEVICE_CODE URL TOKEN");
    };
    let store = Store::open(StoreConfig::new(dir, code.clone()))?;
    let mut out = std::io::stdout().lock();
    loop {
        let mut client = gridsync_core::sync::Client::new(&store).page_bytes(8 * 1024);
        client.run(|req| gridsync_core::http::post_sync(url, token, &req))?;
        writeln!(out, "synced")?;
        out.flush()?;
    }
}
