//! The real-node phase (root, containerd): one `distro agent --runtime containerd` joins the
//! server under test with the test images in its air-gap dir, then
//! (1) its idle RSS once it settled, and that of its supervised containerd separately, and
//! (2) pod startup latency, apply → Running with the image present, for N pods created in a
//! burst (each pod's time from its CREATE to the first poll that sees it Running).
//!
//! Running is observed by listing the namespace's pods every [`POLL`]: a latency's resolution
//! is that interval plus the LIST's own time. The pods use the pod network (a bridge named
//! for this run), so sandbox network setup counts, as for real pods.
//!
//! Cleanup: the pods are deleted and awaited before the agent stops (a stopped agent leaves
//! containers running by design); then containerd's runtime dir, the bridge and its
//! masquerade rule are removed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use tokio::process::{Child, Command};

use distro_testharness::node::{dns_link, NodeCleanup};

use crate::client::{Conn, Target};
use crate::server::{memory, Memory};

/// How often pod and node state is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(300);
/// The namespace of the measured pods.
const NS: &str = "bench-node";
/// The node's name.
const NODE: &str = "bench-node";

/// What the node phase is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct NodePlan {
    /// Pods per batch.
    pub pods: usize,
    /// How long the node idles before its RSS is read.
    pub idle: Duration,
    /// Pods created per second in the paced batch.
    pub rate: f64,
}

/// One batch of pods: each pod's CREATE → Running.
pub struct Batch {
    /// Each pod's CREATE → Running, sorted.
    pub startup: Vec<Duration>,
    /// First CREATE → every pod Running.
    pub all_running: Duration,
}

impl Batch {
    /// The `q` quantile of the pods' startup latencies (nearest rank).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.startup.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.startup.len() as f64).ceil() as usize).clamp(1, self.startup.len());
        self.startup[rank - 1]
    }
}

/// What the node phase measured.
pub struct NodeReport {
    /// What was asked.
    pub plan: NodePlan,
    /// Spawn → Node Ready.
    pub ready: Duration,
    /// The agent's RSS when idle (no pods).
    pub agent_idle: Memory,
    /// Its containerd's RSS when idle.
    pub containerd_idle: Memory,
    /// Every pod created at once: what a node does with more work than its CPUs can start in
    /// a second.
    pub burst: Batch,
    /// The agent's RSS with the burst's pods running.
    pub agent_busy: Memory,
    /// The same number of pods created at `plan.rate` per second: each pod's own latency, as
    /// upstream's pod startup SLO measures it under a steady creation rate.
    pub paced: Batch,
}

/// Whether this machine can run the phase: root and containerd on PATH.
pub fn available() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Err("needs root".into());
    }
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
            .unwrap_or(false)
    };
    if !on_path("containerd") || !on_path("runc") {
        return Err("needs containerd and runc on PATH".into());
    }
    Ok(())
}

/// The PID of `parent`'s child process named `comm`.
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && name == comm).then_some(pid)
    })
}

async fn get_json(conn: &mut Conn, path: &str) -> Result<serde_json::Value> {
    let b = conn.expect_ok(Method::GET, path, None).await?;
    serde_json::from_slice(&b).with_context(|| format!("GET {path}: not JSON"))
}

/// The running agent, its data dir and the bridge it was told to use.
///
/// Dropping it, also when the bench is interrupted, runs the harness's cleanup of a test node
/// after the agent is killed (fields drop in order): the containerd, shims and containers of
/// this data dir (pods started while the last ones were being deleted outlive an agent by
/// design), its mounts and runtime dir, the bridge and its masquerade rule, the proxy and
/// policy tables named after it and the DNS link.
struct Node {
    child: Child,
    pid: u32,
    data: PathBuf,
    _cleanup: NodeCleanup,
}

impl Node {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the node's agent exited ({status})\n{}", self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, then the cleanup (on a blocking thread: it waits for processes and `nft`).
    async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
        Ok(())
    }
}

/// Builds the test images into the agent's air-gap dir with `hack/build-test-images`
/// (found beside the bench's working directory, the repository root under `hack/bench`).
async fn install_images(data: &Path) -> Result<()> {
    let dir = data.join("agent/images");
    tokio::fs::create_dir_all(&dir).await?;
    let out = Command::new("bash")
        .arg("hack/build-test-images")
        .arg(&dir)
        .output()
        .await
        .context("running hack/build-test-images (run the bench from the repository root)")?;
    if !out.status.success() {
        bail!(
            "hack/build-test-images: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn pod_body(i: usize) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": format!("p-{i:04}"), "namespace": NS},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": NODE},
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main",
                    "image": "distro.test/busybox:latest",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "3600"],
                }],
            },
        })
        .to_string(),
    )
}

