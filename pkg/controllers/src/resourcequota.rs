//! The resourcequota controller, as upstream's (`pkg/controller/resourcequota`): keeps each
//! ResourceQuota's `status.hard` equal to its `spec.hard` and `status.used` equal to what the
//! namespace really uses, so `kubectl describe quota` shows the truth. Admission enforces the
//! limits (counting from storage), this controller only reports.
//!
//! Usage is recomputed from the shared caches whenever a quota or a counted object in its
//! namespace changes, and every five minutes (upstream's full resync).
//!
//! # Limits
//! Counted kinds: pods, services, configmaps, secrets, persistentvolumeclaims, resourcequotas,
//! deployments and replicasets; `count/*` names of other kinds are left out of `status.used`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distro_apimachinery::quantity::{Format, Quantity};
use distro_apimachinery::quota::{add_to, hard_of, usage_of, ResourceList};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;

use crate::{Backoff, Clients, Error};

/// The name logs are reported under, as upstream.
pub const COMPONENT: &str = "resourcequota-controller";

/// Upstream's `--resource-quota-sync-period`.
const RESYNC: Duration = Duration::from_secs(300);

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    services: Store<Service>,
    configmaps: Store<ConfigMap>,
    secrets: Store<Secret>,
    claims: Store<PersistentVolumeClaim>,
    quotas: Store<ResourceQuota>,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let inf = &clients.informers;
    let quotas = inf.get::<ResourceQuota>();
    let pods = inf.get::<Pod>();
    let services = inf.get::<Service>();
    let configmaps = inf.get::<ConfigMap>();
    let secrets = inf.get::<Secret>();
    let claims = inf.get::<PersistentVolumeClaim>();
    let deployments = inf.get::<Deployment>();
    let replicasets = inf.get::<ReplicaSet>();
    let _ = futures::join!(
        quotas.wait_synced(),
        services.wait_synced(),
        secrets.wait_synced(),
        claims.wait_synced()
    );
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        pods: pods.store(),
        services: services.store(),
        configmaps: configmaps.store(),
        secrets: secrets.store(),
        claims: claims.store(),
        quotas: quotas.store(),
        deployments: deployments.store(),
        replicasets: replicasets.store(),
        backoff: Backoff::default(),
    });
    let qs = quotas.store();
    // Any counted object's change wakes the quotas of its namespace.
    let in_namespace = move |ns: Option<String>| -> Vec<ObjectRef<ResourceQuota>> {
        let Some(ns) = ns else { return Vec::new() };
        qs.state()
            .iter()
            .filter(|q| q.namespace().as_deref() == Some(ns.as_str()))
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect()
    };
    let (a, b, c, d, e, f, g) = (
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace.clone(),
        in_namespace,
    );
    let results = Controller::for_shared_stream(quotas.subscribe(), quotas.store())
        .watches_shared_stream(pods.subscribe(), move |o: Arc<Pod>| a(o.namespace()))
        .watches_shared_stream(
            services.subscribe(),
            move |o: Arc<Service>| b(o.namespace()),
        )
        .watches_shared_stream(configmaps.subscribe(), move |o: Arc<ConfigMap>| {
            c(o.namespace())
        })
        .watches_shared_stream(secrets.subscribe(), move |o: Arc<Secret>| d(o.namespace()))
        .watches_shared_stream(claims.subscribe(), move |o: Arc<PersistentVolumeClaim>| {
            e(o.namespace())
        })
        .watches_shared_stream(deployments.subscribe(), move |o: Arc<Deployment>| {
            f(o.namespace())
        })
        .watches_shared_stream(replicasets.subscribe(), move |o: Arc<ReplicaSet>| {
            g(o.namespace())
        })
        .with_config(Config::default().concurrency(2))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn error_policy(q: Arc<ResourceQuota>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&q)))
}

