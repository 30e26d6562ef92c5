//! Schema definitions: generated from k8s-openapi's `JsonSchema` impls, then brought to
//! upstream's shape (special scalar types, list kinds, `x-kubernetes-group-version-kind`,
//! patch metadata). Definitions are held in swagger 2.0 form (`#/definitions/...` refs);
//! [`super::v3`] derives the OpenAPI 3 form from them.

use k8s_openapi::api::{
    apps::v1 as apps, authentication::v1 as authn, authorization::v1 as authz,
    autoscaling::v1 as autoscaling1, autoscaling::v2 as autoscaling2, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::version::Info;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::Gvk;

/// The `$ref` prefix of swagger 2.0 documents.
pub(crate) const V2_PREFIX: &str = "#/definitions/";

pub(crate) const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
pub(crate) const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
pub(crate) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(crate) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(crate) const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
pub(crate) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(crate) const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
pub(crate) const API_GROUP: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup";
pub(crate) const API_GROUP_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList";
pub(crate) const API_VERSIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions";
pub(crate) const VERSION_INFO: &str = "io.k8s.apimachinery.pkg.version.Info";
pub(crate) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub(crate) const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";
pub(crate) const TOKEN_REQUEST: &str = "io.k8s.api.authentication.v1.TokenRequest";
pub(crate) const BINDING: &str = "io.k8s.api.core.v1.Binding";

const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

type AddFn = fn(&mut SchemaGenerator);

fn add<T: JsonSchema>(g: &mut SchemaGenerator) {
    let _ = g.subschema_for::<T>();
}

/// Every built-in type we publish (with everything it references): the catalogue's kinds,
/// the subresource kinds and the meta types clients look up.
const TYPES: &[AddFn] = &[
    add::<core::Binding>,
    add::<core::ConfigMap>,
    add::<core::Endpoints>,
    add::<core::Event>,
    add::<core::LimitRange>,
    add::<core::Namespace>,
    add::<core::Node>,
    add::<core::PersistentVolumeClaim>,
    add::<core::PersistentVolume>,
    add::<core::Pod>,
    add::<core::PodTemplate>,
    add::<core::ReplicationController>,
    add::<core::ResourceQuota>,
    add::<core::Secret>,
    add::<core::ServiceAccount>,
    add::<core::Service>,
    add::<apps::ControllerRevision>,
    add::<apps::DaemonSet>,
    add::<apps::Deployment>,
    add::<apps::ReplicaSet>,
    add::<apps::StatefulSet>,
    add::<batch::CronJob>,
    add::<batch::Job>,
    add::<autoscaling2::HorizontalPodAutoscaler>,
    add::<autoscaling1::HorizontalPodAutoscaler>,
    add::<autoscaling1::Scale>,
    add::<policy::PodDisruptionBudget>,
    add::<policy::Eviction>,
    add::<networking::Ingress>,
    add::<networking::IngressClass>,
    add::<networking::NetworkPolicy>,
    add::<discovery::EndpointSlice>,
    add::<coordination::Lease>,
    add::<events::Event>,
    add::<rbac::ClusterRoleBinding>,
    add::<rbac::ClusterRole>,
    add::<rbac::RoleBinding>,
    add::<rbac::Role>,
    add::<storage::CSIDriver>,
    add::<storage::CSINode>,
    add::<storage::StorageClass>,
    add::<storage::VolumeAttachment>,
    add::<scheduling::PriorityClass>,
    add::<certificates::CertificateSigningRequest>,
    add::<apiextensions::CustomResourceDefinition>,
    add::<authn::TokenReview>,
    add::<authn::SelfSubjectReview>,
    add::<authn::TokenRequest>,
    add::<authz::LocalSubjectAccessReview>,
    add::<authz::SelfSubjectAccessReview>,
    add::<authz::SelfSubjectRulesReview>,
    add::<authz::SubjectAccessReview>,
    add::<apiregistration::APIService>,
    add::<meta::Status>,
    add::<meta::DeleteOptions>,
    add::<meta::WatchEvent<serde_json::Value>>,
    add::<meta::Patch>,
    add::<meta::APIResourceList>,
    add::<meta::APIGroupList>,
    add::<meta::APIGroup>,
    add::<meta::APIVersions>,
    add::<meta::ObjectMeta>,
    add::<meta::ListMeta>,
    add::<Info>,
];

/// Generates the definitions of every built-in type in swagger 2.0 form, with upstream's
/// shapes for the special scalar types. No GVKs or patch metadata yet.
pub(crate) fn builtin_definitions() -> Map<String, Value> {
    let settings = SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
        s.transforms = Vec::new();
    });
    let mut g = SchemaGenerator::new(settings);
    for f in TYPES {
        f(&mut g);
    }
    let mut defs = g.take_definitions(false);
    for (name, schema) in defs.iter_mut() {
        upstream_shape(name, schema);
    }
    // Served for kubectl 1.27's `auth whoami`; k8s-openapi 1.33 has no v1beta1 type, and the
    // v1 schema is the same.
    if let Some(v1) = defs
        .get("io.k8s.api.authentication.v1.SelfSubjectReview")
        .cloned()
    {
        defs.insert(
            "io.k8s.api.authentication.v1beta1.SelfSubjectReview".into(),
            v1,
        );
    }
    metrics_definitions(&mut defs);
    defs
}

