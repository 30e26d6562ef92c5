//! distro's kubelet: the node agent that makes the pods bound to this node real.
//!
//! It drives containerd through CRI (`distro-cri`), prepares pod volumes on the local disk,
//! reports pod and container status as upstream does, and serves the kubelet HTTPS API that
//! the API server proxies logs, exec and metrics through. The simulated runtime in
//! `distro-agent` reuses the API server part, so metrics and `kubectl top` work on simulated
//! nodes too.

pub mod backoff;
pub mod pod;
pub mod qos;
pub mod volume;
pub mod worker;
