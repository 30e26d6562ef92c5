//! The OpenAPI documents (`/openapi/v2` as JSON and as gnostic protobuf, `/openapi/v3` and its
//! per-group-version documents) and the type index strategic merge patch and server-side
//! apply read patch metadata from.
//!
//! # Design
//!
//! Built-in definitions come from k8s-openapi's `JsonSchema` impls (one schemars generator
//! pass), reshaped where upstream publishes something else (special scalar types, list kinds,
//! `required`), stamped with `x-kubernetes-group-version-kind` and the built-in patch
//! metadata. Paths come from the resource table. Definitions are kept in swagger 2.0 form;
//! the OpenAPI 3 form is derived from them. Everything served is computed on first request
//! and cached as bytes.
//!
//! Custom resources are an overlay: [`OpenApi::with_custom_resources`] takes the complete
//! current set of CRD versions and returns a new [`OpenApi`] that shares the built-in part
//! (definitions, index, encoded bytes) with its parent, so CRD churn only pays for the CRDs.
//!
//! # Guarantees
//!
//! Every `$ref` in every document resolves inside that document: resources whose definition
//! is unknown get a permissive schema under their definition name, user `$ref`s in CRD
//! schemas are dropped, and each OpenAPI 3 document carries the closure of what its paths
//! reference.
//!
//! # Limits
//!
//! - No deprecated `/watch/` paths and no connect operations (exec, attach, portforward,
//!   proxy); kubectl uses neither from OpenAPI.
//! - The v3 index lists group/version documents only (no `api`, `apis`, `version` docs).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::resources::ResourceDef;

mod custom;
mod defs;
mod index;
mod paths;
mod proto;
mod service;
mod v3;

#[cfg(test)]
mod tests;

pub use custom::crd_definition_name;
pub use index::TypeIndex;
pub use service::OpenApiService;
pub use v3::etag;

use index::Types;
use paths::Route;
use v3::GvDoc;

/// The Kubernetes version the documents claim (`info.version`).
pub const VERSION: &str = "v1.33.0";

