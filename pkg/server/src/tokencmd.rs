//! `distro token create|list|delete`: bootstrap tokens managed through the API server with
//! the admin kubeconfig, as `k3s token` / `kubeadm token` do. See [`crate::bootstraptoken`]
//! for the Secret format and how the server authenticates them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::Api;
use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::bootstraptoken::{self, GROUP_PREFIX, NAMESPACE, SECRET_PREFIX, SECRET_TYPE};
use crate::Error;

/// kubeadm's default extra group for node join tokens.
pub const DEFAULT_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// kubeadm's default usages.
pub const DEFAULT_USAGES: &[&str] = &["signing", "authentication"];

/// Where the admin kubeconfig is: `--kubeconfig`, else the one a server with `--data-dir`
/// keeps (`<data-dir>/server/cred/admin.kubeconfig`), else `/etc/distro/distro.yaml`.
pub fn kubeconfig_path(kubeconfig: Option<PathBuf>, data_dir: Option<&Path>) -> PathBuf {
    match (kubeconfig, data_dir) {
        (Some(k), _) => k,
        (None, Some(d)) => admin_kubeconfig(d),
        (None, None) => PathBuf::from("/etc/distro/distro.yaml"),
    }
}

/// The admin kubeconfig a server keeps under its data dir, as k3s' `server/cred/admin.kubeconfig`.
pub fn admin_kubeconfig(data_dir: &Path) -> PathBuf {
    data_dir
        .join("server")
        .join("cred")
        .join("admin.kubeconfig")
}

/// What `token create` makes.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Lifetime; `None` (or zero) never expires.
    pub ttl: Option<Duration>,
    /// Free text shown by `token list`.
    pub description: Option<String>,
    /// `signing`, `authentication` (kubeadm's).
    pub usages: Vec<String>,
    /// Extra groups, each `system:bootstrappers:…`.
    pub groups: Vec<String>,
}

fn invalid(message: String) -> Error {
    Error::Token(message)
}

fn api_err(what: &'static str) -> impl Fn(kube::Error) -> Error {
    move |e| Error::Token(format!("{what}: {e}"))
}

async fn client(kubeconfig: &Path) -> Result<(kube::Client, String), Error> {
    let path = kubeconfig.to_path_buf();
    let endpoint =
        tokio::task::spawn_blocking(move || distro_client::Endpoint::from_kubeconfig(&path))
            .await?
            .map_err(Error::Client)?;
    let hash = hex::encode(Sha256::digest(endpoint.ca_pem.as_bytes()));
    let client = distro_client::connect(&endpoint, "distro-token").map_err(Error::Client)?;
    Ok((client, hash))
}

fn random(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// The token Secret for `opts` (pure, for tests).
///
/// # Errors
/// [`Error::Token`] for a usage or group kubeadm would refuse.
pub fn token_secret(
    id: &str,
    secret: &str,
    opts: &CreateOptions,
    now: DateTime<Utc>,
) -> Result<Secret, Error> {
    let mut data = BTreeMap::new();
    data.insert("token-id".to_string(), id.to_string());
    data.insert("token-secret".to_string(), secret.to_string());
    if let Some(ttl) = opts.ttl.filter(|t| !t.is_zero()) {
        let exp = now
            + chrono::Duration::from_std(ttl).map_err(|_| invalid("--ttl is too long".into()))?;
        data.insert(
            "expiration".into(),
            exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    if let Some(d) = opts.description.as_ref().filter(|d| !d.is_empty()) {
        data.insert("description".into(), d.clone());
    }
    for u in &opts.usages {
        if !matches!(u.as_str(), "signing" | "authentication") {
            return Err(invalid(format!(
                "invalid bootstrap token usage string: {u}, valid options are: signing,authentication"
            )));
        }
        data.insert(format!("usage-bootstrap-{u}"), "true".into());
    }
    for g in &opts.groups {
        let rest = g.strip_prefix(GROUP_PREFIX).unwrap_or("");
        let ok = !rest.is_empty()
            && !rest.ends_with([':', '-'])
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b':' || b == b'-');
        if !ok {
            return Err(invalid(format!(
                "bootstrap group {g:?} is invalid (must match system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9])"
            )));
        }
    }
    if !opts.groups.is_empty() {
        data.insert("auth-extra-groups".into(), opts.groups.join(","));
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(format!("{SECRET_PREFIX}{id}")),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.into()),
        string_data: Some(data),
        ..Default::default()
    })
}

/// Creates a token and returns it in k3s' full form `K10<ca-hash>::<id>.<secret>`.
///
/// # Errors
/// Bad options, an unreadable kubeconfig, or the API refusing the Secret.
pub async fn create(kubeconfig: &Path, opts: &CreateOptions) -> Result<String, Error> {
    let (client, hash) = client(kubeconfig).await?;
    let (id, secret) = (random(6), random(16));
    let s = token_secret(&id, &secret, opts, Utc::now())?;
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    api.create(&PostParams::default(), &s)
        .await
        .map_err(api_err("creating the token Secret"))?;
    Ok(format!("K10{hash}::{id}.{secret}"))
}

