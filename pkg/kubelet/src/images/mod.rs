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

/// Upstream's aggregate error text: one error as is, several as `[a, b]`; each containerd
/// error as the kubelet's gRPC client shows it ([`grpc_text`]).
fn pull_errors(errors: &[distro_cri::Error]) -> String {
    match errors {
        [one] => grpc_text(one),
        many => format!(
            "[{}]",
            many.iter().map(grpc_text).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A CRI error as grpc-go renders a status (`rpc error: code = Unknown desc = …`): the
/// kubelet passes the runtime's error through unchanged, so users (and the guides they
/// search) see this text in pull failures. Other errors as they are.
pub fn grpc_text(e: &distro_cri::Error) -> String {
    match e {
        distro_cri::Error::Rpc { source, .. } => format!(
            "rpc error: code = {} desc = {}",
            go_code_name(source.code()),
            source.message()
        ),
        other => other.to_string(),
    }
}

/// grpc-go's name of a status code (`codes.Code.String()`), which differs from tonic's
/// `Debug` for OK and Canceled.
fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_errors_read_as_grpc_go_statuses() {
        let rpc = |code, msg: &str| distro_cri::Error::Rpc {
            op: "PullImage",
            source: tonic::Status::new(code, msg),
        };
        assert_eq!(
            pull_errors(&[rpc(tonic::Code::NotFound, "no such image")]),
            "rpc error: code = NotFound desc = no such image"
        );
        assert_eq!(
            pull_errors(&[
                rpc(tonic::Code::Unknown, "401"),
                rpc(tonic::Code::Cancelled, "gone")
            ]),
            "[rpc error: code = Unknown desc = 401, rpc error: code = Canceled desc = gone]"
        );
    }
}
