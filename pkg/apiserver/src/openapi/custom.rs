//! Definitions of custom resources, from a CRD version's `openAPIV3Schema`, as upstream's
//! apiextensions-apiserver publishes them: type meta and `metadata` (a ref to `ObjectMeta`)
//! added, the GVK stamped, an `XList` beside it. The OpenAPI 3 form keeps the schema as
//! written; the swagger 2.0 form drops what swagger 2.0 and kubectl's v2 reader cannot take
//! (`nullable`, `oneOf`/`anyOf`/`not`/`allOf`, the type of int-or-string fields).

use serde_json::{json, Map, Value};

use super::defs::{api_version_property, kind_property, OBJECT_META, V2_PREFIX};
use super::v3::V3_PREFIX;

/// Upstream's definition name of a custom kind: the group reversed, then version and kind
/// (`stable.example.com`, `v1`, `CronTab` → `com.example.stable.v1.CronTab`).
pub fn crd_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

const METADATA_DESCRIPTION: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The schema shared by both forms, before refs are added: user schema (or "anything"),
/// as an object with `apiVersion` and `kind`. User `$ref`s (forbidden in CRDs anyway) are
/// removed so that no document can point at a missing definition.
fn common(schema: Option<&Value>) -> Map<String, Value> {
    let mut root = match schema {
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({"x-kubernetes-preserve-unknown-fields": true}),
    };
    walk(&mut root, &mut |m| {
        m.remove("$ref");
    });
    let Value::Object(mut s) = root else {
        return Map::new();
    };
    s.insert("type".into(), Value::String("object".into()));
    let props = s
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(p) = props {
        p.insert("apiVersion".into(), api_version_property());
        p.insert("kind".into(), kind_property());
    }
    s
}

/// The OpenAPI 3 form (refs to `#/components/schemas/`).
pub(crate) fn v3_schema(schema: Option<&Value>) -> Value {
    let mut s = common(schema);
    if let Some(Value::Object(p)) = s.get_mut("properties") {
        p.insert(
            "metadata".into(),
            json!({"allOf": [{"$ref": format!("{V3_PREFIX}{OBJECT_META}")}], "description": METADATA_DESCRIPTION}),
        );
    }
    Value::Object(s)
}

/// The swagger 2.0 form (refs to `#/definitions/`).
pub(crate) fn v2_schema(schema: Option<&Value>) -> Value {
    let mut root = Value::Object(common(schema));
    walk(&mut root, &mut |m| {
        for k in ["oneOf", "anyOf", "not", "allOf"] {
            m.remove(k);
        }
        if m.remove("nullable").and_then(|v| v.as_bool()) == Some(true) {
            // Upstream: untyped values break kubectl if items or properties stay.
            m.remove("type");
            m.remove("items");
            m.remove("properties");
        }
        if m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
            m.remove("type");
        }
    });
    let Value::Object(mut m) = root else {
        return Value::Object(Map::new());
    };
    // A (silly) `nullable: true` at the root must not make the kind untyped.
    m.insert("type".into(), Value::String("object".into()));
    let props = m
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(p) = props {
        p.insert("apiVersion".into(), api_version_property());
        p.insert("kind".into(), kind_property());
        p.insert(
            "metadata".into(),
            json!({"$ref": format!("{V2_PREFIX}{OBJECT_META}"), "description": METADATA_DESCRIPTION}),
        );
    }
    Value::Object(m)
}

/// Calls `f` on every schema object inside `s` (itself included), following only schema
/// positions, so property names and example data are never mistaken for keywords.
fn walk(s: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(m) = s else { return };
    f(m);
    for key in ["properties", "patternProperties", "definitions"] {
        if let Some(Value::Object(children)) = m.get_mut(key) {
            for child in children.values_mut() {
                walk(child, f);
            }
        }
    }
    for key in ["items", "additionalProperties", "additionalItems", "not"] {
        match m.get_mut(key) {
            Some(Value::Array(items)) => items.iter_mut().for_each(|i| walk(i, f)),
            Some(child @ Value::Object(_)) => walk(child, f),
            _ => {}
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(items)) = m.get_mut(key) {
            items.iter_mut().for_each(|i| walk(i, f));
        }
    }
}
