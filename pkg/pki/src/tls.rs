//! rustls configurations for our servers and clients, and the user a client certificate names.

use std::fmt;
use std::sync::Arc;

use rustls::client::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::RootCertStore;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::ca::{subject_identity, Ca, CertKeyPair};
use crate::error::{Error, Result};

/// The Kubernetes user a verified client certificate stands for: CN is the user name, each O
/// a group, exactly as kube-apiserver's x509 authenticator reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (subject CN), e.g. `system:node:worker-1`.
    pub user: String,
    /// Groups (subject O, in certificate order), e.g. `system:nodes`.
    pub groups: Vec<String>,
}

impl Identity {
    /// Reads the identity from a DER certificate.
    ///
    /// # Assumptions
    /// The certificate was already verified against the client CA (rustls does this during
    /// the handshake with [`server_tls_config`]); this function checks nothing but syntax.
    ///
    /// # Errors
    /// [`Error::ParseCertificate`] for bad DER or non-string attributes; [`Error::NoCommonName`]
    /// when CN is missing or empty (upstream rejects those too).
    pub fn from_cert_der(der: &[u8]) -> Result<Identity> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::ParseCertificate {
            what: "peer certificate".to_string(),
            reason: e.to_string(),
        })?;
        let (user, groups) = subject_identity(cert.subject())?;
        Ok(Identity { user, groups })
    }
}

impl fmt::Display for Identity {
    /// `CN=<user>,O=<group>,...`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CN={}", self.user)?;
        for g in &self.groups {
            write!(f, ",O={g}")?;
        }
        Ok(())
    }
}

/// The crypto provider for every config we build: ring, chosen explicitly so nothing depends
/// on a process-wide default being installed (and so aws-lc/cmake never gets pulled in).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs_from_pem(pem: &str, step: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let mut reader = pem.as_bytes();
    let certs = rustls_pemfile::certs(&mut reader)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::ParseCertificate {
            what: step.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::ParseCertificate {
            what: step.to_string(),
            reason: "no CERTIFICATE block in PEM".to_string(),
        });
    }
    Ok(certs)
}

fn key_from_pem(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    let mut reader = pem.as_bytes();
    match rustls_pemfile::private_key(&mut reader) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(Error::ParseKey {
            what: what.to_string(),
            reason: "no private key block in PEM".to_string(),
        }),
        Err(e) => Err(Error::ParseKey {
            what: what.to_string(),
            reason: e.to_string(),
        }),
    }
}

fn roots(ca_pem: &str, step: &'static str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, step)? {
        roots
            .add(cert)
            .map_err(|source| Error::Tls { step, source })?;
    }
    Ok(roots)
}

/// A TLS server config for our HTTPS ports (apiserver, kubelet, supervisor).
///
/// Serves `serving` followed by `ca` as the chain, offers ALPN `h2` and `http/1.1`, and with
/// `client_ca` asks for (but does not require) a client certificate signed by it: clients with
/// a certificate are authenticated by it (see [`Identity::from_cert_der`] on the peer's first
/// certificate), clients without one may still present a bearer token. A certificate that is
/// presented but invalid fails the handshake. Without `client_ca` no certificate is asked for.
///
/// # Errors
/// [`Error::ParseCertificate`]/[`Error::ParseKey`] for bad PEM, [`Error::Tls`] if rustls
/// rejects the key or protocol versions, [`Error::ClientVerifier`] for an unusable client CA.
pub fn server_tls_config(
    ca: &Ca,
    serving: &CertKeyPair,
    client_ca: Option<&Ca>,
) -> Result<Arc<ServerConfig>> {
    let mut chain = certs_from_pem(&serving.cert_pem, "serving certificate")?;
    chain.push(CertificateDer::from(ca.cert_der().to_vec()));
    let key = key_from_pem(&serving.key_pem, "serving key")?;
    let verifier = match client_ca {
        Some(client_ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from(client_ca.cert_der().to_vec()))
                .map_err(|source| Error::Tls {
                    step: "adding client CA",
                    source,
                })?;
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|source| Error::ClientVerifier { source })?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            step: "choosing protocol versions",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| Error::Tls {
            step: "loading serving certificate and key",
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client config trusting only `ca_pem` (every certificate in it), optionally presenting
/// `client` as client certificate. For our own clients (agent join, tests); ALPN offers `h2`
/// and `http/1.1`.
///
/// # Errors
/// [`Error::ParseCertificate`]/[`Error::ParseKey`] for bad PEM, [`Error::Tls`] if rustls
/// rejects a CA certificate or the client key.
pub fn client_tls_config(ca_pem: &str, client: Option<&CertKeyPair>) -> Result<Arc<ClientConfig>> {
    let roots = roots(ca_pem, "adding trusted CA")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            step: "choosing protocol versions",
            source,
        })?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => {
            let chain = certs_from_pem(&pair.cert_pem, "client certificate")?;
            let key = key_from_pem(&pair.key_pem, "client key")?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| Error::Tls {
                    step: "loading client certificate and key",
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client config that accepts any server certificate, without ALPN or client
/// certificate. Handshake signatures are still checked, so the peer holds the key of what it
/// presents. Only where the answer is verified otherwise (the agent's `/cacerts`, checked by
/// hash) or where upstream skips verification (HTTPS probes, `InsecureSkipVerify`).
///
/// # Errors
/// [`Error::Tls`] if rustls rejects the default protocol versions.
pub fn insecure_client_tls_config() -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            step: "choosing protocol versions",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The verifier of [`insecure_client_tls_config`]: any certificate, checked signatures.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
