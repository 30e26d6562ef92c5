//! Unit tests for the whole crate; they share fixtures (a CA, a handshake pump).

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use serde_json::json;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

fn new_ca(dir: &Path) -> Ca {
    Ca::load_or_create(dir, "server-ca", "distro-server-ca@1700000000").expect("create CA")
}

fn cert_der(pem: &str) -> Vec<u8> {
    crate::fsutil::first_cert_der(pem.as_bytes(), "test").expect("PEM cert")
}

/// Asserts `cert_pem` is signed by `ca` and returns it parsed-out SANs.
fn assert_signed_by(ca: &Ca, cert_pem: &str) -> (Vec<String>, Vec<IpAddr>) {
    let der = cert_der(cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("parse leaf");
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).expect("parse CA");
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("signed by CA");
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    assert!(!cert.is_ca());
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")))
                }
                _ => {}
            }
        }
    }
    (dns, ips)
}

fn server_spec() -> CertSpec {
    CertSpec {
        dns_names: vec!["localhost".into(), "kubernetes.default.svc".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        ..CertSpec::new("kube-apiserver", Usage::Server)
    }
}

fn admin_spec() -> CertSpec {
    CertSpec {
        organizations: vec!["system:masters".into(), "distro:admins".into()],
        ..CertSpec::new("system:admin", Usage::Client)
    }
}

/// Runs a TLS handshake in memory; returns the server side for inspection, or the first error.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(ServerConnection, ClientConnection), String> {
    let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut client = ClientConnection::new(client, name).map_err(|e| e.to_string())?;
    let mut server = ServerConnection::new(server).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).map_err(|e| e.to_string())?;
            server
                .process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
        }
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        let mut slice = &buf[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).map_err(|e| e.to_string())?;
            client
                .process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return Ok((server, client));
        }
    }
    Err("handshake did not finish".to_string())
}

// ---- CA ----

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Ca>();
    check::<TokenSigner>();
    check::<EncryptionKey>();
    check::<Error>();
}

#[test]
fn ca_is_created_once_then_loaded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("server/tls");
    let ca = new_ca(&dir);
    let again = Ca::load_or_create(&dir, "server-ca", "ignored-on-load").expect("load");
    assert_eq!(ca.cert_pem(), again.cert_pem());
    assert_eq!(ca.hash(), again.hash());

    let crt = dir.join("server-ca.crt");
    let key = dir.join("server-ca.key");
    assert_eq!(ca.cert_path(), crt);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&crt), 0o644);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("server")), 0o700);

    let file = std::fs::read(&crt).expect("read crt");
    assert_eq!(ca.hash(), hex::encode(Sha256::digest(&file)));
    assert_eq!(ca.hash().len(), 64);

    let (_, cert) = X509Certificate::from_der(ca.cert_der()).expect("parse");
    assert!(cert.is_ca());
    let (user, _) = crate::ca::subject_identity(cert.subject()).expect("subject");
    assert_eq!(user, "distro-server-ca@1700000000");
    let ku = cert.key_usage().expect("ku").expect("has ku").value;
    assert!(ku.key_cert_sign());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(lifetime >= CA_VALIDITY.as_secs() as i64);
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 2);
}

#[test]
fn ca_with_missing_key_is_refused_and_key_alone_is_completed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let key_pem = ca.key_pem();
    std::fs::remove_file(ca.key_path()).expect("rm key");
    let err = Ca::load_or_create(tmp.path(), "server-ca", "x").expect_err("must refuse");
    assert!(matches!(err, Error::CaKeyMissing { .. }), "{err}");

    std::fs::remove_file(ca.cert_path()).expect("rm crt");
    std::fs::write(ca.key_path(), &key_pem).expect("restore key");
    let completed = Ca::load_or_create(tmp.path(), "server-ca", "x").expect("complete");
    assert_eq!(completed.key_pem(), key_pem);
}

#[test]
fn ca_with_foreign_key_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let other = Ca::load_or_create(&tmp.path().join("o"), "other", "other").expect("other");
    std::fs::write(ca.key_path(), other.key_pem()).expect("swap key");
    let err = Ca::load_or_create(tmp.path(), "server-ca", "x").expect_err("mismatch");
    assert!(matches!(err, Error::CaKeyMismatch { .. }), "{err}");
}

// ---- issuing ----

