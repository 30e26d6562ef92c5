//! Integration test (root, real containerd): `distro agent --runtime containerd` joins, starts
//! its supervised containerd on its data dir, imports tarballs dropped into
//! `<data-dir>/agent/images/`, and stops containerd when it stops.

use std::path::Path;
use std::time::Duration;

use distro_cri::containerd::Paths;
use distro_cri::Cri;
use distro_testharness::{eventually, Agent, Server};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

#[test]
fn agent_runs_supervised_containerd_and_imports_images() {
    let s = Server::start(bin());
    let mut a = Agent::start(
        bin(),
        &s,
        &["--runtime", "containerd", "--node-name", "ctr-1"],
    );
    let paths = Paths::new(&a.data_dir(), Path::new("/run/distro"));
    eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        "container runtime ready",
        || a.log().contains("container runtime ready").then_some(()),
    );

    // Test images built aside and renamed in, as an operator copies them.
    let built = a.data_dir().join("built");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hack/build-test-images");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(&built)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(built.join("busybox.tar"), paths.images.join("busybox.tar")).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let found = rt.block_on(async {
        let cri = Cri::wait_ready(&paths.socket, Duration::from_secs(10))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(img) = cri
                .image_status("distro.test/busybox:latest")
                .await
                .unwrap()
            {
                return img;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "image not imported:\n{}",
                a.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(found
        .repo_tags
        .contains(&"distro.test/busybox:latest".to_string()));

    let status = a.stop();
    assert!(
        status.success(),
        "agent stopped cleanly: {status}\n{}",
        a.log()
    );
    assert!(
        std::os::unix::net::UnixStream::connect(&paths.socket).is_err(),
        "containerd stopped with the agent"
    );
    // containerd's runtime state lives outside the temp data dir: remove it.
    let _ = std::fs::remove_dir_all(paths.state.parent().unwrap());
}
