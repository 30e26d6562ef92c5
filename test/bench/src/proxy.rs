//! The service proxy phase (`distro-bench --proxy`, root): a real node (`distro agent
//! --runtime containerd`, its own bridge name so its nftables table is its own) joins a fresh
//! server; N selectorless Services with a hand-made two-endpoint EndpointSlice each are created;
//! then the time from an API change to the rule being in the kernel is measured, with N
//! services in place:
//!
//! - a new Service (its EndpointSlice created first) until its cluster IP is in the table's
//!   `service-ips` map;
//! - an existing service's EndpointSlice emptied until its cluster IP is in
//!   `no-endpoint-services` (an EndpointSlice-only change).
//!
//! The kernel is read with `nft -j list map` every [`POLL`]: that interval is the figures'
//! resolution. No pods run, so nothing but the proxy's work is measured.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hyper::Method;
use tokio::process::{Child, Command};

use crate::client::{run_phase, Conn, Target, Until};

/// How often the kernel's map is read.
const POLL: Duration = Duration::from_millis(10);
/// How long one change may take to show before the bench gives up.
const WAIT: Duration = Duration::from_secs(60);

/// What the proxy phase measured.
pub struct ProxyReport {
    /// Services in place (besides `kubernetes`).
    pub services: usize,
    /// From the last CREATE of the N services until all of them were in the kernel.
    pub initial: Duration,
    /// New Service → its cluster IP in `service-ips`, sorted.
    pub create: Vec<Duration>,
    /// EndpointSlice emptied → its cluster IP in `no-endpoint-services`, sorted.
    pub slice: Vec<Duration>,
    /// The proxy's own time per sync, sorted.
    pub syncs: Vec<Duration>,
}

/// The node: its process and what it leaves in the kernel.
struct Node {
    child: Child,
    table: String,
    data: std::path::PathBuf,
}

impl Node {
    fn spawn(bin: &Path, work: &Path, url: &str, token: &str) -> Result<Node> {
        let data = work.join("proxy-agent");
        std::fs::create_dir_all(&data)?;
        let config = data.join("no-config.yaml");
        std::fs::write(&config, "")?;
        let log = std::fs::File::create(data.join("agent.log"))?;
        // A bridge name of our own (never created: no pods), so the table is ours.
        let bridge = format!("dpb{}", std::process::id() % 1_000_000);
        let child = Command::new(bin)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .args(["--join", url, "--token", token, "--runtime", "containerd"])
            .args(["--node-name", "bench-proxy", "--cni-bridge", &bridge])
            .arg("--kubelet-port=0")
            // The proxy logs each sync's own time at debug: the report shows them.
            .env("DISTRO_LOG", "info,distro_network::proxy=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} agent", bin.display()))?;
        Ok(Node {
            child,
            table: format!("distro-proxy-{bridge}"),
            data,
        })
    }

    /// The proxy's own time per sync (render + diff + `nft -f`), from its debug log.
    fn sync_times(&self) -> Vec<Duration> {
        let log = std::fs::read_to_string(self.data.join("agent.log")).unwrap_or_default();
        let mut v: Vec<Duration> = log
            .lines()
            .filter(|l| l.contains("service rules applied"))
            .filter_map(|l| {
                let plain = strip_ansi(l);
                let rest = &plain[plain.find("took_ms=")? + "took_ms=".len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok().map(Duration::from_millis)
            })
            .collect();
        v.sort();
        v
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.data.join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM (the agent stops its containerd), then removes the node's tables.
    async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        let waited = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        if waited.is_err() {
            self.child.kill().await?;
        }
        for family in ["ip", "ip6"] {
            Command::new("nft")
                .args(["delete", "table", family, &self.table])
                .status()
                .await?;
        }
        Ok(())
    }
}

/// `line` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The keys (`"<ip> . tcp . 80"`) of one map of the node's table.
async fn map_keys(table: &str, map: &str) -> Result<Vec<String>> {
    let out = Command::new("nft")
        .args(["-j", "list", "map", "ip", table, map])
        .output()
        .await
        .context("running nft")?;
    if !out.status.success() {
        return Ok(Vec::new()); // not there yet
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("nft -j output")?;
    let elems = v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["map"]["elem"].as_array())
        .flatten();
    Ok(elems
        .filter_map(|e| {
            // [[{"concat": [ip, proto, port]}, verdict], ...]
            let key = e.get(0)?.get("concat")?.as_array()?;
            Some(
                key.iter()
                    .map(|k| match k {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" . "),
            )
        })
        .collect())
}

/// Polls `map` until it holds `key`; the time since `t0`.
async fn until_key(node: &mut Node, map: &str, key: &str, t0: Instant) -> Result<Duration> {
    loop {
        if map_keys(&node.table, map).await?.iter().any(|k| k == key) {
            return Ok(t0.elapsed());
        }
        if let Some(status) = node.child.try_wait()? {
            bail!("agent exited with {status}:\n{}", node.log_tail());
        }
        if t0.elapsed() > WAIT {
            bail!("{key} not in {map} after {WAIT:?}:\n{}", node.log_tail());
        }
        tokio::time::sleep(POLL).await;
    }
}

fn service(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
}

/// A slice of two made-up endpoints (10.200.x.y), distinct per index.
fn slice(name: &str, i: usize) -> serde_json::Value {
    let (a, b) = ((i / 250) % 250, (i % 250) + 1);
    serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [format!("10.200.{a}.{b}")]},
                      {"addresses": [format!("10.201.{a}.{b}")]}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})
}

