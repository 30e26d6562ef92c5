//! The kubelet's image manager: pulls with registry credentials and image garbage
//! collection.
//!
//! # What it owns
//! - [`reference`]: image references normalised as Docker does.
//! - [`keyring`]: credentials of `imagePullSecrets` matched to an image as upstream's
//!   credential keyring does.
//! - [`pull`]: CRI `PullImage` with each matching credential, then anonymously, and the
//!   upstream texts of the pull Events.
//! - [`gc`]: image garbage collection by disk usage and by time since last use.
//! - [`service`]: that GC over containerd, run periodically with the node's Events.

pub mod gc;
pub mod keyring;
pub mod pull;
pub mod reference;
pub mod service;

use std::path::PathBuf;

/// Errors of the image manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every pull attempt failed (one per matching credential, then anonymous).
    #[error("{}", pull_errors(.0))]
    Pull(Vec<distro_cri::Error>),
    /// A CRI call failed.
    #[error(transparent)]
    Cri(Box<distro_cri::Error>),
    /// Deleting every unused image would not bring disk usage down to the low threshold
    /// (upstream's words, the `FreeDiskSpaceFailed` event's message).
    #[error("Failed to garbage collect required amount of images. Attempted to free {to_free} bytes, but only found {freed} bytes eligible to free.")]
    NotEnoughFreed {
        /// Bytes to free.
        to_free: u64,
        /// Bytes freed.
        freed: u64,
    },
    /// The GC state file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Upstream's aggregate error text: one error as is, several as `[a, b]`.
fn pull_errors(errors: &[distro_cri::Error]) -> String {
    match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
