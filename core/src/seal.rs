//! Sealing bytes under a store's key: XChaCha20-Poly1305 (RustCrypto)
//! with associated data. A sealed value is `1 | nonce (24) | ciphertext |
//! tag (16)`. Nonces are a random 16-byte prefix drawn per [`Sealer`] and
//! a 64-bit counter: unique without a system call per value (XChaCha's
//! 192-bit nonce leaves room for the random prefix). Used by the sealed
//! engine (`store::backend::sealed`) and by the file area (`files`).

use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

const VERSION: u8 = 1;
const NONCE: usize = 24;
const TAG: usize = 16;
/// Bytes a sealed value takes beyond the plain one.
pub const OVERHEAD: usize = 1 + NONCE + TAG;

/// A store's 256-bit key. The app keeps it where the platform keeps
/// secrets (the Android Keystore, the iOS Keychain) and passes it when it
/// opens the store. Wiped from memory when dropped; never printed.
#[derive(Clone)]
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl StoreKey {
    /// A key from its 32 bytes; anything else is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<StoreKey> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| Error::InvalidInput {
            field: "key",
            reason: format!("a store key is 32 bytes, not {}", bytes.len()),
        })?;
        Ok(StoreKey(Zeroizing::new(array)))
    }

    /// A new random key (for apps that make one on first start, and tests).
    pub fn generate() -> Result<StoreKey> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())
            .map_err(|e| Error::Io(std::io::Error::other(format!("random source: {e}"))))?;
        Ok(StoreKey(bytes))
    }

    /// The key's bytes, to hand to the platform's key store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.0))
    }
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// Seals and opens values under one key (a store's values, and the
/// segments of its files).
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    prefix: [u8; 16],
    counter: AtomicU64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub(crate) fn new(key: &StoreKey) -> Result<Sealer> {
        let mut prefix = [0u8; 16];
        getrandom::fill(&mut prefix)
            .map_err(|e| Error::Io(std::io::Error::other(format!("random source: {e}"))))?;
        Ok(Sealer {
            cipher: key.cipher(),
            prefix,
            counter: AtomicU64::new(0),
        })
    }

    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.push(VERSION);
        out.extend_from_slice(&self.prefix);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(plain);
        let nonce = XNonce::try_from(&out[1..1 + NONCE]).map_err(|_| sealing_failed())?;
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, (&mut out[1 + NONCE..]).into())
            .map_err(|_| sealing_failed())?;
        out.extend_from_slice(tag.as_slice());
        Ok(out)
    }

    /// The plain value, or `None` when it does not open under this key
    /// (another key, or damaged bytes).
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return None;
        }
        let nonce = XNonce::try_from(&sealed[1..1 + NONCE]).ok()?;
        let (body, tag) = sealed[1 + NONCE..].split_at(sealed.len() - OVERHEAD);
        let tag = Tag::try_from(tag).ok()?;
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_inout_detached(&nonce, aad, (&mut plain[..]).into(), &tag)
            .ok()?;
        Some(plain)
    }
}

fn sealing_failed() -> Error {
    Error::Storage("sealing a value failed".into())
}
