//! Join tokens in k3s's format, which pin the cluster CA.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::ca::Ca;
use crate::error::{Error, Result};

/// Prefix of the full token format (k3s: "K10" = version 1 of the format, hash follows).
const PREFIX: &str = "K10";

/// User name of a bare-secret token, k3s's default for the server token.
pub const DEFAULT_USERNAME: &str = "server";

/// A join token: `K10<sha256 hex of the CA PEM>::<username>:<secret>`.
///
/// The CA hash lets a joining node trust the server's CA on first contact without copying it
/// by hand: it downloads `/cacerts`, and only proceeds if [`JoinToken::verify_ca`] passes.
/// A bare secret (no `K10` prefix) is accepted as k3s does, without CA pinning.
///
/// `Debug` hides the secret; `Display` prints the whole token (it is what users copy).
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Lowercase hex SHA-256 of the CA PEM, or `None` for a bare-secret token.
    pub ca_hash: Option<String>,
    /// Who the token authenticates as, e.g. `server` or `node`.
    pub username: String,
    /// The shared secret.
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_hash", &self.ca_hash)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl JoinToken {
    /// A new token pinning `ca`, with a random 32-hex-character (128-bit) secret.
    ///
    /// # Errors
    /// [`Error::InvalidJoinToken`] if `username` is empty or contains `:` or whitespace.
    pub fn generate(ca: &Ca, username: &str) -> Result<JoinToken> {
        validate_username(username)?;
        let secret: [u8; 16] = rand::random();
        Ok(JoinToken {
            ca_hash: Some(ca.hash()),
            username: username.to_string(),
            secret: hex::encode(secret),
        })
    }

    /// Checks that `ca_pem_bytes` (what the server served as its CA) is the pinned CA.
    /// Tokens without a hash pin nothing and always pass.
    ///
    /// # Errors
    /// [`Error::CaHashMismatch`] naming both hashes.
    pub fn verify_ca(&self, ca_pem_bytes: &[u8]) -> Result<()> {
        let Some(expected) = &self.ca_hash else {
            return Ok(());
        };
        let actual = hex::encode(Sha256::digest(ca_pem_bytes));
        if *expected == actual {
            Ok(())
        } else {
            Err(Error::CaHashMismatch {
                expected: expected.clone(),
                actual,
            })
        }
    }

    /// Compares the secret with `other` in constant time, so the join endpoint does not leak
    /// how much of a guess was right.
    pub fn secret_matches(&self, other: &str) -> bool {
        let a = self.secret.as_bytes();
        let b = other.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

fn invalid(reason: &'static str) -> Error {
    Error::InvalidJoinToken { reason }
}

fn validate_username(username: &str) -> Result<()> {
    if username.is_empty() {
        return Err(invalid("username is empty"));
    }
    if username.contains(':') || username.chars().any(char::is_whitespace) {
        return Err(invalid("username contains ':' or whitespace"));
    }
    Ok(())
}

fn validate_secret(secret: &str) -> Result<()> {
    if secret.is_empty() {
        return Err(invalid("secret is empty"));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("secret contains whitespace"));
    }
    Ok(())
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}::{}:{}",
            self.ca_hash.as_deref().unwrap_or(""),
            self.username,
            self.secret
        )
    }
}

impl FromStr for JoinToken {
    type Err = Error;

    /// Parses `K10<hash>::<username>:<secret>` (the hash may be empty), or a bare secret
    /// (optionally `<username>:<secret>`) as k3s accepts from `--token`. Surrounding
    /// whitespace (a trailing newline from a token file) is ignored.
    fn from_str(s: &str) -> Result<JoinToken> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid("token is empty"));
        }
        let (ca_hash, credentials) = match s.strip_prefix(PREFIX) {
            Some(rest) => {
                let (hash, creds) = rest
                    .split_once("::")
                    .ok_or(invalid("missing '::' after the CA hash"))?;
                let hash = if hash.is_empty() {
                    None
                } else {
                    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(invalid("CA hash is not 64 hex characters (SHA-256)"));
                    }
                    Some(hash.to_ascii_lowercase())
                };
                (hash, creds)
            }
            None => (None, s),
        };
        let (username, secret) = match credentials.split_once(':') {
            Some((user, secret)) => (user, secret),
            None => (DEFAULT_USERNAME, credentials),
        };
        validate_username(username)?;
        validate_secret(secret)?;
        Ok(JoinToken {
            ca_hash,
            username: username.to_string(),
            secret: secret.to_string(),
        })
    }
}
