//! Simulated-node scale phases: `distro agent --runtime fake` processes join the server under
//! test, then (1) a Deployment's time to Available on a few nodes, and (2) scheduler
//! throughput, pods bound per second, for thousands of pods created concurrently through the
//! bench's HTTP client on many nodes.
//!
//! Binding is observed by polling the unbound pods (`fieldSelector=spec.nodeName=`) every
//! [`POLL`]: the figure's resolution is that interval.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use tokio::process::{Child, Command};

use crate::client::{run_phase, Conn, Outcome, Target, Until};

/// How often progress (Ready nodes, availability, unbound pods) is polled.
const POLL: Duration = Duration::from_millis(100);

/// How long any one wait may take before the bench gives up.
const WAIT: Duration = Duration::from_secs(300);

/// What the scale phases measured.
pub struct ScaleReport {
    /// Nodes and replicas of the Deployment phase.
    pub deploy_nodes: usize,
    /// Replicas of the Deployment.
    pub deploy_replicas: usize,
    /// Time from the Deployment's CREATE to `availableReplicas == replicas`.
    pub deploy_available: Duration,
    /// Nodes of the scheduler phase.
    pub sched_nodes: usize,
    /// Time for the scheduler phase's agent to have every node Ready.
    pub sched_join: Duration,
    /// The pod CREATE phase.
    pub create: Outcome,
    /// Time from the first pod CREATE until every pod was bound.
    pub bound: Duration,
    /// Time from the first pod CREATE until every pod was Running.
    pub running: Duration,
    /// RSS of the many-node agent once every pod was Running.
    pub agent_rss: crate::server::Memory,
}

/// A `distro agent --runtime fake` serving simulated nodes.
struct Agent {
    child: Child,
    pid: u32,
}

impl Agent {
    fn spawn(
        bin: &Path,
        dir: &Path,
        url: &str,
        token: &str,
        prefix: &str,
        nodes: usize,
    ) -> Result<Agent> {
        let data = dir.join(format!("agent-{prefix}"));
        std::fs::create_dir_all(&data)?;
        let config = data.join("no-config.yaml");
        std::fs::write(&config, "")?;
        let log = std::fs::File::create(data.join("agent.log"))?;
        let child = Command::new(bin)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--join", url, "--token", token, "--runtime", "fake"])
            .args(["--node-name", prefix, "--fake-nodes", &nodes.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} agent", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("agent exited at once"))?;
        Ok(Agent { child, pid })
    }

    async fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await?;
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(s) => {
                s?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("agent ignored SIGTERM")
            }
        }
    }
}

fn body(v: &serde_json::Value) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

async fn get_json(conn: &mut Conn, path: &str) -> Result<serde_json::Value> {
    let b = conn.expect_ok(Method::GET, path, None).await?;
    serde_json::from_slice(&b).with_context(|| format!("GET {path}: not JSON"))
}

