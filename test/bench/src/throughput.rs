//! `hack/bench --throughput` (root, containerd): TCP throughput pod to pod across two nodes
//! over the overlay, VXLAN and host-gw, against the bare veth path between the same two
//! node namespaces, as issue 5 asks ("TCP throughput pod to pod across nodes compared with
//! the bare veth path").
//!
//! # Design
//! The nodes are the test harness's multi-node cluster (`distro_testharness::cluster`: network
//! namespaces on a LAN bridge, one `distro agent --runtime containerd` each), so the bench
//! measures exactly what the e2e tests exercise. iperf3 is not installed here, so this binary
//! is its own TCP sink and source ([`helper_main`]), run with `nsenter --net` in a node's
//! namespace (bare path) or in a pod's (the namespace of the pod's main process): the source
//! writes zeros for [`SECONDS`], the sink counts bytes from the first to the last and reports
//! them. Each path is measured [`RUNS`] times and the median is printed, in Gbit/s, with the
//! overlay/bare ratio per backend.
//!
//! # Limits
//! - One TCP stream, sender and receiver on the same 2 cores as the kernel's VXLAN work:
//!   absolute figures are this machine's; the ratio is the meaningful one.
//! - The bare path is veth → bridge → veth inside one kernel; a real LAN adds its NICs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use distro_testharness::cluster::{Cluster, Options};
use distro_testharness::node::{install_images, BUSYBOX};
use distro_testharness::{eventually, LATEST};

/// How long the source sends per run.
const SECONDS: f64 = 3.0;
/// Runs per path; the median is reported.
const RUNS: usize = 3;
/// The sink's port.
const PORT: u16 = 5201;
/// Write size of the source.
const CHUNK: usize = 256 * 1024;
/// The hidden sub-commands this binary answers when run inside a namespace.
const SINK: &str = "__tcp-sink";
const SOURCE: &str = "__tcp-source";

/// If this process was started as the sink or source (`distro-bench __tcp-sink ADDR`,
/// `__tcp-source ADDR SECONDS`), runs it and returns its exit code.
pub fn helper_main() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(SINK) => sink(args.get(2)?),
        Some(SOURCE) => source(args.get(2)?, args.get(3)?),
        _ => return None,
    };
    Some(match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("distro-bench {}: {e:#}", args[1]);
            ExitCode::FAILURE
        }
    })
}

/// Accepts one connection on `addr`, reads it to the end, prints `<bytes> <seconds>`
/// (first byte to end of stream). Prints `ready` once listening.
fn sink(addr: &str) -> Result<()> {
    let addr: SocketAddr = addr.parse().context("sink address")?;
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("ready");
    std::io::stdout().flush()?;
    let (mut conn, _) = listener.accept()?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        total += n as u64;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!("{total} {secs}");
    Ok(())
}

/// Connects to `addr` and sends zeros for `secs` seconds.
fn source(addr: &str, secs: &str) -> Result<()> {
    let addr: SocketAddr = addr.parse().context("source address")?;
    let secs: f64 = secs.parse().context("seconds")?;
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting to {addr}"))?;
    let buf = vec![0u8; CHUNK];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        conn.write_all(&buf)?;
    }
    conn.shutdown(Shutdown::Write)?;
    Ok(())
}

/// Runs this binary with `args` in the network namespace at `netns` (a path).
fn in_netns(netns: &str, args: &[&str]) -> Result<Command> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={netns}")).arg(exe).args(args);
    Ok(c)
}

/// One measurement: a sink in `to_ns` on `to_ip`, a source in `from_ns`; Gbit/s.
fn measure(from_ns: &str, to_ns: &str, to_ip: &str) -> Result<f64> {
    let addr = SocketAddr::new(to_ip.parse().context("address")?, PORT).to_string();
    let mut sink: Child = in_netns(to_ns, &[SINK, &addr])?
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the sink")?;
    let mut out = BufReader::new(sink.stdout.take().context("sink stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = sink.kill();
        let _ = sink.wait();
        bail!("the sink did not start: {line:?}");
    }
    let sent = in_netns(from_ns, &[SOURCE, &addr, &SECONDS.to_string()])?
        .status()
        .context("running the source")?;
    if !sent.success() {
        let _ = sink.kill();
        let _ = sink.wait();
        bail!("the source failed");
    }
    line.clear();
    out.read_line(&mut line)?;
    sink.wait()?;
    let (bytes, secs) = line
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("sink said {line:?}"))?;
    let (bytes, secs): (f64, f64) = (bytes.parse()?, secs.parse()?);
    if secs <= 0.0 {
        bail!("no data arrived");
    }
    Ok(bytes * 8.0 / secs / 1e9)
}

