//! Serving the documents: `/openapi/v2` (JSON or protobuf by `Accept`), `/openapi/v3` and its
//! group/version documents, with ETags so clients (kubectl caches them on disk) can revalidate
//! cheaply. The current [`OpenApi`] is swapped whole when custom resources change.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use distro_apimachinery::schema::{FieldInfo, Schema};

use super::{wants_v2_protobuf, OpenApi, V2_PROTOBUF_CONTENT_TYPE};
use crate::authn::UserInfo;
use crate::error::Error;
use crate::handler::{bytes_response, error_response, json_response, Body, Route};
use crate::request::RequestInfo;

/// The live OpenAPI documents: a [`Route`] for the `/openapi/` paths and the [`Schema`] patch
/// handling reads merge keys from, both following [`OpenApiService::set`].
pub struct OpenApiService {
    current: RwLock<Arc<OpenApi>>,
}

impl OpenApiService {
    /// Serves `api` until [`OpenApiService::set`] replaces it.
    pub fn new(api: OpenApi) -> OpenApiService {
        OpenApiService {
            current: RwLock::new(Arc::new(api)),
        }
    }

    /// The documents being served now.
    pub fn current(&self) -> Arc<OpenApi> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the served documents (after CRDs changed).
    pub fn set(&self, api: OpenApi) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(api);
    }
}

impl Schema for OpenApiService {
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        self.current().type_index().field(type_name, field)
    }

    fn is_atomic_type(&self, type_name: &str) -> bool {
        self.current().type_index().is_atomic_type(type_name)
    }
}

/// A cacheable document response: `304` when the client already has `tag`.
fn document(req: &Request<Bytes>, content_type: &str, body: Bytes, tag: &str) -> Response<Body> {
    let quoted = format!("\"{tag}\"");
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == quoted || t.trim() == "*"));
    let mut r = if matches {
        bytes_response(StatusCode::NOT_MODIFIED, content_type, Bytes::new())
    } else {
        bytes_response(StatusCode::OK, content_type, body)
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    r
}

#[async_trait::async_trait]
impl Route for OpenApiService {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        _user: &UserInfo,
    ) -> Option<Response<Body>> {
        if !matches!(info, RequestInfo::NonResource { .. }) {
            return None;
        }
        let path = req.uri().path().trim_end_matches('/');
        if path != "/openapi/v2" && path != "/openapi/v3" && !path.starts_with("/openapi/v3/") {
            return None;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Some(error_response(&Error::MethodNotAllowed(format!(
                "{} not allowed on {path}",
                req.method()
            ))));
        }
        let api = self.current();
        // Building the documents costs tens of milliseconds the first time; keep it off the
        // async workers.
        let req_path = path.to_string();
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let built = tokio::task::spawn_blocking(move || {
            if req_path == "/openapi/v2" {
                let (ct, (body, tag)) = if wants_v2_protobuf(&accept) {
                    (V2_PROTOBUF_CONTENT_TYPE, api.v2_protobuf_tagged())
                } else {
                    ("application/json", api.v2_json_tagged())
                };
                Some((ct, body, Some(tag)))
            } else if req_path == "/openapi/v3" {
                let body = Bytes::from(api.v3_index().to_string());
                Some(("application/json", body, None))
            } else {
                api.v3_group_version(&req_path)
                    .map(|(body, hash)| ("application/json", body, Some(hash)))
            }
        })
        .await
        .ok()?;
        Some(match built {
            Some((ct, body, Some(tag))) => document(req, ct, body, &tag),
            Some((ct, body, None)) => bytes_response(StatusCode::OK, ct, body),
            None => json_response(StatusCode::NOT_FOUND, &Error::NoSuchResource.status()),
        })
    }
}
