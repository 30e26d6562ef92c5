//! End-to-end (root, real containerd and Debian's docker-registry): image pulls with
//! credentials from `imagePullSecrets` (directly and through the pod's ServiceAccount) from
//! a registry with htpasswd auth, `imagePullPolicy` honoured, and image garbage collection
//! by age since last use that keeps images in use and the pause image.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use distro_testharness::get::ready_node;
use distro_testharness::node::{build_images, events, pod, NodeCleanup};
use distro_testharness::registry::Registry;
use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(100);

/// Starts a containerd agent named `node` with `extra` flags, the images of `images`
/// (file names in `built`) in its air-gap dir; waits for its Node to be Ready.
fn start_node(
    s: &Server,
    node: &str,
    extra: &[&str],
    built: &Path,
    images: &[&str],
) -> (Agent, NodeCleanup) {
    let mut args = vec!["--node-name", node];
    args.extend_from_slice(extra);
    let a = Agent::start_containerd(bin(), s, &args, |data| {
        let dst = data.join("agent/images");
        std::fs::create_dir_all(&dst).expect("agent images dir");
        for name in images {
            std::fs::copy(built.join(name), dst.join(name)).expect("copy image");
        }
    });
    // All pods here use the host network, so no bridge or nft rule is made.
    let cleanup = NodeCleanup::host_network(a.data_dir());
    ready_node(s, node);
    (a, cleanup)
}

fn waiting(p: &Value) -> (String, String) {
    let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
    (
        w["reason"].as_str().unwrap_or_default().to_string(),
        w["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn pulls_private_images_with_pull_secrets_and_service_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("images");
    build_images(&built, &[]);
    let (user, password) = ("puller", "s3cret-pass");
    let private = Registry::start(dir.path(), Some((user, password)));
    let registry = format!("127.0.0.1:{}", private.port);
    private.push(&built.join("busybox.tar"), "private/busybox", "1");

    let s = Server::start(bin());
    let node = format!("images-pull-{}", std::process::id());
    let (_agent, _cleanup) = start_node(&s, &node, &[], &built, &["pause.tar"]);

    let image = format!("{registry}/private/busybox:1");
    let auth = base64_encode(&format!("{user}:{password}"));
    let config_json = base64_encode(&format!(
        r#"{{"auths":{{"http://{registry}":{{"auth":"{auth}"}}}}}}"#
    ));
    let manifest = |name: &str, extra: &str, policy: &str| {
        format!(
            r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
{extra}  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
    command: ["sleep", "3600"]
"#
        )
    };
    // Credentials first, so the ServiceAccount exists when its pod is admitted.
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: regcred, namespace: default}}
type: kubernetes.io/dockerconfigjson
data: {{.dockerconfigjson: {config_json}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: puller, namespace: default}}
imagePullSecrets: [{{name: regcred}}]
"#
        )),
    );
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(
            &(manifest("anonymous", "", "Always")
                + &manifest(
                    "with-secret",
                    "  imagePullSecrets: [{name: regcred}]\n",
                    "Always",
                )
                + &manifest("via-account", "  serviceAccountName: puller\n", "Always")),
        ),
    );

    // The ServiceAccount admission copied the account's pull secrets into the pod.
    let via = pod_json(&s, "via-account");
    assert_eq!(
        via["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "regcred"}]),
        "{}",
        via["spec"]
    );

    for name in ["with-secret", "via-account"] {
        eventually(
            Duration::from_secs(40),
            EVERY,
            &format!("{name} Running"),
            || (pod_json(&s, name)["status"]["phase"] == "Running").then_some(()),
        );
        let ev = events(&s, name);
        assert!(
            ev.iter()
                .any(|(r, m)| r == "Pulling" && m == &format!("Pulling image {image:?}")),
            "{ev:?}"
        );
        assert!(
            ev.iter().any(|(r, m)| r == "Pulled"
                && m.starts_with(&format!("Successfully pulled image {image:?} in "))
                && m.contains(" including waiting)")),
            "{ev:?}"
        );
    }

    // Without credentials the registry refuses: ErrImagePull (briefly: the next sync is
    // in backoff), then ImagePullBackOff, with the registry's answer in the Failed event.
    eventually(
        Duration::from_secs(30),
        EVERY,
        "anonymous ImagePullBackOff",
        || {
            let w = waiting(&pod_json(&s, "anonymous"));
            (w.0 == "ImagePullBackOff").then_some(w)
        },
    );
    let ev = events(&s, "anonymous");
    let failed = ev
        .iter()
        .find(|(r, m)| r == "Failed" && m.starts_with(&format!("Failed to pull image {image:?}: ")))
        .unwrap_or_else(|| panic!("no Failed event: {ev:?}"));
    assert!(
        failed.1.contains("401") || failed.1.to_lowercase().contains("unauthorized"),
        "{failed:?}"
    );
    assert!(
        ev.iter()
            .any(|(r, m)| r == "Failed" && m == "Error: ErrImagePull"),
        "{ev:?}"
    );
    assert!(ev.iter().any(|(r, _)| r == "BackOff"), "{ev:?}");

    // The image is on the node now: IfNotPresent uses it without credentials, Never too.
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&(manifest("if-not-present", "", "IfNotPresent") + &manifest("never", "", "Never"))),
    );
    for name in ["if-not-present", "never"] {
        eventually(
            Duration::from_secs(30),
            EVERY,
            &format!("{name} Running"),
            || (pod_json(&s, name)["status"]["phase"] == "Running").then_some(()),
        );
        let ev = events(&s, name);
        assert!(
            ev.iter().any(|(r, m)| r == "Pulled"
                && m == &format!("Container image {image:?} already present on machine")),
            "{ev:?}"
        );
    }
}

