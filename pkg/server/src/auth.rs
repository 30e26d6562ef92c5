//! The server's authentication and at-rest pieces that need PKI keys: service-account token
//! authentication and Secret encryption.

use std::sync::Arc;

use distro_apiserver::authn::UserInfo;
use distro_apiserver::handler::TokenAuthenticator;
use distro_apiserver::resources::{Registry, ResourceDef};
use distro_apiserver::rest::{Storage, Transformer};
use distro_pki::{EncryptionKey, TokenSigner};

/// Encrypts Secrets at rest (AES-256-GCM, upstream's `k8s:enc:aesgcm:v1:` format), leaving every
/// other kind as plain JSON.
pub struct SecretsEncryption {
    key: EncryptionKey,
}

impl SecretsEncryption {
    /// With this key.
    pub fn new(key: EncryptionKey) -> Self {
        SecretsEncryption { key }
    }
}

fn is_secret(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "secrets"
}

impl Transformer for SecretsEncryption {
    fn before_write(&self, def: &ResourceDef, data: Vec<u8>) -> Result<Vec<u8>, String> {
        if !is_secret(def) {
            return Ok(data);
        }
        self.key
            .encrypt(&data)
            .map_err(|e| format!("encrypting a secret: {e}"))
    }

    fn after_read(&self, def: &ResourceDef, data: &[u8]) -> Result<Vec<u8>, String> {
        if is_secret(def) && distro_pki::is_encrypted(data) {
            return self.key.decrypt(data).map_err(|e| e.to_string());
        }
        Ok(data.to_vec())
    }
}

/// Authenticates service-account JWTs signed by this cluster, checking that the service account
/// (and the bound pod or secret, if named) still exists with the same uid.
pub struct ServiceAccountTokens {
    signer: Arc<TokenSigner>,
    storage: Storage,
    registry: Arc<Registry>,
}

impl ServiceAccountTokens {
    /// Tokens signed by `signer`.
    pub fn new(signer: Arc<TokenSigner>, storage: Storage, registry: Arc<Registry>) -> Self {
        ServiceAccountTokens {
            signer,
            storage,
            registry,
        }
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for ServiceAccountTokens {
    async fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let claims = self.signer.verify(token).ok()?;
        let k8s = &claims["kubernetes.io"];
        let ns = k8s["namespace"].as_str()?;
        let sa_name = k8s["serviceaccount"]["name"].as_str()?;
        let sa_uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or("");
        let def = self.registry.get("", "v1", "serviceaccounts")?;
        let sa = self.storage.try_get(&def, Some(ns), sa_name).await.ok()??;
        if !sa_uid.is_empty() && sa["metadata"]["uid"].as_str() != Some(sa_uid) {
            return None;
        }
        if let Some(pod) = k8s["pod"]["name"].as_str() {
            let pods = self.registry.get("", "v1", "pods")?;
            let p = self.storage.try_get(&pods, Some(ns), pod).await.ok()??;
            if k8s["pod"]["uid"]
                .as_str()
                .is_some_and(|u| p["metadata"]["uid"].as_str() != Some(u))
            {
                return None;
            }
        }
        let mut user = UserInfo::service_account(ns, sa_name, sa_uid);
        if let Some(pod) = k8s["pod"]["name"].as_str() {
            user.extra.insert(
                "authentication.kubernetes.io/pod-name".into(),
                vec![pod.to_string()],
            );
        }
        Some(user)
    }
}
