//! Joining: trust the server only through the join token, then obtain a node identity.
//!
//! As k3s: `GET /cacerts` is fetched without verifying TLS (we cannot yet), and its SHA-256 must
//! equal the hash the token pins; from then on only that CA is trusted. The node's client
//! certificate comes from the CSR API, requested with the join secret as bearer token and
//! approved and signed by the server's certificate controller, as a kubelet's TLS bootstrap.
//! Credentials are stored under `<data-dir>/agent/` and reused while valid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_client::{Client, Endpoint};
use distro_pki::{CertKeyPair, Credential, JoinToken};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Error;

/// The group every node is in.
pub const NODES_GROUP: &str = "system:nodes";

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long to wait for the server to sign a request before giving up.
const CSR_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest `/cacerts` answer accepted (a CA bundle is a few KiB).
const MAX_CACERTS: u64 = 1024 * 1024;

/// Fetches the server's CA and checks it against the token's pin.
///
/// # Errors
/// [`Error::FetchCa`] if the server cannot be asked; [`Error::CaMismatch`] if it serves
/// another CA than the token pins.
pub async fn trusted_ca(url: &str, token: &JoinToken) -> Result<String, Error> {
    let body = fetch_cacerts(url).await.map_err(|source| Error::FetchCa {
        url: url.to_string(),
        source,
    })?;
    if let Err(distro_pki::Error::CaHashMismatch { expected, actual }) = token.verify_ca(&body) {
        return Err(Error::CaMismatch {
            url: url.to_string(),
            expected,
            actual,
        });
    }
    String::from_utf8(body).map_err(|_| Error::FetchCa {
        url: url.to_string(),
        source: std::io::Error::other("/cacerts is not PEM text"),
    })
}

/// `GET <url>/cacerts` over TLS that accepts any server certificate: the body is verified by
/// its hash instead.
async fn fetch_cacerts(url: &str) -> std::io::Result<Vec<u8>> {
    let uri: http::Uri = url.parse().map_err(std::io::Error::other)?;
    let host = uri
        .host()
        .ok_or_else(|| std::io::Error::other("the --join URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(6443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(std::io::Error::other)?;
    let connector = tokio_rustls::TlsConnector::from(
        distro_pki::insecure_client_tls_config().map_err(std::io::Error::other)?,
    );
    let mut tls = connector.connect(name, tcp).await?;
    let request = format!(
        "GET /cacerts HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tls.take(MAX_CACERTS).read_to_end(&mut raw).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(&raw).map_err(std::io::Error::other)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err(std::io::Error::other("truncated response")),
    };
    if resp.code != Some(200) {
        return Err(std::io::Error::other(format!(
            "the server answered {} (is --join a distro server?)",
            resp.code.unwrap_or(0)
        )));
    }
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = &raw[head..];
    Ok(match len {
        Some(n) if n <= body.len() => body[..n].to_vec(),
        _ => body.to_vec(),
    })
}

/// Where a node's client certificate and key are kept.
fn cert_paths(dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("client-kubelet-{node}.crt")),
        dir.join(format!("client-kubelet-{node}.key")),
    )
}

/// Path of the route that checks node passwords (k3s' node-password check).
const NODE_PASSWORD_PATH: &str = "/v1-distro/node-password/";

/// This agent's node password (`<dir>/node-password`), made on first use: it proves to the
/// server that a node name is this agent's, so another machine cannot take it over.
///
/// # Errors
/// [`Error::Io`] for the file.
pub async fn node_password(dir: &Path) -> Result<String, Error> {
    let path = dir.join("node-password");
    match tokio::fs::read_to_string(&path).await {
        Ok(p) if !p.trim().is_empty() => return Ok(p.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Io { path, source }),
    }
    let password = hex::encode(rand::random::<[u8; 16]>());
    let (dir, p) = (dir.to_path_buf(), password.clone());
    tokio::task::spawn_blocking(move || write_private(&dir, &path, p.as_bytes())).await??;
    Ok(password)
}

