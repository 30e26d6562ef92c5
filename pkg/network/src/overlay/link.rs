//! Applies the overlay's [`Wanted`] state with rtnetlink, on a handle the caller owns (the
//! agent keeps one netlink connection for the overlay's lifetime).
//!
//! Every step is idempotent: entries are added with "replace", stale ones deleted, so a
//! repeated or interrupted convergence does no harm.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::{Route, Vtep, Wanted, ROUTE_PROTOCOL, VNI, VXLAN_PORT};
use crate::error::{Error, Result};

pub use crate::netlink::{delete_link, link_by_name};
use crate::netlink::{errno, gone_ok, nl, EEXIST};

fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

fn vxlan_info(link: &LinkMessage) -> Option<&Vec<InfoVxlan>> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v),
            _ => None,
        }),
        _ => None,
    })
}

fn is_vxlan(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan))),
        _ => false,
    })
}

/// The interface holding `ip` (the node's uplink): its index and MTU.
///
/// # Errors
/// [`Error::Link`] when no interface has the address (a wrong `--node-ip`).
pub async fn uplink(h: &Handle, ip: IpAddr) -> Result<(u32, u32)> {
    let addrs: Vec<_> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing addresses"))?;
    let index = addrs
        .iter()
        .find(|m| {
            m.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip)
            })
        })
        .map(|m| m.header.index)
        .ok_or_else(|| {
            Error::Link(format!(
                "no interface has the node address {ip}; check --node-ip"
            ))
        })?;
    let link = h
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(nl(format!("looking up link {index}")))?
        .ok_or_else(|| Error::Link(format!("link {index} of {ip} vanished")))?;
    Ok((index, link_mtu(&link).unwrap_or(1500)))
}

/// What the VXLAN device of one family looks like.
#[derive(Debug, Clone)]
pub struct VxlanSpec {
    /// Device name ([`super::DEVICE_V4`] or [`super::DEVICE_V6`]).
    pub name: String,
    /// The node's address the tunnel is sent from.
    pub local: IpAddr,
    /// The uplink's index.
    pub uplink: u32,
    /// The device MTU (uplink − overhead).
    pub mtu: u32,
    /// The device MAC (published to peers).
    pub mac: [u8; 6],
    /// The VTEP address: the node's pod range's first address, as /32 or /128.
    pub vtep: IpNet,
}

/// Creates (or re-creates, when its local address, VNI, port or MAC differ) the VXLAN device,
/// sets its MTU and VTEP address and brings it up. Returns its index.
///
/// # Errors
/// [`Error::Netlink`] when the kernel refuses, [`Error::Link`] when a non-VXLAN link has the
/// name.
pub async fn ensure_vxlan(h: &Handle, spec: &VxlanSpec) -> Result<u32> {
    let name = &spec.name;
    if let Some(link) = link_by_name(h, name).await? {
        if !is_vxlan(&link) {
            return Err(Error::Link(format!(
                "{name:?} exists but is not a VXLAN device"
            )));
        }
        let info = vxlan_info(&link).cloned().unwrap_or_default();
        let local_ok = info.iter().any(|i| match (i, spec.local) {
            (InfoVxlan::Local(a), IpAddr::V4(b)) => *a == b,
            (InfoVxlan::Local6(a), IpAddr::V6(b)) => *a == b,
            _ => false,
        });
        let same = local_ok
            && info.contains(&InfoVxlan::Id(VNI))
            && info.contains(&InfoVxlan::Port(VXLAN_PORT))
            && link
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::Address(m) if m[..] == spec.mac[..]));
        if !same {
            // The node's address changed (DHCP) or the device is someone else's setup.
            tracing::info!(device = %name, local = %spec.local, "re-creating the VXLAN device");
            gone_ok(h.link().del(link.header.index).execute().await)
                .map_err(nl(format!("deleting link {name}")))?;
        }
    }
    if link_by_name(h, name).await?.is_none() {
        let mut b = LinkVxlan::new(name, VNI)
            .dev(spec.uplink)
            .port(VXLAN_PORT)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.to_vec());
        b = match spec.local {
            IpAddr::V4(a) => b.local(a),
            IpAddr::V6(a) => b.local6(a),
        };
        match h.link().add(b.build()).execute().await {
            Err(e) if errno(&e) == Some(EEXIST) => {}
            other => other.map_err(nl(format!("creating VXLAN device {name}")))?,
        }
    }
    let link = link_by_name(h, name)
        .await?
        .ok_or_else(|| Error::Link(format!("{name} vanished after creation")))?;
    let index = link.header.index;
    if link_mtu(&link) != Some(spec.mtu) {
        h.link()
            .set(LinkUnspec::new_with_index(index).mtu(spec.mtu).build())
            .execute()
            .await
            .map_err(nl(format!("setting the MTU of {name}")))?;
    }
    // Exactly the VTEP address: a previous pod range's address goes.
    let addrs: Vec<_> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl(format!("listing addresses of {name}")))?;
    let mut have = false;
    for m in addrs {
        let addr = m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(x) => Some(*x),
            _ => None,
        });
        if addr == Some(spec.vtep.addr()) && m.header.prefix_len == spec.vtep.prefix_len() {
            have = true;
        } else if addr.is_some_and(|a| a.is_ipv4() == spec.vtep.addr().is_ipv4()) {
            let is_link_local =
                matches!(addr, Some(IpAddr::V6(a)) if a.segments()[0] & 0xffc0 == 0xfe80);
            if !is_link_local {
                gone_ok(h.address().del(m).execute().await)
                    .map_err(nl(format!("removing a stale address of {name}")))?;
            }
        }
    }
    if !have {
        match h
            .address()
            .add(index, spec.vtep.addr(), spec.vtep.prefix_len())
            .execute()
            .await
        {
            Err(e) if errno(&e) == Some(EEXIST) => {}
            other => other.map_err(nl(format!("adding {} to {name}", spec.vtep)))?,
        }
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl(format!("setting {name} up")))?;
    Ok(index)
}

