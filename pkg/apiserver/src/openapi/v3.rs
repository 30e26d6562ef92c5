//! OpenAPI 3 documents, one per group/version, as upstream serves at `/openapi/v3/<gv>`.
//!
//! Schemas are derived from the swagger 2.0 definitions: refs move to `#/components/schemas/`,
//! a `$ref` with sibling keywords (descriptions, patch metadata) is wrapped in `allOf` as
//! upstream does (OpenAPI 3.0 ignores siblings of `$ref`), and the special scalar types get
//! their `oneOf` forms. Each document carries exactly the schemas its paths reach, so every
//! `$ref` resolves inside it.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha512};

use super::defs::{for_each_ref, V2_PREFIX};
use super::paths::{route_refs, v3_path_item, Route};

/// The `$ref` prefix of OpenAPI 3 documents.
pub(crate) const V3_PREFIX: &str = "#/components/schemas/";

/// Converts one swagger 2.0 schema to its OpenAPI 3 form.
pub(crate) fn to_v3(name: Option<&str>, v: &Value) -> Value {
    match name {
        Some("io.k8s.apimachinery.pkg.util.intstr.IntOrString") => {
            return json!({
                "description": v.get("description").cloned().unwrap_or(Value::Null),
                "format": "int-or-string",
                "oneOf": [{"type": "integer"}, {"type": "string"}]
            })
        }
        Some("io.k8s.apimachinery.pkg.api.resource.Quantity") => {
            return json!({
                "description": v.get("description").cloned().unwrap_or(Value::Null),
                "oneOf": [{"type": "string"}, {"type": "number"}]
            })
        }
        _ => {}
    }
    convert(v)
}

fn convert(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::with_capacity(m.len());
            let mut reference = None;
            for (k, child) in m {
                if k == "$ref" {
                    if let Value::String(s) = child {
                        let target = s.strip_prefix(V2_PREFIX).unwrap_or(s);
                        reference = Some(format!("{V3_PREFIX}{target}"));
                        continue;
                    }
                }
                // `properties` and `x-` extension values hold names/data, not schemas keyed by
                // keyword, but converting them is harmless: only `$ref` keys change.
                out.insert(k.clone(), convert(child));
            }
            if let Some(r) = reference {
                if out.is_empty() {
                    out.insert("$ref".into(), Value::String(r));
                } else {
                    out.insert("allOf".into(), json!([{ "$ref": r }]));
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(convert).collect()),
        other => other.clone(),
    }
}

/// The name a ref points at, if it is local to `prefix`.
fn ref_target<'a>(r: &'a str, prefix: &str) -> Option<&'a str> {
    r.strip_prefix(prefix)
}

/// Every definition reachable from `roots` through `$ref`s (refs use `prefix`), resolving
/// names with `lookup`.
pub(crate) fn closure<'a, 'r>(
    roots: impl IntoIterator<Item = &'r str>,
    lookup: &dyn Fn(&str) -> Option<&'a Value>,
    prefix: &str,
) -> BTreeMap<String, &'a Value> {
    let mut seen: BTreeMap<String, &'a Value> = BTreeMap::new();
    let mut stack: Vec<&'a Value> = Vec::new();
    let visit = |name: &str, seen: &mut BTreeMap<String, &'a Value>, stack: &mut Vec<&'a Value>| {
        if !seen.contains_key(name) {
            if let Some(s) = lookup(name) {
                seen.insert(name.to_string(), s);
                stack.push(s);
            }
        }
    };
    for r in roots {
        visit(r, &mut seen, &mut stack);
    }
    while let Some(schema) = stack.pop() {
        let mut found: Vec<&str> = Vec::new();
        for_each_ref(schema, &mut |r| {
            if let Some(t) = ref_target(r, prefix) {
                found.push(t);
            }
        });
        for t in found {
            visit(t, &mut seen, &mut stack);
        }
    }
    seen
}

/// One group/version document with its hash.
pub(crate) struct GvDoc {
    pub bytes: bytes::Bytes,
    pub hash: String,
}

/// Builds the document of each group/version from the routes and v3 schemas.
pub(crate) fn documents<'a>(
    routes: &'a [Route],
    lookup: &dyn Fn(&str) -> Option<&'a Value>,
) -> BTreeMap<String, GvDoc> {
    let mut by_gv: BTreeMap<&str, Vec<&Route>> = BTreeMap::new();
    for r in routes {
        if !r.gv_path.is_empty() {
            by_gv.entry(r.gv_path.as_str()).or_default().push(r);
        }
    }
    let mut out = BTreeMap::new();
    for (gv, rs) in by_gv {
        let doc = document(&rs, lookup);
        // Serializing a Value we built cannot fail; an empty body would only hide a bug.
        let bytes = serde_json::to_vec(&doc).unwrap_or_default();
        let hash = etag(&bytes);
        out.insert(
            gv.to_string(),
            GvDoc {
                bytes: bytes.into(),
                hash,
            },
        );
    }
    out
}

/// A group/version document, borrowing its schemas so they are serialized without copies.
#[derive(serde::Serialize)]
struct Document<'a> {
    openapi: &'static str,
    info: Value,
    paths: Map<String, Value>,
    components: Components<'a>,
    security: Value,
}

#[derive(serde::Serialize)]
struct Components<'a> {
    schemas: BTreeMap<String, &'a Value>,
    #[serde(rename = "securitySchemes")]
    security_schemes: Value,
}

fn document<'a>(routes: &[&Route], lookup: &dyn Fn(&str) -> Option<&'a Value>) -> Document<'a> {
    let mut sorted: Vec<&&Route> = routes.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut paths = Map::new();
    for r in &sorted {
        paths.insert(r.path.clone(), v3_path_item(r, V3_PREFIX));
    }
    let roots = sorted.iter().flat_map(|r| route_refs(r));
    Document {
        openapi: "3.0.0",
        info: json!({"title": "Kubernetes", "version": super::VERSION}),
        paths,
        components: Components {
            schemas: closure(roots, lookup, V3_PREFIX),
            security_schemes: json!({
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey"
                }
            }),
        },
        security: json!([{"BearerToken": []}]),
    }
}

/// Upstream's etag style: uppercase hex SHA-512 of the document (also used by kube-openapi
/// for `/openapi/v2`'s `ETag`).
pub fn etag(bytes: &[u8]) -> String {
    let digest = Sha512::digest(bytes);
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest.iter() {
        s.push_str(&format!("{b:02X}"));
    }
    s
}
