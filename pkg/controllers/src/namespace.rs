//! The namespace controller: empties a namespace that is being deleted, then releases it.
//!
//! As upstream's (`pkg/controller/namespace/deletion`): for a namespace with a
//! deletionTimestamp and the `kubernetes` finalizer, discover every namespaced resource that
//! can be listed and deleted (custom resources included), delete its objects (one
//! deletecollection where supported, else one by one), report progress in the five
//! `NamespaceDeletion*`/`Namespace*Remaining` conditions, requeue while anything remains, and
//! finally remove the finalizer through `PUT /api/v1/namespaces/<ns>/finalize`, after which
//! the apiserver deletes the namespace.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::controller::{Action, Config, Controller};
use kube::{Api, Client, ResourceExt};

use crate::{Backoff, Clients, Error};

/// The finalizer this controller owns (`spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";

/// How many resource types are emptied at once: enough to finish a namespace quickly, few
/// enough not to crowd out other clients of the apiserver.
const PARALLEL_RESOURCES: usize = 8;

/// Requeue delay while content without finalizers remains (e.g. pods in their grace period).
const CONTENT_REQUEUE: Duration = Duration::from_secs(1);

/// Requeue delay while content waits on other controllers' finalizers.
const FINALIZER_REQUEUE: Duration = Duration::from_secs(5);

struct Ctx {
    client: Client,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let namespaces = clients.informers.get::<Namespace>();
    let ctx = Arc::new(Ctx {
        client: clients.writer("namespace-controller"),
        backoff: Backoff::default(),
    });
    let results = Controller::for_shared_stream(namespaces.subscribe(), namespaces.store())
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive("namespace", results).await;
}

fn pending_deletion(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        && ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !pending_deletion(&ns) {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    // The cache may not have seen our own finalize yet: act on the current object only.
    let Some(mut current) = api
        .get_opt(&name)
        .await
        .map_err(Error::api(format!("reading namespace {name}")))?
    else {
        return Ok(Action::await_change());
    };
    if !pending_deletion(&current) {
        return Ok(Action::await_change());
    }
    let report = delete_content(&ctx.client, &name).await;
    let status = current.status.get_or_insert_with(NamespaceStatus::default);
    let phase_changed = status.phase.as_deref() != Some("Terminating");
    status.phase = Some("Terminating".into());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    if update_conditions(status, &report.conditions(now)) || phase_changed {
        current = api
            .replace_status(&name, &PostParams::default(), &current)
            .await
            .map_err(Error::api(format!(
                "updating the status of namespace {name}"
            )))?;
    }
    if let Some(e) = report.failure() {
        return Err(e);
    }
    if !report.remaining.is_empty() {
        tracing::debug!(namespace = %name, remaining = ?report.remaining, finalizers = ?report.finalizers, "content remains; requeueing");
        return Ok(Action::requeue(if report.finalizers.is_empty() {
            CONTENT_REQUEUE
        } else {
            FINALIZER_REQUEUE
        }));
    }
    if let Some(spec) = current.spec.as_mut() {
        if let Some(f) = spec.finalizers.as_mut() {
            f.retain(|f| f != FINALIZER);
        }
    }
    api.replace_subresource("finalize", &name, &PostParams::default(), &current)
        .await
        .map_err(Error::api(format!("finalizing namespace {name}")))?;
    ctx.backoff.succeeded(&name);
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::requeue_with_backoff(&ctx.backoff, &ns)
}

/// What one pass over a namespace's content found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContentReport {
    /// Discovery failed (nothing was deleted).
    pub discovery_error: Option<String>,
    /// Failures deleting or listing, one per resource type.
    pub delete_errors: Vec<String>,
    /// Objects still present, by `resource.group` (upstream's wording).
    pub remaining: BTreeMap<String, usize>,
    /// Objects still present, by finalizer they wait on.
    pub finalizers: BTreeMap<String, usize>,
}

impl ContentReport {
    /// The error to retry with, if this pass failed.
    pub fn failure(&self) -> Option<Error> {
        if let Some(e) = &self.discovery_error {
            return Some(Error::Content(format!("discovery failed: {e}")));
        }
        if !self.delete_errors.is_empty() {
            return Some(Error::Content(self.delete_errors.join(", ")));
        }
        None
    }

