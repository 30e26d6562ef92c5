//! The requesting side of certificate signing: a fresh key and a CSR for it (what a joining
//! node sends to the CSR API), and the check whether a certificate it got earlier can still
//! be used, so a restarted node reuses its credentials instead of asking again.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::ca::subject_identity;
use crate::error::{Error, Result};
use crate::fsutil;

/// A new ECDSA P-256 key and a PEM CSR for `CN=<common_name>, O=<organization>`, without
/// SANs (a client certificate names a user, not a host). Returns `(csr_pem, key_pem)`.
///
/// One `O` at most: rcgen keeps one value per attribute type, and a node needs only
/// `system:nodes`.
///
/// Blocking (key generation): call from `spawn_blocking` in async code.
///
/// # Errors
/// [`Error::Generate`] if the key or request cannot be built.
pub fn new_csr(common_name: &str, organization: Option<&str>) -> Result<(String, String)> {
    let generate = |source| Error::Generate {
        what: format!("certificate signing request for {common_name}"),
        source,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
    let mut dn = DistinguishedName::new();
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(generate)?;
    let pem = csr.pem().map_err(generate)?;
    Ok((pem, key.serialize_pem()))
}

/// A new ECDSA P-256 key and a PEM CSR for a serving certificate: `CN=<common_name>,
/// O=<organization>` with the DNS names and IP addresses the server is reached at as SANs
/// (a kubelet's `kubernetes.io/kubelet-serving` request). Returns `(csr_pem, key_pem)`.
///
/// Blocking (key generation): call from `spawn_blocking` in async code.
///
/// # Errors
/// [`Error::Generate`] if the key or request cannot be built (e.g. an invalid DNS name).
pub fn new_serving_csr(
    common_name: &str,
    organization: &str,
    dns_names: &[String],
    ip_addresses: &[std::net::IpAddr],
) -> Result<(String, String)> {
    let generate = |source| Error::Generate {
        what: format!("serving certificate signing request for {common_name}"),
        source,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = CertificateParams::new(dns_names.to_vec()).map_err(generate)?;
    params
        .subject_alt_names
        .extend(ip_addresses.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(generate)?;
    let pem = csr.pem().map_err(generate)?;
    Ok((pem, key.serialize_pem()))
}

/// Why a client certificate issued earlier cannot be reused for `user` in `groups`, or `None`
/// if it can: its key must match, `ca_pem` must have signed it, and it must be valid now and
/// for at least a third of its lifetime more (renewing well before expiry, as kubelets do).
pub fn why_not_reusable_client(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    user: &str,
    groups: &[&str],
) -> Option<String> {
    let der = match fsutil::first_cert_der(cert_pem.as_bytes(), "stored certificate") {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    let cert = match X509Certificate::from_der(&der) {
        Ok((_, c)) => c,
        Err(e) => return Some(format!("unparsable certificate: {e}")),
    };
    match KeyPair::from_pem(key_pem) {
        Ok(key) if key.public_key_der().as_slice() == cert.public_key().raw => {}
        Ok(_) => return Some("key does not match certificate".into()),
        Err(e) => return Some(format!("unparsable key: {e}")),
    }
    let ca_der = match fsutil::first_cert_der(ca_pem.as_bytes(), "cluster CA") {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    let ca = match X509Certificate::from_der(&ca_der) {
        Ok((_, c)) => c,
        Err(e) => return Some(format!("unparsable CA: {e}")),
    };
    if cert.verify_signature(Some(ca.public_key())).is_err() {
        return Some("not signed by the cluster CA".into());
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let lifetime = not_after.saturating_sub(not_before);
    if now < not_before || now >= not_after.saturating_sub(lifetime / 3) {
        return Some(format!("expires at {not_after} (unix time), renewing"));
    }
    match subject_identity(cert.subject()) {
        Ok((u, mut g)) => {
            let mut want: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
            want.sort();
            g.sort();
            if u != user || g != want {
                return Some(format!("issued to {u} {g:?}, not {user} {want:?}"));
            }
        }
        Err(e) => return Some(e.to_string()),
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ca, Usage, DEFAULT_CERT_VALIDITY};

    #[test]
    fn node_csr_is_signed_and_reusable_for_its_identity_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(tmp.path(), "ca", "test-ca").expect("ca");
        let (csr, key) = new_csr("system:node:n1", Some("system:nodes")).expect("csr");
        let req = crate::CertificateRequest::from_pem(&csr).expect("parse");
        assert_eq!(req.identity.user, "system:node:n1");
        assert_eq!(req.identity.groups, vec!["system:nodes".to_string()]);
        let cert = ca
            .sign_csr(&csr, Usage::Client, DEFAULT_CERT_VALIDITY, None)
            .expect("sign");
        let pem = ca.cert_pem();
        assert_eq!(
            why_not_reusable_client(&cert, &key, pem, "system:node:n1", &["system:nodes"]),
            None
        );
        assert!(
            why_not_reusable_client(&cert, &key, pem, "system:node:n2", &["system:nodes"])
                .is_some()
        );
        let other = Ca::load_or_create(tmp.path(), "other", "other-ca").expect("ca");
        assert!(why_not_reusable_client(
            &cert,
            &key,
            other.cert_pem(),
            "system:node:n1",
            &["system:nodes"]
        )
        .is_some());
        let (_, other_key) = new_csr("x", None).expect("csr");
        assert!(why_not_reusable_client(
            &cert,
            &other_key,
            pem,
            "system:node:n1",
            &["system:nodes"]
        )
        .is_some());
    }
}