fn pod_json(s: &Server, name: &str) -> Value {
    pod(s, name).unwrap_or(Value::Null)
}

fn base64_encode(text: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("base64");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn collects_images_unused_past_the_maximum_age() {
    let dir = tempfile::tempdir().unwrap();
    let built = dir.path().join("images");
    build_images(
        &built,
        &["distro.test/gc-used:1", "distro.test/gc-unused:1"],
    );
    let s = Server::start(bin());
    let node = format!("images-gc-{}", std::process::id());
    // The pod exists before the node starts, so its image is in use from the first passes.
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: user, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: distro.test/gc-used:1
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        )),
    );
    let (a, _cleanup) = start_node(
        &s,
        &node,
        &["--image-maximum-gc-age", "4s"],
        &built,
        &[
            "pause.tar",
            "distro.test_gc-used_1.tar",
            "distro.test_gc-unused_1.tar",
        ],
    );
    eventually(Duration::from_secs(30), EVERY, "user Running", || {
        (pod_json(&s, "user")["status"]["phase"] == "Running").then_some(())
    });
    let socket = std::fs::read_to_string(a.data_dir().join("agent/etc/containerd/config.toml"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.trim_start().starts_with("address = "))
                .map(|l| {
                    l.trim()
                        .trim_start_matches("address = ")
                        .trim_matches('"')
                        .to_string()
                })
        })
        .expect("containerd socket in its config");
    let images = || {
        let out = Command::new("ctr")
            .args(["--address", &socket, "-n", "k8s.io", "images", "ls", "-q"])
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let left = eventually(
        Duration::from_secs(30),
        EVERY,
        "the unused image removed",
        || {
            let now = images();
            (!now.contains("distro.test/gc-unused:1")).then_some(now)
        },
    );
    assert!(
        left.contains("distro.test/gc-used:1"),
        "in use: kept\n{left}"
    );
    assert!(
        left.contains("docker.io/rancher/mirrored-pause:3.6"),
        "pause: kept\n{left}"
    );
    // The records persist in the kubelet dir across restarts.
    let state = std::fs::read_to_string(a.data_dir().join("agent/kubelet/image-gc-state.json"))
        .expect("GC state file");
    let state: Value = serde_json::from_str(&state).unwrap();
    assert!(state.as_object().is_some_and(|o| !o.is_empty()), "{state}");
    assert_eq!(pod_json(&s, "user")["status"]["phase"], "Running");
}
