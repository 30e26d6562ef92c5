//! The kubelet HTTPS API (port 10250): `/healthz`, `/pods`, `/stats/summary`, `/metrics`,
//! `/metrics/resource`, `/metrics/cadvisor`, `/spec` ([`spec`]) and `/containerLogs`
//! ([`logs`]), behind
//! upstream's authentication and authorization.
//!
//! # Design
//! The server knows nothing of how pods run: a runtime implements [`Provider`] (the pods
//! bound to this node, their resource statistics), so the simulated runtime of `distro agent
//! --runtime fake` and the real kubelet serve the same API. Callers authenticate with a
//! client certificate of the cluster CA and are authorized by SubjectAccessReview
//! ([`auth`]): 401 without a certificate, 403 with upstream's message when denied.
//!
//! # Limits
//! - Bearer tokens are not accepted (upstream also reviews them through TokenReview).
//! - `/exec`, `/attach` and `/portForward` ([`streams`]) need a runtime that streams
//!   ([`Provider::stream_url`]); simulated nodes answer them 404.
//! - The serving certificate is the caller's to provide; [`self_signed`] makes one as
//!   upstream's kubelet does without `--tls-cert-file`.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::Pod;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

pub mod auth;
pub mod cri;
pub mod host;
pub mod logs;
pub mod metrics;
pub mod spec;
pub mod stats;
pub mod streams;

pub use auth::{Attributes, SarAuthorizer, User};
pub use stats::Summary;

/// The Prometheus text exposition format's content type.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the kubelet API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key could not be made or read.
    #[error("kubelet serving TLS: {0}")]
    Tls(String),
    /// The API server could not be asked whether a request is allowed.
    #[error("authorizing a kubelet API request through a SubjectAccessReview: {0}")]
    Authorize(#[source] kube::Error),
}

/// What a runtime tells the kubelet API.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// The pods bound to this node, as the runtime knows them (`/pods`).
    async fn pods(&self) -> Vec<Pod>;

    /// Resource usage of the node and its running pods, sampled now (`/stats/summary`,
    /// `/metrics/resource`).
    async fn summary(&self) -> Summary;

    /// Per-cgroup usage for `/metrics/cadvisor`. The default derives it from
    /// [`Provider::summary`] for runtimes without cgroups; real runtimes name the cgroups,
    /// container IDs and images.
    async fn cadvisor(&self) -> Vec<metrics::CadvisorEntry> {
        metrics::from_summary(&self.summary().await)
    }

    /// The machine the node runs on (`/spec`). The default reads this machine, which is
    /// the node's for the real kubelet and the simulating agent's for simulated nodes;
    /// `None` if reading it failed (answered 500).
    async fn spec(&self) -> Option<spec::MachineInfo> {
        tokio::task::spawn_blocking(spec::MachineInfo::this)
            .await
            .ok()
    }

    /// A container's log (`/containerLogs/<namespace>/<pod>/<container>`), streamed through
    /// the returned channel until it ends. The default is for runtimes that run no
    /// processes (the simulated one): there is no log to read, and the answer says so.
    ///
    /// # Errors
    /// As upstream's kubelet: 404 for an unknown pod or container, 400 when the container
    /// has nothing to show yet.
    async fn container_logs(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        opts: logs::LogOptions,
    ) -> Result<tokio::sync::mpsc::Receiver<Bytes>, logs::LogError> {
        let _ = (namespace, opts);
        Err(logs::LogError::BadRequest(format!(
            "container {container:?} in pod {pod:?} has no logs: this node's runtime is simulated and runs no processes"
        )))
    }

    /// The runtime's streaming URL for an exec, attach or port-forward request
    /// ([`streams`]). Runtimes that cannot stream keep this default.
    ///
    /// # Errors
    /// [`streams::StreamError`]: unsupported, no such pod or container, or a runtime failure.
    async fn stream_url(
        &self,
        _req: &streams::StreamRequest,
    ) -> Result<String, streams::StreamError> {
        Err(streams::StreamError::Unsupported)
    }
}

/// A certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct ServingCert {
    /// Certificate chain, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

