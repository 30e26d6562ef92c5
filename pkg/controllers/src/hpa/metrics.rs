//! The HPA's two API edges: the resource metrics API (`metrics.k8s.io/v1beta1` PodMetrics,
//! upstream's `resource_metrics.go`) and the scale target's `/scale` subresource, found for
//! any kind through discovery (Deployments, ReplicaSets, StatefulSets, custom resources).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use distro_apimachinery::labels::Selector;
use distro_apimachinery::quantity::Quantity;
use k8s_openapi::api::autoscaling::v2::CrossVersionObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, Client};
use serde_json::Value;

use super::replicas::{PodMetric, PodMetrics};

/// PodMetrics of the resource metrics API, as served by metrics-server (and by distro).
fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// The PodMetrics items of the pods `selector` selects in `ns`, as JSON.
///
/// # Errors
/// Upstream's "unable to fetch metrics from resource metrics API: …".
pub async fn fetch(client: &Client, ns: &str, selector: &Selector) -> Result<Vec<Value>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &pod_metrics_resource());
    let lp = ListParams::default().labels(&selector.to_string());
    let list = api.list(&lp).await.map_err(|e| {
        format!(
            "unable to fetch metrics from resource metrics API: {}",
            crate::objects::api_message(&e)
        )
    })?;
    Ok(list
        .items
        .into_iter()
        .map(|o| {
            let mut v = o.data;
            v["metadata"] = serde_json::to_value(&o.metadata).unwrap_or_default();
            v
        })
        .collect())
}

/// Per-pod usage of `resource` (in milli-units) from PodMetrics items: the sum over the
/// containers, or the one `container`. A pod missing the resource in any counted container
/// is left out (it counts as missing), as upstream's `getPodMetrics`.
///
/// # Errors
/// "no metrics returned from resource metrics API" when there are no items at all.
pub fn usage_of(
    items: &[Value],
    resource: &str,
    container: Option<&str>,
) -> Result<PodMetrics, String> {
    if items.is_empty() {
        return Err("no metrics returned from resource metrics API".into());
    }
    let mut out = PodMetrics::new();
    for item in items {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        let containers: Vec<&Value> = item["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| container.is_none_or(|want| c["name"] == want))
            .collect();
        let mut sum = 0i64;
        let mut missing = containers.is_empty();
        for c in &containers {
            match c["usage"].get(resource).map(Quantity::from_json) {
                Some(Ok(q)) => sum = sum.saturating_add(q.milli_value()),
                _ => {
                    missing = true;
                    break;
                }
            }
        }
        if missing {
            continue;
        }
        let timestamp = item["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now);
        let window = item["window"]
            .as_str()
            .and_then(crate::cronjob::schedule::parse_duration)
            .unwrap_or(Duration::ZERO);
        out.insert(
            name.to_string(),
            PodMetric {
                timestamp,
                window,
                value: sum,
            },
        );
    }
    Ok(out)
}

/// Resolves scale targets' kinds to resources once per kind (discovery is a request).
#[derive(Default)]
pub struct Targets {
    known: Mutex<HashMap<(String, String), ApiResource>>,
}

impl Targets {
    /// The resource of `target`'s kind, through discovery of its group version.
    ///
    /// # Errors
    /// An invalid apiVersion, or a kind the server does not serve.
    pub async fn resource(
        &self,
        client: &Client,
        target: &CrossVersionObjectReference,
    ) -> Result<ApiResource, String> {
        let api_version = target.api_version.clone().unwrap_or_default();
        let key = (api_version.clone(), target.kind.clone());
        if let Some(ar) = self.lock().get(&key) {
            return Ok(ar.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) if !g.is_empty() && !v.is_empty() && !v.contains('/') => (g, v),
            None if !api_version.is_empty() => ("", api_version.as_str()),
            _ => return Err(format!("unexpected GroupVersion string: {api_version}")),
        };
        let gvk = GroupVersionKind::gvk(group, version, &target.kind);
        let (ar, _) = kube::discovery::pinned_kind(client, &gvk).await.map_err(|e| {
            format!(
                "unable to determine resource for scale target reference: no matches for kind {:?} in group {:?}: {}",
                target.kind,
                group,
                crate::objects::api_message(&e)
            )
        })?;
        self.lock().insert(key, ar.clone());
        Ok(ar)
    }

    /// Forgets a kind's resource (after a 404, the CRD may have changed).
    pub fn forget(&self, target: &CrossVersionObjectReference) {
        let key = (
            target.api_version.clone().unwrap_or_default(),
            target.kind.clone(),
        );
        self.lock().remove(&key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ApiResource>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(name: &str, containers: Value) -> Value {
        json!({"metadata": {"name": name}, "timestamp": "2026-01-01T12:00:00Z", "window": "1.5s",
            "containers": containers})
    }

    #[test]
    fn usage_sums_containers_and_skips_incomplete_pods() {
        let items = vec![
            item(
                "a",
                json!([{"name": "app", "usage": {"cpu": "90m", "memory": "10Mi"}},
                              {"name": "side", "usage": {"cpu": "10m", "memory": "1Mi"}}]),
            ),
            item("b", json!([{"name": "app", "usage": {"memory": "10Mi"}}])),
            item("c", json!([])),
        ];
        let m = usage_of(&items, "cpu", None).unwrap();
        assert_eq!(m.len(), 1, "b lacks cpu and c has no containers: {m:?}");
        assert_eq!(m["a"].value, 100);
        assert_eq!(m["a"].window, Duration::from_millis(1500));
        assert_eq!(
            usage_of(&items, "cpu", Some("side")).unwrap()["a"].value,
            10
        );
        assert_eq!(
            usage_of(&items, "memory", None).unwrap()["b"].value,
            10 * 1024 * 1024 * 1000
        );
        assert!(usage_of(&[], "cpu", None).is_err());
    }
}
