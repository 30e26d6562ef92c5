//! The Endpoints controller, as upstream's (`pkg/controller/endpoint`): for each Service with
//! a selector, an Endpoints object of the same name listing the selected pods' addresses,
//! ready or not ready, with the Service's ports resolved per pod.
//!
//! Ready pods (or all, with `publishNotReadyAddresses`) go to `addresses`, the others to
//! `notReadyAddresses`; terminating pods are left out unless `publishNotReadyAddresses`.
//! Addresses carry the pod's node and a reference to it, and the pod's hostname when its
//! subdomain names the Service (what headless-Service DNS serves). Subsets group addresses with the same
//! ports, as upstream's `RepackSubsets`. Services without a selector are left alone; the
//! Endpoints of a deleted Service are deleted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::objects::{api_message, object_ref, EventType, Recorder};
use crate::podendpoints::{
    self, find_port, format_trigger_time, headless, hostname, pod_ready, publish_not_ready,
    should_publish, Membership, TriggerTimes, HEADLESS_LABEL, TRIGGER_TIME_ANNOTATION,
};
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "endpoint-controller";

/// Upstream's cap on addresses in one Endpoints object; beyond it the list is truncated and
/// annotated (EndpointSlices carry the rest).
pub const MAX_CAPACITY: usize = 1000;

/// The annotation marking a truncated Endpoints object.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// The annotation leader-election Endpoints carry; such objects have no Service and are kept.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Retry delay after a write lost to a concurrent one (our cache was behind).
const CONFLICT_REQUEUE: Duration = Duration::from_millis(200);

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    backoff: Backoff,
    triggers: TriggerTimes,
    members: Arc<Membership>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let services = clients.informers.get::<Service>();
    let pods = clients.informers.get::<Pod>();
    let endpoints = clients.informers.get::<Endpoints>();
    let members = Arc::new(Membership::default());
    let client = clients.writer(COMPONENT);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        events: Recorder::new(client.clone(), COMPONENT, None),
        pods: pods.store(),
        endpoints: endpoints.store(),
        backoff: Backoff::default(),
        triggers: TriggerTimes::default(),
        members: members.clone(),
    });
    let svc_store = services.store();
    let results = Controller::for_shared_stream(services.subscribe(), services.store())
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            members.services_for(&pod, &svc_store)
        })
        .watches_shared_stream(endpoints.subscribe(), |ep: Arc<Endpoints>| {
            Some(ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone());
    let cleanup = delete_leftovers(client, services.store(), services.subscribe(), ctx.clone());
    tokio::select! {
        _ = crate::drive(COMPONENT, results) => {}
        _ = cleanup => {}
    }
}

/// Deletes the Endpoints of Services that are gone: those left over from before this start
/// (upstream's `checkLeftoverEndpoints`), then each Service's as it is deleted.
async fn delete_leftovers(
    client: Client,
    services: Store<Service>,
    changes: impl futures::Stream<Item = Arc<Service>> + Send,
    ctx: Arc<Ctx>,
) {
    let gone = |ns: &str, name: &str| services.get(&ObjectRef::new(name).within(ns)).is_none();
    for ep in ctx.endpoints.state() {
        let annotated = ep.annotations().contains_key(LEADER_ANNOTATION);
        let ns = ep.namespace().unwrap_or_default();
        if !annotated && gone(&ns, &ep.name_any()) {
            delete_endpoints(&client, &ns, &ep.name_any()).await;
        }
    }
    changes
        .for_each(|svc| {
            let (ns, name) = (svc.namespace().unwrap_or_default(), svc.name_any());
            let gone = gone(&ns, &name);
            let (client, ctx) = (client.clone(), ctx.clone());
            async move {
                if gone {
                    ctx.triggers.forget(&format!("{ns}/{name}"));
                    ctx.members.forget(&ns, &name);
                    delete_endpoints(&client, &ns, &name).await;
                }
            }
        })
        .await;
    // The stream ends only at shutdown; keep the controller running until it stops too.
    std::future::pending::<()>().await
}

async fn delete_endpoints(client: &Client, ns: &str, name: &str) {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => tracing::debug!(
            namespace = ns,
            name,
            "deleted Endpoints of a deleted Service"
        ),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            tracing::warn!(namespace = ns, name, error = %e, "deleting Endpoints of a deleted Service")
        }
    }
}

fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

fn error_policy(svc: Arc<Service>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&svc)))
}