/// The median of [`RUNS`] measurements.
fn median(from_ns: &str, to_ns: &str, to_ip: &str) -> Result<f64> {
    let mut runs = (0..RUNS)
        .map(|_| measure(from_ns, to_ns, to_ip))
        .collect::<Result<Vec<f64>>>()?;
    runs.sort_by(f64::total_cmp);
    Ok(runs[RUNS / 2])
}

/// A pod pinned to `node` that only sleeps; `marker` in its command line finds its process.
fn idle_pod(name: &str, node: &str, marker: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: ["sh", "-c", "sleep 100000; : {marker}"]
"#
    )
}

/// The network namespace (`/proc/<pid>/ns/net`) of the process whose command line has
/// `marker`.
fn netns_of(marker: &str) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(marker)
            .then(|| format!("/proc/{pid}/ns/net"))
    })
}

/// Bare and pod-to-pod Gbit/s on a fresh two-node cluster with `backend`.
fn backend(bin: &Path, images: &Path, backend: &str) -> Result<(f64, f64)> {
    eprintln!("throughput: starting two {backend} nodes");
    let c = Cluster::start(
        bin,
        Options {
            nodes: 2,
            server_args: vec![],
            agent_args: vec!["--flannel-backend", backend],
            ipv6: false,
            detect_node_ip: false,
        },
        |data| install_images(images, data),
    );
    c.wait_ready(Duration::from_secs(120));
    let ns = |i: usize| format!("/var/run/netns/{}", c.nodes[i].netns.name);
    let bare = median(&ns(0), &ns(1), &c.nodes[1].ip)?;

    let marker = format!("throughput-{}", std::process::id());
    let (a, b) = (format!("{marker}-a"), format!("{marker}-b"));
    let pods = idle_pod("tput-a", &c.nodes[0].name, &a)
        + "---\n"
        + &idle_pod("tput-b", &c.nodes[1].name, &b);
    c.server
        .ok_stdin(LATEST, &["apply", "-f", "-"], Some(&pods));
    let every = Duration::from_millis(200);
    let ip_b = eventually(Duration::from_secs(90), every, "pod tput-b Running", || {
        let p = c.server.json(LATEST, &["get", "pod", "tput-b"]);
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(String::from))
            .flatten()
    });
    let ns_a = eventually(
        Duration::from_secs(90),
        every,
        "pod tput-a's process",
        || netns_of(&a),
    );
    let ns_b = eventually(
        Duration::from_secs(30),
        every,
        "pod tput-b's process",
        || netns_of(&b),
    );
    let pod = median(&ns_a, &ns_b, &ip_b)?;
    c.server.ok(
        LATEST,
        &[
            "delete",
            "pod",
            "tput-a",
            "tput-b",
            "--grace-period=1",
            "--timeout=30s",
        ],
    );
    Ok((bare, pod))
}

/// Measures both backends and prints the table.
///
/// # Errors
/// A cluster that does not come up, a pod that does not run, a failed transfer.
pub fn run(bin: &Path, tmp: Option<&Path>) -> Result<()> {
    let images = tempfile::Builder::new()
        .prefix("distro-bench-images-")
        .tempdir_in(tmp.unwrap_or(&std::env::temp_dir()))?;
    let mut rows = Vec::new();
    for name in ["vxlan", "host-gw"] {
        // The harness asserts (panics) on what it cannot set up; its guards clean up while
        // unwinding.
        let measured =
            std::panic::catch_unwind(|| backend(bin, images.path(), name)).map_err(|p| {
                anyhow!(
                    "{name}: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )
            })??;
        rows.push((name, measured));
    }
    println!();
    println!(
        "TCP throughput, one stream, {SECONDS} s × {RUNS} runs (median), two nodes on one machine"
    );
    println!(
        "{:<10} {:>16} {:>16} {:>14}",
        "backend", "bare veth Gbit/s", "pod→pod Gbit/s", "overlay/bare"
    );
    for (name, (bare, pod)) in rows {
        println!(
            "{:<10} {:>16.2} {:>16.2} {:>13.0}%",
            name,
            bare,
            pod,
            pod / bare * 100.0
        );
    }
    Ok(())
}
