//! Subresources answered by a node's kubelet: `nodes/proxy` here, and (as they land)
//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`, as upstream's
//! `UpgradeAwareHandler` and `LocationStreamer`.
//!
//! # Design
//! The request has been authenticated and authorized (`get nodes/proxy`, `create pods/exec`, …)
//! before it reaches [`KubeletProxy`]; the kubelet then authorizes the API server's own kubelet
//! client certificate. [`forward`] relays one request: the response body streams back as it
//! arrives (`logs -f`, `/stats/summary`), and a `101 Switching Protocols` answer joins the client's
//! upgraded connection to the kubelet's byte for byte, so SPDY and WebSocket sessions pass through
//! whatever subprotocol the two ends agree on. Upgrades need the client's hyper `OnUpgrade`, which
//! the handler parks in the request's extensions as an [`UpgradeSlot`].

pub mod log;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::Value;

use crate::authn::UserInfo;
use crate::error::{Error, Result};
use crate::handler::{error_response, Body, Route};
use crate::request::{RequestInfo, ResourceRequest};
use crate::resources::Registry;
use crate::rest::Storage;

pub mod streams;

/// The client's pending protocol upgrade, taken by the one route that relays it.
#[derive(Clone, Default)]
pub struct UpgradeSlot(Arc<Mutex<Option<OnUpgrade>>>);

impl UpgradeSlot {
    /// Parks `upgrade` for a route to take.
    #[must_use]
    pub fn new(upgrade: Option<OnUpgrade>) -> Self {
        UpgradeSlot(Arc::new(Mutex::new(upgrade)))
    }

    /// The upgrade, once.
    pub fn take(&self) -> Option<OnUpgrade> {
        self.0.lock().ok()?.take()
    }
}

/// Request headers relayed to the kubelet (hop-by-hop and credential headers are not: the
/// API server authenticates to the kubelet as itself).
const FORWARDED_REQUEST: [header::HeaderName; 4] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::USER_AGENT,
];

/// The route relaying kubelet-backed subresources.
pub struct KubeletProxy {
    /// Served resources (to read Nodes).
    pub registry: Arc<Registry>,
    /// Generic storage.
    pub storage: Storage,
    /// TLS to kubelets with the API server's kubelet client certificate.
    pub tls: Arc<rustls::ClientConfig>,
}

#[async_trait::async_trait]
impl Route for KubeletProxy {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        info: &RequestInfo,
        _user: &UserInfo,
    ) -> Option<Response<Body>> {
        let RequestInfo::Resource(r) = info else {
            return None;
        };
        let result = match (
            r.group.as_str(),
            r.resource.as_str(),
            r.subresource.as_deref(),
        ) {
            ("", "nodes", Some("proxy")) => self.node_proxy(req, r).await,
            ("", "pods", Some("log")) => self.pod_log(req, r).await,
            ("", "pods", Some(sub @ ("exec" | "attach" | "portforward"))) => {
                self.pod_stream(req, r, sub).await
            }
            _ => return None,
        };
        Some(result.unwrap_or_else(|e| error_response(&e)))
    }
}

