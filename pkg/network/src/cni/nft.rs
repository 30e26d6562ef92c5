//! Masquerade and hostPort DNAT in one nftables table that distro owns (`table inet
//! distro-cni` by default), driven through the `nft` binary.
//!
//! Layout, as the reference `portmap` (nftables backend) and `bridge`'s ipMasq build it:
//!
//! ```text
//! table inet distro-cni {
//!   chain prerouting  { type nat hook prerouting priority dstnat;  fib daddr type local jump hostports }
//!   chain output      { type nat hook output priority -100;        fib daddr type local jump hostports }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr <podCIDR> ip daddr != { <clusterCIDR>, 224.0.0.0/4 } masquerade   # "distro-cni masquerade <bridge>"
//!     ip saddr { 127.0.0.0/8, <podIP> } ip daddr <podIP> masquerade              # "<containerID>": localhost + hairpin
//!   }
//!   chain hostports { [ip daddr <hostIP>] tcp dport <hostPort> dnat ip to <podIP>:<port>   # "<containerID>" }
//! }
//! ```
//!
//! Per-container rules carry the container id as their comment, so DEL finds and deletes
//! exactly those (by handle, from `nft -j -a list table`). Every change is one `nft -f`
//! transaction, so the table is never seen half-changed, and no other table is ever touched.
//! A lock file in the data dir serialises list-then-change between concurrent plugin calls.
//!
//! A dual-stack node gets the same rules for IPv6 (`ip6`), except from `::1`: the kernel has
//! no `route_localnet` for IPv6, so, as with the reference portmap, localhost reaches
//! hostPorts over IPv4 only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Stdio};

use ipnet::{Ipv4Net, Ipv6Net};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use super::config::PortMapping;
use crate::error::{Error, Result};

/// One rule of the table: its chain, handle and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleRef {
    /// Chain name.
    pub chain: String,
    /// nft rule handle.
    pub handle: u64,
    /// Rule comment ("" when none).
    pub comment: String,
}

/// What one ADD wants in the table.
#[derive(Debug, Clone)]
pub(crate) struct Desired<'a> {
    /// nft table name (family inet).
    pub table: &'a str,
    /// Bridge name (names the masquerade rule).
    pub bridge: &'a str,
    /// `(podCIDR, clusterCIDR)` when masquerading.
    pub masq: Option<(Ipv4Net, Ipv4Net)>,
    /// `(podCIDRv6, clusterCIDRv6)` when masquerading a dual-stack node.
    pub masq6: Option<(Ipv6Net, Ipv6Net)>,
    /// Container id (the per-container rules' comment).
    pub container_id: &'a str,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// The pod's IPv6 address on a dual-stack node.
    pub pod_ip6: Option<Ipv6Addr>,
    /// The pod's hostPorts.
    pub mappings: &'a [PortMapping],
}

fn masq_comment(bridge: &str) -> String {
    format!("distro-cni masquerade {bridge}")
}

/// The script that creates the table's chains and jumps (only when the table is new).
fn base(table: &str) -> String {
    format!(
        "add table inet {table}\n\
         add chain inet {table} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain inet {table} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain inet {table} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         add chain inet {table} hostports\n\
         add rule inet {table} prerouting fib daddr type local jump hostports\n\
         add rule inet {table} output fib daddr type local jump hostports\n"
    )
}

/// Deletes every rule whose comment is `comment`.
fn delete_script(table: &str, existing: &[RuleRef], comment: &str) -> String {
    existing
        .iter()
        .filter(|r| r.comment == comment)
        .map(|r| format!("delete rule inet {table} {} handle {}\n", r.chain, r.handle))
        .collect()
}

