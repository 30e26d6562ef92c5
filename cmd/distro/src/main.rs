//! The `distro` binary: subcommands, configuration resolution and process wiring only.
//!
//! Configuration has one key space: flags, `DISTRO_*` environment variables and keys of
//! `/etc/distro/config.yaml` (or `--config`). As in k3s, config-file keys become flags placed
//! before the command line's own, so the command line wins, then the environment, then the file.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

/// A batteries-included Kubernetes distribution in one binary.
#[derive(Parser, Debug)]
#[command(name = "distro", version, about, propagate_version = true)]
struct Cli {
    /// Config file whose keys are flags of the subcommand.
    #[arg(
        long,
        global = true,
        env = "DISTRO_CONFIG_FILE",
        default_value = "/etc/distro/config.yaml"
    )]
    config: PathBuf,
    /// Log filter (tracing syntax), e.g. `info` or `distro_apiserver=debug`.
    #[arg(long, global = true, env = "DISTRO_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (and, unless --disable-agent, a node) on this machine.
    Server(Box<ServerArgs>),
    /// Join this machine (or simulated nodes) to a cluster as a worker node.
    Agent(Box<AgentArgs>),
    /// Manage bootstrap (join) tokens: create, list, delete.
    Token(TokenArgs),
    /// Run kubectl with the admin kubeconfig of this machine's server.
    Kubectl {
        /// Arguments passed to kubectl.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Report what this machine lacks to run a node (containerd, runc, cgroups, kernel
    /// features), with fixes; exits non-zero when something required is missing.
    CheckConfig {
        /// Data directory (a test overlay is mounted under it).
        #[arg(
            long,
            short = 'd',
            env = "DISTRO_DATA_DIR",
            default_value = "/var/lib/distro"
        )]
        data_dir: PathBuf,
    },
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// Admin kubeconfig (default: the server's under --data-dir, else /etc/distro/distro.yaml).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The server's data directory, to find its admin kubeconfig.
    #[arg(long, short = 'd', global = true, env = "DISTRO_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a bootstrap token and print it as `K10<ca-hash>::<id>.<secret>`.
    Create {
        /// Lifetime (Go duration, e.g. 24h, 90m); 0 never expires.
        #[arg(long, default_value = "24h", value_parser = parse_go_duration)]
        ttl: std::time::Duration,
        /// Description shown by `token list`.
        #[arg(long)]
        description: Option<String>,
        /// Ways the token may be used.
        #[arg(long, value_delimiter = ',', default_values_t = distro_server::tokencmd::DEFAULT_USAGES.iter().map(|s| s.to_string()))]
        usages: Vec<String>,
        /// Extra groups the token authenticates as (each `system:bootstrappers:…`).
        #[arg(long, value_delimiter = ',', default_values_t = [distro_server::tokencmd::DEFAULT_GROUP.to_string()])]
        groups: Vec<String>,
    },
    /// List bootstrap tokens.
    List,
    /// Delete a bootstrap token (by id, `<id>.<secret>` or the full token).
    Delete {
        /// The token or its id.
        token: String,
    },
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Directory for all state.
    #[arg(
        long,
        short = 'd',
        env = "DISTRO_DATA_DIR",
        default_value = "/var/lib/distro",
        help_heading = "Data"
    )]
    data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(
        long,
        env = "DISTRO_BIND_ADDRESS",
        default_value = "0.0.0.0",
        help_heading = "Listener"
    )]
    bind_address: IpAddr,
    /// HTTPS port of the API server.
    #[arg(
        long,
        env = "DISTRO_HTTPS_LISTEN_PORT",
        default_value_t = 6443,
        help_heading = "Listener"
    )]
    https_listen_port: u16,
    /// Address advertised to other members of the cluster.
    #[arg(long, env = "DISTRO_ADVERTISE_ADDRESS", help_heading = "Listener")]
    advertise_address: Option<IpAddr>,
    /// Extra hostnames or IPs for the serving certificate (repeatable).
    #[arg(
        long = "tls-san",
        env = "DISTRO_TLS_SAN",
        value_delimiter = ',',
        help_heading = "Listener"
    )]
    tls_san: Vec<String>,
    /// Pod network range(s), IPv4 and/or IPv6, comma-separated.
    #[arg(
        long,
        env = "DISTRO_CLUSTER_CIDR",
        default_value = "10.42.0.0/16",
        help_heading = "Networking"
    )]
    cluster_cidr: String,
    /// Service network range(s), comma-separated.
    #[arg(
        long,
        env = "DISTRO_SERVICE_CIDR",
        default_value = "10.43.0.0/16",
        help_heading = "Networking"
    )]
    service_cidr: String,
    /// Cluster DNS service IP [default: the 10th address of --service-cidr, 10.43.0.10].
    #[arg(long, env = "DISTRO_CLUSTER_DNS", help_heading = "Networking")]
    cluster_dns: Option<IpAddr>,
    /// Cluster domain.
    #[arg(
        long,
        env = "DISTRO_CLUSTER_DOMAIN",
        default_value = "cluster.local",
        help_heading = "Networking"
    )]
    cluster_domain: String,
    /// Write the admin kubeconfig here.
    #[arg(
        long,
        short = 'o',
        env = "DISTRO_KUBECONFIG_OUTPUT",
        default_value = "/etc/distro/distro.yaml",
        help_heading = "Client"
    )]
    write_kubeconfig: PathBuf,
    /// File mode of the admin kubeconfig (octal).
    #[arg(
        long,
        env = "DISTRO_KUBECONFIG_MODE",
        default_value = "0600",
        help_heading = "Client"
    )]
    write_kubeconfig_mode: String,
    /// Bundled components not to deploy (repeatable).
    #[arg(
        long,
        env = "DISTRO_DISABLE",
        value_delimiter = ',',
        help_heading = "Components"
    )]
    disable: Vec<String>,
    /// Run only the control plane, no node on this machine.
    #[arg(long, env = "DISTRO_DISABLE_AGENT", help_heading = "Components")]
    disable_agent: bool,
    /// This machine's node (unless --disable-agent), as `distro agent` takes them.
    #[command(flatten)]
    node: NodeArgs,
    /// Shared secret agents use to join (generated if not set).
    #[arg(long, short = 't', env = "DISTRO_TOKEN", help_heading = "Cluster")]
    token: Option<String>,
    /// How long a node may go without renewing its Lease before it is marked Unknown
    /// (kube-controller-manager's flag; a Go duration such as 50s or 1m30s).
    #[arg(
        long,
        env = "DISTRO_NODE_MONITOR_GRACE_PERIOD",
        default_value = "50s",
        value_parser = parse_go_duration,
        help_heading = "Controllers"
    )]
    node_monitor_grace_period: std::time::Duration,
    /// Terminated pods kept before the pod garbage collector deletes the oldest
    /// (kube-controller-manager's flag; 0 keeps all).
    #[arg(
        long,
        env = "DISTRO_TERMINATED_POD_GC_THRESHOLD",
        default_value_t = 12500,
        help_heading = "Controllers"
    )]
    terminated_pod_gc_threshold: u32,
    /// How often the horizontal pod autoscaler reconciles each HPA
    /// (kube-controller-manager's flag).
    #[arg(
        long,
        env = "DISTRO_HORIZONTAL_POD_AUTOSCALER_SYNC_PERIOD",
        default_value = "15s",
        value_parser = parse_go_duration,
        help_heading = "Controllers"
    )]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How long the autoscaler keeps the highest recent recommendation before scaling down
    /// (kube-controller-manager's flag; HPAs' spec.behavior may set their own).
    #[arg(
        long,
        env = "DISTRO_HORIZONTAL_POD_AUTOSCALER_DOWNSCALE_STABILIZATION",
        default_value = "5m",
        value_parser = parse_go_duration,
        help_heading = "Controllers"
    )]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// Minimum change (from 1.0) in the desired-to-actual metrics ratio for the autoscaler
    /// to scale (kube-controller-manager's flag).
    #[arg(
        long,
        env = "DISTRO_HORIZONTAL_POD_AUTOSCALER_TOLERANCE",
        default_value_t = 0.1,
        help_heading = "Controllers"
    )]
    horizontal_pod_autoscaler_tolerance: f64,
    /// How often resource metrics are scraped from every Ready node's kubelet for
    /// metrics.k8s.io (`kubectl top`, autoscaling), as metrics-server's --metric-resolution.
    #[arg(
        long,
        env = "DISTRO_METRICS_RESOLUTION",
        default_value = "15s",
        value_parser = parse_go_duration,
        help_heading = "Metrics"
    )]
    metrics_resolution: std::time::Duration,
    // --- overlay ---
    /// Prefix length of each node's IPv4 pod range, taken from --cluster-cidr.
    #[arg(
        long,
        env = "DISTRO_NODE_CIDR_MASK_SIZE_IPV4",
        default_value_t = 24,
        help_heading = "Networking"
    )]
    node_cidr_mask_size_ipv4: u8,
    /// Prefix length of each node's IPv6 pod range, taken from --cluster-cidr.
    #[arg(
        long,
        env = "DISTRO_NODE_CIDR_MASK_SIZE_IPV6",
        default_value_t = 64,
        help_heading = "Networking"
    )]
    node_cidr_mask_size_ipv6: u8,
}

