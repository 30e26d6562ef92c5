//! `/metrics` in the Prometheus text format, with upstream kube-apiserver's metric names and
//! labels: `apiserver_request_total`, `apiserver_request_duration_seconds`,
//! `apiserver_current_inflight_requests`, `apiserver_storage_objects` and the `process_*`
//! family.
//!
//! Recording is cheap: one series per (verb, group, version, resource, subresource, scope),
//! found by hash under a read lock of one of 16 shards, then updated with atomics; a write
//! lock is taken only the first time a series is seen. Storage object counts are read from the
//! datastore when scraped. Access is authorized like any path (`get` on the `/metrics`
//! non-resource URL).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use distro_store::{prefix_end, RangeRequest};
use http::{Request, Response, StatusCode};

use crate::authn::UserInfo;
use crate::handler::{bytes_response, Body, Route};
use crate::request::RequestInfo;
use crate::resources::Registry;
use crate::rest::Storage;

/// Upstream's `apiserver_request_duration_seconds` buckets.
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];
/// Response codes counted without a lock; others go to a per-series map.
const CODES: [u16; 20] = [
    200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 406, 409, 410, 413, 415, 422, 429, 500, 503,
    504,
];
const SHARDS: usize = 16;

/// The labels of one series.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Labels {
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
}

struct Series {
    labels: Labels,
    codes: [AtomicU64; CODES.len()],
    other_codes: Mutex<HashMap<u16, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Request metrics of one API server.
pub struct Metrics {
    shards: [RwLock<HashMap<u64, Vec<Arc<Series>>>>; SHARDS],
    inflight_read: AtomicI64,
    inflight_mutating: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
            inflight_read: AtomicI64::new(0),
            inflight_mutating: AtomicI64::new(0),
        }
    }
}

/// Counts a request as in flight until dropped.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Upstream's reported verb: upper case, LIST/WATCH told apart from GET, CONNECT for streams.
fn reported_verb(info: &RequestInfo) -> &'static str {
    match info {
        RequestInfo::Resource(r) => {
            if matches!(
                r.subresource.as_deref(),
                Some("exec" | "attach" | "portforward" | "proxy")
            ) {
                return "CONNECT";
            }
            match r.verb {
                "get" => "GET",
                "list" => "LIST",
                "watch" => "WATCH",
                "create" => "POST",
                "update" => "PUT",
                "patch" => "PATCH",
                "delete" => "DELETE",
                "deletecollection" => "DELETECOLLECTION",
                _ => "OTHER",
            }
        }
        RequestInfo::NonResource { verb, .. } => match *verb {
            "get" => "GET",
            "head" => "HEAD",
            "post" => "POST",
            "put" => "PUT",
            "patch" => "PATCH",
            "delete" => "DELETE",
            "options" => "OPTIONS",
            _ => "OTHER",
        },
    }
}

