//! distro's one client for containerd, used by the kubelet, the agent and `distro check-config`.
//!
//! containerd speaks two gRPC APIs on its socket: the CRI v1 runtime and image services that
//! every kubelet uses, and containerd's own services (content, images, snapshots, leases),
//! which are how air-gap tarballs are imported, since Debian's containerd 1.6 has no Transfer
//! service. Both are generated code from well-kept crates (`k8s-cri`, `containerd-client`).
//!
//! # What it owns
//! - [`containerd`]: containerd's paths, configuration and supervised start for a data dir.
//! - [`registries`]: k3s's `registries.yaml`, rendered as containerd `hosts.toml` and auth.
//! - [`host`]: probes of this machine (cgroups, overlayfs, negative oom scores).
//! - [`check`]: `distro check-config`, the report of what this machine lacks.
//! - [`client`]: the connection, readiness wait and typed CRI helpers.
//! - [`import`]: air-gap image tarballs loaded into containerd for CRI.
//! - [`runtime`]: all of the above in one start/stop for a node.

pub mod check;
pub mod client;
pub mod containerd;
pub mod host;
pub mod import;
pub mod registries;
pub mod runtime;

use std::path::PathBuf;
use std::time::Duration;

pub use client::Cri;

/// The CRI v1 messages and service clients, re-exported so crates above this one name one path.
pub use k8s_cri::v1 as api;

/// Errors of the containerd client and its setup.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket refused the connection.
    #[error("connecting to containerd at {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// containerd did not answer CRI `Version` in time.
    #[error("containerd at {socket} not ready after {timeout:?}: {last}")]
    NotReady {
        /// The socket.
        socket: PathBuf,
        /// How long we waited.
        timeout: Duration,
        /// The last error seen.
        #[source]
        last: Box<Error>,
    },
    /// A gRPC call failed.
    #[error("containerd {op}: {}", .source.message())]
    Rpc {
        /// The RPC.
        op: &'static str,
        /// containerd's status.
        #[source]
        source: tonic::Status,
    },
    /// A response lacked a field it must have.
    #[error("containerd's response has no {0}")]
    Missing(&'static str),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// `registries.yaml` is not valid.
    #[error("{path}: {source}")]
    Registries {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A program distro needs is not on PATH.
    #[error("{0} not found on PATH; install it (apt-get install containerd runc)")]
    NotFound(&'static str),
    /// Another containerd already serves this data dir's socket.
    #[error("another containerd already serves {0}; stop it or use another --data-dir")]
    SocketInUse(PathBuf),
    /// The supervisor could not start the program.
    #[error(transparent)]
    Supervisor(distro_supervisor::Error),
}
