//! The cross-node plugins and preemption, driven directly.

use super::*;
use crate::fit::Diagnosis;
use crate::preemption;
use serde_json::json;

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A Ready node with 2 CPUs in `zone`.
fn node(name: &str, zone: &str) -> NodeInfo {
    NodeInfo::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }))
        .expect("node"),
    )
}

fn pod(name: &str, labels: serde_json::Value, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels, "uid": name},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("pod")
}

fn feasible(p: &Pod, nodes: &[NodeInfo], cluster: &Cluster) -> Vec<String> {
    let c = Cycle::new(p, nodes, cluster);
    nodes
        .iter()
        .filter(|n| c.filter(n).is_ok())
        .map(|n| n.node.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn reasons(p: &Pod, nodes: &[NodeInfo], cluster: &Cluster) -> Vec<Result<(), Vec<Reason>>> {
    let c = Cycle::new(p, nodes, cluster);
    nodes.iter().map(|n| c.filter(n)).collect()
}

fn three_nodes() -> Vec<NodeInfo> {
    vec![node("a", "z1"), node("b", "z1"), node("c", "z2")]
}

#[test]
fn required_pod_affinity_follows_the_topology_key() {
    let mut nodes = three_nodes();
    let cluster = Cluster::default();
    let with_db = |key: &str| {
        pod(
            "web",
            json!({"app": "web"}),
            json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": key}]}}}}),
        )
    };
    // No db anywhere, and web does not match its own term: nowhere.
    assert_eq!(
        reasons(&with_db("kubernetes.io/hostname"), &nodes, &cluster)[0],
        Err(vec![Reason::PodAffinity])
    );
    nodes[0].add_pod(&pod("db", json!({"app": "db"}), json!({})));
    assert_eq!(
        feasible(&with_db("kubernetes.io/hostname"), &nodes, &cluster),
        ["a"]
    );
    assert_eq!(
        feasible(&with_db("topology.kubernetes.io/zone"), &nodes, &cluster),
        ["a", "b"]
    );
    // Another namespace's db does not count unless the term names it.
    let mut other = three_nodes();
    let mut db = pod("db", json!({"app": "db"}), json!({}));
    db.metadata.namespace = Some("data".into());
    other[2].add_pod(&db);
    assert!(feasible(&with_db("kubernetes.io/hostname"), &other, &cluster).is_empty());
    let by_selector = pod(
        "web",
        json!({}),
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname",
             "namespaceSelector": {"matchLabels": {"team": "data"}}}]}}}}),
    );
    let mut labelled = Cluster::default();
    labelled.namespaces.insert(
        "data".into(),
        [("team".to_string(), "data".to_string())].into(),
    );
    assert_eq!(feasible(&by_selector, &other, &labelled), ["c"]);
}

#[test]
fn the_first_pod_of_a_self_affine_group_goes_anywhere() {
    let nodes = three_nodes();
    let group = pod(
        "g",
        json!({"app": "g"}),
        json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "g"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}}),
    );
    assert_eq!(feasible(&group, &nodes, &Cluster::default()).len(), 3);
}

#[test]
fn anti_affinity_both_ways() {
    let mut nodes = three_nodes();
    let cluster = Cluster::default();
    let spread_out = |name: &str| {
        pod(
            name,
            json!({"app": "web"}),
            json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}}),
        )
    };
    nodes[0].add_pod(&spread_out("web-1"));
    assert_eq!(feasible(&spread_out("web-2"), &nodes, &cluster), ["c"]);
    assert_eq!(
        reasons(&spread_out("web-2"), &nodes, &cluster)[1],
        Err(vec![Reason::PodAntiAffinity])
    );
    // A plain pod labelled web is kept off by web-1's own anti-affinity.
    let plain = pod("plain", json!({"app": "web"}), json!({}));
    assert_eq!(
        reasons(&plain, &nodes, &cluster)[1],
        Err(vec![Reason::ExistingAntiAffinity])
    );
    assert_eq!(feasible(&plain, &nodes, &cluster), ["c"]);
}

#[test]
fn preferred_affinity_scores_the_domain() {
    let mut nodes = three_nodes();
    nodes[2].add_pod(&pod("cache", json!({"app": "cache"}), json!({})));
    let near = pod(
        "web",
        json!({}),
        json!({"spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}},
             "topologyKey": "topology.kubernetes.io/zone"}}]}}}}),
    );
    let all: Vec<&NodeInfo> = nodes.iter().collect();
    let s = interpod::score(&near, &nodes, &all, &Default::default());
    assert_eq!(s, vec![0, 0, 100]);
}

