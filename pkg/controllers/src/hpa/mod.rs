//! The horizontal pod autoscaler, as upstream's `pkg/controller/podautoscaler`: every sync
//! period each autoscaling/v2 HPA reads its target's `/scale`, computes from resource
//! metrics (`metrics.k8s.io`) how many replicas would meet its targets, stabilises and
//! rate-limits that ([`behavior`]), writes the new scale and reports status, conditions and
//! Events as upstream does.
//!
//! - [`replicas`]: the replica calculator (pure).
//! - [`behavior`]: stabilisation windows, scaling policies, min/max (pure, with history).
//! - [`metrics`]: PodMetrics and the scale target's resource.
//! - [`status`]: conditions and aggregated Events.
//!
//! # Limits
//! - Only `Resource` and `ContainerResource` metrics: `Pods`, `Object` and `External` need the
//!   custom and external metrics APIs, which distro does not serve; such a metric fails with
//!   a `FailedGetPodsMetric` / `FailedGetObjectMetric` / `FailedGetExternalMetric` Event and
//!   condition saying so (and, as upstream, the others still scale).
//! - Recommendation and scale-event history live in memory, as upstream's: a controller
//!   restart or leader change forgets them.
//! - No check for several HPAs targeting the same pods (upstream's `AmbiguousSelector`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distro_apimachinery::labels::Selector;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus, MetricTarget, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::time::Instant;

use crate::objects::{object_ref, EventType, Recorder};
use crate::{Backoff, Clients, Error};

pub mod behavior;
pub mod metrics;
pub mod replicas;
pub mod status;

use behavior::History;
use replicas::Calculator;
use status::set_condition;

/// The controller's identity and Event source, as upstream's.
pub const COMPONENT: &str = "horizontal-pod-autoscaler";

/// The HPA controller's flags (upstream's `--horizontal-pod-autoscaler-*`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How often each HPA is reconciled (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// Scale-down stabilisation for HPAs without their own window
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min).
    pub downscale_stabilization: Duration,
    /// Ratios within `1 ± tolerance` do not scale (`--horizontal-pod-autoscaler-tolerance`).
    pub tolerance: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: 0.1,
        }
    }
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    hpas: Store<HorizontalPodAutoscaler>,
    settings: Settings,
    calc: Calculator,
    targets: metrics::Targets,
    histories: Mutex<HashMap<String, History>>,
    /// When each HPA was last synced, to sync each at most once per period.
    last_synced: Mutex<HashMap<String, Instant>>,
    events: Recorder,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    clients: Clients,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let inf = &clients.informers;
    let hpas = inf.get::<HorizontalPodAutoscaler>();
    let pods = inf.get::<Pod>();
    let _ = futures::join!(hpas.wait_synced(), pods.wait_synced());
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        pods: pods.store(),
        hpas: hpas.store(),
        settings,
        calc: Calculator {
            tolerance: settings.tolerance,
            ..Calculator::default()
        },
        targets: metrics::Targets::default(),
        histories: Mutex::new(HashMap::new()),
        last_synced: Mutex::new(HashMap::new()),
        events: Recorder::new(clients.writer(COMPONENT), COMPONENT, None),
        backoff: Backoff::default(),
    });
    let results = Controller::for_shared_stream(hpas.subscribe(), hpas.store())
        .with_config(Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn key(hpa: &HorizontalPodAutoscaler) -> String {
    format!("{}/{}", hpa.namespace().unwrap_or_default(), hpa.name_any())
}

fn error_policy(hpa: Arc<HorizontalPodAutoscaler>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    // Upstream requeues failed HPAs with the sync period too; the backoff only spaces out
    // API errors on top of it.
    let backoff = ctx.backoff.failed(&key(&hpa));
    Action::requeue(backoff.max(ctx.settings.sync_period))
}

/// Why one metric could not give a proposal: the condition reason and the error.
#[derive(Debug)]
struct MetricFailure {
    reason: &'static str,
    error: String,
}

/// The result of evaluating every metric (upstream's `computeReplicasForMetrics`).
struct Proposal {
    replicas: i32,
    metric: String,
    statuses: Vec<MetricStatus>,
}

impl Ctx {
    fn history<T>(&self, key: &str, f: impl FnOnce(&mut History) -> T) -> T {
        let mut h = self.histories.lock().unwrap_or_else(|e| e.into_inner());
        f(h.entry(key.to_string()).or_default())
    }

    fn warn(&self, hpa: &HorizontalPodAutoscaler, reason: &'static str, message: String) {
        self.events
            .record(object_ref(hpa), EventType::Warning, reason, message);
    }

    fn last_sync(&self, key: &str) -> Option<Instant> {
        let m = self.last_synced.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).copied()
    }

    fn synced(&self, key: &str) {
        let mut m = self.last_synced.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(key.to_string(), Instant::now());
    }

    /// Forgets the history of deleted HPAs.
    fn prune(&self) {
        let live: std::collections::HashSet<String> =
            self.hpas.state().iter().map(|h| key(h)).collect();
        self.histories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live.contains(k));
        self.last_synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| live.contains(k));
    }
}