/// Compares statuses by quantity value, not spelling, so a server that normalizes
/// quantities differently cannot make us rewrite the status forever.
fn same_status(current: Option<&ResourceQuotaStatus>, want: &ResourceQuotaStatus) -> bool {
    let same = |a: Option<&BTreeMap<String, ApiQuantity>>,
                b: Option<&BTreeMap<String, ApiQuantity>>| {
        let (a, b) = (
            a.cloned().unwrap_or_default(),
            b.cloned().unwrap_or_default(),
        );
        a.len() == b.len()
            && a.iter().all(|(k, v)| {
                b.get(k)
                    .is_some_and(|w| match (Quantity::parse(&v.0), Quantity::parse(&w.0)) {
                        (Ok(x), Ok(y)) => x == y,
                        _ => v == w,
                    })
            })
    };
    current.is_some_and(|c| {
        same(c.hard.as_ref(), want.hard.as_ref()) && same(c.used.as_ref(), want.used.as_ref())
    })
}

fn key(q: &ResourceQuota) -> String {
    format!("{}/{}", q.namespace().unwrap_or_default(), q.name_any())
}

/// Adds the usage of every object of `store` in `ns`.
fn add_usage<K>(used: &mut ResourceList, store: &Store<K>, ns: &str)
where
    K: Resource<DynamicType = ()> + Clone + Serialize + 'static,
{
    for obj in store.state() {
        if obj.meta().namespace.as_deref() != Some(ns) {
            continue;
        }
        let value = serde_json::to_value(obj.as_ref()).unwrap_or_default();
        let usage = usage_of(&K::group(&()), &K::plural(&()), &value);
        for (k, q) in &usage {
            add_to(used, k, q);
        }
    }
}

/// Whether a hard resource name is one this controller can count.
fn countable(name: &str) -> bool {
    match name.strip_prefix("count/") {
        Some(r) => matches!(
            r,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "resourcequotas"
                | "deployments.apps"
                | "replicasets.apps"
        ),
        None => !name.starts_with("replicationcontrollers"),
    }
}

async fn reconcile(quota: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = quota.namespace().unwrap_or_default();
    let value = serde_json::to_value(quota.as_ref()).unwrap_or_default();
    let Some(hard) = hard_of(&value) else {
        // Scoped quotas are not evaluated: report nothing rather than wrong numbers.
        return Ok(Action::await_change());
    };
    let mut used = ResourceList::new();
    add_usage(&mut used, &ctx.pods, &ns);
    add_usage(&mut used, &ctx.services, &ns);
    add_usage(&mut used, &ctx.configmaps, &ns);
    add_usage(&mut used, &ctx.secrets, &ns);
    add_usage(&mut used, &ctx.claims, &ns);
    add_usage(&mut used, &ctx.quotas, &ns);
    add_usage(&mut used, &ctx.deployments, &ns);
    add_usage(&mut used, &ctx.replicasets, &ns);
    let to_api = |q: &Quantity| ApiQuantity(q.canonical());
    let status_hard: BTreeMap<String, ApiQuantity> =
        hard.iter().map(|(k, q)| (k.clone(), to_api(q))).collect();
    let status_used: BTreeMap<String, ApiQuantity> = hard
        .keys()
        .filter(|k| countable(k))
        .map(|k| {
            let q = used
                .get(k)
                .cloned()
                .unwrap_or_else(|| Quantity::from_units(0, Format::DecimalSI));
            (k.clone(), to_api(&q))
        })
        .collect();
    let status = ResourceQuotaStatus {
        hard: Some(status_hard),
        used: Some(status_used),
    };
    if !same_status(quota.status.as_ref(), &status) {
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        let mut updated = quota.as_ref().clone();
        updated.status = Some(status);
        match api
            .replace_status(&quota.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => {
                return Err(Error::api(format!(
                    "updating the status of ResourceQuota {}",
                    key(&quota)
                ))(e))
            }
        }
    }
    ctx.backoff.succeeded(&key(&quota));
    Ok(Action::requeue(RESYNC))
}
