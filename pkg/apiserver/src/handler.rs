//! Request handling: authentication, routing by [`crate::request`], and the verb handlers that
//! turn HTTP into calls on the generic storage.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use serde_json::{json, Value};

use crate::authn::UserInfo;
use crate::error::{success_status, Error, Result};
use crate::list::{self, ListOptions};
use crate::negotiate::{negotiate, Want};
use crate::request::{self, parse_query, Query, RequestInfo, ResourceRequest};
use crate::resources::{Registry, ResourceDef};
use crate::rest::{DeleteOptions, FieldValidation, Storage, WriteOptions, Written};
use crate::table::{self, IncludeObject};

/// The response body type: whole bodies and watch streams alike.
pub type Body = BoxBody<Bytes, Infallible>;

/// Largest request body accepted (upstream's limit is 3 MiB for objects).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Authenticates bearer tokens (service-account JWTs, bootstrap tokens).
#[async_trait::async_trait]
pub trait TokenAuthenticator: Send + Sync {
    /// The user the token stands for, or `None` if it is not valid.
    async fn authenticate(&self, token: &str) -> Option<UserInfo>;

    /// For TokenReview: the user and the audiences the token is valid for among `audiences`
    /// (empty: the API server's). Authenticators without audiences accept the asked ones.
    async fn review(&self, token: &str, audiences: &[String]) -> Option<(UserInfo, Vec<String>)> {
        self.authenticate(token)
            .await
            .map(|u| (u, audiences.to_vec()))
    }
}

/// Decides whether a user may do what a request asks.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` if allowed; otherwise the reason it was not.
    fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> std::result::Result<(), String>;
}

/// Everything a request handler needs, shared by all connections.
pub struct Handler {
    /// Served resources.
    pub registry: Arc<Registry>,
    /// Generic storage.
    pub storage: Storage,
    /// `host:port` clients should use (`/api` serverAddressByClientCIDRs).
    pub advertise: String,
    /// Bearer-token authenticators, tried in order.
    pub tokens: Vec<Arc<dyn TokenAuthenticator>>,
    /// The authorizer.
    pub authorizer: Arc<dyn Authorizer>,
    /// Schema for strategic merge patch.
    pub patch_schema: Arc<dyn distro_apimachinery::schema::Schema>,
    /// Extra routes (OpenAPI, metrics, subresources served elsewhere).
    pub extra: Vec<Arc<dyn Route>>,
    /// Request metrics, recorded for every request that gets as far as routing.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// A handler for non-generic paths (OpenAPI, subresources proxied to kubelets, …).
#[async_trait::async_trait]
pub trait Route: Send + Sync {
    /// Handles the request if it is this route's; `None` passes it on.
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        user: &UserInfo,
    ) -> Option<Response<Body>>;

    /// Whether this route serves `path` to anyone, before authentication and authorization
    /// (k3s' `/cacerts`, which a joining node fetches before it trusts anything). Such a
    /// request is handled as the anonymous user unless its credentials say otherwise.
    fn public(&self, _path: &str) -> bool {
        false
    }
}

/// A JSON response.
pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    bytes_response(
        code,
        "application/json",
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

/// A response with a body of the given content type.
pub fn bytes_response(code: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    *r.status_mut() = code;
    if let Ok(ct) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r
}

/// The `Status` response for an error.
pub fn error_response(e: &Error) -> Response<Body> {
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.status())
}

fn text(code: StatusCode, s: &'static str) -> Response<Body> {
    bytes_response(
        code,
        "text/plain; charset=utf-8",
        Bytes::from_static(s.as_bytes()),
    )
}