impl Metrics {
    /// Marks a request in flight (`mutating` for writes), as upstream's max-in-flight gauge.
    pub fn start(&self, mutating: bool) -> InFlight<'_> {
        let g = if mutating {
            &self.inflight_mutating
        } else {
            &self.inflight_read
        };
        g.fetch_add(1, Ordering::Relaxed);
        InFlight(g)
    }

    /// Records one finished request.
    pub fn observe(&self, info: &RequestInfo, code: u16, elapsed: Duration) {
        let verb = reported_verb(info);
        let (group, version, resource, subresource, scope) = match info {
            RequestInfo::Resource(r) => {
                let scope = if r.name.is_some() {
                    "resource"
                } else if r.namespace.is_some() {
                    "namespace"
                } else {
                    "cluster"
                };
                (
                    r.group.as_str(),
                    r.version.as_str(),
                    r.resource.as_str(),
                    r.subresource.as_deref().unwrap_or(""),
                    scope,
                )
            }
            RequestInfo::NonResource { .. } => ("", "", "", "", ""),
        };
        let mut h = DefaultHasher::new();
        (verb, group, version, resource, subresource, scope).hash(&mut h);
        let hash = h.finish();
        let shard = &self.shards[(hash as usize) % SHARDS];
        let same = |s: &Series| {
            let l = &s.labels;
            l.verb == verb
                && l.group == group
                && l.version == version
                && l.resource == resource
                && l.subresource == subresource
                && l.scope == scope
        };
        let found = shard
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .and_then(|v| v.iter().find(|s| same(s)).cloned());
        let series = match found {
            Some(s) => s,
            None => {
                let mut w = shard.write().unwrap_or_else(|e| e.into_inner());
                let list = w.entry(hash).or_default();
                match list.iter().find(|s| same(s)) {
                    Some(s) => s.clone(),
                    None => {
                        let s = Arc::new(Series {
                            labels: Labels {
                                verb,
                                group: group.into(),
                                version: version.into(),
                                resource: resource.into(),
                                subresource: subresource.into(),
                                scope,
                            },
                            codes: std::array::from_fn(|_| AtomicU64::new(0)),
                            other_codes: Mutex::new(HashMap::new()),
                            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                            count: AtomicU64::new(0),
                            sum_micros: AtomicU64::new(0),
                        });
                        list.push(s.clone());
                        s
                    }
                }
            }
        };
        match CODES.iter().position(|c| *c == code) {
            Some(i) => {
                series.codes[i].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                *series
                    .other_codes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(code)
                    .or_default() += 1;
            }
        }
        // Watches and streams last as long as the client wants: upstream leaves them out of
        // the latency histogram.
        if matches!(verb, "WATCH" | "CONNECT") {
            return;
        }
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            series.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        series.count.fetch_add(1, Ordering::Relaxed);
        series
            .sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    fn series(&self) -> Vec<Arc<Series>> {
        let mut out: Vec<Arc<Series>> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort_by(|a, b| {
            let k = |s: &Series| {
                let l = &s.labels;
                (
                    l.group.clone(),
                    l.resource.clone(),
                    l.subresource.clone(),
                    l.verb,
                    l.version.clone(),
                    l.scope,
                )
            };
            k(a).cmp(&k(b))
        });
        out
    }

    /// The request metrics in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let series = self.series();
        let labels = |l: &Labels| {
            format!(
                "component=\"apiserver\",group=\"{}\",resource=\"{}\",scope=\"{}\",subresource=\"{}\",verb=\"{}\",version=\"{}\"",
                escape(&l.group),
                escape(&l.resource),
                l.scope,
                escape(&l.subresource),
                l.verb,
                escape(&l.version)
            )
        };
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for s in &series {
            let l = labels(&s.labels);
            let mut codes: Vec<(u16, u64)> = CODES
                .iter()
                .zip(&s.codes)
                .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect();
            codes.extend(
                s.other_codes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(c, n)| (*c, *n)),
            );
            codes.sort();
            for (code, n) in codes {
                let _ = writeln!(out, "apiserver_request_total{{code=\"{code}\",{l}}} {n}");
            }
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for s in &series {
            let count = s.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let l = labels(&s.labels);
            let mut cumulative = 0;
            for (b, n) in BUCKETS.iter().zip(&s.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {count}"
            );
            let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "apiserver_request_duration_seconds_sum{{{l}}} {sum}");
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{l}}} {count}"
            );
        }
        out.push_str("# HELP apiserver_current_inflight_requests Maximal number of currently used inflight request limit of this apiserver per request kind in last second.\n# TYPE apiserver_current_inflight_requests gauge\n");
        let _ = writeln!(
            out,
            "apiserver_current_inflight_requests{{request_kind=\"mutating\"}} {}",
            self.inflight_mutating.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "apiserver_current_inflight_requests{{request_kind=\"readOnly\"}} {}",
            self.inflight_read.load(Ordering::Relaxed)
        );
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `process_*` metrics from `/proc/self` (Linux); nothing where it is unreadable.
fn render_process(out: &mut String) {
    const CLOCK_TICKS: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}", (utime + stime) / CLOCK_TICKS);
    }
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        });
    if let Some(kb) = rss_kb {
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}", kb * 1024);
    }
    let btime = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    if let (Some(btime), Some(start)) = (btime, field(22)) {
        let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}", btime + start / CLOCK_TICKS);
    }
}

