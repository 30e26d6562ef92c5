//! Resource metrics in the server: the metrics.k8s.io kinds in the registry, their route,
//! and the scraper (`distro_metrics`), unless `--disable metrics-server`.
//!
//! The scraper reaches kubelets with the API server's kubelet client certificate
//! (`<data>/server/tls/client-kube-apiserver-kubelet-client.crt`, user
//! `kube-apiserver-kubelet-client`, as kubeadm names upstream's), bound by the bundled RBAC to
//! `system:kubelet-api-admin` and `system:metrics-server`; it lists nodes and pods as that
//! same user.

use std::sync::Arc;

use distro_apiserver::handler::Route;
use distro_apiserver::resources::Registry;
use distro_apiserver::rest::{Storage, WriteOptions};
use distro_client::Endpoint;
use distro_pki::CertKeyPair;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Config, Error};

/// The user the API server's kubelet client certificate names.
pub(crate) const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// What `--disable` takes to turn resource metrics off (k3s' name for its bundled one).
const DISABLE_NAME: &str = "metrics-server";

/// The metrics pipeline, or nothing when disabled.
pub(crate) struct ResourceMetrics {
    points: Option<Arc<distro_metrics::Points>>,
}

/// Registers the metrics.k8s.io kinds (before the OpenAPI document is built from the
/// registry) unless disabled.
pub(crate) fn register(config: &Config, registry: &Registry) -> ResourceMetrics {
    if config.disable.iter().any(|d| d == DISABLE_NAME) {
        return ResourceMetrics { points: None };
    }
    for def in distro_metrics::api::resource_defs() {
        registry.add(Arc::new(def));
    }
    ResourceMetrics {
        points: Some(Arc::default()),
    }
}

impl ResourceMetrics {
    /// Creates the APIService `v1beta1.metrics.k8s.io` (as k3s' bundled metrics-server has)
    /// and reports it Available: the group is served in this process, so it is `Local`, as
    /// upstream's APIServices of built-in groups.
    ///
    /// # Errors
    /// Storage errors other than "already exists".
    pub(crate) async fn ensure_apiservice(
        &self,
        storage: &Storage,
        registry: &Registry,
    ) -> Result<(), distro_apiserver::Error> {
        if self.points.is_none() {
            return Ok(());
        }
        let def = registry
            .get("apiregistration.k8s.io", "v1", "apiservices")
            .ok_or(distro_apiserver::Error::NoSuchResource)?;
        let name = format!("{}.{}", distro_metrics::VERSION, distro_metrics::GROUP);
        let obj = json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name, "labels": {"k8s-app": "metrics-server"}},
            "spec": {"group": distro_metrics::GROUP, "version": distro_metrics::VERSION,
                     "groupPriorityMinimum": 100, "versionPriority": 100},
        });
        match storage
            .create(&def, None, obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(distro_apiserver::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        storage
            .guaranteed_update(
                &def,
                None,
                &name,
                Some("status"),
                &WriteOptions::default(),
                |current| {
                    let mut obj = current
                        .cloned()
                        .ok_or(distro_apiserver::Error::NoSuchResource)?;
                    let available = obj["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Available" && c["status"] == "True");
                    if !available {
                        obj["status"] = json!({"conditions": [{
                            "type": "Available", "status": "True", "reason": "Local",
                            "message": "Local APIServices are always available",
                            "lastTransitionTime": now,
                        }]});
                    }
                    Ok((obj, Vec::new()))
                },
            )
            .await
            .map(|_| ())
    }

    /// The API route, if enabled.
    pub(crate) fn route(&self) -> Option<Arc<dyn Route>> {
        let points = self.points.clone()?;
        Some(Arc::new(distro_metrics::api::MetricsApi { points }))
    }

    /// Starts scraping `url`'s nodes as the API server's kubelet client (`pair`, trusting
    /// `ca_pem`), which also lists their nodes and pods.
    ///
    /// # Errors
    /// [`Error::Client`] if no client can be built from the certificate.
    pub(crate) fn start(
        &self,
        config: &Config,
        url: &str,
        (pair, ca_pem): (&CertKeyPair, &str),
        kubelet_tls: Arc<rustls::ClientConfig>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<JoinHandle<()>>, Error> {
        let Some(points) = self.points.clone() else {
            return Ok(None);
        };
        let client = distro_client::connect(
            &Endpoint::with_cert(url, ca_pem.to_string(), pair),
            &distro_client::user_agent("metrics", "server"),
        )
        .map_err(Error::Client)?;
        let scraper = distro_metrics::scrape::Scraper {
            client,
            tls: kubelet_tls,
            resolution: config.metrics_resolution,
            points,
        };
        Ok(Some(tokio::spawn(scraper.run(shutdown))))
    }
}
