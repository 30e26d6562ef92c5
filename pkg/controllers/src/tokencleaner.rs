//! The token cleaner, as upstream's (`pkg/controller/bootstrap/tokencleaner.go`): deletes
//! bootstrap token Secrets (`bootstrap.kubernetes.io/token` in `kube-system`) once their
//! `expiration` has passed, so `distro token list` shows only usable tokens. (The API server
//! already refuses expired tokens; this only tidies up.)
//!
//! It watches only those Secrets, with its own identity (`token-cleaner`, whose Role reads and
//! deletes Secrets in `kube-system` only), and re-reads a Secret before deleting it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::{Backoff, Clients, Error};

/// The controller's identity and log name.
pub const COMPONENT: &str = "token-cleaner";
const NAMESPACE: &str = "kube-system";
const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";

struct Ctx {
    client: Client,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(clients: Clients, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = clients.writer(COMPONENT);
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let ctx = Arc::new(Ctx {
        client,
        backoff: Backoff::default(),
    });
    let results = Controller::new(
        api,
        watcher::Config::default().fields(&format!("type={SECRET_TYPE}")),
    )
    .with_config(Config::default().concurrency(1))
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

/// Time left before the token `secret` expires: `None` if it never does (or is not a token,
/// or is already being deleted), zero once expired or if the expiration is unreadable (as
/// upstream, which deletes such tokens).
pub fn time_left(secret: &Secret, now: Timestamp) -> Option<Duration> {
    if secret.metadata.deletion_timestamp.is_some() || secret.type_.as_deref() != Some(SECRET_TYPE)
    {
        return None;
    }
    let raw = secret.data.as_ref()?.get("expiration")?;
    let Some(exp) = std::str::from_utf8(&raw.0)
        .ok()
        .and_then(|s| s.trim().parse::<Timestamp>().ok())
    else {
        return Some(Duration::ZERO);
    };
    let left = exp
        .as_millisecond()
        .saturating_sub(now.as_millisecond())
        .max(0);
    Some(Duration::from_millis(left as u64))
}

async fn reconcile(secret: Arc<Secret>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(left) = time_left(&secret, Timestamp::now()) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        return Ok(Action::requeue(left + Duration::from_millis(50)));
    }
    let name = secret.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let what = || format!("deleting expired bootstrap token {NAMESPACE}/{name}");
    let Some(fresh) = api.get_opt(&name).await.map_err(Error::api(what()))? else {
        return Ok(Action::await_change());
    };
    if time_left(&fresh, Timestamp::now()) != Some(Duration::ZERO) {
        return Ok(Action::await_change());
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: fresh.resource_version(),
        }),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(secret = %name, "deleted expired bootstrap token"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => return Err(Error::api(what())(e)),
    }
    ctx.backoff.succeeded(&name);
    Ok(Action::await_change())
}

fn error_policy(secret: Arc<Secret>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&secret.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn token(expiration: Option<&str>) -> Secret {
        let mut data = BTreeMap::new();
        if let Some(e) = expiration {
            data.insert("expiration".to_string(), ByteString(e.as_bytes().to_vec()));
        }
        Secret {
            type_: Some(SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn expiry_from_the_expiration_field() {
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(time_left(&token(None), now), None);
        assert_eq!(
            time_left(&token(Some("2026-01-01T01:00:00Z")), now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            time_left(&token(Some("2025-12-31T23:59:59Z")), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            time_left(&token(Some("tomorrow")), now),
            Some(Duration::ZERO)
        );
        let mut opaque = token(Some("2025-01-01T00:00:00Z"));
        opaque.type_ = Some("Opaque".into());
        assert_eq!(time_left(&opaque, now), None);
    }
}