/// Parses a Go duration as upstream's flags take it: decimal numbers with units
/// `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`, e.g. `50s`, `1m30s`, `1.5s`.
fn parse_go_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like 50s, 500ms or 1m30s");
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[derive(Args, Debug)]
struct AgentArgs {
    /// URL of a server to join, e.g. https://10.0.0.1:6443.
    #[arg(
        long,
        alias = "server",
        short = 's',
        env = "DISTRO_URL",
        help_heading = "Cluster"
    )]
    join: String,
    /// Join token (the server's <data-dir>/server/token); its CA hash pins the server.
    #[arg(long, short = 't', env = "DISTRO_TOKEN", help_heading = "Cluster")]
    token: String,
    /// Directory for all state.
    #[arg(
        long,
        short = 'd',
        env = "DISTRO_DATA_DIR",
        default_value = "/var/lib/distro",
        help_heading = "Data"
    )]
    data_dir: PathBuf,
    /// The node's own settings, shared with `distro server`.
    #[command(flatten)]
    node: NodeArgs,
    /// Container runtime: `containerd` (supervised by distro; pods run as real containers)
    /// or `fake`, which simulates pods without running them (a test tool).
    #[arg(
        long,
        env = "DISTRO_RUNTIME",
        default_value = "containerd",
        help_heading = "Runtime"
    )]
    runtime: String,
    /// Capacity a simulated node reports, e.g. cpu=4,memory=8Gi,pods=110.
    #[arg(
        long,
        default_value = "cpu=4,memory=8Gi,pods=110",
        help_heading = "Runtime"
    )]
    fake_capacity: String,
    /// Serve this many simulated nodes, named <node-name>-0 … <node-name>-(N-1).
    #[arg(long, help_heading = "Runtime")]
    fake_nodes: Option<u32>,
    /// The cluster's pod range(s) (not masqueraded) [default: the server's --cluster-cidr].
    #[arg(long, env = "DISTRO_CLUSTER_CIDR", help_heading = "Networking")]
    cluster_cidr: Option<String>,
    /// Cluster DNS address(es) this node serves and its pods use, comma-separated
    /// [default: the server's --cluster-dns].
    #[arg(
        long,
        env = "DISTRO_CLUSTER_DNS",
        value_delimiter = ',',
        help_heading = "Networking"
    )]
    cluster_dns: Vec<IpAddr>,
    /// Cluster domain [default: the server's --cluster-domain].
    #[arg(long, env = "DISTRO_CLUSTER_DOMAIN", help_heading = "Networking")]
    cluster_domain: Option<String>,
}

