//! One streaming request: decide from the client's upgrade headers which path it takes
//! (relay, WebSocket v5 translation, WebSocket-tunnelled SPDY), upgrade the runtime's
//! connection first (so its refusal reaches the client as an HTTP answer), then answer the
//! client and run the session in a task of its own.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::Error;

/// The remote command protocol kubectl 1.30+ asks for over WebSocket.
pub const WS_V5: &str = "v5.channel.k8s.io";
/// Port-forward's SPDY tunnelled in WebSocket (kubectl 1.31+).
pub const WS_SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY remote command protocol spoken to the runtime when translating v5.
pub const SPDY_V4: &str = "v4.channel.k8s.io";
/// The SPDY port-forward protocol.
pub const SPDY_PORT_FORWARD: &str = "portforward.k8s.io";
/// SPDY's protocol negotiation header.
pub const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// What is streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A new process in a container.
    Exec,
    /// A container's main process.
    Attach,
    /// TCP ports of a pod.
    PortForward,
}

/// The standard streams a remote command session carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Client input.
    pub stdin: bool,
    /// Process output.
    pub stdout: bool,
    /// Process error output (never with a TTY, whose output is all on stdout).
    pub stderr: bool,
    /// A terminal (and its resize stream).
    pub tty: bool,
}

/// The path a client's request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// SPDY or an older WebSocket protocol: containerd speaks it, bytes are relayed.
    Relay,
    /// WebSocket v5 exec/attach, translated to SPDY v4.
    WebSocketV5,
    /// WebSocket carrying SPDY port-forward bytes.
    Tunnel,
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The WebSocket subprotocols the client offers, in its order.
fn offered(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn path(kind: Kind, headers: &HeaderMap) -> Path {
    if !is_websocket(headers) {
        return Path::Relay;
    }
    let offered = offered(headers);
    match kind {
        Kind::Exec | Kind::Attach if offered.iter().any(|p| p == WS_V5) => Path::WebSocketV5,
        Kind::PortForward if offered.iter().any(|p| p == WS_SPDY_TUNNEL) => Path::Tunnel,
        _ => Path::Relay,
    }
}

fn text(code: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves one streaming request whose runtime session is at `url` (from CRI `Exec`,
/// `Attach` or `PortForward`): answers the client (a `101` and a spawned session, or the
/// runtime's or our own refusal).
///
/// `upgrade` is the client connection's pending upgrade; without one (a plain request) the
/// answer is 400, as upstream's "Upgrade request required".
pub async fn serve(
    kind: Kind,
    url: &str,
    method: &Method,
    headers: &HeaderMap,
    upgrade: Option<OnUpgrade>,
    options: StreamOptions,
) -> Response<Full<Bytes>> {
    let Some(upgrade) = upgrade.filter(|_| headers.contains_key(header::UPGRADE)) else {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    };
    let path = path(kind, headers);
    let result = match path {
        Path::Relay => relay(url, method, headers, upgrade).await,
        Path::WebSocketV5 | Path::Tunnel => {
            let (protocol, spdy) = if path == Path::Tunnel {
                (WS_SPDY_TUNNEL, SPDY_PORT_FORWARD)
            } else {
                (WS_V5, SPDY_V4)
            };
            translate(url, headers, upgrade, protocol, spdy, options).await
        }
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(%url, error = %e, "streaming request failed");
        text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    })
}

/// What the runtime answered an upgrade request.
struct Dialed {
    status: StatusCode,
    headers: HeaderMap,
    /// The upgraded connection (on `101`).
    upgraded: Option<Upgraded>,
    /// The body of a refusal.
    body: Bytes,
}

/// Sends an upgrade request to the runtime's streaming server at `url` (plain HTTP on
/// loopback, as containerd serves it by default).
async fn dial(url: &str, method: &Method, headers: HeaderMap) -> Result<Dialed, Error> {
    let err = |message: String| Error::Runtime {
        url: url.to_string(),
        message,
    };
    let uri: http::Uri = url.parse().map_err(|e| err(format!("bad URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("only plain HTTP streaming servers are supported".into()));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| err("URL without a host".into()))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| err(format!("connect: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| err(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "runtime streaming connection ended");
        }
    });
    let path = uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(Full::new(Bytes::new()))
        .map_err(|e| err(e.to_string()))?;
    *req.headers_mut() = headers;
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(header::HOST, v);
    }
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| err(format!("request: {e}")))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| err(format!("upgrade: {e}")))?;
        return Ok(Dialed {
            status,
            headers,
            upgraded: Some(upgraded),
            body: Bytes::new(),
        });
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok(Dialed {
        status,
        headers,
        upgraded: None,
        body,
    })
}

