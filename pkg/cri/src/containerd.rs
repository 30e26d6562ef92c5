//! containerd as distro runs it: its files under `<data-dir>/agent/`, its state and socket
//! under `/run/distro/<id>/`, and its start under the supervisor.
//!
//! # Design
//! Every path derives from the data dir, and the runtime paths from a hash of it, so several
//! nodes on one machine (each its own data dir) never share a socket, state or shim address
//! (containerd names shim sockets after its own socket address). The socket stays short
//! (unix sockets allow 107 bytes) whatever the data dir's length.
//!
//! # Guarantees
//! containerd runs in its own process group and its shims in theirs, so stopping distro (or
//! containerd) leaves running containers running; the next containerd adopts them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use distro_supervisor::{ChildSpec, Supervised, Supervisor};
use sha2::{Digest, Sha256};

use crate::registries::{quote, Registries};
use crate::Error;

/// k3s's default pause image, so users' and docs' settings carry over; the test images
/// provide an image of that name.
pub const DEFAULT_PAUSE_IMAGE: &str = "docker.io/rancher/mirrored-pause:3.6";

/// Where containerd's files live for one data dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `<data-dir>/agent`.
    pub agent_dir: PathBuf,
    /// containerd's root (images, snapshots, metadata): `<agent>/containerd`.
    pub root: PathBuf,
    /// containerd's state (runtime files): `/run/distro/<id>/containerd`.
    pub state: PathBuf,
    /// The gRPC socket: `/run/distro/<id>/containerd.sock`.
    pub socket: PathBuf,
    /// The rendered configuration: `<agent>/etc/containerd/config.toml`.
    pub config: PathBuf,
    /// containerd's log: `<agent>/containerd/containerd.log`.
    pub log: PathBuf,
    /// `hosts.toml` directory (registry mirrors): `<agent>/etc/containerd/certs.d`.
    pub hosts_dir: PathBuf,
    /// CNI plugin dir, holding the `distro` symlink: `<agent>/cni/bin`.
    pub cni_bin: PathBuf,
    /// CNI configuration dir: `<agent>/cni/net.d`.
    pub cni_conf: PathBuf,
    /// Air-gap image tarballs: `<agent>/images`.
    pub images: PathBuf,
}

impl Paths {
    /// The paths for a data dir (`/var/lib/distro` by default), with runtime files under
    /// `run_root` (`/run/distro`).
    pub fn new(data_dir: &Path, run_root: &Path) -> Paths {
        let agent = data_dir.join("agent");
        let abs = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let id = hex::encode(&Sha256::digest(abs.as_os_str().as_encoded_bytes())[..6]);
        let run = run_root.join(id);
        Paths {
            root: agent.join("containerd"),
            state: run.join("containerd"),
            socket: run.join("containerd.sock"),
            config: agent.join("etc/containerd/config.toml"),
            log: agent.join("containerd/containerd.log"),
            hosts_dir: agent.join("etc/containerd/certs.d"),
            cni_bin: agent.join("cni/bin"),
            cni_conf: agent.join("cni/net.d"),
            images: agent.join("images"),
            agent_dir: agent,
        }
    }
}

/// The settings that decide containerd's configuration; [`Settings::detect`] fills the
/// machine-dependent ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The CRI sandbox ("pause") image.
    pub pause_image: String,
    /// `overlayfs` or `native`.
    pub snapshotter: String,
    /// Whether containerd must clamp negative `oom_score_adj` (no CAP_SYS_RESOURCE).
    pub restrict_oom_score_adj: bool,
    /// Registry mirrors and auth.
    pub registries: Registries,
}

