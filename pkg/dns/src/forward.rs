//! Everything outside the cluster zone goes to the node's upstream resolvers, with a cache,
//! as CoreDNS's `forward . /etc/resolv.conf` and `cache 30` in k3s's Corefile.
//!
//! The upstreams come from a resolv.conf (k3s's `--resolv-conf`). From the default
//! `/etc/resolv.conf`, loopback nameservers are skipped, as k3s skips them (a local stub
//! such as systemd-resolved's 127.0.0.53 is unreachable from pods, and forwarding to
//! ourselves would loop); a file named explicitly is taken as it is. The cluster DNS address
//! itself is always skipped.
//!
//! # Limits
//! - Answers are rebuilt from hickory-resolver's lookup (records, rcode, SOA of negative
//!   answers), not relayed byte for byte; EDNS options of the upstream answer are not kept.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::ProtoErrorKind;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveErrorKind, Resolver};

use crate::answer::Response;

/// CoreDNS's `cache 30`: no answer is kept longer than this.
pub const CACHE_MAX_TTL: Duration = Duration::from_secs(30);
/// Entries in the cache (CoreDNS's default is 9984 per kind; this is the order of it).
const CACHE_SIZE: usize = 10_000;
/// Per-try timeout towards an upstream (CoreDNS's forward dials with a few seconds).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The nameserver addresses of resolv.conf text, minus `skip` and, when `skip_loopback`,
/// loopback addresses.
pub fn upstreams(resolv_conf: &str, skip_loopback: bool, skip: &[IpAddr]) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver"))
                .then(|| f.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse::<IpAddr>().ok())
        })
        .filter(|ip| !(skip.contains(ip) || (skip_loopback && ip.is_loopback())))
        .collect()
}

/// The upstream resolvers with their cache.
#[derive(Clone)]
pub struct Forwarder {
    resolver: Option<Resolver<TokioConnectionProvider>>,
}

impl Forwarder {
    /// Forwards to `servers` on `port` (UDP, then TCP when truncated). No servers: every
    /// forwarded question is SERVFAIL, as CoreDNS's forward with no healthy upstream.
    pub fn new(servers: &[IpAddr], port: u16) -> Forwarder {
        if servers.is_empty() {
            return Forwarder { resolver: None };
        }
        let group = NameServerConfigGroup::from_ips_clear(servers, port, true);
        let config = ResolverConfig::from_parts(None, Vec::new(), group);
        let mut opts = ResolverOpts::default();
        opts.cache_size = CACHE_SIZE;
        opts.positive_max_ttl = Some(CACHE_MAX_TTL);
        opts.negative_max_ttl = Some(CACHE_MAX_TTL);
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        opts.timeout = UPSTREAM_TIMEOUT;
        opts.attempts = 2;
        opts.edns0 = true;
        let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Forwarder {
            resolver: Some(resolver),
        }
    }

    /// Reads the upstreams from `path` ([`upstreams`]); `explicit` is whether the user named
    /// the file (then loopback entries are kept).
    ///
    /// # Errors
    /// The file cannot be read (a missing default file means no upstreams).
    pub async fn from_resolv_conf(
        path: &Path,
        explicit: bool,
        skip: &[IpAddr],
    ) -> std::io::Result<(Forwarder, Vec<IpAddr>)> {
        let text = match tokio::fs::read_to_string(path).await {
            Ok(t) => t,
            // No default resolv.conf (a bare container or image): no upstreams, as glibc.
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let servers = upstreams(&text, !explicit, skip);
        Ok((Forwarder::new(&servers, 53), servers))
    }

    /// Resolves `name`/`qtype` upstream (or from the cache).
    ///
    /// # Errors
    /// `Err` only when no upstream answered (timeouts, refused connections): callers answer
    /// SERVFAIL. NXDOMAIN and NODATA are `Ok` responses.
    pub async fn resolve(&self, name: &Name, qtype: RecordType) -> Result<Response, String> {
        let Some(resolver) = &self.resolver else {
            return Err("no upstream nameservers".into());
        };
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        match resolver.lookup(fqdn, qtype).await {
            Ok(lookup) => {
                // The cache hands out its records with their original TTLs: count down.
                let left = lookup
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now())
                    .as_secs();
                let left = u32::try_from(left).unwrap_or(u32::MAX);
                let answers = lookup
                    .records()
                    .iter()
                    .map(|r| {
                        let mut r: Record = r.clone();
                        r.set_ttl(r.ttl().min(left));
                        r
                    })
                    .collect();
                Ok(Response {
                    rcode: ResponseCode::NoError,
                    authoritative: false,
                    answers,
                    authority: Vec::new(),
                    additionals: Vec::new(),
                })
            }
            Err(e) => match e.kind() {
                ResolveErrorKind::Proto(p) => match p.kind() {
                    ProtoErrorKind::NoRecordsFound {
                        soa, response_code, ..
                    } => {
                        let mut response = Response::empty(*response_code);
                        response.authority.extend(
                            soa.as_ref()
                                .map(|s| s.as_ref().clone().into_record_of_rdata()),
                        );
                        Ok(response)
                    }
                    _ => Err(e.to_string()),
                },
                _ => Err(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_from_resolv_conf() {
        let conf = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2 # lan\n\
                    search example.com\nnameserver fe80::1%eth0\nnameserver ::1\n\
                    nameserver 10.43.0.10\noptions edns0\n";
        let skip = ["10.43.0.10".parse().unwrap()];
        let want: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "fe80::1".parse().unwrap()];
        assert_eq!(upstreams(conf, true, &skip), want);
        let all = upstreams(conf, false, &skip);
        assert_eq!(all.len(), 4);
        assert!(all.contains(&"127.0.0.53".parse().unwrap()));
    }
}
