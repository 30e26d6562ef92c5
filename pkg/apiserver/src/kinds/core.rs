//! The core (`""`, v1) group. Pods and pod specs live in [`super::pod`].

use base64::Engine;
use k8s_openapi::api::core::v1 as core;
use serde_json::{json, Value};

use super::pod;
use super::util::{
    self, arr, enum_check, enum_required, format_labels, immutable, int, invalid_raw, required, s,
    set_default, set_default_str, PORT_RANGE,
};
use super::{Builtin, Entry, ALL_VERBS, CREATE_ONLY, NO_COLLECTION_DELETE};
use crate::error::FieldError;
use crate::resources::NameRule;
use crate::table::{self, Column};

/// Catalogue entries of the core group.
pub fn entries() -> Vec<Entry> {
    vec![
        entry!(
            "",
            "v1",
            "Binding",
            "bindings",
            ns = true,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.core.v1.Binding",
            Builtin::of::<core::Binding>()
        ),
        entry!(
            "",
            "v1",
            "ConfigMap",
            "configmaps",
            ns = true,
            short = ["cm"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.core.v1.ConfigMap",
            Builtin::of::<core::ConfigMap>()
                .table(configmap_columns, configmap_cells)
                .validate(configmap_validate)
                .validate_update(configmap_validate_update)
        ),
        entry!(
            "",
            "v1",
            "Endpoints",
            "endpoints",
            ns = true,
            short = ["ep"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.core.v1.Endpoints",
            Builtin::of::<core::Endpoints>()
                .create_on_update()
                .defaults(endpoints_defaults)
                .validate(endpoints_validate)
                .table(endpoints_columns, endpoints_cells)
        ),
        entry!(
            "",
            "v1",
            "Event",
            "events",
            ns = true,
            short = ["ev"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.core.v1.Event",
            Builtin::of::<core::Event>()
                .create_on_update()
                .convert(event_convert_to_core)
                .validate(event_validate)
                .table(event_columns, event_cells)
                .fields(event_fields)
        ),
        entry!(
            "",
            "v1",
            "LimitRange",
            "limitranges",
            ns = true,
            short = ["limits"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.core.v1.LimitRange",
            Builtin::of::<core::LimitRange>()
                .defaults(limitrange_defaults)
                .validate(limitrange_validate)
        ),
        entry!(
            "",
            "v1",
            "Namespace",
            "namespaces",
            ns = false,
            short = ["ns"],
            cat = [],
            verbs = NO_COLLECTION_DELETE,
            sub = ["status", "finalize"],
            def = "io.k8s.api.core.v1.Namespace",
            Builtin::of::<core::Namespace>()
                .status()
                .names(NameRule::Label)
                .defaults(namespace_defaults)
                .prepare_for_create(namespace_prepare)
                .table(namespace_columns, namespace_cells)
                .fields(namespace_fields)
        ),
        entry!(
            "",
            "v1",
            "Node",
            "nodes",
            ns = false,
            short = ["no"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status", "proxy"],
            def = "io.k8s.api.core.v1.Node",
            Builtin::of::<core::Node>()
                .status()
                .defaults(node_defaults)
                .validate(node_validate)
                .prepare_for_create(node_prepare)
                .table(node_columns, node_cells)
                .fields(node_fields)
        ),
        entry!(
            "",
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            ns = true,
            short = ["pvc"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.core.v1.PersistentVolumeClaim",
            Builtin::of::<core::PersistentVolumeClaim>()
                .status()
                .defaults(pvc_defaults)
                .validate(pvc_validate)
                .validate_update(pvc_validate_update)
                .table(pvc_columns, pvc_cells)
        ),
        entry!(
            "",
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            ns = false,
            short = ["pv"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.core.v1.PersistentVolume",
            Builtin::of::<core::PersistentVolume>()
                .status()
                .defaults(pv_defaults)
                .validate(pv_validate)
                .validate_update(pv_validate_update)
                .table(pv_columns, pv_cells)
        ),
        entry!(
            "",
            "v1",
            "Pod",
            "pods",
            ns = true,
            short = ["po"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = [
                "attach",
                "binding",
                "ephemeralcontainers",
                "eviction",
                "exec",
                "log",
                "portforward",
                "proxy",
                "status"
            ],
            def = "io.k8s.api.core.v1.Pod",
            Builtin::of::<core::Pod>()
                .status()
                .prepare_for_create(pod::pod_prepare)
                .defaults(pod::pod_defaults)
                .validate(pod::pod_validate)
                .validate_update(pod::pod_validate_update)
                .table(pod::pod_columns, pod::pod_cells)
                .fields(pod::pod_fields)
        ),
        entry!(
            "",
            "v1",
            "PodTemplate",
            "podtemplates",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.core.v1.PodTemplate",
            Builtin::of::<core::PodTemplate>()
                .defaults(podtemplate_defaults)
                .validate(podtemplate_validate)
                .table(podtemplate_columns, podtemplate_cells)
        ),
        entry!(
            "",
            "v1",
            "ReplicationController",
            "replicationcontrollers",
            ns = true,
            short = ["rc"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["scale", "status"],
            def = "io.k8s.api.core.v1.ReplicationController",
            Builtin::of::<core::ReplicationController>()
                .status()
                .generation()
                .defaults(rc_defaults)
                .validate(rc_validate)
                .table(rc_columns, rc_cells)
                .fields(rc_fields)
        ),
        entry!(
            "",
            "v1",
            "ResourceQuota",
            "resourcequotas",
            ns = true,
            short = ["quota"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.core.v1.ResourceQuota",
            Builtin::of::<core::ResourceQuota>()
                .status()
                .validate(quota_validate)
                .table(quota_columns, quota_cells)
        ),
        entry!(
            "",
            "v1",
            "Secret",
            "secrets",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.core.v1.Secret",
            Builtin::of::<core::Secret>()
                .defaults(secret_defaults)
                .validate(secret_validate)
                .validate_update(secret_validate_update)
                .table(secret_columns, secret_cells)
                .fields(secret_fields)
        ),
        entry!(
            "",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            ns = true,
            short = ["sa"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["token"],
            def = "io.k8s.api.core.v1.ServiceAccount",
            Builtin::of::<core::ServiceAccount>().table(sa_columns, sa_cells)
        ),
        entry!(
            "",
            "v1",
            "Service",
            "services",
            ns = true,
            short = ["svc"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["proxy", "status"],
            def = "io.k8s.api.core.v1.Service",
            Builtin::of::<core::Service>()
                .status()
                .names(NameRule::Dns1035)
                .defaults(service_defaults)
                .validate(service_validate)
                .validate_update(service_validate_update)
                .prepare_for_update(service_prepare_update)
                .table(service_columns, service_cells)
                .fields(service_fields)
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// ConfigMap

fn configmap_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::int("Data", "Number of data entries in the ConfigMap"),
        Column::age(),
    ]
}

fn configmap_cells(obj: &Value) -> Vec<Value> {
    let n = obj["data"].as_object().map_or(0, |m| m.len())
        + obj["binaryData"].as_object().map_or(0, |m| m.len());
    vec![json!(table::name(obj)), json!(n), table::age(obj)]
}

/// The most a ConfigMap or Secret may hold (upstream `MaxSecretSize`, 1 MiB).
const MAX_DATA_SIZE: usize = 1024 * 1024;

fn data_keys(errs: &mut Vec<FieldError>, field: &str, data: &Value) -> usize {
    let mut size = 0;
    if let Some(m) = data.as_object() {
        for (k, v) in m {
            for msg in util::config_key_errors(k) {
                errs.push(FieldError::invalid(format!("{field}[{k}]"), &json!(k), msg));
            }
            size += k.len() + s(v).len();
        }
    }
    size
}

fn configmap_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut size = data_keys(&mut errs, "data", &obj["data"]);
    size += data_keys(&mut errs, "binaryData", &obj["binaryData"]);
    if let (Some(d), Some(b)) = (obj["data"].as_object(), obj["binaryData"].as_object()) {
        for k in d.keys().filter(|k| b.contains_key(*k)) {
            errs.push(FieldError::invalid(
                format!("data[{k}]"),
                &json!(k),
                "duplicate of key present in binaryData",
            ));
        }
    }
    if size > MAX_DATA_SIZE {
        errs.push(util::too_long("[]", MAX_DATA_SIZE));
    }
    errs
}

const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";

fn immutable_data(errs: &mut Vec<FieldError>, obj: &Value, old: &Value, keys: &[&str]) {
    if old["immutable"] != json!(true) {
        return;
    }
    if obj["immutable"] != json!(true) {
        errs.push(FieldError::forbidden("immutable", IMMUTABLE_SET));
    }
    for k in keys {
        if !util::same(&obj[*k], &old[*k]) {
            errs.push(FieldError::forbidden(*k, IMMUTABLE_SET));
        }
    }
}

fn configmap_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    immutable_data(&mut errs, obj, old, &["data", "binaryData"]);
    errs
}

// ---------------------------------------------------------------------------------------------
// Secret

fn secret_defaults(obj: &mut Value) {
    set_default_str(obj, "type", "Opaque");
    // `stringData` is write-only: upstream's conversion merges it into `data` (winning on clashes).
    if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            obj["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s(&v)));
        }
    }
    util::remove(obj, "stringData");
}

fn secret_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let size = data_keys(&mut errs, "data", &obj["data"]);
    if size > MAX_DATA_SIZE {
        errs.push(util::too_long("data", MAX_DATA_SIZE));
    }
    let data = &obj["data"];
    let has = |k: &str| !data[k].is_null();
    match s(&obj["type"]) {
        "kubernetes.io/service-account-token"
            if s(&obj["metadata"]["annotations"]["kubernetes.io/service-account.name"])
                .is_empty() =>
        {
            errs.push(required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        "kubernetes.io/dockercfg" if !has(".dockercfg") => {
            errs.push(required("data[.dockercfg]", ""));
        }
        "kubernetes.io/dockerconfigjson" if !has(".dockerconfigjson") => {
            errs.push(required("data[.dockerconfigjson]", ""));
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(required("data[username]", ""));
            errs.push(required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            errs.push(required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            if !has("tls.crt") {
                errs.push(required("data[tls.crt]", ""));
            }
            if !has("tls.key") {
                errs.push(required("data[tls.key]", ""));
            }
        }
        _ => {}
    }
    errs
}

fn secret_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    immutable(&mut errs, "type", &obj["type"], &old["type"]);
    immutable_data(&mut errs, obj, old, &["data"]);
    errs
}

fn secret_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Type", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
        Column::new("Data", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
        Column::age(),
    ]
}

fn secret_cells(obj: &Value) -> Vec<Value> {
    let n = obj["data"].as_object().map_or(0, |m| m.len());
    vec![
        json!(table::name(obj)),
        json!(s(&obj["type"])),
        json!(n),
        table::age(obj),
    ]
}

fn secret_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "type" => util::field_str(&obj["type"]),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// ServiceAccount

fn sa_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Secrets", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
        Column::age(),
    ]
}

fn sa_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(arr(&obj["secrets"]).len()),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// Namespace

fn namespace_defaults(obj: &mut Value) {
    if obj["spec"]["finalizers"].is_null() {
        obj["spec"]["finalizers"] = json!(["kubernetes"]);
    }
}

fn namespace_prepare(obj: &mut Value) {
    obj["status"] = json!({"phase": "Active"});
    // Upstream's namespace strategy labels every namespace with its own name.
    let name = s(&obj["metadata"]["name"]).to_string();
    if !name.is_empty() {
        if !obj["metadata"]["labels"].is_object() {
            obj["metadata"]["labels"] = json!({});
        }
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    }
}

fn namespace_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "The status of the namespace"),
        Column::age(),
    ]
}

fn namespace_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        obj["status"]["phase"].clone(),
        table::age(obj),
    ]
}

fn namespace_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.phase" => Some(obj["status"]["phase"].as_str().unwrap_or("").to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Node

fn node_defaults(obj: &mut Value) {
    // SetDefaults_NodeStatus: allocatable defaults to capacity.
    if obj["status"].is_object()
        && obj["status"]["allocatable"].is_null()
        && obj["status"]["capacity"].is_object()
    {
        obj["status"]["allocatable"] = obj["status"]["capacity"].clone();
    }
}

fn node_prepare(obj: &mut Value) {
    // Nodes register with their status (kubelets create them whole), so create keeps it.
    let _ = obj;
}

fn node_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in arr(&obj["spec"]["taints"]).iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        if s(&t["key"]).is_empty() {
            errs.push(required(format!("{p}.key"), ""));
        }
        enum_required(
            &mut errs,
            &format!("{p}.effect"),
            &t["effect"],
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
    }
    errs
}

fn node_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "The status of the node"),
        Column::new("Roles", "The roles of the node"),
        Column::age(),
        Column::new("Version", "Kubelet Version reported by the node."),
        Column::new("Internal-IP", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses").wide(),
        Column::new("External-IP", "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses").wide(),
        Column::new("OS-Image", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).").wide(),
        Column::new("Kernel-Version", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).").wide(),
        Column::new("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).").wide(),
    ]
}

/// Upstream's `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and `kubernetes.io/role`.
fn node_roles(obj: &Value) -> String {
    let mut roles = std::collections::BTreeSet::new();
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(role) = k
                .strip_prefix("node-role.kubernetes.io/")
                .filter(|r| !r.is_empty())
            {
                roles.insert(role.to_string());
            } else if k == "kubernetes.io/role" && !s(v).is_empty() {
                roles.insert(s(v).to_string());
            }
        }
    }
    roles.into_iter().collect::<Vec<_>>().join(",")
}

