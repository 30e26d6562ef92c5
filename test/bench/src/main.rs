//! `distro-bench`: measures the API server against DESIGN.md's "Performance targets" (run it
//! through `hack/bench`). A benchmark, not a test: it prints a table and fails only if the
//! measurement itself went wrong (server did not start, requests failed).
//!
//! It starts `distro server --disable-agent` on a fresh temp data dir and a free port, then
//! measures, in order: spawn → first `200` from `/readyz`; idle RSS; CREATE of ConfigMaps over
//! 2 tasks × 16 keep-alive HTTPS connections; GET of one ConfigMap (2 × 16 connections, timed);
//! LIST of a 1,000-ConfigMap namespace (2 × 8 connections, timed); a few sequential LISTs of
//! all ConfigMaps and of a `limit=500` first page; RSS after the load. Clients authenticate with
//! the admin client certificate from the kubeconfig the server writes.
//!
//! Then, unless `--skip-scale`, the simulated-node phases (`scale.rs`): a Deployment's time to
//! Available on 10 `distro agent --runtime fake` nodes, and scheduler throughput for 3,000
//! pods on 100 simulated nodes.
//!
//! Then, as root with containerd, unless `--skip-node` (`node.rs`): a real node's idle RSS
//! (agent and containerd apart) and pod startup latency, apply → Running, for 100 pods created
//! at once and for 100 created at `--node-pod-rate` per second.
//!
//! Or, with `--throughput` (`throughput.rs`), only pod-to-pod TCP throughput across two
//! nodes over the overlay against the bare veth path.
//!
//! Limits: the load generator shares the machine (and its cores) with the server, as wrk did
//! for DESIGN.md's upstream figures; the table shows both processes' CPU time per phase so the
//! split is visible.

mod client;
mod node;
mod proxy;
mod scale;
mod server;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hyper::Method;

use client::{run_phase, MakeRequest, Outcome, Target, Until};
use server::Server;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Measure distro's API server against the DESIGN.md performance targets")]
struct Opts {
    /// The distro binary to benchmark (a release build).
    #[arg(
        long,
        env = "DISTRO_BENCH_BIN",
        default_value = "target/release/distro"
    )]
    bin: PathBuf,
    /// Small smoke run: 500 objects, 100 in the LIST namespace, 1 s phases, 1 s idle.
    #[arg(long)]
    quick: bool,
    /// ConfigMaps to create in namespace `bench` (default 10000; 500 with --quick).
    #[arg(long)]
    objects: Option<usize>,
    /// ConfigMaps in namespace `bench1k`, the LIST target (default 1000; 100 with --quick).
    #[arg(long)]
    list_objects: Option<usize>,
    /// Seconds each timed GET/LIST phase runs (default 5; 1 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds to let the server idle before reading its idle RSS (default 3; 1 with --quick).
    #[arg(long)]
    idle: Option<f64>,
    /// Client runtime threads, and tasks per phase (wrk's threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where to make the temp data dir (default: the system temp dir). Put it on the disk you
    /// want to measure: every write is fsynced before it is acknowledged.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Skip the simulated-node phases (Deployment on 10 nodes, 3,000 pods on 100 nodes).
    #[arg(long)]
    skip_scale: bool,
    /// Simulated nodes for the scheduler phase (default 100; 10 with --quick).
    #[arg(long)]
    sched_nodes: Option<usize>,
    /// Pods for the scheduler phase (default 3000; 300 with --quick).
    #[arg(long)]
    sched_pods: Option<usize>,
    /// Skip the real-node phase (root and containerd: idle RSS of a containerd node, pod
    /// startup latency).
    #[arg(long)]
    skip_node: bool,
    /// Run only the real-node phase, against its own fresh server.
    #[arg(long, conflicts_with = "skip_node")]
    node_only: bool,
    /// Pods of the real-node phase (default 100; 10 with --quick).
    #[arg(long)]
    node_pods: Option<usize>,
    /// Pods created per second in the real-node phase's paced batch (it also starts the same
    /// number at once). The default is a rate a 2-core node keeps up with: containerd, its
    /// shims and runc cost about 0.2 s of CPU per pod, and at 5 per second such a node falls
    /// behind and latencies pile up as in the burst.
    #[arg(long, default_value_t = 2.0)]
    node_pod_rate: f64,
    /// Measure only the service proxy (root, containerd): rule update latency with this many
    /// services (`hack/bench --proxy 1000`); see proxy.rs.
    #[arg(long, value_name = "SERVICES")]
    proxy: Option<usize>,
    /// Measure only TCP throughput pod to pod across two nodes (VXLAN, host-gw) against the
    /// bare veth path (root, containerd); see throughput.rs.
    #[arg(long)]
    throughput: bool,
}

