//! The one way distro's components talk to the apiserver: a kube-rs [`Client`] built on our
//! own rustls/ring TLS stack, and [`Informers`], the shared watch caches controllers read from.
//!
//! # Design
//! kube-rs is used without its TLS features: [`connect`] builds the HTTPS connector itself from
//! [`distro_pki::client_tls_config`], so the ring provider is explicit (no aws-lc-rs, no process
//! default provider, no platform verifier) and only the cluster CA is trusted. Every client
//! sends a user agent naming its component (`distro-<component>@<node>`), so writes can be
//! traced to their author.
//!
//! [`Informers`] keeps one kube-runtime watcher and reflector [`Store`](kube::runtime::reflector::Store)
//! per resource type and fans its changes out to any number of subscribers, which is what
//! kube-runtime's `Controller::for_shared_stream` / `watches_shared_stream` consume.
//!
//! # Limits
//! - Kubeconfigs are read by [`distro_pki::read_kubeconfig`]: embedded data (certificate,
//!   key, CA) and bearer tokens only, no exec plugins or file references. That is what
//!   distro writes; foreign kubeconfigs with other credentials are refused with a message.
//! - HTTP/1.1 only (as kube-rs' own connector): each watch holds one connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distro_pki::{CertKeyPair, Credential};
use http::header::{HeaderValue, AUTHORIZATION, USER_AGENT};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
pub use kube::Client;

mod conns;
pub mod events;
mod informers;
pub mod kubelet;
pub mod labels;
pub mod leader;

pub use conns::Connections;
pub use informers::{Informer, Informers, Stopped, DEFAULT_FANOUT_CAPACITY};

/// How long a TCP connect may take before the request fails (kube-rs' default).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a response may be silent. Watches are asked to end after at most 290 s and carry
/// bookmarks, so a longer silence means a dead connection (kube-rs uses the same 295 s).
const READ_TIMEOUT: Duration = Duration::from_secs(295);

/// TCP keepalive idle time (Go's net.Dialer default).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or names nothing usable.
    #[error("reading kubeconfig: {0}")]
    Kubeconfig(#[source] distro_pki::Error),
    /// The kubeconfig has no embedded CA; distro clients trust only an explicit cluster CA.
    #[error(
        "kubeconfig {path} has no certificate-authority-data; distro clients need the cluster CA"
    )]
    NoCa {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The kubeconfig's user has neither a client certificate nor a token.
    #[error("kubeconfig {path}: the current user has neither client-certificate-data/client-key-data nor a token")]
    NoCredential {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The server URL does not parse.
    #[error("server URL {url:?} is invalid: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Cause.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The TLS configuration could not be built from the CA or credential.
    #[error("building the TLS client configuration: {0}")]
    Tls(#[source] distro_pki::Error),
    /// A header (user agent, token) is not a valid HTTP header value.
    #[error("{what} is not a valid HTTP header value")]
    Header {
        /// Which header.
        what: &'static str,
    },
}

/// Where the apiserver is and who we are to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Apiserver URL, e.g. `https://127.0.0.1:6443`.
    pub url: String,
    /// The cluster CA (PEM); the only certificate trusted for the server.
    pub ca_pem: String,
    /// How we authenticate.
    pub credential: Credential,
    /// Namespace for `Api::default_namespaced`.
    pub default_namespace: String,
}

impl Endpoint {
    /// An endpoint authenticating with a client certificate the cluster CA issued, as the
    /// server's in-process components do (no kubeconfig file on disk needed).
    pub fn with_cert(
        url: impl Into<String>,
        ca_pem: impl Into<String>,
        pair: &CertKeyPair,
    ) -> Self {
        Endpoint {
            url: url.into(),
            ca_pem: ca_pem.into(),
            credential: Credential::ClientCert {
                cert_pem: pair.cert_pem.clone(),
                key_pem: pair.key_pem.clone(),
            },
            default_namespace: "default".into(),
        }
    }

    /// Reads the current context of a kubeconfig (as distro writes them: embedded data).
    ///
    /// Blocking (file IO): call from `spawn_blocking` in async code.
    ///
    /// # Errors
    /// [`Error::Kubeconfig`] for unreadable or inconsistent files, [`Error::NoCa`] and
    /// [`Error::NoCredential`] for files that lack what a distro client needs.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, Error> {
        let kc = distro_pki::read_kubeconfig(path).map_err(Error::Kubeconfig)?;
        let (cluster, user) = kc.current(path).map_err(Error::Kubeconfig)?;
        let decode =
            |d: &str| distro_pki::Kubeconfig::decode_data(d, path).map_err(Error::Kubeconfig);
        let ca_pem = match &cluster.certificate_authority_data {
            Some(d) => decode(d)?,
            None => {
                return Err(Error::NoCa {
                    path: path.to_path_buf(),
                })
            }
        };
        let credential = match (
            &user.client_certificate_data,
            &user.client_key_data,
            &user.token,
        ) {
            (Some(c), Some(k), _) => Credential::ClientCert {
                cert_pem: decode(c)?,
                key_pem: decode(k)?,
            },
            (_, _, Some(t)) => Credential::Token(t.clone()),
            _ => {
                return Err(Error::NoCredential {
                    path: path.to_path_buf(),
                })
            }
        };
        let default_namespace = kc
            .contexts
            .iter()
            .find(|c| c.name == kc.current_context)
            .and_then(|c| c.context.namespace.clone())
            .unwrap_or_else(|| "default".into());
        Ok(Endpoint {
            url: cluster.server.clone(),
            ca_pem,
            credential,
            default_namespace,
        })
    }
}

