//! Subresources with their own semantics, as upstream's per-kind REST storages: `scale`
//! (workloads), `binding` and `eviction` (pods), `token` (service accounts), and the
//! CertificateSigningRequest `approval` and `status` rules.
//!
//! They are one [`Route`] the [`crate::handler::Handler`] consults before its generic routing,
//! so they live here rather than in the handler. Each writes through the generic [`Storage`]
//! (optimistic concurrency, admission of metadata), never the datastore directly.

use std::sync::Arc;

use bytes::Bytes;
use distro_apimachinery::schema::Schema;
use http::{Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::authn::UserInfo;
use crate::error::{Error, FieldError, Result};
use crate::handler::{error_response, json_response, Authorizer, Body, Route};
use crate::request::{parse_query, RequestInfo, ResourceRequest};
use crate::resources::{NameRule, Registry, ResourceDef, Strategy};
use crate::rest::Storage;
use crate::table::Column;

pub mod approval;
pub mod binding;
pub mod eviction;
pub mod scale;
pub mod token;

pub use token::TokenIssuer;

/// The route serving these subresources.
pub struct Subresources {
    /// Served resources.
    pub registry: Arc<Registry>,
    /// Generic storage.
    pub storage: Storage,
    /// Schema for strategic merge patches of `scale` and `approval`.
    pub patch_schema: Arc<dyn Schema>,
    /// For the signer check of CSR approvals.
    pub authorizer: Arc<dyn Authorizer>,
    /// Signs TokenRequests; `None` answers `serviceaccounts/token` with 404 (no key).
    pub tokens: Option<Arc<TokenIssuer>>,
}

/// What one request is, once routed here.
pub(crate) struct Call<'a> {
    pub(crate) req: &'a Request<Bytes>,
    pub(crate) r: &'a ResourceRequest,
    pub(crate) def: Arc<ResourceDef>,
    pub(crate) ns: Option<&'a str>,
    pub(crate) user: &'a UserInfo,
    /// For recording managedFields of subresource writes.
    pub(crate) schema: &'a Arc<dyn Schema>,
}

impl Call<'_> {
    /// The object name from the URL.
    pub(crate) fn name(&self) -> &str {
        self.r.name.as_deref().unwrap_or_default()
    }

    pub(crate) fn query(&self) -> crate::request::Query {
        parse_query(self.req.uri().query())
    }

    /// The write's options, with managedFields recorded under the subresource as upstream.
    pub(crate) fn write_options(&self) -> Result<crate::rest::WriteOptions> {
        let opts = crate::handler::write_options(&self.query())?;
        Ok(crate::apply::track(opts, self.req, self.schema))
    }

    pub(crate) fn body(&self) -> Result<Value> {
        let v = crate::handler::decode_body(self.req)?;
        if !v.is_object() {
            return Err(Error::BadRequest(
                "the body of the request was not a JSON object".into(),
            ));
        }
        Ok(v)
    }
}

#[async_trait::async_trait]
impl Route for Subresources {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        user: &UserInfo,
    ) -> Option<Response<Body>> {
        let RequestInfo::Resource(r) = info else {
            return None;
        };
        let which = match (
            r.group.as_str(),
            r.resource.as_str(),
            r.subresource.as_deref(),
            r.verb,
        ) {
            (_, _, Some("scale"), _) => Which::Scale,
            ("", "pods", Some("binding"), "create") | ("", "bindings", None, "create") => {
                Which::Binding
            }
            ("", "pods", Some("eviction"), "create") => Which::Eviction,
            ("", "serviceaccounts", Some("token"), "create") => Which::Token,
            ("certificates.k8s.io", "certificatesigningrequests", Some(s), v)
                if (s == "approval" || s == "status") && matches!(v, "update" | "patch") =>
            {
                Which::Approval
            }
            ("certificates.k8s.io", "certificatesigningrequests", Some("approval"), "get") => {
                Which::Approval
            }
            ("certificates.k8s.io", "certificatesigningrequests", None, "create") => {
                Which::CsrCreate
            }
            _ => return None,
        };
        let def = self.registry.get(&r.group, &r.version, &r.resource)?;
        if let Some(sub) = r.subresource.as_deref() {
            if !def.subresources.contains(&sub) {
                return None;
            }
        }
        let ns = if def.namespaced {
            match r.namespace.as_deref() {
                Some(ns) => Some(ns),
                None => return Some(error_response(&Error::NoSuchResource)),
            }
        } else {
            None
        };
        let call = Call {
            req,
            r,
            def,
            ns,
            user,
            schema: &self.patch_schema,
        };
        let result = match which {
            Which::Scale => scale::handle(self, &call).await,
            Which::Binding => binding::handle(self, &call).await,
            Which::Eviction => eviction::handle(self, &call).await,
            Which::Token => match &self.tokens {
                Some(t) => token::handle(self, t, &call).await,
                None => Err(Error::NoSuchResource),
            },
            Which::Approval => approval::handle(self, &call).await,
            Which::CsrCreate => approval::create(self, &call).await,
        };
        Some(result.unwrap_or_else(|e| error_response(&e)))
    }
}