/// Resolves on SIGINT or SIGTERM (`timeout hack/bench` sends the latter), so an interrupted
/// run drops, and so stops and cleans up, what it started.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// What one run does, resolved from [`Opts`].
#[derive(Debug)]
struct Plan {
    bin: PathBuf,
    objects: usize,
    list_objects: usize,
    duration: Duration,
    idle: Duration,
    threads: usize,
    tmp_dir: Option<PathBuf>,
    quick: bool,
    /// Simulated nodes and replicas of the Deployment phase; `None`: skip the scale phases.
    deploy: Option<(usize, usize)>,
    /// Simulated nodes and pods of the scheduler phase.
    sched: (usize, usize),
    /// Pods of the real-node phase; `None`: skip it.
    node_pods: Option<usize>,
    /// Only the real-node phase.
    node_only: bool,
    /// How long the real node settles before its idle RSS is read.
    node_idle: Duration,
    /// Pods per second of the real-node phase's paced batch.
    node_rate: f64,
}

/// Connections per task for CREATE and GET (2 tasks × 16, as wrk -t2 for DESIGN.md's figures).
const CONNS_PER_TASK: usize = 16;
/// Connections per task for the timed LIST (16 in all with the default 2 tasks).
const LIST_CONNS_PER_TASK: usize = 8;
/// Sequential requests for the LIST-everything and first-page measurements.
const SEQUENTIAL_LISTS: usize = 5;
/// Page size of the paginated LIST.
const PAGE: usize = 500;
/// How often start-up is polled.
const POLL: Duration = Duration::from_millis(2);

impl Plan {
    fn from_opts(o: Opts) -> Result<Plan> {
        let secs = |v: Option<f64>, full: f64, quick: f64, what: &str| -> Result<Duration> {
            let s = v.unwrap_or(if o.quick { quick } else { full });
            Duration::try_from_secs_f64(s).map_err(|e| anyhow!("--{what} {s}: {e}"))
        };
        let plan = Plan {
            objects: o.objects.unwrap_or(if o.quick { 500 } else { 10_000 }),
            list_objects: o.list_objects.unwrap_or(if o.quick { 100 } else { 1_000 }),
            duration: secs(o.duration, 5.0, 1.0, "duration")?,
            idle: secs(o.idle, 3.0, 1.0, "idle")?,
            threads: o.threads,
            bin: o.bin,
            tmp_dir: o.tmp_dir,
            quick: o.quick,
            deploy: (!o.skip_scale).then_some(if o.quick { (3, 20) } else { (10, 100) }),
            sched: (
                o.sched_nodes.unwrap_or(if o.quick { 10 } else { 100 }),
                o.sched_pods.unwrap_or(if o.quick { 300 } else { 3000 }),
            ),
            node_pods: (!o.skip_node)
                .then(|| o.node_pods.unwrap_or(if o.quick { 10 } else { 100 })),
            node_only: o.node_only,
            node_idle: Duration::from_secs(if o.quick { 3 } else { 10 }),
            node_rate: o.node_pod_rate,
        };
        if plan.objects == 0 || plan.list_objects == 0 || plan.threads == 0 {
            bail!("--objects, --list-objects and --threads must be at least 1");
        }
        Ok(plan)
    }
}