/// The `/metrics` route.
pub struct MetricsRoute {
    /// What the handler records.
    pub metrics: Arc<Metrics>,
    /// For `apiserver_storage_objects`.
    pub registry: Arc<Registry>,
    /// For `apiserver_storage_objects`.
    pub storage: Storage,
}

impl MetricsRoute {
    /// `apiserver_storage_objects`, one per stored resource (versions sharing storage once).
    async fn render_storage(&self, out: &mut String) {
        let mut defs = self.registry.all();
        defs.retain(|d| !d.virtual_only);
        defs.sort_by(|a, b| a.storage.cmp(&b.storage).then(a.version.cmp(&b.version)));
        defs.dedup_by(|a, b| a.storage == b.storage);
        let mut rows = Vec::new();
        for d in defs {
            let prefix = d.key_prefix();
            let req = RangeRequest {
                start: prefix.clone(),
                end: prefix_end(&prefix),
                limit: 1,
                revision: None,
            };
            if let Ok(resp) = self.storage.range(req).await {
                rows.push((d.group_resource(), resp.count));
            }
        }
        rows.sort();
        out.push_str("# HELP apiserver_storage_objects Number of stored objects at the time of last check split by kind.\n# TYPE apiserver_storage_objects gauge\n");
        for (resource, n) in rows {
            let _ = writeln!(
                out,
                "apiserver_storage_objects{{resource=\"{}\"}} {n}",
                escape(&resource)
            );
        }
    }
}

#[async_trait::async_trait]
impl Route for MetricsRoute {
    async fn handle(
        &self,
        _req: &Request<Bytes>,
        info: &RequestInfo,
        _user: &UserInfo,
    ) -> Option<Response<Body>> {
        let RequestInfo::NonResource { verb: "get", path } = info else {
            return None;
        };
        if path != "/metrics" {
            return None;
        }
        let mut out = String::new();
        self.metrics.render(&mut out);
        self.render_storage(&mut out).await;
        render_process(&mut out);
        Some(bytes_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(out),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ResourceRequest;

    #[test]
    fn requests_are_counted_by_labels_and_code() {
        let m = Metrics::default();
        let get = RequestInfo::Resource(ResourceRequest {
            group: "apps".into(),
            version: "v1".into(),
            namespace: Some("a".into()),
            resource: "deployments".into(),
            name: Some("web".into()),
            subresource: Some("scale".into()),
            verb: "get",
        });
        {
            let _g = m.start(false);
            m.observe(&get, 200, Duration::from_millis(3));
        }
        m.observe(&get, 200, Duration::from_millis(30));
        m.observe(&get, 418, Duration::from_millis(1));
        let mut out = String::new();
        m.render(&mut out);
        let l = "component=\"apiserver\",group=\"apps\",resource=\"deployments\",scope=\"resource\",subresource=\"scale\",verb=\"GET\",version=\"v1\"";
        assert!(
            out.contains(&format!("apiserver_request_total{{code=\"200\",{l}}} 2")),
            "{out}"
        );
        assert!(
            out.contains(&format!("apiserver_request_total{{code=\"418\",{l}}} 1")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 2"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{l},le=\"0.05\"}} 3"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "apiserver_request_duration_seconds_count{{{l}}} 3"
            )),
            "{out}"
        );
        assert!(out.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"} 0"));
        let mut p = String::new();
        render_process(&mut p);
        assert!(p.contains("process_resident_memory_bytes "), "{p}");
        assert!(p.contains("process_start_time_seconds "), "{p}");
    }
}
