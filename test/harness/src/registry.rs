//! A container registry of the test's own (Debian's `docker-registry`) on a free loopback
//! port, optionally behind htpasswd basic auth, and a push of a test image into it, for the
//! tests of the real pull path. Stopped by PID (the process it started) on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// Pushes an OCI layout tarball's first image to `<registry>/<repo>:<tag>` with the registry
/// HTTP API (blobs, then the manifest), with basic auth when a user and password follow.
const PUSH: &str = r#"
import base64, json, sys, tarfile, urllib.request
tarball, registry, repo, tag = sys.argv[1:5]
auth = {}
if len(sys.argv) > 6:
    auth = {"Authorization": "Basic " + base64.b64encode(f"{sys.argv[5]}:{sys.argv[6]}".encode()).decode()}
t = tarfile.open(tarball)
blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/")).read()
index = json.load(t.extractfile("index.json"))
desc = index["manifests"][0]
manifest = json.loads(blob(desc["digest"]))
for d in [manifest["config"]] + manifest["layers"]:
    r = urllib.request.urlopen(urllib.request.Request(f"{registry}/v2/{repo}/blobs/uploads/", method="POST", headers=auth))
    loc = r.headers["Location"]
    loc = (loc if loc.startswith("http") else registry + loc) + ("&" if "?" in loc else "?") + "digest=" + d["digest"]
    urllib.request.urlopen(urllib.request.Request(loc, data=blob(d["digest"]), method="PUT",
        headers={"Content-Type": "application/octet-stream", **auth}))
urllib.request.urlopen(urllib.request.Request(f"{registry}/v2/{repo}/manifests/{tag}", data=blob(desc["digest"]),
    method="PUT", headers={"Content-Type": desc["mediaType"], **auth}))
"#;

/// A running registry; stopped (by PID) on drop.
pub struct Registry {
    child: Child,
    /// Its loopback port.
    pub port: u16,
    auth: Option<(String, String)>,
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `user:<bcrypt hash>`, with apache2-utils' htpasswd: bcrypt is the one scheme the registry
/// accepts.
fn htpasswd_line(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .args(["-nbB", "-C", "4", user, password])
        .output()
        .expect("htpasswd (apache2-utils)");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let hash = line.strip_prefix(&format!("{user}:")).unwrap_or_default();
    assert!(hash.starts_with("$2"), "bcrypt hash: {line:?}");
    format!("{user}:{hash}\n")
}

impl Registry {
    /// Starts a registry storing under `dir` (its config and log go there too), with basic
    /// auth for `auth = (user, password)` when given, and waits until it listens.
    ///
    /// # Panics
    /// When docker-registry (or, with auth, htpasswd) is missing or it does not listen in 10 s.
    pub fn start(dir: &Path, auth: Option<(&str, &str)>) -> Registry {
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry").display()
        );
        if let Some((user, password)) = auth {
            let file = dir.join("htpasswd");
            std::fs::write(&file, htpasswd_line(user, password)).expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: distro-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.join("registry.yml");
        std::fs::write(&config_file, config).expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .args(["serve".as_ref(), config_file.as_os_str()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let registry = Registry {
            child,
            port,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(50),
            "the registry to listen",
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        registry
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Pushes the first image of OCI layout tarball `tarball` as `<repo>:<tag>`, with the
    /// registry's credentials.
    ///
    /// # Panics
    /// When the push fails (the message has python's error).
    pub fn push(&self, tarball: &Path, repo: &str, tag: &str) {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PUSH])
            .arg(tarball)
            .args([&self.url(), repo, tag]);
        if let Some((user, password)) = &self.auth {
            cmd.args([user, password]);
        }
        let out = cmd.output().expect("python3");
        assert!(
            out.status.success(),
            "push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
