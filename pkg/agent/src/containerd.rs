//! `distro agent --runtime containerd`: the real node. containerd is started under the
//! supervisor with distro's configuration and the air-gap images imported
//! ([`distro_cri::runtime::NodeRuntime`]); then the node joins, registers its Node with this
//! machine's capacity and nodeInfo (Ready: containerd answered), renews its Lease, runs
//! the kubelet's pod workers ([`distro_kubelet::worker`]) and serves the kubelet API
//! ([`distro_kubelet::server::cri`]) with a serving certificate from the cluster CA.
//!
//! # Limits
//! - The pod network is the node's podCIDR (from the server's node IPAM controller, waited
//!   for after registration) on a local bridge ([`distro_network::cni`]), reaching other
//!   nodes' pods through the overlay ([`crate::overlay`]). Services are proxied by
//!   [`distro_network::proxy`].
//! - A containerd that stops answering turns the node NotReady within a status period
//!   ([`crate::status`]); the supervisor restarts it.

use std::collections::BTreeMap;
use std::sync::Arc;

use distro_kubelet::pod::container::ContainerSettings;
use distro_kubelet::pod::dns::{parse_resolv_conf, ClusterDns};
use distro_kubelet::pod::sandbox::SandboxSettings;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio::sync::watch;

use crate::{join, node, Config, Error};

/// Pod syncs in flight at once. Upstream's kubelet has no such cap (one goroutine per pod):
/// a sync mostly waits on containerd and the API, so a burst of new pods must start them in
/// parallel, not a few at a time (at 8, 100 pods queued for tens of seconds behind each
/// other's sandboxes). The cap only keeps a burst of thousands from flooding containerd.
const KUBELET_CONCURRENCY: usize = 128;

/// Starts containerd, joins, registers the Node and runs the pod workers until `shutdown`,
/// then stops them and containerd, leaving running containers for the next start to adopt.
///
/// # Errors
/// containerd not starting or not ready ([`Error::Runtime`]), and the join and registration
/// errors of [`crate::run`].
pub async fn run(
    config: Config,
    runtime: distro_cri::runtime::RuntimeConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let rt = distro_cri::runtime::NodeRuntime::start(runtime)
        .await
        .map_err(Error::Runtime)?;
    let served = serve(&config, &rt, shutdown).await;
    let stopped = rt.stop().await.map_err(Error::Runtime);
    tracing::info!("agent stopped");
    served?;
    stopped
}

