//! `distro agent --runtime containerd`: the real node's runtime. containerd is started under
//! the supervisor with distro's configuration and the air-gap images imported
//! ([`distro_cri::runtime::NodeRuntime`]), and the node's credentials are obtained as for
//! any node, so the kubelet can run on top of both.
//!
//! # Limits
//! - The kubelet (Node status from the real machine, pods through CRI) is not wired here
//!   yet, so no Node object is registered in this mode: registering one would claim a node
//!   that runs no pods.

use tokio::sync::watch;

use crate::{join, Config, Error};

/// Starts containerd, joins (node certificate), runs until `shutdown`, then stops
/// containerd, leaving running containers for the next start to adopt.
///
/// # Errors
/// containerd not starting or not ready ([`Error::Runtime`]), and the join errors of
/// [`crate::run`].
pub async fn run(
    config: Config,
    runtime: distro_cri::runtime::RuntimeConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let rt = distro_cri::runtime::NodeRuntime::start(runtime)
        .await
        .map_err(Error::Runtime)?;
    let version = rt.cri.version().await.map_err(Error::Runtime)?;
    tracing::info!(
        runtime = %format!("{}://{}", version.runtime_name, version.runtime_version),
        images = rt.first_import.imported.len(),
        "container runtime ready"
    );
    let joined = async {
        let dir = config.data_dir.join("agent");
        let ca_pem = join::trusted_ca(&config.server, &config.token).await?;
        {
            let (dir, ca) = (dir.clone(), ca_pem.clone());
            tokio::task::spawn_blocking(move || {
                join::write_private(&dir, &dir.join("server-ca.crt"), ca.as_bytes())
            })
            .await??;
        }
        let bootstrap = join::bootstrap_client(&config.server, &ca_pem, &config.token)?;
        let password = join::node_password(&dir).await?;
        join::node_credentials(&bootstrap, &dir, &ca_pem, &config.node_name, &password).await?;
        Ok::<_, Error>(())
    }
    .await;
    if joined.is_ok() {
        tracing::warn!(node = %config.node_name, "joined; the kubelet is not wired to --runtime containerd yet, so no Node is registered");
        let _ = shutdown.wait_for(|s| *s).await;
    }
    let stopped = rt.stop().await.map_err(Error::Runtime);
    joined?;
    stopped
}
