//! Helpers for tests that run a real containerd node (root, containerd; `Agent::start_containerd`
//! or a server that is a node): the test images in the node's air-gap directory, and a guard
//! that removes what the node leaves behind (distro, its containerd, shims and containers,
//! mounts, runtime dir, bridge and masquerade rule) when the test ends, passed or failed.
//! Shared here so real-containerd test files need not copy them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Agent, Server, LATEST};

/// The busybox test image (`hack/build-test-images`).
pub const BUSYBOX: &str = "distro.test/busybox:latest";

/// The repository's `hack/build-test-images`.
fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-test-images")
}

/// Builds the test images once per `target_tmp` (cargo's `CARGO_TARGET_TMPDIR`), under a
/// file lock as several test binaries may want them at once, and returns their directory.
///
/// # Panics
/// When the script fails (missing busybox-static or gcc): the message says which.
pub fn test_images(target_tmp: &Path) -> PathBuf {
    let dir = target_tmp.join("test-images");
    std::fs::create_dir_all(&dir).expect("images dir");
    let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
    lock.lock().expect("locking the images dir");
    let done = dir.join(".built");
    if !done.exists() {
        build_images(&dir, &[]);
        std::fs::write(&done, "").expect("marker");
    }
    dir
}

/// Builds the test images (plus `extra` busybox variants, `EXTRA_IMAGES`) into `dir`, every
/// time (for tests that want images of their own; [`test_images`] builds the shared ones once).
///
/// # Panics
/// When the script fails (missing busybox-static or gcc): the message says which.
pub fn build_images(dir: &Path, extra: &[&str]) {
    let out = Command::new("bash")
        .arg(build_script())
        .arg(dir)
        .env("EXTRA_IMAGES", extra.join(" "))
        .output()
        .expect("running hack/build-test-images");
    assert!(
        out.status.success(),
        "build-test-images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the test images of `target_tmp` ([`test_images`]) into `<data>/agent/images/`
/// (air-gap import).
pub fn install_images(target_tmp: &Path, data: &Path) {
    let src = test_images(target_tmp);
    let dst = data.join("agent/images");
    std::fs::create_dir_all(&dst).expect("agent images dir");
    for e in std::fs::read_dir(&src).expect("images").flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with('.') {
            std::fs::copy(e.path(), dst.join(&name)).expect("copy image");
        }
    }
}

/// The CNI plugin's nftables table.
const NFT_TABLE: &str = "distro-cni";

/// Whether the CNI plugin's nftables table exists (take this before starting the node: a
/// table the test made is removed by [`NodeCleanup`], a shared one only loses this test's rule).
pub fn nft_table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", NFT_TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// On drop: kills the distro process running on `data` (`server` or `agent`) first (or its
/// kubelet restarts and remounts what is cleaned up), then the containerd, shims and
/// containers of that data dir, unmounts what is under it and its runtime dir, removes the
/// runtime dir, and removes the test's pod bridge and masquerade rule. Only processes naming
/// this data dir, its socket or config are touched.
pub struct NodeCleanup {
    /// The node's data dir.
    pub data: PathBuf,
    /// The pods' bridge (`--cni-bridge`) this test's node made (a unique name); empty when
    /// its pods use only the host network (no bridge or rule is made then).
    pub bridge: String,
    /// Whether the CNI table existed before the test ([`nft_table_exists`]); `true` keeps the
    /// table (tests of one binary run in parallel on it) and removes only this bridge's rule.
    pub table_existed: bool,
}

impl NodeCleanup {
    /// A cleanup for a node whose pods all use the host network (no bridge or nft rule).
    pub fn host_network(data: PathBuf) -> NodeCleanup {
        NodeCleanup {
            data,
            bridge: String::new(),
            table_existed: true,
        }
    }

    /// The node's containerd socket, once its config is written.
    pub fn socket(&self) -> Option<PathBuf> {
        Some(state_dir(&self.data)?.parent()?.join("containerd.sock"))
    }
}

/// containerd's state dir of the node with data dir `data` (from the config it wrote).
fn state_dir(data: &Path) -> Option<PathBuf> {
    let config = std::fs::read_to_string(data.join("agent/etc/containerd/config.toml")).ok()?;
    let line = config.lines().find(|l| l.starts_with("state = "))?;
    Some(PathBuf::from(
        line.trim_start_matches("state = ").trim_matches('"'),
    ))
}

/// containerd's run dir of the node with data dir `data` (from the config it wrote).
fn run_dir(data: &Path) -> Option<PathBuf> {
    state_dir(data)?.parent().map(Path::to_path_buf)
}

/// `(pid, ppid, cmdline)` of every process.
fn processes() -> Vec<(i32, i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, cmd));
    }
    out
}

/// Lazily unmounts every mount point under `dir`, deepest first: containerd's snapshot,
/// rootfs and shm mounts.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

