//! Reading kubelet `/metrics/resource` (Prometheus text format): only what metrics-server
//! reads, the CPU counters and memory working sets of the node and its containers.

use std::collections::HashMap;

/// One sample: a cumulative CPU counter or a gauge, with its timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Core-nanoseconds for CPU counters, bytes for memory.
    pub value: u64,
    /// Sample time, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// A container's samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSamples {
    /// `container_cpu_usage_seconds_total`, in core-nanoseconds.
    pub cpu: Option<Sample>,
    /// `container_memory_working_set_bytes`.
    pub memory: Option<Sample>,
}

/// What one scrape of a kubelet returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scrape {
    /// `node_cpu_usage_seconds_total`, in core-nanoseconds.
    pub node_cpu: Option<Sample>,
    /// `node_memory_working_set_bytes`.
    pub node_memory: Option<Sample>,
    /// By (namespace, pod, container).
    pub containers: HashMap<(String, String, String), ContainerSamples>,
}

/// A decimal (`12.000000001`, `1.2e+07`) as nano-units, exactly when written in plain
/// decimal notation (kubelets print counters so; exponents fall back to a float).
fn nanos(v: &str) -> Option<u64> {
    if v.contains(['e', 'E']) || v.starts_with('-') {
        let f: f64 = v.parse().ok()?;
        return (f.is_finite() && f >= 0.0).then(|| (f * 1e9).round() as u64);
    }
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut f = frac.chars().take(9).collect::<String>();
    if !f.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while f.len() < 9 {
        f.push('0');
    }
    int.checked_mul(1_000_000_000)?.checked_add(f.parse().ok()?)
}

/// Parses `{k="v",...}` label sets (values with `\"`, `\\`, `\n` escapes).
fn labels(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let key = key.trim_start_matches(',').trim().to_string();
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &after[end..];
    }
    out
}

/// Parses a `/metrics/resource` body. Unknown metrics and malformed lines are skipped, as
/// metrics-server does with series it does not use.
pub fn parse(text: &str) -> Scrape {
    let mut out = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels_text, rest) = match line.find('{') {
            Some(open) => {
                let Some(close) = line.rfind('}') else {
                    continue;
                };
                (&line[..open], &line[open + 1..close], &line[close + 1..])
            }
            None => match line.split_once(' ') {
                Some((n, r)) => (n, "", r),
                None => continue,
            },
        };
        let mut fields = rest.split_whitespace();
        let (Some(value), Some(ts)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(timestamp_ms) = ts.parse::<i64>() else {
            continue;
        };
        let sample = |v: Option<u64>| {
            v.map(|value| Sample {
                value,
                timestamp_ms,
            })
        };
        let bytes = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        };
        let key = || {
            let l = labels(labels_text);
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            (get("namespace"), get("pod"), get("container"))
        };
        match name {
            "node_cpu_usage_seconds_total" => out.node_cpu = sample(nanos(value)),
            "node_memory_working_set_bytes" => out.node_memory = sample(bytes()),
            "container_cpu_usage_seconds_total" => {
                out.containers.entry(key()).or_default().cpu = sample(nanos(value));
            }
            "container_memory_working_set_bytes" => {
                out.containers.entry(key()).or_default().memory = sample(bytes());
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubelet_resource_metrics() {
        let text = r#"# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 12.000000001 1700000000123
node_memory_working_set_bytes 1.2e+07 1700000000123
container_cpu_usage_seconds_total{container="c",namespace="ns",pod="p"} 0.25 1700000000123
container_memory_working_set_bytes{container="c",namespace="ns",pod="p\"q"} 1024 1700000000123
container_memory_working_set_bytes{container="c",namespace="ns",pod="p"} 2048 1700000000123
resource_scrape_error 0
"#;
        let s = parse(text);
        assert_eq!(s.node_cpu.unwrap().value, 12_000_000_001);
        assert_eq!(s.node_cpu.unwrap().timestamp_ms, 1_700_000_000_123);
        assert_eq!(s.node_memory.unwrap().value, 12_000_000);
        let c = &s.containers[&("ns".into(), "p".into(), "c".into())];
        assert_eq!(c.cpu.unwrap().value, 250_000_000);
        assert_eq!(c.memory.unwrap().value, 2048);
        assert!(s
            .containers
            .contains_key(&("ns".into(), "p\"q".into(), "c".into())));
        assert_eq!(nanos("3"), Some(3_000_000_000));
        assert_eq!(nanos("x"), None);
    }
}