fn node_address(obj: &Value, kind: &str) -> Value {
    let addr = arr(&obj["status"]["addresses"])
        .iter()
        .find(|a| s(&a["type"]) == kind)
        .map(|a| s(&a["address"]));
    table::or_none(addr.unwrap_or(""))
}

/// The STATUS cell of a Node (`Ready`, `NotReady,SchedulingDisabled`, `Unknown`).
pub fn node_status(obj: &Value) -> String {
    let mut status: Vec<String> = arr(&obj["status"]["conditions"])
        .iter()
        .filter(|c| s(&c["type"]) == "Ready")
        .take(1)
        .map(|c| {
            if s(&c["status"]) == "True" {
                "Ready".to_string()
            } else {
                "NotReady".to_string()
            }
        })
        .collect();
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if obj["spec"]["unschedulable"] == json!(true) {
        status.push("SchedulingDisabled".into());
    }
    status.join(",")
}

fn node_cells(obj: &Value) -> Vec<Value> {
    let info = &obj["status"]["nodeInfo"];
    let unknown = |v: &Value| {
        if s(v).is_empty() {
            json!("<unknown>")
        } else {
            v.clone()
        }
    };
    vec![
        json!(table::name(obj)),
        json!(node_status(obj)),
        table::or_none(node_roles(obj)),
        table::age(obj),
        json!(s(&info["kubeletVersion"])),
        node_address(obj, "InternalIP"),
        node_address(obj, "ExternalIP"),
        unknown(&info["osImage"]),
        unknown(&info["kernelVersion"]),
        unknown(&info["containerRuntimeVersion"]),
    ]
}