fn main() -> ExitCode {
    // Started by the throughput phase as its TCP sink or source inside a namespace.
    if let Some(code) = throughput::helper_main() {
        return code;
    }
    let opts = Opts::parse();
    if opts.throughput {
        return match throughput::run(&opts.bin, opts.tmp_dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("distro-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let proxy_services = opts.proxy;
    let plan = match Plan::from_opts(opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("distro-bench: {e:#}");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("distro-bench: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(services) = proxy_services {
        return rt.block_on(run_proxy(&plan, services));
    }
    if plan.node_only {
        let node_plan = node::NodePlan {
            pods: plan.node_pods.unwrap_or(100),
            idle: plan.node_idle,
            rate: plan.node_rate,
        };
        let alone = node::run_alone(&plan.bin, plan.tmp_dir.as_deref(), node_plan);
        let result = rt.block_on(async {
            tokio::select! {
                r = alone => r,
                _ = interrupted() => Err(anyhow!("interrupted")),
            }
        });
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("distro-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = rt.block_on(async {
        tokio::select! {
            r = run(&plan) => r,
            // Dropping `run` drops its `Server`, which stops the server and removes the dir.
            _ = interrupted() => Err(anyhow!("interrupted")),
        }
    });
    match result {
        Ok(report) => {
            report.print(&plan);
            if report.errors > 0 {
                eprintln!(
                    "distro-bench: {} requests failed; figures are not valid",
                    report.errors
                );
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("distro-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// CPU time both processes used during a phase.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    server: Duration,
    bench: Duration,
}

/// Reads both processes' CPU clocks, so a phase's share can be taken as a difference.
struct CpuMeter {
    pid: String,
    ticks: u64,
}

impl CpuMeter {
    fn read(&self) -> Result<Cpu> {
        Ok(Cpu {
            server: server::cpu_time(&self.pid, self.ticks)?,
            bench: server::cpu_time("self", self.ticks)?,
        })
    }

    fn since(&self, before: Cpu) -> Result<Cpu> {
        let now = self.read()?;
        Ok(Cpu {
            server: now.server.saturating_sub(before.server),
            bench: now.bench.saturating_sub(before.bench),
        })
    }
}

/// A load phase's result and the CPU it cost.
struct Phase {
    outcome: Outcome,
    cpu: Cpu,
}

/// Sequential requests' latencies and the last response size.
struct Sequential {
    latencies_us: Vec<u32>,
    bytes: usize,
    items: usize,
}

/// Everything the table shows.
struct Report {
    ready: Duration,
    idle: server::Memory,
    create: Phase,
    create_1k: Phase,
    get: Phase,
    list_1k: Phase,
    list_all: Sequential,
    first_page: Sequential,
    after: server::Memory,
    exit: String,
    errors: u64,
    load_start: String,
    load_end: String,
    scale: Option<scale::ScaleReport>,
    node: Option<node::NodeReport>,
}

async fn run(plan: &Plan) -> Result<Report> {
    let load_start = load_average();
    let (mut srv, spawned) = Server::spawn(&plan.bin, plan.tmp_dir.as_deref())?;
    srv.wait_for_kubeconfig(POLL, Duration::from_secs(30))
        .await?;
    let target = Target::from_kubeconfig(&srv.kubeconfig)?;
    let ready = wait_ready(&mut srv, &target, spawned).await?;
    progress(&format!(
        "server pid {} ready in {:.3} s; idling {:.0} s",
        srv.pid(),
        ready.as_secs_f64(),
        plan.idle.as_secs_f64()
    ));

    tokio::time::sleep(plan.idle).await;
    srv.check_running()?;
    let idle = server::memory(srv.pid())?;

    let mut admin = target.connect().await?;
    for ns in ["bench", "bench1k"] {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
        });
        admin
            .expect_ok(Method::POST, "/api/v1/namespaces", Some(json(&body)))
            .await?;
    }
    let cpu = CpuMeter {
        pid: srv.pid().to_string(),
        ticks: server::clock_ticks(),
    };

    progress(&format!("CREATE {} ConfigMaps in bench", plan.objects));
    let create = phase(
        &target,
        &cpu,
        plan.threads,
        CONNS_PER_TASK,
        Until::Count(plan.objects),
        Arc::new(|i| create_request("bench", i)),
    )
    .await?;
    progress(&format!(
        "CREATE {} ConfigMaps in bench1k",
        plan.list_objects
    ));
    let create_1k = phase(
        &target,
        &cpu,
        plan.threads,
        CONNS_PER_TASK,
        Until::Count(plan.list_objects),
        Arc::new(|i| create_request("bench1k", i)),
    )
    .await?;

    let one = format!("/api/v1/namespaces/bench/configmaps/{}", cm_name(0));
    admin.expect_ok(Method::GET, &one, None).await?;
    progress("GET one ConfigMap");
    let get = phase(
        &target,
        &cpu,
        plan.threads,
        CONNS_PER_TASK,
        Until::Time(plan.duration),
        Arc::new(move |_| (Method::GET, one.clone(), None)),
    )
    .await?;

    let list_1k_path = "/api/v1/namespaces/bench1k/configmaps";
    // Every namespace also holds the controllers' `kube-root-ca.crt` ConfigMap.
    let items = count_items(&admin.expect_ok(Method::GET, list_1k_path, None).await?)?;
    if items != plan.list_objects && items != plan.list_objects + 1 {
        bail!(
            "{list_1k_path} lists {items} items, expected {}",
            plan.list_objects
        );
    }
    progress(&format!("LIST bench1k ({} ConfigMaps)", plan.list_objects));
    let list_1k = phase(
        &target,
        &cpu,
        plan.threads,
        LIST_CONNS_PER_TASK,
        Until::Time(plan.duration),
        Arc::new(move |_| (Method::GET, list_1k_path.to_string(), None)),
    )
    .await?;

    progress("sequential LISTs of bench");
    let list_all = sequential(&mut admin, "/api/v1/namespaces/bench/configmaps").await?;
    if list_all.items != plan.objects && list_all.items != plan.objects + 1 {
        bail!(
            "LIST of namespace bench returned {} items, expected {}",
            list_all.items,
            plan.objects
        );
    }
    let first_page = sequential(
        &mut admin,
        &format!("/api/v1/namespaces/bench/configmaps?limit={PAGE}"),
    )
    .await?;
    if first_page.items != PAGE.min(plan.objects) {
        bail!("LIST limit={PAGE} returned {} items", first_page.items);
    }

    srv.check_running()?;
    let after = server::memory(srv.pid())?;
    drop(admin);
    let scale = match plan.deploy {
        Some(deploy) => {
            let data = srv.data_dir();
            Some(
                scale::run(
                    &plan.bin,
                    &scale::work_dir(&data),
                    &data,
                    &target,
                    plan.threads,
                    CONNS_PER_TASK,
                    deploy,
                    plan.sched,
                )
                .await?,
            )
        }
        None => None,
    };
    let node = match (plan.node_pods, node::available()) {
        (Some(pods), Ok(())) => {
            let data = srv.data_dir();
            let work = scale::work_dir(&data);
            let node_plan = node::NodePlan {
                pods,
                idle: plan.node_idle,
                rate: plan.node_rate,
            };
            Some(node::run(&plan.bin, &work, &data, &target, node_plan).await?)
        }
        (Some(_), Err(why)) => {
            progress(&format!("real-node phase skipped: {why}"));
            None
        }
        (None, _) => None,
    };
    let exit = match srv.stop().await {
        Ok(status) if status.success() => "clean".to_string(),
        Ok(status) => format!("{status}"),
        Err(e) => format!("{e:#}"),
    };
    let errors = [&create, &create_1k, &get, &list_1k]
        .iter()
        .map(|p| p.outcome.errors)
        .sum();
    for (name, p) in [
        ("CREATE", &create),
        ("CREATE bench1k", &create_1k),
        ("GET", &get),
        ("LIST", &list_1k),
    ] {
        if let Some(e) = &p.outcome.first_error {
            eprintln!("{name}: {} errors, first: {e}", p.outcome.errors);
        }
    }
    Ok(Report {
        ready,
        idle,
        create,
        create_1k,
        get,
        list_1k,
        list_all,
        first_page,
        after,
        exit,
        errors,
        load_start,
        load_end: load_average(),
        scale,
        node,
    })
}

/// `--proxy`: only the service proxy phase, on its own server.
async fn run_proxy(plan: &Plan, services: usize) -> ExitCode {
    let result = async {
        let (mut srv, spawned) = Server::spawn(&plan.bin, plan.tmp_dir.as_deref())?;
        srv.wait_for_kubeconfig(POLL, Duration::from_secs(30))
            .await?;
        let target = Target::from_kubeconfig(&srv.kubeconfig)?;
        wait_ready(&mut srv, &target, spawned).await?;
        let data = srv.data_dir();
        let samples = if plan.quick { 5 } else { 20 };
        let report = proxy::run(
            &plan.bin,
            &scale::work_dir(&data),
            &data,
            &target,
            services,
            samples,
        )
        .await;
        srv.stop().await?;
        report
    };
    match tokio::select! {
        r = result => r,
        _ = interrupted() => Err(anyhow!("interrupted")),
    } {
        Ok(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("distro-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One line on stderr per phase, so a long run shows where it is (and whom to attach to).
fn progress(what: &str) {
    eprintln!("distro-bench: {what}");
}

/// Polls `/readyz` every [`POLL`] on a fresh connection until it answers `200`; returns the
/// time since `spawned`.
async fn wait_ready(srv: &mut Server, target: &Target, spawned: Instant) -> Result<Duration> {
    let deadline = Duration::from_secs(30);
    loop {
        if let Ok(mut conn) = target.connect().await {
            if let Ok((status, _)) = conn.request(Method::GET, "/readyz", None).await {
                if status.is_success() {
                    return Ok(spawned.elapsed());
                }
            }
        }
        srv.check_running()?;
        if spawned.elapsed() > deadline {
            bail!("/readyz not 200 after {deadline:?}\n{}", srv.log_tail(30));
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn phase(
    target: &Target,
    cpu: &CpuMeter,
    tasks: usize,
    conns_per_task: usize,
    until: Until,
    make: Arc<MakeRequest>,
) -> Result<Phase> {
    let before = cpu.read()?;
    let outcome = run_phase(target, tasks, conns_per_task, until, make).await?;
    Ok(Phase {
        outcome,
        cpu: cpu.since(before)?,
    })
}

async fn sequential(conn: &mut client::Conn, path: &str) -> Result<Sequential> {
    let mut latencies_us = Vec::with_capacity(SEQUENTIAL_LISTS);
    let mut body = Bytes::new();
    for _ in 0..SEQUENTIAL_LISTS {
        let t0 = Instant::now();
        body = conn.expect_ok(Method::GET, path, None).await?;
        latencies_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    latencies_us.sort_unstable();
    Ok(Sequential {
        latencies_us,
        bytes: body.len(),
        items: count_items(&body)?,
    })
}

/// The 1-minute load average, or "?" where /proc/loadavg is unreadable.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".to_string())
}

fn cm_name(i: usize) -> String {
    format!("cm-{i:05}")
}

fn create_request(ns: &str, i: usize) -> (Method, String, Option<Bytes>) {
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": cm_name(i), "labels": {"app": "bench"}},
        "data": {"index": i.to_string(), "payload": "0123456789abcdef0123456789abcdef"},
    });
    (
        Method::POST,
        format!("/api/v1/namespaces/{ns}/configmaps"),
        Some(json(&body)),
    )
}

fn json(v: &serde_json::Value) -> Bytes {
    Bytes::from(v.to_string())
}

fn count_items(body: &[u8]) -> Result<usize> {
    let v: serde_json::Value = serde_json::from_slice(body).context("LIST response is not JSON")?;
    v["items"]
        .as_array()
        .map(Vec::len)
        .ok_or_else(|| anyhow!("LIST response has no items array"))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The simulated-node rows.
fn scale_rows(s: &scale::ScaleReport) -> Vec<Row> {
    let pods = s.create.latencies_us.len();
    let per_sec = pods as f64 / s.bound.as_secs_f64().max(1e-9);
    vec![
        row(
            format!(
                "Deployment {} replicas Available ({} sim. nodes)",
                s.deploy_replicas, s.deploy_nodes
            ),
            secs(s.deploy_available),
        )
        .note("CREATE → availableReplicas, through RS controller, scheduler, fake kubelet"),
        row(
            format!("{} sim. nodes joined and Ready", s.sched_nodes),
            secs(s.sched_join),
        )
        .note("one agent process: CSR per node, registration, Lease"),
        row(format!("CREATE {pods} pods"), rate(s.create.rate())).note(format!(
            "{} over {}",
            secs(s.create.elapsed),
            "2 × 16 conns"
        )),
        row(
            format!("scheduler: {pods} pods on {} nodes", s.sched_nodes),
            format!("{per_sec:.0} pods/s"),
        )
        .note(format!(
            "all bound {} after the first CREATE (±{} ms polling); all Running {}",
            secs(s.bound),
            100,
            secs(s.running)
        )),
        row(
            format!("agent RSS ({} nodes, {pods} pods)", s.sched_nodes),
            mb(s.agent_rss.rss),
        ),
    ]
}

/// One table row.
struct Row {
    metric: String,
    value: String,
    target: String,
    verdict: &'static str,
    note: String,
}

fn row(metric: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        metric: metric.into(),
        value: value.into(),
        target: String::new(),
        verdict: "",
        note: String::new(),
    }
}

impl Row {
    fn target(mut self, target: impl Into<String>, met: bool) -> Row {
        self.target = target.into();
        self.verdict = if met { "ok" } else { "MISS" };
        self
    }

    fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A response size: kB below a megabyte, so small pages do not show as 0.0 MB.
fn size(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        mb(bytes)
    }
}

fn rate(r: f64) -> String {
    let n = r.round() as u64;
    let s = n.to_string();
    // Thousands separators, as DESIGN.md writes its figures.
    let groups: Vec<String> = s
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect();
    format!("{} req/s", groups.join(","))
}

fn cpu_note(p: &Phase) -> String {
    let n = p.outcome.latencies_us.len().max(1) as f64;
    format!(
        "CPU server {:.2} s ({:.0} µs/req), bench {:.2} s; {} errors",
        p.cpu.server.as_secs_f64(),
        p.cpu.server.as_secs_f64() * 1e6 / n,
        p.cpu.bench.as_secs_f64(),
        p.outcome.errors
    )
}

impl Report {
    fn rows(&self, plan: &Plan) -> Vec<Row> {
        let ready_s = self.ready.as_secs_f64();
        let idle_mb = self.idle.rss as f64 / 1e6;
        let c = &self.create.outcome;
        let g = &self.get.outcome;
        let l = &self.list_1k.outcome;
        let conns = plan.threads * CONNS_PER_TASK;
        let list_conns = plan.threads * LIST_CONNS_PER_TASK;
        let secs = plan.duration.as_secs_f64();
        vec![
            row("ready (spawn → /readyz 200)", format!("{:.3} s", ready_s))
                .target("< 0.5 s", ready_s < 0.5),
            row(
                format!("idle RSS (after {:.0} s)", plan.idle.as_secs_f64()),
                mb(self.idle.rss),
            )
            .target("< 60 MB", idle_mb < 60.0)
            .note("control plane alone (--disable-agent)"),
            row(
                format!("CREATE {} cm ({conns} conns)", plan.objects),
                rate(c.rate()),
            )
            .target("≥ 4,200 req/s", c.rate() >= 4200.0)
            .note(cpu_note(&self.create)),
            row(
                "  CREATE p50 / p99",
                format!("{} / {}", ms(c.quantile(0.5)), ms(c.quantile(0.99))),
            ),
            row(
                format!("CREATE {} cm in bench1k", plan.list_objects),
                rate(self.create_1k.outcome.rate()),
            )
            .note(cpu_note(&self.create_1k)),
            row(
                format!("GET one cm ({conns} conns, {secs:.0} s)"),
                rate(g.rate()),
            )
            .target("≥ 8,600 req/s", g.rate() >= 8600.0)
            .note(cpu_note(&self.get)),
            row(
                "  GET p50 / p99",
                format!("{} / {}", ms(g.quantile(0.5)), ms(g.quantile(0.99))),
            ),
            row(
                format!(
                    "LIST {} cm ({list_conns} conns, {secs:.0} s)",
                    plan.list_objects
                ),
                rate(l.rate()),
            )
            .target("≥ 216 req/s", l.rate() >= 216.0)
            .note(cpu_note(&self.list_1k)),
            row(
                "  LIST p50 / p99",
                format!("{} / {}", ms(l.quantile(0.5)), ms(l.quantile(0.99))),
            )
            .note(format!(
                "{} per response",
                size(l.bytes / (l.latencies_us.len().max(1) as u64))
            )),
            row(
                format!(
                    "LIST all {} cm ({SEQUENTIAL_LISTS} seq.) p50 / max",
                    plan.objects
                ),
                format!(
                    "{} / {}",
                    ms(client::quantile(&self.list_all.latencies_us, 0.5)),
                    ms(client::quantile(&self.list_all.latencies_us, 1.0))
                ),
            )
            .note(format!("{} per response", size(self.list_all.bytes as u64))),
            row(
                format!("LIST limit={PAGE} first page ({SEQUENTIAL_LISTS} seq.) p50"),
                ms(client::quantile(&self.first_page.latencies_us, 0.5)),
            )
            .note(format!(
                "{} per response",
                size(self.first_page.bytes as u64)
            )),
            row("RSS after load", mb(self.after.rss))
                .note(format!("peak (VmHWM) {}", mb(self.after.peak))),
            row("server exit on SIGTERM", self.exit.clone()),
        ]
        .into_iter()
        .chain(self.scale.as_ref().map(scale_rows).into_iter().flatten())
        .chain(self.node.as_ref().map(node::rows).into_iter().flatten())
        .collect()
    }

    fn print(&self, plan: &Plan) {
        let rows = self.rows(plan);
        let header = row("metric", "value").target("target", true);
        let w = |f: fn(&Row) -> usize| rows.iter().chain([&header]).map(f).max().unwrap_or(0);
        let (w0, w1, w2) = (
            w(|r| r.metric.chars().count()),
            w(|r| r.value.chars().count()),
            w(|r| r.target.chars().count()),
        );
        let line = |r: &Row, verdict: &str| {
            println!(
                "{:<w0$}  {:>w1$}  {:<w2$}  {:<4}  {}",
                r.metric, r.value, r.target, verdict, r.note
            )
        };
        if plan.quick {
            println!("(--quick: small smoke run; figures do not compare with the targets)");
        }
        // Other processes on the machine take cores from both server and load generator.
        println!(
            "machine: {} CPUs; 1-min load average {} at start, {} at end",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            self.load_start,
            self.load_end
        );
        line(&header, "");
        println!("{}", "-".repeat(w0 + w1 + w2 + 12));
        for r in &rows {
            line(r, r.verdict);
        }
    }
}
