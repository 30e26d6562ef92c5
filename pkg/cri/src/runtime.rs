//! A node's container runtime in one call: containerd configured for the data dir, started
//! under the supervisor, ready on CRI, with the air-gap images imported and the images
//! directory watched. This is what `distro agent --runtime containerd` (and the kubelet on
//! top of it) starts first.

use std::path::PathBuf;
use std::time::Duration;

use distro_supervisor::Supervised;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::containerd::{self, Paths, Settings};
use crate::import::{Importer, Pass};
use crate::{Cri, Error};

/// How containerd is set up for a node.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// distro's data dir (`--data-dir`); containerd's files go under `<data-dir>/agent/`.
    pub data_dir: PathBuf,
    /// Root of the runtime paths (`/run/distro`).
    pub run_root: PathBuf,
    /// The CRI sandbox image (`--pause-image`).
    pub pause_image: String,
    /// k3s-style registries file (`--private-registry`); absent means none.
    pub registries_file: PathBuf,
    /// The binary containerd runs as the `distro` CNI plugin (the running distro).
    pub self_exe: PathBuf,
    /// How often the images dir is listed for new tarballs.
    pub import_every: Duration,
    /// How long containerd may take to answer CRI after start.
    pub ready_timeout: Duration,
}

impl RuntimeConfig {
    /// Defaults for a data dir: `/run/distro`, k3s's pause image, `/etc/distro/registries.yaml`,
    /// this executable, a 5 s image poll and 30 s to get ready.
    ///
    /// # Errors
    /// The path of the running executable is unknown.
    pub fn new(data_dir: PathBuf) -> Result<RuntimeConfig, Error> {
        let self_exe = std::env::current_exe().map_err(|source| Error::Io {
            path: "/proc/self/exe".into(),
            source,
        })?;
        Ok(RuntimeConfig {
            data_dir,
            run_root: "/run/distro".into(),
            pause_image: containerd::DEFAULT_PAUSE_IMAGE.into(),
            registries_file: "/etc/distro/registries.yaml".into(),
            self_exe,
            import_every: Duration::from_secs(5),
            ready_timeout: Duration::from_secs(30),
        })
    }
}

/// A running node runtime. Stop it with [`NodeRuntime::stop`]: containerd exits, running
/// containers keep running for the next start to adopt.
#[derive(Debug)]
pub struct NodeRuntime {
    /// containerd's paths.
    pub paths: Paths,
    /// The CRI client, ready.
    pub cri: Cri,
    /// What the first import pass did.
    pub first_import: Pass,
    containerd: Supervised,
    stop_import: watch::Sender<bool>,
    importer: JoinHandle<()>,
}

impl NodeRuntime {
    /// Writes containerd's configuration, starts it, waits for CRI, imports the images dir
    /// once (so the pause image is there before the first pod) and keeps watching it.
    ///
    /// # Errors
    /// Invalid registries file, containerd missing or not ready in time (its log says why),
    /// another containerd on this data dir, unreadable images dir.
    pub async fn start(config: RuntimeConfig) -> Result<NodeRuntime, Error> {
        let paths = Paths::new(&config.data_dir, &config.run_root);
        let settings = {
            let (p, c) = (paths.clone(), config.clone());
            tokio::task::spawn_blocking(move || -> Result<Settings, Error> {
                let s = Settings::detect(&p, &c.pause_image, &c.registries_file)?;
                containerd::prepare(&p, &s, &c.self_exe)?;
                Ok(s)
            })
            .await
            .map_err(|e| Error::Io {
                path: paths.config.clone(),
                source: std::io::Error::other(e),
            })??
        };
        tracing::info!(
            snapshotter = %settings.snapshotter,
            restrict_oom_score_adj = settings.restrict_oom_score_adj,
            socket = %paths.socket.display(),
            "starting containerd"
        );
        let supervised = containerd::start(&paths).await?;
        let cri = match Cri::wait_ready(&paths.socket, config.ready_timeout).await {
            Ok(c) => c,
            Err(e) => {
                let _ = supervised.stop().await;
                tracing::error!(log = %paths.log.display(), "containerd did not get ready; see its log");
                return Err(e);
            }
        };
        let importer = Importer::new(
            cri.clone(),
            paths.images.clone(),
            paths.root.join("distro-imported.json"),
        );
        let first_import = importer.pass().await?;
        let (stop_import, stop_rx) = watch::channel(false);
        let every = config.import_every;
        let importer = tokio::spawn(async move {
            // The first pass ran above; wait one period before the next.
            let mut rx = stop_rx.clone();
            tokio::select! {
                _ = tokio::time::sleep(every) => importer.run(every, stop_rx).await,
                _ = async { let _ = rx.wait_for(|s| *s).await; } => {}
            }
        });
        Ok(NodeRuntime {
            paths,
            cri,
            first_import,
            containerd: supervised,
            stop_import,
            importer,
        })
    }

    /// containerd's PID now, if running.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.pid()
    }

    /// Stops the image watcher and containerd (SIGTERM, then SIGKILL after 10 s). Running
    /// containers and their shims are left running.
    ///
    /// # Errors
    /// The supervisor's task failed.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop_import.send(true);
        let _ = self.importer.await;
        self.containerd.stop().await.map_err(Error::Supervisor)
    }
}
