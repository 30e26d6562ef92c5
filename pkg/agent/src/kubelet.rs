//! The kubelet API of simulated nodes: each node listens on its own port of the agent's
//! address, published in its Node status (InternalIP, `daemonEndpoints.kubeletEndpoint`),
//! and serves its pods and their simulated usage ([`crate::usage`]) through
//! `distro_kubelet::server`.
//!
//! Each node's serving certificate comes from the cluster CA through a
//! `kubernetes.io/kubelet-serving` request ([`crate::join::serving_certificate`]), so the
//! server verifies the kubelets it scrapes. The real node (`--runtime containerd`) binds its
//! port the same way ([`Listener`]) and serves `distro_kubelet::server::cri::CriNode`.
//!
//! # Limits
//! - The serving certificate is not renewed while running (a restart renews it when a
//!   third of its lifetime is left).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use distro_kubelet::server::{Provider, Summary};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;

use crate::usage::Usage;
use crate::Error;

/// The address of this machine the server sees: the source address of a route to it (no
/// packet is sent). Simulated nodes listen there, so the server can reach them.
///
/// # Errors
/// [`Error::KubeletApi`] if the server's address cannot be resolved or routed to.
pub async fn node_ip(server: &str) -> Result<IpAddr, Error> {
    let err = |e: &dyn std::fmt::Display| {
        Error::KubeletApi(format!("finding this node's address towards {server}: {e}"))
    };
    let uri: http::Uri = server.parse().map_err(|e| err(&e))?;
    let host = uri
        .host()
        .unwrap_or("127.0.0.1")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(6443);
    let target = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| err(&e))?
        .next()
        .ok_or_else(|| err(&"no address"))?;
    let local: SocketAddr = if target.is_ipv4() {
        (IpAddr::from([0, 0, 0, 0]), 0).into()
    } else {
        (IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| err(&e))?;
    socket.connect(target).await.map_err(|e| err(&e))?;
    Ok(socket.local_addr().map_err(|e| err(&e))?.ip())
}

/// A node's bound kubelet port and its TLS, made before the node registers so its Node
/// status can name the port.
pub struct Listener {
    /// The node.
    pub node: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The bound socket.
    pub listener: TcpListener,
    /// Serving certificate and client-certificate verification against the cluster CA.
    pub tls: Arc<rustls::ServerConfig>,
}

impl Listener {
    /// Binds `ip:port` (0: a free port) for `node` and obtains its serving certificate
    /// through `client` (the node's own).
    ///
    /// # Errors
    /// [`Error::KubeletApi`] if the port is taken or TLS cannot be set up; the certificate
    /// request's errors.
    pub async fn bind(
        client: &distro_client::Client,
        dir: &std::path::Path,
        node: &str,
        ip: IpAddr,
        port: u16,
        ca_pem: &str,
    ) -> Result<Self, Error> {
        let listener = TcpListener::bind((ip, port)).await.map_err(|e| {
            Error::KubeletApi(format!(
                "listening on {ip}:{port} for node {node}: {e} (is another kubelet using it? pick one with --kubelet-port)"
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::KubeletApi(e.to_string()))?;
        let pair = crate::join::serving_certificate(client, dir, ca_pem, node, ip).await?;
        let cert = distro_kubelet::server::ServingCert {
            cert_pem: pair.cert_pem,
            key_pem: pair.key_pem,
        };
        let tls = distro_kubelet::server::tls_config(&cert, ca_pem)
            .map_err(|e| Error::KubeletApi(e.to_string()))?;
        Ok(Listener {
            node: node.to_string(),
            addr,
            listener,
            tls,
        })
    }
}

/// One simulated node as the kubelet API sees it.
pub struct FakeNode {
    /// The node's name.
    pub node: String,
    /// Every pod the agent watches (all nodes share one watch).
    pub pods: Store<Pod>,
    /// Simulated usage of all nodes' pods.
    pub usage: Arc<Usage>,
}

fn on_node(pod: &Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

fn running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[async_trait::async_trait]
impl Provider for FakeNode {
    async fn pods(&self) -> Vec<Pod> {
        self.pods
            .state()
            .iter()
            .filter(|p| on_node(p, &self.node))
            .map(|p| (**p).clone())
            .collect()
    }

    async fn summary(&self) -> Summary {
        let all = self.pods.state();
        let mine: Vec<&Pod> = all
            .iter()
            .map(|p| &**p)
            .filter(|p| on_node(p, &self.node) && running(p))
            .collect();
        self.usage.summary(&self.node, &mine)
    }
}
