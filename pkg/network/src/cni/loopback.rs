//! The `loopback` plugin: containerd 1.6's CRI runs `<bin_dir>/loopback` for every pod
//! sandbox before the configured network, and fails the sandbox when it is missing. k3s
//! ships it in its multi-call binary; distro answers it here (the binary is linked as
//! `loopback` in the CNI bin dir): ADD sets `lo` up in the pod's namespace and reports it,
//! DEL and CHECK have nothing to undo or verify.

use rtnetlink::LinkUnspec;
use serde_json::{json, Value};

use super::netlink::{in_netns, link_by_name, open_netns};
use super::Args;
use crate::error::Result;
use crate::Error;

/// The plugin `type` this module answers.
pub const PLUGIN_TYPE: &str = "loopback";

/// Whether the network configuration on stdin is for the loopback plugin.
pub fn is_loopback(stdin: &[u8]) -> bool {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_string))
        .is_some_and(|t| t == PLUGIN_TYPE)
}

/// Runs one loopback invocation; `version` is the configuration's `cniVersion`.
///
/// # Errors
/// A missing `CNI_NETNS` on ADD, an unopenable namespace, a netlink failure.
pub fn dispatch(args: &Args, version: &str) -> Result<Option<Value>> {
    match args.command.as_str() {
        "ADD" => {
            let netns = args.netns.clone().ok_or(Error::MissingEnv("CNI_NETNS"))?;
            let ns = open_netns(&netns)?;
            in_netns(&netns, &ns, async |h| {
                if let Some(lo) = link_by_name(&h, "lo").await? {
                    h.link()
                        .set(LinkUnspec::new_with_index(lo.header.index).up().build())
                        .execute()
                        .await
                        .map_err(|source| Error::Netlink {
                            step: "setting lo up".into(),
                            source,
                        })?;
                }
                Ok(())
            })?;
            let mut ip4 = json!({"address": "127.0.0.1/8", "interface": 0});
            let mut ip6 = json!({"address": "::1/128", "interface": 0});
            if version.starts_with("0.") {
                ip4["version"] = json!("4");
                ip6["version"] = json!("6");
            }
            Ok(Some(json!({
                "cniVersion": version,
                "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": netns}],
                "ips": [ip4, ip6],
                "dns": {},
            })))
        }
        "DEL" | "CHECK" => Ok(None),
        other => Err(Error::InvalidEnv {
            name: "CNI_COMMAND",
            reason: format!("unknown command {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_its_configuration() {
        assert!(is_loopback(
            br#"{"cniVersion":"0.3.1","name":"cni-loopback","type":"loopback"}"#
        ));
        assert!(!is_loopback(br#"{"cniVersion":"1.0.0","type":"distro"}"#));
        assert!(!is_loopback(b"not json"));
    }
}
