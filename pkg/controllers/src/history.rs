//! ControllerRevision history shared by the DaemonSet and StatefulSet controllers, as
//! upstream's `pkg/controller/history`: each distinct pod template of a parent is snapshotted
//! once as a ControllerRevision named `<parent>-<hash>`, numbered in the order the templates
//! were in use. `kubectl rollout history` lists these revisions and `kubectl rollout undo`
//! strategic-merge-patches a revision's `data` back onto the parent, so the data has
//! upstream's shape: `{"spec": {"template": {..., "$patch": "replace"}}}`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::deployment::rollout::{fnv32a, safe_encode};
use crate::objects::controller_ref;
use crate::Error;

/// The label carrying a revision's hash on the revision itself (upstream's
/// `ControllerRevisionHashLabel`).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The label naming a pod's revision (upstream's `apps.ControllerRevisionHashLabelKey`): the
/// hash for DaemonSet pods, the revision's name for StatefulSet pods.
pub const POD_REVISION_LABEL: &str = "controller-revision-hash";

/// Longest parent-name prefix of a revision name, leaving room for `-<hash>` within the
/// 253 characters of a name (upstream's value).
const MAX_PREFIX: usize = 223;

/// What a revision records of its parent: the template, wrapped so that a strategic merge
/// patch of it replaces the parent's template as a whole (upstream's `getPatch`).
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut t {
        m.insert("$patch".into(), Value::String("replace".into()));
    }
    serde_json::json!({ "spec": { "template": t } })
}

