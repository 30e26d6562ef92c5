//! The real node runtime (`--runtime containerd`): containerd supervised on the agent's data
//! dir, air-gap images imported, and the facts about this machine the Node reports
//! (capacity, addresses, runtime version).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_cri::containerd::{self, Paths, Settings};
use distro_cri::import::Importer;
use distro_cri::Cri;
use distro_supervisor::Supervised;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// Where containerd keeps its runtime state and socket (one subdirectory per data dir).
pub const RUN_ROOT: &str = "/run/distro";

/// How long containerd may take to answer CRI after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the air-gap images directory is looked at again for new tarballs.
const IMPORT_EVERY: Duration = Duration::from_secs(10);

/// A running containerd and what the kubelet needs from its start.
pub struct Runtime {
    /// The supervised child; stopping it leaves containers running.
    pub containerd: Supervised,
    /// The CRI client.
    pub cri: Cri,
    /// containerd's paths for this data dir.
    pub paths: Paths,
    /// The machine-dependent settings containerd was configured with.
    pub settings: Settings,
    /// `containerd://<version>`, as nodeInfo reports it.
    pub version: String,
    /// The importer watching `<data-dir>/agent/images/`.
    pub importer: JoinHandle<()>,
}

fn cri_err(step: &'static str) -> impl FnOnce(distro_cri::Error) -> Error {
    move |source| Error::Runtime { step, source }
}

/// Writes containerd's configuration, starts it, waits until CRI answers, imports the
/// air-gap images once (so pods find them at once), and keeps importing new ones until
/// `shutdown`.
///
/// # Errors
/// [`Error::Runtime`] naming the step: containerd or runc missing, another containerd on
/// this data dir, containerd not answering.
pub async fn start(data_dir: &Path, shutdown: watch::Receiver<bool>) -> Result<Runtime, Error> {
    let paths = Paths::new(data_dir, Path::new(RUN_ROOT));
    let self_exe = std::env::current_exe().map_err(|source| Error::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    let (p, exe) = (paths.clone(), self_exe.clone());
    let settings = tokio::task::spawn_blocking(move || {
        let s = Settings::detect(
            &p,
            containerd::DEFAULT_PAUSE_IMAGE,
            Path::new("/etc/distro/registries.yaml"),
        )?;
        containerd::prepare(&p, &s, &exe)?;
        Ok::<_, distro_cri::Error>(s)
    })
    .await?
    .map_err(cri_err("configuring containerd"))?;
    let supervised = containerd::start(&paths)
        .await
        .map_err(cri_err("starting containerd"))?;
    let cri = match Cri::wait_ready(&paths.socket, READY_TIMEOUT).await {
        Ok(c) => c,
        Err(e) => {
            let _ = supervised.stop().await;
            return Err(cri_err("waiting for containerd")(e));
        }
    };
    let v = cri
        .version()
        .await
        .map_err(cri_err("asking containerd its version"))?;
    let importer = Importer::new(
        cri.clone(),
        paths.images.clone(),
        paths.root.join("distro-imported.json"),
    );
    match importer.pass().await {
        Ok(p) => tracing::info!(
            imported = p.imported.len(),
            failed = p.failed.len(),
            "air-gap images"
        ),
        Err(e) => tracing::warn!(error = %e, "importing air-gap images failed; retrying"),
    }
    let importer = tokio::spawn(importer.run(IMPORT_EVERY, shutdown));
    tracing::info!(socket = %paths.socket.display(), version = %v.runtime_version, "containerd ready");
    Ok(Runtime {
        containerd: supervised,
        cri,
        paths,
        settings,
        version: format!("{}://{}", v.runtime_name, v.runtime_version),
        importer,
    })
}

/// This machine's capacity as a kubelet reports it: CPUs, memory (`MemTotal`), 110 pods.
pub fn capacity() -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = BTreeMap::from([
        ("cpu".to_string(), Quantity(cpus.to_string())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    if let Some(kib) = mem_total_kib(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
    {
        out.insert("memory".to_string(), Quantity(format!("{kib}Ki")));
    }
    out
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The address this machine reaches the outside with (the source of a default-route
/// packet; nothing is sent), else loopback.
pub fn host_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

/// `PRETTY_NAME` of `/etc/os-release`, as nodeInfo's `osImage`.
pub fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_meminfo() {
        assert_eq!(
            mem_total_kib("MemTotal:        4026532 kB\nMemFree: 1 kB\n"),
            Some(4026532)
        );
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), None);
        assert!(capacity().contains_key("memory"));
    }
}
