//! Connections to kubelets' HTTPS API (`--kubelet-port`, 10250 by default): the one way the
//! API server (for `pods/log`, `pods/exec`, `nodes/proxy`, …) and the metrics scraper reach a
//! node.
//!
//! # Design
//! The caller presents the API server's kubelet client certificate and trusts only the cluster
//! CA, which signs kubelet-serving certificates (`kubernetes.io/kubelet-serving` CSRs) for the
//! node's addresses; the server name checked is the IP dialled, as upstream's
//! `--kubelet-certificate-authority`. Connections are HTTP/1.1 only, so a `101 Switching
//! Protocols` answer (exec, attach, port-forward) can be taken over with `hyper::upgrade`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use distro_pki::CertKeyPair;
use hyper::body::Body;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use rustls::pki_types::ServerName;

/// TLS to kubelets, presenting `client` and trusting certificates signed by `ca_pem`.
///
/// # Errors
/// Unreadable PEM, or a key rustls refuses.
pub fn tls(client: &CertKeyPair, ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    let mut config =
        (*distro_pki::client_tls_config(ca_pem, Some(client)).map_err(crate::Error::Tls)?).clone();
    // Upgrades (exec, attach, port-forward) exist only in HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where `node`'s kubelet listens: its first InternalIP (else ExternalIP) and the port of
/// `status.daemonEndpoints.kubeletEndpoint`, as upstream's preferred address types.
#[must_use]
pub fn endpoint(node: &Node) -> Option<SocketAddr> {
    let status = node.status.as_ref()?;
    let port = status
        .daemon_endpoints
        .as_ref()?
        .kubelet_endpoint
        .as_ref()?
        .port;
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let ip = ["InternalIP", "ExternalIP"].iter().find_map(|t| {
        addresses
            .iter()
            .filter(|a| a.type_ == *t)
            .find_map(|a| a.address.parse::<IpAddr>().ok())
    })?;
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// An HTTP/1.1 connection to the kubelet at `addr`; the connection is driven by a spawned task
/// (with upgrades enabled) that ends when the sender and any upgraded stream are dropped.
///
/// # Errors
/// The TCP connect, TLS handshake (including a serving certificate not valid for the IP) or
/// HTTP handshake failed; the message says which.
pub async fn connect<B>(
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
) -> Result<SendRequest<B>, String>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial {addr}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS to {addr}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP to {addr}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "kubelet connection ended");
        }
    });
    Ok(sender)
}
