//! Unique node names, as k3s' node passwords: each agent keeps a random per-node secret under
//! its data dir and presents it before it asks for the node's certificate. The server keeps
//! its hash in the `<node>.node-password.distro` Secret in `kube-system`. A different
//! password for a name whose Node still exists means another machine holds that name, and the
//! join is refused (403) saying what to do; once the old Node is deleted, the name is free
//! and the new password replaces the old one.
//!
//! `POST /v1-distro/node-password/<node>` with header `Distro-Node-Password`, authenticated
//! as a join token (`system:bootstrappers`) or as that node itself.

use std::sync::Arc;

use bytes::Bytes;
use distro_apiserver::authn::UserInfo;
use distro_apiserver::error::Error as ApiError;
use distro_apiserver::handler::{error_response, json_response, Body, Route};
use distro_apiserver::request::RequestInfo;
use distro_apiserver::resources::Registry;
use distro_apiserver::rest::{Storage, WriteOptions};
use http::{Request, Response, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::join::BOOTSTRAPPERS;

/// The route's path prefix (followed by the node name).
pub const PATH: &str = "/v1-distro/node-password/";
/// The header carrying the agent's node password.
pub const HEADER: &str = "distro-node-password";
/// Secret name suffix, as k3s' `<node>.node-password.k3s`.
pub const SECRET_SUFFIX: &str = ".node-password.distro";
const NAMESPACE: &str = "kube-system";

/// The password's hash as stored (the password is 128 random bits: no salt needed).
pub fn hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// The node-password check.
pub struct NodePasswords {
    /// Where the Secrets and Nodes are.
    pub storage: Storage,
    /// To find the secrets and nodes resources.
    pub registry: Arc<Registry>,
}

fn refused(node: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "node \"{node}\" is already registered by another agent (its node password differs): \
         choose another name with --node-name, or remove the old node first (kubectl delete node {node})"
    ))
}

impl NodePasswords {
    async fn check(&self, node: &str, password: &str) -> Result<(), ApiError> {
        let secrets = self
            .registry
            .get("", "v1", "secrets")
            .ok_or(ApiError::NoSuchResource)?;
        let nodes = self
            .registry
            .get("", "v1", "nodes")
            .ok_or(ApiError::NoSuchResource)?;
        let name = format!("{node}{SECRET_SUFFIX}");
        let want = hash(password);
        let body = json!({"apiVersion": "v1", "kind": "Secret", "type": "distro.io/node-password",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": {"hash": want}});
        let opts = WriteOptions::default();
        match self
            .storage
            .create(&secrets, Some(NAMESPACE), body.clone(), &opts)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == 409 => {}
            Err(e) => return Err(e),
        }
        let stored = self.storage.get(&secrets, Some(NAMESPACE), &name).await?;
        if crate::bootstraptoken::data(&stored, "hash").as_deref() == Some(want.as_str()) {
            return Ok(());
        }
        if self.storage.get(&nodes, None, node).await.is_ok() {
            return Err(refused(node));
        }
        // The old node is gone: the name is free again.
        tracing::info!(%node, "node password replaced: the node it belonged to was deleted");
        let storage = &self.storage;
        storage
            .guaranteed_update(&secrets, Some(NAMESPACE), &name, None, &opts, |_| {
                storage.admit_body(&secrets, body.clone(), &opts)
            })
            .await
            .map(|_| ())
    }
}

#[async_trait::async_trait]
impl Route for NodePasswords {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        _info: &RequestInfo,
        user: &UserInfo,
    ) -> Option<Response<Body>> {
        let node = req.uri().path().strip_prefix(PATH)?;
        if req.method() != http::Method::POST {
            return Some(error_response(&ApiError::MethodNotAllowed(
                "only POST is allowed".into(),
            )));
        }
        let allowed = user.groups.iter().any(|g| g == BOOTSTRAPPERS)
            || user.name == format!("system:node:{node}");
        if !allowed {
            return Some(error_response(&if user.is_anonymous() {
                ApiError::Unauthorized
            } else {
                ApiError::Forbidden(format!(
                    "User \"{}\" cannot claim node name \"{node}\"",
                    user.name
                ))
            }));
        }
        let Some(password) = req
            .headers()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|p| !p.is_empty())
        else {
            return Some(error_response(&ApiError::BadRequest(format!(
                "missing {HEADER} header"
            ))));
        };
        Some(match self.check(node, password).await {
            Ok(()) => json_response(StatusCode::OK, &json!({"node": node})),
            Err(e) => error_response(&e),
        })
    }

    // Authorization is this route's own: join tokens may not reach non-resource paths.
    fn public(&self, path: &str) -> bool {
        path.starts_with(PATH)
    }
}
