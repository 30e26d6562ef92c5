//! Who may call the kubelet API, as upstream's kubelet decides it: client certificates signed
//! by the cluster CA authenticate (CN user, O groups), and a SubjectAccessReview to the API
//! server authorizes, with the request mapped to a subresource of `nodes/<this node>`.
//!
//! Decisions are cached as upstream's webhook authorizer defaults do (allowed 5 minutes,
//! denied 30 seconds), so a scrape every few seconds costs no API request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::Method;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Api;
use tokio::time::Instant;

use super::Error;

/// How long an "allowed" decision is reused (upstream `--authorization-webhook-cache-authorized-ttl`).
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a "denied" decision is reused (upstream `--authorization-webhook-cache-unauthorized-ttl`).
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Cached decisions kept at most; the cache is cleared when full (callers are few).
const CACHE_MAX: usize = 4096;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// User name (certificate CN).
    pub name: String,
    /// Groups (certificate O).
    pub groups: Vec<String>,
}

/// What a request asks of the node, in RBAC terms: upstream kubelet's mapping of paths to
/// `nodes` subresources.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    /// Kubernetes verb from the HTTP method.
    pub verb: &'static str,
    /// Subresource of `nodes`: `stats`, `metrics`, `log`, `spec` or `proxy`.
    pub subresource: &'static str,
}

/// Upstream's `GetRequestAttributes`: `/stats/*` → `nodes/stats`, `/metrics*` →
/// `nodes/metrics`, `/logs*` → `nodes/log`, `/spec*` → `nodes/spec`, anything else →
/// `nodes/proxy`; the verb follows the HTTP method as for API requests.
pub fn attributes(method: &Method, path: &str) -> Attributes {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|r| r.starts_with('/'))
    };
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else {
        "proxy"
    };
    Attributes { verb, subresource }
}

/// Upstream kubelet's 403 body.
pub fn forbidden_message(user: &User, attrs: &Attributes) -> String {
    format!(
        "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
        user.name, attrs.verb, attrs.subresource
    )
}

/// Asks the API server through SubjectAccessReviews, as the node's own identity (the
/// `system:node` role may create them).
pub struct SarAuthorizer {
    client: kube::Client,
    node: String,
    cache: Mutex<HashMap<(User, Attributes), (bool, Instant)>>,
}

impl SarAuthorizer {
    /// An authorizer for requests to `node`, asking through `client`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        SarAuthorizer {
            client,
            node: node.to_string(),
            cache: Mutex::default(),
        }
    }

    /// Whether `user` may do `attrs` on this node.
    ///
    /// # Errors
    /// [`Error::Authorize`] if the API server cannot be asked (the request is then refused
    /// with 500 by the caller, as upstream).
    pub async fn allowed(&self, user: &User, attrs: &Attributes) -> Result<bool, Error> {
        let key = (user.clone(), attrs.clone());
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((allowed, at)) = cache.get(&key) {
                let ttl = if *allowed { ALLOWED_TTL } else { DENIED_TTL };
                if at.elapsed() < ttl {
                    return Ok(*allowed);
                }
            }
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.to_string()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(Error::Authorize)?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (allowed, Instant::now()));
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources_as_upstream() {
        let a = |m: Method, p: &str| {
            let a = attributes(&m, p);
            (a.verb, a.subresource)
        };
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/stats"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/metrics/resource"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/metrics"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/logs/syslog"), ("get", "log"));
        assert_eq!(a(Method::GET, "/spec/"), ("get", "spec"));
        assert_eq!(a(Method::GET, "/pods"), ("get", "proxy"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/statsx"), ("get", "proxy"));
        let u = User {
            name: "bob".into(),
            groups: vec![],
        };
        assert_eq!(
            forbidden_message(&u, &attributes(&Method::GET, "/stats/summary")),
            "Forbidden (user=bob, verb=get, resource=nodes, subresource=stats)"
        );
    }
}
