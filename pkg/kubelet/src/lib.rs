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
//! - [`images`]: image pulls with registry credentials, and image garbage collection.
//! - [`volume`]: pod volumes on the local disk.
//! - [`worker`]: the pod workers that drive the above against containerd and the API: one
//!   watch of the node's pods, one serial worker per pod, a 1 s relist of containerd (PLEG),
//!   Events and status writes, graceful deletion, adoption after a restart.
//! - [`prober`]: liveness, readiness and startup probes; [`lifecycle`]: postStart and preStop
//!   hooks and the graceful stop of a container.
//! - [`log_rotation`]: containers' log files rotated by size and compressed, as upstream.
//! - [`admission`]: which new pods the node refuses (pressure, resources, node affinity).

pub mod admission;
pub mod backoff;
pub mod images;
pub mod lifecycle;
pub mod log_rotation;
pub mod pod;
pub mod prober;
pub mod qos;
pub mod server;
pub mod static_pods;
#[cfg(test)]
mod testutil;
pub mod volume;
pub mod worker;
