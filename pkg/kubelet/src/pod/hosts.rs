//! The kubelet-managed `/etc/hosts` of a pod, as upstream writes it.

use k8s_openapi::api::core::v1::HostAlias;

/// Upstream's header and IPv4/IPv6 boilerplate of a pod-network hosts file.
const HEADER: &str = "# Kubernetes-managed hosts file.\n\
127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// The hosts file of a pod on the pod network: boilerplate, one line per pod IP naming the
/// pod (`hostname.subdomain.ns.svc.domain` first when `host_domain` is set), then the
/// `hostAliases`.
pub fn pod_hosts_file(
    pod_ips: &[String],
    hostname: &str,
    host_domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(HEADER);
    for ip in pod_ips {
        match host_domain.filter(|d| !d.is_empty()) {
            Some(d) => out.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// The hosts file of a hostNetwork pod: the node's own file verbatim, marked as managed,
/// plus the `hostAliases` (upstream adds no newline of its own between the two).
pub fn host_network_hosts_file(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from("# Kubernetes-managed hosts file (host network).\n");
    out.push_str(node_hosts);
    out.push_str(&alias_entries(aliases));
    out
}

fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.as_deref().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", a.ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_pod() {
        let f = pod_hosts_file(&["10.42.0.4".into()], "nginx", None, &[]);
        assert_eq!(f, format!("{HEADER}10.42.0.4\tnginx\n"));
        assert!(f.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
    }

    #[test]
    fn subdomain_dual_stack_and_aliases() {
        let aliases = vec![
            HostAlias {
                ip: "127.0.0.1".into(),
                hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
            },
            HostAlias {
                ip: "10.1.2.3".into(),
                hostnames: Some(vec!["foo.remote".into()]),
            },
        ];
        let f = pod_hosts_file(
            &["10.42.0.4".into(), "fd00::4".into()],
            "web-0",
            Some("web.shop.svc.cluster.local"),
            &aliases,
        );
        let tail = "10.42.0.4\tweb-0.web.shop.svc.cluster.local\tweb-0\n\
fd00::4\tweb-0.web.shop.svc.cluster.local\tweb-0\n\
\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n10.1.2.3\tfoo.remote\n";
        assert_eq!(f, format!("{HEADER}{tail}"));
    }

    #[test]
    fn host_network() {
        let aliases = vec![HostAlias {
            ip: "1.2.3.4".into(),
            hostnames: Some(vec!["x".into()]),
        }];
        let f = host_network_hosts_file("127.0.0.1 localhost\n192.168.1.2 node", &aliases);
        assert_eq!(
            f,
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n192.168.1.2 node\n# Entries added by HostAliases.\n1.2.3.4\tx\n"
        );
    }
}