fn spread_pod(name: &str, max_skew: i32, when: &str, extra: serde_json::Value) -> Pod {
    let mut c = json!({"maxSkew": max_skew, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "s"}}});
    merge(&mut c, extra);
    pod(
        name,
        json!({"app": "s"}),
        json!({"spec": {"topologySpreadConstraints": [c]}}),
    )
}

#[test]
fn spread_filters_by_skew_and_min_domains() {
    let mut nodes = three_nodes();
    let cluster = Cluster::default();
    nodes[0].add_pod(&spread_pod("s1", 1, "DoNotSchedule", json!({})));
    // z1 has 1, z2 has 0: another in z1 would make skew 2.
    let p = spread_pod("s2", 1, "DoNotSchedule", json!({}));
    assert_eq!(feasible(&p, &nodes, &cluster), ["c"]);
    assert_eq!(reasons(&p, &nodes, &cluster)[0], Err(vec![Reason::Spread]));
    // minDomains 3 with only 2 zones: the minimum counts as 0, so z2 (0+1) is fine and z1 not.
    nodes[2].add_pod(&spread_pod("s3", 1, "DoNotSchedule", json!({})));
    let p = spread_pod("s4", 1, "DoNotSchedule", json!({}));
    assert_eq!(feasible(&p, &nodes, &cluster).len(), 3);
    let p = spread_pod("s4", 1, "DoNotSchedule", json!({"minDomains": 3}));
    assert!(feasible(&p, &nodes, &cluster).is_empty());
    // A node without the key.
    let mut bare = node("bare", "");
    bare.node
        .metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove("topology.kubernetes.io/zone");
    let with_bare = vec![bare];
    assert_eq!(
        reasons(&p, &with_bare, &cluster)[0],
        Err(vec![Reason::SpreadMissingLabel])
    );
    // ScheduleAnyway never filters, and scores the emptier zone higher.
    let mut nodes = three_nodes();
    nodes[0].add_pod(&spread_pod("s1", 1, "DoNotSchedule", json!({})));
    nodes[1].add_pod(&spread_pod("s2", 1, "DoNotSchedule", json!({})));
    let soft = spread_pod("s5", 1, "ScheduleAnyway", json!({}));
    assert_eq!(feasible(&soft, &nodes, &cluster).len(), 3);
    let all: Vec<&NodeInfo> = nodes.iter().collect();
    let s = spread::score(&soft, &nodes, &all);
    assert!(s[2] > s[0] && s[0] == s[1], "{s:?}");
}

#[test]
fn spread_honours_node_affinity_policy() {
    let mut nodes = three_nodes();
    let cluster = Cluster::default();
    nodes[2].add_pod(&spread_pod("s1", 1, "DoNotSchedule", json!({})));
    nodes[2].add_pod(&spread_pod("s2", 1, "DoNotSchedule", json!({})));
    // Pinned to z2 by nodeSelector: z1's (empty) domain is not counted, so z2 is the minimum.
    let mut pinned = spread_pod("s3", 1, "DoNotSchedule", json!({}));
    pinned.spec.as_mut().expect("spec").node_selector =
        Some([("topology.kubernetes.io/zone".to_string(), "z2".to_string())].into());
    assert_eq!(feasible(&pinned, &nodes, &cluster), ["c"]);
    let mut ignoring = spread_pod(
        "s3",
        1,
        "DoNotSchedule",
        json!({"nodeAffinityPolicy": "Ignore"}),
    );
    ignoring.spec.as_mut().expect("spec").node_selector =
        Some([("topology.kubernetes.io/zone".to_string(), "z2".to_string())].into());
    assert!(feasible(&ignoring, &nodes, &cluster).is_empty());
}