/// The names of containerd's pod sandbox namespaces (`/var/run/netns/cni-*`) that processes
/// `pids` are in: a node killed with its pods running leaves them mounted otherwise.
fn pod_netns(pids: &[i32]) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ns_of = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours: Vec<(u64, u64)> = pids
        .iter()
        .filter_map(|p| ns_of(Path::new(&format!("/proc/{p}/ns/net"))))
        .collect();
    std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cni-"))
        .filter(|e| ns_of(&e.path()).is_some_and(|id| ours.contains(&id)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Kills the containerd of data dir `data`, the shims of its socket and their containers
/// (removing their pod network namespaces), then unmounts what is under `data` and its run
/// dir and removes the run dir (the distro process must be gone already). Does nothing before containerd's config is written.
pub(crate) fn remove_runtime(data: &Path) {
    let Some(run) = run_dir(data) else {
        return;
    };
    kill_containerd(
        &run.join("containerd.sock"),
        &data.join("agent/etc/containerd/config.toml"),
    );
    unmount_under(data);
    unmount_under(&run);
    let _ = std::fs::remove_dir_all(&run);
}

/// Kills (SIGKILL) the containerd started with config file `config`, the shims serving
/// `socket` and their containers, and removes those containers' pod network namespaces.
/// Only processes naming this socket or config are touched.
pub fn kill_containerd(socket: &Path, config: &Path) {
    let socket = socket.to_string_lossy().to_string();
    let config = config.to_string_lossy().to_string();
    let procs = processes();
    let shims: Vec<i32> = procs
        .iter()
        .filter(|(_, _, c)| c.contains("containerd-shim") && c.contains(&socket))
        .map(|(p, _, _)| *p)
        .collect();
    let mut victims: Vec<i32> = procs
        .iter()
        .filter(|(_, pp, _)| shims.contains(pp))
        .map(|(p, _, _)| *p)
        .collect();
    victims.extend(&shims);
    victims.extend(
        procs
            .iter()
            .filter(|(_, _, c)| c.contains("containerd --config") && c.contains(&config))
            .map(|(p, _, _)| *p),
    );
    // Taken before the kill: the containers' sandbox namespaces containerd would have removed.
    let pod_netns = pod_netns(&victims);
    for pid in victims {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    std::thread::sleep(Duration::from_millis(200));
    for name in pod_netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
}

/// Removes `bridge` and, from the shared table, only that bridge's masquerade rule (the
/// whole table when the test created it).
fn remove_network(bridge: &str, table_existed: bool) {
    let _ = Command::new("ip")
        .args(["link", "del", bridge])
        .stderr(Stdio::null())
        .status();
    // The service proxy's and the policy tables are named after the (unique) bridge.
    if !bridge.is_empty() && bridge != "cni0" {
        for (family, table) in [
            ("ip", format!("distro-proxy-{bridge}")),
            ("ip6", format!("distro-proxy-{bridge}")),
            ("inet", format!("distro-policy-{bridge}")),
        ] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &table])
                .stderr(Stdio::null())
                .status();
        }
    }
    if !table_existed {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", NFT_TABLE])
            .status();
        return;
    }
    let Ok(out) = Command::new("nft")
        .args(["-a", "list", "chain", "inet", NFT_TABLE, "postrouting"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.contains(&format!("masquerade {bridge}\"")) {
            if let Some(handle) = line.rsplit("# handle ").next() {
                let _ = Command::new("nft")
                    .args(["delete", "rule", "inet", NFT_TABLE, "postrouting", "handle"])
                    .arg(handle.trim())
                    .status();
            }
        }
    }
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        // distro first, or its kubelet restarts and remounts what is cleaned up here.
        for (pid, _, cmd) in processes() {
            let distro = cmd.contains(" agent ") || cmd.contains(" server ");
            if distro && cmd.contains(&data) && !cmd.starts_with("containerd") {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        remove_runtime(&self.data);
        if !self.bridge.is_empty() {
            remove_network(&self.bridge, self.table_existed);
            // A killed node leaves its DNS link behind.
            let _ = Command::new("ip")
                .args(["link", "del", &dns_link(&self.bridge)])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The DNS link of the node whose pods use `bridge` (a test's unique name).
pub fn dns_link(bridge: &str) -> String {
    let tail: String = bridge.chars().skip(2).take(13).collect();
    format!("dn{tail}")
}

/// A cluster DNS address for the node whose pods use `bridge`, outside every range distro
/// uses by default.
pub fn dns_ip(bridge: &str) -> String {
    let h = bridge
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.254.{}.{}", (h >> 8) % 256, h % 250 + 2)
}

/// Starts a containerd agent of `bin` joined to `server` as node `node`, its pods on the
/// test's own `bridge` (plus `extra` flags), with the test images of `target_tmp`, and returns
/// it with its cleanup (whether the CNI table existed is taken before the agent starts). Bind
/// both in one `let (agent, cleanup)`: the cleanup, declared last, is dropped first, as it
/// needs the agent's data dir, which dropping the agent removes.
pub fn start_agent(
    bin: &Path,
    server: &Server,
    target_tmp: &Path,
    node: &str,
    bridge: &str,
    extra: &[&str],
) -> (Agent, NodeCleanup) {
    let table_existed = nft_table_exists();
    let mut args = vec!["--node-name", node, "--cni-bridge", bridge];
    // The node's DNS server on a link and address of this test's own, never the machine's
    // `distro-dns` and 10.43.0.10.
    let (link, ip) = (dns_link(bridge), dns_ip(bridge));
    if !extra.iter().any(|a| a.starts_with("--dns-interface")) {
        args.extend(["--dns-interface", &link, "--cluster-dns", &ip]);
    }
    args.extend_from_slice(extra);
    let agent =
        Agent::start_containerd(bin, server, &args, |data| install_images(target_tmp, data));
    let cleanup = NodeCleanup {
        data: agent.data_dir(),
        bridge: bridge.to_string(),
        table_existed,
    };
    (agent, cleanup)
}

/// Pod `name` (default namespace) as JSON, or `None` while kubectl cannot get it.
pub fn pod(s: &Server, name: &str) -> Option<serde_json::Value> {
    let out = s.kubectl(LATEST, &["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// `(reason, message)` of the Events about object `name` (default namespace).
pub fn events(s: &Server, name: &str) -> Vec<(String, String)> {
    let e = s.json(
        LATEST,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ],
    );
    e["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["reason"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A server and one containerd node joined to it. Dropping it removes the node's
/// containers, mounts and network first, then stops the agent and the server.
pub struct Node {
    /// Cleans up the node's runtime (dropped first).
    pub cleanup: NodeCleanup,
    /// The agent.
    pub agent: Agent,
    /// The server.
    pub server: Server,
    /// The node's name.
    pub name: String,
}

impl Node {
    /// Starts a server of `bin` (with `server_args`) and a containerd node named
    /// `<prefix>-<pid>` with the test images of `target_tmp` ([`install_images`]), and waits
    /// until the node is Ready.
    pub fn start(bin: &Path, target_tmp: &Path, prefix: &str, server_args: &[&str]) -> Node {
        let server = Server::start_with(bin, server_args);
        let name = format!("{prefix}-{}", std::process::id());
        let bridge = format!("dl{}", std::process::id() % 10_000_000);
        let (agent, cleanup) = start_agent(bin, &server, target_tmp, &name, &bridge, &[]);
        let node = Node {
            cleanup,
            agent,
            server,
            name,
        };
        crate::get::ready_node(&node.server, &node.name);
        node
    }
}

/// The host PID of the first container of pod `ns/pod` on the node of containerd socket
/// `socket` (from `ctr tasks ls`), to enter the pod's network namespace.
///
/// # Panics
/// When the pod has no container ID yet or containerd has no task for it.
pub fn pod_pid(socket: &Path, s: &Server, ns: &str, pod: &str) -> String {
    let p = s.json(LATEST, &["get", "pod", "-n", ns, pod]);
    let id = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|c| c.strip_prefix("containerd://"))
        .expect("containerID")
        .to_string();
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "tasks", "ls"])
        .output()
        .expect("ctr");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&id))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no task for {pod}"))
}

/// A hostNetwork busybox pod `name` bound to `node` by name, running `script` with `sh -c`;
/// `container_extra` lines (indented 4) go under the container.
pub fn host_pod_manifest(name: &str, node: &str, script: &str, container_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
{container_extra}    command: ["sh", "-c", {script:?}]
"#
    )
}

/// `(size, available)` bytes of the filesystem holding `path`, as df reports them.
///
/// # Panics
/// When df fails or prints something else.
pub fn df(path: &Path) -> (u64, u64) {
    let out = Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(path)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text
        .lines()
        .nth(1)
        .expect("df line")
        .split_whitespace()
        .map(|n| n.parse::<u64>().expect("df number"));
    (
        nums.next().expect("df size"),
        nums.next().expect("df available"),
    )
}

/// `kubectl logs -f <args>` (kubectl 1.`minor`) on its own process; its lines arrive on the
/// channel, `None` at EOF. The caller kills the child (by its handle) when done.
pub fn follow_logs(
    s: &Server,
    minor: u32,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<Option<String>>,
) {
    use std::io::BufRead;
    let mut child = Command::new(crate::kubectl_path(minor))
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["logs", "-f"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    (child, rx)
}

/// Containers (`kind` `container`) or sandboxes (`sandbox`) containerd has for the pod
/// `uid` (via `ctr`, not through distro).
pub fn runtime_containers(socket: &Path, uid: &str, kind: &str) -> Vec<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io", "containers", "ls", "-q"])
        .arg(format!(
            "labels.\"io.kubernetes.pod.uid\"=={uid},labels.\"io.cri-containerd.kind\"=={kind}"
        ))
        .output()
        .expect("ctr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