/// Builds a client for `endpoint` whose requests carry `user_agent`
/// (`distro-<component>@<node>`).
///
/// # Assumptions
/// Must be called inside a tokio runtime: the client spawns its request buffer task.
///
/// # Errors
/// [`Error::Url`], [`Error::Tls`] or [`Error::Header`] for unusable endpoint data. Nothing is
/// sent: connection errors show up on the first request.
pub fn connect(endpoint: &Endpoint, user_agent: &str) -> Result<Client, Error> {
    connect_tracked(endpoint, user_agent).map(|(client, _)| client)
}

/// [`connect`], also returning the client's [`Connections`], for long-running agents that
/// must drop every connection when the network under them changes (as the kubelet does).
///
/// # Errors
/// As [`connect`].
pub fn connect_tracked(
    endpoint: &Endpoint,
    user_agent: &str,
) -> Result<(Client, Connections), Error> {
    let uri: http::Uri = endpoint.url.parse().map_err(|source| Error::Url {
        url: endpoint.url.clone(),
        source,
    })?;
    let mut config = kube::Config::new(uri);
    config.default_namespace = endpoint.default_namespace.clone();
    config.headers.push((
        USER_AGENT,
        HeaderValue::from_str(user_agent).map_err(|_| Error::Header { what: "user agent" })?,
    ));
    let client_cert = match &endpoint.credential {
        Credential::ClientCert { cert_pem, key_pem } => Some(CertKeyPair {
            cert_pem: cert_pem.clone(),
            key_pem: key_pem.clone(),
        }),
        Credential::Token(token) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::Header { what: "token" })?;
            value.set_sensitive(true);
            config.headers.push((AUTHORIZATION, value));
            None
        }
    };
    let tls = distro_pki::client_tls_config(&endpoint.ca_pem, client_cert.as_ref())
        .map_err(Error::Tls)?;
    let mut tls = Arc::unwrap_or_clone(tls);
    // hyper-rustls sets ALPN itself and refuses a config that already has protocols.
    tls.alpn_protocols.clear();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    // Go's dialer default: idle connections whose peer vanished are found and dropped.
    http.set_keepalive(Some(KEEPALIVE));
    let connections = Connections::default();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(conns::Connector::new(http, connections.clone()));
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_read_timeout(Some(READ_TIMEOUT));
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let extra_headers = config.extra_headers_layer().map_err(|_| Error::Header {
        what: "extra header",
    })?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(extra_headers)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok((Client::new(service, config.default_namespace), connections))
}

/// The user agent for a component on this machine: `distro-<component>@<node>`.
pub fn user_agent(component: &str, node: &str) -> String {
    format!("distro-{component}@{node}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use distro_pki::{Ca, CertSpec, Usage};

    fn ca_and_cert(dir: &Path) -> (Ca, CertKeyPair) {
        let ca = Ca::load_or_create(dir, "ca", "test-ca").expect("CA");
        let pair = ca
            .issue(&CertSpec::new("system:test", Usage::Client))
            .expect("cert");
        (ca, pair)
    }

    #[test]
    fn kubeconfig_with_client_cert_round_trips() {
        let dir = tempfile::tempdir().expect("tmp");
        let (ca, pair) = ca_and_cert(dir.path());
        let path = dir.path().join("kc.yaml");
        let cred = Credential::ClientCert {
            cert_pem: pair.cert_pem.clone(),
            key_pem: pair.key_pem.clone(),
        };
        distro_pki::write_kubeconfig(
            &path,
            0o600,
            "c",
            "https://127.0.0.1:6443",
            ca.cert_pem(),
            "u",
            &cred,
        )
        .expect("write");
        let ep = Endpoint::from_kubeconfig(&path).expect("read");
        assert_eq!(ep.url, "https://127.0.0.1:6443");
        assert_eq!(ep.ca_pem, ca.cert_pem());
        assert_eq!(ep.credential, cred);
        assert_eq!(ep.default_namespace, "default");
    }

    #[test]
    fn kubeconfig_without_ca_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kc.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://x:1'}}]\n\
             contexts: [{name: d, context: {cluster: c, user: u}}]\ncurrent-context: d\n\
             users: [{name: u, user: {token: abc}}]\n",
        )
        .expect("write");
        assert!(matches!(
            Endpoint::from_kubeconfig(&path),
            Err(Error::NoCa { .. })
        ));
    }

    #[tokio::test]
    async fn clients_build_for_certs_and_tokens_and_reject_bad_urls() {
        let dir = tempfile::tempdir().expect("tmp");
        let (ca, pair) = ca_and_cert(dir.path());
        let ep = Endpoint::with_cert("https://127.0.0.1:6443", ca.cert_pem(), &pair);
        connect(&ep, &user_agent("test", "node-1")).expect("cert client");
        let token = Endpoint {
            credential: Credential::Token("secret".into()),
            ..ep.clone()
        };
        connect(&token, "distro-test@node-1").expect("token client");
        let bad = Endpoint {
            url: "not a url".into(),
            ..ep
        };
        assert!(matches!(connect(&bad, "ua"), Err(Error::Url { .. })));
    }
}
