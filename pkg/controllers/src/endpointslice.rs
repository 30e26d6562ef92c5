//! The EndpointSlice controller, as upstream's (`pkg/controller/endpointslice`): for each
//! Service with a selector, EndpointSlices (`discovery.k8s.io/v1`) listing its pods.
//!
//! Every selected pod with an IP is an endpoint, terminating ones included, with the
//! conditions `ready` (Ready and not terminating, or always with `publishNotReadyAddresses`),
//! `serving` (Ready) and `terminating`, its node, zone, hostname (headless members) and a
//! reference to it. Endpoints whose named ports resolve alike share slices of at most
//! [`MAX_ENDPOINTS_PER_SLICE`]; endpoints stay in the slice they are in, so a change rewrites
//! as few slices as possible. Slices are labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by`, owned by the Service (the garbage collector
//! removes them with it), and a Service with no endpoints keeps one empty placeholder slice.
//! Slices of other managers, and Services without a selector, are left alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;

use crate::objects::{api_message, EventType, Recorder};
use crate::podendpoints::{
    self, find_port, format_trigger_time, headless, hostname, pod_ready, publish_not_ready,
    should_publish, Membership, TriggerTimes, HEADLESS_LABEL, TRIGGER_TIME_ANNOTATION,
};
use crate::{Backoff, Clients, Error};

/// The name events and logs are reported under, as upstream.
pub const COMPONENT: &str = "endpointslice-controller";

/// The `managed-by` value of this controller's slices.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Label naming the manager of a slice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// Label naming the Service of a slice.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// How long our writes not yet in the cache hold back the next sync of their Service.
const EXPECTATIONS_TTL: Duration = Duration::from_secs(30);

/// Requeue delay while the cache catches up with our writes.
const STALE_REQUEUE: Duration = Duration::from_millis(500);

/// Slices we wrote (name → resourceVersion) or deleted that the cache does not show yet.
struct Expected {
    written: HashMap<String, u64>,
    deleted: HashSet<String>,
    since: Instant,
}

struct Ctx {
    client: Client,
    /// Events, as this controller (upstream gives each controller its own recorder).
    events: Recorder,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    backoff: Backoff,
    triggers: TriggerTimes,
    members: Arc<Membership>,
    expected: Mutex<HashMap<String, Expected>>,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let services = clients.informers.get::<Service>();
    let pods = clients.informers.get::<Pod>();
    let slices = clients.informers.get::<EndpointSlice>();
    let nodes = clients.informers.get::<Node>();
    let members = Arc::new(Membership::default());
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        events: Recorder::new(clients.writer(COMPONENT).clone(), COMPONENT, None),
        pods: pods.store(),
        slices: slices.store(),
        nodes: nodes.store(),
        backoff: Backoff::default(),
        triggers: TriggerTimes::default(),
        members: members.clone(),
        expected: Mutex::default(),
    });
    let svc_store = services.store();
    let results = Controller::for_shared_stream(services.subscribe(), services.store())
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| {
            members.services_for(&pod, &svc_store)
        })
        .watches_shared_stream(slices.subscribe(), |s: Arc<EndpointSlice>| {
            managed(&s).then(|| {
                ObjectRef::new(&s.labels()[LABEL_SERVICE_NAME])
                    .within(&s.namespace().unwrap_or_default())
            })
        })
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

/// Whether this controller manages the slice.
fn managed(s: &EndpointSlice) -> bool {
    let l = s.labels();
    l.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
        && l.contains_key(LABEL_SERVICE_NAME)
}

fn key(svc: &Service) -> String {
    format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any())
}

fn error_policy(svc: Arc<Service>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&key(&svc)))
}

/// The address families the Service's slices are for.
fn address_types(svc: &Service) -> Vec<String> {
    let families: Vec<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    if families.is_empty() {
        vec!["IPv4".into()]
    } else {
        families
    }
}

/// A slice's group: address type and port set.
type Group = (String, Vec<(String, i32, String, Option<String>)>);

fn port_key(ports: &[EndpointPort]) -> Vec<(String, i32, String, Option<String>)> {
    let mut k: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    k.sort();
    k
}

fn ports_of(key: &[(String, i32, String, Option<String>)]) -> Vec<EndpointPort> {
    key.iter()
        .map(|(name, port, protocol, app)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app.clone(),
        })
        .collect()
}

fn endpoint_id(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| e.addresses.join(","))
}

