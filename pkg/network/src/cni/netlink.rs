//! Links, addresses and routes through rtnetlink, in the host or in a pod's network namespace.
//!
//! The plugin is a one-shot process, so each call runs on a current-thread tokio runtime (no
//! worker pool to start). Work inside a pod's namespace runs on a dedicated thread that enters
//! the namespace with `setns` first, so the netlink socket it opens belongs to that namespace
//! and the process' other threads stay in the host's.

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};

pub(crate) use crate::netlink::{delete_link, link_by_name};
use crate::netlink::{errno, exists_ok, nl, ENODEV, ESRCH};

/// Runs `f` with a netlink handle in the calling thread's network namespace.
pub(crate) fn on_host<T>(f: impl AsyncFnOnce(Handle) -> Result<T>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::io("starting the netlink runtime", "netlink", e))?;
    rt.block_on(async move {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("opening a netlink socket", "netlink", e))?;
        let conn = tokio::spawn(conn);
        let out = f(handle).await;
        conn.abort();
        out
    })
}

/// Opens a network namespace file (`CNI_NETNS`).
pub(crate) fn open_netns(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| Error::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` with a netlink handle inside the network namespace `netns`, on its own thread.
pub(crate) fn in_netns<T: Send>(
    netns: &Path,
    ns: &File,
    f: impl AsyncFnOnce(Handle) -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                path: netns.to_path_buf(),
                source: e.into(),
            })?;
            on_host(f)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Link("the network namespace thread panicked".into())))
    })
}

/// The link's hardware address as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

fn kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k),
            _ => None,
        }),
        _ => None,
    })
}

/// The bridge a link is attached to, by index.
pub(crate) fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Addresses (both families) with prefix length on a link.
pub(crate) async fn addresses(h: &Handle, index: u32) -> Result<Vec<IpNet>> {
    let msgs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses"))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .flat_map(|m| {
            m.attributes.iter().filter_map(move |a| match a {
                AddressAttribute::Address(ip) => IpNet::new(*ip, m.header.prefix_len).ok(),
                _ => None,
            })
        })
        .collect())
}

/// Ensures the bridge exists, is up and holds `gateway` (address with the pod CIDR's prefix).
///
/// # Errors
/// [`Error::Link`] when a non-bridge link has the name; [`Error::Netlink`] otherwise.
pub(crate) async fn ensure_bridge(
    h: &Handle,
    name: &str,
    mtu: Option<u32>,
    gateways: &[IpNet],
) -> Result<LinkMessage> {
    let link = match link_by_name(h, name).await? {
        Some(l) => l,
        None => {
            // A bridge without an explicit MAC takes the lowest MAC of its ports, so the pods'
            // gateway MAC would change as pods come and go and their ARP caches go stale.
            let mut b = LinkBridge::new(name).address(bridge_mac(name)).up();
            if let Some(m) = mtu {
                b = b.mtu(m);
            }
            exists_ok(h.link().add(b.build()).execute().await)
                .map_err(nl(format!("creating bridge {name}")))?;
            link_by_name(h, name)
                .await?
                .ok_or_else(|| Error::Link(format!("bridge {name} vanished after creation")))?
        }
    };
    if kind(&link) != Some(&InfoKind::Bridge) {
        return Err(Error::Link(format!(
            "{name:?} already exists but is not a bridge"
        )));
    }
    let index = link.header.index;
    let have = addresses(h, index).await?;
    for gateway in gateways.iter().filter(|g| !have.contains(g)) {
        add_address(h, index, *gateway, name).await?;
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("setting bridge {name} up")))?;
    Ok(link)
}

/// Adds an address (already present is fine). IPv6 addresses skip duplicate address
/// detection: they are unique by IPAM, and DAD would leave them unusable for a second or two.
async fn add_address(h: &Handle, index: u32, net: IpNet, link: &str) -> Result<()> {
    let mut req = h.address().add(index, net.addr(), net.prefix_len());
    if net.addr().is_ipv6() {
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    exists_ok(req.execute().await).map_err(nl(format!("adding {net} to {link}")))
}

/// A stable, locally administered unicast MAC for a bridge, from its name.
pub(crate) fn bridge_mac(name: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut mac = digest[..6].to_vec();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// Host half of ADD: a veth pair whose host end joins the bridge (hairpin as asked) and whose
/// other end (`peer`) is moved into the namespace `ns`.
pub(crate) async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &str,
    mtu: Option<u32>,
    bridge_index: u32,
    hairpin: bool,
    ns: &File,
) -> Result<LinkMessage> {
    // A stale pair from an earlier ADD of this container (or a half-done one) goes first.
    delete_link(h, host).await?;
    delete_link(h, peer).await?;
    let mut veth = LinkVeth::new(host, peer);
    if let Some(m) = mtu {
        veth = veth.mtu(m);
    }
    h.link()
        .add(veth.build())
        .execute()
        .await
        .map_err(nl(format!("creating veth pair {host}/{peer}")))?;
    let host_link = link_by_name(h, host)
        .await?
        .ok_or_else(|| Error::Link(format!("veth {host} vanished after creation")))?;
    let index = host_link.header.index;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .controller(bridge_index)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!("attaching {host} to the bridge")))?;
    h.link()
        .set_port(LinkBridgePort::new(index).hairpin(hairpin).build())
        .execute()
        .await
        .map_err(nl(format!("setting hairpin mode on {host}")))?;
    let peer_link = link_by_name(h, peer)
        .await?
        .ok_or_else(|| Error::Link(format!("veth {peer} vanished after creation")))?;
    use std::os::fd::AsRawFd;
    h.link()
        .set(
            LinkUnspec::new_with_index(peer_link.header.index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(nl(format!(
            "moving {peer} into the pod's network namespace"
        )))?;
    Ok(host_link)
}

/// Namespace half of ADD: renames `peer` to `ifname`, sets MTU, address and the routes, and
/// brings `lo` up. Returns the container interface.
pub(crate) async fn configure_pod_side(
    h: &Handle,
    peer: &str,
    ifname: &str,
    mtu: Option<u32>,
    addresses: &[IpNet],
    default_gw: Option<Ipv4Addr>,
    default_gw6: Option<Ipv6Addr>,
) -> Result<LinkMessage> {
    if link_by_name(h, ifname).await?.is_some() {
        return Err(Error::Link(format!(
            "container veth name {ifname:?} already exists in the network namespace"
        )));
    }
    let link = link_by_name(h, peer).await?.ok_or_else(|| {
        Error::Link(format!(
            "veth {peer} is missing from the pod's network namespace"
        ))
    })?;
    let index = link.header.index;
    let mut set = LinkUnspec::new_with_index(index).name(ifname.to_string());
    if let Some(m) = mtu {
        set = set.mtu(m);
    }
    h.link()
        .set(set.build())
        .execute()
        .await
        .map_err(nl(format!("renaming {peer} to {ifname}")))?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("setting {ifname} up")))?;
    for address in addresses {
        add_address(h, index, *address, ifname).await?;
    }
    if let Some(lo) = link_by_name(h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(nl("setting lo up"))?;
    }
    if let Some(gw) = default_gw {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        exists_ok(h.route().add(route).execute().await)
            .map_err(nl(format!("adding default route via {gw}")))?;
    }
    if let Some(gw) = default_gw6 {
        let route = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        exists_ok(h.route().add(route).execute().await)
            .map_err(nl(format!("adding default route via {gw}")))?;
    }
    link_by_name(h, ifname)
        .await?
        .ok_or_else(|| Error::Link(format!("{ifname} vanished after configuration")))
}

/// IPv4 routes of the main table: (destination, gateway, output interface).
pub(crate) async fn routes_v4(h: &Handle) -> Result<Vec<(Ipv4Net, Option<Ipv4Addr>, Option<u32>)>> {
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing routes"))?;
    Ok(msgs
        .iter()
        .map(|m| {
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gw = None;
            let mut oif = None;
            for a in &m.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            let net = Ipv4Net::new(dst, m.header.destination_prefix_length).unwrap_or_default();
            (net, gw, oif)
        })
        .collect())
}

/// Whether an error means "the namespace or process is gone" (DEL then has nothing to do).
pub(crate) fn is_gone(e: &Error) -> bool {
    match e {
        Error::Netns { source, .. } => {
            source.kind() == std::io::ErrorKind::NotFound || source.raw_os_error() == Some(22)
        }
        Error::Netlink { source, .. } => matches!(errno(source), Some(ENODEV) | Some(ESRCH)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bridge_mac_is_stable_local_unicast() {
        let mac = super::bridge_mac("cni0");
        assert_eq!(mac, super::bridge_mac("cni0"));
        assert_ne!(mac, super::bridge_mac("cni1"));
        assert_eq!(mac.len(), 6);
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered, unicast");
    }
}
