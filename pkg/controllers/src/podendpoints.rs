//! What the Endpoints and EndpointSlice controllers share, as upstream's
//! `pkg/controller/util/endpoint` and `endpointslice/util`: which pods a Service selects and
//! publishes, how a named `targetPort` resolves on a pod, the hostname of headless-service
//! members, the `endpoints.kubernetes.io/last-change-trigger-time` tracker, and the index of
//! which pods each Service published (so a pod that stops matching wakes its old Service).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use distro_client::labels;
use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;

/// The annotation carrying when the change that led to this write happened (upstream's
/// `v1.EndpointsLastChangeTriggerTime`), for the network-programming-latency SLI.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The label set on Endpoints and EndpointSlices of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The selector of a Service that has one. A Service without (or with an empty) selector
/// has its endpoints managed by someone else, and both controllers leave it alone.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether `publishNotReadyAddresses` is set: every selected pod counts as ready.
pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pods of the Service's namespace its selector matches.
pub fn selected_pods(svc: &Service, pods: &Store<Pod>) -> Vec<std::sync::Arc<Pod>> {
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    let ns = svc.namespace().unwrap_or_default();
    pods.state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .filter(|p| labels::set_matches(sel, &p.metadata.labels))
        .collect()
}

/// The pod's Ready condition is True (upstream's `IsPodReady`).
pub fn pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The pod's IPs (`status.podIPs`, else `status.podIP`).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(st) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<String> = st
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    st.pod_ip
        .iter()
        .filter(|ip| !ip.is_empty())
        .cloned()
        .collect()
}

/// Whether the pod belongs in endpoints at all (upstream's `ShouldPodBeInEndpoints`): not
/// finished, has an IP, and not terminating unless `include_terminating`.
pub fn should_publish(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// The hostname a headless Service publishes for the pod: its `spec.hostname` when its
/// `spec.subdomain` names the Service (upstream's `ShouldSetHostname`).
pub fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())
        && pod.namespace() == svc.namespace())
    .then(|| host.to_string())
}

/// The pod's number for a Service port (upstream's `podutil.FindPort`): a named `targetPort`
/// is looked up among the pod's container ports of the same protocol; a number is itself;
/// no `targetPort` means the Service port. `None` when the name is not found.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
        Some(IntOrString::Int(n)) if *n != 0 => Some(*n),
        _ => Some(port.port),
    }
}

/// The reference to a pod that endpoints carry.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The reference to a Service, for its Events.
pub fn service_ref(svc: &Service) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: svc.metadata.name.clone(),
        namespace: svc.metadata.namespace.clone(),
        uid: svc.metadata.uid.clone(),
        resource_version: svc.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The trigger time as the annotation writes it (RFC 3339 with nanoseconds, UTC).
pub fn format_trigger_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.fZ").to_string()
}

/// What the tracker saw of one Service at its last sync.
#[derive(Default)]
struct ServiceState {
    service: Option<Timestamp>,
    pods: HashMap<String, Timestamp>,
}

/// Upstream's `TriggerTimeTracker`: the trigger time of a sync is the earliest change
/// (a pod's Ready transition, or the Service's creation) not seen at the previous sync.
#[derive(Default)]
pub struct TriggerTimes {
    states: Mutex<HashMap<String, ServiceState>>,
}

impl TriggerTimes {
    /// The trigger time of syncing `svc` (key `ns/name`) with `pods`; `None` if nothing
    /// changed since the last sync.
    pub fn compute(
        &self,
        key: &str,
        svc: &Service,
        pods: &[std::sync::Arc<Pod>],
    ) -> Option<Timestamp> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let old = states.remove(key).unwrap_or_default();
        let mut new = ServiceState {
            service: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
            pods: HashMap::new(),
        };
        let mut min: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| min = Some(min.map_or(t, |m| m.min(t)));
        for pod in pods {
            let Some(t) = ready_condition(pod).and_then(|c| c.last_transition_time.as_ref()) else {
                continue;
            };
            let name = pod.name_any();
            if old.pods.get(&name).is_none_or(|prev| t.0 > *prev) {
                consider(t.0);
            }
            new.pods.insert(name, t.0);
        }
        if let Some(t) = new.service {
            if old.service.is_none_or(|prev| t > prev) {
                consider(t);
            }
        }
        states.insert(key.to_string(), new);
        min
    }

    /// Forgets a deleted Service.
    pub fn forget(&self, key: &str) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        states.remove(key);
    }
}