/// metrics.k8s.io (served in-process by distro-metrics): k8s-openapi has no types for it, so
/// the schemas of metrics-server's PodMetrics and NodeMetrics are written out here.
fn metrics_definitions(defs: &mut Map<String, Value>) {
    let meta = json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"});
    let quantity = json!({"$ref": format!("#/definitions/{QUANTITY}")});
    let usage = json!({"type": "object", "additionalProperties": quantity,
        "description": "The memory and CPU usage."});
    let common = |what: &str| {
        json!({
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": meta,
            "timestamp": {"type": "string", "format": "date-time",
                "description": format!("The following fields define time interval from which metrics were collected from the interval [Timestamp-Window, Timestamp] ({what}).")},
            "window": {"type": "string", "description": "The length of the interval."},
        })
    };
    let mut node = common("node");
    node["usage"] = usage.clone();
    let mut pod = common("pod");
    pod["containers"] = json!({"type": "array", "description": "Metrics for all containers are collected within the same time window.",
    "items": {"type": "object", "required": ["name", "usage"], "properties": {
        "name": {"type": "string", "description": "Container name corresponding to the one from pod.spec.containers."},
        "usage": usage,
    }}});
    defs.insert(
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.NodeMetrics".into(),
        json!({"description": "NodeMetrics sets resource usage metrics of a node.", "type": "object",
               "required": ["timestamp", "window", "usage"], "properties": node}),
    );
    defs.insert(
        "io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics".into(),
        json!({"description": "PodMetrics sets resource usage metrics of a pod.", "type": "object",
               "required": ["timestamp", "window", "containers"], "properties": pod}),
    );
}

/// Rewrites what k8s-openapi models differently from upstream's published OpenAPI.
fn upstream_shape(name: &str, schema: &mut Value) {
    let description = schema.get("description").cloned().unwrap_or(Value::Null);
    let special = match name {
        // Upstream v2 publishes these as plain strings with a format; v3 gets oneOf (see v3.rs).
        INT_OR_STRING => {
            Some(json!({"description": description, "format": "int-or-string", "type": "string"}))
        }
        QUANTITY => Some(json!({"description": description, "type": "string"})),
        // Arbitrary JSON values: no type at all, so any value validates.
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray" => {
            Some(json!({"description": description}))
        }
        _ => None,
    };
    if let Some(s) = special {
        *schema = s;
        return;
    }
    // k8s-openapi makes `metadata` required because its structs hold it by value; upstream
    // never requires it, and clients validating against `required` would reject lists and
    // objects without it.
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let meta_ref = obj
        .get("properties")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("$ref"))
        .and_then(Value::as_str)
        .map(|r| r == format!("{V2_PREFIX}{OBJECT_META}") || r == format!("{V2_PREFIX}{LIST_META}"))
        .unwrap_or(false);
    if meta_ref {
        if let Some(Value::Array(req)) = obj.get_mut("required") {
            req.retain(|v| v != "metadata");
            if req.is_empty() {
                obj.remove("required");
            }
        }
    }
}

