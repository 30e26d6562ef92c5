//! The certificate controller: upstream's `csrapproving` and `csrsigning` for the one signer
//! nodes need, `kubernetes.io/kube-apiserver-client-kubelet`.
//!
//! Approval, as upstream's `sarapprove`: a request that is a node client certificate
//! (`CN=system:node:<name>`, `O=system:nodes`, no SANs, client-auth usages) is approved with
//! condition `Approved`/`AutoApproved` when a SubjectAccessReview says its requester may
//! create `certificatesigningrequests/nodeclient` (a new node, e.g. a join-token bootstrapper)
//! or, when the requester is the node itself, `certificatesigningrequests/selfnodeclient`
//! (renewal). Anything else is left for a human (`kubectl certificate approve`).
//!
//! Signing: approved requests of that signer get `status.certificate`, issued by the cluster
//! CA for `spec.expirationSeconds` (at most [`MAX_VALIDITY`]).
//!
//! Kubelet serving certificates (`kubernetes.io/kubelet-serving`, [`KUBELET_SERVING_SIGNER`]):
//! upstream leaves their approval to the cluster; as k3s, which issues them to its nodes
//! itself, a request is approved when the node asks for itself (`CN=system:node:<name>`,
//! `O=system:nodes`, requester = CN, server-auth usages, DNS/IP SANs only), and signed for
//! server use, so the API server can verify kubelets against the cluster CA.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distro_pki::{Ca, CertificateRequest, Usage};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestStatus,
};
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::{Backoff, Clients, Error};

/// The controller's identity and component name.
pub const COMPONENT: &str = "certificate-controller";

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Longest certificate issued: one year, upstream's `--cluster-signing-duration` default.
pub const MAX_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

struct Ctx {
    client: Client,
    ca: Arc<Ca>,
    backoff: Backoff,
}