fn node_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "spec.unschedulable" => Some((obj["spec"]["unschedulable"] == json!(true)).to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Service

/// Service defaults (`SetDefaults_Service`) plus the single-stack IP family fields the service
/// REST storage fills.
///
/// Allocation hook for the lead: `spec.clusterIP`/`spec.clusterIPs` (from the service CIDR) and
/// `spec.ports[*].nodePort` (NodePort/LoadBalancer) need a cluster-wide allocator and are not
/// assigned here; when the allocator sets `clusterIP`, these defaults mirror it into `clusterIPs`.
pub fn service_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default_str(spec, "sessionAffinity", "None");
    match s(&spec["sessionAffinity"]) {
        "None" => util::remove(spec, "sessionAffinityConfig"),
        "ClientIP" if spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"].is_null() => {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
        }
        _ => {}
    }
    set_default_str(spec, "type", "ClusterIP");
    let ty = s(&spec["type"]).to_string();
    for p in util::items_mut(spec, "ports") {
        set_default_str(p, "protocol", "TCP");
        let target_unset = match &p["targetPort"] {
            Value::Null => true,
            Value::Number(n) => n.as_i64() == Some(0),
            Value::String(s) => s.is_empty(),
            _ => false,
        };
        if target_unset {
            p["targetPort"] = p["port"].clone();
        }
    }
    let external = ty == "NodePort"
        || ty == "LoadBalancer"
        || (ty == "ClusterIP" && !util::is_empty(&spec["externalIPs"]));
    if external {
        set_default_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty == "ExternalName" {
        return;
    }
    let ip = s(&spec["clusterIP"]).to_string();
    if !ip.is_empty() && util::is_empty(&spec["clusterIPs"]) {
        spec["clusterIPs"] = json!([ip]);
    }
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    set_default(spec, "ipFamilies", json!([family]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
}

/// Upstream's `PrepareForUpdate` patching of allocated values: an update that omits the
/// allocated `clusterIP(s)` (or a port's `nodePort`) keeps the old ones, so `kubectl replace` of
/// a manifest works. Runs before defaults on update (needs the lead's update hook).
pub fn service_prepare_update(obj: &mut Value, old: &Value) {
    let old_spec = &old["spec"];
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let ty = s(&spec["type"]).to_string();
    let ty = if ty.is_empty() {
        "ClusterIP"
    } else {
        ty.as_str()
    };
    let old_ty = s(&old_spec["type"]);
    if ty != "ExternalName" && old_ty != "ExternalName" {
        if s(&spec["clusterIP"]).is_empty() && !s(&old_spec["clusterIP"]).is_empty() {
            spec["clusterIP"] = old_spec["clusterIP"].clone();
        }
        if util::is_empty(&spec["clusterIPs"]) && !util::is_empty(&old_spec["clusterIPs"]) {
            spec["clusterIPs"] = old_spec["clusterIPs"].clone();
        }
    }
    if matches!(ty, "NodePort" | "LoadBalancer") {
        let old_ports = arr(&old_spec["ports"]).to_vec();
        for p in util::items_mut(spec, "ports") {
            if p["nodePort"].as_i64().unwrap_or(0) != 0 {
                continue;
            }
            let m = old_ports
                .iter()
                .find(|o| o["port"] == p["port"] && s(&o["protocol"]) == s(&p["protocol"]))
                .or_else(|| old_ports.iter().find(|o| o["port"] == p["port"]));
            if let Some(n) = m.and_then(|o| o["nodePort"].as_i64()).filter(|n| *n != 0) {
                p["nodePort"] = json!(n);
            }
        }
    }
    if !old_spec["healthCheckNodePort"].is_null()
        && spec["healthCheckNodePort"].is_null()
        && ty == "LoadBalancer"
    {
        spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"].clone();
    }
}

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn go_service_port(port: &Value) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{:?}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        s(&port["protocol"]),
        port["port"].as_i64().unwrap_or(0)
    )
}

fn service_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let ty = s(&spec["type"]);
    enum_required(&mut errs, "spec.type", &spec["type"], SERVICE_TYPES);
    enum_required(
        &mut errs,
        "spec.sessionAffinity",
        &spec["sessionAffinity"],
        &["ClientIP", "None"],
    );
    let ports = arr(&spec["ports"]);
    let headless = s(&spec["clusterIP"]) == "None";
    if ty == "ExternalName" {
        let name = s(&spec["externalName"]);
        if name.is_empty() {
            errs.push(required("spec.externalName", ""));
        } else {
            let trimmed = name.strip_suffix('.').unwrap_or(name);
            for m in distro_apimachinery::validation::is_dns1123_subdomain(trimmed) {
                errs.push(FieldError::invalid(
                    "spec.externalName",
                    &spec["externalName"],
                    m,
                ));
            }
        }
        if !s(&spec["clusterIP"]).is_empty() {
            errs.push(FieldError::forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
    } else if ports.is_empty() && !headless {
        errs.push(required("spec.ports", ""));
    }
    let mut names = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(&p["name"]);
        if ports.len() > 1 && name.is_empty() {
            errs.push(required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            for m in distro_apimachinery::validation::is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), &p["name"], m));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), &p["name"]));
            }
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !util::valid_port(port) {
            errs.push(FieldError::invalid(
                format!("{pp}.port"),
                &json!(port),
                PORT_RANGE,
            ));
        }
        enum_required(
            &mut errs,
            &format!("{pp}.protocol"),
            &p["protocol"],
            &["SCTP", "TCP", "UDP"],
        );
        match &p["targetPort"] {
            Value::Number(n) if !n.as_i64().is_some_and(util::valid_port) => {
                errs.push(FieldError::invalid(
                    format!("{pp}.targetPort"),
                    &p["targetPort"],
                    PORT_RANGE,
                ));
            }
            Value::String(t) => {
                for m in util::port_name_errors(t) {
                    errs.push(FieldError::invalid(
                        format!("{pp}.targetPort"),
                        &p["targetPort"],
                        m,
                    ));
                }
            }
            _ => {}
        }
        let node_port = p["nodePort"].as_i64().unwrap_or(0);
        if node_port != 0 {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !util::valid_port(node_port) {
                errs.push(FieldError::invalid(
                    format!("{pp}.nodePort"),
                    &p["nodePort"],
                    PORT_RANGE,
                ));
            }
        }
        if !keys.insert((port, s(&p["protocol"]).to_string())) {
            errs.push(invalid_raw_dup(&pp, &go_service_port(p)));
        }
    }
    util::label_map(&mut errs, "spec.selector", &spec["selector"]);
    for (i, ip) in arr(&spec["clusterIPs"]).iter().enumerate() {
        let v = s(ip);
        if v != "None" && !v.is_empty() && v.parse::<std::net::IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                format!("spec.clusterIPs[{i}]"),
                ip,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    if !external_accessible(spec) && !s(&spec["externalTrafficPolicy"]).is_empty() {
        errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            &spec["externalTrafficPolicy"],
            "may only be set for externally-accessible services",
        ));
    } else {
        enum_check(
            &mut errs,
            "spec.externalTrafficPolicy",
            &spec["externalTrafficPolicy"],
            &["Cluster", "Local"],
        );
    }
    enum_check(
        &mut errs,
        "spec.internalTrafficPolicy",
        &spec["internalTrafficPolicy"],
        &["Cluster", "Local"],
    );
    enum_check(
        &mut errs,
        "spec.ipFamilyPolicy",
        &spec["ipFamilyPolicy"],
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
    );
    errs
}