/// The runtime's refusal, passed on.
fn refusal(d: Dialed) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(d.body));
    *r.status_mut() = d.status;
    if let Some(v) = d.headers.get(header::CONTENT_TYPE) {
        r.headers_mut().insert(header::CONTENT_TYPE, v.clone());
    }
    r
}

/// Headers of the client's upgrade request that the runtime must see to negotiate.
const RELAYED: [&str; 7] = [
    "connection",
    "upgrade",
    STREAM_PROTOCOL_HEADER,
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "origin",
];

/// The client speaks what the runtime speaks: upgrade the runtime with the client's
/// negotiation headers, answer with the runtime's, and join the two connections.
async fn relay(
    url: &str,
    method: &Method,
    headers: &HeaderMap,
    upgrade: OnUpgrade,
) -> Result<Response<Full<Bytes>>, Error> {
    let mut out = HeaderMap::new();
    for name in RELAYED {
        for v in headers.get_all(name) {
            out.append(http::HeaderName::from_static(name), v.clone());
        }
    }
    let mut dialed = dial(url, method, out).await?;
    let Some(backend) = dialed.upgraded.take() else {
        return Ok(refusal(dialed));
    };
    let url = url.to_string();
    tokio::spawn(async move {
        let client = match upgrade.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "client upgrade failed");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            tracing::debug!(%url, error = %e, "relayed stream ended");
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *r.headers_mut() = dialed.headers;
    Ok(r)
}

/// The client speaks WebSocket (`protocol`); the runtime is upgraded to SPDY with the
/// `spdy` protocol and the session translated.
async fn translate(
    url: &str,
    headers: &HeaderMap,
    upgrade: OnUpgrade,
    protocol: &'static str,
    spdy: &'static str,
    options: StreamOptions,
) -> Result<Response<Full<Bytes>>, Error> {
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| Error::Upgrade("no Sec-WebSocket-Key".into()))?;
    let accept = derive_accept_key(key.as_bytes());
    let mut out = HeaderMap::new();
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    out.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(spdy));
    let mut dialed = dial(url, &Method::POST, out).await?;
    let Some(backend) = dialed.upgraded.take() else {
        return Ok(refusal(dialed));
    };
    let url = url.to_string();
    tokio::spawn(async move {
        let client = match upgrade.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "client upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
        let backend = TokioIo::new(backend);
        let result = if protocol == WS_SPDY_TUNNEL {
            crate::tunnel::run(ws, backend).await
        } else {
            crate::remotecommand::run(ws, backend, options).await
        };
        if let Err(e) = result {
            tracing::debug!(%url, error = %e, "translated stream ended");
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| Error::Upgrade(e.to_string()))?,
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn picks_the_path_from_the_offered_protocols() {
        let spdy = headers(&[
            ("upgrade", "SPDY/3.1"),
            (STREAM_PROTOCOL_HEADER, "v4.channel.k8s.io"),
        ]);
        assert_eq!(path(Kind::Exec, &spdy), Path::Relay);
        let v5 = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ]);
        assert_eq!(path(Kind::Exec, &v5), Path::WebSocketV5);
        assert_eq!(path(Kind::Attach, &v5), Path::WebSocketV5);
        let v4 = headers(&[
            ("upgrade", "WebSocket"),
            (
                "sec-websocket-protocol",
                "v4.channel.k8s.io, channel.k8s.io",
            ),
        ]);
        assert_eq!(path(Kind::Exec, &v4), Path::Relay);
        let tunnel = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "SPDY/3.1+portforward.k8s.io"),
        ]);
        assert_eq!(path(Kind::PortForward, &tunnel), Path::Tunnel);
        assert_eq!(path(Kind::Exec, &tunnel), Path::Relay);
    }
}
