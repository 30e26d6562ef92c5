//! Pod translation: from a Pod (k8s-openapi) to CRI sandbox and container configs, from CRI
//! statuses back to the Pod's `status`, and the sync decisions in between.
//!
//! # Design
//! Everything here is a pure function over k8s-openapi and CRI (`distro_cri::api`) values:
//! no IO, no clock (times are arguments), so every upstream rule is pinned by a unit test and
//! the sync loop that calls containerd stays small. Behaviour follows upstream's kubelet
//! (`kuberuntime_sandbox.go`, `kuberuntime_container.go`, `kubelet_pods.go`, `status`), since
//! users read the results in kubectl.
//!
//! The sync loop calls, per pod: [`actions::compute_pod_actions`] on the runtime's state
//! ([`runtime::RuntimePod`]); for a new sandbox [`sandbox::sandbox_config`] (plus the hosts
//! file from [`hosts`]); per container start [`actions::container_backoff`], then
//! [`container::container_config`] (environment from [`env`](mod@env), mounts from [`mounts`],
//! resources from [`resources`], security from [`security`]); and last
//! [`status::pod_status`] with the waiting reasons the steps recorded.
//!
//! # Limits
//! - Sidecars ride the classic init-container path, extended (upstream 1.29+ has a dedicated
//!   one); edge cases such as a sidecar dying while a later init container runs may differ.
//! - No in-place resize, user namespaces, AppArmor, SELinux labels, hugepages or devices in
//!   the generated configs. Ephemeral containers (`kubectl debug`) are configured as
//!   containers, joining their target's process namespace ([`actions::ephemeral_target`]).
//! - Environment variables come out in first-definition order (upstream's is random).

pub mod actions;
pub mod container;
pub mod dns;
pub mod env;
pub mod error;
pub mod expansion;
pub mod hosts;
pub mod mounts;
pub mod resources;
pub mod runtime;
pub mod sandbox;
pub mod security;
pub mod status;
#[cfg(test)]
mod tests;

pub use error::ConfigError;

use k8s_openapi::api::core::v1::Pod;

/// A pod as upstream's `format.Pod` prints it in messages: `name_namespace(uid)`.
pub fn format_pod(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or(""),
        m.namespace.as_deref().unwrap_or(""),
        m.uid.as_deref().unwrap_or("")
    )
}