fn invalid_raw_dup(path: &str, shown: &str) -> FieldError {
    FieldError {
        field: path.to_string(),
        reason: crate::error::FieldReason::Duplicate,
        detail: format!("Duplicate value: {shown}"),
    }
}

fn external_accessible(spec: &Value) -> bool {
    match s(&spec["type"]) {
        "NodePort" | "LoadBalancer" => true,
        "ClusterIP" => !util::is_empty(&spec["externalIPs"]),
        _ => false,
    }
}

fn service_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (new_spec, old_spec) = (&obj["spec"], &old["spec"]);
    let changing_external_name =
        s(&new_spec["type"]) == "ExternalName" || s(&old_spec["type"]) == "ExternalName";
    if !changing_external_name {
        let (n, o) = (arr(&new_spec["clusterIPs"]), arr(&old_spec["clusterIPs"]));
        if let (Some(n0), Some(o0)) = (n.first(), o.first()) {
            if n0 != o0 {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    n0,
                    "may not change once set",
                ));
            }
        }
        if !s(&old_spec["clusterIP"]).is_empty()
            && s(&new_spec["clusterIP"]) != s(&old_spec["clusterIP"])
        {
            errs.push(FieldError::invalid(
                "spec.clusterIP",
                &new_spec["clusterIP"],
                "field is immutable",
            ));
        }
    }
    errs
}

fn service_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Type", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer."),
        Column::new("Cluster-IP", "clusterIP is the IP address of the service and is usually assigned randomly."),
        Column::new("External-IP", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
        Column::new("Port(s)", "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies"),
        Column::age(),
        Column::new("Selector", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify.").wide(),
    ]
}