/// The endpoints the Service's pods make, by group (upstream's `podToEndpoint` and
/// `getEndpointPorts`).
pub fn desired(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone_of: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<Group, Vec<Endpoint>> {
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let types = address_types(svc);
    let mut out: BTreeMap<Group, Vec<Endpoint>> = BTreeMap::new();
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().collect();
    sorted.sort_by_key(|p| p.name_any());
    for pod in sorted {
        if !should_publish(pod, true) {
            continue;
        }
        let ports: Vec<_> = svc_ports
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
        let ports = port_key(&ports_of(&ports));
        let serving = pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ready = publish_not_ready(svc) || (serving && !terminating);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        for t in &types {
            let v6 = t == "IPv6";
            let Some(ip) = podendpoints::pod_ips(pod)
                .into_iter()
                .find(|ip| ip.contains(':') == v6)
            else {
                continue;
            };
            out.entry((t.clone(), ports.clone()))
                .or_default()
                .push(Endpoint {
                    addresses: vec![ip],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready),
                        serving: Some(serving),
                        terminating: Some(terminating),
                    }),
                    hostname: hostname(pod, svc),
                    zone: node.as_deref().and_then(zone_of),
                    node_name: node.clone(),
                    target_ref: Some(podendpoints::pod_ref(pod)),
                    ..Default::default()
                });
        }
    }
    out
}

/// The writes that bring a Service's slices to the desired state.
#[derive(Debug, Default)]
pub struct Plan {
    /// Slices to create (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Slices to replace.
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

/// The labels of the Service's slices (upstream's `setEndpointSliceLabels`).
fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = svc
        .labels()
        .iter()
        .filter(|(k, _)| {
            ![LABEL_SERVICE_NAME, LABEL_MANAGED_BY, HEADLESS_LABEL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l.insert(LABEL_SERVICE_NAME.into(), svc.name_any());
    l.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    l
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.name_any(),
        uid: svc.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn new_slice(
    svc: &Service,
    (address_type, ports): &Group,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    // Upstream's prefix: the Service name, shortened so generated names stay valid.
    let mut prefix: String = svc.name_any().chars().take(57).collect();
    prefix.push('-');
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(prefix),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![owner(svc)]),
            ..Default::default()
        },
        address_type: address_type.clone(),
        endpoints,
        ports: Some(ports_of(ports)),
    }
}

/// Plans the writes (upstream's `reconcileByAddressType`, simplified): endpoints stay in the
/// slice that has them, new ones fill free room before new slices are made, emptied slices
/// go, and a Service with no endpoints keeps one empty placeholder.
pub fn plan(
    svc: &Service,
    existing: &[Arc<EndpointSlice>],
    want: &BTreeMap<Group, Vec<Endpoint>>,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let labels = slice_labels(svc);
    let meta_ok = |s: &EndpointSlice| {
        *s.labels() == labels
            && s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == svc.metadata.uid.as_ref() && o.controller == Some(true))
    };
    let refresh_meta = |s: &mut EndpointSlice| {
        s.metadata.labels = Some(labels.clone());
        let mut owners: Vec<OwnerReference> = s
            .owner_references()
            .iter()
            .filter(|o| o.controller != Some(true))
            .cloned()
            .collect();
        owners.push(owner(svc));
        s.metadata.owner_references = Some(owners);
    };
    let group_of = |s: &EndpointSlice| {
        (
            s.address_type.clone(),
            port_key(s.ports.as_deref().unwrap_or_default()),
        )
    };

    if want.is_empty() {
        // The placeholder: one slice without endpoints or ports.
        let placeholder_type = address_types(svc).remove(0);
        let mut kept = false;
        for s in existing {
            let is_placeholder = s.endpoints.is_empty()
                && s.ports.as_deref().unwrap_or_default().is_empty()
                && s.address_type == placeholder_type;
            if is_placeholder && !kept {
                kept = true;
                if !meta_ok(s) {
                    let mut s = (**s).clone();
                    refresh_meta(&mut s);
                    plan.update.push(s);
                }
            } else {
                plan.delete.push(s.name_any());
            }
        }
        if !kept {
            plan.create
                .push(new_slice(svc, &(placeholder_type, Vec::new()), Vec::new()));
        }
        return plan;
    }

