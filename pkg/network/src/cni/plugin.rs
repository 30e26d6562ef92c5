//! ADD, DEL and CHECK: the bridge + host-local + portmap work for one container interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::config::NetConf;
use super::ipam::Store;
use super::netlink;
use super::nft;
use super::types::{CniResult, Dns, Interface, IpConfig, Route};
use super::Args;
use crate::error::{Error, Result};

/// Host-side veth name and the temporary name of its peer, both from a hash of the container
/// id and interface, so DEL finds the host end again even when the namespace is gone.
pub(crate) fn veth_names(container_id: &str, ifname: &str) -> (String, String) {
    let digest = Sha256::digest(format!("{container_id}\0{ifname}"));
    let h = hex::encode(&digest[..4]);
    (format!("veth{h}"), format!("dtmp{h}"))
}

fn ipam(conf: &NetConf) -> Store {
    Store::new(&conf.data_dir, &conf.name, conf.pod_cidr)
}

/// The IPv6 store of a dual-stack node (same directory, own cursor).
fn ipam6(conf: &NetConf) -> Option<Store> {
    conf.pod_cidr_v6
        .map(|v6| Store::new(&conf.data_dir, &conf.name, v6))
}

fn netns_of(args: &Args) -> Result<&Path> {
    args.netns.as_deref().ok_or(Error::MissingEnv("CNI_NETNS"))
}

/// The pod's addresses: IPv4, and IPv6 on a dual-stack node.
struct Addresses {
    v4: Ipv4Addr,
    v6: Option<Ipv6Addr>,
}

fn allocate(conf: &NetConf, args: &Args) -> Result<Addresses> {
    let (id, ifname) = (&args.container_id, &args.ifname);
    let IpAddr::V4(v4) = ipam(conf).allocate(id, ifname)? else {
        return Err(Error::Link(
            "IPAM returned an IPv6 address for the IPv4 range".into(),
        ));
    };
    let v6 = match ipam6(conf).map(|s| s.allocate(id, ifname)).transpose()? {
        Some(IpAddr::V6(v6)) => Some(v6),
        Some(IpAddr::V4(_)) => {
            return Err(Error::Link(
                "IPAM returned an IPv4 address for the IPv6 range".into(),
            ))
        }
        None => None,
    };
    Ok(Addresses { v4, v6 })
}

fn release(conf: &NetConf, args: &Args) -> Result<()> {
    ipam(conf).release(&args.container_id, &args.ifname)?;
    if let Some(s) = ipam6(conf) {
        s.release(&args.container_id, &args.ifname)?;
    }
    Ok(())
}

/// ADD: address, bridge, veth, routes; returns the result to print.
///
/// # Errors
/// Any failure after the address was reserved releases it again, so a failed ADD leaks nothing
/// a later DEL would not also clean.
pub(crate) fn add(conf: &NetConf, args: &Args) -> Result<CniResult> {
    let netns = netns_of(args)?;
    let ns = netlink::open_netns(netns)?;
    let result = allocate(conf, args).and_then(|ips| setup(conf, args, netns, &ns, &ips));
    if result.is_err() {
        // Best effort: the reservations, veth and rules must not outlive a failed ADD.
        let _ = release(conf, args);
        let (host, _) = veth_names(&args.container_id, &args.ifname);
        let _ = netlink::on_host(async |h| netlink::delete_link(&h, &host).await);
        let _ = nft::del(&conf.data_dir, &conf.nft_table, &args.container_id);
    }
    result
}

fn net(ip: IpAddr, prefix: u8) -> Result<IpNet> {
    IpNet::new(ip, prefix).map_err(|e| Error::InvalidConfig(e.to_string()))
}

