//! distro's kubelet: the node agent that makes the pods bound to this node real.
//!
//! It drives containerd through CRI (`distro-cri`), prepares pod volumes on the local disk,
//! reports pod and container status as upstream does, and serves the kubelet HTTPS API that
//! the API server proxies logs, exec and metrics through. The simulated runtime in
//! `distro-agent` reuses the API server part, so metrics and `kubectl top` work on simulated
//! nodes too.
//!
//! # What it owns
//! - [`pod`]: pure translation of a Pod to CRI configs, CRI state back to status, and the
//!   sync decisions (upstream's `computePodActions`).
//! - [`volume`]: pod volumes on the local disk.
//! - [`worker`]: the pod workers that drive the above against containerd and the API: one
//!   watch of the node's pods, one serial worker per pod, a 1 s relist of containerd (PLEG),
//!   Events and status writes, graceful deletion, adoption after a restart.

pub mod backoff;
pub mod pod;
pub mod qos;
pub mod server;
pub mod static_pods;
#[cfg(test)]
mod testutil;
pub mod volume;
pub mod worker;
