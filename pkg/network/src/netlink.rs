//! rtnetlink helpers shared by the CNI plugin ([`crate::cni`]), the overlay
//! ([`crate::overlay`]) and the node's cluster DNS interface (`distro_dns`): kernel error
//! codes, idempotent adds and deletes, and looking up or deleting a link by name.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::Handle;

use crate::error::{Error, Result};

/// `-ENOENT` as netlink reports it.
pub const ENOENT: i32 = -2;
/// `-ESRCH` as netlink reports it.
pub const ESRCH: i32 = -3;
/// `-EEXIST` as netlink reports it.
pub const EEXIST: i32 = -17;
/// `-ENODEV` as netlink reports it.
pub const ENODEV: i32 = -19;

/// The kernel's (negative) errno of a refused request, if that is what `e` is.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get()),
        _ => None,
    }
}

/// [`Error::Netlink`] for a failed `step`.
pub(crate) fn nl(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let step = step.into();
    move |source| Error::Netlink { step, source }
}

/// Treats "already exists" as success (a concurrent or repeated call got there first).
pub(crate) fn exists_ok(
    r: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

/// Treats "already gone" as success when deleting.
pub(crate) fn gone_ok(
    r: std::result::Result<(), rtnetlink::Error>,
) -> std::result::Result<(), rtnetlink::Error> {
    match r {
        Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH | ENODEV)) => Ok(()),
        other => other,
    }
}

/// The link called `name`, if there is one.
///
/// # Errors
/// [`Error::Netlink`] when the kernel refuses the lookup.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

/// Deletes the link `name` if it exists (one that goes meanwhile is fine).
///
/// # Errors
/// [`Error::Netlink`] when the kernel refuses.
pub async fn delete_link(h: &Handle, name: &str) -> Result<()> {
    if let Some(link) = link_by_name(h, name).await? {
        gone_ok(h.link().del(link.header.index).execute().await)
            .map_err(nl(format!("deleting link {name}")))?;
    }
    Ok(())
}
