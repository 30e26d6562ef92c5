//! The crate's one error type, with the CNI spec's error code for each failure.

use std::path::PathBuf;

/// Everything that can go wrong in the pod network code.
///
/// Each variant names the failed step; [`Error::cni_code`] maps it to the code the CNI spec
/// defines, so the runtime (containerd) can tell a bad config from a transient failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config's `cniVersion` is not one this plugin speaks.
    // Worded as libcni words it, so searches for the message find the same answers.
    #[error("incompatible CNI versions; config is {config:?}, plugin supports [{}]", quoted(.supported))]
    IncompatibleVersion {
        /// Version asked for by the config.
        config: String,
        /// Versions this plugin speaks.
        supported: &'static [&'static str],
    },
    /// A required `CNI_*` environment variable is missing.
    #[error("required environment variable {0} is missing")]
    MissingEnv(&'static str),
    /// A `CNI_*` environment variable has an unusable value.
    #[error("invalid environment variable {name}: {reason}")]
    InvalidEnv {
        /// Variable name.
        name: &'static str,
        /// Why the value is refused.
        reason: String,
    },
    /// The network config on stdin is not valid JSON for this plugin.
    #[error("failed to decode the network configuration: {0}")]
    Decode(#[source] serde_json::Error),
    /// The network config decodes but a field is unusable.
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    /// A file or directory operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The step, e.g. "writing IPAM reservation".
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The network namespace given in `CNI_NETNS` cannot be entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        /// `CNI_NETNS`.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Every address of the pod CIDR is taken.
    #[error("no IP addresses available in range set: {range}")]
    RangeFull {
        /// The range that is full.
        range: String,
    },
    /// The kernel refused a netlink request.
    #[error("{step}: {source}")]
    Netlink {
        /// What was being done, e.g. "creating bridge cni0".
        step: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// An expected link is missing or has another kind.
    #[error("{0}")]
    Link(String),
    /// `nft` failed or is missing.
    #[error("nft {step}: {message}")]
    Nft {
        /// What was being done.
        step: &'static str,
        /// nft's stderr or the spawn error.
        message: String,
    },
    /// The service proxy's Service or EndpointSlice watch stopped.
    #[error("the service proxy's watch of Services and EndpointSlices stopped")]
    Watch,
    /// The network policy enforcement's Pod, Namespace or NetworkPolicy watch stopped.
    #[error("the network policy watch of Pods, Namespaces and NetworkPolicies stopped")]
    PolicyWatch,
    /// CHECK found the container's network differs from the previous result.
    #[error("check failed: {0}")]
    Check(String),
}

impl Error {
    /// The CNI spec error code for this failure (1-7 and 11 are the spec's well-known codes;
    /// 999 is what the reference plugins' skeleton reports for plugin-internal failures).
    pub fn cni_code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion { .. } => 1,
            Error::MissingEnv(_) | Error::InvalidEnv { .. } => 4,
            Error::Io { .. } | Error::Netns { .. } | Error::Netlink { .. } => 5,
            Error::Decode(_) => 6,
            Error::InvalidConfig(_) => 7,
            Error::RangeFull { .. }
            | Error::Link(_)
            | Error::Nft { .. }
            | Error::Check(_)
            | Error::Watch
            | Error::PolicyWatch => 999,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// `"a" "b"`: a version list as Go's `%q` prints it in libcni's message.
fn quoted(versions: &[&str]) -> String {
    versions
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shorthand used across the crate.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
