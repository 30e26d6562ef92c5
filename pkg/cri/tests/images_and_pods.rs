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
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-test-images");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-test-images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
