//! The cluster's PKI: the CA and the certificates it issues, TLS configurations, kubeconfigs,
//! join tokens, service-account token keys and the key that encrypts Secrets at rest.
//!
//! # What it owns
//! - [`Ca`]: created at first start (ECDSA P-256, 10 years), loaded afterwards; issues leaf
//!   certificates ([`Ca::issue`], [`load_or_issue`]) and signs CSRs ([`Ca::sign_csr`]).
//! - [`server_tls_config`] / [`client_tls_config`]: rustls configs on the ring provider, with
//!   optional client certificates mapped to Kubernetes users by [`Identity`].
//! - [`write_kubeconfig`] / [`read_kubeconfig`]: kubeconfigs with embedded data, as kubectl
//!   reads them.
//! - [`JoinToken`]: k3s's `K10<ca hash>::<user>:<secret>` format, pinning the CA.
//! - [`TokenSigner`]: ES256 service-account tokens (compact JWS) with ring directly.
//! - [`EncryptionKey`]: AES-256-GCM values in kube-apiserver's `k8s:enc:aesgcm:v1:` format.
//!
//! # Design
//! Pure functions over PEM strings where possible; the few functions that touch disk write
//! every file atomically (temp file, fsync, rename) with its final mode from the start: keys
//! 0600, certificates 0644, PKI directories 0700. Everything here is blocking (file IO, key
//! generation): async callers use `spawn_blocking`. Keys are ECDSA P-256 because ring cannot
//! generate RSA; rcgen builds certificates, and a small DER step (`der`) writes subjects with
//! several `O` (groups), which rcgen 0.13 cannot.
//!
//! # Example
//! ```no_run
//! use std::path::Path;
//! use distro_pki::{load_or_issue, server_tls_config, Ca, CertSpec, JoinToken, Usage};
//! # fn main() -> distro_pki::Result<()> {
//! let dir = Path::new("/var/lib/distro/server/tls");
//! let ca = Ca::load_or_create(dir, "server-ca", "distro-server-ca@1700000000")?;
//! let client_ca = Ca::load_or_create(dir, "client-ca", "distro-client-ca@1700000000")?;
//! let mut spec = CertSpec::new("kube-apiserver", Usage::Server);
//! spec.dns_names = vec!["localhost".into(), "kubernetes.default.svc".into()];
//! let serving = load_or_issue(&ca, dir, "serving-kube-apiserver", &spec)?;
//! let _tls = server_tls_config(&ca, &serving, Some(&client_ca))?;
//! println!("join with --token {}", JoinToken::generate(&ca, "server")?);
//! # Ok(()) }
//! ```
//!
//! # Limits
//! - One CA key type (ECDSA P-256); user-supplied RSA CAs are not supported.
//! - No CRLs or revocation: certificates are short enough lived to be renewed at start-up.
//! - One encryption key (`key1`); no key rotation yet.
//! - CSRs may request only DNS and IP SANs; usage and validity are always the signer's.

mod ca;
mod csr;
mod der;
mod encryption;
mod error;
mod fsutil;
mod jwt;
mod kubeconfig;
mod tls;
mod token;

pub use ca::{
    load_or_issue, Ca, CertKeyPair, CertSpec, CertificateRequest, Usage, CA_VALIDITY,
    DEFAULT_CERT_VALIDITY,
};
pub use csr::{new_csr, new_serving_csr, why_not_reusable_client};
pub use encryption::{is_encrypted, EncryptionKey, KEY_NAME};
pub use error::{Error, Result, TokenRejection};
pub use jwt::{TokenSigner, CLOCK_SKEW_SECS};
pub use kubeconfig::{
    read_kubeconfig, write_kubeconfig, AuthInfo, Cluster, Context, Credential, Kubeconfig,
    NamedCluster, NamedContext, NamedUser,
};
pub use tls::{client_tls_config, insecure_client_tls_config, server_tls_config, Identity};
pub use token::{JoinToken, DEFAULT_USERNAME};

#[cfg(test)]
mod tests;