#[test]
fn issued_certificates_carry_spec() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let pair = ca.issue(&server_spec()).expect("issue");
    assert!(pair.key_pem.contains("PRIVATE KEY"));
    assert!(!format!("{pair:?}").contains("PRIVATE KEY"));
    let (dns, ips) = assert_signed_by(&ca, &pair.cert_pem);
    assert_eq!(dns, vec!["localhost", "kubernetes.default.svc"]);
    assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);

    let admin = ca.issue(&admin_spec()).expect("issue");
    assert_signed_by(&ca, &admin.cert_pem);
    let id = Identity::from_cert_der(&cert_der(&admin.cert_pem)).expect("identity");
    assert_eq!(id.user, "system:admin");
    assert_eq!(id.groups, vec!["system:masters", "distro:admins"]);
    assert_eq!(
        id.to_string(),
        "CN=system:admin,O=system:masters,O=distro:admins"
    );
}

#[test]
fn absurd_validity_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let spec = CertSpec {
        validity: Duration::from_secs(u64::MAX),
        ..server_spec()
    };
    assert!(matches!(ca.issue(&spec), Err(Error::Sign { .. })));
}

fn csr(cn: &str, orgs: &[&str], sans: &[&str]) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    let mut dn = DistinguishedName::new();
    // rcgen holds one value per attribute type; one O is enough to test the mapping.
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

#[test]
fn csr_signing_keeps_subject_and_is_verified_by_ca() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let csr_pem = csr(
        "system:node:worker-1",
        &["system:nodes"],
        &["worker-1", "10.0.0.7"],
    );
    let req = CertificateRequest::from_pem(&csr_pem).expect("parse csr");
    assert_eq!(req.identity.user, "system:node:worker-1");
    assert_eq!(req.dns_names, vec!["worker-1"]);

    let expected = Identity {
        user: "system:node:worker-1".into(),
        groups: vec!["system:nodes".into()],
    };
    let cert_pem = ca
        .sign_csr(
            &csr_pem,
            Usage::ServerAndClient,
            Duration::from_secs(3600),
            Some(&expected),
        )
        .expect("sign");
    let (dns, ips) = assert_signed_by(&ca, &cert_pem);
    assert_eq!(dns, vec!["worker-1"]);
    assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7))]);
    let id = Identity::from_cert_der(&cert_der(&cert_pem)).expect("identity");
    assert_eq!(id, expected);

    // The certificate carries the CSR's key, not a new one.
    let issued_der = cert_der(&cert_pem);
    let (_, issued) = X509Certificate::from_der(&issued_der).expect("parse");
    let csr_der = rustls_pemfile::csr(&mut csr_pem.as_bytes())
        .expect("pem")
        .expect("csr block");
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr_der.as_ref())
            .expect("parse csr");
    assert_eq!(
        issued.public_key().raw,
        parsed.certification_request_info.subject_pki.raw
    );
}

#[test]
fn csr_for_someone_else_or_garbage_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let expected = Identity {
        user: "system:node:worker-1".into(),
        groups: vec!["system:nodes".into()],
    };
    let other = csr("system:node:worker-2", &["system:nodes"], &[]);
    let err = ca
        .sign_csr(
            &other,
            Usage::Client,
            Duration::from_secs(60),
            Some(&expected),
        )
        .expect_err("mismatch");
    assert!(matches!(err, Error::CsrSubjectMismatch { .. }), "{err}");
    assert!(err.to_string().contains("worker-2"));

    let escalate = csr("system:node:worker-1", &["system:masters"], &[]);
    assert!(ca
        .sign_csr(
            &escalate,
            Usage::Client,
            Duration::from_secs(60),
            Some(&expected)
        )
        .is_err());

    for garbage in [
        "",
        "not pem",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        let err = ca
            .sign_csr(garbage, Usage::Client, Duration::from_secs(60), None)
            .expect_err("garbage");
        assert!(matches!(err, Error::ParseCsr { .. }), "{err}");
    }
    let no_cn = csr("", &["x"], &[]);
    assert!(matches!(
        ca.sign_csr(&no_cn, Usage::Client, Duration::from_secs(60), None),
        Err(Error::ParseCsr { .. })
    ));
}

