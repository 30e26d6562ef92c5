//! The connection to containerd's socket and typed helpers over the CRI services.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::Channel;

use crate::api;
use crate::api::image_service_client::ImageServiceClient;
use crate::api::runtime_service_client::RuntimeServiceClient;
use crate::Error;

/// A connection to one containerd: CRI runtime and image services, and containerd's own
/// services for image import. Cheap to clone (one HTTP/2 channel, reconnected by tonic when
/// containerd restarts).
#[derive(Debug, Clone)]
pub struct Cri {
    channel: Channel,
    socket: PathBuf,
}

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |source| Error::Rpc { op, source }
}

impl Cri {
    /// Connects to the socket once.
    ///
    /// # Errors
    /// The socket does not accept connections.
    pub async fn connect(socket: &Path) -> Result<Cri, Error> {
        let channel =
            containerd_client::connect(socket)
                .await
                .map_err(|source| Error::Connect {
                    socket: socket.to_path_buf(),
                    source,
                })?;
        Ok(Cri {
            channel,
            socket: socket.to_path_buf(),
        })
    }

    /// Connects and waits until the CRI runtime answers `Version`, polling with a capped
    /// backoff until `timeout`: containerd takes a moment to load its plugins after start.
    ///
    /// # Errors
    /// The last connection or RPC error once the timeout passed.
    pub async fn wait_ready(socket: &Path, timeout: Duration) -> Result<Cri, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            let attempt = async {
                let cri = Cri::connect(socket).await?;
                cri.version().await?;
                Ok::<_, Error>(cri)
            }
            .await;
            match attempt {
                Ok(cri) => return Ok(cri),
                Err(e) if tokio::time::Instant::now() + delay >= deadline => {
                    return Err(Error::NotReady {
                        socket: socket.to_path_buf(),
                        timeout,
                        last: Box::new(e),
                    })
                }
                Err(e) => tracing::debug!(error = %e, "containerd not ready yet"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The CRI runtime service client, for calls without a helper here.
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    /// The CRI image service client.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// containerd's own services (content, images, leases, ...).
    pub fn containerd(&self) -> containerd_client::Client {
        containerd_client::Client::from(self.channel.clone())
    }

    /// CRI `Version`.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn version(&self) -> Result<api::VersionResponse, Error> {
        let req = api::VersionRequest {
            version: "v1".into(),
        };
        Ok(self
            .runtime()
            .version(req)
            .await
            .map_err(rpc("Version"))?
            .into_inner())
    }

    /// CRI `Status` (runtime and network conditions).
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn status(&self) -> Result<api::StatusResponse, Error> {
        let req = api::StatusRequest { verbose: false };
        Ok(self
            .runtime()
            .status(req)
            .await
            .map_err(rpc("Status"))?
            .into_inner())
    }

    /// Every image CRI knows (`ListImages` without a filter).
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn list_images(&self) -> Result<Vec<api::Image>, Error> {
        let req = api::ListImagesRequest { filter: None };
        Ok(self
            .images()
            .list_images(req)
            .await
            .map_err(rpc("ListImages"))?
            .into_inner()
            .images)
    }

    /// One image by reference, `None` if absent.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>, Error> {
        let req = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(self
            .images()
            .image_status(req)
            .await
            .map_err(rpc("ImageStatus"))?
            .into_inner()
            .image)
    }

