//! Upstream's ImageLocality score: nodes that already hold a pod's images start it sooner.
//! An image counts by its size, scaled by how widely it is spread (an image on every node says
//! little), between upstream's 23 MiB floor and 1000 MiB per container ceiling.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;

use crate::fit::{NodeInfo, MAX_SCORE};

const MIB: i64 = 1024 * 1024;
/// Below this, image sizes do not matter (upstream's `minThreshold`).
const MIN_THRESHOLD: i64 = 23 * MIB;
/// Per-container cap (upstream's `maxContainerThreshold`).
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MIB;

/// `name` with `:latest` added when it has neither tag nor digest, as upstream compares names.
fn normalized(name: &str) -> String {
    let last_slash = name.rfind('/').map_or(-1, |i| i as i64);
    let last_colon = name.rfind(':').map_or(-1, |i| i as i64);
    if last_colon <= last_slash && !name.contains('@') {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

/// Image name → size on `node`, from `status.images`.
fn images(node: &NodeInfo) -> Vec<(HashSet<String>, i64)> {
    node.node
        .status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .into_iter()
        .flatten()
        .map(|img| {
            let names = img.names.iter().flatten().map(|n| normalized(n)).collect();
            (names, img.size_bytes.unwrap_or(0))
        })
        .collect()
}

/// Scores `feasible` (0..=100); `total` is the number of nodes in the cluster.
pub fn score(pod: &Pod, all: &[NodeInfo], feasible: &[&NodeInfo]) -> Vec<i64> {
    let Some(spec) = &pod.spec else {
        return vec![0; feasible.len()];
    };
    let wanted: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.as_deref())
        .map(normalized)
        .collect();
    if wanted.is_empty() {
        return vec![0; feasible.len()];
    }
    let per_node: Vec<Vec<(HashSet<String>, i64)>> = all.iter().map(images).collect();
    let total = all.len().max(1) as f64;
    let spread = |image: &str| {
        per_node
            .iter()
            .filter(|imgs| imgs.iter().any(|(names, _)| names.contains(image)))
            .count() as f64
            / total
    };
    let max_threshold = MAX_CONTAINER_THRESHOLD * wanted.len() as i64;
    feasible
        .iter()
        .map(|n| {
            let here = images(n);
            let sum: f64 = wanted
                .iter()
                .filter_map(|w| {
                    here.iter()
                        .find(|(names, _)| names.contains(w))
                        .map(|(_, size)| *size as f64 * spread(w))
                })
                .sum();
            let clamped = (sum as i64).clamp(MIN_THRESHOLD, max_threshold);
            MAX_SCORE * (clamped - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_latest_unless_tagged() {
        assert_eq!(normalized("nginx"), "nginx:latest");
        assert_eq!(normalized("reg:5000/app"), "reg:5000/app:latest");
        assert_eq!(normalized("nginx:1.27"), "nginx:1.27");
        assert_eq!(normalized("nginx@sha256:abc"), "nginx@sha256:abc");
    }
}