fn bytes(v: &serde_json::Value) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

const SVC: &str = "/api/v1/namespaces/default/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

async fn cluster_ip(conn: &mut Conn, name: &str) -> Result<String> {
    let b = conn
        .expect_ok(Method::GET, &format!("{SVC}/{name}"), None)
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&b)?;
    v["spec"]["clusterIP"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("service {name} has no clusterIP"))
}

/// Runs the proxy phase against the server at `target`.
///
/// # Errors
/// If the node cannot start, a request fails, or a change does not show within [`WAIT`].
pub async fn run(
    bin: &Path,
    work: &Path,
    server_data: &Path,
    target: &Target,
    services: usize,
    samples: usize,
) -> Result<ProxyReport> {
    let token = std::fs::read_to_string(server_data.join("server").join("token"))
        .context("reading the server's join token")?;
    let mut node = Node::spawn(bin, work, &target.url(), token.trim())?;
    let result = measure(&mut node, target, services, samples).await;
    let syncs = node.sync_times();
    let stopped = node.stop().await;
    let mut report = result?;
    report.syncs = syncs;
    stopped?;
    Ok(report)
}

async fn measure(
    node: &mut Node,
    target: &Target,
    services: usize,
    samples: usize,
) -> Result<ProxyReport> {
    let mut admin = target.connect().await?;
    let kubernetes = format!(
        "{} . tcp . 443",
        cluster_ip(&mut admin, "kubernetes").await?
    );
    crate::progress("proxy: waiting for the node's proxy table");
    until_key(node, "service-ips", &kubernetes, Instant::now()).await?;

    crate::progress(&format!(
        "proxy: creating {services} services with endpoints"
    ));
    let name = |i: usize| format!("svc-{i:05}");
    let made = run_phase(
        target,
        2,
        8,
        Until::Count(services),
        Arc::new(move |i| (Method::POST, SLICES.to_string(), bytes(&slice(&name(i), i)))),
    )
    .await?;
    let made_svc = run_phase(
        target,
        2,
        8,
        Until::Count(services),
        Arc::new(move |i| (Method::POST, SVC.to_string(), bytes(&service(&name(i))))),
    )
    .await?;
    if made.errors + made_svc.errors > 0 {
        bail!(
            "creating services failed: {:?} {:?}",
            made.first_error,
            made_svc.first_error
        );
    }
    let t0 = Instant::now();
    loop {
        if map_keys(&node.table, "service-ips").await?.len() > services {
            break;
        }
        if t0.elapsed() > WAIT {
            bail!(
                "the {services} services did not reach the kernel:\n{}",
                node.log_tail()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    let initial = t0.elapsed();

    crate::progress(&format!("proxy: {samples} changes of each kind"));
    let mut create = Vec::with_capacity(samples);
    let mut emptied = Vec::with_capacity(samples);
    for i in 0..samples {
        let probe = format!("probe-{i}");
        admin
            .expect_ok(Method::POST, SLICES, bytes(&slice(&probe, services + i)))
            .await?;
        let t0 = Instant::now();
        let b = admin
            .expect_ok(Method::POST, SVC, bytes(&service(&probe)))
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&b)?;
        let ip = v["spec"]["clusterIP"].as_str().unwrap_or_default();
        create.push(until_key(node, "service-ips", &format!("{ip} . tcp . 80"), t0).await?);

        let target_svc = name(i);
        let ip = cluster_ip(&mut admin, &target_svc).await?;
        let path = format!("{SLICES}/{target_svc}");
        let mut current: serde_json::Value =
            serde_json::from_slice(&admin.expect_ok(Method::GET, &path, None).await?)?;
        current["endpoints"] = serde_json::json!([]);
        let t0 = Instant::now();
        admin.expect_ok(Method::PUT, &path, bytes(&current)).await?;
        emptied.push(
            until_key(
                node,
                "no-endpoint-services",
                &format!("{ip} . tcp . 80"),
                t0,
            )
            .await?,
        );
    }
    create.sort();
    emptied.sort();
    Ok(ProxyReport {
        services,
        initial,
        create,
        slice: emptied,
        syncs: Vec::new(),
    })
}

impl ProxyReport {
    /// The phase's lines of the report.
    pub fn print(&self) {
        let q = |v: &[Duration], q: f64| {
            let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
            v.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "service proxy, {} services: all in the kernel {:.0} ms after the last CREATE",
            self.services,
            self.initial.as_secs_f64() * 1000.0
        );
        for (what, v) in [
            ("new Service → rules in the kernel", &self.create),
            ("EndpointSlice change → rules in the kernel", &self.slice),
            (
                "the proxy's own time per sync (render, diff, nft -f)",
                &self.syncs,
            ),
        ] {
            println!(
                "  {what}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} samples, {} ms polling)",
                q(v, 0.5),
                q(v, 0.99),
                q(v, 1.0),
                v.len(),
                POLL.as_millis()
            );
        }
    }
}