/// The template a revision recorded (the inverse of [`template_patch`]).
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Value::Object(m) = &mut t {
        m.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// The hash naming a revision of `data`: FNV-32a over its JSON, plus the collision count
/// (little-endian) when set, in upstream's safe alphabet. Equal data hash alike across
/// restarts since `serde_json` keeps map keys sorted.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(c) = collision_count.filter(|c| *c != 0) {
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// `<parent>-<hash>`, the parent's name cut to [`MAX_PREFIX`] characters.
pub fn revision_name(parent: &str, hash: &str) -> String {
    let prefix: String = parent.chars().take(MAX_PREFIX).collect();
    format!("{prefix}-{hash}")
}

/// A parent as history sees it: its identity, its labels for revisions and its annotations.
#[derive(Debug, Clone)]
pub struct Parent {
    /// `DaemonSet` or `StatefulSet`.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID (revisions are owned through it).
    pub uid: String,
    /// The template's labels: revisions carry them so the parent's selector lists them, as
    /// `kubectl rollout history` does.
    pub labels: BTreeMap<String, String>,
    /// The parent's annotations (`kubernetes.io/change-cause` shows in rollout history).
    pub annotations: BTreeMap<String, String>,
}

impl Parent {
    fn owner_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: self.kind.into(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The revisions `parent` controls, from the cache, oldest revision number first.
pub fn owned(store: &Store<ControllerRevision>, parent: &Parent) -> Vec<ControllerRevision> {
    let mut revs: Vec<ControllerRevision> = store
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(parent.namespace.as_str()))
        .filter(|r| controller_ref(&r.metadata).is_some_and(|o| o.uid == parent.uid))
        .map(|r| Arc::unwrap_or_clone(r.clone()))
        .collect();
    sort(&mut revs);
    revs
}

/// Orders revisions by number, then creation time, then name (upstream's `byRevision`).
pub fn sort(revs: &mut [ControllerRevision]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t =
                    |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// The highest revision number in use (0 for none).
pub fn max_revision(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0)
}

/// The outcome of [`ensure`].
#[derive(Debug)]
pub enum Ensured {
    /// The revision for the data, newest in number.
    Revision(Box<ControllerRevision>),
    /// A different revision already holds the name the data hashes to: the caller bumps the
    /// parent's `status.collisionCount` and tries again (upstream's collision handling).
    Collision,
}

/// Finds or creates the revision recording `data`, making it the newest: an existing equal
/// revision (e.g. the one `kubectl rollout undo` returned to) is renumbered to one past the
/// newest, as upstream does, instead of being copied.
///
/// # Errors
/// [`Error::Api`] if a create, read or update fails.
pub async fn ensure(
    client: &Client,
    parent: &Parent,
    revs: &[ControllerRevision],
    data: Value,
    collision_count: Option<i32>,
) -> Result<Ensured, Error> {
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &parent.namespace);
    let max = max_revision(revs);
    if let Some(equal) = revs
        .iter()
        .filter(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
        .max_by_key(|r| r.revision)
    {
        if equal.revision == max {
            return Ok(Ensured::Revision(Box::new(equal.clone())));
        }
        let mut bumped = equal.clone();
        bumped.revision = max + 1;
        let name = equal.name_any();
        return match api.replace(&name, &PostParams::default(), &bumped).await {
            Ok(r) => Ok(Ensured::Revision(Box::new(r))),
            Err(e) => Err(Error::api(format!(
                "renumbering ControllerRevision {}/{name}",
                parent.namespace
            ))(e)),
        };
    }
    let hash = hash(&data, collision_count);
    let name = revision_name(&parent.name, &hash);
    let mut labels = parent.labels.clone();
    labels.insert(HASH_LABEL.into(), hash);
    let rev = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(parent.namespace.clone()),
            labels: Some(labels),
            annotations: (!parent.annotations.is_empty()).then(|| parent.annotations.clone()),
            owner_references: Some(vec![parent.owner_ref()]),
            ..Default::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: max + 1,
    };
    match api.create(&PostParams::default(), &rev).await {
        Ok(r) => Ok(Ensured::Revision(Box::new(r))),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // The cache may lag our own create; the name may also be taken by other data.
            let existing = api.get_opt(&name).await.map_err(Error::api(format!(
                "reading ControllerRevision {}/{name}",
                parent.namespace
            )))?;
            let Some(mut r) = existing.filter(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
            else {
                return Ok(Ensured::Collision);
            };
            match controller_ref(&r.metadata) {
                Some(o) if o.uid == parent.uid => Ok(Ensured::Revision(Box::new(r))),
                Some(_) => Ok(Ensured::Collision),
                // An orphan of a parent deleted with `--cascade=orphan`: adopt it, as
                // upstream's `ClaimControllerRevisions`, so the pods it labels stay current.
                None => {
                    r.metadata
                        .owner_references
                        .get_or_insert_with(Vec::new)
                        .push(parent.owner_ref());
                    api.replace(&name, &PostParams::default(), &r)
                        .await
                        .map(|r| Ensured::Revision(Box::new(r)))
                        .map_err(Error::api(format!(
                            "adopting ControllerRevision {}/{name}",
                            parent.namespace
                        )))
                }
            }
        }
        Err(e) => Err(Error::api(format!(
            "creating ControllerRevision {}/{name}",
            parent.namespace
        ))(e)),
    }
}

/// Deletes the oldest revisions beyond `limit`, never one in `live` (names of revisions that
/// pods or the parent's status still use), as upstream's `truncateHistory`.
///
/// # Errors
/// [`Error::Api`] if a delete fails (a revision already gone is fine).
pub async fn truncate(
    client: &Client,
    parent: &Parent,
    revs: &[ControllerRevision],
    live: &HashSet<String>,
    limit: usize,
) -> Result<(), Error> {
    let old: Vec<&ControllerRevision> = revs
        .iter()
        .filter(|r| !live.contains(&r.name_any()))
        .collect();
    if old.len() <= limit {
        return Ok(());
    }
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &parent.namespace);
    for r in &old[..old.len() - limit] {
        let name = r.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::api(format!(
                    "deleting ControllerRevision {}/{name}",
                    parent.namespace
                ))(e))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    #[test]
    fn patch_replaces_the_template_and_round_trips() {
        let t = template("nginx");
        let data = template_patch(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision {
            data: Some(RawExtension(data)),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t));
    }

    #[test]
    fn hashes_are_stable_and_differ_by_data_and_collisions() {
        let a = template_patch(&template("nginx"));
        let b = template_patch(&template("nginx:1.27"));
        assert_eq!(hash(&a, None), hash(&a.clone(), Some(0)));
        assert_ne!(hash(&a, None), hash(&b, None));
        assert_ne!(hash(&a, None), hash(&a, Some(1)));
        assert!(hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn names_keep_room_for_the_hash() {
        assert_eq!(revision_name("web", "abc"), "web-abc");
        let long = "x".repeat(300);
        assert_eq!(revision_name(&long, "h").len(), MAX_PREFIX + 2);
    }

    #[test]
    fn revisions_sort_by_number() {
        let rev = |name: &str, n: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            revision: n,
            ..Default::default()
        };
        let mut revs = vec![rev("c", 3), rev("a", 1), rev("b", 2)];
        sort(&mut revs);
        let names: Vec<String> = revs.iter().map(|r| r.name_any()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(max_revision(&revs), 3);
        assert_eq!(max_revision(&[]), 0);
    }
}