/// A self-signed serving certificate for `node` reachable at `ips`, as upstream's kubelet
/// generates when given none (`<host>@<timestamp>` there; the node name here).
///
/// # Errors
/// [`Error::Tls`] if key generation fails.
pub fn self_signed(node: &str, ips: &[IpAddr]) -> Result<ServingCert, Error> {
    let mut sans: Vec<String> = vec![node.to_string()];
    sans.extend(ips.iter().map(IpAddr::to_string));
    let c = rcgen::generate_simple_self_signed(sans).map_err(|e| Error::Tls(e.to_string()))?;
    Ok(ServingCert {
        cert_pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
    })
}

/// The server's TLS: `serving` as certificate, client certificates of `client_ca_pem` asked
/// for but not required (a request without one is answered 401, as upstream).
///
/// # Errors
/// [`Error::Tls`] for unreadable PEM or a CA rustls refuses.
pub fn tls_config(
    serving: &ServingCert,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&e))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut serving.key_pem.as_bytes())
        .map_err(|e| tls(&e))?
        .ok_or_else(|| Error::Tls("no private key in the serving key PEM".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut client_ca_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One node's kubelet API.
pub struct KubeletApi {
    /// The runtime's view of the node.
    pub provider: Arc<dyn Provider>,
    /// Decides who may do what.
    pub authorizer: SarAuthorizer,
}

/// Response bodies: whole (JSON, metrics) or streamed (logs).
pub type Body = BoxBody<Bytes, Infallible>;

fn text(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = code;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn json(v: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => text(StatusCode::OK, "application/json", b),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            e.to_string(),
        ),
    }
}

impl KubeletApi {
    /// Authenticates and authorizes `req`: `None` if allowed, else the 401/403/500 answer.
    async fn authorize(&self, req: &Request<()>, user: Option<&User>) -> Option<Response<Body>> {
        let plain = "text/plain; charset=utf-8";
        let path = req.uri().path();
        let Some(user) = user else {
            return Some(text(StatusCode::UNAUTHORIZED, plain, "Unauthorized"));
        };
        let attrs = auth::attributes(req.method(), path);
        match self.authorizer.allowed(user, &attrs).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(user = %user.name, %path, "kubelet API request forbidden");
                return Some(text(
                    StatusCode::FORBIDDEN,
                    plain,
                    auth::forbidden_message(user, &attrs),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "kubelet API authorization failed");
                return Some(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    plain,
                    "Internal Server Error",
                ));
            }
        }
        None
    }

    /// Serves `/exec`, `/attach` and `/portForward` ([`streams`]): any method (kubectl's SPDY
    /// uses POST, its WebSocket GET), with the connection's pending `upgrade`.
    pub async fn handle_stream(
        &self,
        req: &Request<()>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        user: Option<&User>,
    ) -> Response<Body> {
        let plain = "text/plain; charset=utf-8";
        if let Some(denied) = self.authorize(req, user).await {
            return denied;
        }
        let parsed = match streams::parse(req.uri().path(), req.uri().query()) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, plain, e.to_string()),
        };
        let url = match self.provider.stream_url(&parsed).await {
            Ok(u) => u,
            Err(e @ (streams::StreamError::NotFound(_) | streams::StreamError::Unsupported)) => {
                return text(StatusCode::NOT_FOUND, plain, e.to_string())
            }
            Err(e @ streams::StreamError::BadRequest(_)) => {
                return text(StatusCode::BAD_REQUEST, plain, e.to_string())
            }
            Err(e @ streams::StreamError::Runtime(_)) => {
                tracing::warn!(error = %e, path = %req.uri().path(), "streaming request failed");
                return text(StatusCode::INTERNAL_SERVER_ERROR, plain, e.to_string());
            }
        };
        distro_streaming::serve(
            parsed.kind,
            &url,
            req.method(),
            req.headers(),
            upgrade,
            parsed.options,
        )
        .await
        .map(|b| b.map_err(|e| match e {}).boxed())
    }

    /// Answers one request from `user` (`None`: no client certificate).
    pub async fn handle(&self, req: &Request<()>, user: Option<&User>) -> Response<Body> {
        let plain = "text/plain; charset=utf-8";
        let path = req.uri().path();
        // Upstream serves /healthz without authentication.
        if path == "/healthz" {
            return text(StatusCode::OK, plain, "ok");
        }
        if let Some(denied) = self.authorize(req, user).await {
            return denied;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, plain, "Method Not Allowed");
        }
        if let Some(rest) = path.strip_prefix("/containerLogs/") {
            return self.container_logs(rest, req.uri().query()).await;
        }
        match path.trim_end_matches('/') {
            "/pods" => {
                let pods = self.provider.pods().await;
                json(&serde_json::json!({
                    "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods,
                }))
            }
            "/stats/summary" => json(&self.provider.summary().await),
            "/spec" => match self.provider.spec().await {
                Some(m) => json(&m),
                None => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    plain,
                    "reading the machine's spec failed",
                ),
            },
            "/metrics/resource" => text(
                StatusCode::OK,
                PROMETHEUS,
                stats::resource_metrics(&self.provider.summary().await),
            ),
            "/metrics" => {
                let summary = self.provider.summary().await;
                let process = tokio::task::spawn_blocking(metrics::ProcessStats::this)
                    .await
                    .unwrap_or_default();
                let node = summary.node.node_name.clone();
                text(
                    StatusCode::OK,
                    PROMETHEUS,
                    metrics::kubelet_metrics(&node, &summary, process),
                )
            }
            "/metrics/cadvisor" => {
                let entries = self.provider.cadvisor().await;
                let machine = tokio::task::spawn_blocking(metrics::Machine::this)
                    .await
                    .unwrap_or_default();
                text(
                    StatusCode::OK,
                    PROMETHEUS,
                    metrics::cadvisor_metrics(&entries, machine),
                )
            }
            _ => text(StatusCode::NOT_FOUND, plain, "404 page not found"),
        }
    }
}