#[test]
fn load_or_issue_reuses_and_regenerates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(&tmp.path().join("ca"));
    let dir = tmp.path().join("tls");
    let spec = server_spec();

    let first = load_or_issue(&ca, &dir, "serving-kube-apiserver", &spec).expect("first");
    assert_eq!(mode(&dir.join("serving-kube-apiserver.key")), 0o600);
    assert_eq!(mode(&dir.join("serving-kube-apiserver.crt")), 0o644);
    let same = load_or_issue(&ca, &dir, "serving-kube-apiserver", &spec).expect("again");
    assert_eq!(first, same, "unchanged spec must reuse files");

    // Fewer SANs are still covered.
    let subset = CertSpec {
        dns_names: vec!["LOCALHOST".into()],
        ..spec.clone()
    };
    assert_eq!(
        load_or_issue(&ca, &dir, "serving-kube-apiserver", &subset).expect("subset"),
        first
    );

    // A new --tls-san regenerates.
    let mut more = spec.clone();
    more.dns_names.push("api.example.com".into());
    let regenerated = load_or_issue(&ca, &dir, "serving-kube-apiserver", &more).expect("more");
    assert_ne!(regenerated, first);
    let (dns, _) = assert_signed_by(&ca, &regenerated.cert_pem);
    assert!(dns.contains(&"api.example.com".to_string()));
    let on_disk = std::fs::read_to_string(dir.join("serving-kube-apiserver.crt")).expect("read");
    assert_eq!(on_disk, regenerated.cert_pem);

    // A changed usage or subject regenerates.
    let client = CertSpec {
        usage: Usage::ServerAndClient,
        ..more.clone()
    };
    assert_ne!(
        load_or_issue(&ca, &dir, "serving-kube-apiserver", &client).expect("usage"),
        regenerated
    );

    // Near expiry regenerates: a 1 s certificate is always within a third of its lifetime.
    let short = CertSpec {
        validity: Duration::from_secs(1),
        ..admin_spec()
    };
    let a = load_or_issue(&ca, &dir, "client-admin", &short).expect("short");
    let b = load_or_issue(&ca, &dir, "client-admin", &short).expect("short again");
    assert_ne!(a, b);

    // Another CA regenerates; garbage on disk is replaced.
    let other = Ca::load_or_create(&tmp.path().join("ca2"), "server-ca", "other").expect("ca2");
    let by_other = load_or_issue(&other, &dir, "serving-kube-apiserver", &more).expect("other");
    assert_signed_by(&other, &by_other.cert_pem);
    std::fs::write(dir.join("serving-kube-apiserver.crt"), "garbage").expect("write");
    let fixed = load_or_issue(&other, &dir, "serving-kube-apiserver", &more).expect("fixed");
    assert_signed_by(&other, &fixed.cert_pem);
}

// ---- TLS ----

#[test]
fn handshake_maps_client_certificate_to_identity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server_ca = new_ca(&tmp.path().join("s"));
    let client_ca = Ca::load_or_create(&tmp.path().join("c"), "client-ca", "client").expect("ca");
    let serving = server_ca.issue(&server_spec()).expect("serving");
    let admin = client_ca.issue(&admin_spec()).expect("admin");
    let server_cfg = server_tls_config(&server_ca, &serving, Some(&client_ca)).expect("server");

    // With a client certificate: the server sees who it is.
    let client_cfg = client_tls_config(server_ca.cert_pem(), Some(&admin)).expect("client");
    let (server, _) = handshake(server_cfg.clone(), client_cfg, "localhost").expect("handshake");
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    let peer = server
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("peer cert");
    let id = Identity::from_cert_der(peer).expect("identity");
    assert_eq!(id.user, "system:admin");
    assert_eq!(id.groups, vec!["system:masters", "distro:admins"]);

    // Without one (bearer-token clients), over an IP SAN: allowed, anonymous at TLS level.
    let anon_cfg = client_tls_config(server_ca.cert_pem(), None).expect("client");
    let (server, _) = handshake(server_cfg.clone(), anon_cfg, "127.0.0.1").expect("handshake");
    assert!(server.peer_certificates().is_none());

    // A client certificate from another CA fails the handshake.
    let rogue = server_ca.issue(&admin_spec()).expect("rogue");
    let rogue_cfg = client_tls_config(server_ca.cert_pem(), Some(&rogue)).expect("client");
    assert!(handshake(server_cfg.clone(), rogue_cfg, "localhost").is_err());

    // A serving-only certificate cannot be used as a client certificate.
    let not_client = client_ca.issue(&server_spec()).expect("server usage");
    let cfg = client_tls_config(server_ca.cert_pem(), Some(&not_client)).expect("client");
    assert!(handshake(server_cfg.clone(), cfg, "localhost").is_err());

    // A name the serving certificate does not cover fails on the client.
    let cfg = client_tls_config(server_ca.cert_pem(), None).expect("client");
    let err = handshake(server_cfg, cfg, "other.example").expect_err("bad name");
    assert!(err.starts_with("client:"), "{err}");

    // Without a client CA, no certificate is requested.
    let cfg = server_tls_config(&server_ca, &serving, None).expect("server");
    let client_cfg = client_tls_config(server_ca.cert_pem(), Some(&admin)).expect("client");
    let (server, _) = handshake(cfg, client_cfg, "localhost").expect("handshake");
    assert!(server.peer_certificates().is_none());
}