/// The address of a pod for the Service (upstream's `podToEndpointAddressForService`).
fn address(pod: &Pod, ip: String, svc: &Service) -> EndpointAddress {
    EndpointAddress {
        ip,
        hostname: hostname(pod, svc),
        node_name: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        target_ref: Some(podendpoints::pod_ref(pod)),
    }
}

/// The IP a Service publishes for a pod: the first of the Service's IP family, else the
/// pod's primary IP.
fn ip_for(pod: &Pod, svc: &Service) -> Option<String> {
    let ips = podendpoints::pod_ips(pod);
    let family = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first().cloned());
    let v6 = |ip: &String| ip.contains(':');
    match family.as_deref() {
        Some("IPv6") => ips.iter().find(|ip| v6(ip)).cloned(),
        Some("IPv4") => ips.iter().find(|ip| !v6(ip)).cloned(),
        _ => ips.first().cloned(),
    }
}

/// A port set, ordered, so subsets group by it.
type PortKey = Vec<(String, i32, String, Option<String>)>;

/// The subsets a Service's pods make, and whether they were truncated (upstream's
/// `syncService` loop and `RepackSubsets`).
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let tolerate = publish_not_ready(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    // Address (by IP and pod) → (ready, its ports).
    let mut per_address: BTreeMap<(String, String), (bool, EndpointAddress, PortKey)> =
        BTreeMap::new();
    for pod in pods {
        if !should_publish(pod, tolerate) {
            continue;
        }
        let Some(ip) = ip_for(pod, svc) else {
            continue;
        };
        let ready = tolerate || pod_ready(pod);
        let addr = address(pod, ip.clone(), svc);
        let id = (ip, pod.metadata.uid.clone().unwrap_or_default());
        if ports.is_empty() {
            if headless(svc) {
                per_address.insert(id, (ready, addr, Vec::new()));
            }
            continue;
        }
        let mut key: PortKey = ports
            .iter()
            .filter_map(|p| {
                find_port(pod, p).map(|n| {
                    (
                        p.name.clone().unwrap_or_default(),
                        n,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    )
                })
            })
            .collect();
        if key.is_empty() {
            continue;
        }
        key.sort();
        per_address.insert(id, (ready, addr, key));
    }
    let total = per_address.len();
    let truncated = total > MAX_CAPACITY;
    let mut groups: BTreeMap<PortKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    // Ready addresses first, so truncation drops not-ready ones first.
    let mut entries: Vec<_> = per_address.into_values().collect();
    entries.sort_by_key(|(ready, _, _)| !*ready);
    for (ready, addr, key) in entries.into_iter().take(MAX_CAPACITY) {
        let g = groups.entry(key).or_default();
        if ready {
            g.0.push(addr);
        } else {
            g.1.push(addr);
        }
    }
    let out = groups
        .into_iter()
        .map(|(key, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!key.is_empty()).then(|| {
                    key.into_iter()
                        .map(|(name, port, protocol, app_protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            app_protocol,
                        })
                        .collect()
                }),
            }
        })
        .collect();
    (out, truncated)
}

/// The labels Endpoints carry: the Service's, plus the headless marker.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.labels().clone();
    l.remove(HEADLESS_LABEL);
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

