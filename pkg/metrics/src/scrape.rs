//! The scraper: every resolution, fetch each Ready node's `/metrics/resource` (address:
//! InternalIP, else Hostname; port: `status.daemonEndpoints.kubeletEndpoint.Port`), as
//! metrics-server 0.6+ does, and turn the last two samples into rates.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use distro_client::Informers;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Limited};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tokio::sync::watch;

use crate::prom::{self, Sample, Scrape};
use crate::{Error, NodePoint, PodPoint, Points, Previous, Snapshot, Usage};

/// Kubelets scraped at once (metrics-server scrapes all in parallel; bounded here so 1,000
/// nodes do not open 1,000 connections at once).
const CONCURRENCY: usize = 64;
/// Largest `/metrics/resource` body read (a node with 110 pods answers ~100 KiB).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Longest a scrape may take (metrics-server's `--kubelet-request-timeout` default).
const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// What the scraper needs.
pub struct Scraper {
    /// API client (lists nodes and pods).
    pub client: kube::Client,
    /// TLS to kubelets, presenting the API server's kubelet client certificate.
    pub tls: Arc<rustls::ClientConfig>,
    /// How often to scrape (`--metrics-resolution`).
    pub resolution: Duration,
    /// Where the points go.
    pub points: Arc<Points>,
}

/// Where a node's kubelet listens, if it is Ready and says.
fn target(node: &Node) -> Option<(IpAddr, u16)> {
    let ready = node
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let addr = distro_client::kubelet::endpoint(node).filter(|_| ready)?;
    Some((addr.ip(), addr.port()))
}