#[test]
fn tls_configs_reject_bad_pem() {
    assert!(client_tls_config("nope", None).is_err());
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let bad = CertKeyPair {
        cert_pem: ca.cert_pem().to_string(),
        key_pem: "nope".into(),
    };
    assert!(matches!(
        server_tls_config(&ca, &bad, None),
        Err(Error::ParseKey { .. })
    ));
    assert!(Identity::from_cert_der(b"nope").is_err());
}

// ---- kubeconfig ----

#[test]
fn kubeconfig_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(&tmp.path().join("tls"));
    let admin = ca.issue(&admin_spec()).expect("admin");
    let path = tmp.path().join("etc/distro/distro.yaml");
    let cred = Credential::ClientCert {
        cert_pem: admin.cert_pem.clone(),
        key_pem: admin.key_pem.clone(),
    };
    write_kubeconfig(
        &path,
        0o600,
        "default",
        "https://127.0.0.1:6443",
        ca.cert_pem(),
        "default",
        &cred,
    )
    .expect("write");
    assert_eq!(mode(&path), 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    for key in [
        "apiVersion: v1",
        "kind: Config",
        "current-context: default",
        "certificate-authority-data: ",
        "client-certificate-data: ",
        "client-key-data: ",
        "server: https://127.0.0.1:6443",
    ] {
        assert!(text.contains(key), "missing {key:?} in\n{text}");
    }

    let config = read_kubeconfig(&path).expect("read back");
    let (cluster, user) = config.current(&path).expect("current");
    assert_eq!(cluster.server, "https://127.0.0.1:6443");
    let ca_pem = Kubeconfig::decode_data(
        cluster
            .certificate_authority_data
            .as_deref()
            .expect("ca data"),
        &path,
    )
    .expect("decode");
    assert_eq!(ca_pem, ca.cert_pem());
    let key = Kubeconfig::decode_data(user.client_key_data.as_deref().expect("key"), &path)
        .expect("decode");
    assert_eq!(key, admin.key_pem);
    assert!(!format!("{user:?}").contains(&user.client_key_data.clone().unwrap_or_default()));

    // Token variant, looser mode, overwriting atomically.
    write_kubeconfig(
        &path,
        0o644,
        "default",
        "https://10.0.0.1:6443",
        ca.cert_pem(),
        "bob",
        &Credential::Token("abc.def".into()),
    )
    .expect("rewrite");
    assert_eq!(mode(&path), 0o644);
    let config = read_kubeconfig(&path).expect("read back");
    let (_, user) = config.current(&path).expect("current");
    assert_eq!(user.token.as_deref(), Some("abc.def"));
    assert!(user.client_key_data.is_none());
    assert_eq!(
        std::fs::read_dir(path.parent().expect("parent"))
            .expect("ls")
            .count(),
        1
    );

    assert!(read_kubeconfig(&tmp.path().join("missing")).is_err());
}

// ---- join tokens ----

