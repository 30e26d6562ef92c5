//! apiregistration.k8s.io: APIService, the objects that say which API group versions the
//! cluster serves beyond the built-in ones and whether they are available (`kubectl get
//! apiservice`). distro serves such groups in-process (metrics.k8s.io), so its APIServices
//! are `Local`, as upstream's for built-in groups.

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use serde_json::{json, Value};

use super::util::{arr, s};
use super::{Builtin, Entry, ALL_VERBS};
use crate::table::{self, Column};

/// Catalogue entries of apiregistration.k8s.io.
pub fn entries() -> Vec<Entry> {
    vec![entry!(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        ns = false,
        short = [],
        cat = ["api-extensions"],
        verbs = ALL_VERBS,
        sub = ["status"],
        def = "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService",
        Builtin::of::<apiregistration::APIService>()
            .status()
            .table(columns, cells)
    )]
}

fn columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Service",
            "The reference to the service that hosts this API endpoint.",
        ),
        Column::new("Available", "Whether this service is available."),
        Column::age(),
    ]
}

/// Upstream's printer: `Local` without a service, `ns/name` otherwise; `True`, or
/// `False (Reason)`.
fn cells(obj: &Value) -> Vec<Value> {
    let svc = &obj["spec"]["service"];
    let service = if svc.is_object() {
        format!("{}/{}", s(&svc["namespace"]), s(&svc["name"]))
    } else {
        "Local".into()
    };
    let available = arr(&obj["status"]["conditions"])
        .iter()
        .find(|c| c["type"] == "Available")
        .map(|c| match s(&c["status"]) {
            "True" => "True".to_string(),
            st => format!("{st} ({})", s(&c["reason"])),
        })
        .unwrap_or_else(|| "Unknown".into());
    vec![
        json!(table::name(obj)),
        json!(service),
        json!(available),
        table::age(obj),
    ]
}
