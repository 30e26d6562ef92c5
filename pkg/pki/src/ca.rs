//! The cluster CA and the certificates it issues.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::der;
use crate::error::{Error, Result};
use crate::fsutil::{self, PRIVATE_DIR_MODE, PUBLIC_FILE_MODE, SECRET_FILE_MODE};
use crate::tls::Identity;

/// How long a CA we create is valid: 10 years, like k3s and kubeadm, so a homelab cluster
/// does not need CA rotation in its lifetime.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Default lifetime of a leaf certificate: one year, like k3s. Certificates are renewed at
/// start-up by [`load_or_issue`] well before they expire.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Certificates start this much in the past so that peers whose clocks lag a little still
/// accept a certificate issued a moment ago (the Kubernetes CSR signer does the same).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// [`load_or_issue`] renews a certificate when less than this is left (or less than a third
/// of its lifetime, whichever is shorter, so short-lived certificates are not renewed forever).
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a leaf certificate may be used for (its extended key usage).
///
/// rustls and Go both check the EKU, so a client certificate cannot serve and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (serving certificates).
    Server,
    /// TLS client authentication (users, nodes, components talking to the apiserver).
    Client,
    /// Both, for peers that dial and listen with one certificate (e.g. etcd peers).
    ServerAndClient,
}

impl Usage {
    fn server(self) -> bool {
        matches!(self, Usage::Server | Usage::ServerAndClient)
    }
    fn client(self) -> bool {
        matches!(self, Usage::Client | Usage::ServerAndClient)
    }
}

/// What to put in a leaf certificate. The key is always a fresh ECDSA P-256 key.
///
/// For client certificates, `common_name` is the Kubernetes user name and `organizations`
/// are its groups (e.g. `system:admin` in `system:masters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// Subject CN: the user name, or a descriptive name for serving certificates.
    pub common_name: String,
    /// Subject O attributes, one per group, in this order.
    pub organizations: Vec<String>,
    /// DNS subject alternative names (what clients may dial).
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// Extended key usage.
    pub usage: Usage,
    /// Lifetime from now.
    pub validity: Duration,
}

impl CertSpec {
    /// A spec with no groups and no SANs, valid for [`DEFAULT_CERT_VALIDITY`]; set the public
    /// fields for the rest.
    pub fn new(common_name: impl Into<String>, usage: Usage) -> Self {
        CertSpec {
            common_name: common_name.into(),
            organizations: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage,
            validity: DEFAULT_CERT_VALIDITY,
        }
    }
}

/// A certificate and its private key, both PEM (the key is PKCS#8 `PRIVATE KEY`).
///
/// `Debug` hides the key so it cannot end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKeyPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM. Secret.
    pub key_pem: String,
}

impl fmt::Debug for CertKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKeyPair")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a certificate signing request asks for, read so that an approver (the CSR API, the
/// node authorizer) can decide before [`Ca::sign_csr`] is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRequest {
    /// The requested user (CN) and groups (O).
    pub identity: Identity,
    /// Requested DNS SANs.
    pub dns_names: Vec<String>,
    /// Requested IP SANs.
    pub ip_addresses: Vec<IpAddr>,
}

impl CertificateRequest {
    /// Parses a PEM CSR and checks its self-signature (proof that the requester holds the key).
    ///
    /// # Errors
    /// [`Error::ParseCsr`] if it is not a PEM CSR, its signature does not verify, it has no
    /// CN, or it requests SANs other than DNS names and IP addresses.
    pub fn from_pem(csr_pem: &str) -> Result<CertificateRequest> {
        Ok(parse_csr(csr_pem)?.0)
    }
}

