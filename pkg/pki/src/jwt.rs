//! Service-account tokens: compact JWS with ES256, signed and verified with ring.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, TokenRejection};
use crate::fsutil::{self, PRIVATE_DIR_MODE, SECRET_FILE_MODE};

/// Clock skew tolerated on `exp` and `nbf`, the same minute upstream's JWT validation allows.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66
/// bytes); followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Signs and verifies service-account tokens with one ECDSA P-256 key.
///
/// The key id is base64url(SHA-256(DER SubjectPublicKeyInfo)), the way kube-apiserver derives
/// it, so it is stable across restarts and the same on every server sharing the key file.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    kid: String,
    spki_der: Vec<u8>,
    path: PathBuf,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("path", &self.path)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Loads the PKCS#8 PEM key at `path`, or creates one (0600, parent dirs 0700).
    ///
    /// Blocking: call from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// IO errors with the path; [`Error::SigningKey`] if the file is not a PKCS#8 ECDSA P-256
    /// key; [`Error::Random`] if the OS has no randomness.
    pub fn load_or_create(path: &Path) -> Result<TokenSigner> {
        let rng = SystemRandom::new();
        let bad = |reason: String| Error::SigningKey {
            path: path.to_path_buf(),
            reason,
        };
        let pkcs8 = match fsutil::read_optional(path)? {
            Some(pem) => fsutil::pkcs8_key_der(&pem, &path.display().to_string())
                .map_err(|e| bad(e.to_string()))?,
            None => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| Error::Random {
                        step: "service-account signing key",
                    })?;
                let pem = fsutil::pem_encode("PRIVATE KEY", doc.as_ref());
                fsutil::write_atomic(path, pem.as_bytes(), SECRET_FILE_MODE, PRIVATE_DIR_MODE)?;
                tracing::info!(path = %path.display(), "created service-account signing key");
                doc.as_ref().to_vec()
            }
        };
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| bad(format!("not an ECDSA P-256 PKCS#8 key: {e}")))?;
        let mut spki_der = P256_SPKI_PREFIX.to_vec();
        spki_der.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(&spki_der));
        Ok(TokenSigner {
            key,
            kid,
            spki_der,
            path: path.to_path_buf(),
        })
    }

    /// The key id put in every token header.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The public key as PEM (`PUBLIC KEY`), for `--service-account-key-file`-style consumers.
    pub fn public_key_pem(&self) -> String {
        fsutil::pem_encode("PUBLIC KEY", &self.spki_der)
    }

    /// Signs `claims` as a compact JWS with header `{"alg":"ES256","kid":<key id>}`.
    ///
    /// The claims are signed as given: the caller sets `iss`, `sub`, `aud`, `exp`, etc.
    ///
    /// # Errors
    /// [`Error::SignToken`] if `claims` is not a JSON object or ring fails to sign.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        if !claims.is_object() {
            return Err(Error::SignToken {
                reason: "claims must be a JSON object".to_string(),
            });
        }
        let header = json!({"alg": "ES256", "kid": self.kid});
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self
            .key
            .sign(&SystemRandom::new(), token.as_bytes())
            .map_err(|e| Error::SignToken {
                reason: e.to_string(),
            })?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(token)
    }

    /// Verifies `token` against our key and the current time, returning its claims.
    ///
    /// # Guarantees
    /// Only `ES256` is accepted (never `none` or an algorithm the header picks); a `kid`, if
    /// present, must be ours; `exp` and `nbf`, if present, must be numbers and hold now within
    /// [`CLOCK_SKEW_SECS`]. A token without `exp` does not expire (legacy secret-based
    /// service-account tokens have none); audience and issuer are the caller's to check.
    ///
    /// # Errors
    /// [`Error::TokenRejected`] with the reason.
    pub fn verify(&self, token: &str) -> Result<Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.verify_at(token, now)
    }

    /// [`TokenSigner::verify`] at a given time (seconds since the epoch), for tests and for
    /// callers with their own clock.
    ///
    /// # Errors
    /// [`Error::TokenRejected`] with the reason.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Value> {
        use TokenRejection::*;
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Malformed("not three dot-separated parts").into());
        };
        let header = decode_json(
            h64,
            ("header is not base64url", "header is not a JSON object"),
        )?;
        match header.get("alg").and_then(Value::as_str) {
            Some("ES256") => {}
            Some(other) => return Err(UnsupportedAlgorithm(other.to_string()).into()),
            None => return Err(Malformed("header has no alg").into()),
        }
        match header.get("kid") {
            None => {}
            Some(Value::String(kid)) if *kid == self.kid => {}
            Some(other) => {
                let kid = other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string);
                return Err(UnknownKeyId(kid).into());
            }
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|_| Malformed("signature is not base64url"))?;
        let signed_len = h64.len() + 1 + c64.len();
        let signed = token.get(..signed_len).ok_or(Malformed("truncated"))?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| BadSignature)?;

        let claims = decode_json(
            c64,
            ("claims are not base64url", "claims are not a JSON object"),
        )?;
        if let Some(exp) = claims.get("exp") {
            let exp = numeric_date(exp).ok_or(Malformed("exp is not a number"))?;
            if now > exp.saturating_add(CLOCK_SKEW_SECS) {
                return Err(Expired { exp, now }.into());
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(Malformed("nbf is not a number"))?;
            if now.saturating_add(CLOCK_SKEW_SECS) < nbf {
                return Err(NotYetValid { nbf, now }.into());
            }
        }
        Ok(claims)
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256, `kid`, `alg` ES256, `use` sig), for the
    /// OIDC discovery document's JWKS.
    pub fn public_key_jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let x = point.get(1..33).unwrap_or_default();
        let y = point.get(33..65).unwrap_or_default();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
        })
    }
}

/// Decodes one base64url JSON-object part; `errors` are the messages for (not base64url,
/// not a JSON object).
fn decode_json(part: &str, errors: (&'static str, &'static str)) -> Result<Value, TokenRejection> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenRejection::Malformed(errors.0))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(TokenRejection::Malformed(errors.1)),
    }
}

/// A JWT NumericDate: integer or fractional seconds (fractions are truncated).
fn numeric_date(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}
