//! Why a container's configuration could not be made: upstream shows these messages as the
//! container's `waiting` message with reason `CreateContainerConfigError`.

/// A container config that cannot be generated. `Display` is upstream's wording, because users
/// read it in `kubectl describe pod` and search for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A non-optional ConfigMap named by `envFrom` or `configMapKeyRef` does not exist.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
    },
    /// A non-optional Secret named by `envFrom` or `secretKeyRef` does not exist.
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// The Secret's name.
        name: String,
    },
    /// A non-optional `configMapKeyRef` names a key the ConfigMap lacks.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// A non-optional `secretKeyRef` names a key the Secret lacks.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// A `fieldRef` path the kubelet does not resolve.
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    /// A `resourceFieldRef` resource the kubelet does not resolve.
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// A quantity (divisor or resource value) that does not parse.
    #[error("invalid quantity {value:?} in {field}: {source}")]
    Quantity {
        /// Where the quantity was read.
        field: String,
        /// The text that failed to parse.
        value: String,
        /// The parser's reason.
        #[source]
        source: distro_apimachinery::quantity::Error,
    },
    /// `spec.hostname` or `spec.subdomain` is not a DNS-1123 label.
    #[error("pod {field} {value:?} is not a valid DNS label: {reason}")]
    InvalidDnsLabel {
        /// `Hostname` or `Subdomain`, as upstream capitalises it.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What rule it breaks.
        reason: String,
    },
    /// Truncating a long pod name to 63 characters left nothing usable.
    #[error("hostname for pod {pod:?} was invalid: {hostname:?}")]
    InvalidHostname {
        /// The pod's name.
        pod: String,
        /// The hostname after truncation.
        hostname: String,
    },
    /// `setHostnameAsFQDN` would give a hostname longer than the kernel's 64 characters.
    #[error("failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, {len} characters requested)")]
    FqdnTooLong {
        /// The would-be hostname.
        fqdn: String,
        /// Its length.
        len: usize,
    },
    /// `runAsNonRoot` with an explicit `runAsUser: 0`.
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserIsRoot {
        /// The pod as `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` and the image's user is uid 0.
    #[error("container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})")]
    ImageRunsAsRoot {
        /// The pod as `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `runAsNonRoot` and the image names its user, so the uid cannot be checked.
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod:?}, container: {container})")]
    NonNumericUser {
        /// The image's user name.
        user: String,
        /// The pod as `name_namespace(uid)`.
        pod: String,
        /// The container's name.
        container: String,
    },
    /// `seccompProfile.type: Localhost` without `localhostProfile`.
    #[error("localhostProfile must be set if seccompProfile type is Localhost.")]
    SeccompLocalhostMissing,
    /// A `resourceFieldRef.containerName` that names no container of the pod.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A `volumeMount` names a volume the volume manager did not prepare.
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    VolumeNotFound {
        /// The volume's name.
        volume: String,
        /// The container's name.
        container: String,
    },
    /// `subPath` (after expansion) is absolute.
    #[error("error SubPath `{0}` must not be an absolute path")]
    SubPathAbsolute(String),
    /// `subPath` (after expansion) climbs out of the volume.
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    SubPathBacksteps(String),
    /// `subPathExpr` references variables that are unset or empty.
    #[error("missing value for {0}")]
    SubPathMissingVars(String),
    /// A `mountPropagation` value the kubelet does not know.
    #[error("invalid MountPropagation mode: {0:?}")]
    MountPropagation(String),
}