/// Reconciles an HPA at most once per sync period, as upstream's rate-limited queue does:
/// its own status writes (and any other change) would otherwise re-run it at once, scaling
/// again before the new pods report. Failures the HPA reports itself (conditions, Events)
/// are logged at debug only; API errors are retried with backoff.
async fn reconcile(obj: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let k = key(&obj);
    let period = ctx.settings.sync_period;
    let last = ctx.last_sync(&k);
    if let Some(elapsed) = last.map(|t| t.elapsed()) {
        // A little slack, so the periodic requeue itself is never deferred.
        if elapsed < period.mul_f64(0.9) {
            return Ok(Action::requeue(period - elapsed));
        }
    }
    ctx.prune();
    match sync(&obj, &ctx).await {
        Ok(()) => {}
        Err(Error::Autoscaling(e)) => {
            tracing::debug!(hpa = %k, error = %e, "autoscaling failed; reported on the HPA");
        }
        Err(e) => return Err(e),
    }
    ctx.synced(&k);
    ctx.backoff.succeeded(&k);
    Ok(Action::requeue(period))
}

async fn sync(obj: &HorizontalPodAutoscaler, ctx: &Ctx) -> Result<(), Error> {
    let k = key(obj);
    let ns = obj.namespace().unwrap_or_default();
    let mut hpa = obj.clone();
    let original = hpa.status.clone();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let reference = format!("{}/{}/{}", target.kind, ns, target.name);
    let now = Timestamp::now();
    let mut conditions = hpa
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();

    // The target's scale.
    let scale = async {
        let ar = ctx.targets.resource(&ctx.client, target).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        match api.get_scale(&target.name).await {
            Ok(s) => Ok((api, s)),
            Err(e) => {
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    ctx.targets.forget(target);
                }
                Err(format!(
                    "failed to query scale subresource for {reference}: {}",
                    crate::objects::api_message(&e)
                ))
            }
        }
    }
    .await;
    let (scales, mut scale) = match scale {
        Ok(s) => s,
        Err(e) => {
            ctx.warn(&hpa, "FailedGetScale", e.clone());
            set_condition(
                &mut conditions,
                "AbleToScale",
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
                now,
            );
            let status = hpa.status.get_or_insert_with(Default::default);
            status.conditions = Some(conditions);
            update_status(ctx, &ns, &mut hpa, original).await?;
            return Err(Error::Autoscaling(e));
        }
    };
    set_condition(
        &mut conditions,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
        now,
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    ctx.history(&k, |h| h.record_initial(current, now));
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut statuses = Vec::new();
    let mut failure = None;
    let mut rescale_reason = String::new();
    let desired;
    let rescale;
    if current == 0 && min != 0 {
        desired = 0;
        rescale = false;
        set_condition(
            &mut conditions,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
            now,
        );
    } else if current > max {
        rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
        rescale = true;
    } else if current < min {
        rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
        rescale = true;
    } else {
        let proposal = compute(ctx, &hpa, &scale, current, &mut conditions, now).await;
        let proposal = match proposal {
            Ok(p) => p,
            Err((statuses, e)) => {
                let status = hpa.status.get_or_insert_with(Default::default);
                status.current_replicas = Some(current);
                status.current_metrics = (!statuses.is_empty()).then_some(statuses);
                status.conditions = Some(conditions);
                update_status(ctx, &ns, &mut hpa, original).await?;
                ctx.warn(&hpa, "FailedComputeMetricsReplicas", e.clone());
                return Err(Error::Autoscaling(format!(
                    "failed to compute desired number of replicas based on listed metrics for {reference}: {e}"
                )));
            }
        };
        statuses = proposal.0.statuses;
        failure = proposal.1;
        let wanted = proposal.0.replicas;
        if wanted > current {
            rescale_reason = format!("{} above target", proposal.0.metric);
        } else if wanted < current {
            rescale_reason = "All metrics below target".into();
        }
        let n = ctx.history(&k, |h| match &spec.behavior {
            None => h.normalize(
                current,
                wanted,
                min,
                max,
                ctx.settings.downscale_stabilization,
                now,
            ),
            Some(b) => h.normalize_with_behavior(
                b,
                current,
                wanted,
                min,
                max,
                ctx.settings.downscale_stabilization,
                now,
            ),
        });
        set_condition(
            &mut conditions,
            "AbleToScale",
            true,
            n.able.0,
            n.able.1.into(),
            now,
        );
        set_condition(
            &mut conditions,
            "ScalingLimited",
            n.limited.0,
            n.limited.1,
            n.limited.2.into(),
            now,
        );
        desired = n.replicas;
        rescale = desired != current;
    }

    let mut last_scale_time = hpa.status.as_ref().and_then(|s| s.last_scale_time.clone());
    let desired = if rescale {
        scale.spec.get_or_insert_with(Default::default).replicas = Some(desired);
        match scales
            .replace_scale(&target.name, &PostParams::default(), &scale)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let msg = crate::objects::api_message(&e);
                ctx.warn(
                    &hpa,
                    "FailedRescale",
                    format!("New size: {desired}; reason: {rescale_reason}; error: {msg}"),
                );
                set_condition(
                    &mut conditions,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {msg}"),
                    now,
                );
                let status = hpa.status.get_or_insert_with(Default::default);
                status.current_replicas = Some(current);
                status.current_metrics = (!statuses.is_empty()).then_some(statuses);
                status.conditions = Some(conditions);
                update_status(ctx, &ns, &mut hpa, original).await?;
                return Err(Error::Autoscaling(format!(
                    "failed to rescale {reference}: {msg}"
                )));
            }
        }
        set_condition(
            &mut conditions,
            "AbleToScale",
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
            now,
        );
        ctx.events.record(
            object_ref(&hpa),
            EventType::Normal,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {rescale_reason}"),
        );
        ctx.history(&k, |h| {
            h.record_scale(spec.behavior.as_ref(), current, desired, now)
        });
        tracing::info!(hpa = %k, from = current, to = desired, reason = %rescale_reason, "rescaled");
        last_scale_time = Some(Time(now));
        desired
    } else {
        current
    };
    hpa.status = Some(HorizontalPodAutoscalerStatus {
        observed_generation: hpa.metadata.generation,
        last_scale_time,
        current_replicas: Some(current),
        desired_replicas: desired,
        current_metrics: (!statuses.is_empty()).then_some(statuses),
        conditions: Some(conditions),
    });
    update_status(ctx, &ns, &mut hpa, original).await?;
    if let Some(e) = failure {
        // Some metrics failed but others scaled: report, and retry on the next period.
        return Err(Error::Autoscaling(e));
    }
    Ok(())
}