/// Fails once [`WAIT`] passed since `start`, or when the agent died.
fn check(what: &str, node: &mut Node, start: Instant) -> Result<()> {
    node.check_running()?;
    if start.elapsed() > WAIT {
        bail!("{what}: not after {WAIT:?}\n{}", node.log_tail());
    }
    Ok(())
}

/// Runs the node phase against the server at `target` (token in `server_data`).
///
/// # Errors
/// The agent does not start or join, a request fails, or a wait times out.
pub async fn run(
    bin: &Path,
    work: &Path,
    server_data: &Path,
    target: &Target,
    plan: NodePlan,
) -> Result<NodeReport> {
    let token = std::fs::read_to_string(server_data.join("server").join("token"))
        .context("reading the server's join token")?;
    let data = work.join("node");
    install_images(&data).await?;
    let config = data.join("no-config.yaml");
    std::fs::write(&config, "")?;
    let bridge = format!("dbench{}", std::process::id() % 100_000);
    let table_existed = distro_testharness::node::nft_table_exists();
    let log = std::fs::File::create(data.join("agent.log"))?;
    let spawned = Instant::now();
    let child = Command::new(bin)
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--join", &target.url(), "--token", token.trim()])
        .args(["--runtime", "containerd", "--node-name", NODE])
        .args(["--cni-bridge", &bridge, "--kubelet-port", "0"])
        // As the test harness: a bench machine's disk may be fuller than upstream's 15 %
        // imagefs threshold, and DiskPressure would evict the measured pods.
        .arg("--eviction-hard=")
        .arg(format!("--dns-interface={}", dns_link(&bridge)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} agent", bin.display()))?;
    let pid = child.id().ok_or_else(|| anyhow!("agent exited at once"))?;
    let mut node = Node {
        child,
        pid,
        _cleanup: NodeCleanup {
            data: data.clone(),
            bridge,
            table_existed,
        },
        data,
    };
    let result = measure(&mut node, target, plan, spawned).await;
    let gone = delete_all(&mut node, target).await;
    node.stop().await?;
    gone?;
    result
}

/// Deletes the namespace's pods and waits until the kubelet removed them, so no container
/// outlives the agent and the next batch starts on an idle node.
async fn delete_all(node: &mut Node, target: &Target) -> Result<()> {
    let mut admin = target.connect().await?;
    let _ = admin
        .request(
            Method::DELETE,
            &format!("/api/v1/namespaces/{NS}/pods?gracePeriodSeconds=1"),
            None,
        )
        .await;
    let start = Instant::now();
    loop {
        let list = get_json(&mut admin, &format!("/api/v1/namespaces/{NS}/pods")).await?;
        if list["items"].as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        check("pods deleted", node, start)?;
        tokio::time::sleep(POLL).await;
    }
}

async fn measure(
    node: &mut Node,
    target: &Target,
    plan: NodePlan,
    spawned: Instant,
) -> Result<NodeReport> {
    let mut admin = target.connect().await?;
    crate::progress("node: distro agent --runtime containerd joining");
    loop {
        if let Ok((status, body)) = admin
            .request(Method::GET, &format!("/api/v1/nodes/{NODE}"), None)
            .await
        {
            let n: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let ready = n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if status.is_success() && ready {
                break;
            }
        }
        check("node Ready", node, spawned)?;
        tokio::time::sleep(POLL).await;
    }
    let ready = spawned.elapsed();
    crate::progress(&format!(
        "node: Ready in {:.2} s; idling {:.0} s",
        ready.as_secs_f64(),
        plan.idle.as_secs_f64()
    ));
    tokio::time::sleep(plan.idle).await;
    node.check_running()?;
    let agent_idle = memory(node.pid)?;
    let containerd = child_named(node.pid, "containerd")
        .ok_or_else(|| anyhow!("the agent has no containerd child"))?;
    let containerd_idle = memory(containerd)?;

    let mut conn = target.connect().await?;
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    conn.expect_ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(Bytes::from(ns.to_string())),
    )
    .await?;
    crate::progress(&format!(
        "node: {} pods at once, apply → Running",
        plan.pods
    ));
    let burst = batch(node, &mut conn, plan.pods, Duration::ZERO).await?;
    let agent_busy = memory(node.pid)?;
    crate::progress("node: deleting them");
    delete_all(node, target).await?;
    let every = Duration::from_secs_f64(1.0 / plan.rate.max(0.01));
    crate::progress(&format!(
        "node: {} pods at {} per second, apply → Running",
        plan.pods, plan.rate
    ));
    let paced = batch(node, &mut conn, plan.pods, every).await?;
    Ok(NodeReport {
        plan,
        ready,
        agent_idle,
        containerd_idle,
        burst,
        agent_busy,
        paced,
    })
}

