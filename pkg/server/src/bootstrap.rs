//! Objects every cluster has from its first start, created through the same storage path as
//! any API write (so admission and validation apply) and left alone if they exist.

use distro_apiserver::resources::Registry;
use distro_apiserver::rest::{Storage, WriteOptions};
use distro_apiserver::Error;
use serde_json::json;

/// Namespaces upstream clusters start with.
const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The bundled RBAC bootstrap policy (compiled into the binary).
const RBAC: &str = include_str!("../../../bundled/rbac.yaml");

/// Creates what is missing.
///
/// # Errors
/// Any storage error other than "already exists".
pub async fn ensure(storage: &Storage, registry: &Registry) -> Result<(), Error> {
    let ns = registry
        .get("", "v1", "namespaces")
        .ok_or(Error::NoSuchResource)?;
    for name in NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match storage
            .create(&ns, None, obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    for doc in serde_yaml::Deserializer::from_str(RBAC) {
        let obj: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::Internal(format!("bundled/rbac.yaml: {e}")))?;
        let kind = obj["kind"].as_str().unwrap_or_default();
        let def = registry
            .by_kind("rbac.authorization.k8s.io", kind)
            .ok_or(Error::NoSuchResource)?;
        match storage
            .create(&def, None, obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
