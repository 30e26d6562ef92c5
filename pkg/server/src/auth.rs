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
/// (and the bound pod or secret, if named) still exists with the same uid, and that the token
/// is meant for us: a token with an `aud` claim must name one of the API server's audiences
/// (legacy secret-based tokens have none).
pub struct ServiceAccountTokens {
    signer: Arc<TokenSigner>,
    storage: Storage,
    registry: Arc<Registry>,
    audiences: Vec<String>,
}

impl ServiceAccountTokens {
    /// Tokens signed by `signer`, accepted for `audiences`.
    pub fn new(
        signer: Arc<TokenSigner>,
        storage: Storage,
        registry: Arc<Registry>,
        audiences: Vec<String>,
    ) -> Self {
        ServiceAccountTokens {
            signer,
            storage,
            registry,
            audiences,
        }
    }

    /// True if the object `claim` names (`{"name", "uid"}`) exists in `ns` with that uid.
    async fn bound_exists(&self, plural: &str, ns: &str, claim: &serde_json::Value) -> bool {
        let Some(name) = claim["name"].as_str() else {
            return true;
        };
        let Some(def) = self.registry.get("", "v1", plural) else {
            return false;
        };
        let Ok(Some(obj)) = self.storage.try_get(&def, Some(ns), name).await else {
            return false;
        };
        claim["uid"]
            .as_str()
            .is_none_or(|u| obj["metadata"]["uid"].as_str() == Some(u))
    }
}

/// The token's audiences among `wanted`; `None` if it has audiences and none is wanted.
fn audiences_of(claims: &serde_json::Value, wanted: &[String]) -> Option<Vec<String>> {
    let aud: Vec<String> = match &claims["aud"] {
        serde_json::Value::String(a) => vec![a.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => return Some(wanted.to_vec()),
    };
    let both: Vec<String> = wanted.iter().filter(|w| aud.contains(w)).cloned().collect();
    (!both.is_empty()).then_some(both)
}

#[async_trait::async_trait]
impl TokenAuthenticator for ServiceAccountTokens {
    async fn authenticate(&self, token: &str) -> Option<UserInfo> {
        self.review(token, &[]).await.map(|(u, _)| u)
    }

    async fn review(&self, token: &str, audiences: &[String]) -> Option<(UserInfo, Vec<String>)> {
        let claims = self.signer.verify(token).ok()?;
        let wanted = if audiences.is_empty() {
            &self.audiences
        } else {
            audiences
        };
        let audiences = audiences_of(&claims, wanted)?;
        let k8s = &claims["kubernetes.io"];
        let ns = k8s["namespace"].as_str()?;
        let sa_name = k8s["serviceaccount"]["name"].as_str()?;
        let sa_uid = k8s["serviceaccount"]["uid"].as_str().unwrap_or("");
        let def = self.registry.get("", "v1", "serviceaccounts")?;
        let sa = self.storage.try_get(&def, Some(ns), sa_name).await.ok()??;
        if !sa_uid.is_empty() && sa["metadata"]["uid"].as_str() != Some(sa_uid) {
            return None;
        }
        if !self.bound_exists("pods", ns, &k8s["pod"]).await
            || !self.bound_exists("secrets", ns, &k8s["secret"]).await
        {
            return None;
        }
        let mut user = UserInfo::service_account(ns, sa_name, sa_uid);
        if let Some(pod) = k8s["pod"]["name"].as_str() {
            user.extra.insert(
                "authentication.kubernetes.io/pod-name".into(),
                vec![pod.to_string()],
            );
        }
        if let Some(uid) = k8s["pod"]["uid"].as_str() {
            user.extra.insert(
                "authentication.kubernetes.io/pod-uid".into(),
                vec![uid.to_string()],
            );
        }
        if let Some(jti) = claims["jti"].as_str() {
            user.extra.insert(
                "authentication.kubernetes.io/credential-id".into(),
                vec![format!("JTI={jti}")],
            );
        }
        Some((user, audiences))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn audiences_must_overlap() {
        let api = vec!["https://kubernetes.default.svc.cluster.local".to_string()];
        assert_eq!(audiences_of(&json!({}), &api), Some(api.clone()));
        assert_eq!(
            audiences_of(&json!({"aud": [api[0].clone(), "x"]}), &api),
            Some(api.clone())
        );
        assert_eq!(audiences_of(&json!({"aud": "vault"}), &api), None);
    }
}