/// Renders the transaction for an ADD: base chains if the table is new (`existing` is
/// `None`), the node's masquerade rule if missing, and the container's rules replacing any
/// it already had.
pub(crate) fn render_add(d: &Desired<'_>, existing: Option<&[RuleRef]>) -> String {
    let t = d.table;
    let mut s = String::new();
    let existing = match existing {
        Some(rules) => rules,
        None => {
            s.push_str(&base(t));
            &[]
        }
    };
    if let Some((pod, cluster)) = d.masq {
        let comment = masq_comment(d.bridge);
        if !existing.iter().any(|r| r.comment == comment) {
            s.push_str(&format!(
                "add rule inet {t} postrouting ip saddr {pod} ip daddr != {{ {cluster}, 224.0.0.0/4 }} masquerade comment \"{comment}\"\n"
            ));
        }
    }
    if let Some((pod, cluster)) = d.masq6 {
        let comment = format!("{} v6", masq_comment(d.bridge));
        if !existing.iter().any(|r| r.comment == comment) {
            s.push_str(&format!(
                "add rule inet {t} postrouting ip6 saddr {pod} ip6 daddr != {{ {cluster}, ff00::/8 }} masquerade comment \"{comment}\"\n"
            ));
        }
    }
    s.push_str(&delete_script(t, existing, d.container_id));
    let id = d.container_id;
    let (ip, ip6) = (d.pod_ip, d.pod_ip6);
    let (mut any4, mut any6) = (false, false);
    for pm in d.mappings {
        let (proto, hp, cp) = (pm.proto(), pm.host_port, pm.container_port);
        let (v4, v6) = match pm.host_ip() {
            Some(IpAddr::V4(h)) => (Some(format!("ip daddr {h} ")), None),
            Some(IpAddr::V6(h)) => (None, Some(format!("ip6 daddr {h} "))),
            None => (Some(String::new()), Some(String::new())),
        };
        if let Some(daddr) = v4 {
            any4 = true;
            s.push_str(&format!(
                "add rule inet {t} hostports {daddr}{proto} dport {hp} dnat ip to {ip}:{cp} comment \"{id}\"\n"
            ));
        }
        // A mapping reaches the pod's IPv6 address only when it has one (the reference
        // portmap skips mappings whose family the pod lacks).
        if let (Some(daddr), Some(ip6)) = (v6, ip6) {
            any6 = true;
            s.push_str(&format!(
                "add rule inet {t} hostports {daddr}{proto} dport {hp} dnat ip6 to [{ip6}]:{cp} comment \"{id}\"\n"
            ));
        }
    }
    if any4 {
        // Localhost clients (with route_localnet) and the pod reaching itself through its
        // own hostPort (hairpin) need their source rewritten so replies come back through us.
        s.push_str(&format!(
            "add rule inet {t} postrouting ip saddr {{ 127.0.0.0/8, {ip} }} ip daddr {ip} masquerade comment \"{id}\"\n"
        ));
    }
    if let (true, Some(ip6)) = (any6, ip6) {
        s.push_str(&format!(
            "add rule inet {t} postrouting ip6 saddr {ip6} ip6 daddr {ip6} masquerade comment \"{id}\"\n"
        ));
    }
    s
}