impl KubeletProxy {
    /// `nodes/<name>/proxy/<path>`: any method, relayed to `<path>` on the node's kubelet.
    async fn node_proxy(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>> {
        let name = r.name.as_deref().unwrap_or_default();
        let prefix = format!("/api/{}/nodes/{name}/proxy", r.version);
        let rest = req.uri().path().strip_prefix(&prefix).unwrap_or("/");
        let path = if rest.is_empty() { "/" } else { rest };
        let path_and_query = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        let addr = self.kubelet(name).await?;
        forward(&self.tls, addr, req, &path_and_query).await
    }

    /// Where node `name`'s kubelet listens.
    ///
    /// # Errors
    /// 404 if the node does not exist, 503 if it publishes no kubelet address.
    pub async fn kubelet(&self, name: &str) -> Result<SocketAddr> {
        let def = self
            .registry
            .get("", "v1", "nodes")
            .ok_or(Error::NoSuchResource)?;
        let obj: Value = self.storage.get(&def, None, name).await?;
        let node: Node = serde_json::from_value(obj)
            .map_err(|e| Error::Internal(format!("decoding node {name}: {e}")))?;
        distro_client::kubelet::endpoint(&node).ok_or_else(|| {
            Error::ServiceUnavailable(format!(
                "node {name} has no kubelet address (status.addresses and daemonEndpoints)"
            ))
        })
    }
}

/// Relays `req` (its method, body and the relevant headers) to `path_and_query` on the kubelet
/// at `addr`, streaming the response back; a `101` answer joins the two upgraded connections.
///
/// # Errors
/// 503 if the kubelet cannot be reached.
pub async fn forward(
    tls: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    req: &Request<Bytes>,
    path_and_query: &str,
) -> Result<Response<Body>> {
    let unreachable =
        |e: String| Error::ServiceUnavailable(format!("error trying to reach service: {e}"));
    let upgrade = wants_upgrade(req.headers());
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path_and_query)
        .header(header::HOST, addr.to_string());
    for h in &FORWARDED_REQUEST {
        for v in req.headers().get_all(h) {
            out = out.header(h, v);
        }
    }
    if upgrade {
        for h in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
        ] {
            for v in req.headers().get_all(&h) {
                out = out.header(&h, v);
            }
        }
        // SPDY's protocol negotiation header, as kubectl before 1.30 sends it.
        for v in req.headers().get_all("x-stream-protocol-version") {
            out = out.header("x-stream-protocol-version", v);
        }
    }
    let body = if req.method() == Method::GET || req.method() == Method::HEAD {
        Full::new(Bytes::new())
    } else {
        Full::new(req.body().clone())
    };
    let out = out
        .body(body)
        .map_err(|e| Error::BadRequest(format!("proxy request: {e}")))?;
    let mut sender = distro_client::kubelet::connect(tls.clone(), addr)
        .await
        .map_err(unreachable)?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unreachable(format!("{addr}: {e}")))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade {
        let client = req
            .extensions()
            .get::<UpgradeSlot>()
            .and_then(UpgradeSlot::take)
            .ok_or_else(|| Error::BadRequest("the connection cannot be upgraded".into()))?;
        let backend = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, backend) = match tokio::try_join!(client, backend) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "proxied upgrade failed");
                    return;
                }
            };
            let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(%addr, error = %e, "proxied stream ended");
            }
        });
        let mut r = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            r = r.header(k, v);
        }
        return r
            .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
            .map_err(|e| Error::Internal(e.to_string()));
    }
    let (parts, incoming) = resp.into_parts();
    // Keep the connection (and its driver) alive for as long as the body streams.
    let frames = incoming.into_data_stream().map(move |chunk| {
        let _ = &sender;
        chunk
    });
    let frames = frames
        .take_while(|chunk| {
            let ok = chunk.is_ok();
            async move { ok }
        })
        .filter_map(|chunk| async move { chunk.ok().map(|b| Ok(Frame::data(b))) });
    let mut r = Response::builder().status(parts.status);
    for h in [
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::CACHE_CONTROL,
    ] {
        if let Some(v) = parts.headers.get(&h) {
            r = r.header(h, v);
        }
    }
    r.body(BodyExt::boxed(StreamBody::new(frames)))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// The container a request is for: the named one if the pod has it (containers, init and
/// ephemeral containers), else the only container, as upstream's `validateContainer`. Logs,
/// exec and attach all choose this way.
///
/// # Errors
/// 400 with upstream's messages: an unknown name, or no name for a pod with several.
pub fn pod_container(pod: &Pod, asked: Option<&str>) -> Result<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let containers: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let init: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    let ephemeral: Vec<String> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    match asked {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(Error::BadRequest(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(Error::BadRequest(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => {
                let mut msg = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(Error::BadRequest(msg))
            }
        },
    }
}

/// Whether the client asks for a protocol upgrade (`Connection: Upgrade` + `Upgrade: …`).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}