/// Upstream's CSR `PrepareForCreate`: `spec.username`, `uid`, `groups` and `extra` are the
/// requesting user's, whatever the body says, so approvers can trust who asked.
fn stamp_requester(body: &mut Value, user: &UserInfo) {
    if !body["spec"].is_object() {
        return;
    }
    let spec = &mut body["spec"];
    spec["username"] = json!(user.name);
    spec["groups"] = json!(user.groups);
    match user.uid.as_str() {
        "" => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("uid");
            }
        }
        uid => spec["uid"] = json!(uid),
    }
    if user.extra.is_empty() {
        if let Some(m) = spec.as_object_mut() {
            m.remove("extra");
        }
    } else {
        spec["extra"] = json!(user.extra);
    }
}

/// Health endpoints answer anyone, as upstream's public-info paths.
fn is_health(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

impl Handler {
    /// Serves one request from a connection whose client certificate (if any) identified `peer`.
    pub async fn serve(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: Option<&UserInfo>,
    ) -> Response<Body> {
        let started = tokio::time::Instant::now();
        let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let _inflight = self.metrics.start(mutating);
        let mut info = None;
        let resp = self.serve_inner(req, peer, &mut info).await;
        if let Some(info) = &info {
            self.metrics
                .observe(info, resp.status().as_u16(), started.elapsed());
        }
        resp
    }

    /// [`Handler::serve`], leaving what the request asked for in `seen` once parsed.
    async fn serve_inner(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: Option<&UserInfo>,
        seen: &mut Option<RequestInfo>,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        // A pending upgrade (exec, attach, port-forward) waits here for the route relaying it.
        let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        parts
            .extensions
            .insert(crate::proxy::UpgradeSlot::new(upgrade));
        let path = parts.uri.path().to_string();
        if is_health(&path) {
            return text(StatusCode::OK, "ok");
        }
        let public = self.extra.iter().any(|r| r.public(&path));
        let user = match self.authenticate(&parts.headers, peer).await {
            Some(u) => u,
            None if public => UserInfo::anonymous(),
            None => return error_response(&Error::Unauthorized),
        };
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error_response(&Error::TooLarge("the request body is too large".into()))
            }
        };
        let req = Request::from_parts(parts, body);
        let query = parse_query(req.uri().query());
        let info: &RequestInfo = seen.insert(request::parse(req.method(), &path, &query));
        let user = match self.impersonate(&req, user, info) {
            Ok(u) => u,
            Err(e) => return error_response(&e),
        };
        if let Err(reason) = self.authorizer.authorize(&user, info) {
            if !public {
                return error_response(&Error::Forbidden(forbidden_message(&user, info, &reason)));
            }
        }
        for route in &self.extra {
            if let Some(r) = route.handle(&req, info, &user).await {
                return r;
            }
        }
        let result = match info {
            RequestInfo::NonResource { .. } => self.non_resource(&req, &path),
            RequestInfo::Resource(r) => self.resource(&req, r, &query, &user).await,
        };
        result.unwrap_or_else(|e| error_response(&e))
    }

    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&UserInfo>,
    ) -> Option<UserInfo> {
        if let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        {
            for t in &self.tokens {
                if let Some(u) = t.authenticate(token.trim()).await {
                    return Some(u);
                }
            }
            // A bad token is an error even with a client certificate, as upstream.
            return None;
        }
        peer.cloned()
    }

    /// Applies `Impersonate-*` headers after checking the real user may impersonate.
    fn impersonate(
        &self,
        req: &Request<Bytes>,
        user: UserInfo,
        _info: &RequestInfo,
    ) -> Result<UserInfo> {
        let h = req.headers();
        let Some(name) = h.get("impersonate-user").and_then(|v| v.to_str().ok()) else {
            if h.contains_key("impersonate-group") {
                return Err(Error::BadRequest(
                    "requested [{Group  }] without impersonating a user".into(),
                ));
            }
            return Ok(user);
        };
        let groups: Vec<String> = h
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        let mut checks = vec![];
        if let Some(rest) = name.strip_prefix("system:serviceaccount:") {
            let (ns, sa) = rest.split_once(':').unwrap_or(("", rest));
            checks.push(("", "serviceaccounts", Some(ns.to_string()), sa.to_string()));
        } else {
            checks.push(("", "users", None, name.to_string()));
        }
        for g in &groups {
            checks.push(("", "groups", None, g.clone()));
        }
        for (group, resource, namespace, target) in checks {
            let info = RequestInfo::Resource(ResourceRequest {
                group: group.into(),
                version: String::new(),
                namespace,
                resource: resource.into(),
                name: Some(target.clone()),
                subresource: None,
                verb: "impersonate",
            });
            if let Err(reason) = self.authorizer.authorize(&user, &info) {
                let _ = reason;
                return Err(Error::Forbidden(format!(
                    "{resource} \"{target}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\" at the cluster scope",
                    user.name
                )));
            }
        }
        let mut out = if let Some(rest) = name.strip_prefix("system:serviceaccount:") {
            let (ns, sa) = rest.split_once(':').unwrap_or(("", rest));
            UserInfo::service_account(ns, sa, "")
        } else {
            UserInfo {
                name: name.to_string(),
                ..Default::default()
            }
        };
        if !groups.is_empty() || out.groups.is_empty() {
            let mut g = groups;
            if name != "system:anonymous" && !g.iter().any(|x| x == crate::authn::AUTHENTICATED) {
                g.push(crate::authn::AUTHENTICATED.into());
            }
            if out.name.starts_with("system:serviceaccount:") {
                out.groups.extend(g);
                out.groups.dedup();
            } else {
                out.groups = g;
            }
        }
        Ok(out)
    }

    fn non_resource(&self, req: &Request<Bytes>, path: &str) -> Result<Response<Body>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Err(Error::MethodNotAllowed(format!(
                "{} not allowed on {path}",
                req.method()
            )));
        }
        let want = negotiate(
            req.headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        let path = path.trim_end_matches('/');
        match path {
            "/version" => Ok(json_response(StatusCode::OK, &crate::discovery::version())),
            "/api" | "/apis" => {
                if let Want::AggregatedDiscovery(v) = want {
                    let doc = crate::discovery::aggregated(&self.registry, path == "/api", &v);
                    let ct = format!(
                        "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                    );
                    let mut r = bytes_response(StatusCode::OK, &ct, Bytes::from(doc.to_string()));
                    r.headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Accept"));
                    return Ok(r);
                }
                let doc = if path == "/api" {
                    crate::discovery::api_versions(&self.advertise)
                } else {
                    crate::discovery::api_group_list(&self.registry)
                };
                let mut r = json_response(StatusCode::OK, &doc);
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("Accept"));
                Ok(r)
            }
            _ => {
                let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                let doc = match segs.as_slice() {
                    ["api", v] => crate::discovery::api_resource_list(&self.registry, "", v),
                    ["apis", g] => crate::discovery::api_group(&self.registry, g),
                    ["apis", g, v] => crate::discovery::api_resource_list(&self.registry, g, v),
                    _ => None,
                };
                match doc {
                    Some(d) => Ok(json_response(StatusCode::OK, &d)),
                    None => Ok(json_response(
                        StatusCode::NOT_FOUND,
                        &Error::NoSuchResource.status(),
                    )),
                }
            }
        }
    }

    async fn resource(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
        query: &Query,
        user: &UserInfo,
    ) -> Result<Response<Body>> {
        let def = self
            .registry
            .get(&r.group, &r.version, &r.resource)
            .ok_or(Error::NoSuchResource)?;
        if !def.verbs.contains(&r.verb) && r.subresource.is_none() {
            return Err(Error::MethodNotAllowed(
                "the server does not allow this method on the requested resource".to_string(),
            ));
        }
        let ns = if def.namespaced {
            r.namespace.as_deref()
        } else {
            None
        };
        if def.namespaced && ns.is_none() && !matches!(r.verb, "list" | "watch") {
            return Err(Error::NoSuchResource);
        }
        let want = negotiate(
            req.headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        if want == Want::Unacceptable {
            return Err(Error::NotAcceptable(
                "only the following media types are accepted: application/json, application/yaml"
                    .into(),
            ));
        }
        if let Some(sub) = r.subresource.as_deref() {
            return self.subresource(req, &def, r, ns, sub, query, user).await;
        }
        if def.virtual_only {
            return Err(Error::MethodNotAllowed(format!(
                "{} is not served yet",
                def.group_resource()
            )));
        }
        let opts = crate::apply::track(write_options(query)?, req, &self.patch_schema);
        match r.verb {
            "get" => {
                let name = r.name.as_deref().unwrap_or_default();
                let obj = self.storage.get(&def, ns, name).await?;
                Ok(render_one(&def, &obj, &want, query))
            }
            "list" => {
                let mut lo = ListOptions::parse(&def, query, &def.namespace_prefix(ns))?;
                lo.raw = matches!(want, Want::Json);
                let page = list::list(&self.storage, &def, ns, &lo).await?;
                Ok(render_list(&def, page, &want, query))
            }
            "watch" => {
                let mut lo = ListOptions::parse(&def, query, &def.namespace_prefix(ns))?;
                if let Some(name) = &r.name {
                    let sel = format!("metadata.name={name}");
                    lo.fields = Some(
                        distro_apimachinery::fields::FieldSelector::parse(&sel)
                            .map_err(|e| Error::BadRequest(e.to_string()))?,
                    );
                }
                let render: list::Render = match &want {
                    Want::Table(_) => {
                        let d = def.clone();
                        let include =
                            IncludeObject::parse(query.get("includeObject").map(String::as_str));
                        Box::new(move |obj: &Value| {
                            table_for(&d, std::slice::from_ref(obj), include, json!({}))
                        })
                    }
                    _ => Box::new(|obj: &Value| obj.clone()),
                };
                let rx = list::watch(
                    self.storage.clone(),
                    def.clone(),
                    ns.map(String::from),
                    lo,
                    render,
                )
                .await?;
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b)));
                let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp.headers_mut().insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                Ok(resp)
            }
            "create" => {
                let mut body = decode_body(req)?;
                if def.group == "certificates.k8s.io" && def.plural == "certificatesigningrequests"
                {
                    stamp_requester(&mut body, user);
                }
                if let Some(name) = &r.name {
                    let _ = name;
                    return Err(Error::MethodNotAllowed(
                        "POST is not allowed on a named object".into(),
                    ));
                }
                let w = self.storage.create(&def, ns, body, &opts).await?;
                Ok(written(&def, w, &want, query))
            }
            "update" => {
                let body = decode_body(req)?;
                let name = r.name.as_deref().unwrap_or_default();
                let storage = &self.storage;
                let w = storage
                    .guaranteed_update(&def, ns, name, None, &opts, |_| {
                        storage.admit_body(&def, body.clone(), &opts)
                    })
                    .await?;
                Ok(written(&def, w, &want, query))
            }
            "patch" => {
                let name = r.name.as_deref().unwrap_or_default();
                let w = self.patch(req, &def, ns, name, None, &opts).await?;
                Ok(written(&def, w, &want, query))
            }
            "delete" => {
                let name = r.name.as_deref().unwrap_or_default();
                let body = if req.body().is_empty() {
                    None
                } else {
                    Some(decode_body(req)?)
                };
                let dopts = DeleteOptions::parse(body.as_ref(), query)?;
                let (obj, _gone) = self.storage.delete(&def, ns, name, &dopts).await?;
                Ok(render_one(&def, &obj, &want, query))
            }
            "deletecollection" => {
                let lo = ListOptions::parse(&def, query, &def.namespace_prefix(ns))?;
                let body = if req.body().is_empty() {
                    None
                } else {
                    Some(decode_body(req)?)
                };
                let dopts = DeleteOptions::parse(body.as_ref(), query)?;
                let page = list::list(&self.storage, &def, ns, &lo).await?;
                for obj in page.items {
                    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                    let ons = obj["metadata"]["namespace"].as_str();
                    match self.storage.delete(&def, ons, name, &dopts).await {
                        Ok(_) | Err(Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(json_response(
                    StatusCode::OK,
                    &success_status(Some(json!({"kind": def.plural, "group": def.group}))),
                ))
            }
            other => Err(Error::MethodNotAllowed(format!(
                "verb {other} is not supported"
            ))),
        }
    }

    /// Applies a PATCH body to the current object and writes it with optimistic concurrency.
    async fn patch(
        &self,
        req: &Request<Bytes>,
        def: &Arc<ResourceDef>,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let kind = PatchKind::of(req)?;
        if kind == PatchKind::Apply {
            let schema = self.patch_schema.clone();
            return crate::apply::apply(
                &self.storage,
                schema,
                def,
                ns,
                name,
                subresource,
                req,
                opts,
            )
            .await;
        }
        crate::apply::check_patch_options(req)?;
        let patch: Value = serde_json::from_slice(req.body())
            .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
        let storage = &self.storage;
        let schema = self.patch_schema.clone();
        let definition = def.definition.clone();
        storage
            .guaranteed_update(def, ns, name, subresource, opts, |current| {
                let Some(current) = current else {
                    return Err(Error::not_found(def.group_resource(), name));
                };
                let mut base = current.clone();
                // The client's patch may set a resourceVersion precondition; otherwise the current one
                // must not leak into the result as if the client had asked for it.
                if let Some(m) = base["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                let patched = if kind == PatchKind::Json {
                    // JSON patches address the object as it is, resourceVersion included
                    // (kubectl's managedFields migration replaces it); kept unchanged, it is no
                    // precondition.
                    let mut p = kind.apply(current, &patch, schema.as_ref(), &definition)?;
                    let rv = &current["metadata"]["resourceVersion"];
                    if let Some(m) = p["metadata"].as_object_mut() {
                        if m.get("resourceVersion") == Some(rv) {
                            m.remove("resourceVersion");
                        }
                    }
                    p
                } else {
                    kind.apply(&base, &patch, schema.as_ref(), &definition)?
                };
                storage.admit_body(def, patched, opts)
            })
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn subresource(
        &self,
        req: &Request<Bytes>,
        def: &Arc<ResourceDef>,
        r: &ResourceRequest,
        ns: Option<&str>,
        sub: &str,
        query: &Query,
        _user: &UserInfo,
    ) -> Result<Response<Body>> {
        if !def.subresources.contains(&sub) {
            return Err(Error::NoSuchResource);
        }
        let name = r.name.as_deref().unwrap_or_default();
        let want = negotiate(
            req.headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        );
        let opts = crate::apply::track(write_options(query)?, req, &self.patch_schema);
        match (sub, r.verb) {
            ("status", "get") => Ok(render_one(
                def,
                &self.storage.get(def, ns, name).await?,
                &Want::Json,
                query,
            )),
            ("status", "update") => {
                let body = decode_body(req)?;
                let storage = &self.storage;
                let w = storage
                    .guaranteed_update(def, ns, name, Some("status"), &opts, |_| {
                        storage.admit_body(def, body.clone(), &opts)
                    })
                    .await?;
                Ok(written(def, w, &want, query))
            }
            ("status", "patch") => {
                let w = self
                    .patch(req, def, ns, name, Some("status"), &opts)
                    .await?;
                Ok(written(def, w, &want, query))
            }
            // `kubectl debug`: the pod, and writes that may only add ephemeral containers.
            ("ephemeralcontainers", "get") if def.plural == "pods" => Ok(render_one(
                def,
                &self.storage.get(def, ns, name).await?,
                &Want::Json,
                query,
            )),
            ("ephemeralcontainers", "update") if def.plural == "pods" => {
                let body = decode_body(req)?;
                let storage = &self.storage;
                let w = storage
                    .guaranteed_update(def, ns, name, Some(sub), &opts, |_| {
                        storage.admit_body(def, body.clone(), &opts)
                    })
                    .await?;
                Ok(written(def, w, &want, query))
            }
            ("ephemeralcontainers", "patch") if def.plural == "pods" => {
                let w = self.patch(req, def, ns, name, Some(sub), &opts).await?;
                Ok(written(def, w, &want, query))
            }
            ("finalize", "update") if def.plural == "namespaces" => {
                let body = decode_body(req)?;
                let storage = &self.storage;
                let w = storage
                    .guaranteed_update(def, ns, name, Some("finalize"), &opts, |current| {
                        let mut next = current.cloned().unwrap_or(Value::Null);
                        next["spec"]["finalizers"] = body["spec"]["finalizers"].clone();
                        Ok((next, Vec::new()))
                    })
                    .await?;
                Ok(written(def, w, &want, query))
            }
            _ => Err(Error::MethodNotAllowed(format!(
                "{}/{sub} does not support {} yet",
                def.group_resource(),
                r.verb
            ))),
        }
    }
}

/// The patch types a PATCH's `Content-Type` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    /// The request's patch type; 415 for anything else, as upstream.
    pub(crate) fn of(req: &Request<Bytes>) -> Result<PatchKind> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Ok(match ct.as_str() {
            "application/json-patch+json" => PatchKind::Json,
            "application/merge-patch+json" => PatchKind::Merge,
            "application/strategic-merge-patch+json" => PatchKind::Strategic,
            "application/apply-patch+yaml" => PatchKind::Apply,
            other => {
                return Err(Error::UnsupportedMediaType(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                )))
            }
        })
    }

    /// Applies a JSON, merge or strategic patch to `base` (server-side apply has its own path).
    pub(crate) fn apply(
        self,
        base: &Value,
        patch: &Value,
        schema: &dyn distro_apimachinery::schema::Schema,
        definition: &str,
    ) -> Result<Value> {
        match self {
            PatchKind::Json => distro_apimachinery::patch::json_patch(base, patch)
                .map_err(|e| Error::BadRequest(e.to_string())),
            PatchKind::Merge => Ok(distro_apimachinery::patch::merge_patch(base, patch)),
            PatchKind::Strategic => {
                distro_apimachinery::patch::strategic_merge_patch(base, patch, schema, definition)
                    .map_err(|e| Error::BadRequest(e.to_string()))
            }
            PatchKind::Apply => Err(Error::UnsupportedMediaType(
                "server-side apply is not supported on this subresource".into(),
            )),
        }
    }
}

