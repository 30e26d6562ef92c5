//! The service proxy: kube-proxy's nftables mode in spirit, run by every node.
//!
//! Watches Services and EndpointSlices (`discovery.k8s.io/v1`) through shared informers,
//! reduces them to plain values ([`model`]), renders one nftables table per IP family
//! ([`render`]) and applies each sync as one `nft -f` transaction ([`sync`]) through the same
//! `nft` helper the CNI plugin uses. Only the tables named in [`Config::table`] are touched.
//!
//! What it programs, as upstream: cluster IPs load-balanced at random over ready endpoints
//! (serving-and-terminating ones when none is ready), TCP/UDP/SCTP, `reject` for services
//! without endpoints, NodePorts on every local address but loopback, externalIPs and
//! LoadBalancer ingress IPs as external traffic, `sessionAffinity: ClientIP` with its
//! timeout (per-endpoint sets with timeouts), `externalTrafficPolicy: Local` (local endpoints,
//! client address kept) and `internalTrafficPolicy: Local`, hairpin masquerade, masquerade of
//! off-cluster clients, both families.
//!
//! # Limits
//! - No health-check NodePort for `externalTrafficPolicy: Local` (`healthCheckNodePort` is
//!   allocated by the apiserver but nothing answers on it), and no
//!   `loadBalancerSourceRanges` firewall.
//! - Topology-aware routing (zone hints, `trafficDistribution`) is ignored: every usable
//!   endpoint is a candidate.
//! - Each sync re-renders every service in memory (about 100 ms for 1,000 services in a debug
//!   build) before diffing; only the diff goes to the kernel.
//! - Stale UDP conntrack entries of removed endpoints are not cleared (no conntrack tool
//!   here); a UDP client may keep its flow to a deleted endpoint until it times out.

pub mod model;
pub mod render;
pub mod sync;

pub use model::{Family, ServicePort};
pub use sync::{run, Config};

#[cfg(test)]
mod tests;
