//! Pod volumes: the directories the kubelet bind-mounts into a pod's containers.
//!
//! # Design
//! Layout as upstream: `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`. Projected
//! content (configMap, secret, downwardAPI, projected) goes through the [`AtomicWriter`], so a
//! change of a source reaches running containers as one atomic `..data` symlink swap.
//! Secrets, projected volumes and `medium: Memory` emptyDirs live on tmpfs, as upstream.
//! Everything this module reads about the cluster comes in through [`VolumeSources`] (the
//! kubelet's caches) and [`TokenSource`] (its TokenRequest call); it never talks to the API.
//!
//! The kubelet's side of the contract:
//! - before starting a pod's containers, [`VolumeManager::setup`]; bind-mount each
//!   [`MountedVolume::host_path`], read-only if [`MountedVolume::read_only`] or the
//!   `volumeMount` says so; on error record a `FailedMount` event with the error's message
//!   and retry later;
//! - when a ConfigMap or Secret in [`referenced_sources`] changes, when the pod's labels or
//!   annotations change, and at [`TokenManager::next_refresh`], call
//!   [`VolumeManager::update`] (a no-op when nothing changed);
//! - when the pod is gone (also for [`VolumeManager::pods_on_disk`] uids it no longer
//!   knows after a restart), [`VolumeManager::teardown`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use distro_kubelet::volume::{StaticSources, SystemClock, TokenManager, TokenSource, VolumeManager};
//!
//! # async fn run(pod: k8s_openapi::api::core::v1::Pod, tokens: Arc<dyn TokenSource>) -> Result<(), distro_kubelet::volume::Error> {
//! let sources = StaticSources::default();
//! let manager = VolumeManager::new(
//!     "/var/lib/distro/agent/kubelet",
//!     Arc::new(TokenManager::new(tokens, Arc::new(SystemClock))),
//! );
//! for volume in manager.setup(&pod, &sources).await? {
//!     println!("{} -> {} (ro: {})", volume.name, volume.host_path.display(), volume.read_only);
//! }
//! manager.update(&pod, &sources).await?;
//! manager.teardown(pod.metadata.uid.as_deref().unwrap_or_default()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Limits
//! See [`manager`] (unsupported volume types, fsGroupChangePolicy, sizeLimit enforcement) and
//! [`token`] (no refresh jitter).

pub mod atomic_writer;
pub mod downward;
pub mod empty_dir;
pub mod host_path;
pub mod manager;
pub mod mount;
pub mod ownership;
pub mod payload;
pub mod sources;
pub mod token;

use std::path::PathBuf;

pub use atomic_writer::{AtomicWriter, FileProjection, Payload};
pub use manager::{MountedVolume, VolumeManager, VolumeUsage};
pub use sources::{referenced_sources, SourceRefs, StaticSources, VolumeSources};
pub use token::{Clock, IssuedToken, SystemClock, TokenManager, TokenRequestSpec, TokenSource};

/// Why setting up, updating or tearing down a volume failed. Messages that users see on pod
/// events follow upstream's wording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting up one volume of a pod failed; the message is the event upstream records.
    #[error("MountVolume.SetUp failed for volume \"{name}\" : {source}")]
    Volume {
        /// `spec.volumes[].name`.
        name: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// A volume type, medium or pod this module does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// A persistentVolumeClaim is not usable yet (upstream's messages).
    #[error("{0}")]
    Claim(String),
    /// A blocking volume task panicked or was cancelled.
    #[error("volume task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// An `items[].path` (or downward API path) upstream would reject.
    #[error("{message}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Upstream's message.
        message: String,
    },
    /// A ConfigMap or Secret a volume needs does not exist and the volume is not optional.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// `configmaps` or `secrets`, as upstream's API error names them.
        resource: &'static str,
        /// The object's name.
        name: String,
    },
    /// An item names a key its ConfigMap or Secret lacks (upstream's message).
    #[error("{0}")]
    MissingKey(String),
    /// Several sources of one projected volume failed.
    #[error("[{}]", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    Aggregate(Vec<Error>),
    /// A hostPath is not of its declared `type` (upstream's message).
    #[error("{0}")]
    HostPathType(String),
    /// A tmpfs or bind mount could not be made.
    #[error("mount at {}: {source}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A mount under a pod's volumes stayed busy.
    #[error("unmount {}: {source}", path.display())]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A downward API item could not be resolved (upstream's message).
    #[error("{0}")]
    DownwardApi(String),
    /// The token source failed and no unexpired token was cached.
    #[error("failed to fetch token: {source}")]
    Token {
        /// The pod's namespace.
        namespace: String,
        /// The service account asked for.
        service_account: String,
        /// What the source said.
        #[source]
        source: token::TokenSourceError,
    },
    /// A filesystem step failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Wraps an `io::Error` with the step and path it failed at.
pub(crate) fn io_err<'a>(
    step: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}