/// IPs and hostnames of a load balancer status, joined by `,`.
pub fn lb_ingress(status: &Value) -> String {
    arr(&status["ingress"])
        .iter()
        .map(|i| {
            if s(&i["ip"]).is_empty() {
                s(&i["hostname"])
            } else {
                s(&i["ip"])
            }
        })
        .filter(|x| !x.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

fn service_external_ip(obj: &Value) -> String {
    let spec = &obj["spec"];
    let externals: Vec<&str> = arr(&spec["externalIPs"]).iter().map(s).collect();
    match s(&spec["type"]) {
        "ClusterIP" | "NodePort" => {
            if externals.is_empty() {
                "<none>".into()
            } else {
                externals.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = lb_ingress(&obj["status"]["loadBalancer"]);
            if !externals.is_empty() {
                let mut all: Vec<&str> = lb.split(',').filter(|x| !x.is_empty()).collect();
                all.extend(externals);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".into()
            }
        }
        "ExternalName" => s(&spec["externalName"]).to_string(),
        _ => "<unknown>".into(),
    }
}

fn service_ports(obj: &Value) -> String {
    arr(&obj["spec"]["ports"])
        .iter()
        .map(|p| {
            let port = p["port"].as_i64().unwrap_or(0);
            let proto = s(&p["protocol"]);
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_cells(obj: &Value) -> Vec<Value> {
    let ip = arr(&obj["spec"]["clusterIPs"])
        .first()
        .map(|v| s(v).to_string());
    let ip = ip.unwrap_or_else(|| s(&obj["spec"]["clusterIP"]).to_string());
    vec![
        json!(table::name(obj)),
        json!(s(&obj["spec"]["type"])),
        table::or_none(ip),
        json!(service_external_ip(obj)),
        table::or_none(service_ports(obj)),
        table::age(obj),
        json!(format_labels(&obj["spec"]["selector"])),
    ]
}

fn service_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "spec.clusterIP" => util::field_str(&obj["spec"]["clusterIP"]),
        "spec.type" => util::field_str(&obj["spec"]["type"]),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Endpoints

fn endpoints_defaults(obj: &mut Value) {
    for subset in util::items_mut(obj, "subsets") {
        for p in util::items_mut(subset, "ports") {
            set_default_str(p, "protocol", "TCP");
        }
    }
}

fn endpoints_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, subset) in arr(&obj["subsets"]).iter().enumerate() {
        let sp = format!("subsets[{i}]");
        for (j, a) in arr(&subset["addresses"])
            .iter()
            .chain(arr(&subset["notReadyAddresses"]))
            .enumerate()
        {
            if s(&a["ip"]).parse::<std::net::IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("{sp}.addresses[{j}].ip"),
                    &a["ip"],
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            }
        }
        for (j, p) in arr(&subset["ports"]).iter().enumerate() {
            let port = p["port"].as_i64().unwrap_or(0);
            if !util::valid_port(port) {
                errs.push(FieldError::invalid(
                    format!("{sp}.ports[{j}].port"),
                    &json!(port),
                    PORT_RANGE,
                ));
            }
            enum_required(
                &mut errs,
                &format!("{sp}.ports[{j}].protocol"),
                &p["protocol"],
                &["SCTP", "TCP", "UDP"],
            );
        }
    }
    errs
}

fn endpoints_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Endpoints", "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service."),
        Column::age(),
    ]
}

/// Upstream's `formatEndpoints`: up to three `ip:port`, then `+ N more...`.
pub fn format_endpoints(obj: &Value) -> String {
    let subsets = arr(&obj["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let max = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for ss in subsets {
        let addrs = arr(&ss["addresses"]);
        let ports = arr(&ss["ports"]);
        if ports.is_empty() {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                list.push(s(&a["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == max {
                    more = true;
                    break;
                }
                let ip = s(&a["ip"]);
                let port = p["port"].as_i64().unwrap_or(0);
                list.push(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - max)
    } else {
        ret
    }
}

fn endpoints_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(format_endpoints(obj)),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// Event (core/v1; events.k8s.io/v1 objects print through the same code after `event_convert_to_core`)

fn event_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = s(&obj["metadata"]["namespace"]);
    let involved = s(&obj["involvedObject"]["namespace"]);
    if !involved.is_empty() && !ns.is_empty() && involved != ns {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            &obj["involvedObject"]["namespace"],
            "does not match event.namespace",
        ));
    }
    enum_check(&mut errs, "type", &obj["type"], &["Normal", "Warning"]);
    errs
}

/// Event columns (`printEvent`), shared with events.k8s.io.
pub fn event_columns() -> Vec<Column> {
    vec![
        Column::new("Last Seen", "The time at which the most recent occurrence of this event was recorded."),
        Column::new("Type", "Type of this event (Normal, Warning), new types could be added in the future"),
        Column::new("Reason", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
        Column::new("Object", "The object that this event is about."),
        Column::new("Subobject", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2].").wide(),
        Column::new("Source", "The component reporting this event. Should be a short machine understandable string.").wide(),
        Column::new("Message", "A human-readable description of the status of this operation."),
        Column::new("First Seen", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)").wide(),
        Column::new("Count", "The number of times this event has occurred.").wide(),
        Column::name().wide(),
    ]
}

/// Event cells from a core/v1-shaped event.
pub fn event_cells(obj: &Value) -> Vec<Value> {
    let first = if obj["firstTimestamp"].is_null() {
        util::since_opt(&obj["eventTime"])
    } else {
        util::since_opt(&obj["firstTimestamp"])
    };
    let mut last = if obj["lastTimestamp"].is_null() {
        first.clone()
    } else {
        util::since_opt(&obj["lastTimestamp"])
    };
    let mut count = obj["count"].as_i64().unwrap_or(0);
    if obj["series"].is_object() {
        last = util::since_opt(&obj["series"]["lastObservedTime"]);
        count = obj["series"]["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let io = &obj["involvedObject"];
    let kind = s(&io["kind"]).to_lowercase();
    let target = if s(&io["name"]).is_empty() {
        kind
    } else {
        format!("{kind}/{}", s(&io["name"]))
    };
    let component = if s(&obj["source"]["component"]).is_empty() {
        s(&obj["reportingComponent"])
    } else {
        s(&obj["source"]["component"])
    };
    let instance = if s(&obj["source"]["host"]).is_empty() {
        s(&obj["reportingInstance"])
    } else {
        s(&obj["source"]["host"])
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(s(&obj["type"])),
        json!(s(&obj["reason"])),
        json!(target),
        json!(s(&io["fieldPath"])),
        json!(source),
        json!(s(&obj["message"]).trim()),
        json!(first),
        json!(count),
        json!(table::name(obj)),
    ]
}

/// Event field selectors (upstream `ToSelectableFields`), from a core/v1-shaped event.
pub fn event_fields(obj: &Value, field: &str) -> Option<String> {
    let io = &obj["involvedObject"];
    let v = match field {
        "involvedObject.kind" => &io["kind"],
        "involvedObject.namespace" => &io["namespace"],
        "involvedObject.name" => &io["name"],
        "involvedObject.uid" => &io["uid"],
        "involvedObject.apiVersion" => &io["apiVersion"],
        "involvedObject.resourceVersion" => &io["resourceVersion"],
        "involvedObject.fieldPath" => &io["fieldPath"],
        "reason" => &obj["reason"],
        "reportingComponent" => &obj["reportingComponent"],
        "type" => &obj["type"],
        "source" => {
            let c = s(&obj["source"]["component"]);
            return Some(if c.is_empty() {
                s(&obj["reportingComponent"]).to_string()
            } else {
                c.to_string()
            });
        }
        _ => return None,
    };
    util::field_str(v)
}

/// core/v1 Event fields and their events.k8s.io/v1 names (upstream's conversion).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
];

/// Both Event versions share one storage: an events.k8s.io/v1 Event read as core/v1.
pub fn event_convert_to_core(obj: Value) -> Value {
    convert_event(obj, |(core, v1)| (v1, core), "v1")
}

/// Both Event versions share one storage: a core/v1 Event read as events.k8s.io/v1.
pub fn event_convert_to_v1(obj: Value) -> Value {
    convert_event(obj, |(core, v1)| (core, v1), "events.k8s.io/v1")
}

fn convert_event(
    mut obj: Value,
    dir: fn((&'static str, &'static str)) -> (&'static str, &'static str),
    api_version: &str,
) -> Value {
    if obj["apiVersion"] == api_version {
        return obj;
    }
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    out.insert("metadata".into(), obj["metadata"].take());
    for &pair in EVENT_FIELDS {
        let (from, to) = dir(pair);
        if let Some(v) = obj.get_mut(from).map(Value::take).filter(|v| !v.is_null()) {
            out.insert(to.into(), v);
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// LimitRange, ResourceQuota

const LIMIT_TYPES: &[&str] = &["Container", "PersistentVolumeClaim", "Pod"];

fn limitrange_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec") else {
        return;
    };
    for item in util::items_mut(spec, "limits") {
        if s(&item["type"]) != "Container" {
            continue;
        }
        let mut default = item["default"].as_object().cloned().unwrap_or_default();
        let mut request = item["defaultRequest"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in item["max"].as_object().cloned().unwrap_or_default() {
            default.entry(k).or_insert(v);
        }
        for (k, v) in default.clone() {
            request.entry(k).or_insert(v);
        }
        for (k, v) in item["min"].as_object().cloned().unwrap_or_default() {
            request.entry(k).or_insert(v);
        }
        if !default.is_empty() {
            item["default"] = Value::Object(default);
        }
        if !request.is_empty() {
            item["defaultRequest"] = Value::Object(request);
        }
    }
}

fn limitrange_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, item) in arr(&obj["spec"]["limits"]).iter().enumerate() {
        let p = format!("spec.limits[{i}]");
        enum_required(&mut errs, &format!("{p}.type"), &item["type"], LIMIT_TYPES);
        for k in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            util::resource_list(&mut errs, &format!("{p}.{k}"), &item[k]);
        }
    }
    errs
}

fn quota_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    util::resource_list(&mut errs, "spec.hard", &obj["spec"]["hard"]);
    enum_check_scopes(&mut errs, &obj["spec"]["scopes"]);
    errs
}

fn enum_check_scopes(errs: &mut Vec<FieldError>, scopes: &Value) {
    const SCOPES: &[&str] = &[
        "BestEffort",
        "CrossNamespacePodAffinity",
        "NotBestEffort",
        "NotTerminating",
        "PriorityClass",
        "Terminating",
        "VolumeAttributesClass",
    ];
    for (i, sc) in arr(scopes).iter().enumerate() {
        enum_check(errs, &format!("spec.scopes[{i}]"), sc, SCOPES);
    }
}

fn quota_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::age(),
        Column::new("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
        Column::new("Limit", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    ]
}

fn quota_cells(obj: &Value) -> Vec<Value> {
    let hard = obj["status"]["hard"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = hard.keys().collect();
    names.sort();
    let mut req = Vec::new();
    let mut lim = Vec::new();
    for n in names {
        let used = util::quantity_string(&obj["status"]["used"][n]);
        let h = util::quantity_string(&hard[n]);
        let entry = format!("{n}: {used}/{h}");
        if n.split('.').next() == Some("limits") && n.contains('.') {
            lim.push(entry);
        } else {
            req.push(entry);
        }
    }
    vec![
        json!(table::name(obj)),
        table::age(obj),
        json!(req.join(", ")),
        json!(lim.join(", ")),
    ]
}

// ---------------------------------------------------------------------------------------------
// PersistentVolume, PersistentVolumeClaim

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
pub fn access_modes(modes: &Value) -> String {
    let have: Vec<&str> = arr(modes).iter().map(s).collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| have.contains(m))
    .map(|(_, a)| *a)
    .collect::<Vec<_>>()
    .join(",")
}

fn storage_class_of(obj: &Value) -> String {
    let beta = s(&obj["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]);
    if !beta.is_empty() {
        return beta.into();
    }
    s(&obj["spec"]["storageClassName"]).to_string()
}

fn pv_defaults(obj: &mut Value) {
    if obj["spec"].is_object() {
        set_default_str(&mut obj["spec"], "persistentVolumeReclaimPolicy", "Retain");
        set_default_str(&mut obj["spec"], "volumeMode", "Filesystem");
    }
    if obj["status"].is_null() {
        obj["status"] = json!({});
    }
    set_default_str(&mut obj["status"], "phase", "Pending");
}

fn access_modes_check(errs: &mut Vec<FieldError>, path: &str, modes: &Value) {
    let list = arr(modes);
    if list.is_empty() {
        errs.push(required(path, "at least 1 access mode is required"));
    }
    for m in list {
        enum_check(errs, path, m, ACCESS_MODES);
    }
    if list.iter().any(|m| m == "ReadWriteOncePod") && list.len() > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn pv_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    access_modes_check(&mut errs, "spec.accessModes", &spec["accessModes"]);
    if util::is_empty(&spec["capacity"]) {
        errs.push(required("spec.capacity", ""));
    } else if spec["capacity"]["storage"].is_null() {
        errs.push(FieldError::not_supported(
            "spec.capacity",
            &json!(spec["capacity"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default()),
            &["storage"],
        ));
    }
    util::resource_list(&mut errs, "spec.capacity", &spec["capacity"]);
    enum_check(
        &mut errs,
        "spec.persistentVolumeReclaimPolicy",
        &spec["persistentVolumeReclaimPolicy"],
        &["Delete", "Recycle", "Retain"],
    );
    enum_check(
        &mut errs,
        "spec.volumeMode",
        &spec["volumeMode"],
        &["Block", "Filesystem"],
    );
    const PV_SOURCES: &[&str] = &[
        "awsElasticBlockStore",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "csi",
        "fc",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "glusterfs",
        "hostPath",
        "iscsi",
        "local",
        "nfs",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ];
    let n = PV_SOURCES.iter().filter(|k| !spec[**k].is_null()).count();
    if n == 0 {
        errs.push(required("spec", "must specify a volume type"));
    } else if n > 1 {
        errs.push(FieldError::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        ));
    }
    if spec["hostPath"].is_object() && s(&spec["hostPath"]["path"]).is_empty() {
        errs.push(required("spec.hostPath.path", ""));
    }
    if spec["local"].is_object() && s(&spec["local"]["path"]).is_empty() {
        errs.push(required("spec.local.path", ""));
    }
    errs
}

fn pv_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (n, o) = (&obj["spec"], &old["spec"]);
    for key in ["volumeMode", "local", "hostPath", "nfs", "csi"] {
        if !util::same(&n[key], &o[key]) && !o[key].is_null() {
            immutable(&mut errs, &format!("spec.{key}"), &n[key], &o[key]);
        }
    }
    errs
}

fn pv_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Capacity", "capacity is the description of the persistent volume's resources and capacity. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#capacity"),
        Column::new("Access Modes", "accessModes contains all ways the volume can be mounted. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes"),
        Column::new("Reclaim Policy", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim. Valid options are Retain (default for manually created PersistentVolumes), Delete (default for dynamically provisioned PersistentVolumes), and Recycle (deprecated). Recycle must be supported by the volume plugin underlying this PersistentVolume. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#reclaiming"),
        Column::new("Status", "phase indicates if a volume is available, bound to a claim, or released by a claim. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#phase"),
        Column::new("Claim", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim. Expected to be non-nil when bound. claim.VolumeName is the authoritative bind between PV and PVC. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#binding"),
        Column::new("StorageClass", "StorageClass of the pv"),
        Column::new("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
        Column::new("Reason", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
        Column::age(),
        Column::new("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec.").wide(),
    ]
}

fn pv_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let claim = if spec["claimRef"].is_object() {
        format!(
            "{}/{}",
            s(&spec["claimRef"]["namespace"]),
            s(&spec["claimRef"]["name"])
        )
    } else {
        String::new()
    };
    let phase = if obj["metadata"]["deletionTimestamp"].is_null() {
        s(&obj["status"]["phase"]).to_string()
    } else {
        "Terminating".into()
    };
    let unset = |v: &Value| {
        if v.is_null() {
            json!("<unset>")
        } else {
            json!(s(v))
        }
    };
    vec![
        json!(table::name(obj)),
        json!(util::quantity_string(&spec["capacity"]["storage"])),
        json!(access_modes(&spec["accessModes"])),
        json!(s(&spec["persistentVolumeReclaimPolicy"])),
        json!(phase),
        json!(claim),
        json!(storage_class_of(obj)),
        unset(&spec["volumeAttributesClassName"]),
        json!(s(&obj["status"]["reason"])),
        table::age(obj),
        unset(&spec["volumeMode"]),
    ]
}

fn pvc_defaults(obj: &mut Value) {
    if obj["spec"].is_object() {
        set_default_str(&mut obj["spec"], "volumeMode", "Filesystem");
    }
    if obj["status"].is_null() {
        obj["status"] = json!({});
    }
    set_default_str(&mut obj["status"], "phase", "Pending");
}

/// Checks a PVC spec (also used for StatefulSet volume claim templates).
pub fn validate_pvc_spec(errs: &mut Vec<FieldError>, path: &str, spec: &Value) {
    access_modes_check(errs, &format!("{path}.accessModes"), &spec["accessModes"]);
    let has_source = !spec["dataSource"].is_null() || !spec["dataSourceRef"].is_null();
    if spec["resources"]["requests"]["storage"].is_null() && !has_source {
        errs.push(required(format!("{path}.resources[storage]"), ""));
    } else if let Some(q) = util::quantity(&spec["resources"]["requests"]["storage"]) {
        if q.nanos() <= 0 {
            errs.push(invalid_raw(
                format!("{path}.resources[storage]"),
                &format!("{:?}", q.canonical()),
                "must be greater than zero",
            ));
        }
    }
    util::resource_list(
        errs,
        &format!("{path}.resources.requests"),
        &spec["resources"]["requests"],
    );
    enum_check(
        errs,
        &format!("{path}.volumeMode"),
        &spec["volumeMode"],
        &["Block", "Filesystem"],
    );
    util::label_selector(errs, &format!("{path}.selector"), &spec["selector"]);
}

fn pvc_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_pvc_spec(&mut errs, "spec", &obj["spec"]);
    errs
}

fn pvc_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (n, o) = (&obj["spec"], &old["spec"]);
    // Bound claims may change their storage request and attributes class; the binder may set
    // volumeName once.
    let mut munged = n.clone();
    let bound = !s(&o["volumeName"]).is_empty();
    if bound {
        munged["resources"]["requests"] = o["resources"]["requests"].clone();
        munged["volumeAttributesClassName"] = o["volumeAttributesClassName"].clone();
    }
    if s(&o["volumeName"]).is_empty() {
        munged["volumeName"] = o["volumeName"].clone();
    }
    if !util::same(&munged, o) {
        let mut paths = Vec::new();
        util::diff_paths(o, &munged, "spec", &mut paths);
        errs.push(FieldError::forbidden(
            "spec",
            format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims\n  changed: {}",
                paths.join(", ")
            ),
        ));
    }
    if bound {
        let (nq, oq) = (
            util::quantity(&n["resources"]["requests"]["storage"]),
            util::quantity(&o["resources"]["requests"]["storage"]),
        );
        if let (Some(nq), Some(oq)) = (nq, oq) {
            if nq.nanos() < oq.nanos() {
                errs.push(FieldError::forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than status.capacity",
                ));
            }
        }
    }
    errs
}

