//! The deployment controller, as upstream's (`pkg/controller/deployment`): each Deployment
//! owns ReplicaSets, one per pod template revision, and moves replicas between them by its
//! strategy (RollingUpdate within maxSurge/maxUnavailable, or Recreate). It manages
//! ReplicaSets only; their pods are the ReplicaSet controller's business, and availability
//! is read from the ReplicaSets' status.
//!
//! The arithmetic (fenceposts, new-RS size, old-RS scale-down, proportional scaling, status
//! and conditions) is pure and lives in [`rollout`]; [`run`] does the IO.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distro_client::labels::{self, Selector};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};

use crate::objects::{workload_selector, EventType, Recorder};
use crate::{already_exists, Backoff, Clients, Error};

pub mod rollout;

use rollout::{
    cond, controller_of, max_surge, new_condition, replicas, set_condition, spec_replicas,
};

/// Label that tells a Deployment's ReplicaSets (and their pods) apart by template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its Deployment's current one).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a rolled-back-to ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last sized.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last sized.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Upstream's cap on the revision-history annotation.
const MAX_REV_HISTORY_CHARS: usize = 2000;

/// Deployment annotations not copied to ReplicaSets (upstream's `skipCopyAnnotation`).
const SKIP_COPY: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

struct Ctx {
    client: Client,
    replicasets: Store<ReplicaSet>,
    recorder: Recorder,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let deployments = clients.informers.get::<Deployment>();
    let replicasets = clients.informers.get::<ReplicaSet>();
    let recorder = Recorder::new(
        clients.writer("deployment-controller"),
        "deployment-controller",
        None,
    );
    let ctx = Arc::new(Ctx {
        client: clients.writer("deployment-controller"),
        replicasets: replicasets.store(),
        recorder,
        backoff: Backoff::default(),
    });
    let store = deployments.store();
    let results = Controller::for_shared_stream(deployments.subscribe(), deployments.store())
        .watches_shared_stream(replicasets.subscribe(), move |rs: Arc<ReplicaSet>| {
            owners_of(&rs, &store.state())
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive("deployment", results).await;
}

/// The Deployments a ReplicaSet change concerns: its controller, or for an orphan every
/// Deployment in its namespace whose selector matches it (one may adopt it).
fn owners_of(rs: &ReplicaSet, deployments: &[Arc<Deployment>]) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace().unwrap_or_default();
    if let Some(owner) = controller_of(&rs.metadata) {
        return if owner.kind == "Deployment" {
            vec![ObjectRef::new(&owner.name).within(&ns)]
        } else {
            Vec::new()
        };
    }
    deployments
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(&ns))
        .filter(|d| {
            d.spec.as_ref().is_some_and(|s| {
                !rollout::selects_everything(&s.selector)
                    && labels::matches(Some(&s.selector), &rs.metadata.labels)
            })
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

fn error_policy(d: Arc<Deployment>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&d)))
}

fn key(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = d.namespace().unwrap_or_default();
    let mut sync = Rollout {
        ctx: &ctx,
        rs_api: Api::namespaced(ctx.client.clone(), &ns),
        d_api: Api::namespaced(ctx.client.clone(), &ns),
        d: (*d).clone(),
        rss: Vec::new(),
    };
    let action = sync.run().await?;
    ctx.backoff.succeeded(&key(&d));
    Ok(action)
}

/// One reconcile of one Deployment: its latest copy and its ReplicaSets, both updated as
/// writes succeed.
struct Rollout<'a> {
    ctx: &'a Ctx,
    rs_api: Api<ReplicaSet>,
    d_api: Api<Deployment>,
    d: Deployment,
    rss: Vec<ReplicaSet>,
}