/// The node's flags, the same for `distro agent` and `distro server` (whose node they
/// describe unless `--disable-agent`), as k3s shares its agent flags.
#[derive(Args, Debug)]
struct NodeArgs {
    /// Node name (default: the hostname); with --fake-nodes, the names' prefix.
    #[arg(long, env = "DISTRO_NODE_NAME", help_heading = "Node")]
    node_name: Option<String>,
    /// Label to register the node with, key=value (repeatable).
    #[arg(long = "node-label", help_heading = "Node")]
    node_label: Vec<String>,
    /// Taint to register the node with, key=value:Effect (repeatable).
    #[arg(long = "node-taint", help_heading = "Node")]
    node_taint: Vec<String>,
    /// The pod sandbox ("pause") image containerd uses.
    #[arg(long, env = "DISTRO_PAUSE_IMAGE", default_value = distro_cri::containerd::DEFAULT_PAUSE_IMAGE, help_heading = "Runtime")]
    pause_image: String,
    /// Registry mirrors and credentials, in k3s's registries.yaml format.
    #[arg(
        long,
        env = "DISTRO_PRIVATE_REGISTRY",
        default_value = "/etc/distro/registries.yaml",
        help_heading = "Runtime"
    )]
    private_registry: PathBuf,
    /// Port of the kubelet HTTPS API (0: any free port); with --fake-nodes every node
    /// gets its own free port.
    #[arg(long, default_value_t = 10250, help_heading = "Node")]
    kubelet_port: u16,
    /// The pods' bridge on this node (change it only when several nodes share one kernel).
    #[arg(long, default_value = "cni0", help_heading = "Runtime")]
    cni_bridge: String,
    /// Disk usage percent of the image filesystem at or above which unused images are
    /// deleted, least recently used first.
    #[arg(long, default_value_t = 85, help_heading = "Images")]
    image_gc_high_threshold: u8,
    /// Disk usage percent image garbage collection frees down to.
    #[arg(long, default_value_t = 80, help_heading = "Images")]
    image_gc_low_threshold: u8,
    /// Delete images no container has used for this long, e.g. 720h (0: never).
    #[arg(long, default_value = "0s", value_parser = parse_go_duration, help_heading = "Images")]
    image_maximum_gc_age: std::time::Duration,
    /// Hard eviction thresholds, as the kubelet's flag: signal<quantity or signal<percent%,
    /// comma-separated (memory.available, nodefs.available, nodefs.inodesFree,
    /// imagefs.available, imagefs.inodesFree, pid.available).
    #[arg(long, env = "DISTRO_EVICTION_HARD", default_value = distro_agent::eviction::DEFAULT_EVICTION_HARD, help_heading = "Node")]
    eviction_hard: String,
    /// How long a node keeps a pressure condition after its thresholds are no longer met
    /// (the kubelet's flag; a Go duration).
    #[arg(long, default_value = "5m", value_parser = parse_go_duration, help_heading = "Node")]
    eviction_pressure_transition_period: std::time::Duration,
    /// Rotate a container's log file once it reaches this size (a quantity, e.g. 10Mi;
    /// negative: never), as the kubelet's flag.
    #[arg(long, default_value = distro_kubelet::log_rotation::DEFAULT_MAX_SIZE, allow_hyphen_values = true, help_heading = "Node")]
    container_log_max_size: String,
    /// Log files kept per container, the current one included (at least 2).
    #[arg(long, default_value_t = distro_kubelet::log_rotation::DEFAULT_MAX_FILES, help_heading = "Node")]
    container_log_max_files: usize,
    /// How often container log sizes are checked (the kubelet's containerLogMonitorInterval;
    /// at least 3s).
    #[arg(long, default_value = "10s", value_parser = parse_go_duration, help_heading = "Node")]
    container_log_monitor_interval: std::time::Duration,
    // --- pressure ---
    /// Soft eviction thresholds (same syntax as --eviction-hard): pods are evicted once one
    /// has held for its --eviction-soft-grace-period.
    #[arg(
        long,
        env = "DISTRO_EVICTION_SOFT",
        default_value = "",
        help_heading = "Node"
    )]
    eviction_soft: String,
    /// Grace period of each soft threshold, signal=duration comma-separated (e.g.
    /// memory.available=1m30s); every soft threshold needs one.
    #[arg(long, default_value = "", help_heading = "Node")]
    eviction_soft_grace_period: String,
    /// The most seconds a pod evicted for a soft threshold gets to stop (it gets the smaller
    /// of this and its own terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 0, help_heading = "Node")]
    eviction_max_pod_grace_period: i64,
    /// How far above a threshold a signal must climb before eviction stops, signal=quantity
    /// or signal=percent% comma-separated (e.g. nodefs.available=500Mi).
    #[arg(long, default_value = "", help_heading = "Node")]
    eviction_minimum_reclaim: String,
    // --- overlay ---
    /// How pod traffic reaches other nodes: vxlan, host-gw (nodes on one L2 segment) or none.
    #[arg(
        long,
        env = "DISTRO_FLANNEL_BACKEND",
        default_value = "vxlan",
        help_heading = "Networking"
    )]
    flannel_backend: String,
    /// The node's address(es), one per family (default: the address towards the server).
    #[arg(
        long,
        env = "DISTRO_NODE_IP",
        value_delimiter = ',',
        help_heading = "Networking"
    )]
    node_ip: Vec<IpAddr>,
    /// Address(es) other nodes reach this one at for the overlay (default: --node-ip).
    #[arg(
        long,
        env = "DISTRO_NODE_EXTERNAL_IP",
        value_delimiter = ',',
        help_heading = "Networking"
    )]
    node_external_ip: Vec<IpAddr>,
    /// Upstream resolvers for names outside the cluster (default: /etc/resolv.conf without
    /// its loopback nameservers).
    #[arg(long, env = "DISTRO_RESOLV_CONF", help_heading = "Networking")]
    resolv_conf: Option<PathBuf>,
    /// The dummy link holding the cluster DNS address (change it only when several nodes
    /// share one kernel).
    #[arg(long, default_value = distro_dns::DEFAULT_INTERFACE, help_heading = "Networking")]
    dns_interface: String,
}

