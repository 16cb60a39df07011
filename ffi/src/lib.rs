//! # gridsync-ffi
//!
//! The core exposed to Kotlin and Swift apps. This crate holds thin
//! wrappers only: each function delegates to `gridsync-core` in a few lines.
//! The UniFFI surface is built with the mobile-bindings work; until then it
//! offers the version and a health check of the core that the bindings
//! will wrap.

/// The library version, for apps to log.
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// The on-disk store format this library reads and writes.
pub fn store_format() -> u64 {
    gridsync_core::store::STORE_FORMAT
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_version_and_format() {
        assert_eq!(super::version(), env!("CARGO_PKG_VERSION"));
        assert_eq!(super::store_format(), gridsync_core::store::STORE_FORMAT);
    }
}