/// The `Content-Type` of the protobuf form of `/openapi/v2`, as kube-openapi answers it
/// (the `.v1.0` spelling: `@` is not legal in a media type).
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// True if an `Accept` header asks `/openapi/v2` for protobuf: client-go sends the deprecated
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`; the `.v1.0` form is also
/// accepted, as upstream does. JSON wins when listed first, as kube-openapi's negotiation.
pub fn wants_v2_protobuf(accept: &str) -> bool {
    for part in accept.split(',') {
        let media = part.split(';').next().unwrap_or("").trim();
        match media {
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            | V2_PROTOBUF_CONTENT_TYPE => return true,
            "application/json" | "*/*" | "application/*" => return false,
            _ => {}
        }
    }
    false
}

/// A group/version/kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvk {
    /// API group, empty for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
}

impl Gvk {
    /// A GVK from its parts.
    pub fn new(group: &str, version: &str, kind: &str) -> Gvk {
        Gvk {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
        }
    }
}

/// One custom resource version to publish: its resource (with `definition` set, see
/// [`crd_definition_name`]) and the version's `openAPIV3Schema` (`None`: anything goes).
#[derive(Clone)]
pub struct CustomResource {
    /// The served resource.
    pub def: Arc<ResourceDef>,
    /// The CRD version's `schema.openAPIV3Schema`.
    pub schema: Option<Value>,
}

/// The built-in part, shared by every [`OpenApi`] derived from one build.
struct Base {
    routes: Vec<Route>,
    defs: Arc<Map<String, Value>>,
    types: Arc<Types>,
    v2_paths_json: OnceLock<String>,
    v2_defs_json: OnceLock<String>,
    v2_paths_pb: OnceLock<Vec<u8>>,
    v2_defs_pb: OnceLock<Vec<u8>>,
    v3_schemas: OnceLock<Map<String, Value>>,
    v3_docs: OnceLock<BTreeMap<String, GvDoc>>,
}

/// The OpenAPI documents of a set of resources, built once and served as cached bytes.
///
/// Cheap to share behind an `Arc`; replace it (via [`OpenApi::with_custom_resources`]) when
/// CRDs change.
pub struct OpenApi {
    base: Arc<Base>,
    custom_routes: Vec<Route>,
    custom_defs: Arc<Map<String, Value>>,
    custom_v3: Map<String, Value>,
    index: Arc<TypeIndex>,
    v2_json: OnceLock<(Bytes, String)>,
    v2_pb: OnceLock<(Bytes, String)>,
    v3_docs: OnceLock<BTreeMap<String, GvDoc>>,
}

fn gvk_of(def: &ResourceDef) -> Gvk {
    Gvk::new(&def.group, &def.version, &def.kind)
}

/// Routes for `defs` plus one discovery route per group/version, sorted by path.
fn routes(defs: &[Arc<ResourceDef>]) -> Vec<Route> {
    let mut out: Vec<Route> = defs.iter().flat_map(|d| paths::routes_for(d)).collect();
    let mut gvs: Vec<(String, String)> = defs
        .iter()
        .map(|d| (d.group.clone(), d.version.clone()))
        .collect();
    gvs.sort();
    gvs.dedup();
    out.extend(gvs.iter().map(|(g, v)| paths::discovery_route(g, v)));
    let mut groups: Vec<&str> = gvs
        .iter()
        .map(|(g, _)| g.as_str())
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    out.extend(groups.into_iter().map(paths::group_route));
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out.dedup_by(|a, b| a.path == b.path);
    out
}

/// Permissive schema for a resource whose type we do not know, so refs to it resolve.
fn fallback_definition() -> Value {
    custom::v2_schema(None)
}

impl OpenApi {
    /// Builds the documents of `defs` (normally every built-in resource).
    ///
    /// Resources whose `definition` is not a known built-in type are published with a
    /// permissive schema (and logged), so the documents stay self-consistent.
    pub fn build(defs: &[Arc<ResourceDef>]) -> OpenApi {
        let mut d = defs::builtin_definitions();
        defs::stamp_patch_metadata(&mut d);
        for def in defs {
            if !d.contains_key(&def.definition) {
                tracing::warn!(definition = %def.definition, "no schema for resource; publishing a permissive one");
                d.insert(def.definition.clone(), fallback_definition());
            }
        }
        stamp_resources(&mut d, defs);
        let mut gvs: Vec<(String, String)> = defs
            .iter()
            .map(|d| (d.group.clone(), d.version.clone()))
            .collect();
        gvs.sort();
        gvs.dedup();
        for (g, v) in &gvs {
            defs::stamp_gvk(
                &mut d,
                defs::DELETE_OPTIONS,
                &Gvk::new(g, v, "DeleteOptions"),
            );
            defs::stamp_gvk(&mut d, defs::WATCH_EVENT, &Gvk::new(g, v, "WatchEvent"));
        }
        defs::stamp_gvk(&mut d, defs::STATUS, &Gvk::new("", "v1", "Status"));
        defs::stamp_gvk(&mut d, defs::SCALE, &Gvk::new("autoscaling", "v1", "Scale"));
        defs::stamp_gvk(
            &mut d,
            defs::EVICTION,
            &Gvk::new("policy", "v1", "Eviction"),
        );
        defs::stamp_gvk(
            &mut d,
            defs::TOKEN_REQUEST,
            &Gvk::new("authentication.k8s.io", "v1", "TokenRequest"),
        );
        d.sort_keys();

        let defs_arc = Arc::new(d);
        let types = Arc::new(Types::build(&defs_arc, None));
        let mut routes = routes(defs);
        routes.extend(paths::root_routes());
        let base = Arc::new(Base {
            routes,
            defs: defs_arc.clone(),
            types: types.clone(),
            v2_paths_json: OnceLock::new(),
            v2_defs_json: OnceLock::new(),
            v2_paths_pb: OnceLock::new(),
            v2_defs_pb: OnceLock::new(),
            v3_schemas: OnceLock::new(),
            v3_docs: OnceLock::new(),
        });
        let index = TypeIndex::new(types, Types::default(), defs_arc, Arc::new(Map::new()));
        OpenApi {
            base,
            custom_routes: Vec::new(),
            custom_defs: Arc::new(Map::new()),
            custom_v3: Map::new(),
            index: Arc::new(index),
            v2_json: OnceLock::new(),
            v2_pb: OnceLock::new(),
            v3_docs: OnceLock::new(),
        }
    }

    /// The documents of this build's built-in resources plus exactly `custom` (the complete
    /// current set of custom resource versions; earlier custom resources are dropped).
    ///
    /// A custom definition whose name collides with a built-in one is skipped (and logged):
    /// built-in groups cannot be served by CRDs.
    pub fn with_custom_resources(&self, custom: &[CustomResource]) -> OpenApi {
        let base = self.base.clone();
        let mut v2 = Map::new();
        let mut v3s = Map::new();
        let mut served: Vec<Arc<ResourceDef>> = Vec::new();
        for cr in custom {
            let name = &cr.def.definition;
            if base.defs.contains_key(name) || base.defs.contains_key(&format!("{name}List")) {
                tracing::warn!(definition = %name, "custom resource definition collides with a built-in one; not published");
                continue;
            }
            let gvk = gvk_of(&cr.def);
            let list_gvk = Gvk::new(&gvk.group, &gvk.version, &format!("{}List", gvk.kind));
            v2.insert(name.clone(), custom::v2_schema(cr.schema.as_ref()));
            v3s.insert(name.clone(), custom::v3_schema(cr.schema.as_ref()));
            let list = defs::list_definition(&cr.def.kind, name);
            v3s.insert(format!("{name}List"), v3::to_v3(None, &list));
            v2.insert(format!("{name}List"), list);
            defs::stamp_gvk(&mut v2, name, &gvk);
            defs::stamp_gvk(&mut v3s, name, &gvk);
            defs::stamp_gvk(&mut v2, &format!("{name}List"), &list_gvk);
            defs::stamp_gvk(&mut v3s, &format!("{name}List"), &list_gvk);
            served.push(cr.def.clone());
        }
        v2.sort_keys();
        v3s.sort_keys();
        let custom_routes = routes(&served);
        let types = Types::build(&v2, Some(&base.defs));
        let custom_defs = Arc::new(v2);
        let index = TypeIndex::new(
            base.types.clone(),
            types,
            base.defs.clone(),
            custom_defs.clone(),
        );
        OpenApi {
            base,
            custom_routes,
            custom_defs,
            custom_v3: v3s,
            index: Arc::new(index),
            v2_json: OnceLock::new(),
            v2_pb: OnceLock::new(),
            v3_docs: OnceLock::new(),
        }
    }

    fn v2_header() -> Value {
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": VERSION},
            "securityDefinitions": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "in": "header",
                    "name": "authorization",
                    "type": "apiKey"
                }
            },
            "security": [{"BearerToken": []}]
        })
    }

    fn v2_paths(routes: &[Route]) -> Map<String, Value> {
        routes
            .iter()
            .map(|r| (r.path.clone(), paths::v2_path_item(r)))
            .collect()
    }

    /// `/openapi/v2` as JSON.
    pub fn v2_json(&self) -> Bytes {
        self.v2_json_tagged().0
    }

    /// `/openapi/v2` as JSON and its ETag, both computed once.
    pub fn v2_json_tagged(&self) -> (Bytes, String) {
        self.v2_json
            .get_or_init(|| {
                let b = &self.base;
                let base_paths = b
                    .v2_paths_json
                    .get_or_init(|| inner_json(&Self::v2_paths(&b.routes)));
                let base_defs = b.v2_defs_json.get_or_init(|| inner_json(&b.defs));
                let custom_paths = inner_json(&Self::v2_paths(&self.custom_routes));
                let custom_defs = inner_json(&self.custom_defs);
                let header = inner_json(Self::v2_header().as_object().unwrap_or(&Map::new()));
                let mut out = String::with_capacity(base_paths.len() + base_defs.len() + 4096);
                out.push('{');
                out.push_str(&header);
                out.push_str(",\"paths\":{");
                join_into(&mut out, &[base_paths, &custom_paths]);
                out.push_str("},\"definitions\":{");
                join_into(&mut out, &[base_defs, &custom_defs]);
                out.push_str("}}");
                let tag = etag(out.as_bytes());
                (Bytes::from(out), tag)
            })
            .clone()
    }

    /// `/openapi/v2` as gnostic `openapi.v2.Document` protobuf ([`V2_PROTOBUF_CONTENT_TYPE`]).
    pub fn v2_protobuf(&self) -> Bytes {
        self.v2_protobuf_tagged().0
    }

    /// `/openapi/v2` as protobuf and its ETag, both computed once.
    pub fn v2_protobuf_tagged(&self) -> (Bytes, String) {
        self.v2_pb
            .get_or_init(|| {
                let b = &self.base;
                let base_paths = b
                    .v2_paths_pb
                    .get_or_init(|| proto::path_entries(&Self::v2_paths(&b.routes)));
                let base_defs = b
                    .v2_defs_pb
                    .get_or_init(|| proto::definition_entries(&b.defs));
                let custom_paths = proto::path_entries(&Self::v2_paths(&self.custom_routes));
                let custom_defs = proto::definition_entries(&self.custom_defs);
                let doc = proto::assemble(
                    &Self::v2_header(),
                    &[base_paths, &custom_paths],
                    &[base_defs, &custom_defs],
                );
                let tag = etag(&doc);
                (Bytes::from(doc), tag)
            })
            .clone()
    }

    fn base_v3_docs(&self) -> &BTreeMap<String, GvDoc> {
        let b = &self.base;
        b.v3_docs.get_or_init(|| {
            let schemas = self.base_v3_schemas();
            v3::documents(&b.routes, &|n| schemas.get(n))
        })
    }

    fn base_v3_schemas(&self) -> &Map<String, Value> {
        let b = &self.base;
        b.v3_schemas.get_or_init(|| {
            b.defs
                .iter()
                .map(|(k, v)| (k.clone(), v3::to_v3(Some(k), v)))
                .collect()
        })
    }

    fn custom_v3_docs(&self) -> &BTreeMap<String, GvDoc> {
        self.v3_docs.get_or_init(|| {
            if self.custom_routes.is_empty() {
                return BTreeMap::new();
            }
            // Custom schemas reference built-in ones (ObjectMeta, ListMeta, Status, ...).
            let base = self.base_v3_schemas();
            v3::documents(&self.custom_routes, &|n| {
                self.custom_v3.get(n).or_else(|| base.get(n))
            })
        })
    }

    /// The `/openapi/v3` index: `{"paths": {"apis/apps/v1": {"serverRelativeURL":
    /// "/openapi/v3/apis/apps/v1?hash=<HASH>"}, ...}}`.
    pub fn v3_index(&self) -> Value {
        let mut paths = Map::new();
        for (gv, doc) in self
            .base_v3_docs()
            .iter()
            .chain(self.custom_v3_docs().iter())
        {
            paths.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={}", doc.hash)}),
            );
        }
        json!({ "paths": paths })
    }

    /// One group/version document and its hash (uppercase hex SHA-512, upstream's etag).
    /// `path` is the index key (`api/v1`, `apis/apps/v1`); a leading `/` or `/openapi/v3/`
    /// is accepted. `None` if no such group/version is served.
    pub fn v3_group_version(&self, path: &str) -> Option<(Bytes, String)> {
        let key = path.trim_start_matches('/');
        let key = key
            .strip_prefix("openapi/v3/")
            .unwrap_or(key)
            .trim_end_matches('/');
        self.custom_v3_docs()
            .get(key)
            .or_else(|| self.base_v3_docs().get(key))
            .map(|d| (d.bytes.clone(), d.hash.clone()))
    }

    /// The type index (patch metadata per field) for strategic merge patch and apply.
    pub fn type_index(&self) -> Arc<TypeIndex> {
        self.index.clone()
    }

    /// Computes every document now, so later requests do not pay for it.
    ///
    /// The server does not call this at startup: the documents are about 15 MB, and are
    /// built on the first request for them instead (off the async workers, see
    /// [`OpenApiService`]).
    pub fn warm(&self) {
        let _ = self.v2_json();
        let _ = self.v2_protobuf();
        let _ = self.v3_index();
    }
}

/// Stamps the GVKs of served resources and makes sure each listable one has its `XList`.
fn stamp_resources(d: &mut Map<String, Value>, defs: &[Arc<ResourceDef>]) {
    for def in defs {
        let gvk = gvk_of(def);
        defs::stamp_gvk(d, &def.definition, &gvk);
        if def.verbs.contains(&"list") {
            let list = format!("{}List", def.definition);
            if !d.contains_key(&list) {
                d.insert(
                    list.clone(),
                    defs::list_definition(&def.kind, &def.definition),
                );
            }
            defs::stamp_gvk(
                d,
                &list,
                &Gvk::new(&def.group, &def.version, &format!("{}List", def.kind)),
            );
        }
    }
}

/// A JSON object serialized without its braces (`"a":1,"b":2`), for splicing cached parts.
fn inner_json(m: &Map<String, Value>) -> String {
    let s = serde_json::to_string(m).unwrap_or_else(|_| "{}".into());
    s.get(1..s.len().saturating_sub(1))
        .unwrap_or_default()
        .to_string()
}

fn join_into(out: &mut String, parts: &[&str]) {
    let mut first = true;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        if !first {
            out.push(',');
        }
        out.push_str(p);
        first = false;
    }
}
