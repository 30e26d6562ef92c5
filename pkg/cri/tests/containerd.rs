//! containerd supervised on a temp data dir (root, real containerd): CRI answers, a killed
//! containerd is noticed and restarted, stop ends it.

mod common;

use std::time::Duration;

use common::{eventually, Node};
use distro_cri::Cri;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_containerd_answers_and_is_restarted_when_killed() {
    let node = Node::start(|_| {}).await;
    let v = node.cri.version().await.unwrap();
    assert_eq!(v.runtime_name, "containerd");
    assert_eq!(v.runtime_api_version, "v1");
    let config = std::fs::read_to_string(&node.paths.config).unwrap();
    assert!(
        config.contains("restrict_oom_score_adj = true"),
        "no CAP_SYS_RESOURCE here:\n{config}"
    );
    assert_eq!(
        std::fs::read_link(node.paths.cni_bin.join("distro")).unwrap(),
        std::env::current_exe().unwrap()
    );

    let sup = node.containerd.as_ref().unwrap();
    let first = sup.pid().unwrap();
    // containerd leads a process group of its own, apart from ours.
    assert_eq!(
        nix::unistd::getpgid(Some(Pid::from_raw(first as i32)))
            .unwrap()
            .as_raw(),
        first as i32
    );
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let mut rx = sup.subscribe();
    let st = tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.starts == 2 && s.pid.is_some()),
    )
    .await
    .expect("restarted in time")
    .unwrap()
    .clone();
    assert_ne!(st.pid, Some(first));
    assert!(
        st.last_exit.as_deref().unwrap_or("").contains("SIGKILL"),
        "{st:?}"
    );
    let cri = Cri::wait_ready(&node.paths.socket, Duration::from_secs(20))
        .await
        .unwrap();
    eventually(10, "CRI Version after restart", || async {
        cri.version().await.ok()
    })
    .await;

    let second = st.pid.unwrap();
    let dir = node.dir.path().to_path_buf();
    node.cleanup().await;
    assert!(
        kill(Pid::from_raw(second as i32), None).is_err(),
        "containerd stopped"
    );
    drop(dir);
}
