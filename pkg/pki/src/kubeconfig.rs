//! Kubeconfig files in the shape kubectl and client-go read.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;

/// How the kubeconfig's user authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A client certificate and its key (PEM); embedded as `client-certificate-data` and
    /// `client-key-data`.
    ClientCert {
        /// Certificate, PEM.
        cert_pem: String,
        /// Private key, PEM. Secret.
        key_pem: String,
    },
    /// A bearer token; embedded as `token`.
    Token(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::ClientCert { .. } => f.write_str("ClientCert(<redacted>)"),
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// A kubeconfig (`apiVersion: v1`, `kind: Config`), with the fields we write and read.
///
/// Fields we do not model (exec plugins, extensions) are dropped when reading; this type is
/// for files we write, not a general kubeconfig editor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always `Config`.
    pub kind: String,
    /// Named clusters.
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    /// Named contexts.
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    /// The context kubectl uses by default.
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    /// kubectl writes an empty map here; we keep it so files look familiar.
    #[serde(default)]
    pub preferences: serde_yaml::Mapping,
    /// Named users.
    #[serde(default)]
    pub users: Vec<NamedUser>,
}

/// A cluster entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Its name.
    pub name: String,
    /// Its data.
    pub cluster: Cluster,
}

/// Where a cluster is and how to trust it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// The apiserver URL, e.g. `https://127.0.0.1:6443`.
    pub server: String,
    /// The CA certificate PEM, base64.
    #[serde(
        rename = "certificate-authority-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority_data: Option<String>,
}

/// A context entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedContext {
    /// Its name.
    pub name: String,
    /// Its data.
    pub context: Context,
}

/// A cluster/user pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Name of a cluster entry.
    pub cluster: String,
    /// Name of a user entry.
    pub user: String,
    /// Default namespace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A user entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUser {
    /// Its name.
    pub name: String,
    /// Its credentials.
    pub user: AuthInfo,
}

/// A user's credentials, embedded.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthInfo {
    /// Client certificate PEM, base64.
    #[serde(
        rename = "client-certificate-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate_data: Option<String>,
    /// Client key PEM, base64. Secret.
    #[serde(
        rename = "client-key-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key_data: Option<String>,
    /// Bearer token. Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl std::fmt::Debug for AuthInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInfo")
            .field("client_certificate_data", &self.client_certificate_data)
            .field(
                "client_key_data",
                &self.client_key_data.as_ref().map(|_| "<redacted>"),
            )
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Kubeconfig {
    /// A kubeconfig with one cluster, one user and one context (named like the cluster) that
    /// is current: the shape k3s writes for its admin kubeconfig.
    pub fn new(
        cluster_name: &str,
        server_url: &str,
        ca_pem: &str,
        user_name: &str,
        credential: &Credential,
    ) -> Kubeconfig {
        let user = match credential {
            Credential::ClientCert { cert_pem, key_pem } => AuthInfo {
                client_certificate_data: Some(STANDARD.encode(cert_pem)),
                client_key_data: Some(STANDARD.encode(key_pem)),
                token: None,
            },
            Credential::Token(token) => AuthInfo {
                token: Some(token.clone()),
                ..AuthInfo::default()
            },
        };
        Kubeconfig {
            api_version: "v1".to_string(),
            kind: "Config".to_string(),
            clusters: vec![NamedCluster {
                name: cluster_name.to_string(),
                cluster: Cluster {
                    server: server_url.to_string(),
                    certificate_authority_data: Some(STANDARD.encode(ca_pem)),
                },
            }],
            contexts: vec![NamedContext {
                name: cluster_name.to_string(),
                context: Context {
                    cluster: cluster_name.to_string(),
                    user: user_name.to_string(),
                    namespace: None,
                },
            }],
            current_context: cluster_name.to_string(),
            preferences: serde_yaml::Mapping::new(),
            users: vec![NamedUser {
                name: user_name.to_string(),
                user,
            }],
        }
    }

    /// The cluster and user of the current context, so a client can be built from the file.
    ///
    /// # Errors
    /// [`Error::KubeconfigInvalid`] (with `path` for the message) if the current context or
    /// what it names is missing.
    pub fn current(&self, path: &Path) -> Result<(&Cluster, &AuthInfo)> {
        let invalid = |reason: String| Error::KubeconfigInvalid {
            path: path.to_path_buf(),
            reason,
        };
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .ok_or_else(|| invalid(format!("no context named {:?}", self.current_context)))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| invalid(format!("no cluster named {:?}", ctx.context.cluster)))?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .ok_or_else(|| invalid(format!("no user named {:?}", ctx.context.user)))?;
        Ok((&cluster.cluster, &user.user))
    }

    /// Decodes a base64 `*-data` field to its PEM text.
    ///
    /// # Errors
    /// [`Error::KubeconfigInvalid`] if it is not base64 of UTF-8 text.
    pub fn decode_data(data: &str, path: &Path) -> Result<String> {
        let invalid = |reason: &str| Error::KubeconfigInvalid {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let bytes = STANDARD
            .decode(data.trim())
            .map_err(|_| invalid("embedded data is not base64"))?;
        String::from_utf8(bytes).map_err(|_| invalid("embedded data is not text"))
    }
}

/// Writes a kubeconfig for one cluster and user to `path`, atomically and with `mode`
/// (e.g. 0o600; k3s's `--write-kubeconfig-mode` lets users choose 0o644). Missing parent
/// directories are created 0755 so a looser `mode` is actually usable by others.
///
/// Blocking: call from `spawn_blocking` in async code.
///
/// # Errors
/// [`Error::Kubeconfig`] if encoding fails, IO errors with the path.
pub fn write_kubeconfig(
    path: &Path,
    mode: u32,
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    user_name: &str,
    credential: &Credential,
) -> Result<()> {
    let config = Kubeconfig::new(cluster_name, server_url, ca_pem, user_name, credential);
    let yaml = serde_yaml::to_string(&config).map_err(|source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    fsutil::write_atomic(path, yaml.as_bytes(), mode, 0o755)
}

/// Reads a kubeconfig.
///
/// # Errors
/// IO errors with the path; [`Error::Kubeconfig`] if it is not a kubeconfig.
pub fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    let data = fsutil::read(path)?;
    serde_yaml::from_slice(&data).map_err(|source| Error::Kubeconfig {
        path: path.to_path_buf(),
        source,
    })
}