/// Creates `pods` pods, one every `every` (zero: back to back), and measures each one's
/// CREATE → Running while the others are still being created.
async fn batch(node: &mut Node, conn: &mut Conn, pods: usize, every: Duration) -> Result<Batch> {
    let mut created: Vec<Option<Instant>> = vec![None; pods];
    let mut running: Vec<Option<Duration>> = vec![None; pods];
    let first = Instant::now();
    let mut next = 0;
    let mut last_poll: Option<Instant> = None;
    loop {
        // Create what is due, then poll when a poll is due.
        while next < pods && first + every * next as u32 <= Instant::now() {
            created[next] = Some(Instant::now());
            conn.expect_ok(
                Method::POST,
                &format!("/api/v1/namespaces/{NS}/pods"),
                Some(pod_body(next)),
            )
            .await?;
            next += 1;
        }
        if last_poll.is_none_or(|t| t.elapsed() >= POLL) {
            last_poll = Some(Instant::now());
            let list = get_json(conn, &format!("/api/v1/namespaces/{NS}/pods")).await?;
            let seen = Instant::now();
            for p in list["items"].as_array().into_iter().flatten() {
                if p["status"]["phase"] != "Running" {
                    continue;
                }
                let i = p["metadata"]["name"]
                    .as_str()
                    .and_then(|n| n.strip_prefix("p-"))
                    .and_then(|n| n.parse::<usize>().ok());
                if let Some((i, at)) = i.and_then(|i| Some((i, created.get(i).copied()??))) {
                    running[i].get_or_insert(seen.duration_since(at));
                }
            }
            let left = running.iter().filter(|r| r.is_none()).count();
            if left == 0 {
                break;
            }
            check(&format!("{left} of {pods} pods Running"), node, first)?;
        }
        let due = [
            (next < pods).then(|| first + every * next as u32),
            last_poll.map(|t| t + POLL),
        ];
        if let Some(wake) = due.into_iter().flatten().min() {
            tokio::time::sleep_until(wake.into()).await;
        }
    }
    let all_running = first.elapsed();
    let mut startup: Vec<Duration> = running.into_iter().flatten().collect();
    startup.sort_unstable();
    Ok(Batch {
        startup,
        all_running,
    })
}

/// The table rows of the node phase.
pub fn rows(r: &NodeReport) -> Vec<crate::Row> {
    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    let mut rows = vec![
        crate::row("node: agent spawn → Node Ready", secs(r.ready))
            .note("distro agent --runtime containerd, images imported"),
        crate::row(
            format!(
                "node: idle RSS agent (after {:.0} s)",
                r.plan.idle.as_secs_f64()
            ),
            crate::mb(r.agent_idle.rss),
        )
        .note(format!("peak {}", crate::mb(r.agent_idle.peak))),
        crate::row(
            "node: idle RSS containerd",
            crate::mb(r.containerd_idle.rss),
        )
        .note(format!(
            "agent + containerd {}",
            crate::mb(r.agent_idle.rss + r.containerd_idle.rss)
        )),
    ];
    let batches = [
        (format!("{} pods at once", r.plan.pods), &r.burst),
        (format!("{} pods, {}/s", r.plan.pods, r.plan.rate), &r.paced),
    ];
    for (what, b) in batches {
        let (p50, p99) = (b.quantile(0.5), b.quantile(0.99));
        rows.push(
            crate::row(format!("node: pod startup p50 ({what})"), secs(p50))
                .target("< 1 s", p50 < Duration::from_secs(1))
                .note("apply → Running, image present, pod network"),
        );
        rows.push(
            crate::row(format!("node: pod startup p99 ({what})"), secs(p99))
                .target("< 2 s", p99 < Duration::from_secs(2))
                .note(format!(
                    "all Running {} after the first CREATE",
                    secs(b.all_running)
                )),
        );
    }
    rows.push(crate::row(
        "node: agent RSS with the pods",
        crate::mb(r.agent_busy.rss),
    ));
    rows
}

/// `--node-only`: a fresh `distro server --disable-agent` and the node phase alone, printed
/// as its own table (the API phases take minutes and need no containerd).
///
/// # Errors
/// As [`run`], and the server not starting.
pub async fn run_alone(bin: &Path, tmp: Option<&Path>, plan: NodePlan) -> Result<()> {
    let (mut srv, spawned) = crate::server::Server::spawn(bin, tmp)?;
    srv.wait_for_kubeconfig(crate::POLL, Duration::from_secs(30))
        .await?;
    let target = Target::from_kubeconfig(&srv.kubeconfig)?;
    crate::wait_ready(&mut srv, &target, spawned).await?;
    let data = srv.data_dir();
    let report = run(bin, &crate::scale::work_dir(&data), &data, &target, plan).await;
    let _ = srv.stop().await;
    let report = report?;
    println!(
        "machine: {} CPUs; 1-min load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::load_average()
    );
    for r in rows(&report) {
        println!(
            "{:<44}  {:>9}  {:<8}  {:<4}  {}",
            r.metric, r.value, r.target, r.verdict, r.note
        );
    }
    Ok(())
}