    /// The conditions upstream reports for this outcome: `True` with a reason for each
    /// problem, the `False` "ok" variant otherwise.
    pub fn conditions(&self, now: Time) -> Vec<NamespaceCondition> {
        let cond = |type_: &str, failed: Option<(&str, String)>| {
            let (status, reason, message) = match failed {
                Some((reason, message)) => ("True", reason.to_string(), message),
                None => {
                    let (reason, message) = ok_variant(type_);
                    ("False", reason.to_string(), message.to_string())
                }
            };
            NamespaceCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: Some(reason),
                message: Some(message),
                last_transition_time: Some(now.clone()),
            }
        };
        let mut errors = self.delete_errors.clone();
        errors.sort();
        vec![
            cond(
                "NamespaceDeletionDiscoveryFailure",
                self.discovery_error.clone().map(|e| ("DiscoveryFailed", e)),
            ),
            cond("NamespaceDeletionGroupVersionParsingFailure", None),
            cond(
                "NamespaceDeletionContentFailure",
                (!errors.is_empty()).then(|| {
                    (
                        "ContentDeletionFailed",
                        format!(
                            "Failed to delete all resource types, {} remaining: {}",
                            errors.len(),
                            errors.join(", ")
                        ),
                    )
                }),
            ),
            cond(
                "NamespaceContentRemaining",
                (!self.remaining.is_empty()).then(|| {
                    let parts: Vec<String> = self
                        .remaining
                        .iter()
                        .map(|(gr, n)| format!("{gr} has {n} resource instances"))
                        .collect();
                    (
                        "SomeResourcesRemain",
                        format!("Some resources are remaining: {}", parts.join(", ")),
                    )
                }),
            ),
            cond(
                "NamespaceFinalizersRemaining",
                (!self.finalizers.is_empty()).then(|| {
                    let parts: Vec<String> = self
                        .finalizers
                        .iter()
                        .map(|(f, n)| format!("{f} in {n} resource instances"))
                        .collect();
                    (
                        "SomeFinalizersRemain",
                        format!(
                            "Some content in the namespace has finalizers remaining: {}",
                            parts.join(", ")
                        ),
                    )
                }),
            ),
        ]
    }

    fn merge(&mut self, other: ContentReport) {
        self.delete_errors.extend(other.delete_errors);
        for (k, v) in other.remaining {
            *self.remaining.entry(k).or_default() += v;
        }
        for (k, v) in other.finalizers {
            *self.finalizers.entry(k).or_default() += v;
        }
    }
}

/// Upstream's reason and message for a condition that reports no problem.
fn ok_variant(type_: &str) -> (&'static str, &'static str) {
    match type_ {
        "NamespaceDeletionDiscoveryFailure" => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        "NamespaceDeletionGroupVersionParsingFailure" => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        "NamespaceDeletionContentFailure" => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        "NamespaceContentRemaining" => ("ContentRemoved", "All content successfully removed"),
        "NamespaceFinalizersRemaining" => (
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
        _ => ("", ""),
    }
}

/// Merges `new` into `status.conditions` as upstream does: a condition's transition time
/// changes only when its status does; other condition types are kept. Returns whether
/// anything changed.
pub fn update_conditions(status: &mut NamespaceStatus, new: &[NamespaceCondition]) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    for n in new {
        match conditions.iter_mut().find(|c| c.type_ == n.type_) {
            None => {
                conditions.push(n.clone());
                changed = true;
            }
            Some(old) => {
                if old.status != n.status || old.reason != n.reason || old.message != n.message {
                    if old.status != n.status {
                        old.last_transition_time = n.last_transition_time.clone();
                    }
                    old.status = n.status.clone();
                    old.reason = n.reason.clone();
                    old.message = n.message.clone();
                    changed = true;
                }
            }
        }
    }
    changed
}

/// One pass: discover, delete, count what is left.
async fn delete_content(client: &Client, ns: &str) -> ContentReport {
    // Aggregated discovery is two requests; fall back to per-group discovery for servers
    // (or proxies) that do not serve it.
    let discovery = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(aggregated) => match Discovery::new(client.clone()).run().await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(namespace = %ns, error = %aggregated, "aggregated discovery failed");
                return ContentReport {
                    discovery_error: Some(e.to_string()),
                    ..Default::default()
                };
            }
        },
    };
    let targets: Vec<(ApiResource, ApiCapabilities)> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .filter(|(_, caps)| {
            caps.scope == Scope::Namespaced
                && caps.supports_operation(verbs::DELETE)
                && caps.supports_operation(verbs::LIST)
        })
        .collect();
    let mut report = ContentReport::default();
    let mut passes = futures::stream::iter(targets)
        .map(|(ar, caps)| delete_resource(client, ns, ar, caps))
        .buffer_unordered(PARALLEL_RESOURCES);
    while let Some(r) = passes.next().await {
        report.merge(r);
    }
    report
}