#[test]
fn join_token_round_trip_and_ca_pinning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = new_ca(tmp.path());
    let token = JoinToken::generate(&ca, "node").expect("generate");
    assert_eq!(token.secret.len(), 32);
    assert!(token.secret.bytes().all(|b| b.is_ascii_hexdigit()));
    let text = token.to_string();
    assert_eq!(text, format!("K10{}::node:{}", ca.hash(), token.secret));
    let parsed: JoinToken = text.parse().expect("parse");
    assert_eq!(parsed, token);
    assert!(!format!("{token:?}").contains(&token.secret));
    assert!(parsed.secret_matches(&token.secret));
    assert!(!parsed.secret_matches("nope"));

    parsed.verify_ca(ca.cert_pem().as_bytes()).expect("same CA");
    let other = Ca::load_or_create(&tmp.path().join("o"), "server-ca", "other").expect("other");
    let err = parsed
        .verify_ca(other.cert_pem().as_bytes())
        .expect_err("other CA");
    let msg = err.to_string();
    assert!(msg.contains("CA hash mismatch"), "{msg}");
    assert!(
        msg.contains(&ca.hash()) && msg.contains(&other.hash()),
        "{msg}"
    );
}

#[test]
fn join_token_accepts_k3s_forms_and_rejects_malformed() {
    let hash = "ab".repeat(32);
    let good: &[(&str, Option<&str>, &str, &str)] = &[
        ("s3cret", None, DEFAULT_USERNAME, "s3cret"),
        ("bob:s3cret\n", None, "bob", "s3cret"),
        ("K10::server:s3cret", None, "server", "s3cret"),
        (&format!("K10{hash}::node:x:y"), Some(&hash), "node", "x:y"),
        (
            &format!("K10{}::server:s", hash.to_uppercase()),
            Some(&hash),
            "server",
            "s",
        ),
    ];
    for (input, ca_hash, username, secret) in good {
        let t: JoinToken = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(t.ca_hash.as_deref(), *ca_hash, "{input:?}");
        assert_eq!(t.username, *username, "{input:?}");
        assert_eq!(t.secret, *secret, "{input:?}");
    }
    let bad = [
        "",
        "   ",
        "K10abc::server:s",             // short hash
        &format!("K10{hash}server:s"),  // no ::
        &format!("K10{hash}::server:"), // empty secret
        &format!("K10{hash}:::s"),      // empty user
        "bob:has space",
        &format!("K10{}::server:s", "zz".repeat(32)), // not hex
    ];
    for input in bad {
        let err = input.parse::<JoinToken>().expect_err(input);
        assert!(matches!(err, Error::InvalidJoinToken { .. }), "{input:?}");
    }
    let bare: JoinToken = "s3cret".parse().expect("bare");
    bare.verify_ca(b"anything")
        .expect("unpinned tokens pin nothing");
}

// ---- service-account tokens ----

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[test]
fn jwt_round_trip_and_stable_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("keys/service.key");
    let signer = TokenSigner::load_or_create(&path).expect("create");
    assert_eq!(mode(&path), 0o600);
    assert!(std::fs::read_to_string(&path)
        .expect("read")
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let claims = json!({"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:default:x", "exp": now() + 600});
    let token = signer.sign(&claims).expect("sign");
    assert_eq!(signer.verify(&token).expect("verify"), claims);

    let header: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().expect("header"),
        )
        .expect("b64"),
    )
    .expect("json");
    assert_eq!(header, json!({"alg": "ES256", "kid": signer.key_id()}));

    let reloaded = TokenSigner::load_or_create(&path).expect("reload");
    assert_eq!(reloaded.key_id(), signer.key_id());
    assert_eq!(reloaded.verify(&token).expect("verify"), claims);
    assert!(reloaded
        .public_key_pem()
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    let jwk = signer.public_key_jwk();
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["kid"], signer.key_id());
    for c in ["x", "y"] {
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwk[c].as_str().expect("coordinate"),
        )
        .expect("b64");
        assert_eq!(bytes.len(), 32);
    }
    assert!(signer.sign(&json!("not an object")).is_err());
}