fn pvc_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "phase represents the current phase of PersistentVolumeClaim."),
        Column::new("Volume", "volumeName is the binding reference to the PersistentVolume backing this claim."),
        Column::new("Capacity", "capacity represents the actual resources of the underlying volume."),
        Column::new("Access Modes", "accessModes contains the actual access modes the volume backing the PVC has. More info: https://kubernetes.io/docs/concepts/storage/persistent-volumes#access-modes-1"),
        Column::new("StorageClass", "StorageClass of the pvc"),
        Column::new("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
        Column::age(),
        Column::new("VolumeMode", "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec.").wide(),
    ]
}

fn pvc_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let phase = if obj["metadata"]["deletionTimestamp"].is_null() {
        s(&obj["status"]["phase"]).to_string()
    } else {
        "Terminating".into()
    };
    let (capacity, modes) = if s(&spec["volumeName"]).is_empty() {
        (String::new(), String::new())
    } else {
        (
            util::quantity_string(&obj["status"]["capacity"]["storage"]),
            access_modes(&obj["status"]["accessModes"]),
        )
    };
    let unset = |v: &Value| {
        if v.is_null() {
            json!("<unset>")
        } else {
            json!(s(v))
        }
    };
    vec![
        json!(table::name(obj)),
        json!(phase),
        json!(s(&spec["volumeName"])),
        json!(capacity),
        json!(modes),
        json!(storage_class_of(obj)),
        unset(&spec["volumeAttributesClassName"]),
        table::age(obj),
        unset(&spec["volumeMode"]),
    ]
}