/// Upstream's descriptions of the type-meta fields, shared by synthesized definitions.
pub(crate) fn api_version_property() -> Value {
    json!({
        "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
        "type": "string"
    })
}

/// See [`api_version_property`].
pub(crate) fn kind_property() -> Value {
    json!({
        "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
        "type": "string"
    })
}

/// The `XList` definition of kind `kind` whose items are `item_def`, as upstream publishes it.
pub(crate) fn list_definition(kind: &str, item_def: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "properties": {
            "apiVersion": api_version_property(),
            "items": {
                "description": format!("List of {kind} objects."),
                "items": {"$ref": format!("{V2_PREFIX}{item_def}")},
                "type": "array"
            },
            "kind": kind_property(),
            "metadata": {
                "$ref": format!("{V2_PREFIX}{LIST_META}"),
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
            }
        },
        "required": ["items"],
        "type": "object"
    })
}

/// Adds `gvk` to the `x-kubernetes-group-version-kind` list of definition `name` (if present),
/// keeping the list free of duplicates.
pub(crate) fn stamp_gvk(defs: &mut Map<String, Value>, name: &str, gvk: &Gvk) {
    let Some(Value::Object(schema)) = defs.get_mut(name) else {
        return;
    };
    let entry = json!({"group": gvk.group, "kind": gvk.kind, "version": gvk.version});
    let list = schema
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = list {
        if !items.contains(&entry) {
            items.push(entry);
        }
    }
}

/// Calls `f` on every `$ref` string inside `v`.
pub(crate) fn for_each_ref<'a>(v: &'a Value, f: &mut impl FnMut(&'a str)) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "$ref" {
                    if let Value::String(s) = child {
                        f(s);
                    }
                } else {
                    for_each_ref(child, f);
                }
            }
        }
        Value::Array(a) => {
            for child in a {
                for_each_ref(child, f);
            }
        }
        _ => {}
    }
}

/// Stamps the built-in patch metadata (`patchStrategy`, `patchMergeKey`, `listType`,
/// `listMapKey`, `mapType`) onto the definitions as upstream's `x-kubernetes-*` extensions:
/// per field on the property schema, and `x-kubernetes-map-type: atomic` on atomic structs.
pub(crate) fn stamp_patch_metadata(defs: &mut Map<String, Value>) {
    use distro_apimachinery::schema::{
        builtin_atomic_types, builtin_patch_metadata, PatchStrategy, StaticListType,
    };
    for m in builtin_patch_metadata() {
        let Some(prop) = defs
            .get_mut(m.type_name)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(m.field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(t) = m.list_type {
            if t == StaticListType::Map {
                prop.insert("x-kubernetes-list-map-keys".into(), json!(m.list_map_keys));
            }
            let t = match t {
                StaticListType::Atomic => "atomic",
                StaticListType::Set => "set",
                StaticListType::Map => "map",
            };
            prop.insert("x-kubernetes-list-type".into(), Value::String(t.into()));
        }
        if m.map_type_atomic {
            prop.insert(
                "x-kubernetes-map-type".into(),
                Value::String("atomic".into()),
            );
        }
        if let Some(k) = m.patch_merge_key {
            prop.insert(
                "x-kubernetes-patch-merge-key".into(),
                Value::String(k.into()),
            );
        }
        if !m.patch_strategy.is_empty() {
            let s: Vec<&str> = m
                .patch_strategy
                .iter()
                .map(|s| match s {
                    PatchStrategy::Merge => "merge",
                    PatchStrategy::Replace => "replace",
                    PatchStrategy::RetainKeys => "retainKeys",
                })
                .collect();
            prop.insert(
                "x-kubernetes-patch-strategy".into(),
                Value::String(s.join(",")),
            );
        }
    }
    for t in builtin_atomic_types() {
        if let Some(Value::Object(d)) = defs.get_mut(*t) {
            d.insert(
                "x-kubernetes-map-type".into(),
                Value::String("atomic".into()),
            );
        }
    }
}