/// Which pods each Service published at its last sync, so a pod whose labels stop matching
/// (or that is deleted) still wakes the Service it was part of.
#[derive(Default)]
pub struct Membership {
    by_service: Mutex<HashMap<(String, String), HashSet<String>>>,
}

impl Membership {
    /// Records the pods (names) Service `ns/svc` published.
    pub fn set(&self, ns: &str, svc: &str, pods: HashSet<String>) {
        let mut m = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        m.insert((ns.to_string(), svc.to_string()), pods);
    }

    /// Forgets Service `ns/svc`.
    pub fn forget(&self, ns: &str, svc: &str) {
        let mut m = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&(ns.to_string(), svc.to_string()));
    }

    /// The Services a pod change concerns: those selecting it now and those that published
    /// it at their last sync.
    pub fn services_for(&self, pod: &Pod, services: &Store<Service>) -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let mut out: HashSet<String> = services
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
            .filter(|s| {
                selector(s).is_some_and(|sel| labels::set_matches(sel, &pod.metadata.labels))
            })
            .map(|s| s.name_any())
            .collect();
        {
            let m = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
            for ((sns, svc), pods) in m.iter() {
                if *sns == ns && pods.contains(&name) {
                    out.insert(svc.clone());
                }
            }
        }
        out.into_iter()
            .map(|svc| ObjectRef::new(&svc).within(&ns))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};

    fn pod_with_port(name: &str, port: i32, protocol: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(name.into()),
                        container_port: port,
                        protocol: Some(protocol.into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn named_ports_resolve_per_pod_and_protocol() {
        let port = |target: Option<IntOrString>| ServicePort {
            port: 80,
            target_port: target,
            protocol: Some("TCP".into()),
            ..Default::default()
        };
        let named = port(Some(IntOrString::String("http".into())));
        assert_eq!(
            find_port(&pod_with_port("http", 8080, "TCP"), &named),
            Some(8080)
        );
        assert_eq!(
            find_port(&pod_with_port("http", 9090, "TCP"), &named),
            Some(9090)
        );
        assert_eq!(find_port(&pod_with_port("http", 8080, "UDP"), &named), None);
        assert_eq!(find_port(&pod_with_port("web", 8080, "TCP"), &named), None);
        let numbered = port(Some(IntOrString::Int(8443)));
        assert_eq!(find_port(&Pod::default(), &numbered), Some(8443));
        assert_eq!(find_port(&Pod::default(), &port(None)), Some(80));
    }

    #[test]
    fn trigger_time_is_the_earliest_unseen_change() {
        use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let ready_pod = |name: &str, t: i64| {
            std::sync::Arc::new(Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.into()),
                    ..Default::default()
                },
                status: Some(PodStatus {
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(t))),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let mut svc = Service::default();
        svc.metadata.creation_timestamp = Some(Time(at(100)));
        let tracker = TriggerTimes::default();
        assert_eq!(
            tracker.compute("ns/s", &svc, &[ready_pod("a", 150)]),
            Some(at(100))
        );
        assert_eq!(tracker.compute("ns/s", &svc, &[ready_pod("a", 150)]), None);
        let pods = [
            ready_pod("a", 150),
            ready_pod("b", 300),
            ready_pod("c", 200),
        ];
        assert_eq!(tracker.compute("ns/s", &svc, &pods), Some(at(200)));
        assert_eq!(format_trigger_time(at(200)), "1970-01-01T00:03:20Z");
    }
}