    let mut by_group: BTreeMap<Group, Vec<&Arc<EndpointSlice>>> = BTreeMap::new();
    for s in existing {
        let g = group_of(s);
        if want.contains_key(&g) {
            by_group.entry(g).or_default().push(s);
        } else {
            plan.delete.push(s.name_any());
        }
    }
    for (group, endpoints) in want {
        let mut wanted: BTreeMap<String, &Endpoint> =
            endpoints.iter().map(|e| (endpoint_id(e), e)).collect();
        let mut slices = by_group.remove(group).unwrap_or_default();
        slices.sort_by_key(|s| s.name_any());
        // Keep each endpoint where it is.
        let mut kept: Vec<(EndpointSlice, bool)> = Vec::new();
        for s in slices {
            let mut new_eps = Vec::new();
            for e in &s.endpoints {
                if let Some(w) = wanted.remove(&endpoint_id(e)) {
                    new_eps.push(w.clone());
                }
            }
            let changed = new_eps != s.endpoints || !meta_ok(s);
            let mut s = (**s).clone();
            s.endpoints = new_eps;
            kept.push((s, changed));
        }
        // New endpoints fill free room, slices being rewritten anyway first.
        let mut rest: Vec<Endpoint> = wanted.into_values().cloned().collect();
        kept.sort_by_key(|(s, changed)| (!*changed, s.name_any()));
        for (s, changed) in kept.iter_mut() {
            if rest.is_empty() {
                break;
            }
            if s.endpoints.is_empty() || s.endpoints.len() >= max {
                continue;
            }
            let room = max - s.endpoints.len();
            let take = room.min(rest.len());
            s.endpoints.extend(rest.drain(..take));
            *changed = true;
        }
        for (mut s, changed) in kept {
            if s.endpoints.is_empty() {
                plan.delete.push(s.name_any());
            } else if changed {
                refresh_meta(&mut s);
                plan.update.push(s);
            }
        }
        while !rest.is_empty() {
            let take = max.min(rest.len());
            let chunk: Vec<Endpoint> = rest.drain(..take).collect();
            plan.create.push(new_slice(svc, group, chunk));
        }
    }
    plan
}

/// Whether the slice cache shows our earlier writes for `key` (dropping those it shows).
fn cache_caught_up(ctx: &Ctx, key: &str, ns: &str) -> bool {
    let mut all = ctx.expected.lock().unwrap_or_else(|e| e.into_inner());
    let Some(exp) = all.get_mut(key) else {
        return true;
    };
    let cached = |name: &str| ctx.slices.get(&ObjectRef::new(name).within(ns));
    exp.written.retain(|name, rv| {
        cached(name).is_none_or(|s| {
            s.resource_version()
                .and_then(|v| v.parse::<u64>().ok())
                .is_none_or(|v| v < *rv)
        }) && !exp.deleted.contains(name)
    });
    exp.deleted.retain(|name| cached(name).is_some());
    if (exp.written.is_empty() && exp.deleted.is_empty()) || exp.since.elapsed() > EXPECTATIONS_TTL
    {
        all.remove(key);
        return true;
    }
    false
}

fn expect(ctx: &Ctx, key: &str, written: Vec<(String, u64)>, deleted: Vec<String>) {
    if written.is_empty() && deleted.is_empty() {
        return;
    }
    let mut all = ctx.expected.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|_, e| e.since.elapsed() <= EXPECTATIONS_TTL);
    let exp = all.entry(key.to_string()).or_insert_with(|| Expected {
        written: HashMap::new(),
        deleted: HashSet::new(),
        since: Instant::now(),
    });
    exp.written.extend(written);
    exp.deleted.extend(deleted);
    exp.since = Instant::now();
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = key(&svc);
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    if podendpoints::selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
        ctx.backoff.succeeded(&key);
        return Ok(Action::await_change());
    }
    if !cache_caught_up(&ctx, &key, &ns) {
        return Ok(Action::requeue(STALE_REQUEUE));
    }
    let pods = podendpoints::selected_pods(&svc, &ctx.pods);
    let trigger = ctx.triggers.compute(&key, &svc, &pods);
    let zone_of = |node: &str| {
        ctx.nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.labels().get(ZONE_LABEL).cloned())
    };
    let want = desired(&svc, &pods, &zone_of);
    ctx.members.set(
        &ns,
        &name,
        want.values()
            .flatten()
            .filter_map(|e| e.target_ref.as_ref().and_then(|r| r.name.clone()))
            .collect(),
    );
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| managed(s) && s.labels()[LABEL_SERVICE_NAME] == name)
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    let plan = plan(&svc, &existing, &want, MAX_ENDPOINTS_PER_SLICE);
    match apply(&ctx, &key, &ns, plan, trigger).await {
        Ok(()) => {
            ctx.backoff.succeeded(&key);
            Ok(Action::await_change())
        }
        Err(e) => {
            let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
            let closing = crate::namespace_closed(&e);
            if !conflict && !closing {
                let message = api_message(&e);
                ctx.events.record(
                    podendpoints::service_ref(&svc),
                    EventType::Warning,
                    "FailedToUpdateEndpointSlices",
                    format!("Error updating Endpoint Slices for Service {ns}/{name}: {message}"),
                );
            }
            if closing {
                return Ok(Action::await_change());
            }
            Err(Error::api(format!(
                "updating EndpointSlices of Service {key}"
            ))(e))
        }
    }
}