fn setup(
    conf: &NetConf,
    args: &Args,
    netns: &Path,
    ns: &std::fs::File,
    ips: &Addresses,
) -> Result<CniResult> {
    let gw = conf.gateway();
    let gw6 = conf.gateway_v6();
    let prefix = conf.pod_cidr.prefix_len();
    let mut gateways = vec![net(gw.into(), prefix)?];
    let mut addresses = vec![net(ips.v4.into(), prefix)?];
    if let (Some(v6), Some(gw6), Some(cidr6)) = (ips.v6, gw6, conf.pod_cidr_v6) {
        gateways.push(net(gw6.into(), cidr6.prefix_len())?);
        addresses.push(net(v6.into(), cidr6.prefix_len())?);
    }
    let (host_name, peer_name) = veth_names(&args.container_id, &args.ifname);

    let (bridge, host) = netlink::on_host(async |h| {
        let bridge = netlink::ensure_bridge(&h, &conf.bridge, conf.mtu, &gateways).await?;
        let host = netlink::create_veth(
            &h,
            &host_name,
            &peer_name,
            conf.mtu,
            bridge.header.index,
            conf.hairpin_mode,
            ns,
        )
        .await?;
        Ok((bridge, host))
    })?;
    let default_gw = conf.is_default_gateway.then_some(gw);
    let default_gw6 = gw6.filter(|_| conf.is_default_gateway);
    let pod = netlink::in_netns(netns, ns, async |h| {
        netlink::configure_pod_side(
            &h,
            &peer_name,
            &args.ifname,
            conf.mtu,
            &addresses,
            default_gw,
            default_gw6,
        )
        .await
    })?;
    super::sysctl::enable_forwarding()?;
    if ips.v6.is_some() {
        super::sysctl::enable_forwarding_v6()?;
    }
    let mappings = &conf.runtime_config.port_mappings;
    if !mappings.is_empty() {
        super::sysctl::enable_route_localnet(&conf.bridge)?;
    }
    let cluster = conf.cluster_cidr.unwrap_or(conf.pod_cidr);
    let masq6 = conf.pod_cidr_v6.map(|pod6| {
        let cluster6 = conf.cluster_cidr_v6.unwrap_or(pod6);
        (pod6.trunc(), cluster6.trunc())
    });
    nft::add(
        &conf.data_dir,
        &nft::Desired {
            table: &conf.nft_table,
            bridge: &conf.bridge,
            masq: conf
                .ip_masq
                .then(|| (conf.pod_cidr.trunc(), cluster.trunc())),
            masq6: masq6.filter(|_| conf.ip_masq),
            container_id: &args.container_id,
            pod_ip: ips.v4,
            pod_ip6: ips.v6,
            mappings,
        },
    )?;

    let mut routes = Vec::new();
    if let Some(gw) = default_gw {
        routes.push(Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gw.to_string()),
        });
    }
    if let Some(gw) = default_gw6 {
        routes.push(Route {
            dst: "::/0".into(),
            gw: Some(gw.to_string()),
        });
    }
    let gateways_of = |a: &IpNet| {
        if a.addr().is_ipv4() {
            gw.to_string()
        } else {
            gw6.map(|g| g.to_string()).unwrap_or_default()
        }
    };
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: conf.bridge.clone(),
                mac: netlink::mac(&bridge),
                sandbox: None,
            },
            Interface {
                name: host_name,
                mac: netlink::mac(&host),
                sandbox: None,
            },
            Interface {
                name: args.ifname.clone(),
                mac: netlink::mac(&pod),
                sandbox: Some(netns.display().to_string()),
            },
        ],
        ips: addresses
            .iter()
            .map(|a| IpConfig {
                version: None,
                address: a.to_string(),
                gateway: Some(gateways_of(a)),
                interface: Some(2),
            })
            .collect(),
        routes,
        dns: Dns::default(),
    }
    .for_version(&conf.cni_version))
}