/// The node's network flags, validated, for a cluster whose pod range(s) are `cluster_cidr`.
fn node_network(n: &NodeArgs, cluster_cidr: &str) -> Result<distro_agent::network::Settings> {
    let ipam = distro_server::NodeIpamSettings::parse(cluster_cidr, 24, 64)?;
    let backend = n.flannel_backend.parse().map_err(anyhow::Error::msg)?;
    for (flag, ips) in [
        ("--node-ip", &n.node_ip),
        ("--node-external-ip", &n.node_external_ip),
    ] {
        if ips.len() > 2 || (ips.len() == 2 && ips[0].is_ipv4() == ips[1].is_ipv4()) {
            bail!("{flag}: at most one IPv4 and one IPv6 address");
        }
    }
    Ok(distro_agent::network::Settings {
        cluster_cidrs: ipam.cluster_cidrs,
        backend,
        node_ips: n.node_ip.clone(),
        node_external_ips: n.node_external_ip.clone(),
    })
}

/// Exit code for bad configuration (sysexits' EX_USAGE), before anything binds.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // Multi-call: containerd runs this binary as its CNI plugin, with CNI_COMMAND set.
    if std::env::var_os("CNI_COMMAND").is_some() {
        return distro_network::cni::run();
    }
    let args = match with_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("distro: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cli = Cli::parse_from(args);
    let mut filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into());
    // hickory-server logs every DNS query at info: only when asked for by name.
    if !cli.log.contains("hickory") {
        if let Ok(d) = "hickory_server=warn".parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Server(args) => {
            let config = match server_config(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("distro server: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            run_until_signal(|stop| async move {
                distro_server::run(config, stop)
                    .await
                    .context("distro server")
            })
        }
        Command::Agent(args) => {
            let config = match agent_config(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("distro agent: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            run_until_signal(|stop| async move {
                distro_agent::run(config, stop)
                    .await
                    .context("distro agent")
            })
        }
        Command::Token(args) => run_async(token(args)),
        Command::Kubectl { args } => kubectl(args),
        Command::CheckConfig { data_dir } => {
            let report = distro_cri::check::run(&data_dir);
            print!("{report}");
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn token(a: TokenArgs) -> Result<()> {
    use distro_server::tokencmd;
    let kc = tokencmd::kubeconfig_path(a.kubeconfig, a.data_dir.as_deref());
    let out = match a.command {
        TokenCommand::Create {
            ttl,
            description,
            usages,
            groups,
        } => {
            let opts = tokencmd::CreateOptions {
                ttl: Some(ttl),
                description,
                usages,
                groups,
            };
            tokencmd::create(&kc, &opts).await
        }
        TokenCommand::List => tokencmd::list(&kc).await.map(|t| t.trim_end().to_string()),
        TokenCommand::Delete { token } => tokencmd::delete(&kc, &token).await,
    };
    println!("{}", out.context("distro token")?);
    Ok(())
}

fn agent_config(a: AgentArgs) -> Result<distro_agent::Config> {
    // Until the server says otherwise (distro_agent::clusterconfig), k3s' defaults.
    let dns_defaults = distro_dns::Config::default();
    let cluster_flags = distro_agent::clusterconfig::Given {
        cluster_cidr: a.cluster_cidr.is_some(),
        cluster_dns: !a.cluster_dns.is_empty(),
        cluster_domain: a.cluster_domain.is_some(),
    };
    let cluster_dns = match a.cluster_dns {
        ips if ips.is_empty() => dns_defaults.cluster_dns,
        ips => ips,
    };
    let cluster_domain = a.cluster_domain.unwrap_or(dns_defaults.cluster_domain);
    let network = node_network(&a.node, a.cluster_cidr.as_deref().unwrap_or("10.42.0.0/16"))?;
    let containerd = match a.runtime.as_str() {
        "fake" => false,
        "containerd" if a.fake_nodes.is_some() => bail!("--fake-nodes needs --runtime fake"),
        "containerd" => true,
        other => bail!("--runtime {other:?} is not one of fake, containerd"),
    };
    let token: distro_pki::JoinToken = a
        .token
        .parse()
        .with_context(|| "--token is not a join token (K10<hash>::<user>:<secret>)")?;
    let uri: http::Uri = a
        .join
        .parse()
        .with_context(|| format!("--join {:?} is not a URL", a.join))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        bail!("--join {:?} must be an https:// URL of a server", a.join);
    }
    let mut config = node_config(
        a.node,
        a.data_dir,
        containerd,
        network,
        (cluster_dns, cluster_domain),
    )?;
    config.cluster_flags = cluster_flags;
    config.server = a.join.trim_end_matches('/').to_string();
    config.token = token;
    config.fake_capacity =
        distro_agent::node::parse_capacity(&a.fake_capacity).map_err(anyhow::Error::msg)?;
    config.fake_nodes = a.fake_nodes;
    Ok(config)
}

/// The node's configuration from its flags, shared by `distro agent` and `distro server`.
/// The server to join and the token are left empty for the caller to fill in (the agent from
/// `--join`/`--token`, the server with its own URL and token once it serves).
fn node_config(
    n: NodeArgs,
    data_dir: PathBuf,
    containerd: bool,
    network: distro_agent::network::Settings,
    (cluster_dns, cluster_domain): (Vec<IpAddr>, String),
) -> Result<distro_agent::Config> {
    let dns = dns_config(
        cluster_dns,
        cluster_domain,
        n.resolv_conf.clone(),
        n.dns_interface.clone(),
    )?;
    let containerd = if containerd {
        let mut rt = distro_cri::runtime::RuntimeConfig::new(data_dir.clone())?;
        rt.pause_image = n.pause_image.clone();
        rt.registries_file = n.private_registry.clone();
        Some(rt)
    } else {
        None
    };
    let node_name = match n.node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .ok()
            .filter(|h| !h.is_empty())
            .context("no --node-name given and the hostname is unknown")?,
    };
    let valid_name = !node_name.is_empty()
        && node_name.len() <= 253
        && node_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && node_name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && node_name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        bail!("--node-name {node_name:?} is not a valid node name (lowercase DNS subdomain)");
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &n.node_label {
        let (k, v) = distro_agent::node::parse_label(l).map_err(anyhow::Error::msg)?;
        labels.insert(k, v);
    }
    let taints = n
        .node_taint
        .iter()
        .map(|t| distro_agent::node::parse_taint(t))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let image_gc = distro_kubelet::images::gc::Policy {
        high_threshold_percent: n.image_gc_high_threshold,
        low_threshold_percent: n.image_gc_low_threshold,
        max_age: n.image_maximum_gc_age,
        ..Default::default()
    };
    image_gc.validate().map_err(anyhow::Error::msg)?;
    Ok(distro_agent::Config {
        server: String::new(),
        token: distro_pki::JoinToken {
            ca_hash: None,
            username: distro_pki::DEFAULT_USERNAME.into(),
            secret: String::new(),
        },
        data_dir,
        node_name,
        labels,
        taints,
        fake_capacity: Default::default(),
        fake_nodes: None,
        containerd,
        kubelet_port: n.kubelet_port,
        cni_bridge: n.cni_bridge,
        image_gc,
        eviction_hard: n
            .eviction_hard
            .parse::<distro_agent::eviction::Thresholds>()
            .and_then(|t| t.with_min_reclaim(&n.eviction_minimum_reclaim))
            .map_err(anyhow::Error::msg)?,
        eviction_pressure_transition_period: n.eviction_pressure_transition_period,
        container_logs: distro_kubelet::log_rotation::Policy::parse(
            &n.container_log_max_size,
            n.container_log_max_files,
            n.container_log_monitor_interval,
        )?,
        eviction_soft: distro_agent::eviction::Thresholds::soft(
            &n.eviction_soft,
            &n.eviction_soft_grace_period,
            parse_go_duration,
        )
        .and_then(|t| t.with_min_reclaim(&n.eviction_minimum_reclaim))
        .map_err(anyhow::Error::msg)?,
        eviction_max_pod_grace_period: n.eviction_max_pod_grace_period,
        network,
        dns,
        cluster_flags: Default::default(),
    })
}

