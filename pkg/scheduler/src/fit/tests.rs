use super::*;
use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
use serde_json::json;

fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> NodeInfo {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    merge(&mut v, extra);
    NodeInfo::new(serde_json::from_value(v).expect("node"))
}

fn pod(extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("pod")
}

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

fn requests(cpu: &str, mem: &str) -> serde_json::Value {
    json!({"spec": {"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})
}

#[test]
fn resources_count_bound_pods_and_pod_slots() {
    let mut n = node("n", "1", "1Gi", json!({}));
    let p = pod(requests("600m", "100Mi"));
    assert_eq!(filter(&p, &n), Ok(()));
    n.add_pod(&p);
    assert_eq!(
        filter(&p, &n),
        Err(vec![Reason::Insufficient("cpu".into())])
    );
    let big = pod(requests("100m", "2Gi"));
    assert_eq!(
        filter(&big, &n),
        Err(vec![Reason::Insufficient("memory".into())])
    );
    let full = node(
        "f",
        "1",
        "1Gi",
        json!({"status": {"allocatable": {"pods": "0"}}}),
    );
    assert_eq!(
        filter(&pod(json!({})), &full),
        Err(vec![Reason::TooManyPods])
    );
    let storage = pod(json!({"spec": {"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"ephemeral-storage": "1Gi", "example.com/gpu": "1"}}}]}}));
    assert_eq!(
        filter(&storage, &node("s", "1", "1Gi", json!({}))),
        Err(vec![
            Reason::Insufficient("ephemeral-storage".into()),
            Reason::Insufficient("example.com/gpu".into()),
        ])
    );
}

#[test]
fn cordoned_and_unready_nodes_are_filtered() {
    let cordoned = node("c", "1", "1Gi", json!({"spec": {"unschedulable": true}}));
    assert_eq!(
        filter(&pod(json!({})), &cordoned),
        Err(vec![Reason::Unschedulable])
    );
    let tolerant = pod(json!({"spec": {"tolerations": [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}));
    assert_eq!(filter(&tolerant, &cordoned), Ok(()));

    let mut unready = node("u", "1", "1Gi", json!({}));
    unready.node.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "False".into(),
            ..Default::default()
        }]),
        ..unready.node.status.clone().unwrap_or_default()
    });
    assert_eq!(
        filter(&pod(json!({})), &unready),
        Err(vec![Reason::Taint {
            key: "node.kubernetes.io/not-ready".into(),
            value: String::new()
        }])
    );
    let ds = pod(json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
    assert_eq!(
        filter(&ds, &unready),
        Ok(()),
        "tolerate-everything pods still fit"
    );
    unready
        .node
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .expect("conds")[0]
        .status = "Unknown".into();
    assert!(matches!(&filter(&pod(json!({})), &unready),
        Err(r) if r[0] == Reason::Taint { key: "node.kubernetes.io/unreachable".into(), value: String::new() }));
}

#[test]
fn taints_and_tolerations() {
    let tainted = node(
        "t",
        "1",
        "1Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    );
    assert_eq!(
        filter(&pod(json!({})), &tainted),
        Err(vec![Reason::Taint {
            key: "dedicated".into(),
            value: "gpu".into()
        }])
    );
    for (tol, ok) in [
        (json!({"key": "dedicated", "value": "gpu"}), true),
        (
            json!({"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}),
            true,
        ),
        (json!({"key": "dedicated", "value": "cpu"}), false),
        (
            json!({"key": "dedicated", "value": "gpu", "effect": "NoExecute"}),
            false,
        ),
        (json!({"operator": "Exists"}), true),
        (json!({"key": "other", "operator": "Exists"}), false),
    ] {
        let p = pod(json!({"spec": {"tolerations": [tol.clone()]}}));
        assert_eq!(filter(&p, &tainted).is_ok(), ok, "{tol}");
    }
    let prefer = node(
        "p",
        "1",
        "1Gi",
        json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
    );
    assert_eq!(
        filter(&pod(json!({})), &prefer),
        Ok(()),
        "PreferNoSchedule only scores"
    );
    let clean = node("c", "1", "1Gi", json!({}));
    let s = score(&pod(json!({})), &[&prefer, &clean]);
    assert!(s[1] > s[0], "the untainted node wins: {s:?}");
}

#[test]
fn node_selector_and_required_affinity() {
    let n = node(
        "n1",
        "1",
        "1Gi",
        json!({"metadata": {"labels": {"disk": "ssd", "gen": "5"}}}),
    );
    let sel = |v: serde_json::Value| pod(json!({"spec": {"nodeSelector": v}}));
    assert_eq!(filter(&sel(json!({"disk": "ssd"})), &n), Ok(()));
    assert_eq!(
        filter(&sel(json!({"disk": "hdd"})), &n),
        Err(vec![Reason::Affinity])
    );
    let aff = |exprs: serde_json::Value, fields: serde_json::Value| {
        pod(json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": exprs, "matchFields": fields}]}}}}}))
    };
    for (expr, ok) in [
        (
            json!({"key": "disk", "operator": "In", "values": ["ssd", "nvme"]}),
            true,
        ),
        (
            json!({"key": "disk", "operator": "NotIn", "values": ["ssd"]}),
            false,
        ),
        (
            json!({"key": "zone", "operator": "NotIn", "values": ["a"]}),
            true,
        ),
        (json!({"key": "disk", "operator": "Exists"}), true),
        (json!({"key": "disk", "operator": "DoesNotExist"}), false),
        (
            json!({"key": "gen", "operator": "Gt", "values": ["4"]}),
            true,
        ),
        (
            json!({"key": "gen", "operator": "Lt", "values": ["5"]}),
            false,
        ),
        (
            json!({"key": "disk", "operator": "Gt", "values": ["1"]}),
            false,
        ),
        // Invalid requirements match nothing, as upstream's NewRequirement refuses them.
        (
            json!({"key": "disk", "operator": "In", "values": []}),
            false,
        ),
        (
            json!({"key": "zone", "operator": "NotIn", "values": []}),
            false,
        ),
        (
            json!({"key": "disk", "operator": "Exists", "values": ["ssd"]}),
            false,
        ),
        (
            json!({"key": "gen", "operator": "Gt", "values": ["4", "3"]}),
            false,
        ),
        (
            json!({"key": "gen", "operator": "Gt", "values": ["four"]}),
            false,
        ),
        (
            json!({"key": "disk", "operator": "Equals", "values": ["ssd"]}),
            false,
        ),
    ] {
        assert_eq!(
            filter(&aff(json!([expr.clone()]), json!([])), &n).is_ok(),
            ok,
            "{expr}"
        );
    }
    let by_name = |op: &str| {
        aff(
            json!([]),
            json!([{"key": "metadata.name", "operator": op, "values": ["n1"]}]),
        )
    };
    assert_eq!(filter(&by_name("In"), &n), Ok(()));
    assert_eq!(filter(&by_name("NotIn"), &n), Err(vec![Reason::Affinity]));
    let two_names = aff(
        json!([]),
        json!([{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]),
    );
    assert_eq!(
        filter(&two_names, &n),
        Err(vec![Reason::Affinity]),
        "a field requirement takes exactly one value"
    );
    assert_eq!(
        filter(&aff(json!([]), json!([])), &n),
        Err(vec![Reason::Affinity]),
        "an empty term matches nothing"
    );
}

#[test]
fn host_ports_conflict_by_protocol_ip_and_port() {
    let with_port = |port: i32, proto: &str, ip: &str| {
        pod(json!({"spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": port, "protocol": proto, "hostIP": ip}]}]}}))
    };
    let mut n = node("n", "1", "1Gi", json!({}));
    n.add_pod(&with_port(8080, "TCP", ""));
    assert_eq!(
        filter(&with_port(8080, "TCP", "10.0.0.1"), &n),
        Err(vec![Reason::Ports])
    );
    assert_eq!(filter(&with_port(8080, "UDP", ""), &n), Ok(()));
    assert_eq!(filter(&with_port(8081, "TCP", ""), &n), Ok(()));
    let mut m = node("m", "1", "1Gi", json!({}));
    m.add_pod(&with_port(53, "UDP", "10.0.0.1"));
    assert_eq!(filter(&with_port(53, "UDP", "10.0.0.2"), &m), Ok(()));
    assert_eq!(
        filter(&with_port(53, "UDP", "0.0.0.0"), &m),
        Err(vec![Reason::Ports])
    );
}

#[test]
fn scores_prefer_free_balanced_and_preferred_nodes() {
    let p = pod(requests("500m", "512Mi"));
    let mut busy = node("busy", "2", "2Gi", json!({}));
    busy.add_pod(&pod(requests("1", "1Gi")));
    let idle = node("idle", "2", "2Gi", json!({}));
    let s = score(&p, &[&busy, &idle]);
    assert!(s[1] > s[0], "least allocated: {s:?}");

    // Same free share on average, but one node's CPU and memory are used unevenly.
    let mut lopsided = node("l", "2", "2Gi", json!({}));
    lopsided.add_pod(&pod(requests("1500m", "1")));
    let mut even = node("e", "2", "2Gi", json!({}));
    even.add_pod(&pod(requests("750m", "768Mi")));
    let s = score(&p, &[&lopsided, &even]);
    assert!(s[1] > s[0], "balanced: {s:?}");

    let preferring = pod(json!({"spec": {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference":
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["busy"]}]}}]}}}}));
    let s = score(&preferring, &[&busy, &idle]);
    assert!(s[0] > s[1], "preferred affinity outweighs load: {s:?}");
}