/// DEL: releases the address and removes the interface. Everything already gone is success,
/// as the spec requires (the runtime may call DEL more than once, or after a failed ADD).
///
/// # Errors
/// Only failures to remove something that does exist.
pub(crate) fn del(conf: &NetConf, args: &Args) -> Result<()> {
    nft::del(&conf.data_dir, &conf.nft_table, &args.container_id)?;
    release(conf, args)?;
    if let Some(netns) = args.netns.as_deref().filter(|p| !p.as_os_str().is_empty()) {
        let inside = netlink::open_netns(netns).and_then(|ns| {
            netlink::in_netns(netns, &ns, async |h| {
                netlink::delete_link(&h, &args.ifname).await
            })
        });
        match inside {
            Ok(()) => {}
            Err(e) if netlink::is_gone(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let (host, peer) = veth_names(&args.container_id, &args.ifname);
    netlink::on_host(async |h| {
        netlink::delete_link(&h, &host).await?;
        netlink::delete_link(&h, &peer).await
    })
}

/// CHECK: the container interface, its address and default route, and the IPAM reservation
/// still match `prevResult`.
///
/// # Errors
/// [`Error::Check`] naming the first difference.
pub(crate) fn check(conf: &NetConf, args: &Args) -> Result<()> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::InvalidConfig("required prevResult missing".into()))?;
    let prev: CniResult = serde_json::from_value(prev.clone()).map_err(Error::Decode)?;
    let netns = netns_of(args)?;
    let (iface_index, iface) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == args.ifname && i.sandbox.is_some())
        .ok_or_else(|| {
            Error::Check(format!(
                "prevResult has no interface {} in a sandbox",
                args.ifname
            ))
        })?;
    let want: Vec<IpNet> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface == Some(iface_index))
        .filter_map(|ip| ip.address.parse().ok())
        .collect();
    let reserved = [
        ipam(conf).get(&args.container_id, &args.ifname)?,
        ipam6(conf)
            .map(|s| s.get(&args.container_id, &args.ifname))
            .transpose()?
            .flatten(),
    ];
    for net in &want {
        if !reserved.contains(&Some(net.addr())) {
            return Err(Error::Check(format!(
                "address {} is not reserved for container {} in {}",
                net.addr(),
                args.container_id,
                ipam(conf).dir().display()
            )));
        }
    }
    let ns = netlink::open_netns(netns)?;
    let gw = conf.is_default_gateway.then(|| conf.gateway());
    netlink::in_netns(netns, &ns, async |h| {
        let link = netlink::link_by_name(&h, &args.ifname)
            .await?
            .ok_or_else(|| {
                Error::Check(format!(
                    "interface {} is missing from {}",
                    args.ifname,
                    netns.display()
                ))
            })?;
        if !iface.mac.is_empty() && !netlink::mac(&link).eq_ignore_ascii_case(&iface.mac) {
            return Err(Error::Check(format!(
                "interface {} has MAC {}, prevResult says {}",
                args.ifname,
                netlink::mac(&link),
                iface.mac
            )));
        }
        let have = netlink::addresses(&h, link.header.index).await?;
        for net in &want {
            if !have.contains(net) {
                return Err(Error::Check(format!(
                    "interface {} lacks address {net}",
                    args.ifname
                )));
            }
        }
        if let Some(gw) = gw {
            let routes = netlink::routes_v4(&h).await?;
            if !routes.iter().any(|(dst, via, oif)| {
                dst.prefix_len() == 0 && *via == Some(gw) && *oif == Some(link.header.index)
            }) {
                return Err(Error::Check(format!(
                    "no default route via {gw} on {}",
                    args.ifname
                )));
            }
        }
        Ok(())
    })?;
    let (host, _) = veth_names(&args.container_id, &args.ifname);
    netlink::on_host(async |h| {
        let bridge = netlink::link_by_name(&h, &conf.bridge)
            .await?
            .ok_or_else(|| Error::Check(format!("bridge {} is missing", conf.bridge)))?;
        let veth = netlink::link_by_name(&h, &host)
            .await?
            .ok_or_else(|| Error::Check(format!("host veth {host} is missing")))?;
        if netlink::controller(&veth) != Some(bridge.header.index) {
            return Err(Error::Check(format!(
                "host veth {host} is not attached to {}",
                conf.bridge
            )));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let (a, pa) = veth_names("abc", "eth0");
        assert_eq!((a.clone(), pa.clone()), veth_names("abc", "eth0"));
        assert!(a.len() <= 15 && pa.len() <= 15 && a.starts_with("veth"));
        assert_ne!(a, veth_names("abd", "eth0").0);
        assert_ne!(a, veth_names("abc", "eth1").0);
    }
}
