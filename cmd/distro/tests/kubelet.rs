//! End-to-end (root, real containerd and runc): `distro agent --runtime containerd` runs pods
//! as real containers, seen through real kubectl — Running/Ready with upstream-shaped status,
//! env from a ConfigMap in the container's log, CrashLoopBackOff with growing restarts and
//! BackOff events, a `restartPolicy: Never` pod Succeeded/Completed, adoption of a running
//! container across an agent restart, and graceful deletion removing the containers.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use distro_testharness::get::ready_node;
use distro_testharness::node::{pod, runtime_containers, start_agent, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

fn container_status(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]
}

fn manifest(node: &str) -> String {
    let pod = |name: &str, policy: &str, script: &str, env: &str| {
        let host = name != "net";
        format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: {host}
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
{env}"#
        )
    };
    let env = "    env:\n    - name: GREETING\n      valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}\n";
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: default}}\ndata: {{greeting: hello-from-configmap}}\n{}{}{}{}",
        pod("web", "Always", "echo greeting=$GREETING; exec sleep 3600", env),
        pod("crash", "Always", "echo crashing; exit 1", ""),
        pod("job", "Never", "echo done", ""),
        pod("net", "Always", "exec sleep 3600", ""),
    ) + &format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: init, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 3
  volumes: [{{name: work, emptyDir: {{}}}}]
  initContainers:
  - name: setup
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo prepared-by-init > /work/flag"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /work/flag; exec sleep 3600"]
    volumeMounts: [{{name: work, mountPath: /work}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: live, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 3
  volumes: [{{name: cfg, configMap: {{name: cfg}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "while true; do echo seen=$(cat /cfg/greeting); sleep 0.3; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: absent, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  containers:
  - name: main
    image: distro.test/absent:1
    imagePullPolicy: Never
"#
    )
}

#[test]
fn containerd_runs_pods_restarts_crashes_completes_adopts_and_deletes() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("kubelet-{}", std::process::id());
    let bridge = format!("dk{}", std::process::id() % 10_000_000);
    let (mut a, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );

    // The node registers Ready with containerd's version once containerd answers.
    let n = ready_node(&s, &node);
    let info = &n["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://1.")),
        "{info}"
    );
    assert!(n["metadata"]["labels"]["node.distro.io/fake"].is_null());
    assert!(n["status"]["capacity"]["memory"].is_string());

    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&manifest(&node)));

    // Running and Ready, as kubectl shows it.
    eventually(Duration::from_secs(30), EVERY, "web 1/1 Running", || {
        let t = s.ok(LATEST, &["get", "pod", "web", "--no-headers"]);
        (t.contains("1/1") && t.contains("Running")).then_some(())
    });
    let web = pod(&s, "web").expect("web");
    let cs = container_status(&web);
    let id = cs["containerID"].as_str().expect("containerID").to_string();
    assert!(id.starts_with("containerd://"), "{cs}");
    assert!(
        cs["imageID"].as_str().is_some_and(|i| !i.is_empty()),
        "{cs}"
    );
    assert_eq!(cs["image"], BUSYBOX);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    let st = &web["status"];
    assert!(
        st["hostIP"].is_string() && st["podIP"] == st["hostIP"],
        "{st}"
    );
    assert_eq!(st["qosClass"], "BestEffort");
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();

    // The ConfigMap's value reached the container's environment (its log file).
    let log = a
        .data_dir()
        .join(format!("agent/logs/pods/default_web_{uid}/main/0.log"));
    eventually(Duration::from_secs(10), EVERY, "web's log", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("stdout F greeting=hello-from-configmap")
            .then_some(())
    });

    // A pod on the pod network: an address from the node's /24 through distro's CNI plugin,
    // reachable from the node.
    let net = eventually(Duration::from_secs(30), EVERY, "net Running", || {
        let p = pod(&s, "net")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let ip = net["status"]["podIP"].as_str().expect("podIP").to_string();
    assert!(
        ip.starts_with("10.42.") && ip != net["status"]["hostIP"],
        "{ip}"
    );
    assert_eq!(net["status"]["podIPs"][0]["ip"], ip.as_str());
    let ping = Command::new("busybox")
        .args(["ping", "-c", "1", "-W", "3", &ip])
        .output()
        .expect("busybox ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Init containers run first, to completion, sharing an emptyDir with the main one.
    let init = eventually(Duration::from_secs(20), EVERY, "init Running", || {
        let p = pod(&s, "init")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let setup = &init["status"]["initContainerStatuses"][0];
    assert_eq!(
        setup["state"]["terminated"]["reason"], "Completed",
        "{setup}"
    );
    assert_eq!(
        init["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Initialized")
            .unwrap()["status"],
        "True"
    );
    let init_uid = init["metadata"]["uid"].as_str().unwrap().to_string();
    let init_log = a.data_dir().join(format!(
        "agent/logs/pods/default_init_{init_uid}/main/0.log"
    ));
    eventually(Duration::from_secs(10), EVERY, "init's main log", || {
        let text = std::fs::read_to_string(&init_log).ok()?;
        text.contains("stdout F prepared-by-init").then_some(())
    });

    // A ConfigMap change reaches a running container's volume (the kubelet watches).
    let live = eventually(Duration::from_secs(20), EVERY, "live Running", || {
        let p = pod(&s, "live")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let live_uid = live["metadata"]["uid"].as_str().unwrap().to_string();
    let live_log = a.data_dir().join(format!(
        "agent/logs/pods/default_live_{live_uid}/main/0.log"
    ));
    let read_live = || std::fs::read_to_string(&live_log).unwrap_or_default();
    eventually(Duration::from_secs(10), EVERY, "live's first value", || {
        read_live()
            .contains("seen=hello-from-configmap")
            .then_some(())
    });
    let t0 = Instant::now();
    s.ok(
        LATEST,
        &[
            "patch",
            "configmap",
            "cfg",
            "-p",
            r#"{"data":{"greeting":"updated"}}"#,
        ],
    );
    eventually(Duration::from_secs(15), EVERY, "live update seen", || {
        read_live().contains("seen=updated").then_some(())
    });
    eprintln!(
        "configMap update reached the container in {:?}",
        t0.elapsed()
    );

    // imagePullPolicy Never and no image: ErrImageNeverPull, with upstream's message.
    let absent = eventually(Duration::from_secs(20), EVERY, "absent waiting", || {
        let p = pod(&s, "absent")?;
        let w = &container_status(&p)["state"]["waiting"];
        (w["reason"] == "ErrImageNeverPull").then(|| w.clone())
    });
    assert_eq!(
        absent["message"],
        "Container image \"distro.test/absent:1\" is not present with pull policy of Never"
    );

    // restartPolicy Never, exit 0: Succeeded, Completed.
    let job = eventually(Duration::from_secs(20), EVERY, "job Succeeded", || {
        let p = pod(&s, "job")?;
        (p["status"]["phase"] == "Succeeded").then_some(p)
    });
    let term = &container_status(&job)["state"]["terminated"];
    assert_eq!(term["reason"], "Completed", "{term}");
    assert_eq!(term["exitCode"], 0);

    // exit 1 under Always: restarts with backoff, CrashLoopBackOff, BackOff events.
    let crash = eventually(
        Duration::from_secs(30),
        EVERY,
        "crash restarted twice",
        || {
            let p = pod(&s, "crash")?;
            let cs = container_status(&p);
            (cs["restartCount"].as_i64()? >= 2
                && cs["state"]["waiting"]["reason"] == "CrashLoopBackOff")
                .then_some(p)
        },
    );
    let cs = container_status(&crash);
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 1, "{cs}");
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error", "{cs}");
    let events = s.json(
        LATEST,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crash",
        ],
    );
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for want in ["Pulled", "Created", "Started", "BackOff"] {
        assert!(reasons.contains(&want), "{want} missing in {reasons:?}");
    }

    // An agent restart adopts the running container: same ID, no restart.
    a.restart();
    let socket = cleanup.socket().expect("containerd socket");
    eventually(Duration::from_secs(30), EVERY, "agent back", || {
        a.log()
            .matches("nodes registered and Ready")
            .nth(1)
            .map(|_| ())
    });
    // Give the new workers time to sync (they would restart a container they did not adopt).
    std::thread::sleep(Duration::from_secs(2));
    let web = pod(&s, "web").expect("web");
    let cs = container_status(&web);
    assert_eq!(
        cs["containerID"],
        id.as_str(),
        "adopted, not replaced: {cs}"
    );
    assert_eq!(cs["restartCount"], 0);
    assert!(cs["state"]["running"].is_object(), "{cs}");
    assert_eq!(runtime_containers(&socket, &uid, "container").len(), 1);
    assert_eq!(runtime_containers(&socket, &uid, "sandbox").len(), 1);

    // Graceful deletion: containers stopped (sleep ignores SIGTERM as PID 1, so SIGKILL
    // after the 3 s grace) and removed, then the object goes.
    let t0 = Instant::now();
    s.ok(LATEST, &["delete", "pod", "web", "--wait=false"]);
    eventually(Duration::from_secs(15), EVERY, "web gone", || {
        pod(&s, "web").is_none().then_some(())
    });
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(10), "deletion took {took:?}");
    assert!(runtime_containers(&socket, &uid, "container").is_empty());
    assert!(runtime_containers(&socket, &uid, "sandbox").is_empty());

    // Leave nothing behind: the other pods' containers go with them, then the agent.
    s.ok(LATEST, &["delete", "pods", "--all", "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = s.ok(LATEST, &["get", "pods", "--no-headers"]);
        if left.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods not gone:\n{left}\n{}",
            a.log()
        );
        std::thread::sleep(EVERY);
    }
    let status = a.stop();
    assert!(status.success(), "{}", a.log());
    eprintln!("kubelet e2e took {:?}", began.elapsed());
    drop(cleanup);
}
