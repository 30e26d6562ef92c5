//! Integration tests: the in-process scheduler placing pods on Node objects created through
//! the API (no agents), seen through real kubectl.

use std::path::Path;
use std::time::Duration;

use distro_testharness::fake::add_ready_node;
use distro_testharness::{eventually, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(50);

fn add_pod(s: &Server, name: &str, spec_extra: &str, cpu: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec_extra}  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: {cpu}}}}}\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
}

fn node_of(s: &Server, pod: &str) -> Option<String> {
    let out = s.kubectl(
        LATEST,
        &["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"],
    );
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

fn wait_bound(s: &Server, pod: &str) -> String {
    eventually(SOON, EVERY, &format!("pod {pod} bound"), || node_of(s, pod))
}

#[test]
fn pods_land_on_fitting_nodes_and_impossible_ones_say_why() {
    let s = Server::start(bin());
    let v = LATEST;
    add_ready_node(&s, "ssd-1", ", disk: ssd", "", "2", "4Gi");
    add_ready_node(&s, "hdd-1", ", disk: hdd", "", "2", "4Gi");
    add_ready_node(
        &s,
        "cp-1",
        "",
        "{key: node-role.kubernetes.io/control-plane, effect: NoSchedule}",
        "4",
        "4Gi",
    );

    // nodeSelector.
    add_pod(&s, "wants-ssd", "  nodeSelector: {disk: ssd}\n", "100m");
    assert_eq!(wait_bound(&s, "wants-ssd"), "ssd-1");
    // A toleration plus required node affinity on the name.
    add_pod(
        &s,
        "on-cp",
        "  tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]\n  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchFields: [{key: metadata.name, operator: In, values: [cp-1]}]}]}}}\n",
        "100m",
    );
    assert_eq!(wait_bound(&s, "on-cp"), "cp-1");
    // Resources: 1500m fits the 2-CPU nodes once each; the taint keeps pods off cp-1.
    add_pod(&s, "big-a", "", "1500m");
    add_pod(&s, "big-b", "", "1500m");
    let (a, b) = (wait_bound(&s, "big-a"), wait_bound(&s, "big-b"));
    assert_ne!(a, b, "the first big pod's requests count on its node");
    assert!(["ssd-1", "hdd-1"].contains(&a.as_str()) && ["ssd-1", "hdd-1"].contains(&b.as_str()));

    let events = s.ok(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=Scheduled,involvedObject.name=wants-ssd",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    );
    assert_eq!(
        events.trim(),
        "Successfully assigned default/wants-ssd to ssd-1"
    );

    // Nothing fits: condition and event in upstream's words.
    add_pod(&s, "huge", "", "3");
    let want = "0/3 nodes are available: 1 node(s) had untolerated taint \
        {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes \
        are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims \
        found for incoming pod.";
    let cond = eventually(SOON, EVERY, "PodScheduled=False on huge", || {
        let c = s.json(v, &["get", "pod", "huge"])["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled").cloned())?;
        (c["status"] == "False").then_some(c)
    });
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], want);
    let describe = s.ok(v, &["describe", "pod", "huge"]);
    assert!(
        describe.contains("FailedScheduling") && describe.contains(want),
        "describe shows the event:\n{describe}"
    );
    let event = s.json(
        v,
        &[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling,involvedObject.name=huge",
        ],
    );
    let items = event["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        items.len(),
        1,
        "repeats aggregate into one event: {items:?}"
    );
    let ev = &items[0];
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reportingComponent"], "default-scheduler");

    // The cluster changes (the taint goes): the parked pod is retried and lands.
    s.ok(
        v,
        &[
            "taint",
            "node",
            "cp-1",
            "node-role.kubernetes.io/control-plane:NoSchedule-",
        ],
    );
    assert_eq!(
        eventually(
            Duration::from_secs(8),
            EVERY,
            "huge bound after untaint",
            || { node_of(&s, "huge") }
        ),
        "cp-1"
    );

    // Cordoned: unschedulable until uncordoned.
    s.ok(v, &["cordon", "hdd-1"]);
    add_pod(&s, "wants-hdd", "  nodeSelector: {disk: hdd}\n", "100m");
    let want = "0/3 nodes are available: 1 node(s) were unschedulable, 2 node(s) didn't match \
        Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not \
        helpful for scheduling.";
    eventually(SOON, EVERY, "wants-hdd unschedulable", || {
        let out = s.kubectl(
            v,
            &[
                "get",
                "pod",
                "wants-hdd",
                "-o",
                "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}",
            ],
        );
        (String::from_utf8_lossy(&out.stdout) == want).then_some(())
    });
    s.ok(v, &["uncordon", "hdd-1"]);
    assert_eq!(
        eventually(Duration::from_secs(8), EVERY, "wants-hdd bound", || {
            node_of(&s, "wants-hdd")
        }),
        "hdd-1"
    );

    let log = s.log();
    for failure in [
        "binding failed",
        "recording event failed",
        "reporting an unschedulable pod failed",
    ] {
        assert!(!log.contains(failure), "{failure} in the log:\n{log}");
    }
}