/// The node's DNS settings, validated before anything binds.
fn dns_config(
    cluster_dns: Vec<IpAddr>,
    cluster_domain: String,
    resolv_conf: Option<PathBuf>,
    interface: String,
) -> Result<distro_dns::Config> {
    distro_dns::zone(&cluster_domain)?;
    if interface.is_empty() || interface.len() > 15 || interface.contains(['/', ' ']) {
        bail!("--dns-interface {interface:?} is not a link name (1-15 characters)");
    }
    Ok(distro_dns::Config {
        cluster_dns,
        cluster_domain,
        resolv_conf,
        interface,
        ..distro_dns::Config::default()
    })
}

/// Runs a long-lived command whose shutdown flag turns true on SIGTERM or SIGINT.
fn run_until_signal<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    run_async(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        command(rx).await
    })
}

fn run_async(fut: impl std::future::Future<Output = Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("distro: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn server_config(a: ServerArgs) -> Result<distro_server::Config> {
    let mode = u32::from_str_radix(a.write_kubeconfig_mode.trim_start_matches("0o"), 8)
        .with_context(|| {
            format!(
                "--write-kubeconfig-mode {:?} is not an octal file mode like 0600",
                a.write_kubeconfig_mode
            )
        })?;
    if mode > 0o777 {
        bail!(
            "--write-kubeconfig-mode {:o} is not a file mode (at most 0777)",
            mode
        );
    }
    if a.horizontal_pod_autoscaler_sync_period.is_zero() {
        bail!("--horizontal-pod-autoscaler-sync-period must be greater than 0");
    }
    let tolerance = a.horizontal_pod_autoscaler_tolerance;
    if tolerance.is_nan() || tolerance < 0.0 {
        bail!("--horizontal-pod-autoscaler-tolerance must not be negative");
    }
    for (flag, value) in [
        ("--cluster-cidr", &a.cluster_cidr),
        ("--service-cidr", &a.service_cidr),
    ] {
        for part in value.split(',') {
            let ok = part.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
            });
            if !ok {
                bail!("{flag} {part:?} is not a CIDR like 10.42.0.0/16");
            }
        }
    }
    // As k3s: the cluster DNS is the service range's 10th address unless given.
    let cluster_dns = match a.cluster_dns {
        Some(ip) => ip,
        None => nth_ip(&a.service_cidr, 10).with_context(|| {
            format!(
                "--service-cidr {} has no 10th address for the cluster DNS; give --cluster-dns",
                a.service_cidr
            )
        })?,
    };
    let node_ipam = distro_server::NodeIpamSettings::parse(
        &a.cluster_cidr,
        a.node_cidr_mask_size_ipv4,
        a.node_cidr_mask_size_ipv6,
    )?;
    let agent = if a.disable_agent {
        None
    } else {
        let network = node_network(&a.node, &a.cluster_cidr)?;
        Some(node_config(
            a.node,
            a.data_dir.clone(),
            true,
            network,
            (vec![cluster_dns], a.cluster_domain.clone()),
        )?)
    };
    Ok(distro_server::Config {
        agent,
        node_ipam,
        data_dir: a.data_dir,
        bind_address: a.bind_address,
        https_port: a.https_listen_port,
        advertise_address: a.advertise_address,
        tls_sans: a.tls_san,
        cluster_cidr: a.cluster_cidr,
        service_cidr: a.service_cidr,
        cluster_dns,
        cluster_domain: a.cluster_domain,
        write_kubeconfig: a.write_kubeconfig,
        write_kubeconfig_mode: mode,
        disable: a.disable,
        disable_agent: a.disable_agent,
        token: a.token,
        node_monitor_grace_period: a.node_monitor_grace_period,
        terminated_pod_gc_threshold: a.terminated_pod_gc_threshold,
        hpa: distro_server::HpaSettings {
            sync_period: a.horizontal_pod_autoscaler_sync_period,
            downscale_stabilization: a.horizontal_pod_autoscaler_downscale_stabilization,
            tolerance: a.horizontal_pod_autoscaler_tolerance,
        },
        metrics_resolution: a.metrics_resolution,
    })
}

