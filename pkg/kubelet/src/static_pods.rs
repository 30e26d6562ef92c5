//! Static pods: pods the kubelet runs from manifest files in its pod-manifest directory
//! (`<data-dir>/agent/pod-manifests/`), without the API server, as upstream's file config
//! source. Each file (YAML or JSON, one Pod) becomes a pod named `<name>-<node>` in its
//! namespace (`default` if unset), bound to this node, with a UID hashed from the node, the
//! file and its content (so an edited file is a new pod, as upstream), the annotations
//! `kubernetes.io/config.hash`, `kubernetes.io/config.seen` and
//! `kubernetes.io/config.source: file`, and a toleration of every NoExecute taint.
//!
//! The pod workers run static pods from [`Change`]s this source sends; the API server only
//! sees their **mirror pods**: copies with `kubernetes.io/config.mirror` (the config hash)
//! and an owner reference to the Node, created when missing (also after someone deletes
//! one), replaced when the file changes and deleted when the file goes. The pod workers
//! ignore mirror pods from the API and write static pods' status to them; the source hands
//! each static pod its mirror's status, so a mirror that lacks the current status (a
//! recreated one) gets it again.
//!
//! # Limits
//! - The directory is polled every [`POLL`] (upstream's file source re-reads every 20 s
//!   and on inotify events), so changes take up to that long.
//! - One Pod per file; other kinds and lists are skipped with a log line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_client::Client;
use k8s_openapi::api::core::v1::{Node, Pod, PodStatus, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::Api;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

/// Annotation: the static pod's config hash, on its mirror pod.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Annotation: where a pod's config came from (`file`, `api`).
pub const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation: when the kubelet first saw the config.
pub const SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// Annotation: the pod's config hash (a static pod's UID).
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";

/// How often the manifest directory is read.
pub const POLL: Duration = Duration::from_secs(2);

/// A static pod appearing (or changing into a new pod) or going away.
#[derive(Debug, Clone)]
pub enum Change {
    /// Run this pod.
    Run(Pod),
    /// Stop and remove this pod.
    Gone(Pod),
}

/// Whether `pod` is a mirror pod (the API copy of a static pod): the kubelet never runs
/// those itself.
pub fn is_mirror(pod: &Pod) -> bool {
    annotation(pod, MIRROR_ANNOTATION).is_some()
}

/// Whether `pod` came from a manifest file.
pub fn is_static(pod: &Pod) -> bool {
    annotation(pod, SOURCE_ANNOTATION) == Some("file")
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Turns one manifest into the static pod this node runs.
///
/// # Errors
/// A message naming what is wrong with the file.
pub fn from_manifest(text: &str, path: &Path, node: &str) -> Result<Pod, String> {
    let value: serde_json::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    if value["kind"] != "Pod" {
        return Err(format!("kind {} is not Pod", value["kind"]));
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("metadata.name is empty")?;
    let mut hasher = Sha256::new();
    hasher.update(format!("host:{node}\nfile:{}\n", path.display()));
    hasher.update(serde_json::to_vec(&pod).map_err(|e| e.to_string())?);
    let hash = hex32(&hasher.finalize());
    let meta = &mut pod.metadata;
    meta.name = Some(format!("{name}-{node}"));
    meta.namespace = Some(
        meta.namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into()),
    );
    meta.uid = Some(hash.clone());
    meta.self_link = None;
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH.into(), hash.clone());
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    annotations.insert(SEEN_ANNOTATION.into(), chrono::Utc::now().to_rfc3339());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    // Upstream: static pods tolerate every NoExecute taint, so taint eviction spares them.
    spec.tolerations
        .get_or_insert_with(Vec::new)
        .push(Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        });
    Ok(pod)
}

fn hex32(bytes: &[u8]) -> String {
    bytes.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The pods of every manifest in `dir`, by file (blocking: reads files). Unreadable or
/// invalid files are skipped with a warning.
pub fn read_dir(dir: &Path, node: &str) -> BTreeMap<PathBuf, Pod> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        let wanted = [".yaml", ".yml", ".json"].iter().any(|s| name.ends_with(s));
        if name.starts_with('.') || !wanted || !path.is_file() {
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "reading a static pod manifest");
                continue;
            }
        };
        match from_manifest(&text, &path, node) {
            Ok(pod) => {
                out.insert(path, pod);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a static pod manifest")
            }
        }
    }
    out
}

/// The mirror pod of static `pod`, owned by `node` (whose uid is `node_uid`).
pub fn mirror(pod: &Pod, node: &str, node_uid: &str) -> Pod {
    let mut m = pod.clone();
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.status = None;
    m.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(MIRROR_ANNOTATION.into(), hash);
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.into(),
        uid: node_uid.into(),
        controller: Some(true),
        ..Default::default()
    }]);
    m
}

/// Watches `dir` for manifests until `shutdown`: sends [`Change`]s to the pod workers and
/// keeps the mirror pods in the API in step. The first read is done before returning the
/// pods it found, so the workers know them before they sweep unknown sandboxes.
pub struct Source {
    /// The manifest directory.
    pub dir: PathBuf,
    /// This node.
    pub node: String,
    /// The node's own client.
    pub client: Client,
}

impl Source {
    /// Reads the directory once (blocking work off the runtime).
    pub async fn read(&self) -> BTreeMap<PathBuf, Pod> {
        let (dir, node) = (self.dir.clone(), self.node.clone());
        tokio::task::spawn_blocking(move || read_dir(&dir, &node))
            .await
            .unwrap_or_default()
    }