    /// Pulls an image (with optional registry auth); returns its image ref.
    ///
    /// # Errors
    /// The RPC failed (bad reference, registry refused, not found).
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<api::AuthConfig>,
        sandbox: Option<api::PodSandboxConfig>,
    ) -> Result<String, Error> {
        let req = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            sandbox_config: sandbox,
        };
        Ok(self
            .images()
            .pull_image(req)
            .await
            .map_err(rpc("PullImage"))?
            .into_inner()
            .image_ref)
    }

    /// Removes an image.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn remove_image(&self, image: &str) -> Result<(), Error> {
        let req = api::RemoveImageRequest {
            image: Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        };
        self.images()
            .remove_image(req)
            .await
            .map_err(rpc("RemoveImage"))?;
        Ok(())
    }

    /// Runs a pod sandbox; returns its id.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn run_pod_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, Error> {
        let req = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(self
            .runtime()
            .run_pod_sandbox(req)
            .await
            .map_err(rpc("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id)
    }

    /// Stops a pod sandbox (and its containers).
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime()
            .stop_pod_sandbox(req)
            .await
            .map_err(rpc("StopPodSandbox"))?;
        Ok(())
    }

    /// Removes a stopped pod sandbox and its containers.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.runtime()
            .remove_pod_sandbox(req)
            .await
            .map_err(rpc("RemovePodSandbox"))?;
        Ok(())
    }

    /// Every pod sandbox.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn list_pod_sandboxes(&self) -> Result<Vec<api::PodSandbox>, Error> {
        let req = api::ListPodSandboxRequest { filter: None };
        Ok(self
            .runtime()
            .list_pod_sandbox(req)
            .await
            .map_err(rpc("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// Creates a container in a sandbox; returns its id.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn create_container(
        &self,
        pod_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, Error> {
        let req = api::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self
            .runtime()
            .create_container(req)
            .await
            .map_err(rpc("CreateContainer"))?
            .into_inner()
            .container_id)
    }

    /// Starts a created container.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn start_container(&self, id: &str) -> Result<(), Error> {
        let req = api::StartContainerRequest {
            container_id: id.into(),
        };
        self.runtime()
            .start_container(req)
            .await
            .map_err(rpc("StartContainer"))?;
        Ok(())
    }

    /// Stops a container, SIGKILL after `timeout_secs`.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), Error> {
        let req = api::StopContainerRequest {
            container_id: id.into(),
            timeout: timeout_secs,
        };
        self.runtime()
            .stop_container(req)
            .await
            .map_err(rpc("StopContainer"))?;
        Ok(())
    }

    /// Removes a container.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let req = api::RemoveContainerRequest {
            container_id: id.into(),
        };
        self.runtime()
            .remove_container(req)
            .await
            .map_err(rpc("RemoveContainer"))?;
        Ok(())
    }

    /// Asks the runtime to reopen a running container's log file at its path, after the
    /// kubelet renamed it away (log rotation): new output goes to a fresh file.
    ///
    /// # Errors
    /// The RPC failed (e.g. the container is not running).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Error> {
        let req = api::ReopenContainerLogRequest {
            container_id: id.into(),
        };
        self.runtime()
            .reopen_container_log(req)
            .await
            .map_err(rpc("ReopenContainerLog"))?;
        Ok(())
    }

    /// A container's status (state, exit code, log path, ...).
    ///
    /// # Errors
    /// The RPC failed (e.g. NotFound).
    pub async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, Error> {
        let req = api::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.runtime()
            .container_status(req)
            .await
            .map_err(rpc("ContainerStatus"))?
            .into_inner()
            .status
            .ok_or(Error::Missing("ContainerStatus.status"))
    }

    /// Every container.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn list_containers(&self) -> Result<Vec<api::Container>, Error> {
        let req = api::ListContainersRequest { filter: None };
        Ok(self
            .runtime()
            .list_containers(req)
            .await
            .map_err(rpc("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// CPU and memory statistics of every container with a task (containerd reads them
    /// from the containers' cgroups), for the kubelet's `/stats/summary` and metrics.
    ///
    /// # Errors
    /// The RPC failed.
    pub async fn list_container_stats(&self) -> Result<Vec<api::ContainerStats>, Error> {
        let req = api::ListContainerStatsRequest { filter: None };
        Ok(self
            .runtime()
            .list_container_stats(req)
            .await
            .map_err(rpc("ListContainerStats"))?
            .into_inner()
            .stats)
    }
}