/// Writes the status if it changed.
async fn update_status(
    ctx: &Ctx,
    ns: &str,
    hpa: &mut HorizontalPodAutoscaler,
    original: Option<HorizontalPodAutoscalerStatus>,
) -> Result<(), Error> {
    if hpa.status == original {
        return Ok(());
    }
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .replace_status(&hpa.name_any(), &PostParams::default(), hpa)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::api(format!(
            "updating the status of HorizontalPodAutoscaler {}",
            key(hpa)
        ))(e)),
    }
}

/// Evaluates every metric and takes the largest proposal. `Err` (with the statuses
/// gathered) when all metrics failed, or some failed and the rest would scale down (upstream
/// does not scale down on partial data). `Ok` carries the first failure of a partial success.
async fn compute(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    scale: &Scale,
    current: i32,
    conditions: &mut Vec<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerCondition>,
    now: Timestamp,
) -> Result<(Proposal, Option<String>), (Vec<MetricStatus>, String)> {
    let ns = hpa.namespace().unwrap_or_default();
    let selector_text = scale
        .status
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector_text.is_empty() {
        let e = "selector is required".to_string();
        ctx.warn(hpa, "SelectorRequired", e.clone());
        set_condition(
            conditions,
            "ScalingActive",
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector".into(),
            now,
        );
        return Err((Vec::new(), e));
    }
    let selector = match Selector::parse(&selector_text) {
        Ok(s) => s,
        Err(e) => {
            let e = format!(
                "couldn't convert selector into a corresponding internal selector object: {e}"
            );
            ctx.warn(hpa, "InvalidSelector", e.clone());
            set_condition(
                conditions,
                "ScalingActive",
                false,
                "InvalidSelector",
                format!("the HPA target's scale has an invalid selector: {e}"),
                now,
            );
            return Err((Vec::new(), e));
        }
    };
    let all_pods = ctx.pods.state();
    let pods: Vec<&Pod> = all_pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| {
            let labels = serde_json::to_value(&p.metadata.labels).unwrap_or_default();
            selector.matches_value(Some(&labels))
        })
        .collect();
    let specs = hpa
        .spec
        .as_ref()
        .and_then(|s| s.metrics.clone())
        .unwrap_or_default();
    let mut statuses = vec![MetricStatus::default(); specs.len()];
    let mut fetched: Option<Result<Vec<Value>, String>> = None;
    let mut results = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        match evaluate(ctx, spec, &ns, &selector, &pods, current, &mut fetched, now).await {
            Ok((replicas, name, status)) => {
                statuses[i] = status;
                results.push(Ok((replicas, name)));
            }
            Err(f) => {
                ctx.warn(hpa, f.reason, f.error.clone());
                results.push(Err(f));
            }
        }
    }
    let statuses: Vec<MetricStatus> = if statuses.iter().all(|s| s.type_.is_empty()) {
        Vec::new()
    } else {
        statuses
    };
    match combine(&results, current) {
        Combined::Scale {
            replicas,
            metric,
            partial,
        } => {
            set_condition(
                conditions,
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!("the HPA was able to successfully calculate a replica count from {metric}"),
                now,
            );
            Ok((
                Proposal {
                    replicas,
                    metric,
                    statuses,
                },
                partial.map(|f| f.error.clone()),
            ))
        }
        Combined::Invalid { first, invalid } => {
            set_condition(
                conditions,
                "ScalingActive",
                false,
                first.reason,
                format!(
                    "the HPA was unable to compute the replica count: {}",
                    first.error
                ),
                now,
            );
            Err((
                statuses,
                format!(
                    "invalid metrics ({invalid} invalid out of {}), first error is: {}",
                    results.len(),
                    first.error
                ),
            ))
        }
        // No metrics at all (the apiserver defaults one, so only a stored legacy object).
        Combined::NoMetrics => Err((
            statuses,
            "no metrics to compute a replica count from".into(),
        )),
    }
}

