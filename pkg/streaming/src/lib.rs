//! Streams into containers: `kubectl exec`, `attach`, `cp` and `port-forward`, between
//! whatever protocol kubectl speaks and containerd's streaming server.
//!
//! # Design
//! containerd's CRI answers `Exec`, `Attach` and `PortForward` with a URL on its own streaming
//! server (upstream's shared `cri/streaming` code), which speaks SPDY/3.1 (remote command
//! protocols v1–v4, `portforward.k8s.io`) and WebSocket channel protocols up to v4 for
//! exec/attach. kubectl speaks:
//! - 1.27–1.29: SPDY/3.1 for everything. containerd speaks it too, so the bytes are relayed
//!   unchanged ([`relay`]).
//! - 1.30+: WebSocket `v5.channel.k8s.io` for exec/attach/cp (SPDY fallback on an upgrade
//!   failure). v5 adds the CLOSE signal (half-closing stdin, which `kubectl cp` into a
//!   container needs) that no WebSocket version of containerd's has, so the v5 session is
//!   terminated here and spoken to containerd as SPDY v4 ([`remotecommand`]), as upstream's
//!   API server (`StreamTranslatorHandler`) does towards kubelets.
//! - 1.31+: port-forward as SPDY tunnelled in WebSocket binary messages
//!   (`SPDY/3.1+portforward.k8s.io`): the messages are unwrapped and their bytes relayed to a
//!   plain SPDY upgrade of containerd's ([`tunnel`]), as upstream's tunnelling handler does.
//!
//! All of this happens in the kubelet, next to containerd: the API server only relays the
//! upgraded connection byte for byte. One translation point and no second one in the API
//! server means fewer moving parts than upstream, at no cost: the kubelet is ours.
//!
//! [`spdy`] is the framing (pure); [`serve`] picks one of the three paths for a request.
//!
//! # Limits
//! - No SPDY flow control (as spdystream, which both kubectl and containerd use).
//! - WebSocket v5 towards port-forward (`v2.portforward.k8s.io`, not used by kubectl) is not
//!   translated; such clients are relayed to containerd, which answers what it supports.

pub mod remotecommand;
pub mod spdy;
pub mod tunnel;
pub mod upgrade;

pub use upgrade::{serve, Kind, StreamOptions};

/// Errors of a streaming session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A peer broke the SPDY framing.
    #[error("SPDY: {0}")]
    Spdy(String),
    /// The runtime's streaming server could not be reached or refused the upgrade.
    #[error("container runtime streaming server {url}: {message}")]
    Runtime {
        /// The URL the runtime gave.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The client's connection could not be upgraded.
    #[error("upgrading the client connection: {0}")]
    Upgrade(String),
    /// Reading or writing a connection failed.
    #[error("stream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket connection failed.
    #[error("WebSocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}
