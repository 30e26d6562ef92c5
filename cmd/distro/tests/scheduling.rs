//! Integration tests: the scheduler's cross-node plugins (pod affinity, anti-affinity,
//! topology spread), priority classes and preemption, seen through real kubectl on Node
//! objects created through the API (no kubelet runs; the tests delete terminating pods as a
//! kubelet would).

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::fake::add_ready_node;
use distro_testharness::{eventually, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(8);
const EVERY: Duration = Duration::from_millis(50);

/// A Ready node with `cpu` allocatable in `zone`.
fn add_node(s: &Server, name: &str, cpu: &str, zone: &str) {
    let labels = format!(", topology.kubernetes.io/zone: {zone}");
    add_ready_node(s, name, &labels, "", cpu, "4Gi");
}

/// A pod with `labels` (YAML flow map body), extra spec lines and a CPU request.
fn add_pod(s: &Server, name: &str, labels: &str, spec_extra: &str, cpu: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n{spec_extra}  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: {cpu}}}}}\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
}

fn field(s: &Server, pod: &str, path: &str) -> Option<String> {
    let out = s.kubectl(
        LATEST,
        &["get", "pod", pod, "-o", &format!("jsonpath={path}")],
    );
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

fn wait_bound(s: &Server, pod: &str) -> String {
    eventually(SOON, EVERY, &format!("pod {pod} bound"), || {
        field(s, pod, "{.spec.nodeName}")
    })
}

fn wait_unschedulable(s: &Server, pod: &str, want: &str) {
    let path = "{.status.conditions[?(@.type=='PodScheduled')].message}";
    let deadline = Instant::now() + SOON;
    loop {
        let last = field(s, pod, path);
        if last.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{pod} unschedulable:\n want {want:?}\n last {last:?}"
        );
        std::thread::sleep(EVERY);
    }
}

#[test]
fn affinity_anti_affinity_spread_and_taints() {
    let s = Server::start(bin());
    let v = LATEST;
    add_node(&s, "n1", "2", "z1");
    add_node(&s, "n2", "2", "z1");
    add_node(&s, "n3", "2", "z2");

    // Required pod affinity: web goes where db is.
    add_pod(&s, "db", "app: db", "", "100m");
    let db_node = wait_bound(&s, "db");
    let near_db = "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: db}}, topologyKey: kubernetes.io/hostname}]}}\n";
    add_pod(&s, "web", "app: web", near_db, "100m");
    assert_eq!(wait_bound(&s, "web"), db_node);
    // Affinity to something that does not exist: nowhere, and preemption cannot help.
    let near_ghost = "  affinity: {podAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: ghost}}, topologyKey: kubernetes.io/hostname}]}}\n";
    add_pod(&s, "lonely", "app: web", near_ghost, "100m");
    wait_unschedulable(
        &s,
        "lonely",
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 \
         nodes are available: 3 Preemption is not helpful for scheduling.",
    );

    // Required anti-affinity on the hostname: one per node, the fourth waits.
    let apart = "  affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {matchLabels: {app: solo}}, topologyKey: kubernetes.io/hostname}]}}\n";
    let mut solo_nodes: Vec<String> = (1..=3)
        .map(|i| {
            let name = format!("solo-{i}");
            add_pod(&s, &name, "app: solo", apart, "100m");
            wait_bound(&s, &name)
        })
        .collect();
    solo_nodes.sort();
    assert_eq!(solo_nodes, ["n1", "n2", "n3"]);
    add_pod(&s, "solo-4", "app: solo", apart, "100m");
    wait_unschedulable(
        &s,
        "solo-4",
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: \
         0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    );
    // A plain pod labelled solo is kept off by the placed pods' anti-affinity.
    add_pod(&s, "solo-plain", "app: solo", "", "100m");
    wait_unschedulable(
        &s,
        "solo-plain",
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    );

    // Topology spread over zones with maxSkew 1: z2 (one node) gets as many as z1 (two).
    let spread = "  topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: spread}}}]\n";
    let mut zones = Vec::new();
    for i in 1..=4 {
        let name = format!("spread-{i}");
        add_pod(&s, &name, "app: spread", spread, "100m");
        let node = wait_bound(&s, &name);
        zones.push(if node == "n3" { "z2" } else { "z1" });
    }
    let z2 = zones.iter().filter(|z| **z == "z2").count();
    assert_eq!(z2, 2, "zones in order of binding: {zones:?}");
    // Pinned to z2 by nodeSelector, a spread pod counts only z2's domain (nodeAffinityPolicy
    // Honor): 2 + 1 - 2 is within maxSkew. With Ignore, z1 counts too: z2 would hold 3 + 1
    // against z1's 2, so the next one fits nowhere.
    let pinned = format!("  nodeSelector: {{topology.kubernetes.io/zone: z2}}\n{spread}");
    add_pod(&s, "spread-5", "app: spread", &pinned, "100m");
    assert_eq!(wait_bound(&s, "spread-5"), "n3");
    let strict = "  nodeSelector: {topology.kubernetes.io/zone: z2}\n  topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, nodeAffinityPolicy: Ignore, labelSelector: {matchLabels: {app: spread}}}]\n";
    add_pod(&s, "spread-6", "app: spread", strict, "100m");
    wait_unschedulable(
        &s,
        "spread-6",
        "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, 2 \
         node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are \
         available: 1 No preemption victims found for incoming pod, 2 Preemption is not \
         helpful for scheduling.",
    );

    // Taints and resources together, in upstream's words.
    s.ok(v, &["taint", "node", "n1", "dedicated=infra:NoSchedule"]);
    add_pod(&s, "huge", "app: huge", "", "3");
    wait_unschedulable(
        &s,
        "huge",
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 \
         Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful \
         for scheduling, 2 No preemption victims found for incoming pod.",
    );
    let describe = s.ok(v, &["describe", "pod", "solo-4"]);
    assert!(
        describe.contains("FailedScheduling")
            && describe.contains("didn't match pod anti-affinity rules"),
        "describe tells why:\n{describe}"
    );
}

