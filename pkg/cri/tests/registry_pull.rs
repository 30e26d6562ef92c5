//! The real pull path (root, real containerd and Debian's docker-registry): a test image is
//! pushed to a local registry, `registries.yaml` makes it docker.io's mirror, and CRI
//! `PullImage` of `busybox` fetches it through the rendered `hosts.toml`.

mod common;

use common::Node;
use distro_testharness::node::build_images;
use distro_testharness::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_a_registries_yaml_mirror() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None);
    let url = registry.url();
    let built = dir.path().join("images");
    build_images(&built, &[]);
    registry.push(&built.join("busybox.tar"), "library/busybox", "latest");

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