/// What the metrics decide together.
#[derive(Debug)]
enum Combined<'a> {
    /// Scale to the largest proposal; `partial` is the first failed metric, if any.
    Scale {
        replicas: i32,
        metric: String,
        partial: Option<&'a MetricFailure>,
    },
    /// Do not scale: every metric failed, or some did and the rest would scale down.
    Invalid {
        first: &'a MetricFailure,
        invalid: usize,
    },
    /// The HPA has no metrics.
    NoMetrics,
}

/// Upstream's rule in `computeReplicasForMetrics`: the largest proposal wins, but failed
/// metrics block scaling unless the valid ones scale up (data missing must not shrink).
fn combine(results: &[Result<(i32, String), MetricFailure>], current: i32) -> Combined<'_> {
    let mut best: Option<(i32, &String)> = None;
    for (replicas, name) in results.iter().flatten() {
        if best.is_none_or(|(r, _)| *replicas > r) {
            best = Some((*replicas, name));
        }
    }
    let failures: Vec<&MetricFailure> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(first) = failures.first() {
        if failures.len() >= results.len() || best.is_none_or(|(r, _)| r < current) {
            return Combined::Invalid {
                first,
                invalid: failures.len(),
            };
        }
    }
    match best {
        Some((replicas, metric)) => Combined::Scale {
            replicas,
            metric: metric.clone(),
            partial: failures.first().copied(),
        },
        None => Combined::NoMetrics,
    }
}

