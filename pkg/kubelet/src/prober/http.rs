//! The HTTP GET of httpGet probes and lifecycle hooks, as upstream's kubelet makes it: one
//! connection per request (`Connection: close`), `User-Agent: kube-<purpose>/1.33`,
//! `Accept: */*` unless the spec sets headers, HTTPS without certificate verification (the
//! pod's certificate is not the kubelet's to judge), same-host redirects followed up to ten.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::probe::{dial_error, join_host_port, resolve_port};

/// Response bytes kept (upstream `maxRespBodyLength`).
const MAX_BODY: usize = 10 * 1024;
/// Redirects followed before giving up (Go's client default).
const MAX_REDIRECTS: usize = 10;
/// The Kubernetes minor version the user agent names (the API this kubelet serves).
const KUBE_VERSION: &str = "1.33";

/// One GET to make, resolved from an `HTTPGetAction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `http` or `https`.
    pub scheme: String,
    /// Host to connect to (`host`, else the pod IP).
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Headers to send, in order (`User-Agent` and `Accept` included).
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Upstream `NewRequestForHTTPGetAction`: `purpose` is `probe` or `lifecycle` (the user
    /// agent says which).
    ///
    /// # Errors
    /// No host (the pod has no IP yet) or an unresolvable port, as a message.
    pub fn for_action(
        action: &HTTPGetAction,
        container: &Container,
        pod_ip: Option<&str>,
        purpose: &str,
    ) -> Result<Request, String> {
        let scheme = action
            .scheme
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("http")
            .to_lowercase();
        let host = action
            .host
            .as_deref()
            .filter(|h| !h.is_empty())
            .or(pod_ip)
            .ok_or("failed to find networking container: the pod has no IP yet")?
            .to_string();
        let port = resolve_port(&action.port, container)?;
        let path = action.path.clone().unwrap_or_default();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let mut headers: Vec<(String, String)> = action
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let has = |headers: &[(String, String)], name: &str| {
            headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        if !has(&headers, "user-agent") {
            headers.push((
                "User-Agent".into(),
                format!("kube-{purpose}/{KUBE_VERSION}"),
            ));
        }
        if !has(&headers, "accept") {
            headers.push(("Accept".into(), "*/*".into()));
        } else {
            // An explicitly empty Accept removes the header.
            headers.retain(|(n, v)| !(n.eq_ignore_ascii_case("accept") && v.is_empty()));
        }
        Ok(Request {
            scheme,
            host,
            port,
            path,
            headers,
        })
    }

    /// The URL, as Go prints it in errors.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

/// An HTTP answer: status and the first 10 KiB of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body (lossy UTF-8, truncated).
    pub body: String,
}

/// GETs `req`, following redirects (to other hosts only with `follow_other_hosts`).
///
/// # Errors
/// Go-style messages (`Get "url": dial tcp ...: connect: connection refused`), since they
/// end up in Events next to upstream's.
pub async fn get(
    req: &Request,
    timeout: Option<Duration>,
    follow_other_hosts: bool,
) -> Result<Response, String> {
    let work = async {
        let mut req = req.clone();
        for _ in 0..=MAX_REDIRECTS {
            let (resp, location) = get_once(&req).await?;
            let Some(location) = location.filter(|_| (300..400).contains(&resp.status)) else {
                return Ok(resp);
            };
            match redirect(&req, &location) {
                Some(next) if follow_other_hosts || next.host == req.host => req = next,
                _ => return Ok(resp),
            }
        }
        Err(format!("Get {:?}: stopped after 10 redirects", req.url()))
    };
    match timeout {
        None => work.await,
        Some(t) => tokio::time::timeout(t, work).await.unwrap_or_else(|_| {
            Err(format!(
                "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                req.url()
            ))
        }),
    }
}

/// The request a `Location` header points to (relative or absolute), keeping the headers.
fn redirect(from: &Request, location: &str) -> Option<Request> {
    let mut next = from.clone();
    if location.starts_with('/') {
        next.path = location.to_string();
        return Some(next);
    }
    let uri: http::Uri = location.parse().ok()?;
    next.scheme = uri.scheme_str()?.to_lowercase();
    next.host = uri.host()?.trim_matches(['[', ']']).to_string();
    next.port = uri
        .port_u16()
        .unwrap_or(if next.scheme == "https" { 443 } else { 80 });
    next.path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    Some(next)
}

async fn get_once(req: &Request) -> Result<(Response, Option<String>), String> {
    let url = req.url();
    let addr = join_host_port(&req.host, req.port);
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("Get {url:?}: dial tcp {addr}: {}", dial_error(&e)))?;
    if req.scheme == "https" {
        let tls = tls_connect(&req.host, tcp)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        exchange(req, tls).await
    } else {
        exchange(req, tcp).await
    }
    .map_err(|e| format!("Get {url:?}: {e}"))
}

/// One request/response on a fresh connection, driving the connection alongside.
async fn exchange<S>(req: &Request, stream: S) -> Result<(Response, Option<String>), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let mut request = http::Request::get(req.path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    let host = join_host_port(&req.host, req.port);
    let value = |v: &str| http::HeaderValue::from_str(v).map_err(|e| e.to_string());
    headers.insert(http::header::HOST, value(&host)?);
    headers.insert(http::header::CONNECTION, value("close")?);
    for (name, v) in &req.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        if name == http::header::HOST {
            // A Host header in the spec replaces the default one (Go's `req.Host`).
            headers.insert(name, value(v)?);
        } else {
            headers.append(name, value(v)?);
        }
    }
    let work = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut data = Vec::new();
        while data.len() < MAX_BODY {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(chunk) = f.into_data() {
                        data.extend_from_slice(&chunk);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => break,
            }
        }
        data.truncate(MAX_BODY);
        Ok((
            Response {
                status,
                body: String::from_utf8_lossy(&data).into_owned(),
            },
            location,
        ))
    };
    tokio::pin!(conn);
    tokio::pin!(work);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut work => return r,
            // The connection ending first (error or close) also ends `work`.
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    }
}

async fn tls_connect(
    host: &str,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    // Any server certificate, as upstream's probes (`InsecureSkipVerify`).
    let config = distro_pki::insecure_client_tls_config().map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn requests_from_actions() {
        let c = Container::default();
        let action = HTTPGetAction {
            port: IntOrString::Int(8080),
            path: Some("ready?x=1".into()),
            scheme: Some("HTTPS".into()),
            http_headers: Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                name: "Accept".into(),
                value: String::new(),
            }]),
            ..Default::default()
        };
        let r = Request::for_action(&action, &c, Some("10.42.0.7"), "lifecycle").unwrap();
        assert_eq!(r.url(), "https://10.42.0.7:8080/ready?x=1");
        assert_eq!(
            r.headers,
            [("User-Agent".to_string(), "kube-lifecycle/1.33".to_string())]
        );
        assert!(Request::for_action(&action, &c, None, "probe").is_err());
        let next = redirect(&r, "http://[::1]:81/z").unwrap();
        assert_eq!(next.url(), "http://[::1]:81/z");
        assert_eq!(
            redirect(&r, "/y").unwrap().url(),
            "https://10.42.0.7:8080/y"
        );
    }
}