/// The cluster CA: signs serving and client certificates and CSRs.
///
/// # Guarantees
/// The key is ECDSA P-256 and matches the certificate; [`Ca::cert_pem`] returns the file's bytes
/// unchanged, so [`Ca::hash`] matches what a joining node computes over `/cacerts`.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
    signer: EcdsaKeyPair,
    /// Our CA re-built by rcgen from the file; only its name and key identifier are used, as
    /// the issuer of new certificates.
    issuer: rcgen::Certificate,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .field("hash", &self.hash())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `<dir>/<stem>.crt` and `<dir>/<stem>.key`, or creates them on first start.
    ///
    /// A new CA is a self-signed ECDSA P-256 certificate with subject `CN=<common_name>`,
    /// valid for [`CA_VALIDITY`], CA:true, keyCertSign/cRLSign. `dir` is created 0700, the
    /// key written 0600 and the certificate 0644, each atomically. Use k3s-style names, e.g.
    /// stem `server-ca` and CN `distro-server-ca@<unix time>`, so every cluster's CA differs.
    ///
    /// Blocking (file IO, key generation): call from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// IO errors with the path; [`Error::CaKeyMissing`] when only the certificate exists
    /// (we never replace a CA that may be trusted); [`Error::CaKeyMismatch`],
    /// [`Error::ParseCertificate`] or [`Error::ParseKey`] for unusable files. If only the key
    /// exists (a crash between the two writes), a certificate is created for it.
    pub fn load_or_create(dir: &Path, stem: &str, common_name: &str) -> Result<Ca> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        fsutil::ensure_dir(dir, PRIVATE_DIR_MODE)?;
        let cert = fsutil::read_optional(&cert_path)?;
        let key = fsutil::read_optional(&key_path)?;
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let cert = String::from_utf8(cert).map_err(|_| Error::ParseCertificate {
                    what: cert_path.display().to_string(),
                    reason: "not PEM text".to_string(),
                })?;
                let key = String::from_utf8(key).map_err(|_| Error::ParseKey {
                    what: key_path.display().to_string(),
                    reason: "not PEM text".to_string(),
                })?;
                Ca::from_parts(cert, &key, cert_path, key_path)
            }
            (Some(_), None) => Err(Error::CaKeyMissing {
                cert: cert_path,
                key: key_path,
            }),
            (None, Some(key)) => {
                tracing::warn!(key = %key_path.display(), "CA key without certificate; creating its certificate");
                let key_pem = String::from_utf8(key).map_err(|_| Error::ParseKey {
                    what: key_path.display().to_string(),
                    reason: "not PEM text".to_string(),
                })?;
                let key = parse_ca_key(&key_pem, &key_path)?;
                let cert_pem = self_signed_ca_pem(&key, common_name)?;
                fsutil::write_atomic(
                    &cert_path,
                    cert_pem.as_bytes(),
                    PUBLIC_FILE_MODE,
                    PRIVATE_DIR_MODE,
                )?;
                Ca::from_parts(cert_pem, &key_pem, cert_path, key_path)
            }
            (None, None) => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
                    Error::Generate {
                        what: format!("CA key {}", key_path.display()),
                        source,
                    }
                })?;
                let cert_pem = self_signed_ca_pem(&key, common_name)?;
                let key_pem = key.serialize_pem();
                // Key first: if we crash before the certificate is written, the next start
                // finds the key alone and completes the pair instead of refusing.
                fsutil::write_atomic(
                    &key_path,
                    key_pem.as_bytes(),
                    SECRET_FILE_MODE,
                    PRIVATE_DIR_MODE,
                )?;
                fsutil::write_atomic(
                    &cert_path,
                    cert_pem.as_bytes(),
                    PUBLIC_FILE_MODE,
                    PRIVATE_DIR_MODE,
                )?;
                tracing::info!(cert = %cert_path.display(), common_name, "created CA");
                Ca::from_parts(cert_pem, &key_pem, cert_path, key_path)
            }
        }
    }

    fn from_parts(
        cert_pem: String,
        key_pem: &str,
        cert_path: PathBuf,
        key_path: PathBuf,
    ) -> Result<Ca> {
        let what = cert_path.display().to_string();
        let cert_der = fsutil::first_cert_der(cert_pem.as_bytes(), &what)?;
        let key = parse_ca_key(key_pem, &key_path)?;
        let (_, x509) =
            X509Certificate::from_der(&cert_der).map_err(|e| Error::ParseCertificate {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        if !x509.is_ca() {
            return Err(Error::ParseCertificate {
                what,
                reason: "not a CA certificate (basicConstraints CA:false or missing)".to_string(),
            });
        }
        if x509.public_key().raw != key.public_key_der().as_slice() {
            return Err(Error::CaKeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let issuer = CertificateParams::from_ca_cert_der(&cert_der.as_slice().into())
            .and_then(|params| params.self_signed(&key))
            .map_err(|e| Error::ParseCertificate {
                what: what.clone(),
                reason: e.to_string(),
            })?;
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            key.serialized_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| Error::ParseKey {
            what: key_path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem,
            cert_der,
            key,
            signer,
            issuer,
            cert_path,
            key_path,
        })
    }

    /// The CA certificate as PEM, exactly the bytes of the file: what clients put in their
    /// trust store, kubeconfigs and `/cacerts`.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER, for rustls root stores.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA private key, PKCS#8 PEM. Secret: only for replicating the CA to other servers
    /// of an HA control plane.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Where the certificate lives, for components that take a CA file path
    /// (e.g. `--client-ca-file`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Where the key lives.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Lowercase hex SHA-256 of the CA certificate PEM bytes: k3s pins the CA in join tokens
    /// this way, and a joining node compares it with the hash of what `/cacerts` serves.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.cert_pem.as_bytes()))
    }

    /// Issues a certificate with a fresh ECDSA P-256 key.
    ///
    /// Blocking (key generation): call from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// [`Error::Generate`] for a SAN rcgen cannot encode (e.g. a non-ASCII DNS name),
    /// [`Error::Sign`] for a validity too long to represent.
    pub fn issue(&self, spec: &CertSpec) -> Result<CertKeyPair> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| Error::Generate {
                what: format!("key for {}", spec.common_name),
                source,
            })?;
        let der = self.sign_leaf(
            &key,
            &spec.common_name,
            &spec.organizations,
            &spec.dns_names,
            &spec.ip_addresses,
            spec.usage,
            spec.validity,
        )?;
        Ok(CertKeyPair {
            cert_pem: fsutil::pem_encode("CERTIFICATE", &der),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a PEM certificate signing request, for the CSR API and node join.
    ///
    /// The certificate gets the CSR's subject (CN, every O), public key and DNS/IP SANs; the
    /// usage and validity are ours, never the requester's, and the result is never a CA.
    /// With `expected`, the CSR's CN and set of O must equal it (e.g. `system:node:<name>` in
    /// `system:nodes`), so a token holder cannot ask for someone else's identity.
    ///
    /// # Assumptions
    /// The request was approved: without `expected`, any subject is signed, including
    /// `system:masters`. Approval policy is the caller's (CSR API, node authorizer).
    ///
    /// # Errors
    /// [`Error::ParseCsr`] (see [`CertificateRequest::from_pem`]), [`Error::CsrSubjectMismatch`],
    /// [`Error::Sign`].
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        usage: Usage,
        validity: Duration,
        expected: Option<&Identity>,
    ) -> Result<String> {
        let (request, public_key) = parse_csr(csr_pem)?;
        if let Some(expected) = expected {
            let mut want = expected.groups.clone();
            let mut got = request.identity.groups.clone();
            want.sort();
            got.sort();
            if expected.user != request.identity.user || want != got {
                return Err(Error::CsrSubjectMismatch {
                    expected: expected.to_string(),
                    actual: request.identity.to_string(),
                });
            }
        }
        let der = self.sign_leaf(
            &public_key,
            &request.identity.user,
            &request.identity.groups,
            &request.dns_names,
            &request.ip_addresses,
            usage,
            validity,
        )?;
        Ok(fsutil::pem_encode("CERTIFICATE", &der))
    }

    #[allow(clippy::too_many_arguments)] // one private call site per public entry point
    fn sign_leaf(
        &self,
        public_key: &impl PublicKeyData,
        common_name: &str,
        organizations: &[String],
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        usage: Usage,
        validity: Duration,
    ) -> Result<Vec<u8>> {
        let sign_err = |reason: String| Error::Sign {
            common_name: common_name.to_string(),
            reason,
        };
        let mut params = CertificateParams::default();
        // Placeholder; the real subject (with every O) is written by `der` below.
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        let (not_before, not_after) = validity_window(validity).map_err(sign_err)?;
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if usage.server() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if usage.client() {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        for name in dns_names {
            let ia5 = name.as_str().try_into().map_err(|source| Error::Generate {
                what: format!("DNS SAN {name:?} for {common_name}"),
                source,
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for ip in ip_addresses {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        let cert = params
            .signed_by(public_key, &self.issuer, &self.key)
            .map_err(|e| sign_err(e.to_string()))?;
        let subject = der::encode_name(common_name, organizations);
        der::replace_subject_and_sign(cert.der(), &subject, &self.signer)
            .map_err(|e| sign_err(e.to_string()))
    }

    /// Why `cert_der` is not a certificate this CA issued, or `None` if it is.
    fn not_issued_by_me(&self, cert: &X509Certificate<'_>) -> Option<String> {
        let Ok((_, me)) = X509Certificate::from_der(&self.cert_der) else {
            return Some("CA certificate unparsable".to_string());
        };
        if cert.issuer().as_raw() != me.subject().as_raw() {
            return Some("issued by another CA".to_string());
        }
        if cert.verify_signature(Some(me.public_key())).is_err() {
            return Some("signature does not verify with this CA".to_string());
        }
        None
    }
}

fn parse_ca_key(key_pem: &str, key_path: &Path) -> Result<KeyPair> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| Error::ParseKey {
        what: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(Error::ParseKey {
            what: key_path.display().to_string(),
            reason: "CA key must be ECDSA P-256".to_string(),
        });
    }
    Ok(key)
}

fn self_signed_ca_pem(key: &KeyPair, common_name: &str) -> Result<String> {
    let generate_err = |source| Error::Generate {
        what: format!("CA certificate {common_name}"),
        source,
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let (not_before, not_after) = validity_window(CA_VALIDITY).map_err(|reason| Error::Sign {
        common_name: common_name.to_string(),
        reason,
    })?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(key).map_err(generate_err)?;
    Ok(cert.pem())
}

fn validity_window(
    validity: Duration,
) -> std::result::Result<(OffsetDateTime, OffsetDateTime), String> {
    let now = OffsetDateTime::now_utc();
    let too_long = || format!("validity {validity:?} is too long");
    let backdate = time::Duration::try_from(BACKDATE).map_err(|_| too_long())?;
    let validity = time::Duration::try_from(validity).map_err(|_| too_long())?;
    let not_before = now.checked_sub(backdate).ok_or_else(too_long)?;
    let not_after = now.checked_add(validity).ok_or_else(too_long)?;
    Ok((not_before, not_after))
}

/// A random positive 16-byte serial: unique per certificate even when a key is re-certified
/// (rcgen's default derives the serial from the key).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn parse_csr(csr_pem: &str) -> Result<(CertificateRequest, rcgen::SubjectPublicKeyInfo)> {
    let bad = |reason: &str| Error::ParseCsr {
        reason: reason.to_string(),
    };
    let mut reader = csr_pem.as_bytes();
    let der = match rustls_pemfile::csr(&mut reader) {
        Ok(Some(der)) => der,
        Ok(None) => return Err(bad("no CERTIFICATE REQUEST block in PEM")),
        Err(e) => return Err(bad(&e.to_string())),
    };
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| bad(&e.to_string()))?;
    csr.verify_signature()
        .map_err(|_| bad("signature does not verify with the request's public key"))?;
    let info = &csr.certification_request_info;
    let (user, groups) = subject_identity(&info.subject).map_err(|e| match e {
        Error::NoCommonName => bad("subject has no common name"),
        other => other,
    })?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                        GeneralName::IPAddress(bytes) => {
                            ip_addresses.push(ip_from_bytes(bytes).ok_or_else(|| {
                                bad("IP address SAN is neither 4 nor 16 bytes long")
                            })?)
                        }
                        _ => return Err(bad("only DNS and IP address SANs can be requested")),
                    }
                }
            }
        }
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| bad(&format!("unsupported public key: {e}")))?;
    Ok((
        CertificateRequest {
            identity: Identity { user, groups },
            dns_names,
            ip_addresses,
        },
        public_key,
    ))
}