async fn serve(
    config: &Config,
    rt: &distro_cri::runtime::NodeRuntime,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let version = rt.cri.version().await.map_err(Error::Runtime)?;
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    tracing::info!(
        runtime = %runtime_version,
        images = rt.first_import.imported.len(),
        "container runtime ready"
    );
    let dir = config.data_dir.join("agent");
    let ca_pem = join::trusted_ca(&config.server, &config.token).await?;
    {
        let (dir, ca) = (dir.clone(), ca_pem.clone());
        tokio::task::spawn_blocking(move || {
            join::write_private(&dir, &dir.join("server-ca.crt"), ca.as_bytes())
        })
        .await??;
    }
    let bootstrap = join::bootstrap_client(&config.server, &ca_pem, &config.token)?;
    let name = config.node_name.clone();
    let password = join::node_password(&dir).await?;
    let pair = join::node_credentials(&bootstrap, &dir, &ca_pem, &name, &password).await?;
    let (client, connections) = join::node_client(&config.server, &ca_pem, &name, &pair)?;
    // Also with stored credentials: the name may have been taken meanwhile.
    join::claim_node_name(&client, &name, &password).await?;
    // The cluster's ranges, DNS and domain as the server has them, unless flags say.
    let config = &crate::clusterconfig::adopt(&client, config.clone()).await?;
    let node_ip = match config.network.node_ips.first() {
        Some(ip) => *ip,
        None => crate::kubelet::node_ip(&config.server).await?,
    };

    let real = node::RealNode {
        host_ip: node_ip.to_string(),
        capacity: capacity(),
        runtime_version,
        os_image: os_image(),
    };
    // The kubelet API, with a serving certificate through the CSR API as simulated nodes
    // get theirs; bound before registering so the Node names its port.
    let listener =
        crate::kubelet::Listener::bind(&client, &dir, &name, node_ip, config.kubelet_port, &ca_pem)
            .await?;
    // The node's one Event recorder, cloned into each part that writes Events.
    let events = node::recorder(&client, &name);
    let registered = node::register(
        (client.clone(), connections.clone()),
        config,
        &name,
        listener.addr,
        Some(&real),
        events.clone(),
    )
    .await?;
    tracing::info!(node = %name, "nodes registered and Ready");
    let Some(pod_cidrs) = crate::network::wait_pod_cidrs(&client, &name, shutdown.clone()).await?
    else {
        return Ok(());
    };
    tracing::info!(node = %name, cidrs = ?pod_cidrs, "pod CIDR assigned");
    let overlay = crate::overlay::setup(&config.network, &name, node_ip, &pod_cidrs).await?;
    let mtu = overlay.as_ref().and_then(|o| o.mtu);
    let conflist = write_cni_config(config, rt, &pod_cidrs, mtu).await?;
    tracing::info!(path = %conflist.display(), "pod network configured");

    let restrict_oom_score_adj =
        tokio::task::spawn_blocking(|| !distro_cri::host::negative_oom_score_allowed()).await?;
    let memory = real
        .capacity
        .get("memory")
        .and_then(|q| q.0.strip_suffix("Ki"))
        .and_then(|k| k.parse::<i64>().ok())
        .map_or(0, |k| k * 1024);
    let root_dir = dir.join("kubelet");
    // Node status and pressure eviction (status.rs, eviction.rs); admission reads it too.
    let (pressure_tx, pressure_rx) = watch::channel(crate::status::Pressure::default());
    // The pods' hostIPs follow the node's address (crate::address).
    let (host_ips_tx, host_ips) = watch::channel(vec![real.host_ip.clone()]);
    let settings = distro_kubelet::worker::Settings {
        node_name: name.clone(),
        host_ips,
        root_dir: root_dir.clone(),
        sandbox: SandboxSettings {
            cluster_dns: ClusterDns {
                servers: config
                    .dns
                    .cluster_dns
                    .iter()
                    .map(|ip| ip.to_string())
                    .collect(),
                domain: config.dns.cluster_domain.clone(),
            },
            host_dns: parse_resolv_conf(
                &tokio::fs::read_to_string(
                    config
                        .dns
                        .resolv_conf
                        .as_deref()
                        .unwrap_or(std::path::Path::new(distro_dns::DEFAULT_RESOLV_CONF)),
                )
                .await
                .unwrap_or_default(),
            ),
            pod_log_root: dir.join("logs/pods"),
        },
        container: ContainerSettings {
            memory_capacity: memory,
            restrict_oom_score_adj,
            seccomp_root: root_dir.join("seccomp"),
            seccomp_default: false,
        },
        max_concurrent_syncs: KUBELET_CONCURRENCY,
        allocatable: real.capacity.clone(),
        pressure: pressure_rx.clone(),
        eviction_grace: Default::default(),
        events: events.clone(),
    };
    let api = Arc::new(distro_kubelet::server::KubeletApi {
        provider: distro_kubelet::server::cri::CriNode::new(
            &name,
            client.clone(),
            rt.cri.clone(),
            settings.sandbox.pod_log_root.clone(),
        ),
        authorizer: distro_kubelet::server::SarAuthorizer::new(client.clone(), &name),
    });
    let kubelet_port = listener.addr.port();
    let (address, follow_address) = crate::address::follow(
        config.server.clone(),
        node_ip,
        !config.network.node_ips.is_empty(),
        connections,
        shutdown.clone(),
    );
    let follow_address = {
        let host_ips = crate::address::publish_host_ips(address.clone(), host_ips_tx);
        async move {
            tokio::join!(follow_address, host_ips);
        }
    };
    let server = crate::address::serve_kubelet(
        listener,
        address.clone(),
        client.clone(),
        dir.clone(),
        ca_pem.clone(),
        api,
        shutdown.clone(),
    );
    let machine = {
        let (name, ip, port) = (name.clone(), real.host_ip.clone(), kubelet_port);
        tokio::task::spawn_blocking(move || crate::status::Machine::read(&name, &ip, port)).await?
    };
    let reporter = crate::status::Reporter {
        client: client.clone(),
        cri: rt.cri.clone(),
        machine,
        capacity: real.capacity.clone(),
        root_dir: root_dir.clone(),
        reserved: config.eviction_hard.clone(),
        pressure: pressure_rx,
        address: address.clone(),
    };
    let eviction = crate::eviction::Manager {
        client: client.clone(),
        events: registered.events.clone(),
        node: name.clone(),
        thresholds: config.eviction_hard.clone(),
        soft: config.eviction_soft.clone(),
        max_pod_grace_period: config.eviction_max_pod_grace_period,
        grace: settings.eviction_grace.clone(),
        transition_period: config.eviction_pressure_transition_period,
        root_dir: root_dir.clone(),
        image_dir: rt.paths.root.clone(),
        log_dir: dir.join("logs/pods"),
        pressure: pressure_tx,
    };
    let leases = node::renew_leases(vec![Arc::new(registered)], shutdown.clone());
    let overlay = {
        let (client, shutdown) = (client.clone(), shutdown.clone());
        async move {
            if let Some(o) = overlay {
                o.run(client, address, shutdown).await;
            }
        }
    };
    let image_gc = distro_kubelet::images::service::run(
        rt.cri.clone(),
        distro_kubelet::images::service::GcSettings {
            policy: config.image_gc.clone(),
            image_fs: rt.paths.root.clone(),
            state_file: root_dir.join("image-gc-state.json"),
            pause_image: config
                .containerd
                .as_ref()
                .map(|r| r.pause_image.clone())
                .unwrap_or_default(),
            node_name: name.clone(),
            events,
        },
        shutdown.clone(),
    );
    // Container log rotation runs beside image GC (both tend the node's disk).
    let image_gc = {
        let rotation = distro_kubelet::log_rotation::run(
            rt.cri.clone(),
            config.container_logs.clone(),
            shutdown.clone(),
        );
        async move {
            tokio::join!(image_gc, rotation);
        }
    };
    let proxy = distro_network::proxy::run(client.clone(), proxy_config(config), shutdown.clone());
    let dns = serve_dns(config, client.clone(), shutdown.clone());
    let policy = crate::policy::run(config, client.clone(), shutdown.clone());
    let manifests = dir.join("pod-manifests");
    let workers = distro_kubelet::worker::run_with_static_pods(
        client,
        rt.cri.clone(),
        settings,
        Some(manifests),
        shutdown.clone(),
    );
    let (_, result, _, _, (), (), proxied, (), (), (), ()) = tokio::join!(
        leases,
        workers,
        reporter.run(shutdown.clone()),
        eviction.run(shutdown),
        image_gc,
        overlay,
        proxy,
        server,
        dns,
        policy,
        follow_address
    );
    if let Err(e) = proxied {
        tracing::warn!(error = %e, "service proxy stopped");
    }
    result.map_err(Error::Kubelet)
}

