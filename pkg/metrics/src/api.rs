//! The `metrics.k8s.io/v1beta1` API: PodMetrics and NodeMetrics, get and list with label
//! and field selectors, in metrics-server's JSON shape, answered from [`crate::Points`].
//!
//! The kinds are registered in the API server's registry like built-in kinds (so discovery,
//! `kubectl api-resources` and RBAC see them) but are not stored: [`MetricsApi`] is a route
//! the handler consults after authorization, before its generic storage.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use distro_apimachinery::fields::FieldSelector;
use distro_apimachinery::labels::Selector;
use distro_apimachinery::quantity::{Format, Quantity};
use distro_apiserver::authn::UserInfo;
use distro_apiserver::handler::{error_response, json_response, Body, Route};
use distro_apiserver::negotiate::{negotiate, Want};
use distro_apiserver::request::{parse_query, RequestInfo};
use distro_apiserver::resources::{ResourceDef, Strategy};
use distro_apiserver::table::{self, Column, IncludeObject};
use distro_apiserver::Error as ApiError;
use http::{Request, Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

use crate::{go_duration, Points, Usage, GROUP, VERSION};

/// Not-stored kinds need no decoding rules: nothing is ever written.
struct ReadOnly;

impl Strategy for ReadOnly {
    fn decode(&self, obj: Value) -> Result<(Value, Vec<String>), String> {
        Ok((obj, Vec::new()))
    }
}

fn def(kind: &str, plural: &str, namespaced: bool) -> ResourceDef {
    ResourceDef {
        group: GROUP.into(),
        version: VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: String::new(),
        namespaced,
        short_names: Vec::new(),
        categories: Vec::new(),
        verbs: vec!["get", "list"],
        subresources: Vec::new(),
        definition: format!("io.k8s.metrics.pkg.apis.metrics.v1beta1.{kind}"),
        storage: format!("{GROUP}/{plural}"),
        virtual_only: true,
        strategy: Arc::new(ReadOnly),
    }
}

/// The resources to register: `pods` (PodMetrics) and `nodes` (NodeMetrics), verbs get and
/// list, as metrics-server advertises them.
pub fn resource_defs() -> Vec<ResourceDef> {
    vec![
        def("NodeMetrics", "nodes", false),
        def("PodMetrics", "pods", true),
    ]
}

/// The route serving the API from `points`.
pub struct MetricsApi {
    /// The latest points.
    pub points: Arc<Points>,
}

fn rfc3339_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn usage(u: &Usage) -> Value {
    json!({
        "cpu": Quantity::from_nanos(i128::from(u.cpu_nanocores), Format::DecimalSI).canonical(),
        "memory": Quantity::from_units(i64::try_from(u.memory_bytes).unwrap_or(i64::MAX), Format::BinarySI).canonical(),
    })
}

fn metadata(name: &str, namespace: Option<&str>, labels: &BTreeMap<String, String>) -> Value {
    let mut m = json!({
        "name": name,
        // As metrics-server: the time the answer was made.
        "creationTimestamp": Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    if !labels.is_empty() {
        m["labels"] = json!(labels);
    }
    m
}

struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    fn parse(query: &std::collections::HashMap<String, String>) -> Result<Filter, ApiError> {
        let labels = match query.get("labelSelector") {
            Some(s) => Selector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?,
            None => Selector::everything(),
        };
        let fields = match query.get("fieldSelector") {
            Some(s) => {
                let f = FieldSelector::parse(s).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                for r in f.requirements() {
                    if !matches!(r.field.as_str(), "metadata.name" | "metadata.namespace") {
                        return Err(ApiError::BadRequest(format!(
                            "field label not supported: {}",
                            r.field
                        )));
                    }
                }
                f
            }
            None => FieldSelector::everything(),
        };
        Ok(Filter { labels, fields })
    }

    fn keeps(&self, name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        let l: Map<String, Value> = labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        self.labels.matches(&l)
            && self.fields.matches(|f| match f {
                "metadata.name" => Some(name.to_string()),
                "metadata.namespace" => Some(namespace.to_string()),
                _ => None,
            })
    }
}

impl MetricsApi {
    fn nodes(&self, name: Option<&str>, filter: &Filter) -> Result<Value, ApiError> {
        self.points.read(|s| {
            let item = |n: &str, p: &crate::NodePoint| {
                json!({
                    "metadata": metadata(n, None, &p.labels),
                    "timestamp": rfc3339_ms(p.timestamp_ms),
                    "window": go_duration(p.window_ms),
                    "usage": usage(&p.usage),
                })
            };
            match name {
                Some(n) => {
                    let p = s.nodes.get(n).ok_or_else(|| ApiError::NotFound {
                        resource: format!("nodemetrics.{GROUP}"),
                        name: n.to_string(),
                    })?;
                    let mut v = item(n, p);
                    v["kind"] = json!("NodeMetrics");
                    v["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
                    Ok(v)
                }
                None => Ok(json!({
                    "kind": "NodeMetricsList",
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "metadata": {},
                    "items": s.nodes.iter()
                        .filter(|(n, p)| filter.keeps(n, "", &p.labels))
                        .map(|(n, p)| item(n, p))
                        .collect::<Vec<_>>(),
                })),
            }
        })
    }

    fn pods(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
        filter: &Filter,
    ) -> Result<Value, ApiError> {
        self.points.read(|s| {
            let item = |ns: &str, n: &str, p: &crate::PodPoint| {
                json!({
                    "metadata": metadata(n, Some(ns), &p.labels),
                    "timestamp": rfc3339_ms(p.timestamp_ms),
                    "window": go_duration(p.window_ms),
                    "containers": p.containers.iter()
                        .map(|(c, u)| json!({"name": c, "usage": usage(u)}))
                        .collect::<Vec<_>>(),
                })
            };
            match (namespace, name) {
                (Some(ns), Some(n)) => {
                    let p = s
                        .pods
                        .get(&(ns.to_string(), n.to_string()))
                        .ok_or_else(|| ApiError::NotFound {
                            resource: format!("podmetrics.{GROUP}"),
                            name: format!("{ns}/{n}"),
                        })?;
                    let mut v = item(ns, n, p);
                    v["kind"] = json!("PodMetrics");
                    v["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
                    Ok(v)
                }
                _ => Ok(json!({
                    "kind": "PodMetricsList",
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "metadata": {},
                    "items": s.pods.iter()
                        .filter(|((ns, n), p)| {
                            namespace.is_none_or(|want| want == ns) && filter.keeps(n, ns, &p.labels)
                        })
                        .map(|((ns, n), p)| item(ns, n, p))
                        .collect::<Vec<_>>(),
                })),
            }
        })
    }
}

/// The sum of `quantities` (canonical form), `0` if none parse.
fn sum(quantities: impl Iterator<Item = Option<String>>, format: Format) -> String {
    let nanos: i128 = quantities
        .flatten()
        .filter_map(|q| Quantity::parse(&q).ok())
        .map(|q| q.nanos())
        .sum();
    Quantity::from_nanos(nanos, format).canonical()
}

/// metrics-server's table (`kubectl get podmetrics`): Name, CPU, Memory, Window; a pod's
/// row shows its containers' sum.
fn as_table(v: &Value, include: IncludeObject) -> Value {
    let items: Vec<&Value> = match v["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![v],
    };
    let usages = |item: &Value| -> Vec<Value> {
        match item["containers"].as_array() {
            Some(cs) => cs.iter().map(|c| c["usage"].clone()).collect(),
            None => vec![item["usage"].clone()],
        }
    };
    let rows = items
        .iter()
        .map(|item| {
            let u = usages(item);
            let get = |k: &'static str| u.iter().map(move |u| u[k].as_str().map(String::from));
            table::row(
                vec![
                    item["metadata"]["name"].clone(),
                    json!(sum(get("cpu"), Format::DecimalSI)),
                    json!(sum(get("memory"), Format::BinarySI)),
                    item["window"].clone(),
                ],
                item,
                include,
            )
        })
        .collect();
    let columns = [
        Column::name(),
        Column::new("CPU", "CPU usage"),
        Column::new("Memory", "Memory usage"),
        Column::new("Window", "Interval over which the usage was measured"),
    ];
    let meta = if v["items"].is_array() {
        v["metadata"].clone()
    } else {
        json!({})
    };
    table::table(&columns, rows, meta)
}

#[async_trait::async_trait]
impl Route for MetricsApi {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        _user: &UserInfo,
    ) -> Option<Response<Body>> {
        let RequestInfo::Resource(r) = info else {
            return None;
        };
        if r.group != GROUP || r.version != VERSION || r.subresource.is_some() {
            return None;
        }
        if !matches!(r.verb, "get" | "list") {
            return None;
        }
        let query = parse_query(req.uri().query());
        let result = Filter::parse(&query).and_then(|filter| match r.resource.as_str() {
            "nodes" => self.nodes(r.name.as_deref(), &filter),
            "pods" => self.pods(r.namespace.as_deref(), r.name.as_deref(), &filter),
            _ => Err(ApiError::NoSuchResource),
        });
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        Some(match result {
            Ok(v) => match negotiate(accept) {
                Want::Table(_) => json_response(
                    StatusCode::OK,
                    &as_table(
                        &v,
                        IncludeObject::parse(query.get("includeObject").map(String::as_str)),
                    ),
                ),
                _ => json_response(StatusCode::OK, &v),
            },
            Err(e) => error_response(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodePoint, PodPoint, Snapshot};

    fn api() -> MetricsApi {
        let points = Arc::new(Points::default());
        let mut s = Snapshot::default();
        s.nodes.insert(
            "n1".into(),
            NodePoint {
                labels: BTreeMap::from([("zone".into(), "a".into())]),
                timestamp_ms: 1_700_000_000_000,
                window_ms: 1_000,
                usage: Usage {
                    cpu_nanocores: 250_000_000,
                    memory_bytes: 64 << 20,
                },
            },
        );
        s.pods.insert(
            ("ns".into(), "p".into()),
            PodPoint {
                labels: BTreeMap::from([("app".into(), "web".into())]),
                timestamp_ms: 1_700_000_000_000,
                window_ms: 15_000,
                containers: vec![(
                    "c".into(),
                    Usage {
                        cpu_nanocores: 250_000_000,
                        memory_bytes: 64 << 20,
                    },
                )],
            },
        );
        points.replace(s);
        MetricsApi { points }
    }

    fn filter(q: &[(&str, &str)]) -> Filter {
        Filter::parse(
            &q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn serves_metrics_server_shapes_with_selectors() {
        let api = api();
        let list = api.pods(Some("ns"), None, &filter(&[])).unwrap();
        assert_eq!(list["kind"], "PodMetricsList");
        let item = &list["items"][0];
        assert_eq!(item["metadata"]["name"], "p");
        assert_eq!(item["window"], "15s");
        assert_eq!(
            item["containers"][0]["usage"],
            json!({"cpu": "250m", "memory": "64Mi"})
        );
        assert_eq!(
            api.pods(None, None, &filter(&[("labelSelector", "app=db")]))
                .unwrap()["items"],
            json!([])
        );
        assert_eq!(
            api.pods(None, None, &filter(&[("fieldSelector", "metadata.name=p")]))
                .unwrap()["items"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let one = api.pods(Some("ns"), Some("p"), &filter(&[])).unwrap();
        assert_eq!(one["kind"], "PodMetrics");
        let missing = api.pods(Some("ns"), Some("x"), &filter(&[])).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "podmetrics.metrics.k8s.io \"ns/x\" not found"
        );
        let node = api.nodes(Some("n1"), &filter(&[])).unwrap();
        assert_eq!(node["usage"]["memory"], "64Mi");
        assert_eq!(node["window"], "1s");
        let t = as_table(&list, IncludeObject::Metadata);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["rows"][0]["cells"], json!(["p", "250m", "64Mi", "15s"]));
        assert_eq!(
            as_table(&node, IncludeObject::None)["rows"][0]["cells"][1],
            "250m"
        );
        assert!(Filter::parse(
            &[("fieldSelector".to_string(), "spec.nodeName=x".to_string())]
                .into_iter()
                .collect()
        )
        .is_err());
    }
}
