//! Publishes this server's cluster-wide network settings in `kube-system/distro-config`, the
//! ConfigMap agents read after joining ([`distro_agent::clusterconfig`]), so an agent needs no
//! `--cluster-cidr`/`--cluster-dns`/`--cluster-domain` of its own. Rewritten at every start,
//! so the ConfigMap always says what this server was started with.

use distro_agent::clusterconfig::{ClusterConfig, NAME, NAMESPACE};
use distro_apiserver::resources::Registry;
use distro_apiserver::rest::Storage;
use distro_apiserver::Error;
use ipnet::IpNet;
use serde_json::json;

use crate::Config;

/// What agents are told, from the server's configuration.
///
/// # Errors
/// [`Error::BadRequest`] for a `--service-cidr` that does not parse (the CLI checked it).
pub fn of(config: &Config) -> Result<ClusterConfig, Error> {
    let service_cidrs = config
        .service_cidr
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<IpNet>()
                .map_err(|_| Error::BadRequest(format!("--service-cidr {s:?} is not a CIDR")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ClusterConfig {
        cluster_cidrs: config.node_ipam.cluster_cidrs.clone(),
        service_cidrs,
        cluster_dns: vec![config.cluster_dns],
        cluster_domain: config.cluster_domain.clone(),
    })
}

/// Creates or updates the ConfigMap.
///
/// # Errors
/// Storage errors.
pub async fn publish(storage: &Storage, registry: &Registry, config: &Config) -> Result<(), Error> {
    let data = of(config)?.to_data();
    let obj = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "distro"}},
        "data": data,
    });
    crate::bootstrap::upsert(storage, registry, ("", "configmaps"), obj, &["data"]).await
}