fn forbidden_message(user: &UserInfo, info: &RequestInfo, reason: &str) -> String {
    let base = match info {
        RequestInfo::Resource(r) => {
            let what = match &r.subresource {
                Some(s) => format!("{}/{}", r.resource, s),
                None => r.resource.clone(),
            };
            let gr = if r.group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            let subject = match &r.name {
                Some(n) => format!("{gr} \"{n}\" is forbidden"),
                None => format!("{gr} is forbidden"),
            };
            let scope = match &r.namespace {
                Some(ns) if r.resource != "namespaces" => format!("in the namespace \"{ns}\""),
                _ => "at the cluster scope".to_string(),
            };
            format!(
                "{subject}: User \"{}\" cannot {} resource \"{what}\" in API group \"{}\" {scope}",
                user.name, r.verb, r.group
            )
        }
        RequestInfo::NonResource { verb, path } => {
            format!(
                "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
                user.name
            )
        }
    };
    if reason.is_empty() {
        base
    } else {
        format!("{base}: {reason}")
    }
}

/// Parses a JSON (or YAML) request body.
pub(crate) fn decode_body(req: &Request<Bytes>) -> Result<Value> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(req.body())
            .map_err(|e| Error::BadRequest(format!("error decoding JSON body: {e}"))),
        "application/yaml" => serde_yaml::from_slice(req.body())
            .map_err(|e| Error::BadRequest(format!("error decoding YAML body: {e}"))),
        "application/vnd.kubernetes.protobuf" => crate::protobuf::decode(req.body())
            .map_err(|e| Error::BadRequest(format!("error decoding protobuf body: {e}"))),
        other => Err(Error::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {other})"
        ))),
    }
}