/// Claims `node`'s name with `password`: refused (403, saying what to do) if another agent
/// holds the name of a live Node.
///
/// # Errors
/// [`Error::Api`] with the server's message, [`Error::TokenRefused`] for a bad token.
pub async fn claim_node_name(client: &Client, node: &str, password: &str) -> Result<(), Error> {
    let req = http::Request::post(format!("{NODE_PASSWORD_PATH}{node}"))
        .header("distro-node-password", password)
        .body(Vec::new())
        .map_err(|e| Error::Api {
            step: format!("claiming node name {node}"),
            source: kube::Error::HttpError(e),
        })?;
    client
        .request_text(req)
        .await
        .map(|_| ())
        .map_err(Error::api(format!("claiming node name {node}")))
}

/// The client credentials of `node`: the stored ones if still valid for this CA and name,
/// else new ones from the CSR API (then stored), after claiming the name with `password`.
///
/// # Errors
/// [`Error::Io`] for the files, [`Error::Api`] / [`Error::CsrRefused`] / [`Error::CsrTimeout`]
/// for the request.
pub async fn node_credentials(
    bootstrap: &Client,
    dir: &Path,
    ca_pem: &str,
    node: &str,
    password: &str,
) -> Result<CertKeyPair, Error> {
    let user = format!("system:node:{node}");
    let (cert_path, key_path) = cert_paths(dir, node);
    if let (Ok(cert_pem), Ok(key_pem)) = (
        tokio::fs::read_to_string(&cert_path).await,
        tokio::fs::read_to_string(&key_path).await,
    ) {
        match distro_pki::why_not_reusable_client(
            &cert_pem,
            &key_pem,
            ca_pem,
            &user,
            &[NODES_GROUP],
        ) {
            None => {
                tracing::debug!(%node, "reusing the stored client certificate");
                return Ok(CertKeyPair { cert_pem, key_pem });
            }
            Some(reason) => tracing::info!(%node, %reason, "requesting a new client certificate"),
        }
    }
    // The name first: no certificate for a name another agent holds.
    claim_node_name(bootstrap, node, password).await?;
    let cn = user.clone();
    let (csr_pem, key_pem) =
        tokio::task::spawn_blocking(move || distro_pki::new_csr(&cn, Some(NODES_GROUP)))
            .await?
            .map_err(Error::Pki)?;
    let pair = request_certificate(
        bootstrap,
        &user,
        csr_pem,
        key_pem,
        KUBELET_CLIENT_SIGNER,
        &["digital signature", "client auth"],
    )
    .await?;
    let (dir, pair2) = (dir.to_path_buf(), pair.clone());
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        write_private(&dir, &key_path, pair2.key_pem.as_bytes())?;
        write_private(&dir, &cert_path, pair2.cert_pem.as_bytes())
    })
    .await??;
    Ok(pair)
}

