//! End-to-end (root, real containerd and runc): probes, lifecycle hooks and graceful
//! termination on a `distro agent --runtime containerd` node, seen through real kubectl.
//! Several pods run at once, each showing one behaviour:
//!
//! - `ready`: an exec readiness probe on a file the test creates and removes (hostPath): the
//!   pod's READY flips 0/1 → 1/1 → 0/1 and its Service's Endpoints follow.
//! - `web`: httpGet readiness against busybox httpd (a named port), plus a second container
//!   probing a missing path: 1/2 ready, `Readiness probe failed: HTTP probe failed with
//!   statuscode: 404`; an httpGet preStop hook (a CGI writing to a hostPath log).
//! - `live`: an exec liveness probe that starts failing: Unhealthy and Killing events,
//!   restartCount grows.
//! - `hostnet`: a hostNetwork pod's tcpSocket probe goes to the node's address.
//! - `nostart`: a failing startup probe restarts a container that ignores SIGTERM within the
//!   probe's `terminationGracePeriodSeconds` (1 s, floored to 2), not the pod's 30 s.
//! - `stuck`: an exec probe past its `timeoutSeconds` fails as timed out.
//! - `slow`: a tcpSocket startup probe against `nc` listening only after 3 s gates a tcpSocket
//!   liveness probe (which would otherwise restart it): `started` false, then true; no restart.
//! - `hooks`: postStart writes a file the container waits for; preStop runs before SIGTERM
//!   (the order is visible in a hostPath log).
//! - `badhook`: a failing postStart hook: FailedPostStartHook, the container is killed.
//! - `grace`: a container ignoring SIGTERM with a preStop `sleep`, deleted with
//!   `--grace-period=1`: the hook uses the second, SIGKILL follows after the 2 s floor, not
//!   after the pod's 30 s.
//! - `regrace`: deleted with its 30 s, then again with `--grace-period=1`: the running stop
//!   is cut short.

use std::path::Path;
use std::time::{Duration, Instant};

use distro_testharness::get::ready_node;
use distro_testharness::node::{events, pod, start_agent, BUSYBOX};
use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