/// CN and every O of a name; the first CN wins, as in Go's `pkix.Name`.
pub(crate) fn subject_identity(
    name: &x509_parser::x509::X509Name<'_>,
) -> Result<(String, Vec<String>)> {
    let not_string = |what: &str| Error::ParseCertificate {
        what: what.to_string(),
        reason: "subject attribute is not a string".to_string(),
    };
    let user = match name.iter_common_name().next() {
        Some(cn) => cn.as_str().map_err(|_| not_string("subject CN"))?,
        None => return Err(Error::NoCommonName),
    };
    if user.is_empty() {
        return Err(Error::NoCommonName);
    }
    let groups = name
        .iter_organization()
        .map(|o| o.as_str().map(str::to_string))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| not_string("subject O"))?;
    Ok((user.to_string(), groups))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Loads `<dir>/<stem>.crt`/`.key` if they still fit `spec`, else issues and writes new ones.
///
/// Files are reused only if the key matches the certificate, this CA signed it, it is not
/// within 30 days (or a third of its lifetime, if shorter) of expiry, and its CN, set of O,
/// usage and SANs cover `spec` (extra SANs are fine). So adding a `--tls-san` or rotating the
/// CA regenerates the serving certificate at the next start, and old certificates renew
/// themselves. Unparsable files are replaced (they are derived data), with a warning.
///
/// The key is written 0600 and the certificate 0644, atomically; `dir` is created 0700.
/// Blocking: call from `spawn_blocking` in async code.
///
/// # Errors
/// IO errors with the path; the errors of [`Ca::issue`].
pub fn load_or_issue(ca: &Ca, dir: &Path, stem: &str, spec: &CertSpec) -> Result<CertKeyPair> {
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    fsutil::ensure_dir(dir, PRIVATE_DIR_MODE)?;
    let cert = fsutil::read_optional(&cert_path)?;
    let key = fsutil::read_optional(&key_path)?;
    if let (Some(cert), Some(key)) = (cert, key) {
        match (String::from_utf8(cert), String::from_utf8(key)) {
            (Ok(cert_pem), Ok(key_pem)) => match why_not_reusable(ca, &cert_pem, &key_pem, spec) {
                None => return Ok(CertKeyPair { cert_pem, key_pem }),
                Some(reason) => tracing::info!(
                    cert = %cert_path.display(),
                    reason = %reason,
                    "issuing a new certificate"
                ),
            },
            _ => {
                tracing::warn!(cert = %cert_path.display(), "certificate or key is not PEM text; replacing")
            }
        }
    }
    let pair = ca.issue(spec)?;
    fsutil::write_atomic(
        &key_path,
        pair.key_pem.as_bytes(),
        SECRET_FILE_MODE,
        PRIVATE_DIR_MODE,
    )?;
    fsutil::write_atomic(
        &cert_path,
        pair.cert_pem.as_bytes(),
        PUBLIC_FILE_MODE,
        PRIVATE_DIR_MODE,
    )?;
    Ok(pair)
}

