//! End-to-end (root, real containerd and runc): `kubectl exec`, `attach`, `cp` and
//! `port-forward` through the API server and the kubelet into real containers, with the
//! oldest and newest kubectl (1.27 speaks SPDY/3.1 end to end; 1.33 speaks WebSocket v5
//! for exec/attach/cp and SPDY tunnelled in WebSocket for port-forward, which the kubelet
//! translates), and 1.28–1.32 for exec, across where the protocols switch; `kubectl debug` with an
//! ephemeral container targeting another's process namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distro_testharness::node::{start_agent, BUSYBOX};
use distro_testharness::{eventually, kubectl_path, Server, LATEST};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

fn manifest(node: &str, versions: &[u32]) -> String {
    let mut out = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: box, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo hello-through-port-forward > /www/index.html && exec httpd -f -p 8080 -h /www"]
  - name: side
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
"#
    );
    // One attachable one-shot pod per kubectl: it reads a line from its stdin and answers.
    for v in versions {
        out.push_str(&format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: talk-{v}, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: IfNotPresent
    stdin: true
    stdinOnce: true
    command: ["sh", "-c", "read line; echo got:$line"]
"#
        ));
    }
    out
}

/// Runs kubectl 1.`v` with the server's kubeconfig (for what the harness helpers cannot:
/// files, a pseudo-terminal, a long-running port-forward).
fn kubectl(s: &Server, v: u32) -> Command {
    let mut c = Command::new(kubectl_path(v));
    c.env("KUBECONFIG", &s.kubeconfig);
    c
}

