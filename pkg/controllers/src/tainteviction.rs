//! The taint eviction controller, as upstream's (`pkg/controller/tainteviction`): deletes the
//! pods on a node with `NoExecute` taints they do not tolerate, at once, and the pods that
//! tolerate them only for `tolerationSeconds`, once that time has passed since the taint was
//! added. So pods of a lost node are recreated elsewhere by their controllers.
//!
//! Before deleting, it records the `TaintManagerEviction` event and adds the pod's
//! `DisruptionTarget` condition (reason `DeletionByTaintManager`), so `kubectl describe` and
//! Job pod failure policies can tell why the pod went.
//!
//! The timers are level-triggered: a node is reconciled on every change of it or of a pod on
//! it, and requeued for the earliest pending eviction, so a restart loses nothing.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use distro_scheduler::fit::tolerates;

use crate::objects::{object_ref, EventType, Recorder};
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "taint-eviction-controller";

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    backoff: Backoff,
    /// When each node's NoExecute taints were first seen without a `timeAdded` (taints added
    /// by hand through older clients), so their tolerations still count from somewhere.
    first_seen: Mutex<HashMap<String, Timestamp>>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let nodes = clients.informers.get::<Node>();
    let pods = clients.informers.get::<Pod>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        events: Recorder::new(clients.writer(COMPONENT).clone(), COMPONENT, None),
        pods: pods.store(),
        backoff: Backoff::default(),
        first_seen: Mutex::default(),
    });
    let node_store = nodes.store();
    let results = Controller::for_shared_stream(nodes.subscribe(), nodes.store())
        // A pod bound to (or changing tolerations on) a NoExecute-tainted node is our business.
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            let node = pod.spec.as_ref()?.node_name.clone()?;
            let n = node_store.get(&ObjectRef::new(&node))?;
            (!no_execute_taints(&n).is_empty()).then(|| ObjectRef::new(&node))
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn error_policy(node: Arc<Node>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&node.name_any()))
}

/// The node's `NoExecute` taints.
pub fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .cloned()
        .collect()
}

/// How long a pod may stay given `taints` (upstream's `getMinTolerationTime` over the
/// tolerations in use): `Some(ZERO)` if a taint is not tolerated, `None` if every taint is
/// tolerated forever, else the shortest `tolerationSeconds` among the tolerations that match.
pub fn toleration_time(tolerations: &[Toleration], taints: &[Taint]) -> Option<Duration> {
    let mut min: Option<Duration> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        for t in matching {
            if let Some(secs) = t.toleration_seconds {
                let d = Duration::from_secs(secs.max(0) as u64);
                min = Some(min.map_or(d, |m| m.min(d)));
            }
        }
    }
    min
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = node.name_any();
    let taints = no_execute_taints(&node);
    if taints.is_empty() {
        ctx.first_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&name);
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    // Tolerations count from the newest NoExecute taint: until it came, the pod was fine.
    let since = taints
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
        .max()
        .unwrap_or_else(|| {
            *ctx.first_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(name.clone())
                .or_insert(now)
        });
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let mut next: Option<Duration> = None;
    let mut failure = None;
    for pod in pods {
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        let Some(allowed) = toleration_time(&tolerations, &taints) else {
            continue;
        };
        // A pod that arrived after the taint (a DaemonSet's, say) counts from its creation.
        let start = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(since, |c| c.0.max(since));
        let due_ms = start
            .as_millisecond()
            .saturating_add(allowed.as_millis() as i64);
        let left = due_ms - now.as_millisecond();
        if left > 0 {
            let d = Duration::from_millis(left as u64);
            next = Some(next.map_or(d, |n| n.min(d)));
            continue;
        }
        if let Err(e) = evict(&ctx, &pod).await {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    ctx.backoff.succeeded(&name);
    Ok(next.map_or_else(Action::await_change, |d| {
        Action::requeue(d + Duration::from_millis(50))
    }))
}

/// Records the event, marks the pod a disruption target and deletes it (upstream's
/// `addConditionAndDeletePod`); a pod already gone is not an error.
async fn evict(ctx: &Ctx, pod: &Pod) -> Result<(), Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    ctx.events.record(
        object_ref(pod),
        EventType::Normal,
        "TaintManagerEviction",
        format!("Marking for deletion Pod {ns}/{name}"),
    );
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let already = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "DisruptionTarget"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("DeletionByTaintManager")
            })
        });
    if !already {
        let patch = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => {
                return Err(Error::api(format!(
                    "marking pod {ns}/{name} as a disruption target"
                ))(e))
            }
        }
    }
    // The UID precondition keeps a same-named replacement pod safe.
    let dp = DeleteParams {
        preconditions: pod.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), "evicted pod from NoExecute-tainted node");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(Error::api(format!("deleting pod {ns}/{name}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            value: None,
        }
    }

    #[test]
    fn toleration_times_as_upstream() {
        let unreachable = taint("node.kubernetes.io/unreachable");
        let other = taint("dedicated");
        assert_eq!(
            toleration_time(&[], std::slice::from_ref(&unreachable)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            toleration_time(
                &[tol("node.kubernetes.io/unreachable", Some(300))],
                std::slice::from_ref(&unreachable)
            ),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            toleration_time(
                &[tol("node.kubernetes.io/unreachable", None)],
                std::slice::from_ref(&unreachable)
            ),
            None,
            "no tolerationSeconds tolerates forever"
        );
        assert_eq!(
            toleration_time(
                &[tol("node.kubernetes.io/unreachable", Some(300))],
                &[unreachable.clone(), other.clone()]
            ),
            Some(Duration::ZERO),
            "one untolerated taint evicts at once"
        );
        let everything = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert_eq!(toleration_time(&[everything], &[unreachable, other]), None);
        let wrong_effect = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        assert_eq!(
            toleration_time(&[wrong_effect], &[taint("dedicated")]),
            Some(Duration::ZERO)
        );
    }
}
