//! The kubelet API of a containerd node (`--runtime containerd`): its pods as the API server
//! has them bound here, and exec/attach/port-forward through containerd's streaming server
//! ([`distro_kubelet::server::streams`]).
//!
//! # Limits
//! - `/stats/summary` and `/metrics/resource` report the node's name and start time only:
//!   container statistics from containerd are not read here.

use distro_kubelet::server::streams::{self, StreamError, StreamRequest};
use distro_kubelet::server::{Provider, Summary};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;

/// A containerd node as the kubelet API sees it.
pub struct CriNode {
    /// The node's name.
    pub node: String,
    /// The node's own API client (the Node authorizer lets it list its pods).
    pub client: distro_client::Client,
    /// containerd's CRI.
    pub cri: distro_cri::Cri,
    /// When this kubelet started.
    pub started: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

#[async_trait::async_trait]
impl Provider for CriNode {
    async fn pods(&self) -> Vec<Pod> {
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", self.node));
        match Api::<Pod>::all(self.client.clone()).list(&lp).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API: listing this node's pods");
                Vec::new()
            }
        }
    }

    async fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.node.node_name = self.node.clone();
        s.node.start_time = Some(self.started.clone());
        s
    }

    async fn stream_url(&self, req: &StreamRequest) -> Result<String, StreamError> {
        streams::cri_stream_url(&self.cri, req).await
    }
}