pub(crate) fn write_options(query: &Query) -> Result<WriteOptions> {
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            )))
        }
    };
    Ok(WriteOptions {
        dry_run,
        field_validation: FieldValidation::parse(query.get("fieldValidation").map(String::as_str))?,
        field_manager: query.get("fieldManager").cloned(),
        ..WriteOptions::default()
    })
}

fn written(def: &ResourceDef, w: Written, want: &Want, query: &Query) -> Response<Body> {
    let mut resp = render_one(def, &w.object, want, query);
    if w.created {
        *resp.status_mut() = StatusCode::CREATED;
    }
    for warning in w.warnings {
        let v = format!(
            "299 - {}",
            serde_json::to_string(&warning).unwrap_or_default()
        );
        if let Ok(h) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

fn table_for(def: &ResourceDef, items: &[Value], include: IncludeObject, meta: Value) -> Value {
    let columns = def.strategy.column_definitions();
    let rows = items
        .iter()
        .map(|o| table::row(def.strategy.cells(o), o, include))
        .collect();
    table::table_of(columns, rows, meta)
}

fn render_one(def: &ResourceDef, obj: &Value, want: &Want, query: &Query) -> Response<Body> {
    match want {
        Want::Table(_) => {
            let include = IncludeObject::parse(query.get("includeObject").map(String::as_str));
            let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            json_response(
                StatusCode::OK,
                &table_for(def, std::slice::from_ref(obj), include, meta),
            )
        }
        Want::Metadata(v) => json_response(
            StatusCode::OK,
            &json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{v}"), "metadata": obj["metadata"]}),
        ),
        _ => json_response(StatusCode::OK, obj),
    }
}

fn render_list(
    def: &ResourceDef,
    page: list::ListResult,
    want: &Want,
    query: &Query,
) -> Response<Body> {
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    match want {
        Want::Table(_) => {
            let include = IncludeObject::parse(query.get("includeObject").map(String::as_str));
            json_response(StatusCode::OK, &table_for(def, &page.items, include, meta))
        }
        Want::Metadata(v) => {
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|o| json!({"kind": "PartialObjectMetadata", "apiVersion": format!("meta.k8s.io/{v}"), "metadata": o["metadata"]}))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": format!("meta.k8s.io/{v}"), "metadata": meta, "items": items}),
            )
        }
        _ => bytes_response(
            StatusCode::OK,
            "application/json",
            list_json(&def.list_kind(), &def.api_version(), &meta, &page),
        ),
    }
}

/// A list serialized straight from its items: building a `json!` value first would deep-copy
/// every object, which dominated the cost of large lists.
fn list_json(kind: &str, api_version: &str, meta: &Value, page: &list::ListResult) -> Bytes {
    let items = &page.items;
    let raw_len: usize = page.raw.iter().flatten().map(|b| b.len() + 1).sum();
    let mut out = Vec::with_capacity(128 + raw_len + items.len() * 512);
    out.extend_from_slice(b"{\"kind\":");
    let _ = serde_json::to_writer(&mut out, kind);
    out.extend_from_slice(b",\"apiVersion\":");
    let _ = serde_json::to_writer(&mut out, api_version);
    out.extend_from_slice(b",\"metadata\":");
    let _ = serde_json::to_writer(&mut out, meta);
    out.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, item);
    }
    for (i, item) in page.raw.iter().flatten().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}
