//! The cluster DNS address on a dummy interface of the node, as NodeLocal DNSCache does: the
//! kernel then delivers pods' queries to this node's server directly, without the service
//! proxy and without leaving the node. Where the kernel has no dummy driver, a bridge
//! without ports stands in (local addresses work the same on it).

use std::net::IpAddr;

use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkBridge, LinkDummy, LinkUnspec};

use distro_network::netlink::{errno, EEXIST};

use crate::Error;

const EOPNOTSUPP: i32 = -95;

fn nl(step: String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink { step, source }
}

/// Runs `f` with a netlink connection owned for its duration.
async fn with_handle<T>(f: impl AsyncFnOnce(&Handle) -> Result<T, Error>) -> Result<T, Error> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Io {
        step: "opening a netlink socket".into(),
        source,
    })?;
    let conn = tokio::spawn(conn);
    let out = f(&handle).await;
    conn.abort();
    out
}

/// distro-network's netlink failures as ours (its link helpers fail only with `Netlink`).
fn from_network(e: distro_network::Error) -> Error {
    match e {
        distro_network::Error::Netlink { step, source } => Error::Netlink { step, source },
        other => Error::Interface(other.to_string()),
    }
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    distro_network::netlink::link_by_name(h, name)
        .await
        .map_err(from_network)
}

/// Ensures the dummy link `name` exists, is up and holds each address (/32 or /128).
///
/// # Errors
/// [`Error::Netlink`] when a step is refused (e.g. without CAP_NET_ADMIN).
pub async fn ensure(name: &str, ips: &[IpAddr]) -> Result<(), Error> {
    with_handle(async |h| {
        let link = match link_by_name(h, name).await? {
            Some(l) => l,
            None => {
                match h
                    .link()
                    .add(LinkDummy::new(name).up().build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if errno(&e) == Some(EEXIST) => {}
                    // Kernels built without the dummy driver (some VMs): a bridge without
                    // ports holds local addresses just as well.
                    Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                        match h
                            .link()
                            .add(LinkBridge::new(name).up().build())
                            .execute()
                            .await
                        {
                            Ok(()) => {}
                            Err(e) if errno(&e) == Some(EEXIST) => {}
                            Err(e) => return Err(nl(format!("creating link {name}"))(e)),
                        }
                    }
                    Err(e) => return Err(nl(format!("creating dummy link {name}"))(e)),
                }
                link_by_name(h, name)
                    .await?
                    .ok_or_else(|| Error::Interface(format!("{name} vanished after creation")))?
            }
        };
        let index = link.header.index;
        for ip in ips {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            let mut req = h.address().add(index, *ip, prefix);
            if ip.is_ipv6() {
                // Unique by configuration; DAD would leave it unusable for a second or two.
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            match req.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(nl(format!("adding {ip} to {name}"))(e)),
            }
        }
        h.link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(nl(format!("setting {name} up")))
    })
    .await
}

/// Deletes the link `name` if it exists.
///
/// # Errors
/// [`Error::Netlink`] when the deletion is refused.
pub async fn remove(name: &str) -> Result<(), Error> {
    with_handle(async |h| {
        distro_network::netlink::delete_link(h, name)
            .await
            .map_err(from_network)
    })
    .await
}