/// Parses `nft -j -a list table` output into the table's rules.
pub(crate) fn parse_rules(json: &str) -> Result<Vec<RuleRef>> {
    let v: Value = serde_json::from_str(json).map_err(|e| Error::Nft {
        step: "parsing `nft -j list table`",
        message: e.to_string(),
    })?;
    Ok(v["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter_map(|r| {
                    Some(RuleRef {
                        chain: r["chain"].as_str()?.to_string(),
                        handle: r["handle"].as_u64()?,
                        comment: r["comment"].as_str().unwrap_or_default().to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The `nft` program: from `PATH`, else the usual sbin directories (a runtime may run plugins
/// with a bare environment, and sbin is often missing from a non-root `PATH`).
fn nft() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join("nft"))
        .find(|p| p.is_file());
    Command::new(found.unwrap_or_else(|| "nft".into()))
}

/// The table's rules, or `None` if the table does not exist.
fn list(table: &str) -> Result<Option<Vec<RuleRef>>> {
    let out = nft()
        .args(["-j", "-a", "list", "table", "inet", table])
        .output()
        .map_err(|e| Error::Nft {
            step: "running `nft list table` (is nftables installed?)",
            message: e.to_string(),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such file or directory") {
            return Ok(None);
        }
        return Err(Error::Nft {
            step: "listing the table",
            message: err.trim().to_string(),
        });
    }
    parse_rules(&String::from_utf8_lossy(&out.stdout)).map(Some)
}

/// Applies a script as one transaction (`nft -f -`); also the service proxy's way to nft.
pub(crate) fn apply(step: &'static str, script: &str) -> Result<()> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Nft {
            step,
            message: format!("running nft: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| Error::Nft {
            step,
            message: format!("writing to nft: {e}"),
        })?;
    }
    let out = child.wait_with_output().map_err(|e| Error::Nft {
        step,
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(Error::Nft {
            step,
            message: format!(
                "{} (script: {:?})",
                String::from_utf8_lossy(&out.stderr).trim(),
                // nft names the failing line itself; a proxy's script can be megabytes.
                script.get(..2000).unwrap_or(script)
            ),
        });
    }
    Ok(())
}

fn lock(data_dir: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io("creating", data_dir, e))?;
    let path = data_dir.join("nft.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("opening nft lock", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| Error::io("locking", &path, errno.into()))
}

/// Installs the node's masquerade rule and the container's hostPorts.
///
/// # Errors
/// [`Error::Nft`] when nft is missing or refuses the change (nothing is half-applied).
pub(crate) fn add(data_dir: &Path, d: &Desired<'_>) -> Result<()> {
    if d.masq.is_none() && d.masq6.is_none() && d.mappings.is_empty() {
        return Ok(());
    }
    let _lock = lock(data_dir)?;
    let existing = list(d.table)?;
    apply("adding pod NAT rules", &render_add(d, existing.as_deref()))
}

/// Removes the container's rules; a missing table or no rules is success.
///
/// # Errors
/// [`Error::Nft`] when nft fails for another reason.
pub(crate) fn del(data_dir: &Path, table: &str, container_id: &str) -> Result<()> {
    let _lock = lock(data_dir)?;
    match list(table)? {
        Some(rules) => apply(
            "removing pod NAT rules",
            &delete_script(table, &rules, container_id),
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(hp: u16, cp: u16, proto: &str, host_ip: &str) -> PortMapping {
        PortMapping {
            host_port: hp,
            container_port: cp,
            protocol: proto.into(),
            host_ip: host_ip.into(),
        }
    }

    fn desired<'a>(mappings: &'a [PortMapping]) -> Desired<'a> {
        Desired {
            table: "t",
            bridge: "cni0",
            masq: Some((
                "10.42.0.0/24".parse().unwrap(),
                "10.42.0.0/16".parse().unwrap(),
            )),
            container_id: "abc",
            pod_ip: Ipv4Addr::new(10, 42, 0, 5),
            pod_ip6: None,
            masq6: None,
            mappings,
        }
    }

    #[test]
    fn new_table_gets_chains_masquerade_and_hostports() {
        let maps = [
            pm(8080, 80, "", ""),
            pm(5353, 53, "UDP", "192.168.1.2"),
            pm(1, 2, "tcp", "::1"),
        ];
        let s = render_add(&desired(&maps), None);
        assert!(s.starts_with("add table inet t\n"));
        assert!(s.contains("add rule inet t output fib daddr type local jump hostports\n"));
        assert!(s.contains(
            "postrouting ip saddr 10.42.0.0/24 ip daddr != { 10.42.0.0/16, 224.0.0.0/4 } masquerade comment \"distro-cni masquerade cni0\""
        ));
        assert!(s.contains(
            "add rule inet t hostports tcp dport 8080 dnat ip to 10.42.0.5:80 comment \"abc\"\n"
        ));
        assert!(s.contains(
            "add rule inet t hostports ip daddr 192.168.1.2 udp dport 5353 dnat ip to 10.42.0.5:53 comment \"abc\"\n"
        ));
        assert!(
            !s.contains("dport 1 "),
            "IPv6 hostIP must be skipped for an IPv4 pod"
        );
        assert!(s.contains(
            "ip saddr { 127.0.0.0/8, 10.42.0.5 } ip daddr 10.42.0.5 masquerade comment \"abc\""
        ));
    }

    #[test]
    fn dual_stack_pods_get_ipv6_rules_too() {
        let maps = [
            pm(8080, 80, "", ""),
            pm(53, 53, "udp", "fd00::9"),
            pm(54, 54, "udp", "10.0.0.9"),
        ];
        let mut d = desired(&maps);
        d.pod_ip6 = Some("fd42::5".parse().unwrap());
        d.masq6 = Some(("fd42::/64".parse().unwrap(), "fd42::/56".parse().unwrap()));
        let s = render_add(&d, Some(&[]));
        assert!(s.contains("ip6 saddr fd42::/64 ip6 daddr != { fd42::/56, ff00::/8 } masquerade"));
        assert!(s.contains("hostports tcp dport 8080 dnat ip to 10.42.0.5:80 comment"));
        assert!(s.contains("hostports tcp dport 8080 dnat ip6 to [fd42::5]:80 comment"));
        assert!(s.contains("hostports ip6 daddr fd00::9 udp dport 53 dnat ip6 to [fd42::5]:53"));
        assert!(
            !s.contains("dport 53 dnat ip to"),
            "an IPv6 hostIP gets no IPv4 rule"
        );
        assert!(
            !s.contains("dport 54 dnat ip6"),
            "an IPv4 hostIP gets no IPv6 rule"
        );
        assert!(s.contains("ip6 saddr fd42::5 ip6 daddr fd42::5 masquerade"));
    }

    #[test]
    fn existing_table_keeps_base_and_replaces_the_containers_rules() {
        let existing = vec![
            RuleRef {
                chain: "prerouting".into(),
                handle: 5,
                comment: String::new(),
            },
            RuleRef {
                chain: "postrouting".into(),
                handle: 7,
                comment: masq_comment("cni0"),
            },
            RuleRef {
                chain: "hostports".into(),
                handle: 9,
                comment: "abc".into(),
            },
            RuleRef {
                chain: "hostports".into(),
                handle: 10,
                comment: "other".into(),
            },
        ];
        let s = render_add(&desired(&[]), Some(&existing));
        assert_eq!(s, "delete rule inet t hostports handle 9\n");
    }

    #[test]
    fn parses_rules_with_comments() {
        let json = r#"{"nftables":[{"metainfo":{}},{"table":{"name":"t"}},
            {"rule":{"family":"inet","table":"t","chain":"hostports","handle":12,"comment":"abc","expr":[]}},
            {"rule":{"family":"inet","table":"t","chain":"prerouting","handle":3,"expr":[]}}]}"#;
        let rules = parse_rules(json).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0],
            RuleRef {
                chain: "hostports".into(),
                handle: 12,
                comment: "abc".into()
            }
        );
        assert_eq!(rules[1].comment, "");
    }
}