    /// Runs the source from `known` (what the first [`Source::read`] found and was sent).
    pub async fn run(
        self,
        mut known: BTreeMap<PathBuf, Pod>,
        tx: mpsc::Sender<Change>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let now = self.read().await;
            for (path, old) in &known {
                if now.get(path).map(|p| &p.metadata.uid) != Some(&old.metadata.uid) {
                    tracing::info!(pod = %old.metadata.name.as_deref().unwrap_or_default(), path = %path.display(), "static pod removed or changed");
                    self.delete_mirror(old).await;
                    if tx.send(Change::Gone(old.clone())).await.is_err() {
                        return;
                    }
                }
            }
            for (path, pod) in &now {
                if known.get(path).map(|p| &p.metadata.uid) != Some(&pod.metadata.uid) {
                    tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), path = %path.display(), "static pod added");
                    if tx.send(Change::Run(pod.clone())).await.is_err() {
                        return;
                    }
                }
            }
            // Keep the mirrors as the files say, without forgetting their seen times. The
            // static pod carries its mirror's status, so the pod worker writes its status
            // again when a mirror lacks it (a recreated mirror, say).
            let mut next = BTreeMap::new();
            for (path, pod) in now {
                let mut pod = match known.remove(&path) {
                    Some(old) if old.metadata.uid == pod.metadata.uid => old,
                    _ => pod,
                };
                if let Some(status) = self.ensure_mirror(&pod).await {
                    if pod.status != status {
                        pod.status = status;
                        if tx.send(Change::Run(pod.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                next.insert(path, pod);
            }
            known = next;
        }
    }

    /// Creates the mirror pod if missing; replaces one of another config hash. Returns the
    /// status of the mirror when it is up to date.
    async fn ensure_mirror(&self, pod: &Pod) -> Option<Option<PodStatus>> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let want = pod.metadata.uid.as_deref().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(existing)) => {
                let hash = annotation(&existing, MIRROR_ANNOTATION);
                if hash == Some(want) && existing.metadata.deletion_timestamp.is_none() {
                    return Some(existing.status);
                }
                {
                    // A stale mirror of an older file, a pod someone else made, or our mirror
                    // being deleted (no kubelet finishes that): gone now, recreated next time.
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: existing.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    let _ = api.delete(&name, &params).await;
                }
                return None;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(pod = %name, error = %e, "reading the mirror pod");
                return None;
            }
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node_uid = match nodes.get(&self.node).await {
            Ok(n) => n.metadata.uid.unwrap_or_default(),
            Err(e) => {
                tracing::debug!(node = %self.node, error = %e, "reading the node for a mirror pod");
                return None;
            }
        };
        match api
            .create(&PostParams::default(), &mirror(pod, &self.node, &node_uid))
            .await
        {
            Ok(created) => {
                tracing::info!(pod = %format!("{ns}/{name}"), "mirror pod created");
                Some(created.status)
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "creating the mirror pod failed; retrying");
                None
            }
        }
    }

    /// Deletes the mirror pod of `pod` (only one of its config hash).
    async fn delete_mirror(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let Ok(Some(existing)) = api.get_opt(&name).await else {
            return;
        };
        if annotation(&existing, MIRROR_ANNOTATION) != pod.metadata.uid.as_deref() {
            return;
        }
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: existing.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        if let Err(e) = api.delete(&name, &params).await {
            tracing::debug!(pod = %name, error = %e, "deleting the mirror pod");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n";

    #[test]
    fn manifests_become_static_pods_as_upstream() {
        let p = from_manifest(MANIFEST, Path::new("/m/web.yaml"), "n1").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        let uid = p.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(is_static(&p) && !is_mirror(&p));
        assert_eq!(annotation(&p, CONFIG_HASH), Some(uid.as_str()));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert!(spec.tolerations.as_ref().unwrap()[0].effect.as_deref() == Some("NoExecute"));
        // Stable for the same file and node; new for new content, another file or node.
        let again = from_manifest(MANIFEST, Path::new("/m/web.yaml"), "n1").unwrap();
        assert_eq!(again.metadata.uid, p.metadata.uid);
        let edited = MANIFEST.replace("busybox", "busybox:2");
        for other in [
            from_manifest(&edited, Path::new("/m/web.yaml"), "n1").unwrap(),
            from_manifest(MANIFEST, Path::new("/m/other.yaml"), "n1").unwrap(),
            from_manifest(MANIFEST, Path::new("/m/web.yaml"), "n2").unwrap(),
        ] {
            assert_ne!(other.metadata.uid, p.metadata.uid);
        }
        assert!(from_manifest("kind: Service\n", Path::new("/m/s.yaml"), "n1").is_err());
        assert!(from_manifest(
            "{\"kind\": \"Pod\", \"metadata\": {}}",
            Path::new("/m/x.json"),
            "n1"
        )
        .is_err());
    }

    #[test]
    fn mirrors_point_at_the_node_and_the_config() {
        let p = from_manifest(MANIFEST, Path::new("/m/web.yaml"), "n1").unwrap();
        let m = mirror(&p, "n1", "node-uid");
        assert!(is_mirror(&m));
        assert_eq!(annotation(&m, MIRROR_ANNOTATION), p.metadata.uid.as_deref());
        assert_eq!(m.metadata.uid, None);
        let owner = &m.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Node", "n1", "node-uid")
        );
    }
}