/// Writes `data` to `path` atomically with mode 0600 (directory 0700).
pub(crate) fn write_private(dir: &Path, path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// A serving certificate for `node`'s kubelet API reachable at `ip`, signed by the cluster CA
/// through a `kubernetes.io/kubelet-serving` request the node makes as itself (approved by
/// the server's certificate controller), so the API server can verify the kubelet. Stored
/// under `dir` per node and address, and reused while valid, as [`node_credentials`].
///
/// # Errors
/// As [`node_credentials`].
pub async fn serving_certificate(
    client: &Client,
    dir: &Path,
    ca_pem: &str,
    node: &str,
    ip: std::net::IpAddr,
) -> Result<CertKeyPair, Error> {
    let user = format!("system:node:{node}");
    // The address is part of the name: a node that moved asks for a certificate naming it.
    let stem = format!("serving-kubelet-{node}-{ip}");
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    if let (Ok(cert_pem), Ok(key_pem)) = (
        tokio::fs::read_to_string(&cert_path).await,
        tokio::fs::read_to_string(&key_path).await,
    ) {
        match distro_pki::why_not_reusable_client(
            &cert_pem,
            &key_pem,
            ca_pem,
            &user,
            &[NODES_GROUP],
        ) {
            None => return Ok(CertKeyPair { cert_pem, key_pem }),
            Some(reason) => {
                tracing::info!(%node, %reason, "requesting a new kubelet serving certificate")
            }
        }
    }
    let pair = request_serving(client, node, &user, ip).await?;
    let (dir, pair2) = (dir.to_path_buf(), pair.clone());
    tokio::task::spawn_blocking(move || -> Result<(), Error> {
        write_private(&dir, &key_path, pair2.key_pem.as_bytes())?;
        write_private(&dir, &cert_path, pair2.cert_pem.as_bytes())
    })
    .await??;
    Ok(pair)
}

async fn request_serving(
    client: &Client,
    node: &str,
    user: &str,
    ip: std::net::IpAddr,
) -> Result<CertKeyPair, Error> {
    let user = user.to_string();
    let (cn, dns) = (user.clone(), vec![node.to_string()]);
    let (csr_pem, key_pem) = tokio::task::spawn_blocking(move || {
        distro_pki::new_serving_csr(&cn, NODES_GROUP, &dns, &[ip])
    })
    .await?
    .map_err(Error::Pki)?;
    request_certificate(
        client,
        &user,
        csr_pem,
        key_pem,
        KUBELET_SERVING_SIGNER,
        &["digital signature", "server auth"],
    )
    .await
}

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Sends `csr_pem` (for `user`) to `signer` and waits until it is signed.
async fn request_certificate(
    client: &Client,
    user: &str,
    csr_pem: String,
    key_pem: String,
    signer: &str,
    usages: &[&str],
) -> Result<CertKeyPair, Error> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(Error::api(format!(
            "creating a certificate request for {user}"
        )))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, %user, "waiting for the server to approve and sign the certificate request");
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let current = api
            .get(&name)
            .await
            .map_err(Error::api(format!("reading certificate request {name}")))?;
        let status = current.status.unwrap_or_default();
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            let cert_pem = String::from_utf8(cert.0).map_err(|_| Error::CsrRefused {
                name: name.clone(),
                how: "answered",
                message: "the certificate is not PEM text".into(),
            })?;
            return Ok(CertKeyPair { cert_pem, key_pem });
        }
        for c in status.conditions.iter().flatten() {
            if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                return Err(Error::CsrRefused {
                    name,
                    how: if c.type_ == "Denied" {
                        "denied"
                    } else {
                        "not signed"
                    },
                    message: c.message.clone().unwrap_or_default(),
                });
            }
        }
        if started.elapsed() > CSR_TIMEOUT {
            return Err(Error::CsrTimeout { name });
        }
        // Capped exponential backoff: signing takes milliseconds when the server is healthy.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The client a join token gives: enough to request a certificate, nothing more.
///
/// # Errors
/// [`Error::Client`] if the endpoint data is unusable.
pub fn bootstrap_client(url: &str, ca_pem: &str, token: &JoinToken) -> Result<Client, Error> {
    distro_client::connect(
        &Endpoint {
            url: url.to_string(),
            ca_pem: ca_pem.to_string(),
            credential: Credential::Token(token.to_string()),
            default_namespace: "default".into(),
        },
        &distro_client::user_agent("agent-bootstrap", "join"),
    )
    .map_err(Error::Client)
}

/// The client of `node` with its own certificate, and its connections (closed when the
/// node's heartbeats keep failing or its address changes).
///
/// # Errors
/// [`Error::Client`] if the certificate or CA is unusable.
pub fn node_client(
    url: &str,
    ca_pem: &str,
    node: &str,
    pair: &CertKeyPair,
) -> Result<(Client, distro_client::Connections), Error> {
    distro_client::connect_tracked(
        &Endpoint::with_cert(url, ca_pem, pair),
        &distro_client::user_agent("agent", node),
    )
    .map_err(Error::Client)
}