/// One metric's proposal: replicas, the name events quote, and its status.
#[allow(clippy::too_many_arguments)]
async fn evaluate(
    ctx: &Ctx,
    spec: &MetricSpec,
    ns: &str,
    selector: &Selector,
    pods: &[&Pod],
    current: i32,
    fetched: &mut Option<Result<Vec<Value>, String>>,
    now: Timestamp,
) -> Result<(i32, String, MetricStatus), MetricFailure> {
    let unsupported = |reason: &'static str, what: &str, api: &str| {
        MetricFailure {
        reason,
        error: format!("unable to get {what} metric: the {api} API is not served by this cluster (only Resource and ContainerResource metrics are supported)"),
    }
    };
    let (resource, container, target, reason) = match spec.type_.as_str() {
        "Resource" => {
            let Some(r) = spec.resource.as_ref() else {
                return Err(MetricFailure {
                    reason: "FailedGetResourceMetric",
                    error: "resource metric source is missing".into(),
                });
            };
            (
                r.name.clone(),
                None,
                r.target.clone(),
                "FailedGetResourceMetric",
            )
        }
        "ContainerResource" => {
            let Some(r) = spec.container_resource.as_ref() else {
                return Err(MetricFailure {
                    reason: "FailedGetContainerResourceMetric",
                    error: "container resource metric source is missing".into(),
                });
            };
            (
                r.name.clone(),
                Some(r.container.clone()),
                r.target.clone(),
                "FailedGetContainerResourceMetric",
            )
        }
        "Pods" => {
            return Err(unsupported(
                "FailedGetPodsMetric",
                "pods",
                "custom metrics (custom.metrics.k8s.io)",
            ))
        }
        "Object" => {
            return Err(unsupported(
                "FailedGetObjectMetric",
                "object",
                "custom metrics (custom.metrics.k8s.io)",
            ))
        }
        "External" => {
            return Err(unsupported(
                "FailedGetExternalMetric",
                "external",
                "external metrics (external.metrics.k8s.io)",
            ))
        }
        other => {
            return Err(MetricFailure {
                reason: "InvalidMetricSourceType",
                error: format!("unknown metric source type {other:?}"),
            })
        }
    };
    let fail = |what: &str, e: String| MetricFailure {
        reason,
        error: format!("failed to get {resource} {what}: {e}"),
    };
    if fetched.is_none() {
        *fetched = Some(metrics::fetch(&ctx.client, ns, selector).await);
    }
    let items = match fetched.as_ref() {
        Some(Ok(items)) => items.as_slice(),
        Some(Err(e)) => {
            return Err(fail(
                if target.average_value.is_some() {
                    "usage"
                } else {
                    "utilization"
                },
                e.clone(),
            ))
        }
        None => &[],
    };
    let value_status = |v: MetricValueStatus| -> MetricStatus {
        match &container {
            None => MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: resource.clone(),
                    current: v,
                }),
                ..Default::default()
            },
            Some(c) => MetricStatus {
                type_: "ContainerResource".into(),
                container_resource: Some(ContainerResourceMetricStatus {
                    name: resource.clone(),
                    container: c.clone(),
                    current: v,
                }),
                ..Default::default()
            },
        }
    };
    let milli =
        |m: i64| ApiQuantity(distro_apimachinery::quantity::Quantity::from_millis(m).canonical());
    if let Some(avg) = average_value(&target) {
        let usage = metrics::usage_of(items, &resource, container.as_deref())
            .map_err(|e| fail("usage", e))?;
        let p = ctx
            .calc
            .value_replicas(current, avg, &resource, usage, pods, now)
            .map_err(|e| fail("usage", e))?;
        let status = value_status(MetricValueStatus {
            average_value: Some(milli(p.average)),
            ..Default::default()
        });
        return Ok((p.replicas, format!("{resource} resource"), status));
    }
    let Some(utilization) = target.average_utilization else {
        return Err(MetricFailure {
            reason,
            error: "invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into(),
        });
    };
    let usage = metrics::usage_of(items, &resource, container.as_deref())
        .map_err(|e| fail("utilization", e))?;
    let p = ctx
        .calc
        .utilization_replicas(
            current,
            utilization,
            &resource,
            container.as_deref(),
            usage,
            pods,
            now,
        )
        .map_err(|e| fail("utilization", e))?;
    let status = value_status(MetricValueStatus {
        average_utilization: Some(p.utilization),
        average_value: Some(milli(p.raw_average)),
        ..Default::default()
    });
    let name = if container.is_some() {
        format!("{resource} container resource utilization (percentage of request)")
    } else {
        format!("{resource} resource utilization (percentage of request)")
    };
    Ok((p.replicas, name, status))
}