// ---------------------------------------------------------------------------------------------
// PodTemplate, ReplicationController

fn podtemplate_defaults(obj: &mut Value) {
    if let Some(t) = obj.get_mut("template") {
        pod::default_template(t);
    }
}

fn podtemplate_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    pod::validate_template(&mut errs, "template", &obj["template"]);
    errs
}

fn podtemplate_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Containers", "Names of each container in the template."),
        Column::new(
            "Images",
            "Images referenced by each container in the template.",
        ),
        Column::new("Pod Labels", "The labels for the pod template."),
    ]
}

fn podtemplate_cells(obj: &Value) -> Vec<Value> {
    let (names, images) = util::containers_and_images(&obj["template"]["spec"]);
    vec![
        json!(table::name(obj)),
        json!(names),
        json!(images),
        json!(format_labels(&obj["template"]["metadata"]["labels"])),
    ]
}

fn rc_defaults(obj: &mut Value) {
    let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    if labels.is_object() && obj["spec"].is_object() {
        if util::is_empty(&obj["spec"]["selector"]) {
            obj["spec"]["selector"] = labels.clone();
        }
        if util::is_empty(&obj["metadata"]["labels"]) {
            obj["metadata"]["labels"] = labels;
        }
    }
    if obj["spec"].is_object() {
        set_default(&mut obj["spec"], "replicas", json!(1));
    }
    if let Some(t) = obj.get_mut("spec").and_then(|s| s.get_mut("template")) {
        pod::default_template(t);
    }
}

fn rc_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    non_negative_replicas(&mut errs, &spec["replicas"]);
    let selector = &spec["selector"];
    if util::is_empty(selector) {
        errs.push(required("spec.selector", ""));
    } else {
        util::label_map(&mut errs, "spec.selector", selector);
    }
    let template = &spec["template"];
    if template.is_null() {
        errs.push(required("spec.template", ""));
        return errs;
    }
    if !util::is_empty(selector)
        && !util::selector_of_map(selector).matches_value(template["metadata"].get("labels"))
    {
        errs.push(util::invalid_raw(
            "spec.template.metadata.labels",
            &util::go_string_map(&template["metadata"]["labels"]),
            "`selector` does not match template `labels`",
        ));
    }
    pod::validate_template(&mut errs, "spec.template", template);
    if s(&template["spec"]["restartPolicy"]) != "Always" {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            &template["spec"]["restartPolicy"],
            &["Always"],
        ));
    }
    errs
}

/// `spec.replicas` must not be negative.
pub fn non_negative_replicas(errs: &mut Vec<FieldError>, replicas: &Value) {
    util::non_negative(errs, "spec.replicas", replicas);
}