/// The status of container `name` of pod `p`.
fn status<'a>(p: &'a Value, name: &str) -> Option<&'a Value> {
    p["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The pod's READY column as `kubectl get pod` prints it.
fn ready_column(s: &Server, name: &str) -> String {
    let out = s.kubectl(LATEST, &["get", "pod", name, "--no-headers"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn manifest(node: &str, shared: &Path, host_port: u16) -> String {
    let shared = shared.display();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: ready, namespace: default, labels: {{app: ready}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  volumes: [{{name: shared, hostPath: {{path: "{shared}", type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    readinessProbe:
      exec: {{command: [cat, /shared/ready]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: ready, namespace: default}}
spec:
  selector: {{app: ready}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  volumes: [{{name: shared, hostPath: {{path: "{shared}", type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command:
    - sh
    - -c
    - |
      mkdir -p /www/cgi-bin
      echo ok > /www/healthz
      printf '#!/bin/sh\necho "prestop $HTTP_USER_AGENT" >> /shared/web.log\nprintf "Content-Type: text/plain\\r\\n\\r\\nbye"\n' > /www/cgi-bin/stop
      chmod +x /www/cgi-bin/stop
      exec httpd -f -p 8080 -h /www
    ports: [{{name: http, containerPort: 8080}}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
    lifecycle:
      preStop:
        httpGet: {{path: /cgi-bin/stop, port: http}}
  - name: bad
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    readinessProbe:
      httpGet: {{path: /missing, port: 8080}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: live, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; touch /tmp/healthy; sleep 2; rm /tmp/healthy; while true; do sleep 0.2; done"]
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: hostnet, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["nc", "-ll", "-p", "{host_port}", "-e", "true"]
    readinessProbe:
      tcpSocket: {{port: {host_port}}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: nostart, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
    startupProbe:
      exec: {{command: ["false"]}}
      periodSeconds: 1
      failureThreshold: 2
      terminationGracePeriodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: stuck, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    readinessProbe:
      exec: {{command: [sleep, "5"]}}
      timeoutSeconds: 1
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: slow, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "sleep 3; exec nc -ll -p 8081 -e true"]
    startupProbe:
      tcpSocket: {{port: 8081}}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      tcpSocket: {{port: 8081}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: hooks, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 10
  volumes: [{{name: shared, hostPath: {{path: "{shared}", type: Directory}}}}]
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'echo TERM >> /shared/hooks.log; exit 0' TERM; while [ ! -f /tmp/poststart ]; do sleep 0.1; done; echo saw-$(cat /tmp/poststart) >> /shared/hooks.log; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "echo poststart > /tmp/poststart"]}}
      preStop:
        exec: {{command: [sh, -c, "echo prestop >> /shared/hooks.log"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhook, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      postStart:
        exec: {{command: [sh, -c, "exit 3"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: grace, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
    lifecycle:
      preStop:
        sleep: {{seconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: regrace, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]
"#
    )
}

#[test]
fn probes_hooks_and_graceful_termination() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("probes-{}", std::process::id());
    let bridge = format!("dp{}", std::process::id() % 10_000_000);
    // A port for the hostNetwork pod, unlikely to be taken on the node.
    let host_port = 20_000 + (std::process::id() % 10_000) as u16;
    let shared = tempfile::Builder::new()
        .prefix("distro-probes-")
        .tempdir()
        .expect("shared dir");
    let (mut a, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );
    ready_node(&s, &node);
    let secs = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&manifest(&node, shared.path(), host_port)),
    );

    // Readiness follows the probe both ways, in kubectl and in the Service's Endpoints.
    let ip = eventually(Duration::from_secs(30), EVERY, "ready Running, 0/1", || {
        let p = pod(&s, "ready")?;
        let c = status(&p, "main")?;
        (p["status"]["phase"] == "Running" && c["ready"] == false && c["started"] == true)
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    });
    assert_eq!(ready_column(&s, "ready"), "0/1");
    let endpoints = |key: &str| {
        let e = s.json(LATEST, &["get", "endpoints", "ready"]);
        e["subsets"][0][key][0]["ip"].as_str().map(str::to_string)
    };
    eventually(
        Duration::from_secs(10),
        EVERY,
        "ready not ready in Endpoints",
        || (endpoints("notReadyAddresses")? == ip).then_some(()),
    );
    std::fs::write(shared.path().join("ready"), "yes").expect("ready file");
    eventually(Duration::from_secs(10), EVERY, "ready 1/1", || {
        (ready_column(&s, "ready") == "1/1").then_some(())
    });
    eventually(Duration::from_secs(10), EVERY, "ready in Endpoints", || {
        (endpoints("addresses")? == ip).then_some(())
    });
    let p = pod(&s, "ready").expect("ready");
    let cond = |p: &Value, t: &str| {
        p["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t).cloned())
            .unwrap_or_default()
    };
    assert_eq!(cond(&p, "Ready")["status"], "True");
    assert_eq!(cond(&p, "ContainersReady")["status"], "True");
    std::fs::remove_file(shared.path().join("ready")).expect("remove ready file");
    eventually(Duration::from_secs(10), EVERY, "ready back to 0/1", || {
        (ready_column(&s, "ready") == "0/1").then_some(())
    });
    let p = pod(&s, "ready").expect("ready");
    assert_eq!(cond(&p, "Ready")["reason"], "ContainersNotReady");
    assert_eq!(
        status(&p, "main").unwrap()["restartCount"],
        0,
        "readiness never restarts"
    );
    eventually(Duration::from_secs(10), EVERY, "Endpoints follow", || {
        (endpoints("notReadyAddresses")? == ip).then_some(())
    });
    assert!(
        events(&s, "ready").iter().any(|(r, m)| r == "Unhealthy"
            && m.starts_with("Readiness probe failed: cat: can't open '/shared/ready'")),
        "{:?}",
        events(&s, "ready")
    );

    // httpGet against busybox httpd through a named port; a 404 keeps the other container
    // unready.
    let web = eventually(Duration::from_secs(20), EVERY, "web main ready", || {
        let p = pod(&s, "web")?;
        (status(&p, "main")?["ready"] == true).then_some(p)
    });
    assert_eq!(status(&web, "bad").unwrap()["ready"], false);
    assert_eq!(ready_column(&s, "web"), "1/2");
    assert_eq!(
        cond(&web, "ContainersReady")["message"],
        "containers with unready status: [bad]"
    );
    eventually(Duration::from_secs(10), EVERY, "web 404 event", || {
        events(&s, "web")
            .iter()
            .any(|(r, m)| {
                r == "Unhealthy"
                    && m == "Readiness probe failed: HTTP probe failed with statuscode: 404"
            })
            .then_some(())
    });

    // A failing startup probe restarts the container, within the probe's own grace period
    // (the pod's 30 s would not restart it in time).
    let nostart = eventually(Duration::from_secs(20), EVERY, "nostart restarted", || {
        let p = pod(&s, "nostart")?;
        (status(&p, "main")?["restartCount"].as_i64()? >= 1).then_some(p)
    });
    let last = &status(&nostart, "main").unwrap()["lastState"]["terminated"];
    assert_eq!(
        last["exitCode"], 137,
        "SIGKILLed: it ignores SIGTERM: {last}"
    );
    let ran =
        secs(last["finishedAt"].as_str().unwrap()) - secs(last["startedAt"].as_str().unwrap());
    assert!(ran < 10, "killed {ran} s after its start: {last}");
    let ev = events(&s, "nostart");
    assert!(
        ev.iter().any(|(r, m)| r == "Killing"
            && m == "Container main failed startup probe, will be restarted"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Unhealthy" && m == "Startup probe failed: "),
        "{ev:?}"
    );

    // A hostNetwork pod is probed on the node's address.
    eventually(Duration::from_secs(20), EVERY, "hostnet 1/1", || {
        (ready_column(&s, "hostnet") == "1/1").then_some(())
    });

    // An exec probe running past timeoutSeconds fails (containerd kills it).
    eventually(Duration::from_secs(20), EVERY, "stuck timed out", || {
        events(&s, "stuck")
            .iter()
            .any(|(r, m)| {
                r == "Unhealthy" && m == "Readiness probe failed: command \"sleep 5\" timed out"
            })
            .then_some(())
    });

    // Liveness: the probe fails twice, the container is killed and restarted.
    let live = eventually(Duration::from_secs(30), EVERY, "live restarted", || {
        let p = pod(&s, "live")?;
        (status(&p, "main")?["restartCount"].as_i64()? >= 1).then_some(p)
    });
    let last = &status(&live, "main").unwrap()["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 0, "the TERM trap exited cleanly: {last}");
    let ev = events(&s, "live");
    assert!(
        ev.iter().any(|(r, m)| r == "Unhealthy"
            && m == "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory\n"),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|(r, m)| r == "Killing"
            && m == "Container main failed liveness probe, will be restarted"),
        "{ev:?}"
    );

    // Startup gates liveness: not started (and not ready) until nc listens, never restarted.
    let slow = eventually(Duration::from_secs(20), EVERY, "slow started", || {
        let p = pod(&s, "slow")?;
        (status(&p, "main")?["started"] == true).then_some(p)
    });
    let c = status(&slow, "main").unwrap();
    assert_eq!(c["ready"], true, "{c}");
    assert_eq!(c["restartCount"], 0, "liveness waited for startup: {c}");
    let started_at = c["state"]["running"]["startedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let ready_at = cond(&slow, "Ready")["lastTransitionTime"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        secs(&ready_at) - secs(&started_at) >= 3,
        "ready only once nc listened: started {started_at}, ready {ready_at}"
    );

    // postStart ran before the container went on (it waited for the file).
    let log = shared.path().join("hooks.log");
    eventually(Duration::from_secs(20), EVERY, "postStart seen", || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text == "saw-poststart\n").then_some(())
    });

    // A failing postStart: its event, then the container is killed.
    let ev = eventually(Duration::from_secs(20), EVERY, "badhook events", || {
        let ev = events(&s, "badhook");
        ev.iter()
            .any(|(r, m)| r == "Killing" && m == "FailedPostStartHook")
            .then_some(ev)
    });
    let (_, msg) = ev
        .iter()
        .find(|(r, _)| r == "FailedPostStartHook")
        .expect("FailedPostStartHook");
    assert!(
        msg.starts_with(
            "Exec lifecycle hook ([sh -c exit 3]) for Container \"main\" in Pod \"badhook_default("
        ) && msg.ends_with("failed - error: command 'sh -c exit 3' exited with 3: , message: \"\""),
        "{msg}"
    );

    // Deleting `hooks`: preStop, then SIGTERM.
    s.ok(LATEST, &["delete", "pod", "hooks", "--wait=false"]);
    eventually(Duration::from_secs(15), EVERY, "hooks gone", || {
        pod(&s, "hooks").is_none().then_some(())
    });
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "saw-poststart\nprestop\nTERM\n"
    );

    // A container ignoring SIGTERM is SIGKILLed after the grace period: its preStop sleep
    // uses up the 1 s asked for, then SIGTERM gets the 2 s floor (upstream's arithmetic).
    eventually(Duration::from_secs(20), EVERY, "grace Running", || {
        let p = pod(&s, "grace")?;
        (status(&p, "main")?["state"]["running"].is_object()).then_some(())
    });
    let t0 = Instant::now();
    s.ok(
        LATEST,
        &["delete", "pod", "grace", "--grace-period=1", "--wait=false"],
    );
    eventually(Duration::from_secs(15), EVERY, "grace gone", || {
        pod(&s, "grace").is_none().then_some(())
    });
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2800) && took < Duration::from_secs(8),
        "grace deletion took {took:?}"
    );

    // A second deletion with a shorter grace period cuts a running 30 s stop short.
    eventually(Duration::from_secs(20), EVERY, "regrace Running", || {
        let p = pod(&s, "regrace")?;
        (status(&p, "main")?["state"]["running"].is_object()).then_some(())
    });
    let t0 = Instant::now();
    s.ok(LATEST, &["delete", "pod", "regrace", "--wait=false"]);
    eventually(Duration::from_secs(10), EVERY, "regrace stopping", || {
        events(&s, "regrace")
            .iter()
            .any(|(r, m)| r == "Killing" && m == "Stopping container main")
            .then_some(())
    });
    s.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "regrace",
            "--grace-period=1",
            "--wait=false",
        ],
    );
    eventually(Duration::from_secs(15), EVERY, "regrace gone", || {
        pod(&s, "regrace").is_none().then_some(())
    });
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "regrace deletion took {took:?}"
    );
    eprintln!("regrace: deleted twice, gone {took:?} after the first delete");

    s.ok(LATEST, &["delete", "pods", "--all", "--wait=false"]);
    eventually(Duration::from_secs(20), EVERY, "pods gone", || {
        s.ok(LATEST, &["get", "pods", "--no-headers"])
            .trim()
            .is_empty()
            .then_some(())
    });
    // The httpGet preStop hook of `web` reached its server, as kube-lifecycle.
    assert_eq!(
        std::fs::read_to_string(shared.path().join("web.log")).unwrap_or_default(),
        "prestop kube-lifecycle/1.33\n"
    );
    let status = a.stop();
    assert!(status.success(), "{}", a.log());
    eprintln!("probes e2e took {:?}", began.elapsed());
    drop(cleanup);
}