/// `GET https://ip:port/metrics/resource`.
async fn fetch(
    tls: Arc<rustls::ClientConfig>,
    node: &str,
    ip: IpAddr,
    port: u16,
) -> Result<String, Error> {
    let err = |reason: String| Error::Scrape {
        node: node.to_string(),
        addr: format!("{}", std::net::SocketAddr::new(ip, port)),
        reason,
    };
    let mut sender = distro_client::kubelet::connect(tls, std::net::SocketAddr::new(ip, port))
        .await
        .map_err(err)?;
    let req = http::Request::get("/metrics/resource")
        .header(http::header::HOST, format!("{ip}:{port}"))
        .header(http::header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new())
        .map_err(|e| err(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| err(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(err(format!("{status}: {}", text.trim())));
    }
    Ok(text)
}

/// A rate: nanocores, end of window (ms since the epoch), window (ms).
type Rate = (u64, i64, i64);

/// A container of one scrape: name, CPU rate if known, memory working set.
type ContainerRate = (String, Option<Rate>, u64);

/// `cur - prev` as a rate in nanocores, if both samples are usable (later, not reset).
fn rate(prev: Option<Sample>, cur: Option<Sample>) -> Option<Rate> {
    let (p, c) = (prev?, cur?);
    let window = c.timestamp_ms - p.timestamp_ms;
    if window <= 0 || c.value < p.value {
        return None;
    }
    // core-ns per ms × 1000 = nanocores, rounded to the nearest.
    let delta = u128::from(c.value - p.value) * 1000;
    let w = window as u128;
    let nanocores = u64::try_from((delta + w / 2) / w).ok()?;
    Some((nanocores, c.timestamp_ms, window))
}

fn labels(obj: &impl ResourceExt) -> BTreeMap<String, String> {
    obj.labels().clone()
}

/// The points of one round from this round's and the previous round's scrapes.
fn points(
    scrapes: &Previous,
    previous: &Previous,
    nodes: &Store<Node>,
    pods: &Store<Pod>,
) -> Snapshot {
    let mut out = Snapshot::default();
    for (name, cur) in scrapes {
        let prev = previous.get(name);
        let node_obj = nodes.get(&ObjectRef::new(name));
        if let (Some((cpu, ts, window)), Some(mem)) = (
            rate(prev.and_then(|p| p.node_cpu), cur.node_cpu),
            cur.node_memory,
        ) {
            out.nodes.insert(
                name.clone(),
                NodePoint {
                    labels: node_obj.as_deref().map(labels).unwrap_or_default(),
                    timestamp_ms: ts,
                    window_ms: window,
                    usage: Usage {
                        cpu_nanocores: cpu,
                        memory_bytes: mem.value,
                    },
                },
            );
        }
        out.pods.extend(pod_points(cur, prev, pods));
    }
    out
}

/// A pod gets a point only when every container of it has a rate, as metrics-server.
fn pod_points(
    cur: &Scrape,
    prev: Option<&Scrape>,
    pods: &Store<Pod>,
) -> Vec<((String, String), PodPoint)> {
    let mut by_pod: BTreeMap<(String, String), Vec<ContainerRate>> = BTreeMap::new();
    for ((ns, pod, container), c) in &cur.containers {
        let before = prev.and_then(|p| {
            p.containers
                .get(&(ns.clone(), pod.clone(), container.clone()))
                .and_then(|s| s.cpu)
        });
        by_pod.entry((ns.clone(), pod.clone())).or_default().push((
            container.clone(),
            rate(before, c.cpu),
            c.memory.map(|m| m.value).unwrap_or(0),
        ));
    }
    let mut out = Vec::new();
    for ((ns, name), containers) in by_pod {
        let Some(pod) = pods.get(&ObjectRef::new(&name).within(&ns)) else {
            continue;
        };
        if containers.iter().any(|(_, r, _)| r.is_none()) {
            continue;
        }
        // The pod's container order, as kubectl top --containers shows it.
        let order: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
            .collect();
        let mut list: Vec<(String, Usage)> = Vec::new();
        let (mut ts, mut window) = (0, 0);
        for (cname, r, mem) in &containers {
            let (cpu, t, w) = r.unwrap_or_default();
            ts = ts.max(t);
            window = window.max(w);
            list.push((
                cname.clone(),
                Usage {
                    cpu_nanocores: cpu,
                    memory_bytes: *mem,
                },
            ));
        }
        list.sort_by_key(|(c, _)| order.iter().position(|o| o == c).unwrap_or(usize::MAX));
        out.push((
            (ns, name),
            PodPoint {
                labels: labels(&*pod),
                timestamp_ms: ts,
                window_ms: window,
                containers: list,
            },
        ));
    }
    out
}

impl Scraper {
    /// Scrapes every resolution until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let informers = Informers::new(self.client.clone());
        let nodes = informers.get::<Node>();
        let pods = informers.get::<Pod>();
        let (node_store, pod_store) = (nodes.store(), pods.store());
        let timeout = self.resolution.min(MAX_TIMEOUT);
        let mut previous = Previous::new();
        let mut tick = tokio::time::interval(self.resolution);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let targets: Vec<(String, IpAddr, u16)> = node_store
                .state()
                .iter()
                .filter_map(|n| target(n).map(|(ip, port)| (n.name_any(), ip, port)))
                .collect();
            let results: Vec<(String, Result<String, Error>)> = futures::stream::iter(targets)
                .map(|(name, ip, port)| {
                    let tls = self.tls.clone();
                    async move {
                        let r = match tokio::time::timeout(timeout, fetch(tls, &name, ip, port))
                            .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(Error::Scrape {
                                node: name.clone(),
                                addr: format!("{}", std::net::SocketAddr::new(ip, port)),
                                reason: format!("no answer within {timeout:?}"),
                            }),
                        };
                        (name, r)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let mut current = Previous::new();
            for (name, r) in results {
                match r {
                    Ok(text) => {
                        current.insert(name, prom::parse(&text));
                    }
                    Err(e) => tracing::debug!(error = %e, "scrape failed"),
                }
            }
            self.points
                .replace(points(&current, &previous, &node_store, &pod_store));
            previous = current;
        }
        informers.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_exact_from_two_samples() {
        let s = |value, timestamp_ms| {
            Some(Sample {
                value,
                timestamp_ms,
            })
        };
        // 0.25 cores over 1.003 s.
        assert_eq!(
            rate(s(1_000_000_000, 1_000), s(1_250_750_000, 2_003)),
            Some((250_000_000, 2_003, 1_003))
        );
        assert_eq!(rate(s(5, 1_000), s(4, 2_000)), None, "counter reset");
        assert_eq!(rate(s(5, 1_000), s(6, 1_000)), None, "no time passed");
        assert_eq!(rate(None, s(6, 1_000)), None);
    }

    #[test]
    fn only_ready_nodes_with_an_address_are_scraped() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 4321}},
            }
        }))
        .unwrap();
        assert_eq!(target(&node), Some((IpAddr::from([127, 0, 0, 1]), 4321)));
        let mut not_ready = node.clone();
        not_ready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "Unknown".into();
        assert_eq!(target(&not_ready), None);
    }
}
