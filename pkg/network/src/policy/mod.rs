//! NetworkPolicy enforcement with nftables, as Calico and kube-router do it, run by every
//! node for its own pods.
//!
//! Pods, Namespaces and NetworkPolicies come from shared informers; [`model`] computes, per
//! local pod address, the allowed ingress and egress (pure and unit-tested); [`render`] turns
//! that into one `inet` table (`distro-policy`, or `distro-policy-<bridge>` for a
//! non-default bridge) replaced atomically with one `nft -f` transaction by [`sync`]
//! within a second of a change. No other table is touched.
//!
//! Semantics, as upstream: a pod no policy of a type selects is unrestricted in that
//! direction; once selected, only traffic matching some rule of some selecting policy is
//! allowed. Peers by pod selector, namespace selector, both (AND), ipBlock with `except`;
//! ports TCP/UDP/SCTP, numeric with `endPort`, or named (resolved against the target pod's
//! container ports). Replies of allowed connections pass (conntrack established/related);
//! traffic from the node itself to its pods (kubelet probes, hostNetwork pods) is never
//! filtered, as Calico and kube-router allow it by default. Policies apply after the
//! service proxy's DNAT, so a rule about pods also covers their ClusterIPs. Denied packets
//! are dropped, not rejected (Calico's default), so a client sees a timeout. Both families.
//! Pod traffic to the node (its DNS server, its addresses) is egress and filtered too.
//!
//! # Limits
//! - No policy logging or counters, and no `AdminNetworkPolicy`.
//! - SCTP ports are matched only where the kernel tracks SCTP; elsewhere such a rule never
//!   matches (the traffic stays denied).
//! - A named port in an egress rule with ipBlock peers matches only pods inside the block
//!   that declare the port (no address outside pods can have a named port).
//! - Connections established before a policy denied them keep flowing until they end, as
//!   with every conntrack-based enforcement.
//! - Each sync recomputes every local pod against every policy and every pod of the cluster
//!   and replaces the whole table (not incremental as the service proxy's diffs): fine for
//!   the clusters distro targets, costly with tens of thousands of pods.
//! - The node's own traffic is allowed by the hook layout (it never crosses `forward`), so
//!   a pod on another node that is masqueraded to its node's address is seen as that node.

pub mod model;
pub mod render;
pub mod sync;

pub use model::{compute, Access, Protocol, State};
pub use render::Settings;
pub use sync::{run, Config};

#[cfg(test)]
mod tests;