impl Rollout<'_> {
    async fn run(&mut self) -> Result<Action, Error> {
        let spec = self.d.spec.clone().unwrap_or_default();
        if rollout::selects_everything(&spec.selector) {
            self.event(
                EventType::Warning,
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let mut status = self.d.status.clone().unwrap_or_default();
            if status.observed_generation < self.d.metadata.generation {
                status.observed_generation = self.d.metadata.generation;
                self.update_status(status).await?;
            }
            return Ok(Action::await_change());
        }
        let Some(selector) = workload_selector(&spec.selector, &key(&self.d)) else {
            return Ok(Action::await_change());
        };
        self.claim(&selector).await?;
        if self.d.metadata.deletion_timestamp.is_some() {
            let (new, _) = self.new_and_old(false).await?;
            let status = rollout::calculate_status(&self.d, &self.rss, new, Timestamp::now());
            self.write_status_if_changed(status).await?;
            return Ok(Action::await_change());
        }
        self.check_paused_conditions().await?;
        if spec.paused == Some(true) || self.is_scaling_event().await? {
            return self.sync_scale().await;
        }
        if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            self.rollout_recreate().await
        } else {
            self.rollout_rolling().await
        }
    }

    /// Lists the ReplicaSets this Deployment controls, adopting matching orphans and releasing
    /// owned ones that no longer match (upstream's `ClaimReplicaSets`).
    async fn claim(&mut self, selector: &Selector) -> Result<(), Error> {
        let ns = self.d.namespace().unwrap_or_default();
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let deleting = self.d.metadata.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        let mut fresh_checked = false;
        for rs in self.ctx.replicasets.state() {
            if rs.namespace().as_deref() != Some(&ns) {
                continue;
            }
            let matched = selector.matches(&rs.metadata.labels);
            match controller_of(&rs.metadata) {
                Some(o) if o.uid == uid => {
                    if matched || deleting {
                        owned.push((*rs).clone());
                    } else {
                        self.set_owner(&rs, false).await?;
                    }
                }
                Some(_) => {}
                None => {
                    if !matched || deleting || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if !fresh_checked {
                        // Adopt only for a live Deployment, not a stale cache copy.
                        let fresh = self
                            .d_api
                            .get(&self.d.name_any())
                            .await
                            .map_err(Error::api("checking deployment before adoption"))?;
                        if fresh.metadata.uid.as_deref() != Some(uid.as_str())
                            || fresh.metadata.deletion_timestamp.is_some()
                        {
                            return Ok(());
                        }
                        fresh_checked = true;
                    }
                    owned.push(self.set_owner(&rs, true).await?);
                }
            }
        }
        self.rss = owned;
        Ok(())
    }

    /// Adds (adopt) or removes (release) our controller reference on a ReplicaSet.
    async fn set_owner(&self, rs: &ReplicaSet, adopt: bool) -> Result<ReplicaSet, Error> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let mut refs: Vec<OwnerReference> = rs
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o.uid != uid)
            .collect();
        if adopt {
            refs.push(self.owner_ref());
        }
        let patch = serde_json::json!({
            "metadata": {"ownerReferences": refs, "resourceVersion": rs.resource_version()}
        });
        let name = rs.name_any();
        let verb = if adopt { "adopting" } else { "releasing" };
        self.rs_api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api(format!("{verb} ReplicaSet {name}")))
    }

    fn owner_ref(&self) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: self.d.name_any(),
            uid: self.d.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Finds the new ReplicaSet (oldest whose template equals ours, hash ignored), creating it
    /// when asked, and brings its revision annotations up to date. Returns its index.
    async fn new_and_old(&mut self, create: bool) -> Result<(Option<usize>, ()), Error> {
        let template = self
            .d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        rollout::sort_by_creation(&mut self.rss);
        let found = self
            .rss
            .iter()
            .position(|rs| rollout::equal_ignore_hash(&template, rs_template(rs)));
        let max_old = self
            .rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != found)
            .map(|(_, rs)| rollout::revision(rs))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let surge = max_surge(&self.d);
        if let Some(i) = found {
            let mut rs = self.rss[i].clone();
            let changed = set_new_rs_annotations(&self.d, &mut rs, new_revision, true, surge);
            let min_ready = self.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = rs.spec.get_or_insert_with(Default::default);
            if changed || spec.min_ready_seconds != min_ready {
                spec.min_ready_seconds = min_ready;
                self.rss[i] = self.replace_rs(&rs).await?;
                return Ok((Some(i), ()));
            }
            let rev = rs.annotations().get(REVISION).cloned().unwrap_or_default();
            self.set_deployment_revision(&rev).await?;
            if rollout::has_progress_deadline(&self.d)
                && cond(self.d.status.as_ref(), "Progressing").is_none()
            {
                let mut status = self.d.status.clone().unwrap_or_default();
                set_condition(
                    &mut status,
                    new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set {:?}", rs.name_any()),
                    ),
                );
                self.update_status(status).await?;
            }
            return Ok((Some(i), ()));
        }
        if !create {
            return Ok((None, ()));
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = rollout::pod_template_hash(&template, collision);
        let mut tmpl = template.clone();
        tmpl.metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector: LabelSelector = self
            .d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                owner_references: Some(vec![self.owner_ref()]),
                labels: tmpl.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: self.d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(tmpl),
            }),
            status: None,
        };
        let count = rollout::new_rs_new_replicas(&self.d, &self.rss, &rs);
        rs.spec.as_mut().expect("set above").replicas = Some(count);
        set_new_rs_annotations(&self.d, &mut rs, new_revision, false, surge);
        let created = match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(e) if already_exists(&e) => {
                let existing = self
                    .rs_api
                    .get(&name)
                    .await
                    .map_err(Error::api(format!("reading ReplicaSet {name}")))?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|o| Some(&o.uid) == self.d.metadata.uid.as_ref());
                if ours && rollout::equal_ignore_hash(&template, rs_template(&existing)) {
                    self.rss.push(existing);
                    return Ok((Some(self.rss.len() - 1), ()));
                }
                // A hash collision: bump collisionCount so the next try hashes differently.
                let mut status = self.d.status.clone().unwrap_or_default();
                status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                self.update_status(status).await?;
                return Err(Error::api(format!(
                    "creating ReplicaSet {name} (hash collision)"
                ))(e));
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set {name:?}: {e}");
                if rollout::has_progress_deadline(&self.d) {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition("Progressing", "False", "ReplicaSetCreateError", msg.clone()),
                    );
                    let _ = self.update_status(status).await;
                }
                self.event(EventType::Warning, "ReplicaSetCreateError", msg);
                return Err(Error::api(format!("creating ReplicaSet {name}"))(e));
            }
        };
        if count > 0 {
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled up replica set {name} to {count} from 0"),
            );
        }
        self.set_deployment_revision(&new_revision.to_string())
            .await?;
        if rollout::has_progress_deadline(&self.d) {
            let mut status = self.d.status.clone().unwrap_or_default();
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                ),
            );
            self.update_status(status).await?;
        }
        self.rss.push(created);
        Ok((Some(self.rss.len() - 1), ()))
    }

    /// Mirrors the new ReplicaSet's revision on the Deployment (what `kubectl rollout status`
    /// and `describe` show). Status writes cannot change metadata here, so this is an update.
    async fn set_deployment_revision(&mut self, revision: &str) -> Result<(), Error> {
        if self.d.annotations().get(REVISION).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.annotations_mut().insert(REVISION.into(), revision.into());
        let name = d.name_any();
        self.d = self
            .d_api
            .replace(&name, &PostParams::default(), &d)
            .await
            .map_err(Error::api(format!("setting revision of Deployment {name}")))?;
        Ok(())
    }

    async fn replace_rs(&self, rs: &ReplicaSet) -> Result<ReplicaSet, Error> {
        let name = rs.name_any();
        self.rs_api
            .replace(&name, &PostParams::default(), rs)
            .await
            .map_err(Error::api(format!("updating ReplicaSet {name}")))
    }

    async fn update_status(
        &mut self,
        status: k8s_openapi::api::apps::v1::DeploymentStatus,
    ) -> Result<(), Error> {
        let mut d = self.d.clone();
        d.status = Some(status);
        let name = d.name_any();
        self.d = self
            .d_api
            .replace_status(&name, &PostParams::default(), &d)
            .await
            .map_err(Error::api(format!("updating status of Deployment {name}")))?;
        Ok(())
    }

    async fn write_status_if_changed(
        &mut self,
        status: k8s_openapi::api::apps::v1::DeploymentStatus,
    ) -> Result<(), Error> {
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.update_status(status).await
    }

    fn event(&self, type_: EventType, reason: &str, note: String) {
        self.ctx
            .recorder
            .record(self.d.object_ref(&()), type_, reason, note);
    }

    /// Sets a ReplicaSet's size and replica annotations; records an event when the size
    /// changes. Returns whether the size changed.
    async fn scale_rs(&mut self, i: usize, to: i32, op: Option<&str>) -> Result<bool, Error> {
        let from = replicas(&self.rss[i]);
        let want = spec_replicas(&self.d);
        let max = want + max_surge(&self.d);
        let mut rs = self.rss[i].clone();
        let annotations_changed = rollout::set_replicas_annotations(&mut rs, want, max);
        if from == to && !annotations_changed {
            return Ok(false);
        }
        rs.spec.get_or_insert_with(Default::default).replicas = Some(to);
        self.rss[i] = self.replace_rs(&rs).await?;
        if from != to {
            let op = op.unwrap_or(if from < to { "up" } else { "down" });
            let name = rs.name_any();
            self.event(
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {op} replica set {name} to {to} from {from}"),
            );
        }
        Ok(from != to)
    }

    async fn check_paused_conditions(&mut self) -> Result<(), Error> {
        if !rollout::has_progress_deadline(&self.d) {
            return Ok(());
        }
        let current = cond(self.d.status.as_ref(), "Progressing");
        let reason = current.and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let paused_cond = reason.as_deref() == Some("DeploymentPaused");
        let paused = self.d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let condition = if paused && !paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            )
        } else if !paused && paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        let mut status = self.d.status.clone().unwrap_or_default();
        set_condition(&mut status, condition);
        self.update_status(status).await
    }

    /// Whether some active ReplicaSet was sized for another `spec.replicas`: then only
    /// scaling happens, no rollout step.
    async fn is_scaling_event(&mut self) -> Result<bool, Error> {
        self.new_and_old(false).await?;
        let want = spec_replicas(&self.d);
        Ok(self
            .rss
            .iter()
            .filter(|rs| replicas(rs) > 0)
            .filter_map(|rs| rollout::annotation_i32(rs, DESIRED_REPLICAS))
            .any(|desired| desired != want))
    }

    /// Scaling (and paused deployments): resize without rolling out.
    async fn sync_scale(&mut self) -> Result<Action, Error> {
        let (new, _) = self.new_and_old(false).await?;
        let plan = rollout::scale_plan(&self.d, &self.rss, new);
        for (i, to, op) in plan {
            self.scale_rs(i, to, op).await?;
        }
        if self.d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(new).await?;
        }
        let status = rollout::calculate_status(&self.d, &self.rss, new, Timestamp::now());
        self.write_status_if_changed(status).await?;
        Ok(Action::await_change())
    }

    async fn rollout_rolling(&mut self) -> Result<Action, Error> {
        let (new, _) = self.new_and_old(true).await?;
        let new = new.expect("created when missing");
        let want = spec_replicas(&self.d);
        let new_size = replicas(&self.rss[new]);
        let target = if new_size > want {
            want
        } else {
            rollout::new_rs_new_replicas(&self.d, &self.rss, &self.rss[new])
        };
        if new_size != want && self.scale_rs(new, target, None).await? {
            return self.sync_rollout_status(Some(new)).await;
        }
        let mut scaled_down = false;
        for (i, to) in rollout::old_scale_down_plan(&self.d, &self.rss, new) {
            scaled_down |= self.scale_rs(i, to, Some("down")).await?;
        }
        if scaled_down {
            return self.sync_rollout_status(Some(new)).await;
        }
        let status = rollout::calculate_status(&self.d, &self.rss, Some(new), Timestamp::now());
        if rollout::deployment_complete(&self.d, &status) {
            self.cleanup(Some(new)).await?;
        }
        self.sync_rollout_status(Some(new)).await
    }

    async fn rollout_recreate(&mut self) -> Result<Action, Error> {
        let (mut new, _) = self.new_and_old(false).await?;
        let mut scaled_down = false;
        for i in 0..self.rss.len() {
            if Some(i) != new && replicas(&self.rss[i]) > 0 {
                scaled_down |= self.scale_rs(i, 0, Some("down")).await?;
            }
        }
        if scaled_down {
            return self.sync_rollout_status(new).await;
        }
        // Old pods still running (as their ReplicaSets report): wait for them to go.
        let old_running = self
            .rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new)
            .any(|(_, rs)| rs.status.as_ref().is_some_and(|s| s.replicas > 0));
        if old_running {
            return self.sync_rollout_status(new).await;
        }
        if new.is_none() {
            new = self.new_and_old(true).await?.0;
        }
        let new_i = new.expect("created when missing");
        self.scale_rs(new_i, spec_replicas(&self.d), None).await?;
        let status = rollout::calculate_status(&self.d, &self.rss, new, Timestamp::now());
        if rollout::deployment_complete(&self.d, &status) {
            self.cleanup(new).await?;
        }
        self.sync_rollout_status(new).await
    }

    /// Deletes the oldest fully scaled-down ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(&mut self, new: Option<usize>) -> Result<(), Error> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut old: Vec<&ReplicaSet> = self
            .rss
            .iter()
            .enumerate()
            .filter(|(i, rs)| Some(*i) != new && rs.metadata.deletion_timestamp.is_none())
            .map(|(_, rs)| rs)
            .collect();
        let diff = old.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        old.sort_by_key(|rs| {
            (
                rollout::revision(rs),
                rs.metadata.creation_timestamp.clone(),
            )
        });
        let doomed: Vec<String> = old
            .into_iter()
            .take(diff as usize)
            .filter(|rs| {
                let status = rs.status.clone().unwrap_or_default();
                status.replicas == 0
                    && replicas(rs) == 0
                    && rs.metadata.generation.unwrap_or(0)
                        <= status.observed_generation.unwrap_or(0)
            })
            .map(|rs| rs.name_any())
            .collect();
        for name in doomed {
            match self.rs_api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(Error::api(format!("deleting old ReplicaSet {name}"))(e)),
            }
            tracing::debug!(deployment = %key(&self.d), replicaset = %name, "cleaned up old ReplicaSet");
        }
        self.rss
            .retain(|rs| rs.metadata.deletion_timestamp.is_none());
        Ok(())
    }

    /// Status and the Progressing condition after a rollout step; requeues to notice a
    /// progress deadline passing.
    async fn sync_rollout_status(&mut self, new: Option<usize>) -> Result<Action, Error> {
        let now = Timestamp::now();
        let new_name = new.map(|i| self.rss[i].name_any());
        let status = rollout::rollout_status(&self.d, &self.rss, new, new_name.as_deref(), now);
        let requeue = rollout::requeue_after(&self.d, &status, now);
        self.write_status_if_changed(status).await?;
        Ok(match requeue {
            Some(after) => Action::requeue(after.max(Duration::from_millis(100))),
            None => Action::await_change(),
        })
    }
}

fn rs_template(rs: &ReplicaSet) -> Option<&k8s_openapi::api::core::v1::PodTemplateSpec> {
    rs.spec.as_ref().and_then(|s| s.template.as_ref())
}

/// Copies the Deployment's annotations, sets the revision (keeping the old one in the
/// history when a rollback bumps it) and, for a new ReplicaSet, the replica annotations.
/// Returns whether anything changed (upstream's `SetNewReplicaSetAnnotations`).
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    surge: i32,
) -> bool {
    let mut changed = false;
    let ann: &mut BTreeMap<String, String> =
        rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in d.annotations() {
        if SKIP_COPY.contains(&k.as_str()) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = ann.get(REVISION).cloned();
    let old_int = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return false,
    };
    if old_int < new_revision {
        ann.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            let history = ann.get(REVISION_HISTORY).cloned().unwrap_or_default();
            if let Some(h) = rollout::append_history(&history, &old, MAX_REV_HISTORY_CHARS) {
                ann.insert(REVISION_HISTORY.into(), h);
            }
        }
    }
    if !exists {
        let want = spec_replicas(d);
        changed |= rollout::set_replicas_annotations(rs, want, want + surge);
    }
    changed
}