fn why_not_reusable(ca: &Ca, cert_pem: &str, key_pem: &str, spec: &CertSpec) -> Option<String> {
    let der = match fsutil::first_cert_der(cert_pem.as_bytes(), "existing certificate") {
        Ok(der) => der,
        Err(e) => return Some(e.to_string()),
    };
    let cert = match X509Certificate::from_der(&der) {
        Ok((_, cert)) => cert,
        Err(e) => return Some(format!("unparsable certificate: {e}")),
    };
    match KeyPair::from_pem(key_pem) {
        Ok(key) if key.public_key_der().as_slice() == cert.public_key().raw => {}
        Ok(_) => return Some("key does not match certificate".to_string()),
        Err(e) => return Some(format!("unparsable key: {e}")),
    }
    if let Some(reason) = ca.not_issued_by_me(&cert) {
        return Some(reason);
    }

    let now = OffsetDateTime::now_utc().unix_timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let lifetime = not_after.saturating_sub(not_before);
    let renew_before = (RENEW_BEFORE.as_secs() as i64).min(lifetime / 3);
    if now >= not_after.saturating_sub(renew_before) {
        return Some(format!(
            "expires at {not_after} (unix time), renewing early"
        ));
    }
    if now < not_before {
        return Some("not valid yet".to_string());
    }

    match subject_identity(cert.subject()) {
        Ok((user, mut groups)) => {
            let mut want = spec.organizations.clone();
            want.sort();
            groups.sort();
            if user != spec.common_name || groups != want {
                return Some("subject changed".to_string());
            }
        }
        Err(_) => return Some("subject changed".to_string()),
    }

    let eku = match cert.extended_key_usage() {
        Ok(Some(eku)) => eku.value,
        _ => return Some("no extended key usage".to_string()),
    };
    if eku.server_auth != spec.usage.server() || eku.client_auth != spec.usage.client() {
        return Some("usage changed".to_string());
    }

    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => ips.extend(ip_from_bytes(b)),
                _ => {}
            }
        }
    }
    if let Some(missing) = spec
        .dns_names
        .iter()
        .find(|d| !dns.contains(&d.to_ascii_lowercase()))
    {
        return Some(format!("DNS name {missing} not covered"));
    }
    if let Some(missing) = spec.ip_addresses.iter().find(|ip| !ips.contains(ip)) {
        return Some(format!("IP address {missing} not covered"));
    }
    None
}