/// Subsets compared without the pods' resourceVersions (upstream ignores those).
fn normalized(subsets: Option<&Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let mut v = subsets.cloned().unwrap_or_default();
    for s in &mut v {
        for a in s
            .addresses
            .iter_mut()
            .flatten()
            .chain(s.not_ready_addresses.iter_mut().flatten())
        {
            if let Some(r) = a.target_ref.as_mut() {
                r.resource_version = None;
            }
        }
    }
    v
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&svc);
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    if podendpoints::selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        ctx.backoff.succeeded(&key);
        return Ok(Action::await_change());
    }
    let pods = podendpoints::selected_pods(&svc, &ctx.pods);
    let trigger = ctx.triggers.compute(&key, &svc, &pods);
    let (subsets, truncated) = subsets(&svc, &pods);
    let published: HashSet<String> = subsets
        .iter()
        .flat_map(|s| {
            s.addresses
                .iter()
                .flatten()
                .chain(s.not_ready_addresses.iter().flatten())
        })
        .filter_map(|a| a.target_ref.as_ref().and_then(|r| r.name.clone()))
        .collect();
    // Pods selected but not published (no IP yet) are woken by the selector match anyway.
    ctx.members.set(&ns, &name, published);

    let current = ctx.endpoints.get(&ObjectRef::new(&name).within(&ns));
    let want_labels = labels(&svc);
    if let Some(cur) = current.as_deref() {
        let cur_truncated = cur
            .annotations()
            .get(OVER_CAPACITY_ANNOTATION)
            .map(String::as_str)
            == Some("truncated");
        if normalized(cur.subsets.as_ref()) == subsets
            && *cur.labels() == want_labels
            && cur_truncated == truncated
        {
            ctx.backoff.succeeded(&key);
            return Ok(Action::await_change());
        }
    }
    let mut ep = current.as_deref().cloned().unwrap_or_else(|| Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        subsets: None,
    });
    ep.subsets = (!subsets.is_empty()).then_some(subsets);
    ep.metadata.labels = Some(want_labels);
    let annotations = ep.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger {
        Some(t) => {
            annotations.insert(TRIGGER_TIME_ANNOTATION.into(), format_trigger_time(t));
        }
        None => {
            annotations.remove(TRIGGER_TIME_ANNOTATION);
        }
    }
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let create = current.is_none();
    let result = if create {
        api.create(&PostParams::default(), &ep).await
    } else {
        api.replace(&name, &PostParams::default(), &ep).await
    };
    match result {
        Ok(_) => {
            ctx.backoff.succeeded(&key);
            Ok(Action::await_change())
        }
        // The namespace is going away: nothing to publish.
        Err(e) if create && crate::namespace_closed(&e) => Ok(Action::await_change()),
        // Our cache was behind a concurrent write: look again once it has caught up. Upstream
        // reports these as failures too; they resolve themselves, so no Event here.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::requeue(CONFLICT_REQUEUE)),
        Err(e) => {
            let message = api_message(&e);
            let (reason, text) = if create {
                (
                    "FailedToCreateEndpoint",
                    format!("Failed to create endpoint for service {ns}/{name}: {message}"),
                )
            } else {
                (
                    "FailedToUpdateEndpoint",
                    format!("Failed to update endpoint {ns}/{name}: {message}"),
                )
            };
            ctx.events
                .record(object_ref(&ep), EventType::Warning, reason, text);
            Err(Error::api(format!("writing Endpoints {key}"))(e))
        }
    }
}

/// Keeps the set of address IPs, for tests and logs.
pub fn addresses(ep: &Endpoints) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for s in ep.subsets.iter().flatten() {
        ready.extend(s.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(s.not_ready_addresses.iter().flatten().map(|a| a.ip.clone()));
    }
    (ready, not_ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(name: &str, ip: &str, ready: bool, http_port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                hostname: Some(name.into()),
                subdomain: Some("svc".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: http_port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn service(headless: bool, publish: bool) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("svc".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: headless.then(|| "None".into()),
                publish_not_ready_addresses: Some(publish),
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("web".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn ready_and_not_ready_grouped_by_resolved_port() {
        let pods = [
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", false, 8080),
            pod("c", "10.0.0.3", true, 9090),
        ];
        let (subsets, truncated) = subsets(&service(false, false), &pods);
        assert!(!truncated);
        assert_eq!(subsets.len(), 2, "{subsets:?}");
        let s8080 = subsets
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == 8080)
            .unwrap();
        assert_eq!(s8080.addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
        assert_eq!(
            s8080.not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.0.0.2"
        );
        assert_eq!(
            s8080.ports.as_ref().unwrap()[0].name.as_deref(),
            Some("web")
        );
        // Upstream sets the hostname whenever the subdomain names the Service.
        assert_eq!(
            s8080.addresses.as_ref().unwrap()[0].hostname.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn headless_hostnames_and_publish_not_ready() {
        let mut terminating = (*pod("t", "10.0.0.9", true, 8080)).clone();
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = [pod("b", "10.0.0.2", false, 8080), Arc::new(terminating)];
        let (plain, _) = subsets(&service(true, false), &pods);
        assert_eq!(plain.len(), 1);
        assert!(
            plain[0].addresses.is_none(),
            "terminating pods are left out"
        );
        let nr = plain[0].not_ready_addresses.as_ref().unwrap();
        assert_eq!((nr.len(), nr[0].hostname.as_deref()), (1, Some("b")));
        let (all, _) = subsets(&service(true, true), &pods);
        assert_eq!(all[0].addresses.as_ref().unwrap().len(), 2);
        assert!(all[0].not_ready_addresses.is_none());
    }
}