/// The `n`th address of the first range of `cidrs` (comma-separated), if inside it.
fn nth_ip(cidrs: &str, n: u32) -> Option<IpAddr> {
    let (addr, len) = cidrs.split(',').next()?.trim().split_once('/')?;
    let len: u32 = len.parse().ok()?;
    let (base, bits) = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32u32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    let host_bits = bits.checked_sub(len)?;
    let host_mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
    if host_bits == 0 || u128::from(n) > host_mask {
        return None;
    }
    let ip = (base & !host_mask) | u128::from(n);
    Some(match bits {
        32 => IpAddr::V4(u32::try_from(ip).ok()?.into()),
        _ => IpAddr::V6(ip.into()),
    })
}

/// Inserts the config file's keys as flags right after the subcommand, so the command line wins.
fn with_config_file(args: Vec<OsString>) -> Result<Vec<OsString>> {
    // Find --config on the command line (or the env var), without full parsing.
    let mut path = std::env::var_os("DISTRO_CONFIG_FILE").map(PathBuf::from);
    let mut explicit = path.is_some();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            path = it.next().map(PathBuf::from);
            explicit = true;
        } else if let Some(p) = s.strip_prefix("--config=") {
            path = Some(PathBuf::from(p));
            explicit = true;
        }
    }
    let path = path.unwrap_or_else(|| PathBuf::from("/etc/distro/config.yaml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(args),
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    let Some(sub_idx) = args.iter().position(|a| a == "server" || a == "agent") else {
        return Ok(args);
    };
    let doc: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing config file {}", path.display()))?;
    let Some(map) = doc.as_mapping() else {
        if doc.is_null() {
            return Ok(args);
        }
        bail!(
            "config file {} must be a mapping of flag names to values",
            path.display()
        );
    };
    let mut extra = Vec::new();
    for (k, v) in map {
        let key = k
            .as_str()
            .with_context(|| format!("config file {}: keys must be strings", path.display()))?;
        let values: Vec<String> = match v {
            serde_yaml::Value::Sequence(items) => {
                items.iter().map(scalar).collect::<Result<_>>()?
            }
            other => vec![scalar(other)?],
        };
        for value in values {
            if value == "true" && matches!(v, serde_yaml::Value::Bool(_)) {
                extra.push(OsString::from(format!("--{key}")));
            } else if !matches!(v, serde_yaml::Value::Bool(false)) {
                extra.push(OsString::from(format!("--{key}={value}")));
            }
        }
    }
    let mut out = args[..=sub_idx].to_vec();
    out.extend(extra);
    out.extend_from_slice(&args[sub_idx + 1..]);
    Ok(out)
}

fn scalar(v: &serde_yaml::Value) -> Result<String> {
    Ok(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => bail!("config value {other:?} must be a string, number or boolean"),
    })
}

/// `distro kubectl ...`: exec kubectl with the admin kubeconfig unless one is chosen already.
fn kubectl(args: Vec<OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("kubectl");
    cmd.args(&args);
    if std::env::var_os("KUBECONFIG").is_none() {
        cmd.env("KUBECONFIG", "/etc/distro/distro.yaml");
    }
    let err = cmd.exec();
    eprintln!("distro kubectl: running kubectl: {err} (install kubectl, or put it on PATH)");
    ExitCode::from(127)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_dns_is_the_tenth_service_address() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().ok();
        assert_eq!(super::nth_ip("10.43.0.0/16", 10), ip("10.43.0.10"));
        assert_eq!(
            super::nth_ip("10.61.0.0/16,fd61::/112", 10),
            ip("10.61.0.10")
        );
        assert_eq!(super::nth_ip("fd43::/112", 10), ip("fd43::a"));
        assert_eq!(super::nth_ip("10.0.0.0/29", 10), None);
        assert_eq!(super::nth_ip("10.0.0.1/32", 10), None);
    }
}
