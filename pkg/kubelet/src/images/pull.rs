//! Pulling a container's image with its pod's registry credentials, as upstream's
//! `kuberuntime` image puller: the pod's `imagePullSecrets` (which the ServiceAccount
//! admission copied from its service account) form a [`Keyring`]; each credential matching
//! the image is tried in turn with CRI `PullImage`, and finally an anonymous pull, so a
//! public image still pulls when a stale secret names its registry.

use std::time::Duration;

use distro_cri::{api, Cri};
use k8s_openapi::api::core::v1::{Pod, Secret};
use std::sync::Arc;

use super::keyring::{Credential, Keyring};
use super::Error;

/// A pod's pull secrets as the kubelet found them.
#[derive(Debug, Default)]
pub struct PullSecrets {
    /// The keyring of the secrets that exist.
    pub keyring: Keyring,
    /// Names of referenced secrets that could not be read (missing, or not yet watched).
    pub missing: Vec<String>,
}

impl PullSecrets {
    /// Reads `pod.spec.imagePullSecrets` through `get(namespace, name)` (the kubelet's
    /// secret watches, which the Node authorizer allows for secrets of the node's pods).
    pub fn for_pod(pod: &Pod, get: impl Fn(&str, &str) -> Option<Arc<Secret>>) -> PullSecrets {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let refs = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref());
        for r in refs.into_iter().flatten().filter(|r| !r.name.is_empty()) {
            match get(ns, &r.name) {
                Some(s) => found.push(s),
                None => missing.push(r.name.clone()),
            }
        }
        PullSecrets {
            keyring: Keyring::from_secrets(found.iter().map(|s| &**s)),
            missing,
        }
    }

    /// Upstream's `FailedToRetrieveImagePullSecret` event message, when some are missing.
    pub fn missing_message(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                self.missing.join(", ")
            )
        })
    }
}

/// CRI's `AuthConfig` of a credential. `server_address` stays empty, as upstream's kubelet
/// leaves it: containerd then uses the credential for whichever host the image resolves to
/// (mirrors included), while a set address must parse as a URL whose host equals it.
fn auth_config(c: &Credential) -> api::AuthConfig {
    api::AuthConfig {
        username: c.username.clone(),
        password: c.password.clone(),
        ..Default::default()
    }
}

/// Pulls `image`: with each matching credential of `keyring` in turn, then anonymously.
/// Returns the image ref containerd reports.
///
/// # Errors
/// [`Error::Pull`] with every attempt's error, in order, when none succeeded.
pub async fn pull(
    cri: &Cri,
    image: &str,
    keyring: &Keyring,
    sandbox: Option<api::PodSandboxConfig>,
) -> Result<String, Error> {
    let attempts: Vec<Option<api::AuthConfig>> = keyring
        .lookup(image)
        .iter()
        .map(|c| Some(auth_config(c)))
        .chain(std::iter::once(None))
        .collect();
    let mut errors = Vec::new();
    for auth in attempts {
        match cri.pull_image(image, auth, sandbox.clone()).await {
            Ok(r) => return Ok(r),
            Err(e) => errors.push(e),
        }
    }
    Err(Error::Pull(errors))
}

/// Go's `time.Duration` rendering of a duration truncated to milliseconds, as upstream's
/// Pulled event shows it (`1.234s`, `512ms`, `2m3.5s`).
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let secs = format!("{}.{:03}", rem / 1000, rem % 1000);
    let secs = secs.trim_end_matches('0').trim_end_matches('.');
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(secs);
    out.push('s');
    out
}

/// Upstream's `Pulled` event message after a pull: duration of the pull itself, the
/// duration including waiting for other pulls (the same here: pulls are not queued), and
/// the image size when known.
pub fn pulled_message(image: &str, took: Duration, waited: Duration, size: Option<u64>) -> String {
    let mut msg = format!(
        "Successfully pulled image {image:?} in {} ({} including waiting)",
        go_duration(took),
        go_duration(waited)
    );
    if let Some(size) = size {
        msg.push_str(&format!(". Image size: {size} bytes."));
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::LocalObjectReference;
    use std::collections::BTreeMap;

    #[test]
    fn durations_as_go_prints_them() {
        for (ms, s) in [
            (0, "0s"),
            (512, "512ms"),
            (1000, "1s"),
            (1234, "1.234s"),
            (1500, "1.5s"),
            (123_500, "2m3.5s"),
            (3_600_000, "1h0m0s"),
        ] {
            assert_eq!(go_duration(Duration::from_millis(ms)), s);
        }
        assert_eq!(
            pulled_message("busybox", Duration::from_millis(1200), Duration::from_millis(1200), Some(42)),
            "Successfully pulled image \"busybox\" in 1.2s (1.2s including waiting). Image size: 42 bytes."
        );
    }

    #[test]
    fn pull_secrets_of_a_pod() {
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                image_pull_secrets: Some(vec![
                    LocalObjectReference {
                        name: "there".into(),
                    },
                    LocalObjectReference {
                        name: "gone".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let secret = Arc::new(Secret {
            type_: Some(super::super::keyring::DOCKER_CONFIG_JSON.into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                k8s_openapi::ByteString(
                    br#"{"auths":{"reg.example.com":{"username":"u","password":"p"}}}"#.to_vec(),
                ),
            )])),
            ..Default::default()
        });
        let got = PullSecrets::for_pod(&pod, |ns, name| {
            (ns == "ns" && name == "there").then(|| secret.clone())
        });
        assert_eq!(got.missing, ["gone"]);
        assert_eq!(got.keyring.lookup("reg.example.com/x").len(), 1);
        assert_eq!(
            got.missing_message().unwrap(),
            "Unable to retrieve some image pull secrets (gone); attempting to pull the image may not succeed."
        );
    }
}