impl KubeletApi {
    /// `/containerLogs/<namespace>/<pod>/<container>`, with upstream's checks and codes.
    async fn container_logs(&self, rest: &str, query: Option<&str>) -> Response<Body> {
        let plain = "text/plain; charset=utf-8";
        let mut parts = rest.splitn(3, '/');
        let (ns, pod, container) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let missing = [
            (ns, r#"{"message": "Missing podNamespace."}"#),
            (pod, r#"{"message": "Missing podID."}"#),
            (container, r#"{"message": "Missing container name."}"#),
        ];
        if let Some((_, m)) = missing.iter().find(|(v, _)| v.is_empty()) {
            return text(StatusCode::BAD_REQUEST, plain, *m);
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (ns, pod, container) = (decode(ns), decode(pod), decode(container));
        let result = match logs::LogOptions::from_query(query) {
            Ok(opts) => {
                self.provider
                    .container_logs(&ns, &pod, &container, opts)
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(rx) => {
                let frames = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, Infallible>(hyper::body::Frame::data(b)), rx))
                });
                let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain"),
                );
                r
            }
            Err(e) => {
                let code = match &e {
                    logs::LogError::BadRequest(_) => StatusCode::BAD_REQUEST,
                    logs::LogError::NotFound(_) => StatusCode::NOT_FOUND,
                    logs::LogError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    logs::LogError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                };
                text(code, plain, e.to_string())
            }
        }
    }
}

/// Serves `api` over HTTPS on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<KubeletApi>,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet API: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            // The guard wait_for returns is not Send: drop it inside.
            _ = async { drop(shutdown.wait_for(|s| *s).await) } => break,
        };
        let (acceptor, api) = (acceptor.clone(), api.clone());
        conns.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "kubelet API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let user: Option<Arc<User>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|c| distro_pki::Identity::from_cert_der(c.as_ref()).ok())
                .map(|id| {
                    // As upstream's authenticator chain, every authenticated user is also
                    // in system:authenticated.
                    let mut groups = id.groups;
                    if !groups.iter().any(|g| g == "system:authenticated") {
                        groups.push("system:authenticated".into());
                    }
                    Arc::new(User {
                        name: id.user,
                        groups,
                    })
                });
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (api, user) = (api.clone(), user.clone());
                async move {
                    let (mut parts, _body) = req.into_parts();
                    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                    let req = Request::from_parts(parts, ());
                    if streams::is_stream_path(req.uri().path()) {
                        return Ok::<_, Infallible>(
                            api.handle_stream(&req, upgrade, user.as_deref()).await,
                        );
                    }
                    Ok::<_, Infallible>(api.handle(&req, user.as_deref()).await)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%remote, error = %e, "kubelet API connection ended with an error");
            }
        });
    }
    conns.abort_all();
}
