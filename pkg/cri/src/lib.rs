//! distro's one client for containerd, used by the kubelet and by `distro check-config`.
//!
//! containerd speaks two gRPC APIs on its socket: the CRI v1 runtime and image services that
//! every kubelet uses, and containerd's own services (content, images, snapshots, leases),
//! which are how air-gap tarballs are imported, since Debian's containerd 1.6 has no Transfer
//! service. Both are generated code from well-kept crates (`k8s-cri`, `containerd-client`);
//! this crate only connects, names the errors and keeps call sites short.

/// The CRI v1 messages and service clients, re-exported so crates above this one name one path.
pub use k8s_cri::v1 as api;