fn exec_checks(s: &Server, v: u32) {
    let began = Instant::now();
    // Exact output, and the remote exit code as kubectl's own.
    let out = s.kubectl(
        v,
        &["exec", "-v=6", "box", "-c", "main", "--", "echo", "hi"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "1.{v} exec: {log}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "1.{v}");
    // 1.30+ really spoke WebSocket v5 (a failed upgrade would fall back to SPDY silently).
    assert_eq!(
        log.contains("The subprotocol is v5.channel.k8s.io"),
        v >= 30,
        "1.{v}: {log}"
    );
    let out = s.kubectl(
        v,
        &[
            "exec",
            "box",
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo oops >&2; exit 3",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "1.{v}: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("oops"),
        "1.{v}: {out:?}"
    );
    // The other container, by name.
    let host = s.ok(
        v,
        &["exec", "box", "-c", "side", "--", "cat", "/proc/1/cmdline"],
    );
    assert!(host.starts_with("sleep"), "1.{v}: {host}");
    // A few MB through stdin and back: stdin's end reaches `cat` (SPDY FIN / v5 CLOSE).
    let line = "0123456789abcdefghijklmnopqrstuvwxyz-the-quick-brown-fox\n";
    let input = line.repeat(3 * 1024 * 1024 / line.len());
    let out = s.ok_stdin(
        v,
        &["exec", "-i", "box", "-c", "main", "--", "cat"],
        Some(&input),
    );
    assert!(
        out.len() == input.len() && out == input,
        "1.{v}: {} bytes back of {}",
        out.len(),
        input.len()
    );
    // A terminal: kubectl needs one itself, so it runs under script(1).
    let cmd = format!("{} exec -it box -c main -- tty", kubectl_path(v).display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "1.{v} tty: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("kubectl 1.{v} exec checks: {:?}", began.elapsed());
}

fn cp_checks(s: &Server, v: u32, dir: &Path) {
    let local = dir.join(format!("up-{v}.bin"));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let remote = format!("box:/tmp/copied-{v}");
    let out = kubectl(s, v)
        .current_dir(dir)
        .args(["cp", "-c", "main"])
        .arg(local.file_name().unwrap())
        .arg(&remote)
        .output()
        .unwrap();
    assert!(out.status.success(), "1.{v} cp up: {out:?}");
    let size = s.ok(
        v,
        &[
            "exec",
            "box",
            "-c",
            "main",
            "--",
            "wc",
            "-c",
            &format!("/tmp/copied-{v}"),
        ],
    );
    assert!(size.trim_start().starts_with("300000"), "1.{v}: {size}");
    let back = format!("down-{v}.bin");
    let out = kubectl(s, v)
        .current_dir(dir)
        .args(["cp", "-c", "main", &remote, &back])
        .output()
        .unwrap();
    assert!(out.status.success(), "1.{v} cp down: {out:?}");
    assert!(
        std::fs::read(dir.join(&back)).unwrap() == data,
        "1.{v}: copied back differs"
    );
}

fn port_forward_checks(s: &Server, v: u32) {
    let mut child = kubectl(s, v)
        .args([
            "port-forward",
            "-v=6",
            "pod/box",
            ":8080",
            "--address",
            "127.0.0.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let port: u16 = first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("1.{v} port-forward printed {first:?}: {err}")
        });
    // Two connections, each a round trip through the forwarded port.
    for _ in 0..2 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        let _ = c.read_to_string(&mut resp);
        assert!(
            resp.starts_with("HTTP/1.") && resp.contains("hello-through-port-forward"),
            "1.{v}: {resp}"
        );
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let mut log = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut log);
    let _ = child.wait();
    // 1.31+ tunnelled SPDY through WebSocket (it too falls back silently).
    assert_eq!(
        log.contains("negotiated protocol: portforward.k8s.io") && log.contains("tunneling_dialer"),
        v >= 31,
        "1.{v}: {log}"
    );
}

fn attach_checks(s: &Server, v: u32) {
    let pod = format!("talk-{v}");
    eventually(Duration::from_secs(30), EVERY, "talk Running", || {
        let t = s.ok(LATEST, &["get", "pod", &pod, "--no-headers"]);
        t.contains("Running").then_some(())
    });
    let out = s.ok_stdin(v, &["attach", "-i", &pod, "-c", "main"], Some("hello\n"));
    assert!(out.contains("got:hello"), "1.{v} attach: {out}");
}

fn debug_checks(s: &Server, v: u32) {
    // An ephemeral container sharing main's process namespace: its `ps` shows httpd. Input
    // stays open until the answer is seen, as a person's would (containerd detaches output
    // when the input of a container without stdinOnce ends).
    let name = format!("dbg-{v}");
    let mut child = kubectl(s, v)
        .args(["debug", "-i", "box", "--image", BUSYBOX])
        .args([
            "--image-pull-policy",
            "IfNotPresent",
            "--target",
            "main",
            "-c",
            &name,
        ])
        .args(["--", "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl debug");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ps\n").unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("httpd -f -p 8080")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "1.{v} debug: no httpd in {seen:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    stdin.write_all(b"exit\n").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "1.{v} debug: {status}");
    // The kubelet reports it among the pod's ephemeral container statuses.
    eventually(Duration::from_secs(10), EVERY, "ephemeral status", || {
        let pod = s.json(LATEST, &["get", "pod", "box"]);
        let statuses = pod["status"]["ephemeralContainerStatuses"]
            .as_array()?
            .clone();
        let st = statuses.into_iter().find(|c| c["name"] == name.as_str())?;
        (st["state"]["terminated"]["exitCode"] == 0).then_some(())
    });
}

/// Clients other than kubectl may speak the older WebSocket channel protocols (v4 here),
/// which containerd speaks itself: relayed to it unchanged. curl makes the handshake.
fn websocket_v4_relay(s: &Server, dir: &Path) {
    let write = |field: &str, file: &str| {
        let b64 = s.ok(
            LATEST,
            &[
                "config",
                "view",
                "--raw",
                "-o",
                &format!("jsonpath={{{field}}}"),
            ],
        );
        let mut child = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b64.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        std::fs::write(dir.join(file), out.stdout).unwrap();
    };
    write(".users[0].user.client-certificate-data", "admin.crt");
    write(".users[0].user.client-key-data", "admin.key");
    write(".clusters[0].cluster.certificate-authority-data", "ca.crt");
    let url = format!(
        "{}/api/v1/namespaces/default/pods/box/exec?container=main&command=echo&command=relayed-v4&stdout=true",
        s.server_url().unwrap()
    );
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["--http1.1", "-sS", "-i", "-N", "--max-time", "5"])
        .args([
            "--cacert",
            "ca.crt",
            "--cert",
            "admin.crt",
            "--key",
            "admin.key",
        ])
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args(["-H", "Sec-WebSocket-Version: 13"])
        .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
        .args(["-H", "Sec-WebSocket-Protocol: v4.channel.k8s.io"])
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 101")
            && text.contains("sec-websocket-protocol: v4.channel.k8s.io")
            && text.contains("relayed-v4"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exec_attach_cp_and_port_forward_with_old_and_new_kubectl() {
    let began = Instant::now();
    let s = Server::start(bin());
    let node = format!("exec-{}", std::process::id());
    let bridge = format!("de{}", std::process::id() % 10_000_000);
    let (a, cleanup) = start_agent(
        bin(),
        &s,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &node,
        &bridge,
        &[],
    );
    let both = [27, LATEST];
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(&manifest(&node, &both)));
    eventually(Duration::from_secs(60), EVERY, "box 2/2 Running", || {
        let t = s.ok(LATEST, &["get", "pod", "box", "--no-headers"]);
        (t.contains("2/2") && t.contains("Running")).then_some(())
    });
    eprintln!("pods running after {:?}", began.elapsed());

    // Upstream's option validation, before any kubelet is asked.
    let err = s.fails(
        LATEST,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/box/exec?command=ls&stdout=true",
        ],
    );
    assert!(
        err.contains("a container name must be specified for pod box, choose one of: [main side]"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    for v in both {
        exec_checks(&s, v);
        cp_checks(&s, v, dir.path());
        port_forward_checks(&s, v);
        attach_checks(&s, v);
        debug_checks(&s, v);
    }
    // Every other kubectl, across where the protocols switch: 1.29 (last SPDY-only), 1.30
    // (WebSocket exec), 1.31 (WebSocket port-forward).
    for v in [28, 29, 30, 31, 32] {
        exec_checks(&s, v);
    }
    port_forward_checks(&s, 31);
    websocket_v4_relay(&s, dir.path());
    eprintln!("exec test took {:?}", began.elapsed());
    // The cleanup first: it reads the agent's data dir, which dropping `a` removes.
    drop(cleanup);
    drop(a);
}