impl Settings {
    /// Probes the machine (overlayfs under the root, negative oom scores) and reads
    /// `registries_file` if it exists. Blocking: mounts and forks; call from a blocking task.
    ///
    /// # Errors
    /// An unreadable or invalid registries file.
    pub fn detect(
        paths: &Paths,
        pause_image: &str,
        registries_file: &Path,
    ) -> Result<Settings, Error> {
        let registries = match std::fs::read_to_string(registries_file) {
            Ok(text) => Registries::parse(&text).map_err(|source| Error::Registries {
                path: registries_file.to_path_buf(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registries::default(),
            Err(source) => {
                return Err(Error::Io {
                    path: registries_file.to_path_buf(),
                    source,
                })
            }
        };
        let snapshotter = if crate::host::overlay_works(&paths.root) {
            "overlayfs"
        } else {
            "native"
        };
        Ok(Settings {
            pause_image: pause_image.to_string(),
            snapshotter: snapshotter.to_string(),
            restrict_oom_score_adj: !crate::host::negative_oom_score_allowed(),
            registries,
        })
    }
}

/// containerd's `config.toml` (version 2) for these paths and settings.
pub fn render_config(paths: &Paths, s: &Settings) -> String {
    let p = |p: &Path| quote(&p.to_string_lossy());
    let mut t = format!(
        r#"# Written by distro at every start; edits are overwritten.
version = 2
root = {root}
state = {state}
# Plugins this machine has no use for; they only log errors when they fail to load.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = {socket}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = {oom}

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = {snap}
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = {cni_bin}
  conf_dir = {cni_conf}

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = {hosts}
"#,
        root = p(&paths.root),
        state = p(&paths.state),
        socket = p(&paths.socket),
        opt = p(&paths.root.join("opt")),
        pause = quote(&s.pause_image),
        oom = s.restrict_oom_score_adj,
        snap = quote(&s.snapshotter),
        cni_bin = p(&paths.cni_bin),
        cni_conf = p(&paths.cni_conf),
        hosts = p(&paths.hosts_dir),
    );
    t.push_str(&s.registries.auth_toml());
    t
}

/// Writes containerd's files: directories, config, `hosts.toml`s, and the `distro` CNI
/// plugin symlink to `self_exe` (containerd execs CNI plugins by name from `bin_dir`, and
/// distro's plugin is this binary). Blocking.
///
/// # Errors
/// File system errors, with the path.
pub fn prepare(paths: &Paths, s: &Settings, self_exe: &Path) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    for d in [
        &paths.root,
        &paths.state,
        &paths.cni_bin,
        &paths.cni_conf,
        &paths.images,
    ] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    if let Some(parent) = paths.config.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&paths.config, render_config(paths, s)).map_err(io(&paths.config))?;
    s.registries
        .write_hosts(&paths.hosts_dir)
        .map_err(io(&paths.hosts_dir))?;
    let link = paths.cni_bin.join("distro");
    if std::fs::read_link(&link).ok().as_deref() != Some(self_exe) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(self_exe, &link).map_err(io(&link))?;
    }
    Ok(())
}

/// Starts containerd (found on PATH) with the written config under the supervisor. A stale
/// socket from a containerd that is gone is removed first; a socket that still answers means
/// another containerd serves this data dir, which is refused.
///
/// # Errors
/// containerd not found or not startable; another containerd on this socket.
pub async fn start(paths: &Paths) -> Result<Supervised, Error> {
    if tokio::net::UnixStream::connect(&paths.socket).await.is_ok() {
        return Err(Error::SocketInUse(paths.socket.clone()));
    }
    let _ = std::fs::remove_file(&paths.socket);
    let program = crate::host::which("containerd").ok_or(Error::NotFound("containerd"))?;
    let mut spec = ChildSpec::new("containerd", program, &paths.log)
        .args(["--config".as_ref(), paths.config.as_os_str()]);
    // containerd itself needs runc (and its shim) on PATH; keep the sbin dirs in it.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        spec = spec.env("PATH", joined);
    }
    // containerd drains its shims' connections and exits in well under this.
    spec.stop_timeout = Duration::from_secs(10);
    Supervisor::start(spec).map_err(Error::Supervisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_short_and_unique_per_data_dir() {
        let long = Path::new("/tmp").join("x".repeat(150));
        let a = Paths::new(&long, Path::new("/run/distro"));
        let b = Paths::new(Path::new("/var/lib/distro"), Path::new("/run/distro"));
        assert_ne!(a.socket, b.socket);
        assert!(a.socket.as_os_str().len() < 60, "{}", a.socket.display());
        assert_eq!(a.root, long.join("agent/containerd"));
        assert_eq!(b.images, Path::new("/var/lib/distro/agent/images"));
    }

    #[test]
    fn config_names_every_path_and_setting() {
        let paths = Paths::new(Path::new("/var/lib/distro"), Path::new("/run/distro"));
        let s = Settings {
            pause_image: DEFAULT_PAUSE_IMAGE.into(),
            snapshotter: "native".into(),
            restrict_oom_score_adj: true,
            registries: Registries::parse("configs:\n  r.example:\n    auth:\n      username: u\n")
                .unwrap(),
        };
        let t = render_config(&paths, &s);
        for want in [
            "version = 2\n",
            "root = \"/var/lib/distro/agent/containerd\"",
            &format!("address = \"{}\"", paths.socket.display()),
            "sandbox_image = \"docker.io/rancher/mirrored-pause:3.6\"",
            "restrict_oom_score_adj = true",
            "snapshotter = \"native\"",
            "SystemdCgroup = false",
            "bin_dir = \"/var/lib/distro/agent/cni/bin\"",
            "config_path = \"/var/lib/distro/agent/etc/containerd/certs.d\"",
            "registry.configs.\"r.example\".auth]\n  username = \"u\"",
            "stream_server_address = \"127.0.0.1\"",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
