//! The real pull path (root, real containerd and Debian's docker-registry): a test image is
//! pushed to a local registry, `registries.yaml` makes it docker.io's mirror, and CRI
//! `PullImage` of `busybox` fetches it through the rendered `hosts.toml`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{eventually, Node};

/// Pushes an OCI layout tarball's first image to `<registry>/<repo>:<tag>` with the
/// registry HTTP API (blobs, then the manifest).
const PUSH: &str = r#"
import json, sys, tarfile, urllib.request
tarball, registry, repo, tag = sys.argv[1:5]
t = tarfile.open(tarball)
blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/")).read()
index = json.load(t.extractfile("index.json"))
desc = index["manifests"][0]
manifest = json.loads(blob(desc["digest"]))
for d in [manifest["config"]] + manifest["layers"]:
    r = urllib.request.urlopen(urllib.request.Request(f"{registry}/v2/{repo}/blobs/uploads/", method="POST"))
    loc = r.headers["Location"]
    loc = (loc if loc.startswith("http") else registry + loc) + ("&" if "?" in loc else "?") + "digest=" + d["digest"]
    urllib.request.urlopen(urllib.request.Request(loc, data=blob(d["digest"]), method="PUT",
        headers={"Content-Type": "application/octet-stream"}))
urllib.request.urlopen(urllib.request.Request(f"{registry}/v2/{repo}/manifests/{tag}", data=blob(desc["digest"]),
    method="PUT", headers={"Content-Type": desc["mediaType"]}))
"#;

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_a_registries_yaml_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("registry").display()
        ),
    )
    .unwrap();
    let _registry = Registry(
        Command::new("docker-registry")
            .args(["serve".as_ref(), config.as_os_str()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)"),
    );
    let url = format!("http://127.0.0.1:{port}");
    eventually(10, "the registry to listen", || async {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .await;

    let built = dir.path().join("images");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-test-images");
    assert!(Command::new("bash")
        .arg(script)
        .arg(&built)
        .status()
        .unwrap()
        .success());
    let push = Command::new("python3")
        .args(["-c", PUSH])
        .arg(built.join("busybox.tar"))
        .args([&url, "library/busybox", "latest"])
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "push: {}",
        String::from_utf8_lossy(&push.stderr)
    );

    let registries = dir.path().join("registries.yaml");
    std::fs::write(
        &registries,
        format!("mirrors:\n  docker.io:\n    endpoint:\n      - \"{url}\"\n"),
    )
    .unwrap();
    let node = Node::start_with(&registries, |_| {}).await;
    let hosts = std::fs::read_to_string(node.paths.hosts_dir.join("docker.io/hosts.toml")).unwrap();
    assert!(hosts.contains(&format!("[host.\"{url}\"]")), "{hosts}");

    let image_ref = node.cri.pull_image("busybox", None, None).await;
    let image_ref = match image_ref {
        Ok(r) => r,
        Err(e) => panic!(
            "{e}\n{}",
            std::fs::read_to_string(&node.paths.log).unwrap_or_default()
        ),
    };
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let img = node
        .cri
        .image_status("docker.io/library/busybox:latest")
        .await
        .unwrap()
        .expect("pulled");
    assert_eq!(img.id, image_ref);
    node.cleanup().await;
}