/// The service proxy's settings. Its nftables table is `distro-proxy`, or
/// `distro-proxy-<bridge>` with a non-default `--cni-bridge`, so several nodes sharing one
/// kernel (tests) each own their table, as they each own their bridge.
fn proxy_config(config: &Config) -> distro_network::proxy::Config {
    let table = match config.cni_bridge.as_str() {
        "cni0" => "distro-proxy".to_string(),
        bridge => format!("distro-proxy-{bridge}"),
    };
    distro_network::proxy::Config {
        node_name: config.node_name.clone(),
        table,
        cluster_cidrs: config.network.cluster_cidrs.clone(),
    }
}

/// The node's cluster DNS server until shutdown. Its failure (e.g. port 53 taken) is logged
/// and leaves the rest of the node running: pods still run, only names fail.
async fn serve_dns(
    config: &Config,
    client: distro_client::Client,
    shutdown: watch::Receiver<bool>,
) {
    if !config.dns.enabled {
        return;
    }
    if let Err(e) = distro_dns::run(config.dns.clone(), client, shutdown).await {
        tracing::error!(error = %e, "cluster DNS is not served on this node");
    }
}

/// Writes the CNI conflist for the node's pod ranges, so containerd gives non-hostNetwork
/// pods addresses on the node's bridge through distro's plugin; `mtu` is the overlay's.
async fn write_cni_config(
    config: &Config,
    rt: &distro_cri::runtime::NodeRuntime,
    pod_cidrs: &[IpNet],
    mtu: Option<u32>,
) -> Result<std::path::PathBuf, Error> {
    let invalid = |what: String| Error::Io {
        path: rt.paths.cni_conf.clone(),
        source: std::io::Error::other(what),
    };
    let v4 = |n: &IpNet| match n {
        IpNet::V4(n) => Some(*n),
        IpNet::V6(_) => None,
    };
    let v6 = |n: &IpNet| match n {
        IpNet::V6(n) => Some(*n),
        IpNet::V4(_) => None,
    };
    let pod_cidr = pod_cidrs.iter().find_map(v4).ok_or_else(|| {
        invalid(format!(
            "the node's pod CIDRs {pod_cidrs:?} have no IPv4 range"
        ))
    })?;
    let pod_cidr_v6 = pod_cidrs.iter().find_map(v6);
    let cluster = &config.network;
    let network = distro_network::cni::NodeNetwork {
        pod_cidr,
        pod_cidr_v6,
        // A range outside --cluster-cidr (set by hand) is still pod-to-pod traffic.
        cluster_cidr: cluster
            .cluster_cidr_for(true)
            .and_then(|c| v4(&c))
            .filter(|c| c.contains(&pod_cidr))
            .unwrap_or(pod_cidr),
        cluster_cidr_v6: pod_cidr_v6.map(|p| {
            cluster
                .cluster_cidr_for(false)
                .and_then(|c| v6(&c))
                .filter(|c| c.contains(&p))
                .unwrap_or(p)
        }),
        mtu,
        data_dir: config.data_dir.join("agent/cni/ipam"),
        bridge: config.cni_bridge.clone(),
    };
    // containerd runs the `loopback` plugin for every sandbox: this binary answers it too.
    let (bin_dir, exe) = (rt.paths.cni_bin.clone(), rt.paths.cni_bin.join("distro"));
    tokio::task::spawn_blocking(move || {
        let link = bin_dir.join(distro_network::cni::loopback::PLUGIN_TYPE);
        let target = std::fs::read_link(&exe)?;
        if std::fs::read_link(&link).ok() != Some(target.clone()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link)?;
        }
        Ok::<_, std::io::Error>(())
    })
    .await?
    .map_err(|source| Error::Io {
        path: rt.paths.cni_bin.clone(),
        source,
    })?;
    let conf_dir = rt.paths.cni_conf.clone();
    tokio::task::spawn_blocking(move || distro_network::cni::write_conflist(&conf_dir, &network))
        .await?
        .map_err(|e| Error::Io {
            path: rt.paths.cni_conf.clone(),
            source: std::io::Error::other(e.to_string()),
        })
}

/// This machine's capacity as a kubelet reports it: CPUs, memory (`MemTotal`), 110 pods.
pub fn capacity() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    if let Some(kib) = mem_total_kib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
    {
        out.insert("memory".to_string(), Quantity(format!("{kib}Ki")));
    }
    out
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `PRETTY_NAME` of `/etc/os-release`, as nodeInfo's `osImage`.
pub fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_meminfo() {
        assert_eq!(
            mem_total_kib("MemTotal:        4026532 kB\nMemFree: 1 kB\n"),
            Some(4026532)
        );
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert!(capacity().contains_key("memory"));
    }
}
