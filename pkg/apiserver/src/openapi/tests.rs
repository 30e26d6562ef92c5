//! Unit tests of the OpenAPI documents and the type index.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use distro_apimachinery::schema::{FieldKind, ListType, PatchStrategy, Schema};
use serde_json::{json, Value};

use super::*;
use crate::kinds;

fn builtin() -> &'static OpenApi {
    static API: OnceLock<OpenApi> = OnceLock::new();
    API.get_or_init(|| {
        let defs: Vec<Arc<ResourceDef>> = kinds::builtin().into_iter().map(Arc::new).collect();
        OpenApi::build(&defs)
    })
}

fn crontab_def() -> Arc<ResourceDef> {
    let mut d = kinds::builtin()
        .into_iter()
        .find(|d| d.kind == "ConfigMap")
        .expect("ConfigMap in catalogue");
    d.group = "stable.example.com".into();
    d.version = "v1".into();
    d.kind = "CronTab".into();
    d.plural = "crontabs".into();
    d.singular = "crontab".into();
    d.subresources = vec!["status", "scale"];
    d.definition = crd_definition_name("stable.example.com", "v1", "CronTab");
    Arc::new(d)
}

fn crontab_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "cronSpec": {"type": "string"},
                    "image": {"type": "string", "nullable": true},
                    "replicas": {"type": "integer"},
                    "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "workers": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "size": {"type": "integer"}}}
                    },
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "blob": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }
            },
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
        }
    })
}

fn with_crontab() -> OpenApi {
    builtin().with_custom_resources(&[CustomResource {
        def: crontab_def(),
        schema: Some(crontab_schema()),
    }])
}

fn refs(v: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    defs::for_each_ref(v, &mut |r| {
        out.insert(r.to_string());
    });
    out
}

fn assert_v2_consistent(api: &OpenApi) -> Value {
    let doc: Value = serde_json::from_slice(&api.v2_json()).expect("v2 is JSON");
    let definitions = doc["definitions"].as_object().expect("definitions");
    for r in refs(&doc) {
        let name = r
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("foreign ref {r}"));
        assert!(
            definitions.contains_key(name),
            "v2 ref {r} does not resolve"
        );
    }
    doc
}

fn assert_v3_consistent(api: &OpenApi) {
    let index = api.v3_index();
    let paths = index["paths"].as_object().expect("index paths");
    assert!(!paths.is_empty());
    for (gv, entry) in paths {
        let url = entry["serverRelativeURL"].as_str().expect("url");
        let (bytes, hash) = api
            .v3_group_version(gv)
            .unwrap_or_else(|| panic!("{gv} missing"));
        assert!(url.ends_with(&format!("?hash={hash}")), "{url}");
        assert_eq!(hash.len(), 128);
        assert!(hash
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
        let doc: Value = serde_json::from_slice(&bytes).expect("v3 is JSON");
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for r in refs(&doc) {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("foreign ref {r} in {gv}"));
            assert!(schemas.contains_key(name), "{gv}: ref {r} does not resolve");
        }
        // OpenAPI 3.0 ignores siblings of $ref: none may carry any.
        fn no_ref_siblings(v: &Value) {
            match v {
                Value::Object(m) => {
                    // (JSONSchemaProps has a *property* named `$ref`, an object.)
                    if m.get("$ref").is_some_and(Value::is_string) {
                        assert_eq!(m.len(), 1, "$ref with siblings: {v}");
                    }
                    m.values().for_each(no_ref_siblings);
                }
                Value::Array(a) => a.iter().for_each(no_ref_siblings),
                _ => {}
            }
        }
        no_ref_siblings(&doc);
    }
}

#[test]
fn every_v2_ref_resolves() {
    assert_v2_consistent(builtin());
}

#[test]
fn every_v3_ref_resolves() {
    assert_v3_consistent(builtin());
}