/// Performs a plan: deletes, then updates, then creates (so a Service never shows more
/// endpoints than it has), stamping the trigger time on what it writes.
async fn apply(
    ctx: &Ctx,
    key: &str,
    ns: &str,
    plan: Plan,
    trigger: Option<Timestamp>,
) -> Result<(), kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), ns);
    let stamp = |s: &mut EndpointSlice| {
        let a = s.metadata.annotations.get_or_insert_with(BTreeMap::new);
        match trigger {
            Some(t) => {
                a.insert(TRIGGER_TIME_ANNOTATION.into(), format_trigger_time(t));
            }
            None => {
                a.remove(TRIGGER_TIME_ANNOTATION);
            }
        }
        if a.is_empty() {
            s.metadata.annotations = None;
        }
    };
    let rv = |s: &EndpointSlice| {
        s.resource_version()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    let mut result = Ok(());
    for name in plan.delete {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        for mut s in plan.update.into_iter() {
            stamp(&mut s);
            match api.replace(&s.name_any(), &PostParams::default(), &s).await {
                Ok(done) => written.push((done.name_any(), rv(&done))),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    if result.is_ok() {
        for mut s in plan.create.into_iter() {
            stamp(&mut s);
            match api.create(&PostParams::default(), &s).await {
                Ok(done) => written.push((done.name_any(), rv(&done))),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    expect(ctx, key, written, deleted);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};

    fn svc() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("svc-uid".into()),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(i: usize, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i:03}")),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some(format!("10.0.{}.{}", i / 200, i % 200 + 1)),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn created(plan: Plan, names: &mut usize) -> Vec<Arc<EndpointSlice>> {
        plan.create
            .into_iter()
            .map(|mut s| {
                *names += 1;
                s.metadata.name = Some(format!("web-{names}"));
                Arc::new(s)
            })
            .collect()
    }

    #[test]
    fn slices_hold_at_most_max_and_keep_endpoints_in_place() {
        let s = svc();
        let zone = |_: &str| Some("z1".to_string());
        let pods: Vec<_> = (0..250).map(|i| pod(i, i % 2 == 0)).collect();
        let want = desired(&s, &pods, &zone);
        let first = plan(&s, &[], &want, 100);
        assert_eq!(first.create.len(), 3);
        let sizes: Vec<usize> = first.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let l = first.create[0].labels();
        assert_eq!(l[LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(l[LABEL_SERVICE_NAME], "web");
        assert_eq!(l["team"], "a");
        let e = &first.create[0].endpoints[1];
        let c = e.conditions.as_ref().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(false), Some(false))
        );
        assert_eq!(e.zone.as_deref(), Some("z1"));
        let mut n = 0;
        let existing = created(first, &mut n);
        // Nothing changed: nothing to write.
        let again = plan(&s, &existing, &want, 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // One pod gone, one new: one slice loses it, the new one fills free room.
        let mut pods2 = pods.clone();
        pods2.remove(0);
        pods2.push(pod(300, true));
        let next = plan(&s, &existing, &desired(&s, &pods2, &zone), 100);
        assert!(next.create.is_empty() && next.delete.is_empty());
        assert_eq!(next.update.len(), 1, "{next:?}");
        assert_eq!(next.update[0].endpoints.len(), 100);
    }

    #[test]
    fn no_endpoints_means_one_placeholder() {
        let s = svc();
        let none = BTreeMap::new();
        let p = plan(&s, &[], &none, 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        let mut n = 0;
        let existing = created(p, &mut n);
        let again = plan(&s, &existing, &none, 100);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
        // Endpoints appear: the placeholder (no ports) goes, a slice with ports comes.
        let want = desired(&s, &[pod(1, true)], &|_| None);
        let p = plan(&s, &existing, &want, 100);
        assert_eq!((p.create.len(), p.delete.len()), (1, 1));
    }
}
