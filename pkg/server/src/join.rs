//! What a joining node meets first, as in k3s: `GET /cacerts` (the cluster CA, served to
//! anyone, because the node cannot verify our TLS yet; it checks the CA against the hash in
//! its join token instead) and the join secret accepted as a bearer token. The secret
//! authenticates as `system:bootstrap:<token user>` in `system:bootstrappers`, which RBAC
//! lets create CertificateSigningRequests and nothing more, as kubeadm's bootstrap tokens.

use bytes::Bytes;
use distro_apiserver::authn::{UserInfo, AUTHENTICATED};
use distro_apiserver::handler::{bytes_response, Body, Route, TokenAuthenticator};
use distro_apiserver::request::RequestInfo;
use distro_pki::JoinToken;
use http::{Request, Response, StatusCode};

/// The group join-secret users are in (upstream's bootstrap-token group).
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";

/// Serves the cluster CA PEM at `/cacerts`, unauthenticated.
pub struct CaCerts {
    /// The CA certificate, exactly the bytes the join token's hash covers.
    pub ca_pem: Bytes,
}

const PATH: &str = "/cacerts";

#[async_trait::async_trait]
impl Route for CaCerts {
    async fn handle(
        &self,
        req: &Request<Bytes>,
        _info: &RequestInfo,
        _user: &UserInfo,
    ) -> Option<Response<Body>> {
        if req.uri().path() != PATH || req.method() != http::Method::GET {
            return None;
        }
        Some(bytes_response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            self.ca_pem.clone(),
        ))
    }

    fn public(&self, path: &str) -> bool {
        path == PATH
    }
}

/// Accepts the server's join secret as a bearer token, in any form `--token` takes (the full
/// `K10…` token, `user:secret`, or the bare secret).
pub struct JoinSecret {
    /// The server's token.
    pub token: JoinToken,
}

#[async_trait::async_trait]
impl TokenAuthenticator for JoinSecret {
    async fn authenticate(&self, presented: &str) -> Option<UserInfo> {
        let t: JoinToken = presented.parse().ok()?;
        // A token pinning another CA was made for another cluster, even if the secret matches.
        let same_ca = match (&t.ca_hash, &self.token.ca_hash) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if !same_ca || t.username != self.token.username || !self.token.secret_matches(&t.secret) {
            return None;
        }
        Some(UserInfo {
            name: format!("system:bootstrap:{}", t.username),
            groups: vec![BOOTSTRAPPERS.into(), AUTHENTICATED.into()],
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            ca_hash: Some("a".repeat(64)),
            username: "server".into(),
            secret: "s3cret".into(),
        }
    }

    #[tokio::test]
    async fn join_secret_in_every_form_and_nothing_else() {
        let auth = JoinSecret { token: token() };
        for good in [token().to_string(), "server:s3cret".into(), "s3cret".into()] {
            let u = auth.authenticate(&good).await.expect(&good);
            assert_eq!(u.name, "system:bootstrap:server");
            assert!(u.groups.iter().any(|g| g == BOOTSTRAPPERS));
        }
        let other_ca = format!("K10{}::server:s3cret", "b".repeat(64));
        for bad in ["s3cre", "node:s3cret", "", other_ca.as_str(), "x.y.z"] {
            assert!(auth.authenticate(bad).await.is_none(), "{bad}");
        }
    }
}
