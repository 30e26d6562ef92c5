//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Each variant names the step that failed and carries what the operator needs to find the
/// problem (a path, a certificate name), so callers can print it as is. Secrets (keys, token
/// secrets) never appear in messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory for PKI material or a kubeconfig could not be created.
    #[error("creating directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be read.
    #[error("reading {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A file could not be written (temp file, fsync, permissions or rename).
    #[error("writing {path}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The CA certificate exists but its private key does not; we refuse to replace a CA
    /// that clients may already trust.
    #[error(
        "CA certificate {cert} exists but its key {key} is missing; restore the key or remove \
         both files to create a new CA (all issued certificates and join tokens become invalid)"
    )]
    CaKeyMissing {
        /// The certificate file that exists.
        cert: PathBuf,
        /// The key file that is missing.
        key: PathBuf,
    },

    /// The CA key on disk does not belong to the CA certificate on disk.
    #[error("CA key {key} does not match CA certificate {cert}")]
    CaKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// A certificate (file, PEM string or peer certificate) could not be parsed.
    #[error("parsing certificate {what}: {reason}")]
    ParseCertificate {
        /// Which certificate: a path or a description such as "peer certificate".
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A private key (file or PEM string) could not be parsed or is of an unsupported kind.
    #[error("parsing private key {what}: {reason}")]
    ParseKey {
        /// Which key: a path or a description.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Generating a key pair or building a certificate failed.
    #[error("generating {what}")]
    Generate {
        /// What was being generated, e.g. "CA certificate distro-server-ca@1700000000".
        what: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },

    /// Signing a certificate with the CA key failed.
    #[error("signing certificate for {common_name}: {reason}")]
    Sign {
        /// The subject being certified.
        common_name: String,
        /// What went wrong.
        reason: String,
    },

    /// A certificate signing request was malformed, badly signed or asks for something we do
    /// not issue.
    #[error("parsing certificate signing request: {reason}")]
    ParseCsr {
        /// What is wrong with it.
        reason: String,
    },

    /// The CSR's subject is not the one the caller allowed (e.g. a node asking for another
    /// node's name).
    #[error("CSR subject {actual} does not match the expected subject {expected}")]
    CsrSubjectMismatch {
        /// The allowed subject, as `CN=..,O=..`.
        expected: String,
        /// The requested subject, as `CN=..,O=..`.
        actual: String,
    },

    /// A certificate presented for authentication carries no usable user name.
    #[error("certificate has no common name, so it names no user")]
    NoCommonName,

    /// Building a rustls configuration failed.
    #[error("building TLS configuration: {step}")]
    Tls {
        /// The step, e.g. "loading serving certificate".
        step: &'static str,
        /// The cause.
        #[source]
        source: rustls::Error,
    },

    /// Building the client-certificate verifier failed (usually: the client CA is unusable).
    #[error("building client certificate verifier")]
    ClientVerifier {
        /// The cause.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },

    /// A kubeconfig could not be encoded or decoded.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
    },

    /// A kubeconfig parsed but lacks what we need (e.g. its current context names no cluster).
    #[error("kubeconfig {path}: {reason}")]
    KubeconfigInvalid {
        /// The kubeconfig file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },

    /// A join token is malformed.
    #[error("invalid join token: {reason}")]
    InvalidJoinToken {
        /// What is wrong (never includes the secret).
        reason: &'static str,
    },

    /// The CA served by the cluster is not the one the join token pins.
    #[error(
        "cluster CA hash mismatch: the join token pins a CA with sha256 {expected}, but the \
         server presented a CA with sha256 {actual}; check that the token belongs to this server"
    )]
    CaHashMismatch {
        /// The hash in the token.
        expected: String,
        /// The hash of the CA the server presented.
        actual: String,
    },

    /// The service-account signing key file is unusable.
    #[error("service-account signing key {path}: {reason}")]
    SigningKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Signing a service-account token failed.
    #[error("signing service-account token: {reason}")]
    SignToken {
        /// What went wrong.
        reason: String,
    },

    /// A bearer token (JWS) was rejected.
    #[error("token rejected: {0}")]
    TokenRejected(#[from] TokenRejection),

    /// The secrets-encryption key file is unusable.
    #[error("encryption key {path}: {reason}")]
    EncryptionKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Encrypting a value failed.
    #[error("encrypting value: {reason}")]
    Encrypt {
        /// What went wrong.
        reason: &'static str,
    },

    /// Decrypting a stored value failed: not our format, another key, or tampered.
    #[error("decrypting value: {reason}")]
    Decrypt {
        /// What went wrong.
        reason: String,
    },

    /// The operating system's random number generator failed.
    #[error("reading randomness for {step}")]
    Random {
        /// What the randomness was for.
        step: &'static str,
    },
}

/// Why a bearer token was rejected; separate so the apiserver can log the reason while
/// answering every case with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    /// Not three base64url parts, or header/claims are not JSON objects.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names an algorithm other than ES256 (this includes `none`).
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The header names a key id that is not ours.
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The signature does not verify with our key.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the allowed clock skew).
    #[error("expired at {exp} (now {now})")]
    Expired {
        /// The token's `exp`, seconds since the epoch.
        exp: i64,
        /// The time of the check, seconds since the epoch.
        now: i64,
    },
    /// `nbf` is in the future (beyond the allowed clock skew).
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The token's `nbf`, seconds since the epoch.
        nbf: i64,
        /// The time of the check, seconds since the epoch.
        now: i64,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