fn route_message(r: &Route, device: Option<u32>) -> Result<RouteMessage> {
    fn invalid<E: std::fmt::Debug>(r: &Route) -> impl FnOnce(E) -> Error + '_ {
        move |e| Error::Link(format!("route {} via {}: {e:?}", r.dst, r.via))
    }
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix_len())
        .map_err(invalid(r))?
        .gateway(r.via)
        .map_err(invalid(r))?
        .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
    if let (true, Some(dev)) = (r.vxlan, device) {
        b = b.output_interface(dev);
    }
    let mut m = b.build();
    if r.vxlan {
        m.header.flags |= RouteFlags::Onlink;
    }
    Ok(m)
}

/// The routes of family `v4` this module added earlier (marked with [`ROUTE_PROTOCOL`]), by
/// destination.
async fn our_routes(h: &Handle, v4: bool) -> Result<Vec<(IpNet, RouteMessage)>> {
    let query = if v4 {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv6Addr>::new().build()
    };
    let msgs: Vec<RouteMessage> = h
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing routes"))?;
    Ok(msgs
        .into_iter()
        .filter(|m| u8::from(m.header.protocol) == ROUTE_PROTOCOL)
        .filter_map(|m| {
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(IpAddr::V4(*d)),
                RouteAttribute::Destination(RouteAddress::Inet6(d)) => Some(IpAddr::V6(*d)),
                _ => None,
            })?;
            let net = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
            Some((net, m))
        })
        .collect())
}

fn neighbour_ip(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        // FDB entries (family AF_BRIDGE) come back as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(&b[..]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&b[..]).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

fn neighbour_mac(m: &NeighbourMessage) -> Option<&[u8]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => Some(&l[..]),
        _ => None,
    })
}

/// Converges family `v4` to `wanted`: routes (through `device` for VXLAN), and on the VXLAN
/// `device` its neighbour and FDB entries. Adds or replaces what is wanted, deletes what this
/// module made before and is no longer wanted.
///
/// # Errors
/// [`Error::Netlink`] on the first refused request (the caller retries the whole
/// convergence later).
pub async fn converge(h: &Handle, device: Option<u32>, v4: bool, wanted: &Wanted) -> Result<()> {
    if let Some(dev) = device {
        converge_vteps(h, dev, v4, &wanted.vteps).await?;
    }
    let have = our_routes(h, v4).await?;
    let want: BTreeSet<IpNet> = wanted.routes.iter().map(|r| r.dst).collect();
    for r in &wanted.routes {
        let msg = route_message(r, device)?;
        h.route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding route {} via {}", r.dst, r.via)))?;
    }
    for (net, msg) in have {
        if !want.contains(&net) {
            gone_ok(h.route().del(msg).execute().await)
                .map_err(nl(format!("deleting route {net}")))?;
        }
    }
    Ok(())
}

async fn converge_vteps(h: &Handle, dev: u32, v4: bool, vteps: &[Vtep]) -> Result<()> {
    // Neighbour (ARP/NDP) entries: remote VTEP IP → its MAC, permanent.
    for v in vteps {
        h.neighbours()
            .add(dev, v.ip)
            .link_layer_address(&v.mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding neighbour {} on the VXLAN device", v.ip)))?;
    }
    let neighbours: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        })
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing neighbours"))?;
    let wanted_ips: BTreeSet<IpAddr> = vteps.iter().map(|v| v.ip).collect();
    for m in neighbours {
        if m.header.ifindex != dev || m.header.state != NeighbourState::Permanent {
            continue;
        }
        if neighbour_ip(&m).is_some_and(|ip| !wanted_ips.contains(&ip)) {
            gone_ok(h.neighbours().del(m).execute().await)
                .map_err(nl("deleting a stale neighbour of the VXLAN device"))?;
        }
    }
    // FDB entries: remote VTEP MAC → remote node address.
    for v in vteps {
        h.neighbours()
            .add_bridge(dev, &v.mac)
            .destination(v.public)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(nl(format!(
                "adding FDB entry {} dst {}",
                super::format_mac(&v.mac),
                v.public
            )))?;
    }
    let fdb: Vec<NeighbourMessage> = h
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .map_err(nl("listing FDB entries"))?;
    let wanted_fdb: BTreeSet<(Vec<u8>, IpAddr)> =
        vteps.iter().map(|v| (v.mac.to_vec(), v.public)).collect();
    for m in fdb {
        if m.header.ifindex != dev {
            continue;
        }
        let Some(mac) = neighbour_mac(&m).map(<[u8]>::to_vec) else {
            continue;
        };
        let dst = neighbour_ip(&m);
        let keep = dst.is_some_and(|d| wanted_fdb.contains(&(mac.clone(), d)));
        if !keep && mac.iter().any(|b| *b != 0) {
            gone_ok(h.neighbours().del(m).execute().await)
                .map_err(nl("deleting a stale FDB entry of the VXLAN device"))?;
        }
    }
    Ok(())
}

/// One netlink connection for the overlay's lifetime, its task ended on drop.
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Netlink {
    /// Opens a netlink socket in this process' network namespace; the connection runs as a
    /// task on the current tokio runtime.
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be opened.
    pub fn open() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| Error::io("opening a netlink socket", "netlink", e))?;
        let task = tokio::spawn(conn);
        Ok(Netlink { handle, task })
    }

    /// The request handle.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}