/// Empties one resource type in `ns` and reports what remains.
async fn delete_resource(
    client: &Client,
    ns: &str,
    ar: ApiResource,
    caps: ApiCapabilities,
) -> ContentReport {
    let mut report = ContentReport::default();
    let gr = format!("{}.{}", ar.plural, ar.group);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let background = DeleteParams::background();
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    let list = |api: Api<DynamicObject>| async move { api.list(&ListParams::default()).await };
    if caps.supports_operation(verbs::DELETE_COLLECTION) {
        if let Err(e) = api
            .delete_collection(&background, &ListParams::default())
            .await
        {
            if !gone(&e) {
                report.delete_errors.push(format!("{gr}: {e}"));
                return report;
            }
        }
    } else {
        let items = match list(api.clone()).await {
            Ok(l) => l.items,
            Err(e) if gone(&e) => Vec::new(),
            Err(e) => {
                report.delete_errors.push(format!("{gr}: {e}"));
                return report;
            }
        };
        for obj in items
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
        {
            match api.delete(&obj.name_any(), &background).await {
                Ok(_) => {}
                Err(e) if gone(&e) => {}
                Err(e) => {
                    report.delete_errors.push(format!("{gr}: {e}"));
                    return report;
                }
            }
        }
    }
    let left = match list(api).await {
        Ok(l) => l.items,
        Err(e) if gone(&e) => Vec::new(),
        Err(e) => {
            report.delete_errors.push(format!("{gr}: {e}"));
            return report;
        }
    };
    if !left.is_empty() {
        report.remaining.insert(gr, left.len());
        for f in left.iter().flat_map(|o| o.finalizers().iter()) {
            *report.finalizers.entry(f.clone()).or_default() += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid"))
    }

    fn get<'a>(c: &'a [NamespaceCondition], type_: &str) -> &'a NamespaceCondition {
        c.iter().find(|c| c.type_ == type_).expect(type_)
    }

    #[test]
    fn clean_pass_reports_the_ok_variants() {
        let c = ContentReport::default().conditions(t(1));
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(|c| c.status == "False"));
        let remaining = get(&c, "NamespaceContentRemaining");
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
        assert_eq!(
            remaining.message.as_deref(),
            Some("All content successfully removed")
        );
        assert_eq!(
            get(&c, "NamespaceFinalizersRemaining").reason.as_deref(),
            Some("ContentHasNoFinalizers")
        );
    }

    #[test]
    fn remaining_content_and_finalizers_use_upstream_wording() {
        let report = ContentReport {
            remaining: BTreeMap::from([
                ("pods.".to_string(), 2),
                ("widgets.example.com".to_string(), 1),
            ]),
            finalizers: BTreeMap::from([("example.com/cleanup".to_string(), 1)]),
            ..Default::default()
        };
        let c = report.conditions(t(1));
        let remaining = get(&c, "NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: pods. has 2 resource instances, widgets.example.com has 1 resource instances")
        );
        assert_eq!(
            get(&c, "NamespaceFinalizersRemaining").message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/cleanup in 1 resource instances")
        );
        assert!(
            report.failure().is_none(),
            "remaining content is not an error"
        );
    }

    #[test]
    fn failures_become_true_conditions_and_errors() {
        let report = ContentReport {
            discovery_error: Some("boom".into()),
            ..Default::default()
        };
        let c = report.conditions(t(1));
        let d = get(&c, "NamespaceDeletionDiscoveryFailure");
        assert_eq!(
            (d.status.as_str(), d.reason.as_deref()),
            ("True", Some("DiscoveryFailed"))
        );
        assert!(report.failure().is_some());
        let report = ContentReport {
            delete_errors: vec!["b: x".into(), "a: y".into()],
            ..Default::default()
        };
        let c = report.conditions(t(1));
        assert_eq!(
            get(&c, "NamespaceDeletionContentFailure")
                .message
                .as_deref(),
            Some("Failed to delete all resource types, 2 remaining: a: y, b: x")
        );
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let mut status = NamespaceStatus::default();
        assert!(update_conditions(
            &mut status,
            &ContentReport::default().conditions(t(1))
        ));
        assert!(
            !update_conditions(&mut status, &ContentReport::default().conditions(t(2))),
            "same outcome, nothing to write"
        );
        let busy = ContentReport {
            remaining: BTreeMap::from([("configmaps.".to_string(), 1)]),
            ..Default::default()
        };
        assert!(update_conditions(&mut status, &busy.conditions(t(3))));
        let conds = status.conditions.as_deref().unwrap_or_default();
        assert_eq!(
            get(conds, "NamespaceContentRemaining").last_transition_time,
            Some(t(3))
        );
        assert_eq!(
            get(conds, "NamespaceDeletionDiscoveryFailure").last_transition_time,
            Some(t(1))
        );
    }

    #[test]
    fn only_namespaces_with_deletion_and_our_finalizer_are_pending() {
        let mut ns = Namespace::default();
        assert!(!pending_deletion(&ns));
        ns.metadata.deletion_timestamp = Some(t(1));
        assert!(!pending_deletion(&ns));
        ns.spec = Some(k8s_openapi::api::core::v1::NamespaceSpec {
            finalizers: Some(vec![FINALIZER.into()]),
        });
        assert!(pending_deletion(&ns));
    }
}
