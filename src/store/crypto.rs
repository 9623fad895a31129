//! Secrets at rest.
//!
//! Provider signing secrets and destination secrets must be usable in
//! plaintext (to compute HMACs), so they cannot be hashed. They are sealed
//! with ChaCha20-Poly1305 under a key kept in `secrets.key` beside the
//! database: a copy of `krafter.redb` alone (a backup, a disk image) does not
//! reveal them. API keys, which only need comparing, are hashed instead.

use std::fs;
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::StoreError;

const NONCE_LEN: usize = 12;

/// Seals and opens secrets with the data directory's key.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
    /// Kept for backups, which must carry it.
    key: Vec<u8>,
}

impl SecretBox {
    /// Loads the key at `path` (`storage.secrets_key_file`, by default
    /// `<storage.path>/secrets.key`), creating it (mode 0600) when missing.
    /// Nodes sharing the file may start at once: the one that loses the
    /// race to create it reads the winner's key.
    pub fn load_or_create(path: &Path) -> Result<SecretBox, StoreError> {
        let mut tries = 0;
        let key = loop {
            tries += 1;
            match fs::read(path) {
                Ok(bytes) if bytes.len() == 32 => break bytes,
                // Another node is writing it this very moment.
                Ok(_) if tries < 5 => std::thread::sleep(std::time::Duration::from_millis(50)),
                Ok(_) => {
                    return Err(StoreError::Corrupt(format!(
                        "{} must hold exactly 32 bytes",
                        path.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let mut key = vec![0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut key);
                    match write_private_file(path, &key) {
                        Ok(()) => break key,
                        Err(StoreError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::AlreadyExists && tries < 5 => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(StoreError::io(format!("reading {}", path.display()), e)),
            }
        };
        Ok(SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
            key,
        })
    }

    /// Encrypts a secret; the output carries its own random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encryption only fails for inputs beyond 256 GiB.
        match self.cipher.encrypt(Nonce::from_slice(&nonce), plaintext) {
            Ok(ciphertext) => out.extend_from_slice(&ciphertext),
            Err(_) => out.clear(),
        }
        out
    }

    /// The raw key, for backups.
    pub fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// Decrypts what [`SecretBox::seal`] produced.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        if sealed.len() < NONCE_LEN {
            return Err(StoreError::Corrupt("sealed secret too short".into()));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| {
                StoreError::Corrupt("a stored secret does not open with secrets.key".into())
            })
    }
}

/// SHA-256 of an API key: what is stored instead of the key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Writes a file only its owner can read, replacing nothing that exists.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let context = || format!("writing {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::io(context(), e))?;
    file.write_all(contents)
        .and_then(|_| file.sync_all())
        .map_err(|e| StoreError::io(context(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sb = SecretBox::load_or_create(&dir.path().join("secrets.key")).unwrap();
        let sealed = sb.seal(b"whsec_abc");
        assert!(!sealed.windows(9).any(|w| w == b"whsec_abc"));
        assert_eq!(sb.open(&sealed).unwrap(), b"whsec_abc");
        let mode = fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The same key is loaded on the next start.
        let again = SecretBox::load_or_create(&dir.path().join("secrets.key")).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"whsec_abc");
        assert!(again.open(&sealed[..5]).is_err());
    }
}