#[test]
fn every_ref_resolves_with_a_crd() {
    let api = with_crontab();
    let doc = assert_v2_consistent(&api);
    assert_v3_consistent(&api);
    let ct = &doc["definitions"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        ct["x-kubernetes-group-version-kind"],
        json!([{"group": "stable.example.com", "kind": "CronTab", "version": "v1"}])
    );
    assert_eq!(
        ct["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    // swagger 2.0 form: nullable fields lose their type, int-or-string has none, no anyOf.
    let spec = &ct["properties"]["spec"]["properties"];
    assert!(spec["image"].get("type").is_none() && spec["image"].get("nullable").is_none());
    assert!(spec["port"].get("anyOf").is_none() && spec["port"].get("type").is_none());
    assert!(doc["definitions"]["com.example.stable.v1.CronTabList"].is_object());
    assert!(doc["paths"]
        ["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/scale"]
        .is_object());
    // v3 keeps the schema as written.
    let (bytes, _) = api
        .v3_group_version("apis/stable.example.com/v1")
        .expect("crd gv doc");
    let v3: Value = serde_json::from_slice(&bytes).expect("json");
    let v3ct = &v3["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        v3ct["properties"]["spec"]["properties"]["image"]["nullable"],
        true
    );
    assert!(
        v3["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object()
    );
    // Built-in documents are shared, not rebuilt.
    assert_eq!(
        api.v3_group_version("apis/apps/v1"),
        builtin().v3_group_version("apis/apps/v1")
    );
    // Dropping the CRD drops its documents.
    let gone = api.with_custom_resources(&[]);
    assert!(gone
        .v3_group_version("apis/stable.example.com/v1")
        .is_none());
    let doc: Value = serde_json::from_slice(&gone.v2_json()).expect("json");
    assert!(doc["definitions"]
        .get("com.example.stable.v1.CronTab")
        .is_none());
}

#[test]
fn deployment_has_gvk_and_list() {
    let doc = assert_v2_consistent(builtin());
    let d = &doc["definitions"];
    assert_eq!(
        d["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert_eq!(
        d["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
    );
    assert_eq!(
        d["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert!(
        d["io.k8s.api.apps.v1.Deployment"].get("required").is_none(),
        "metadata must not be required"
    );
    assert_eq!(
        d["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"],
        json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
    );
    for name in [
        defs::STATUS,
        defs::DELETE_OPTIONS,
        defs::WATCH_EVENT,
        defs::PATCH,
        defs::API_RESOURCE_LIST,
        defs::EVICTION,
        defs::TOKEN_REQUEST,
    ] {
        assert!(d[name].is_object(), "{name} missing");
    }
    assert_eq!(
        d["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"],
        "int-or-string"
    );
    // Every catalogue kind is published with its GVK.
    for def in kinds::builtin() {
        let gvks = d[&def.definition]["x-kubernetes-group-version-kind"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            gvks.contains(&json!({"group": def.group, "kind": def.kind, "version": def.version})),
            "{} lacks its GVK",
            def.definition
        );
    }
}

#[test]
fn pod_spec_containers_carry_patch_metadata() {
    let doc = assert_v2_consistent(builtin());
    let c = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
    let v = &doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"];
    assert_eq!(v["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let p = &doc["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["ports"];
    assert_eq!(p["x-kubernetes-list-type"], "map");
    assert_eq!(
        p["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    assert_eq!(
        doc["definitions"]["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]
            ["x-kubernetes-map-type"],
        "atomic"
    );
    // The v3 form keeps them next to the allOf-wrapped ref.
    let (bytes, _) = builtin().v3_group_version("api/v1").expect("core doc");
    let v3: Value = serde_json::from_slice(&bytes).expect("json");
    let c3 = &v3["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(c3["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(
        c3["items"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Container"
    );
}

fn has_param(op: &Value, name: &str) -> bool {
    op["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "query"))
}

#[test]
fn deployment_patch_lists_field_validation() {
    let doc = assert_v2_consistent(builtin());
    let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "kind": "Deployment", "version": "v1"})
    );
    for p in ["fieldValidation", "fieldManager", "dryRun", "force"] {
        assert!(has_param(patch, p), "patch lacks {p}");
    }
    assert!(has_param(&item["put"], "fieldValidation"));
    let coll = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
    assert!(has_param(&coll["post"], "fieldValidation"));
    assert_eq!(coll["get"]["operationId"], "listAppsV1NamespacedDeployment");
    assert!(has_param(&coll["get"], "labelSelector") && has_param(&coll["get"], "watch"));
    assert_eq!(
        coll["get"]["responses"]["200"]["schema"]["$ref"],
        "#/definitions/io.k8s.api.apps.v1.DeploymentList"
    );
    assert_eq!(
        coll["delete"]["operationId"],
        "deleteAppsV1CollectionNamespacedDeployment"
    );
    let all = &doc["paths"]["/apis/apps/v1/deployments"]["get"];
    assert_eq!(all["operationId"], "listAppsV1DeploymentForAllNamespaces");
    let scale =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
    assert!(has_param(scale, "fieldValidation"));
    let status =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status"]["patch"];
    assert!(has_param(status, "fieldValidation"));
    assert_eq!(
        doc["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
        "readCoreV1Node"
    );
    assert_eq!(
        doc["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["get"]["operationId"],
        "listRbacAuthorizationV1ClusterRole"
    );

    // The same in the v3 document kubectl 1.27+ checks.
    let (bytes, _) = builtin()
        .v3_group_version("/openapi/v3/apis/apps/v1")
        .expect("apps doc");
    let v3: Value = serde_json::from_slice(&bytes).expect("json");
    let patch3 = &v3["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(has_param(patch3, "fieldValidation"));
    assert_eq!(
        patch3["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(patch3["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object());
    assert!(
        v3["paths"].get("/api/v1/pods").is_none(),
        "only this group/version's paths"
    );
}

#[test]
fn type_index_walks_deployment_to_containers() {
    let idx = builtin().type_index();
    let spec = idx
        .field("io.k8s.api.apps.v1.Deployment", "spec")
        .expect("spec");
    assert_eq!(spec.kind, Some(FieldKind::Object));
    let spec_ty = spec.elem_type.expect("spec type");
    assert_eq!(spec_ty, "io.k8s.api.apps.v1.DeploymentSpec");
    let template = idx.field(&spec_ty, "template").expect("template");
    let template_ty = template.elem_type.expect("template type");
    assert_eq!(template_ty, "io.k8s.api.core.v1.PodTemplateSpec");
    let pod_spec = idx.field(&template_ty, "spec").expect("pod spec");
    let pod_spec_ty = pod_spec.elem_type.expect("pod spec type");
    let containers = idx.field(&pod_spec_ty, "containers").expect("containers");
    assert_eq!(containers.kind, Some(FieldKind::List));
    assert_eq!(
        containers.elem_type.as_deref(),
        Some("io.k8s.api.core.v1.Container")
    );
    assert_eq!(containers.patch_merge_key.as_deref(), Some("name"));
    assert!(containers.has_strategy(PatchStrategy::Merge));

    let ports = idx
        .field("io.k8s.api.core.v1.Container", "ports")
        .expect("ports");
    assert_eq!(
        ports.list_type,
        Some(ListType::Map(vec![
            "containerPort".into(),
            "protocol".into()
        ]))
    );
    let labels = idx
        .field("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels")
        .expect("labels");
    assert_eq!(labels.kind, Some(FieldKind::Map));
    assert_eq!(labels.elem_type, None);
    let limits = idx
        .field("io.k8s.api.core.v1.ResourceRequirements", "limits")
        .expect("limits");
    assert_eq!(limits.kind, Some(FieldKind::Map));
    let image = idx
        .field("io.k8s.api.core.v1.Container", "image")
        .expect("image");
    assert_eq!(image.kind, Some(FieldKind::Scalar));
    let ts = idx
        .field(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "creationTimestamp",
        )
        .expect("ts");
    assert_eq!(ts.kind, Some(FieldKind::Scalar));
    let port = idx
        .field("io.k8s.api.core.v1.ServicePort", "targetPort")
        .expect("targetPort");
    assert_eq!(port.kind, Some(FieldKind::Scalar));
    assert!(idx.is_atomic_type("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"));
    assert!(!idx.is_atomic_type("io.k8s.api.core.v1.PodSpec"));
    assert!(idx.field("io.k8s.api.core.v1.PodSpec", "nope").is_none());
}

#[test]
fn type_index_sees_custom_resources() {
    let api = with_crontab();
    let idx = api.type_index();
    let name = "com.example.stable.v1.CronTab";
    let meta = idx.field(name, "metadata").expect("metadata");
    assert_eq!(
        meta.elem_type.as_deref(),
        Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
    );
    let spec = idx.field(name, "spec").expect("spec");
    let spec_ty = spec.elem_type.expect("inline spec type");
    let workers = idx.field(&spec_ty, "workers").expect("workers");
    assert_eq!(workers.kind, Some(FieldKind::List));
    assert_eq!(workers.list_type, Some(ListType::Map(vec!["name".into()])));
    let item_ty = workers.elem_type.expect("item type");
    assert_eq!(
        idx.field(&item_ty, "size").map(|f| f.kind),
        Some(Some(FieldKind::Scalar))
    );
    assert_eq!(
        idx.field(&spec_ty, "labels").map(|f| f.kind),
        Some(Some(FieldKind::Map))
    );
    assert_eq!(idx.field(&spec_ty, "blob").map(|f| f.kind), Some(None));
    // Built-ins still resolve through the overlay.
    assert!(idx
        .field("io.k8s.api.core.v1.PodSpec", "containers")
        .is_some());
}

// ---- protobuf ----

#[derive(Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

fn decode(mut b: &[u8]) -> Vec<(u32, Wire<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let (first, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            v |= u64::from(first & 0x7f) << shift;
            if first & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let field = (key >> 3) as u32;
        let w = match key & 7 {
            0 => Wire::Varint(varint(&mut b)),
            1 => {
                let (x, rest) = b.split_at(8);
                b = rest;
                Wire::Fixed64(u64::from_le_bytes(x.try_into().expect("8 bytes")))
            }
            2 => {
                let n = varint(&mut b) as usize;
                let (x, rest) = b.split_at(n);
                b = rest;
                Wire::Bytes(x)
            }
            t => panic!("unexpected wire type {t}"),
        };
        out.push((field, w));
    }
    out
}

fn fields(msg: &[u8], field: u32) -> Vec<&[u8]> {
    decode(msg)
        .into_iter()
        .filter(|(f, _)| *f == field)
        .map(|(_, w)| match w {
            Wire::Bytes(b) => b,
            other => panic!("field {field} is not length-delimited: {other:?}"),
        })
        .collect()
}

fn string_of(msg: &[u8], field: u32) -> String {
    fields(msg, field)
        .first()
        .map(|b| String::from_utf8(b.to_vec()).expect("utf8"))
        .unwrap_or_default()
}

#[test]
fn protobuf_of_small_document_decodes() {
    let doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": {
            "/x": {"patch": {
                "operationId": "patchX",
                "parameters": [
                    {"in": "body", "name": "body", "required": true, "schema": {"$ref": "#/definitions/T"}},
                    {"in": "query", "name": "fieldValidation", "type": "string", "uniqueItems": true}
                ],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/T"}}},
                "x-kubernetes-group-version-kind": {"group": "", "kind": "T", "version": "v1"}
            }}
        },
        "definitions": {"T": {
            "type": "object",
            "required": ["a"],
            "properties": {"a": {"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"}},
            "additionalProperties": false,
            "maximum": 1.5
        }}
    });
    let pb = proto::encode_document(&doc);
    // swagger = 1, info = 2
    assert_eq!(string_of(&pb, 1), "2.0");
    let info = fields(&pb, 2)[0];
    assert_eq!(string_of(info, 1), "Kubernetes");
    assert_eq!(string_of(info, 2), "v1.33.0");
    // paths = 8 → path = 2 (NamedPathItem) → value = 2 (PathItem) → patch = 8
    let paths = fields(&pb, 8)[0];
    let named = fields(paths, 2)[0];
    assert_eq!(string_of(named, 1), "/x");
    let op = fields(fields(named, 2)[0], 8)[0];
    assert_eq!(string_of(op, 5), "patchX");
    let params = fields(op, 8);
    assert_eq!(params.len(), 2);
    // ParametersItem.parameter = 1 → Parameter.body_parameter = 1 → schema = 5 → _ref = 1
    let body = fields(fields(params[0], 1)[0], 1)[0];
    assert_eq!(string_of(body, 2), "body");
    assert_eq!(string_of(fields(body, 5)[0], 1), "#/definitions/T");
    // → non_body_parameter = 2 → query_parameter_sub_schema = 3 → name = 4, type = 6
    let query = fields(fields(fields(params[1], 1)[0], 2)[0], 3)[0];
    assert_eq!(string_of(query, 4), "fieldValidation");
    assert_eq!(string_of(query, 6), "string");
    // vendor_extension = 13 → NamedAny { name, value = Any { yaml = 2 } }
    let ext = fields(op, 13)[0];
    assert_eq!(string_of(ext, 1), "x-kubernetes-group-version-kind");
    let yaml = string_of(fields(ext, 2)[0], 2);
    assert_eq!(
        serde_json::from_str::<Value>(&yaml).expect("yaml is json"),
        json!({"group": "", "kind": "T", "version": "v1"})
    );
    // responses = 9 → response_code = 1 → value = 2 → response = 1 → schema = 2 → schema = 1
    let code = fields(fields(op, 9)[0], 1)[0];
    assert_eq!(string_of(code, 1), "200");
    let resp = fields(fields(code, 2)[0], 1)[0];
    assert_eq!(string_of(resp, 1), "OK");
    assert_eq!(
        string_of(fields(fields(resp, 2)[0], 1)[0], 1),
        "#/definitions/T"
    );
    // definitions = 9 → additional_properties = 1 → NamedSchema { name, value = Schema }
    let t = fields(fields(&pb, 9)[0], 1)[0];
    assert_eq!(string_of(t, 1), "T");
    let schema = fields(t, 2)[0];
    assert_eq!(string_of(fields(schema, 22)[0], 1), "object"); // type = TypeItem
    assert_eq!(string_of(schema, 19), "a"); // required
                                            // additional_properties = 21 → boolean = 2 present and false
    let ap = decode(fields(schema, 21)[0]);
    assert!(matches!(ap.as_slice(), [(2, Wire::Varint(0))]));
    // maximum = 7 as a double
    let max = decode(schema)
        .into_iter()
        .find(|(f, _)| *f == 7)
        .expect("maximum");
    assert!(matches!(max.1, Wire::Fixed64(bits) if f64::from_bits(bits) == 1.5));
    // properties = 25 → NamedSchema a → items = 23 → schema = 1 → type
    let a = fields(fields(schema, 25)[0], 1)[0];
    assert_eq!(string_of(a, 1), "a");
    let a_schema = fields(a, 2)[0];
    let item = fields(fields(a_schema, 23)[0], 1)[0];
    assert_eq!(string_of(fields(item, 22)[0], 1), "string");
    let ext = fields(a_schema, 31)[0];
    assert_eq!(string_of(ext, 1), "x-kubernetes-patch-strategy");
}

#[test]
fn protobuf_of_full_document_matches_json() {
    let api = with_crontab();
    let json: Value = serde_json::from_slice(&api.v2_json()).expect("json");
    let pb = api.v2_protobuf();
    let paths = fields(&pb, 8);
    assert_eq!(paths.len(), 1);
    let entries = fields(paths[0], 2);
    assert_eq!(
        entries.len(),
        json["paths"].as_object().map(|m| m.len()).unwrap_or(0)
    );
    let defs = fields(&pb, 9);
    assert_eq!(defs.len(), 1);
    let names: BTreeSet<String> = fields(defs[0], 1).iter().map(|d| string_of(d, 1)).collect();
    let json_names: BTreeSet<String> = json["definitions"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(names, json_names);
    // The deployments PATCH operation, as client-go's QueryParamVerifier walks it.
    let item = entries
        .iter()
        .find(|e| string_of(e, 1) == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .expect("deployment item path");
    let op = fields(fields(item, 2)[0], 8)[0];
    let has_fv = fields(op, 8).iter().any(|p| {
        let param = fields(p, 1);
        param.first().is_some_and(|param| {
            fields(param, 2)
                .first()
                .and_then(|nb| {
                    fields(nb, 3)
                        .first()
                        .map(|q| string_of(q, 4) == "fieldValidation")
                })
                .unwrap_or(false)
        })
    });
    assert!(
        has_fv,
        "fieldValidation not found in protobuf PATCH operation"
    );
}

#[test]
fn crd_definition_names_reverse_the_group() {
    assert_eq!(
        crd_definition_name("stable.example.com", "v1", "CronTab"),
        "com.example.stable.v1.CronTab"
    );
    assert_eq!(
        crd_definition_name("example", "v1alpha1", "Foo"),
        "example.v1alpha1.Foo"
    );
}

/// Not a benchmark (see `hack/bench`); prints the cost so regressions are visible with
/// `--nocapture`.
#[test]
fn build_time_is_reported() {
    let defs: Vec<Arc<ResourceDef>> = kinds::builtin().into_iter().map(Arc::new).collect();
    let t = Instant::now();
    let api = OpenApi::build(&defs);
    let built = t.elapsed();
    let t1 = Instant::now();
    let _ = api.v2_json();
    let json = t1.elapsed();
    let _ = api.v2_protobuf();
    let pb = t1.elapsed() - json;
    let _ = api.v3_index();
    let v3 = t1.elapsed() - json - pb;
    eprintln!("openapi: v2 json {json:?}, v2 protobuf {pb:?}, v3 docs {v3:?}");
    let warmed = t.elapsed();
    let t2 = Instant::now();
    let crd = api.with_custom_resources(&[CustomResource {
        def: crontab_def(),
        schema: Some(crontab_schema()),
    }]);
    crd.warm();
    let with_crd = t2.elapsed();
    eprintln!(
        "openapi: build {built:?}, all documents {warmed:?}, +1 CRD with documents {with_crd:?}; v2 json {} bytes, protobuf {} bytes",
        api.v2_json().len(),
        api.v2_protobuf().len()
    );
}

#[test]
fn protobuf_negotiation() {
    assert!(wants_v2_protobuf(
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    ));
    assert!(wants_v2_protobuf(
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf, application/json"
    ));
    assert!(!wants_v2_protobuf(
        "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    ));
    assert!(!wants_v2_protobuf(""));
    assert!(!wants_v2_protobuf("*/*"));
}
