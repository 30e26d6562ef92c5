//! A small cluster on one machine: a "LAN" bridge in its own network namespace, the server in
//! its own namespace (control plane only), and one namespace per node, each joined to the
//! LAN by a veth pair and running its own `distro agent --runtime containerd` (with its own
//! data dir and containerd) with `--node-ip` its LAN address.
//!
//! Everything it makes is named from the test's PID and a counter (`dt<pid>x<n>-…`), so
//! parallel tests never collide, and removed on drop: agents stopped by PID (SIGTERM, so
//! containerd stops too), then the containers' shims of each node's containerd (found by
//! its socket path), their mounts and run dirs, and the namespaces (which takes every link
//! in them along). Nothing outside the namespaces it made is touched: the LAN addresses
//! (`10.77.0.0/24`) exist only inside them.
//!
//! Processes in a node namespace run under `nsenter --net` (the mounts stay the machine's,
//! as runc needs the cgroup mounts); containerd's mounts under the node's data and run dirs
//! are unmounted on drop.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{eventually, Agent, Server};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The LAN's prefix: `10.77.0.1` is the server, nodes are `10.77.0.10`, `.11`, …
pub const LAN_PREFIX: &str = "10.77.0";
/// The LAN bridge's own address in the LAN namespace: "a laptop on the LAN" that is no node
/// (see [`Cluster::lan_exec`]).
pub const LAN_CLIENT: &str = "10.77.0.254";
/// [`LAN_CLIENT`]'s IPv6 address (with [`Options::ipv6`]).
pub const LAN_CLIENT6: &str = "fd77::fe";
/// The LAN's IPv6 prefix (with [`Options::ipv6`]): `fd77::1` is the server, nodes `fd77::10`, …
pub const LAN_PREFIX6: &str = "fd77::";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace this harness made, deleted on drop.
pub struct Netns {
    /// Its name under /var/run/netns.
    pub name: String,
}

impl Netns {
    fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One node of the cluster.
pub struct Node {
    /// The node's name (`node-<i>`).
    pub name: String,
    /// Its LAN address (`--node-ip`).
    pub ip: String,
    /// Its agent.
    pub agent: Agent,
    /// Its namespace (after `agent` so the agent is stopped first).
    pub netns: Netns,
}

/// What to start.
pub struct Options<'a> {
    /// How many nodes.
    pub nodes: usize,
    /// Extra `distro server` flags.
    pub server_args: Vec<&'a str>,
    /// Extra `distro agent` flags for every node.
    pub agent_args: Vec<&'a str>,
    /// Also give the LAN IPv6 addresses (`fd77::1`, `fd77::10`, …) and pass both families
    /// as `--node-ip` (dual-stack).
    pub ipv6: bool,
    /// Leave `--node-ip` out, so agents detect their address (and follow changes).
    pub detect_node_ip: bool,
}

/// A running cluster; dropping it removes everything it made.
pub struct Cluster {
    /// The nodes (dropped first: agents stop before the server).
    pub nodes: Vec<Node>,
    /// The server, in its own namespace; its kubectl helpers run there.
    pub server: Server,
    server_ns: Netns,
    /// The LAN (dropped last).
    pub lan: Netns,
}

impl Cluster {
    /// Builds the LAN, starts the server and the nodes' agents (`prepare` gets each agent's
    /// data dir first, e.g. to copy image tarballs in). Does not wait for the nodes: use
    /// [`Cluster::wait_ready`].
    pub fn start(bin: &Path, opts: Options<'_>, prepare: impl Fn(&Path)) -> Cluster {
        let id = format!(
            "dt{}x{}",
            std::process::id() % 1_000_000,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let lan = Netns::new(format!("{id}-lan"));
        ip(&["-n", &lan.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.name, "link", "set", "br0", "up"]);
        ip(&[
            "-n",
            &lan.name,
            "addr",
            "add",
            &format!("{LAN_CLIENT}/24"),
            "dev",
            "br0",
        ]);
        if opts.ipv6 {
            ip(&[
                "-n",
                &lan.name,
                "addr",
                "add",
                &format!("{LAN_CLIENT6}/64"),
                "dev",
                "br0",
                "nodad",
            ]);
        }
        let join = |ns: &Netns, port: &str, addr: &str, addr6: Option<&str>| {
            ip(&[
                "-n", &lan.name, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.name,
            ]);
            ip(&["-n", &lan.name, "link", "set", port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            if let Some(a6) = addr6 {
                // No duplicate address detection: the address is usable at once.
                ip(&[
                    "-n",
                    &ns.name,
                    "addr",
                    "add",
                    &format!("{a6}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
            }
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
        };
        let server_ns = Netns::new(format!("{id}-srv"));
        let server_ip = format!("{LAN_PREFIX}.1");
        let server_ip6 = format!("{LAN_PREFIX6}1");
        join(
            &server_ns,
            "vsrv",
            &server_ip,
            opts.ipv6.then_some(&server_ip6[..]),
        );
        let server = Server::start_in_netns(bin, &server_ns.name, &server_ip, &opts.server_args);
        let url = server.server_url().expect("server URL");
        let token = server.token();
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let netns = Netns::new(format!("{id}-n{i}"));
            let addr = format!("{LAN_PREFIX}.{}", 10 + i);
            let addr6 = format!("{LAN_PREFIX6}{}", 10 + i);
            join(
                &netns,
                &format!("vn{i}"),
                &addr,
                opts.ipv6.then_some(&addr6[..]),
            );
            let node_ips = if opts.ipv6 {
                format!("{addr},{addr6}")
            } else {
                addr.clone()
            };
            let name = format!("node-{i}");
            let mut args = vec![
                "--runtime",
                "containerd",
                "--node-name",
                &name,
                "--kubelet-port",
                "10250",
            ];
            if !opts.detect_node_ip {
                args.extend(["--node-ip", &node_ips]);
            }
            args.extend(opts.agent_args.iter().copied());
            let agent = Agent::start_in_netns(bin, &netns.name, &url, &token, &args, &prepare);
            nodes.push(Node {
                name,
                ip: addr,
                agent,
                netns,
            });
        }
        Cluster {
            nodes,
            server,
            server_ns,
            lan,
        }
    }

    /// Waits until every node is Ready.
    pub fn wait_ready(&self, deadline: Duration) {
        for n in &self.nodes {
            eventually(
                deadline,
                Duration::from_millis(200),
                &format!("node {} Ready", n.name),
                || {
                    let out = self.server.kubectl(
                        crate::LATEST,
                        &[
                            "get",
                            "node",
                            &n.name,
                            "-o",
                            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                        ],
                    );
                    (String::from_utf8_lossy(&out.stdout).trim() == "True").then_some(())
                },
            );
        }
    }

    /// Runs `args` on the LAN itself, from [`LAN_CLIENT`] / [`LAN_CLIENT6`] (a machine on the LAN that is not a
    /// node, e.g. a client of NodePorts).
    pub fn lan_exec(&self, args: &[&str]) -> std::process::Output {
        self.lan.exec(args)
    }

    /// The server's namespace.
    pub fn server_netns(&self) -> &Netns {
        &self.server_ns
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let data = self.agent.data_dir();
        // SIGTERM: the agent stops its containerd; containers stay (as designed) and are
        // this harness's to remove.
        let pid = self.agent.pid();
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.agent.stop();
        }));
        if let (Err(_), Some(pid)) = (stopped, pid) {
            // It did not stop in time; it is still our child's PID (not yet reaped).
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        crate::node::remove_runtime(&data);
    }
}