/// Runs until `shutdown` resolves.
pub async fn run(
    clients: Clients,
    ca: Arc<Ca>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let csrs = clients.informers.get::<CertificateSigningRequest>();
    let ctx = Arc::new(Ctx {
        client: clients.writer(COMPONENT),
        ca,
        backoff: Backoff::default(),
    });
    let results = Controller::for_shared_stream(csrs.subscribe(), csrs.store())
        .with_config(Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx);
    crate::drive(COMPONENT, results).await;
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// What a kubelet serving request must look like: a node's identity, server-auth usages,
/// and at least one DNS or IP SAN (no other SAN kinds parse).
fn is_node_serving_cert(csr: &CertificateSigningRequest, req: &CertificateRequest) -> bool {
    let usages_ok = csr.spec.usages.as_ref().is_some_and(|u| {
        u.iter().any(|u| u == "server auth")
            && u.iter().all(|u| {
                matches!(
                    u.as_str(),
                    "server auth" | "digital signature" | "key encipherment"
                )
            })
    });
    usages_ok
        && req.identity.user.starts_with("system:node:")
        && req.identity.user.len() > "system:node:".len()
        && req.identity.groups == ["system:nodes"]
        && !(req.dns_names.is_empty() && req.ip_addresses.is_empty())
}

/// What a node client request must look like (upstream's `isNodeClientCert`).
fn is_node_client_cert(csr: &CertificateSigningRequest, req: &CertificateRequest) -> bool {
    let usages_ok = csr.spec.usages.as_ref().is_some_and(|u| {
        u.iter().any(|u| u == "client auth")
            && u.iter().all(|u| {
                matches!(
                    u.as_str(),
                    "client auth" | "digital signature" | "key encipherment"
                )
            })
    });
    usages_ok
        && req.identity.user.starts_with("system:node:")
        && req.identity.user.len() > "system:node:".len()
        && req.identity.groups == ["system:nodes"]
        && req.dns_names.is_empty()
        && req.ip_addresses.is_empty()
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = csr.name_any();
    let serving = csr.spec.signer_name == KUBELET_SERVING_SIGNER;
    if (csr.spec.signer_name != KUBELET_CLIENT_SIGNER && !serving)
        || has_condition(&csr, "Denied")
        || has_condition(&csr, "Failed")
        || csr
            .status
            .as_ref()
            .is_some_and(|s| s.certificate.as_ref().is_some_and(|c| !c.0.is_empty()))
    {
        return Ok(Action::await_change());
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    if !has_condition(&csr, "Approved") {
        let Ok(req) = CertificateRequest::from_pem(&pem) else {
            tracing::debug!(csr = %name, "not a parsable request; left for a human");
            return Ok(Action::await_change());
        };
        let requester = csr.spec.username.clone().unwrap_or_default();
        if serving {
            if !is_node_serving_cert(&csr, &req) || requester != req.identity.user {
                tracing::debug!(csr = %name, %requester, "not a node's own serving request; left for a human");
                return Ok(Action::await_change());
            }
            approve(
                &api,
                &name,
                "Auto approving kubelet serving certificate requested by the node itself.",
            )
            .await?;
            tracing::info!(csr = %name, user = %req.identity.user, "approved kubelet serving certificate");
            ctx.backoff.succeeded(&name);
            return Ok(Action::await_change());
        }
        if !is_node_client_cert(&csr, &req) {
            return Ok(Action::await_change());
        }
        let subresource = if requester == req.identity.user {
            "selfnodeclient"
        } else {
            "nodeclient"
        };
        if !authorized(&ctx.client, &csr, subresource).await? {
            tracing::debug!(csr = %name, %requester, subresource, "requester may not self-approve; left for a human");
            return Ok(Action::await_change());
        }
        approve(
            &api,
            &name,
            "Auto approving kubelet client certificate after SubjectAccessReview.",
        )
        .await?;
        tracing::info!(csr = %name, user = %req.identity.user, "approved node client certificate");
        // The approval's watch event brings the request back for signing.
        ctx.backoff.succeeded(&name);
        return Ok(Action::await_change());
    }
    let validity = csr
        .spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_VALIDITY)
        .min(MAX_VALIDITY);
    let usage = if serving {
        Usage::Server
    } else {
        Usage::Client
    };
    let status = match ctx.ca.sign_csr(&pem, usage, validity, None) {
        Ok(cert) => CertificateSigningRequestStatus {
            certificate: Some(ByteString(cert.into_bytes())),
            ..Default::default()
        },
        Err(e) => {
            // Upstream marks such a request Failed instead of retrying forever.
            let failed = json!({"status": {"conditions": [{
                "type": "Failed",
                "status": "True",
                "reason": "SigningError",
                "message": e.to_string(),
            }]}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&failed))
                .await
                .map_err(Error::api(format!(
                    "marking CertificateSigningRequest {name} failed"
                )))?;
            return Ok(Action::await_change());
        }
    };
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .map_err(Error::api(format!(
        "signing CertificateSigningRequest {name}"
    )))?;
    tracing::info!(csr = %name, signer = %csr.spec.signer_name, "issued node certificate");
    ctx.backoff.succeeded(&name);
    Ok(Action::await_change())
}

/// Marks the request `Approved` (reason `AutoApproved`).
async fn approve(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    message: &str,
) -> Result<(), Error> {
    let approved = json!({"status": {"conditions": [{
        "type": "Approved",
        "status": "True",
        "reason": "AutoApproved",
        "message": message,
    }]}});
    api.patch_subresource(
        "approval",
        name,
        &PatchParams::default(),
        &Patch::Merge(&approved),
    )
    .await
    .map_err(Error::api(format!(
        "approving CertificateSigningRequest {name}"
    )))?;
    Ok(())
}

/// Asks the authorizer whether the requester may create `certificatesigningrequests/<sub>`.
async fn authorized(
    client: &Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: csr.spec.username.clone(),
            groups: csr.spec.groups.clone(),
            uid: csr.spec.uid.clone(),
            extra: csr.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(Error::api("reviewing the CSR requester's access"))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn error_policy(csr: Arc<CertificateSigningRequest>, _e: &Error, ctx: Arc<Ctx>) -> Action {
    Action::requeue(ctx.backoff.failed(&csr.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(
        cn: &str,
        org: Option<&str>,
        usages: &[&str],
    ) -> (CertificateSigningRequest, CertificateRequest) {
        let (pem, _) = distro_pki::new_csr(cn, org).expect("csr");
        let req = CertificateRequest::from_pem(&pem).expect("parse");
        let obj = CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: KUBELET_CLIENT_SIGNER.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        };
        (obj, req)
    }

    #[test]
    fn recognises_node_client_requests_only() {
        let good = ["digital signature", "client auth"];
        let (c, r) = csr("system:node:n1", Some("system:nodes"), &good);
        assert!(is_node_client_cert(&c, &r));
        let (c, r) = csr("system:node:n1", Some("system:masters"), &good);
        assert!(!is_node_client_cert(&c, &r), "other group");
        let (c, r) = csr("alice", Some("system:nodes"), &good);
        assert!(!is_node_client_cert(&c, &r), "not a node name");
        let (c, r) = csr("system:node:", Some("system:nodes"), &good);
        assert!(!is_node_client_cert(&c, &r), "empty node name");
        let (c, r) = csr(
            "system:node:n1",
            Some("system:nodes"),
            &["server auth", "client auth"],
        );
        assert!(!is_node_client_cert(&c, &r), "serving usage");
        let (c, r) = csr("system:node:n1", None, &good);
        assert!(!is_node_client_cert(&c, &r), "no group");
    }

    #[test]
    fn recognises_node_serving_requests_only() {
        let serving = |cn: &str, org: &str, ips: &[std::net::IpAddr], usages: &[&str]| {
            let (pem, _) = distro_pki::new_serving_csr(cn, org, &[], ips).expect("csr");
            let req = CertificateRequest::from_pem(&pem).expect("parse");
            let (mut obj, _) = csr(cn, Some(org), usages);
            obj.spec.request = ByteString(pem.into_bytes());
            obj.spec.signer_name = KUBELET_SERVING_SIGNER.into();
            (obj, req)
        };
        let ip = [std::net::IpAddr::from([10, 0, 0, 1])];
        let good = ["digital signature", "server auth"];
        let (c, r) = serving("system:node:n1", "system:nodes", &ip, &good);
        assert!(is_node_serving_cert(&c, &r));
        let (c, r) = serving("system:node:n1", "system:nodes", &[], &good);
        assert!(!is_node_serving_cert(&c, &r), "no SANs");
        let (c, r) = serving("system:node:n1", "system:nodes", &ip, &["client auth"]);
        assert!(!is_node_serving_cert(&c, &r), "client usage");
        let (c, r) = serving("alice", "system:nodes", &ip, &good);
        assert!(!is_node_serving_cert(&c, &r), "not a node");
    }
}