#[test]
fn jwt_rejections() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let signer = TokenSigner::load_or_create(&tmp.path().join("sa.key")).expect("create");
    let other = TokenSigner::load_or_create(&tmp.path().join("other.key")).expect("create");
    let b64 = |v: &serde_json::Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let rejection = |token: &str| match signer.verify(token) {
        Err(Error::TokenRejected(r)) => r,
        other => panic!("expected rejection, got {other:?}"),
    };

    let token = signer
        .sign(&json!({"sub": "a", "exp": now() + 600}))
        .expect("sign");
    let parts: Vec<&str> = token.split('.').collect();

    // Tampered claims keep the old signature.
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&json!({"sub": "admin", "exp": now() + 600})),
        parts[2]
    );
    assert_eq!(rejection(&tampered), TokenRejection::BadSignature);

    // Another key with the same kid claim.
    let forged = other.sign(&json!({"sub": "a"})).expect("sign");
    let forged_parts: Vec<&str> = forged.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_parts[1], forged_parts[2]);
    assert_eq!(rejection(&forged), TokenRejection::BadSignature);
    assert!(matches!(
        rejection(&other.sign(&json!({})).expect("sign")),
        TokenRejection::UnknownKeyId(_)
    ));

    // alg none.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none"})),
        b64(&json!({"sub": "a"}))
    );
    assert_eq!(
        rejection(&none),
        TokenRejection::UnsupportedAlgorithm("none".into())
    );

    // Expired and not yet valid, beyond the skew; within the skew is fine.
    let expired = signer.sign(&json!({"exp": now() - 3600})).expect("sign");
    assert!(matches!(
        rejection(&expired),
        TokenRejection::Expired { .. }
    ));
    let future = signer.sign(&json!({"nbf": now() + 3600})).expect("sign");
    assert!(matches!(
        rejection(&future),
        TokenRejection::NotYetValid { .. }
    ));
    let skewed = signer.sign(&json!({"exp": now() - 10})).expect("sign");
    signer.verify(&skewed).expect("within skew");
    let t = signer.sign(&json!({"exp": 1000})).expect("sign");
    signer.verify_at(&t, 1000).expect("at exp");
    assert!(signer.verify_at(&t, 1000 + CLOCK_SKEW_SECS + 1).is_err());

    for malformed in [
        "",
        "a.b",
        "a.b.c.d",
        "!!.!!.!!",
        &format!("{}.e30", parts[0]),
    ] {
        assert!(
            matches!(rejection(malformed), TokenRejection::Malformed(_)),
            "{malformed:?}"
        );
    }
    let bad_exp = signer.sign(&json!({"exp": "soon"})).expect("sign");
    assert!(matches!(rejection(&bad_exp), TokenRejection::Malformed(_)));
}

#[test]
fn jwt_bad_key_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("sa.key");
    std::fs::write(&path, "garbage").expect("write");
    assert!(matches!(
        TokenSigner::load_or_create(&path),
        Err(Error::SigningKey { .. })
    ));
}

// ---- encryption at rest ----

#[test]
fn encryption_round_trip_and_tamper() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("cred/encryption.key");
    let key = EncryptionKey::load_or_create(&path).expect("create");
    assert_eq!(mode(&path), 0o600);

    let secret = b"{\"kind\":\"Secret\",\"data\":{\"password\":\"aHVudGVyMg==\"}}";
    let sealed = key.encrypt(secret).expect("encrypt");
    assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(is_encrypted(&sealed));
    assert!(!is_encrypted(secret));
    assert_eq!(sealed.len(), 23 + 12 + secret.len() + 16);
    assert_ne!(
        key.encrypt(secret).expect("encrypt"),
        sealed,
        "random nonce"
    );
    assert_eq!(key.decrypt(&sealed).expect("decrypt"), secret);
    assert_eq!(key.decrypt(&key.encrypt(b"").expect("e")).expect("d"), b"");

    let reloaded = EncryptionKey::load_or_create(&path).expect("reload");
    assert_eq!(reloaded.decrypt(&sealed).expect("decrypt"), secret);

    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(key.decrypt(&tampered), Err(Error::Decrypt { .. })));
    let other = EncryptionKey::load_or_create(&tmp.path().join("other.key")).expect("other");
    assert!(other.decrypt(&sealed).is_err());
    assert!(key.decrypt(b"plain").is_err());
    assert!(key.decrypt(b"k8s:enc:aesgcm:v1:key2:012345678901").is_err());
    assert!(key.decrypt(b"k8s:enc:aesgcm:v1:key1:short").is_err());

    let bound = key
        .encrypt_with_aad(secret, b"/registry/secrets/default/a")
        .expect("e");
    assert_eq!(
        key.decrypt_with_aad(&bound, b"/registry/secrets/default/a")
            .expect("d"),
        secret
    );
    assert!(key
        .decrypt_with_aad(&bound, b"/registry/secrets/default/b")
        .is_err());

    std::fs::write(&path, "c2hvcnQ=\n").expect("write short key");
    assert!(matches!(
        EncryptionKey::load_or_create(&path),
        Err(Error::EncryptionKey { .. })
    ));
}