fn rc_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::int("Desired", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller"),
        Column::int("Current", "Replicas is the most recently observed number of replicas. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicationcontroller#what-is-a-replicationcontroller"),
        Column::int("Ready", "The number of ready replicas for this replication controller."),
        Column::age(),
        Column::new("Containers", "Names of each container in the template.").wide(),
        Column::new("Images", "Images referenced by each container in the template.").wide(),
        Column::new("Selector", "Selector is a label query over pods that should match the Replicas count. If Selector is empty, it is defaulted to the labels present on the Pod template. Label keys and values that must match in order to be controlled by this replication controller, if empty defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn rc_cells(obj: &Value) -> Vec<Value> {
    let (names, images) = util::containers_and_images(&obj["spec"]["template"]["spec"]);
    vec![
        json!(table::name(obj)),
        int(&obj["spec"]["replicas"]),
        int(&obj["status"]["replicas"]),
        int(&obj["status"]["readyReplicas"]),
        table::age(obj),
        json!(names),
        json!(images),
        json!(format_labels(&obj["spec"]["selector"])),
    ]
}

fn rc_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.replicas" => Some(obj["status"]["replicas"].as_i64().unwrap_or(0).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn service_defaults_as_upstream() {
        let mut svc = json!({"metadata": {"name": "s"}, "spec": {"selector": {"app": "a"}, "ports": [{"port": 80}]}});
        service_defaults(&mut svc);
        let spec = &svc["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(spec["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ports"][0]["targetPort"], 80);
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert!(spec["externalTrafficPolicy"].is_null());
        let mut np = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": "http"}]}});
        service_defaults(&mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["allocateLoadBalancerNodePorts"], true);
        assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
    }

    #[test]
    fn invalid_services() {
        let cases = vec![
            (json!({"type": "ClusterIP", "sessionAffinity": "None"}), "spec.ports: Required value"),
            (
                json!({"type": "Bogus", "sessionAffinity": "None", "ports": [{"port": 80, "protocol": "TCP"}]}),
                "spec.type: Unsupported value: \"Bogus\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            ),
            (
                json!({"type": "ClusterIP", "sessionAffinity": "None", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}),
                "spec.ports[0].name: Required value",
            ),
            (
                json!({"type": "ClusterIP", "sessionAffinity": "None", "ports": [{"port": 0, "protocol": "TCP"}]}),
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            ),
            (
                json!({"type": "ClusterIP", "sessionAffinity": "None", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30000}]}),
                "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
            ),
            (json!({"type": "ExternalName", "sessionAffinity": "None"}), "spec.externalName: Required value"),
        ];
        for (spec, want) in cases {
            let got = msgs(&service_validate(&json!({"spec": spec})));
            assert!(got.iter().any(|m| m == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn service_update_keeps_cluster_ip() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.5", "clusterIPs": ["10.43.0.5"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        service_prepare_update(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.43.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        let mut changed = new.clone();
        changed["spec"]["clusterIP"] = json!("10.43.0.6");
        changed["spec"]["clusterIPs"] = json!(["10.43.0.6"]);
        let errs = msgs(&service_validate_update(&changed, &old));
        assert!(
            errs.contains(
                &"spec.clusterIPs[0]: Invalid value: \"10.43.0.6\": may not change once set"
                    .to_string()
            ),
            "{errs:?}"
        );
    }

    #[test]
    fn service_cells() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.43.0.9",
            "clusterIPs": ["10.43.0.9"], "selector": {"app": "web"},
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}});
        let cells = super::service_cells(&svc);
        assert_eq!(cells[1], "NodePort");
        assert_eq!(cells[2], "10.43.0.9");
        assert_eq!(cells[3], "<none>");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(cells[6], "app=web");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": []}, "status": {}});
        assert_eq!(super::service_cells(&lb)[3], "<pending>");
    }

    #[test]
    fn secrets_and_configmaps() {
        let mut sec = json!({"stringData": {"a": "hi"}});
        secret_defaults(&mut sec);
        assert_eq!(sec["type"], "Opaque");
        assert_eq!(sec["data"]["a"], "aGk=");
        assert!(sec.get("stringData").is_none());
        let tls = json!({"type": "kubernetes.io/tls", "data": {}});
        assert_eq!(
            msgs(&secret_validate(&tls)),
            vec![
                "data[tls.crt]: Required value",
                "data[tls.key]: Required value"
            ]
        );
        let bad = json!({"data": {"a/b": "x"}});
        let got = msgs(&configmap_validate(&bad));
        assert!(got[0].starts_with("data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters"), "{got:?}");
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        assert_eq!(
            msgs(&configmap_validate_update(&new, &old)),
            vec!["data: Forbidden: field is immutable when `immutable` is set"]
        );
        assert_eq!(
            secret_fields(&json!({"type": "Opaque"}), "type").as_deref(),
            Some("Opaque")
        );
    }

    #[test]
    fn node_cells_and_fields() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "true"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0"}}});
        let cells = node_cells(&node);
        assert_eq!(cells[1], "Ready,SchedulingDisabled");
        assert_eq!(cells[2], "control-plane,master");
        assert_eq!(cells[4], "v1.33.0");
        assert_eq!(cells[5], "10.0.0.1");
        assert_eq!(cells[6], "<none>");
        assert_eq!(cells[7], "<unknown>");
        assert_eq!(
            node_fields(&node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        assert_eq!(node_status(&json!({})), "Unknown");
    }

    #[test]
    fn pvc_and_pv() {
        let mut pvc = json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        pvc_defaults(&mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        assert!(pvc_validate(&pvc).is_empty());
        assert_eq!(
            msgs(&pvc_validate(&json!({"spec": {}}))),
            vec![
                "spec.accessModes: Required value: at least 1 access mode is required",
                "spec.resources[storage]: Required value",
            ]
        );
        let mut new = pvc.clone();
        new["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert!(msgs(&pvc_validate_update(&new, &pvc))[0]
            .starts_with("spec: Forbidden: spec is immutable after creation"));
        let mut pv = json!({"spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "hostPath": {"path": "/x"},
            "claimRef": {"namespace": "d", "name": "c"}}});
        pv_defaults(&mut pv);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert!(pv_validate(&pv).is_empty(), "{:?}", pv_validate(&pv));
        let cells = pv_cells(&pv);
        assert_eq!(cells[1], "5Gi");
        assert_eq!(cells[2], "RWO,ROX");
        assert_eq!(cells[4], "Pending");
        assert_eq!(cells[5], "d/c");
        assert_eq!(cells[7], "<unset>");
    }

    #[test]
    fn rc_checks_selector_against_template() {
        let mut rc = json!({"spec": {"selector": {"app": "a"}, "template": {"metadata": {"labels": {"app": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        rc_defaults(&mut rc);
        let got = msgs(&rc_validate(&rc));
        assert_eq!(got, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"]);
        let mut rc2 = json!({"spec": {"template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        rc_defaults(&mut rc2);
        assert_eq!(rc2["spec"]["selector"], json!({"app": "b"}));
        assert_eq!(rc2["spec"]["replicas"], 1);
        assert!(rc_validate(&rc2).is_empty());
    }

    #[test]
    fn events_print_and_select() {
        let ev = json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Pulled",
            "type": "Normal", "message": " done ", "source": {"component": "kubelet", "host": "n1"}, "count": 2});
        let cells = event_cells(&ev);
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[5], "kubelet, n1");
        assert_eq!(cells[6], "done");
        assert_eq!(cells[8], 2);
        assert_eq!(
            event_fields(&ev, "involvedObject.name").as_deref(),
            Some("p")
        );
        assert_eq!(event_fields(&ev, "source").as_deref(), Some("kubelet"));
        assert_eq!(event_fields(&ev, "bogus"), None);
    }

    #[test]
    fn endpoints_format() {
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}],
            "ports": [{"port": 80}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        assert_eq!(format_endpoints(&json!({})), "<none>");
    }

    #[test]
    fn limitrange_defaults_fill_from_max() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "1Mi"}}]}});
        limitrange_defaults(&mut lr);
        assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "1"}));
        assert_eq!(
            lr["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "1", "memory": "1Mi"})
        );
    }

    #[test]
    fn quota_cells_split_limits() {
        let q = json!({"status": {"hard": {"limits.cpu": "2", "pods": "10", "requests.cpu": "1"},
            "used": {"pods": "3"}}});
        let cells = quota_cells(&q);
        assert_eq!(cells[2], "pods: 3/10, requests.cpu: 0/1");
        assert_eq!(cells[3], "limits.cpu: 0/2");
    }
}