#[test]
fn message_matches_upstream() {
    let mut d = Diagnosis::default();
    d.add("n", &[Reason::Insufficient("cpu".into())]);
    for _ in 0..2 {
        d.add(
            "n",
            &[Reason::Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: String::new(),
            }],
        );
    }
    assert_eq!(
        d.message(
            "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
             2 Preemption is not helpful for scheduling."
        ),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
         {node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: \
         1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
    );
    let mut d = Diagnosis::default();
    d.add("n", &[Reason::Affinity]);
    d.add(
        "n",
        &[
            Reason::Insufficient("cpu".into()),
            Reason::Insufficient("memory".into()),
        ],
    );
    assert_eq!(
        d.message("preemption: not eligible due to preemptionPolicy=Never."),
        "0/2 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, \
         1 node(s) didn't match Pod's node affinity/selector. \
         preemption: not eligible due to preemptionPolicy=Never."
    );
    assert_eq!(
        Diagnosis::default().message(""),
        "no nodes available to schedule pods"
    );
}

#[test]
fn nodes_without_spec_fit() {
    let mut n = node("n", "1", "1Gi", json!({}));
    n.node.spec = None;
    n.node.status = Some(NodeStatus {
        allocatable: n.node.status.as_ref().and_then(|s| s.allocatable.clone()),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        }]),
        ..Default::default()
    });
    assert_eq!(filter(&pod(json!({})), &n), Ok(()));
}
