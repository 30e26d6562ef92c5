//! Air-gap import of the test images and a real pod through CRI (root, real containerd and
//! runc): the images built by hack/build-test-images are imported from the images dir and
//! listed by CRI; a host-network pod runs `echo hello`; a running container survives a stop
//! of containerd and is adopted by the next one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, Node};
use distro_cri::api;
use distro_cri::containerd::{self, DEFAULT_PAUSE_IMAGE};
use distro_cri::import::Importer;
use distro_cri::Cri;

const BUSYBOX: &str = "distro.test/busybox:latest";

fn build_images(dir: &Path) {
    distro_testharness::node::build_images(dir, &[]);
}

fn sandbox_config(name: &str, log_dir: &Path) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}-{}", std::process::id()),
            namespace: "default".into(),
            attempt: 0,
        }),
        // containerd 1.6 gives a host-network sandbox no UTS namespace, so runc refuses a
        // hostname: the host's applies.
        hostname: String::new(),
        log_directory: log_dir.to_string_lossy().into(),
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                // Host network: no CNI needed for this test.
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, args: &[&str]) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

async fn exited(cri: &Cri, id: &str) -> api::ContainerStatus {
    eventually(20, "container exit", || async {
        let s = cri.container_status(id).await.unwrap();
        (s.state == api::ContainerState::ContainerExited as i32).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_images_run_a_pod_and_containers_survive_containerd_restarts() {
    let mut node = Node::start(build_images).await;
    let cri = node.cri.clone();

    // Import: both tarballs, then nothing on the second pass.
    let state = node.paths.root.join("distro-imported.json");
    let importer = Importer::new(cri.clone(), node.paths.images.clone(), state);
    let pass = importer.pass().await.unwrap();
    assert!(pass.failed.is_empty(), "{:?}", pass.failed);
    assert!(pass.imported.contains(&BUSYBOX.to_string()), "{pass:?}");
    assert!(
        pass.imported.contains(&DEFAULT_PAUSE_IMAGE.to_string()),
        "{pass:?}"
    );
    assert_eq!(importer.pass().await.unwrap().skipped, 2);
    let images = eventually(10, "CRI ListImages to show the imports", || async {
        let list = cri.list_images().await.unwrap();
        let tags: Vec<String> = list.iter().flat_map(|i| i.repo_tags.clone()).collect();
        (tags.contains(&BUSYBOX.to_string()) && tags.contains(&DEFAULT_PAUSE_IMAGE.to_string()))
            .then_some(list)
    })
    .await;
    let bb = images
        .iter()
        .find(|i| i.repo_tags.contains(&BUSYBOX.to_string()))
        .unwrap();
    assert!(
        bb.repo_digests
            .iter()
            .any(|d| d.starts_with("distro.test/busybox@sha256:")),
        "{bb:?}"
    );
    assert!(cri.image_status(BUSYBOX).await.unwrap().is_some());

    // A pod: pause sandbox (host network) + `echo hello`.
    let logs = node.dir.path().join("pods/hello");
    std::fs::create_dir_all(&logs).unwrap();
    let sb = sandbox_config("hello", &logs);
    let pod = cri.run_pod_sandbox(sb.clone()).await.unwrap();
    let c = cri
        .create_container(
            &pod,
            container_config("echo", &["sh", "-c", "echo hello; exit 3"]),
            sb.clone(),
        )
        .await
        .unwrap();
    cri.start_container(&c).await.unwrap();
    let st = exited(&cri, &c).await;
    assert_eq!(st.exit_code, 3);
    let log = std::fs::read_to_string(logs.join("echo.log")).unwrap();
    assert!(log.contains(" stdout F hello"), "{log:?}");

    // A long-running container survives containerd's stop, and the next containerd adopts it.
    let s = cri
        .create_container(&pod, container_config("sleeper", &["sleep", "3600"]), sb)
        .await
        .unwrap();
    cri.start_container(&s).await.unwrap();
    let verbose = cri
        .runtime()
        .container_status(api::ContainerStatusRequest {
            container_id: s.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(&verbose.info.get("info").cloned().unwrap_or_default()).unwrap();
    let pid = info["pid"].as_i64().unwrap() as i32;
    assert!(pid > 0);
    node.containerd.take().unwrap().stop().await.unwrap();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok(),
        "container alive after containerd stopped"
    );
    node.containerd = Some(containerd::start(&node.paths).await.unwrap());
    let cri = Cri::wait_ready(&node.paths.socket, Duration::from_secs(20))
        .await
        .unwrap();
    let st = cri.container_status(&s).await.unwrap();
    assert_eq!(
        st.state,
        api::ContainerState::ContainerRunning as i32,
        "adopted and running"
    );

    // Clean up everything through CRI.
    cri.stop_pod_sandbox(&pod).await.unwrap();
    cri.remove_pod_sandbox(&pod).await.unwrap();
    assert!(cri.list_containers().await.unwrap().is_empty());
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        "container gone"
    );
    node.cleanup().await;
}

/// The node runtime in one call: the images dir is imported at start, and a tarball added
/// later is picked up by the watcher. Runs beside the test above: two containerds on one
/// machine must not collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_runtime_imports_at_start_and_when_a_tarball_is_added() {
    let dir = tempfile::Builder::new()
        .prefix("distro-rt-")
        .tempdir_in("/tmp")
        .unwrap();
    let built = dir.path().join("built");
    build_images(&built);
    let data = dir.path().join("data");
    let images = data.join("agent/images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(built.join("pause.tar"), images.join("pause.tar")).unwrap();

    let mut config = distro_cri::runtime::RuntimeConfig::new(data.clone()).unwrap();
    config.run_root = dir.path().join("run");
    config.registries_file = dir.path().join("registries.yaml");
    config.import_every = Duration::from_millis(200);
    let rt = distro_cri::runtime::NodeRuntime::start(config)
        .await
        .unwrap();
    let state = rt.paths.state.clone();
    assert_eq!(
        rt.first_import.imported,
        vec![DEFAULT_PAUSE_IMAGE.to_string()]
    );
    assert!(rt.cri.image_status(BUSYBOX).await.unwrap().is_none());

    // Copied in under a temporary name and renamed, as an operator should; the watcher
    // imports it.
    std::fs::copy(built.join("busybox.tar"), images.join(".busybox.tar.part")).unwrap();
    std::fs::rename(images.join(".busybox.tar.part"), images.join("busybox.tar")).unwrap();
    let cri = rt.cri.clone();
    eventually(20, "the added tarball to be imported", || async {
        cri.image_status(BUSYBOX).await.unwrap()
    })
    .await;

    let pid = rt.containerd_pid().unwrap();
    rt.stop().await.unwrap();
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err(),
        "containerd stopped"
    );
    common::unmount_under(dir.path());
    common::unmount_under(&state);
}

/// Rewrites an OCI layout tarball as a `docker save` archive: `manifest.json`, the config
/// as `<hex>.json`, each layer uncompressed as `<n>/layer.tar`.
const TO_DOCKER_ARCHIVE: &str = r#"
import gzip, io, json, sys, tarfile
src, dst, tag = sys.argv[1:4]
t = tarfile.open(src)
blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/")).read()
m = json.loads(blob(json.load(t.extractfile("index.json"))["manifests"][0]["digest"]))
files = {m["config"]["digest"][7:] + ".json": blob(m["config"]["digest"])}
layers = []
for i, l in enumerate(m["layers"]):
    files[f"{i}/layer.tar"] = gzip.decompress(blob(l["digest"]))
    layers.append(f"{i}/layer.tar")
files["manifest.json"] = json.dumps([{"Config": m["config"]["digest"][7:] + ".json", "RepoTags": [tag], "Layers": layers}]).encode()
with tarfile.open(dst, "w") as out:
    for name, data in files.items():
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        out.addfile(ti, io.BytesIO(data))
"#;

/// A docker-archive tarball (as `docker save` writes) is imported, and its uncompressed
/// layer unpacks when a container runs from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_archive_is_imported_and_runs() {
    let node = Node::start(|images| {
        let built = images.join(".built");
        build_images(&built);
        std::fs::rename(built.join("pause.tar"), images.join("pause.tar")).unwrap();
        let out = std::process::Command::new("python3")
            .args(["-c", TO_DOCKER_ARCHIVE])
            .arg(built.join("busybox.tar"))
            .arg(images.join("busybox-docker.tar"))
            .arg("example/busybox:v1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&built).unwrap();
    })
    .await;
    let cri = node.cri.clone();
    let importer = Importer::new(
        cri.clone(),
        node.paths.images.clone(),
        node.paths.root.join("imported.json"),
    );
    let pass = importer.pass().await.unwrap();
    assert!(pass.failed.is_empty(), "{:?}", pass.failed);
    let name = "docker.io/example/busybox:v1";
    assert!(pass.imported.contains(&name.to_string()), "{pass:?}");
    eventually(10, "CRI to see the docker archive's image", || async {
        cri.image_status(name).await.unwrap()
    })
    .await;

    let logs = node.dir.path().join("pods/docker");
    std::fs::create_dir_all(&logs).unwrap();
    let sb = sandbox_config("docker", &logs);
    let pod = cri.run_pod_sandbox(sb.clone()).await.unwrap();
    let mut cfg = container_config("ls", &["ls", "/bin/httpd"]);
    cfg.image = Some(api::ImageSpec {
        image: name.into(),
        ..Default::default()
    });
    let c = cri.create_container(&pod, cfg, sb).await.unwrap();
    cri.start_container(&c).await.unwrap();
    assert_eq!(exited(&cri, &c).await.exit_code, 0);
    cri.stop_pod_sandbox(&pod).await.unwrap();
    cri.remove_pod_sandbox(&pod).await.unwrap();
    node.cleanup().await;
}