#[test]
fn bound_volumes_pin_pods_to_their_nodes() {
    let nodes = three_nodes();
    let mut cluster = Cluster::default();
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(
        json!({"metadata": {"name": "data", "namespace": "default"}, "spec": {"volumeName": "pv1"}}),
    )
    .expect("pvc");
    let pv: PersistentVolume =
        serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}}}))
        .expect("pv");
    let p = pod(
        "p",
        json!({}),
        json!({"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}),
    );
    let c = Cycle::new(&p, &nodes, &cluster);
    assert_eq!(
        c.prefilter_error(),
        Some("persistentvolumeclaim \"data\" not found")
    );
    cluster.volumes.claims.insert("default/data".into(), claim);
    assert_eq!(
        Cycle::new(&p, &nodes, &cluster).prefilter_error(),
        Some("pod has unbound immediate PersistentVolumeClaims")
    );
    cluster.volumes.volumes.insert("pv1".into(), pv);
    assert_eq!(feasible(&p, &nodes, &cluster), ["b"]);
    assert_eq!(
        reasons(&p, &nodes, &cluster)[0],
        Err(vec![Reason::VolumeNodeAffinity])
    );
}

fn busy(name: &str, priority: i32, cpu: &str) -> Pod {
    pod(
        name,
        json!({}),
        json!({"spec": {"priority": priority, "containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu}}}]}}),
    )
}

fn diagnose(p: &Pod, nodes: &[NodeInfo], cluster: &Cluster) -> Diagnosis {
    let c = Cycle::new(p, nodes, cluster);
    let mut d = Diagnosis::default();
    for n in nodes {
        if let Err(r) = c.filter(n) {
            d.add(n.node.metadata.name.as_deref().unwrap_or_default(), &r);
        }
    }
    d
}

#[test]
fn preemption_evicts_the_fewest_least_important_pods() {
    let mut nodes = vec![node("a", "z1"), node("b", "z1")];
    let cluster = Cluster::default();
    // a: two low pods of 1 CPU; b: one medium pod of 2 CPUs.
    nodes[0].add_pod(&busy("low-1", 10, "1"));
    nodes[0].add_pod(&busy("low-2", 20, "1"));
    nodes[1].add_pod(&busy("medium", 500, "2"));
    let high = busy("high", 1000, "1");
    let d = diagnose(&high, &nodes, &cluster);
    let c = preemption::find(&high, &nodes, &cluster, &d).expect("candidate");
    assert_eq!(c.node, "a");
    let victims: Vec<_> = c
        .victims
        .iter()
        .map(|v| v.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(victims, ["low-1"], "the more important low-2 is reprieved");

    // Nothing of lower priority: upstream's message.
    let equal = busy("equal", 15, "2");
    let d = diagnose(&equal, &nodes, &cluster);
    assert_eq!(
        preemption::find(&equal, &nodes, &cluster, &d).map(|c| c.node),
        Err("preemption: 0/2 nodes are available: 1 Insufficient cpu, 1 No preemption victims found for incoming pod.".into())
    );
    let mut never = busy("never", 1000, "1");
    never.spec.as_mut().expect("spec").preemption_policy = Some("Never".into());
    assert_eq!(
        preemption::ineligible(&never, &nodes).as_deref(),
        Some("preemption: not eligible due to preemptionPolicy=Never.")
    );
}

#[test]
fn a_nominated_pod_waits_for_its_terminating_victims() {
    let mut nodes = vec![node("a", "z1")];
    let mut leaving = busy("low", 0, "2");
    leaving.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    nodes[0].add_pod(&leaving);
    let mut high = busy("high", 1000, "1");
    assert_eq!(preemption::ineligible(&high, &nodes), None);
    high.status = Some(k8s_openapi::api::core::v1::PodStatus {
        nominated_node_name: Some("a".into()),
        ..Default::default()
    });
    assert_eq!(
        preemption::ineligible(&high, &nodes).as_deref(),
        Some("preemption: not eligible due to a terminating pod on the nominated node.")
    );
}

#[test]
fn image_locality_prefers_nodes_holding_big_images() {
    let mut nodes = three_nodes();
    nodes[1].node.status.as_mut().expect("status").images = Some(vec![serde_json::from_value(
        json!({"names": ["registry.example/big:1"], "sizeBytes": 800 * 1024 * 1024}),
    )
    .expect("image")]);
    let p = pod(
        "p",
        json!({}),
        json!({"spec": {"containers": [{"name": "c", "image": "registry.example/big:1"}]}}),
    );
    let all: Vec<&NodeInfo> = nodes.iter().collect();
    let s = image::score(&p, &nodes, &all);
    assert!(s[1] > 0 && s[0] == 0 && s[2] == 0, "{s:?}");
}
