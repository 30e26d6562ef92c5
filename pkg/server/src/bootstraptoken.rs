//! Bootstrap tokens, as kubeadm and k3s make them: `<id>.<secret>` (6 and 16 characters of
//! `[a-z0-9]`) stored as a `bootstrap-token-<id>` Secret of type `bootstrap.kubernetes.io/token`
//! in `kube-system`. Users pass them in k3s' full form `K10<ca-hash>::<id>.<secret>`, which
//! pins the CA exactly as the server's own join token does.
//!
//! The API server accepts one as a bearer token (upstream's bootstrap token authenticator):
//! user `system:bootstrap:<id>` in `system:bootstrappers` plus the Secret's
//! `auth-extra-groups`, only while the Secret allows authentication and has not expired.

use std::sync::Arc;

use base64::Engine;
use chrono::{DateTime, Utc};
use distro_apiserver::authn::{UserInfo, AUTHENTICATED};
use distro_apiserver::handler::TokenAuthenticator;
use distro_apiserver::resources::Registry;
use distro_apiserver::rest::Storage;
use distro_pki::JoinToken;
use serde_json::Value;

use crate::join::BOOTSTRAPPERS;

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// Name prefix of bootstrap token Secrets.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Prefix every extra group must have (upstream's `BootstrapGroupPattern`).
pub const GROUP_PREFIX: &str = "system:bootstrappers:";

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Splits `<id>.<secret>` if it has the bootstrap token form.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (token_chars(id, 6) && token_chars(secret, 16)).then_some((id, secret))
}

/// The `<id>.<secret>` of a token in any form `--token` takes (`K10<hash>::<id>.<secret>` or
/// bare), with the CA hash it pins, if any.
pub fn parse(presented: &str) -> Option<(Option<String>, String, String)> {
    let t: JoinToken = presented.parse().ok()?;
    // A bare `<id>.<secret>` parses as the default user's secret (and the agent sends it back
    // in that display form); other users' forms are not ours.
    if t.username != distro_pki::DEFAULT_USERNAME {
        return None;
    }
    let (id, secret) = split(&t.secret)?;
    Some((t.ca_hash.clone(), id.to_string(), secret.to_string()))
}

/// A Secret's `data[key]`, decoded.
pub fn data(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// When the token Secret expires, if it does; `Err` for an unparseable expiration.
pub fn expiration(secret: &Value) -> Result<Option<DateTime<Utc>>, &'static str> {
    match data(secret, "expiration") {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| "expiration is not RFC 3339"),
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Upstream's checks of a token Secret against a presented `<id>.<secret>` at `now`: the
/// user it authenticates as, or why not.
pub fn authenticate(
    secret: &Value,
    id: &str,
    token_secret: &str,
    now: DateTime<Utc>,
) -> Result<UserInfo, &'static str> {
    if secret["type"].as_str() != Some(SECRET_TYPE) {
        return Err("secret has the wrong type");
    }
    if !secret["metadata"]["deletionTimestamp"].is_null() {
        return Err("token is being deleted");
    }
    if data(secret, "token-id").as_deref() != Some(id) {
        return Err("token id does not match");
    }
    match data(secret, "token-secret") {
        Some(s) if constant_time_eq(&s, token_secret) => {}
        _ => return Err("token secret does not match"),
    }
    match expiration(secret) {
        Err(why) => return Err(why),
        Ok(Some(t)) if t <= now => return Err("token has expired"),
        Ok(_) => {}
    }
    if data(secret, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err("token is not for authentication");
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    for g in data(secret, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !g.starts_with(GROUP_PREFIX) {
            return Err("an extra group is not in system:bootstrappers:");
        }
        groups.push(g.to_string());
    }
    groups.push(AUTHENTICATED.into());
    Ok(UserInfo {
        name: format!("system:bootstrap:{id}"),
        groups,
        ..Default::default()
    })
}

/// The API server's bootstrap token authenticator.
pub struct BootstrapTokens {
    /// To read token Secrets (decrypted).
    pub storage: Storage,
    /// To find the secrets resource.
    pub registry: Arc<Registry>,
    /// This cluster's CA hash: tokens pinning another CA are for another cluster.
    pub ca_hash: String,
}

#[async_trait::async_trait]
impl TokenAuthenticator for BootstrapTokens {
    async fn authenticate(&self, presented: &str) -> Option<UserInfo> {
        let (hash, id, token_secret) = parse(presented)?;
        if hash.is_some_and(|h| h != self.ca_hash) {
            return None;
        }
        let def = self.registry.get("", "v1", "secrets")?;
        let name = format!("{SECRET_PREFIX}{id}");
        let secret = self.storage.get(&def, Some(NAMESPACE), &name).await.ok()?;
        match authenticate(&secret, &id, &token_secret, Utc::now()) {
            Ok(u) => Some(u),
            Err(why) => {
                tracing::debug!(token_id = %id, reason = why, "bootstrap token refused");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(expiration: &str, groups: &str) -> Value {
        json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef"},
            "data": {"token-id": b64("abcdef"), "token-secret": b64("0123456789abcdef"),
                "expiration": b64(expiration), "usage-bootstrap-authentication": b64("true"),
                "auth-extra-groups": b64(groups)}})
    }

    #[test]
    fn forms_and_checks_as_upstream() {
        let hash = "a".repeat(64);
        assert_eq!(
            parse(&format!("K10{hash}::abcdef.0123456789abcdef")),
            Some((
                Some(hash.clone()),
                "abcdef".into(),
                "0123456789abcdef".into()
            ))
        );
        assert_eq!(
            parse(&format!("K10{hash}::server:abcdef.0123456789abcdef")),
            Some((Some(hash), "abcdef".into(), "0123456789abcdef".into())),
            "the agent sends what it parsed in JoinToken's display form"
        );
        assert!(parse("abcdef.0123456789abcde").is_none());
        assert!(parse("ABCDEF.0123456789abcdef").is_none());
        assert!(parse("node:abcdef.0123456789abcdef").is_none());

        let now = Utc::now();
        let later = (now + chrono::Duration::hours(1)).to_rfc3339();
        let u = authenticate(
            &secret(&later, "system:bootstrappers:extra"),
            "abcdef",
            "0123456789abcdef",
            now,
        )
        .unwrap();
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(
            u.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:extra",
                AUTHENTICATED
            ]
        );
        let s = secret(&later, "");
        assert!(authenticate(&s, "abcdef", "0123456789abcdeX", now).is_err());
        let earlier = (now - chrono::Duration::seconds(1)).to_rfc3339();
        assert_eq!(
            authenticate(&secret(&earlier, ""), "abcdef", "0123456789abcdef", now),
            Err("token has expired")
        );
        assert!(
            authenticate(&secret(&later, "admins"), "abcdef", "0123456789abcdef", now).is_err()
        );
    }
}