#[test]
fn priority_classes_and_preemption() {
    let s = Server::start(bin());
    let v = LATEST;
    add_node(&s, "n1", "2", "z1");
    s.ok(v, &["create", "priorityclass", "low", "--value=10"]);
    s.ok(v, &["create", "priorityclass", "high", "--value=1000"]);
    s.ok(
        v,
        &[
            "create",
            "priorityclass",
            "polite",
            "--value=2000",
            "--preemption-policy=Never",
        ],
    );

    // Admission resolves the class; an unknown one is refused in upstream's words.
    let err = s.fails_stdin(
        v,
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  priorityClassName: nope\n  containers: [{name: c, image: busybox}]\n"),
    );
    assert!(
        err.contains(r#"pods "bad" is forbidden: no PriorityClass with name nope was found"#),
        "{err}"
    );

    let classes = s.ok(v, &["get", "priorityclass", "-o", "name"]);
    assert!(
        classes.contains("priorityclass.scheduling.k8s.io/system-node-critical")
            && classes.contains("priorityclass.scheduling.k8s.io/system-cluster-critical"),
        "built-in classes exist:\n{classes}"
    );
    add_pod(
        &s,
        "critical",
        "app: c",
        "  priorityClassName: system-node-critical\n",
        "100m",
    );
    assert_eq!(
        field(&s, "critical", "{.spec.priority}").as_deref(),
        Some("2000001000")
    );
    s.ok(
        v,
        &["delete", "pod", "critical", "--grace-period=0", "--force"],
    );

    add_pod(
        &s,
        "victim",
        "app: low",
        "  priorityClassName: low\n",
        "1500m",
    );
    assert_eq!(wait_bound(&s, "victim"), "n1");
    assert_eq!(
        field(&s, "victim", "{.spec.priority}").as_deref(),
        Some("10")
    );

    // A polite high-priority pod waits instead of preempting.
    add_pod(
        &s,
        "waiter",
        "app: polite",
        "  priorityClassName: polite\n",
        "1",
    );
    wait_unschedulable(
        &s,
        "waiter",
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to \
         preemptionPolicy=Never.",
    );
    assert_eq!(
        field(&s, "waiter", "{.spec.preemptionPolicy}").as_deref(),
        Some("Never")
    );
    s.ok(v, &["delete", "pod", "waiter", "--wait=false"]);

    // A high-priority pod preempts the low one.
    add_pod(&s, "boss", "app: high", "  priorityClassName: high\n", "1");
    let uid = field(&s, "boss", "{.metadata.uid}").expect("uid");
    let nominated = eventually(SOON, EVERY, "boss nominated", || {
        field(&s, "boss", "{.status.nominatedNodeName}")
    });
    assert_eq!(nominated, "n1");
    let cond = eventually(SOON, EVERY, "victim's DisruptionTarget", || {
        s.json(v, &["get", "pod", "victim"])["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
    });
    assert_eq!(cond["reason"], "PreemptionByScheduler");
    assert_eq!(
        cond["message"],
        "default-scheduler: preempting to accommodate a higher priority pod"
    );
    assert!(field(&s, "victim", "{.metadata.deletionTimestamp}").is_some());
    let note = format!("Preempted by pod {uid} on node n1");
    let events = eventually(SOON, EVERY, "Preempted event", || {
        let out = s.ok(
            v,
            &[
                "get",
                "events",
                "--field-selector",
                "reason=Preempted,involvedObject.name=victim",
                "-o",
                "jsonpath={.items[*].message}",
            ],
        );
        (!out.trim().is_empty()).then_some(out)
    });
    assert_eq!(events.trim(), note);
    // While the victim terminates, the preemptor waits rather than preempting again.
    assert_eq!(field(&s, "boss", "{.spec.nodeName}"), None);

    // The "kubelet" finishes the victim; the preemptor lands on the nominated node.
    s.ok(
        v,
        &["delete", "pod", "victim", "--grace-period=0", "--force"],
    );
    assert_eq!(wait_bound(&s, "boss"), "n1");

    // A global default class applies to pods that name none.
    s.ok(
        v,
        &[
            "create",
            "priorityclass",
            "everyone",
            "--value=5",
            "--global-default",
        ],
    );
    add_pod(&s, "plain", "app: plain", "", "100m");
    assert_eq!(
        field(&s, "plain", "{.spec.priorityClassName} {.spec.priority}").as_deref(),
        Some("everyone 5")
    );
    let log = s.log();
    assert!(!log.contains("preempting a pod failed"), "{log}");
}

#[test]
fn controllers_and_scheduler_lead_by_leases() {
    let mut s = Server::start(bin());
    let v = LATEST;
    let holder = |s: &Server, lease: &str| {
        let out = s.kubectl(
            v,
            &[
                "get",
                "lease",
                "-n",
                "kube-system",
                lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        );
        let h = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !h.is_empty()).then_some(h)
    };
    let scheduler = eventually(SOON, EVERY, "kube-scheduler lease", || {
        holder(&s, "kube-scheduler")
    });
    let manager = eventually(SOON, EVERY, "kube-controller-manager lease", || {
        holder(&s, "kube-controller-manager")
    });
    assert!(
        scheduler.contains('_') && manager.contains('_'),
        "{scheduler} {manager}"
    );
    assert_ne!(
        scheduler, manager,
        "each component campaigns with its own identity"
    );
    let table = s.ok(v, &["get", "lease", "-n", "kube-system"]);
    assert!(
        table.contains("kube-scheduler") && table.contains(&scheduler),
        "kubectl shows the holder:\n{table}"
    );
    let spec = s.json(v, &["get", "lease", "-n", "kube-system", "kube-scheduler"])["spec"].clone();
    assert_eq!(spec["leaseDurationSeconds"], 15);

    // The leader schedules.
    add_node(&s, "n1", "2", "z1");
    add_pod(&s, "first", "app: a", "", "100m");
    assert_eq!(wait_bound(&s, "first"), "n1");

    // A clean stop releases the leases, so the restarted server leads at once.
    s.restart();
    let started = Instant::now();
    add_pod(&s, "second", "app: a", "", "100m");
    assert_eq!(wait_bound(&s, "second"), "n1");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "no wait for lease expiry: {:?}",
        started.elapsed()
    );
    let after = holder(&s, "kube-scheduler").expect("holder after restart");
    assert_ne!(after, scheduler, "a new process is a new candidate");
    let spec = s.json(v, &["get", "lease", "-n", "kube-system", "kube-scheduler"])["spec"].clone();
    assert_eq!(spec["leaseTransitions"], 1);
    let log = s.log();
    assert!(!log.contains("releasing the lease failed"), "{log}");
}