/// Polls `check` on `conn` every [`POLL`] until it returns true; fails if the agent exits or
/// [`WAIT`] passes first.
async fn until<F>(what: &str, agent: &mut Agent, conn: &mut Conn, mut check: F) -> Result<()>
where
    F: for<'c> FnMut(&'c mut Conn) -> Check<'c>,
{
    let start = Instant::now();
    loop {
        if check(conn).await? {
            return Ok(());
        }
        if let Some(status) = agent.child.try_wait()? {
            bail!("agent exited with {status} while waiting for {what}");
        }
        if start.elapsed() > WAIT {
            bail!("timed out after {WAIT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One poll of [`until`].
type Check<'c> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'c>>;

async fn ready_nodes(conn: &mut Conn, prefix: &str) -> Result<usize> {
    let nodes = get_json(
        conn,
        "/api/v1/nodes?labelSelector=node.distro.io%2Ffake%3Dtrue",
    )
    .await?;
    Ok(nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["metadata"]["name"]
                .as_str()
                .is_some_and(|s| s.starts_with(&format!("{prefix}-")))
                && n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count())
}

async fn create_namespace(conn: &mut Conn, ns: &str) -> Result<()> {
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    conn.expect_ok(Method::POST, "/api/v1/namespaces", body(&v))
        .await?;
    Ok(())
}

/// Runs both scale phases against the server at `target` (token in `server_data`).
///
/// # Errors
/// If an agent cannot start or join, a request fails, or a wait times out.
#[allow(clippy::too_many_arguments)] // one call site, each figure its own knob
pub async fn run(
    bin: &Path,
    work: &Path,
    server_data: &Path,
    target: &Target,
    threads: usize,
    conns_per_task: usize,
    deploy: (usize, usize),
    sched: (usize, usize),
) -> Result<ScaleReport> {
    let token = std::fs::read_to_string(server_data.join("server").join("token"))
        .context("reading the server's join token")?;
    let token = token.trim();
    let url = target.url();
    let mut admin = target.connect().await?;
    let (deploy_nodes, deploy_replicas) = deploy;
    let (sched_nodes, pods) = sched;

    // Phase 1: a Deployment on a few simulated nodes.
    crate::progress(&format!(
        "scale: {deploy_nodes} simulated nodes, Deployment of {deploy_replicas} replicas"
    ));
    let mut a = Agent::spawn(bin, work, &url, token, "bench-a", deploy_nodes)?;
    until("simulated nodes Ready", &mut a, &mut admin, |admin| {
        Box::pin(async move { Ok(ready_nodes(admin, "bench-a").await? == deploy_nodes) })
    })
    .await?;
    create_namespace(&mut admin, "scale-deploy").await?;
    let d = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": deploy_replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    });
    let t0 = Instant::now();
    admin
        .expect_ok(
            Method::POST,
            "/apis/apps/v1/namespaces/scale-deploy/deployments",
            body(&d),
        )
        .await?;
    until("the Deployment Available", &mut a, &mut admin, |admin| {
        Box::pin(async move {
            let d = get_json(
                admin,
                "/apis/apps/v1/namespaces/scale-deploy/deployments/web",
            )
            .await?;
            Ok(d["status"]["availableReplicas"].as_u64() == Some(deploy_replicas as u64))
        })
    })
    .await?;
    let deploy_available = t0.elapsed();
    admin
        .expect_ok(
            Method::DELETE,
            "/apis/apps/v1/namespaces/scale-deploy/deployments/web",
            None,
        )
        .await?;
    a.stop().await?;
    for i in 0..deploy_nodes {
        admin
            .expect_ok(Method::DELETE, &format!("/api/v1/nodes/bench-a-{i}"), None)
            .await?;
    }

    // Phase 2: scheduler throughput on many nodes.
    crate::progress(&format!(
        "scale: {sched_nodes} simulated nodes joining, then {pods} pods"
    ));
    let t0 = Instant::now();
    let mut b = Agent::spawn(bin, work, &url, token, "bench-b", sched_nodes)?;
    until("simulated nodes Ready", &mut b, &mut admin, |admin| {
        Box::pin(async move { Ok(ready_nodes(admin, "bench-b").await? == sched_nodes) })
    })
    .await?;
    let sched_join = t0.elapsed();
    create_namespace(&mut admin, "scale-sched").await?;
    let start = Instant::now();
    let create = run_phase(
        target,
        threads,
        conns_per_task,
        Until::Count(pods),
        Arc::new(|i| {
            let p = serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p-{i:05}"), "labels": {"app": "sched"}},
                "spec": {"containers": [{"name": "c", "image": "pause",
                         "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
            });
            (
                Method::POST,
                "/api/v1/namespaces/scale-sched/pods".to_string(),
                body(&p),
            )
        }),
    )
    .await?;
    if create.errors > 0 {
        bail!(
            "{} pod creates failed, first: {}",
            create.errors,
            create.first_error.clone().unwrap_or_default()
        );
    }
    until("every pod bound", &mut b, &mut admin, |admin| {
        Box::pin(async move {
            let unbound = get_json(
                admin,
                "/api/v1/namespaces/scale-sched/pods?fieldSelector=spec.nodeName%3D",
            )
            .await?;
            Ok(unbound["items"].as_array().is_some_and(Vec::is_empty))
        })
    })
    .await?;
    let bound = start.elapsed();
    until("every pod Running", &mut b, &mut admin, |admin| {
        Box::pin(async move {
            let not_running = get_json(
                admin,
                "/api/v1/namespaces/scale-sched/pods?fieldSelector=status.phase!%3DRunning&limit=1",
            )
            .await?;
            Ok(not_running["items"].as_array().is_some_and(Vec::is_empty))
        })
    })
    .await?;
    let running = start.elapsed();
    let agent_rss = crate::server::memory(b.pid)?;
    b.stop().await?;
    Ok(ScaleReport {
        deploy_nodes,
        deploy_replicas,
        deploy_available,
        sched_nodes,
        sched_join,
        create,
        bound,
        running,
        agent_rss,
    })
}

/// Where agents keep their data: beside the server's.
pub fn work_dir(server_data: &Path) -> PathBuf {
    server_data
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| server_data.to_path_buf())
}