enum Which {
    Scale,
    Binding,
    Eviction,
    Token,
    Approval,
    CsrCreate,
}

/// The `Status` upstream answers creates with when there is no object to return (binding,
/// eviction): 201 with `code` filled in.
pub(crate) fn created_status() -> Response<Body> {
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Applies a PATCH body of the request's content type to `base` (the handler's patch, for
/// subresources whose object is not the stored one). Server-side apply is not supported here.
pub(crate) fn apply_patch(
    req: &Request<Bytes>,
    base: &Value,
    schema: &dyn Schema,
    definition: &str,
) -> Result<Value> {
    let kind = crate::handler::PatchKind::of(req)?;
    let patch: Value = serde_json::from_slice(req.body())
        .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
    kind.apply(base, &patch, schema, definition)
}

/// Checks that a subresource body names the object of the URL.
pub(crate) fn check_kind(body: &Value, kinds: &[&str], api_versions: &[&str]) -> Result<()> {
    if let Some(k) = body["kind"].as_str().filter(|k| !k.is_empty()) {
        if !kinds.contains(&k) {
            return Err(Error::BadRequest(format!(
                "the kind of the object ({k}) does not match the expected kind ({})",
                kinds[0]
            )));
        }
    }
    if let Some(av) = body["apiVersion"].as_str().filter(|v| !v.is_empty()) {
        if !api_versions.contains(&av) {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                api_versions[0]
            )));
        }
    }
    Ok(())
}

/// `def` with a strategy that keeps status changes and skips the kind's update validation:
/// for writes whose own checks already ran (binding sets `spec.nodeName`, which an ordinary
/// pod update may not change, and `status` in the same write).
pub(crate) fn unchecked_def(def: &ResourceDef) -> ResourceDef {
    ResourceDef {
        group: def.group.clone(),
        version: def.version.clone(),
        kind: def.kind.clone(),
        plural: def.plural.clone(),
        singular: def.singular.clone(),
        namespaced: def.namespaced,
        short_names: Vec::new(),
        categories: Vec::new(),
        verbs: def.verbs.clone(),
        subresources: def.subresources.clone(),
        definition: def.definition.clone(),
        storage: def.storage.clone(),
        virtual_only: def.virtual_only,
        strategy: Arc::new(Unchecked(def.strategy.clone())),
    }
}

struct Unchecked(Arc<dyn Strategy>);

impl Strategy for Unchecked {
    fn decode(&self, obj: Value) -> std::result::Result<(Value, Vec<String>), String> {
        self.0.decode(obj)
    }
    fn default(&self, obj: &mut Value) {
        self.0.default(obj)
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        self.0.validate(obj)
    }
    fn validate_update(&self, _obj: &Value, _old: &Value) -> Vec<FieldError> {
        Vec::new()
    }
    fn has_status(&self) -> bool {
        false
    }
    fn tracks_generation(&self) -> bool {
        self.0.tracks_generation()
    }
    fn name_rule(&self) -> NameRule {
        self.0.name_rule()
    }
    fn columns(&self) -> Vec<Column> {
        self.0.columns()
    }
    fn cells(&self, obj: &Value) -> Vec<Value> {
        self.0.cells(obj)
    }
}