/// An `AverageValue` target in milli-units.
fn average_value(target: &MetricTarget) -> Option<i64> {
    let q = target.average_value.as_ref()?;
    distro_apimachinery::quantity::Quantity::parse(&q.0)
        .ok()
        .map(|q| q.milli_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(error: &str) -> Result<(i32, String), MetricFailure> {
        Err(MetricFailure {
            reason: "FailedGetResourceMetric",
            error: error.into(),
        })
    }

    fn ok(replicas: i32, name: &str) -> Result<(i32, String), MetricFailure> {
        Ok((replicas, name.into()))
    }

    #[test]
    fn the_largest_proposal_wins() {
        let r = [ok(3, "cpu"), ok(5, "memory"), ok(4, "cpu")];
        match combine(&r, 2) {
            Combined::Scale {
                replicas,
                metric,
                partial,
            } => {
                assert_eq!((replicas, metric.as_str()), (5, "memory"));
                assert!(partial.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_metrics_block_scaling_down_but_not_up() {
        let up = [fail("a"), ok(6, "cpu")];
        assert!(matches!(
            combine(&up, 4),
            Combined::Scale { replicas: 6, partial: Some(f), .. } if f.error == "a"
        ));
        let down = [ok(2, "cpu"), fail("b")];
        assert!(matches!(
            combine(&down, 4),
            Combined::Invalid { first, invalid: 1 } if first.error == "b"
        ));
        let all = [fail("c"), fail("d")];
        assert!(matches!(
            combine(&all, 4),
            Combined::Invalid { first, invalid: 2 } if first.error == "c"
        ));
        assert!(matches!(combine(&[], 4), Combined::NoMetrics));
    }
}
