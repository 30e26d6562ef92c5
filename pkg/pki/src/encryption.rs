//! Encryption of Secrets at rest, in kube-apiserver's `aesgcm` provider format.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::error::{Error, Result};
use crate::fsutil::{self, PRIVATE_DIR_MODE, SECRET_FILE_MODE};

/// Prefix every encrypted value starts with (any provider); used by [`is_encrypted`].
const ANY_PREFIX: &[u8] = b"k8s:enc:";
/// Prefix of values written by the aesgcm provider, before the key name.
const AESGCM_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
/// The name of our one key. Names let a later version rotate keys while old values still
/// decrypt; upstream's EncryptionConfiguration conventionally starts with `key1`.
pub const KEY_NAME: &str = "key1";

/// Whether `data` is an encrypted value (of any provider) rather than plaintext, so the store
/// can read values written before encryption was switched on.
pub fn is_encrypted(data: &[u8]) -> bool {
    data.starts_with(ANY_PREFIX)
}

/// An AES-256-GCM key for values at rest.
///
/// Values are `k8s:enc:aesgcm:v1:key1:` + 12-byte random nonce + ciphertext + 16-byte tag,
/// the layout of kube-apiserver's aesgcm provider. Random 96-bit nonces are safe for far more
/// writes than a cluster makes (NIST's bound is 2^32 per key).
pub struct EncryptionKey {
    key: LessSafeKey,
    path: PathBuf,
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// Loads the key at `path` (32 bytes, base64, one line), or creates one (0600, parent
    /// dirs 0700).
    ///
    /// Blocking: call from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// IO errors with the path; [`Error::EncryptionKey`] if the file is not base64 of 32
    /// bytes. Losing this file makes every encrypted Secret unreadable.
    pub fn load_or_create(path: &Path) -> Result<EncryptionKey> {
        let bad = |reason: &str| Error::EncryptionKey {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let raw: Vec<u8> = match fsutil::read_optional(path)? {
            Some(text) => {
                let text = String::from_utf8(text).map_err(|_| bad("not base64 text"))?;
                STANDARD
                    .decode(text.trim())
                    .map_err(|_| bad("not base64"))?
            }
            None => {
                let raw: [u8; 32] = rand::random();
                let text = format!("{}\n", STANDARD.encode(raw));
                fsutil::write_atomic(path, text.as_bytes(), SECRET_FILE_MODE, PRIVATE_DIR_MODE)?;
                tracing::info!(path = %path.display(), "created secrets encryption key");
                raw.to_vec()
            }
        };
        if raw.len() != 32 {
            return Err(bad("key is not 32 bytes"));
        }
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| bad("unusable AES key"))?;
        Ok(EncryptionKey {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
        })
    }

    /// Encrypts `plaintext` (see the type's docs for the layout).
    ///
    /// # Errors
    /// [`Error::Encrypt`] only if the plaintext exceeds AES-GCM's limit (~64 GiB).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.encrypt_with_aad(plaintext, &[])
    }

    /// Like [`EncryptionKey::encrypt`], binding the value to `aad` (upstream passes the storage
    /// key, so a ciphertext copied to another object's key fails to decrypt). The same `aad`
    /// must be given to [`EncryptionKey::decrypt_with_aad`].
    ///
    /// # Errors
    /// [`Error::Encrypt`] only if the plaintext exceeds AES-GCM's limit.
    pub fn encrypt_with_aad(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut out = Vec::with_capacity(
            AESGCM_PREFIX.len() + KEY_NAME.len() + 1 + NONCE_LEN + plaintext.len() + 16,
        );
        out.extend_from_slice(AESGCM_PREFIX);
        out.extend_from_slice(KEY_NAME.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce_bytes);
        let body_start = out.len();
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(body_start);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| Error::Encrypt {
                reason: "plaintext too long for AES-GCM",
            })?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a value produced by [`EncryptionKey::encrypt`].
    ///
    /// # Errors
    /// [`Error::Decrypt`] if the value is not aesgcm-encrypted, names another key, is
    /// truncated, or fails authentication (tampered, or another key with the same name).
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.decrypt_with_aad(data, &[])
    }

    /// Decrypts a value produced by [`EncryptionKey::encrypt_with_aad`] with the same `aad`.
    ///
    /// # Errors
    /// As [`EncryptionKey::decrypt`].
    pub fn decrypt_with_aad(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
        let bad = |reason: &str| Error::Decrypt {
            reason: reason.to_string(),
        };
        let rest = data
            .strip_prefix(AESGCM_PREFIX)
            .ok_or_else(|| bad("not an aesgcm-encrypted value"))?;
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| bad("no key name"))?;
        let (name, rest) = rest.split_at(colon);
        if name != KEY_NAME.as_bytes() {
            return Err(Error::Decrypt {
                reason: format!(
                    "encrypted with key {:?}, we have {KEY_NAME:?}",
                    String::from_utf8_lossy(name)
                ),
            });
        }
        let rest = rest.get(1..).unwrap_or_default();
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(bad("value is truncated"));
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("bad nonce"))?;
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| bad("authentication failed (tampered value or wrong key)"))?;
        Ok(plain.to_vec())
    }
}