/// Upstream's `duration.ShortHumanDuration` ("23h", "59m", "6d"), as kubeadm's TTL column.
fn short_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s if s < 86400 * 365 => format!("{}d", s / 86400),
        s => format!("{}y", s / (86400 * 365)),
    }
}

/// The `token list` table for these Secrets at `now`, as kubeadm prints it.
pub fn table(secrets: &[Value], now: DateTime<Utc>) -> String {
    let mut rows = vec![[
        "TOKEN",
        "TTL",
        "EXPIRES",
        "USAGES",
        "DESCRIPTION",
        "EXTRA GROUPS",
    ]
    .map(String::from)];
    for s in secrets {
        if s["type"].as_str() != Some(SECRET_TYPE) {
            continue;
        }
        let d = |k: &str| bootstraptoken::data(s, k);
        let (Some(id), Some(secret)) = (d("token-id"), d("token-secret")) else {
            continue;
        };
        let (ttl, expires) = match bootstraptoken::expiration(s) {
            Ok(None) => ("<forever>".to_string(), "<never>".to_string()),
            Ok(Some(t)) => (
                short_duration(t - now),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
            Err(_) => ("<invalid>".into(), "<invalid>".into()),
        };
        let mut usages: Vec<String> = s["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("usage-bootstrap-").map(String::from))
            .filter(|u| d(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
            .collect();
        usages.sort();
        rows.push([
            format!("{id}.{secret}"),
            ttl,
            expires,
            usages.join(","),
            d("description").unwrap_or_else(|| "<none>".into()),
            d("auth-extra-groups").unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// The `token list` table.
///
/// # Errors
/// An unreadable kubeconfig or a failed list.
pub async fn list(kubeconfig: &Path) -> Result<String, Error> {
    let (client, _) = client(kubeconfig).await?;
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let secrets = api
        .list(&ListParams::default())
        .await
        .map_err(api_err("listing token Secrets"))?;
    let values: Vec<Value> = secrets
        .items
        .iter()
        .filter_map(|s| serde_json::to_value(s).ok())
        .collect();
    Ok(table(&values, Utc::now()))
}

/// Deletes a token given as `<id>`, `<id>.<secret>` or the full `K10…` form.
///
/// # Errors
/// A malformed id, an unreadable kubeconfig, or no such token.
pub async fn delete(kubeconfig: &Path, token: &str) -> Result<String, Error> {
    let id = match bootstraptoken::parse(token) {
        Some((_, id, _)) => id,
        None if token.len() == 6
            && token
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
        {
            token.to_string()
        }
        None => {
            return Err(invalid(format!(
                "given token or token id {token:?} didn't match pattern \"[a-z0-9]{{6}}\" or \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\""
            )))
        }
    };
    let (client, _) = client(kubeconfig).await?;
    let api: Api<Secret> = Api::namespaced(client, NAMESPACE);
    match api
        .delete(&format!("{SECRET_PREFIX}{id}"), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(format!("bootstrap token \"{id}\" deleted")),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            Err(invalid(format!("bootstrap token \"{id}\" not found")))
        }
        Err(e) => Err(api_err("deleting the token Secret")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_table_as_kubeadm() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let opts = CreateOptions {
            ttl: Some(Duration::from_secs(3600)),
            description: Some("for ci".into()),
            usages: vec!["signing".into(), "authentication".into()],
            groups: vec![DEFAULT_GROUP.into()],
        };
        let s = token_secret("abcdef", "0123456789abcdef", &opts, now).unwrap();
        let sd = s.string_data.clone().unwrap();
        assert_eq!(sd["expiration"], "2026-01-01T01:00:00Z");
        assert_eq!(sd["usage-bootstrap-authentication"], "true");
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        // As stored: stringData folded into base64 data.
        let mut v = serde_json::to_value(&s).unwrap();
        let data: serde_json::Map<String, Value> = sd
            .iter()
            .map(|(k, val)| {
                use base64::Engine;
                (
                    k.clone(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(val)),
                )
            })
            .collect();
        v["data"] = Value::Object(data);
        let t = table(&[v], now);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("TOKEN"), "{t}");
        assert!(lines[0].contains("EXTRA GROUPS"), "{t}");
        assert!(lines[1].starts_with("abcdef.0123456789abcdef"), "{t}");
        for want in [
            "1h",
            "2026-01-01T01:00:00Z",
            "authentication,signing",
            "for ci",
            DEFAULT_GROUP,
        ] {
            assert!(lines[1].contains(want), "{want}: {t}");
        }
        let bad = CreateOptions {
            groups: vec!["admins".into()],
            ..Default::default()
        };
        assert!(token_secret("abcdef", "0123456789abcdef", &bad, now).is_err());
        let bad = CreateOptions {
            usages: vec!["everything".into()],
            ..Default::default()
        };
        assert!(token_secret("abcdef", "0123456789abcdef", &bad, now).is_err());
    }
}
