//! The one test harness for the real binary: each [`Server`] gets its own temp data dir, a
//! free port and (unless the test names one) its own slice of the pod range, is stopped by
//! PID (only the process it started) and its data dir removed on drop; its log is printed
//! when a test fails. [`eventually`] replaces sleeps.
//!
//! [`cluster`] builds several nodes on one machine, each in its own network namespace.
//!
//! Tests find the binary through `DISTRO_BIN` or cargo's `CARGO_BIN_EXE_distro`, and kubectl at
//! `/usr/lib/google-cloud-sdk/bin/kubectl.1.NN` (override the directory with `KUBECTL_DIR`).

pub mod cluster;
pub mod fake;
pub mod get;
pub mod node;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every kubectl minor version tests must pass with.
pub const KUBECTL_VERSIONS: &[u32] = &[27, 28, 29, 30, 31, 32, 33];

/// The newest kubectl, for tests that need only one.
pub const LATEST: u32 = 33;

/// Polls `f` every `every` until it returns `Some`, or panics with `what` after `deadline`.
pub fn eventually<T>(
    deadline: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// A pod range for a server whose nodes share the test machine's network namespace: a /22
/// of 10.42.0.0/16 (four node /24s) that differs between the servers of one test binary
/// (and, likely, between test binaries), so two tests' pod bridges do not route the same
/// /24 — the node IPAM controller gives every server's first node the first /24 of its range.
fn host_cluster_cidr() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let slot = (std::process::id().wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed)) % 64;
    format!("10.42.{}.0/22", slot * 4)
}

/// A command for `program`, run inside network namespace `netns` (under /var/run/netns)
/// when given. Through `nsenter --net`, which execs the program (the child's PID is the
/// program's) and, unlike `ip netns exec`, leaves the mounts alone: `ip netns exec` mounts a
/// fresh /sys, hiding the cgroup mounts runc needs.
fn in_netns(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Path of a kubectl minor version.
pub fn kubectl_path(minor: u32) -> PathBuf {
    let dir =
        std::env::var("KUBECTL_DIR").unwrap_or_else(|_| "/usr/lib/google-cloud-sdk/bin".into());
    Path::new(&dir).join(format!("kubectl.1.{minor}"))
}

/// A running `distro server` owned by a test.
pub struct Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    extra_args: Vec<String>,
    bin: PathBuf,
    /// 0 until the first start picks a free port; restarts reuse it.
    port: u16,
    /// Whether this server runs its own node (no `--disable-agent`).
    node: bool,
    /// The network namespace the server (and kubectl) run in; `None`: the test's own.
    netns: Option<String>,
    /// `--bind-address`.
    bind: String,
}

impl Server {
    /// Starts a control-plane-only server on a free port and waits until its kubeconfig exists
    /// and `/readyz` answers.
    pub fn start(bin: &Path) -> Server {
        Self::start_with(bin, &[])
    }

    /// Like [`Server::start`], with extra flags.
    pub fn start_with(bin: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("distro-test-")
            .tempdir()
            .expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|a| a.starts_with("--cluster-cidr")) {
            extra_args.push(format!("--cluster-cidr={}", host_cluster_cidr()));
        }
        let mut s = Server {
            child: None,
            kubeconfig,
            dir,
            extra_args,
            bin: bin.to_path_buf(),
            port: 0,
            node: false,
            netns: None,
            bind: "127.0.0.1".into(),
        };
        s.spawn();
        s
    }

    /// Like [`Server::start_with`], run inside network namespace `netns` and listening on
    /// `bind` (an address of that namespace); kubectl runs there too.
    pub fn start_in_netns(bin: &Path, netns: &str, bind: &str, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("distro-test-")
            .tempdir()
            .expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let mut s = Server {
            child: None,
            kubeconfig,
            dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            bin: bin.to_path_buf(),
            port: 0,
            node: false,
            netns: Some(netns.to_string()),
            bind: bind.to_string(),
        };
        s.spawn();
        s
    }

    /// Starts a server that is also a node (root, containerd: the real kubelet), as the
    /// README's `distro server` runs, with `extra` flags (e.g. `--node-name`,
    /// `--cni-bridge`); `prepare` gets the data dir first (e.g. to put image tarballs in
    /// `agent/images/`). Waits for the kubeconfig only: wait for the node with
    /// [`eventually`].
    pub fn start_with_node(bin: &Path, extra: &[&str], prepare: impl FnOnce(&Path)) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("distro-test-")
            .tempdir()
            .expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let mut extra_args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        // Tests run nodes side by side: the kubelet API on a free port.
        if !extra.iter().any(|a| a.starts_with("--kubelet-port")) {
            extra_args.push("--kubelet-port=0".into());
        }
        // Its DNS server on the test's own link, named after the test's bridge.
        let bridge = extra
            .iter()
            .position(|a| *a == "--cni-bridge")
            .and_then(|i| extra.get(i + 1));
        if let (Some(bridge), false) = (
            bridge,
            extra.iter().any(|a| a.starts_with("--dns-interface")),
        ) {
            extra_args.push(format!("--dns-interface={}", node::dns_link(bridge)));
        }
        // Test machines' disks may be fuller than upstream's thresholds allow: no evictions
        // unless a test asks for them.
        if !extra.iter().any(|a| a.starts_with("--eviction-hard")) {
            extra_args.push("--eviction-hard=".into());
        }
        if !extra.iter().any(|a| a.starts_with("--cluster-cidr")) {
            extra_args.push(format!("--cluster-cidr={}", host_cluster_cidr()));
        }
        prepare(&dir.path().join("data"));
        let mut s = Server {
            child: None,
            kubeconfig,
            dir,
            extra_args,
            bin: bin.to_path_buf(),
            port: 0,
            node: true,
            netns: None,
            bind: "127.0.0.1".into(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut cmd = in_netns(self.netns.as_deref(), &self.bin);
        cmd.arg("server")
            .arg("--config")
            .arg(self.dir.path().join("no-config.yaml"))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--bind-address")
            .arg(&self.bind)
            .arg("--https-listen-port")
            .arg(self.port.to_string())
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .args((!self.node).then_some("--disable-agent"))
            // Nodes that tests create by hand post no heartbeats: unless a test is about node
            // lifecycle (and sets its own), they must not turn Unknown and tainted mid-test.
            .args(
                (!self
                    .extra_args
                    .iter()
                    .any(|a| a.starts_with("--node-monitor-grace-period")))
                .then_some("--node-monitor-grace-period=1h"),
            )
            .args(&self.extra_args)
            .env("DISTRO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        // An empty config file: tests never read the machine's /etc/distro/config.yaml.
        std::fs::write(self.dir.path().join("no-config.yaml"), "").expect("config file");
        self.child = Some(cmd.spawn().expect("starting distro server"));
        let kc = self.kubeconfig.clone();
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(20),
            "the server's kubeconfig",
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("distro server exited with {status}:\n{}", self.log());
                }
                kc.exists().then_some(())
            },
        );
        self.port = self
            .server_url()
            .and_then(|u| u.rsplit(':').next().and_then(|p| p.parse().ok()))
            .expect("kubeconfig names the server's port");
    }

    /// The API URL from the kubeconfig.
    pub fn server_url(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.kubeconfig).ok()?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        doc["clusters"][0]["cluster"]["server"]
            .as_str()
            .map(String::from)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for a clean exit (panics if it does not stop within 10 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();

        eventually(
            Duration::from_secs(10),
            Duration::from_millis(20),
            "server exit",
            || child.try_wait().ok().flatten(),
        )
    }

    /// Stops and starts again on the same data dir and port.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "server did not stop cleanly: {status}\n{}",
            self.log()
        );
        self.spawn();
    }

    /// Runs kubectl 1.`minor` against this server.
    pub fn kubectl(&self, minor: u32, args: &[&str]) -> Output {
        self.kubectl_stdin(minor, args, None)
    }

    /// Runs kubectl with `stdin` as standard input (for `-f -`).
    pub fn kubectl_stdin(&self, minor: u32, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = in_netns(self.netns.as_deref(), &kubectl_path(minor));
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", kubectl_path(minor).display()));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("writing stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl and returns stdout, panicking with stderr and the server log on failure.
    pub fn ok(&self, minor: u32, args: &[&str]) -> String {
        self.ok_stdin(minor, args, None)
    }

    /// [`Server::ok`] with standard input.
    pub fn ok_stdin(&self, minor: u32, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(minor, args, stdin);
        if !out.status.success() {
            panic!(
                "kubectl 1.{minor} {} failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, minor: u32, args: &[&str]) -> String {
        self.fails_stdin(minor, args, None)
    }

    /// [`Server::fails`] with standard input.
    pub fn fails_stdin(&self, minor: u32, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_stdin(minor, args, stdin);
        assert!(
            !out.status.success(),
            "kubectl 1.{minor} {} should have failed; stdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs kubectl with `-o json` appended and parses the output.
    pub fn json(&self, minor: u32, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.ok(minor, &a);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("kubectl output is not JSON ({e}): {out}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- distro server log ({}) ----\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

impl Server {
    /// The join token the server wrote (`<data-dir>/server/token`).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("server").join("token"))
            .expect("the server's join token")
            .trim()
            .to_string()
    }
}

/// A running `distro agent` owned by a test: its own temp data dir, stopped by PID.
pub struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    bin: PathBuf,
    /// The network namespace the agent runs in; `None`: the test's own.
    netns: Option<String>,
    /// The service proxy's nftables table this agent made (containerd runtime), removed on
    /// drop: `distro-proxy-<bridge>`, or `distro-proxy` if it did not exist before.
    proxy_table: Option<String>,
}

impl Agent {
    /// Starts `distro agent --runtime fake` joining `server` with its token, plus `extra`
    /// flags (e.g. `--node-name`, `--fake-nodes`, or `--runtime containerd`). Does not wait: use [`eventually`] on what
    /// the test expects (a Ready node), or [`Agent::wait_exit`].
    pub fn start(bin: &Path, server: &Server, extra: &[&str]) -> Agent {
        let url = server.server_url().expect("server URL");
        let token = server.token();
        Self::start_raw(bin, &url, &token, extra)
    }

    /// Like [`Agent::start`] with an explicit URL and token (e.g. a wrong one).
    pub fn start_raw(bin: &Path, url: &str, token: &str, extra: &[&str]) -> Agent {
        Self::start_prepared(bin, url, token, extra, |_| {})
    }

    /// Starts `distro agent --runtime containerd` (real containers) joining `server`;
    /// `prepare` gets the data dir before the start (e.g. to put image tarballs in
    /// `agent/images/`).
    pub fn start_containerd(
        bin: &Path,
        server: &Server,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Agent {
        let url = server.server_url().expect("server URL");
        let mut args = vec!["--runtime", "containerd"];
        args.extend_from_slice(extra);
        Self::start_prepared(bin, &url, &server.token(), &args, prepare)
    }

    fn start_prepared(
        bin: &Path,
        url: &str,
        token: &str,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Agent {
        Self::start_prepared_in(bin, None, url, token, extra, prepare)
    }

    /// Starts `distro agent` inside network namespace `netns` (see [`cluster`]); `prepare`
    /// gets the data dir before the start.
    pub fn start_in_netns(
        bin: &Path,
        netns: &str,
        url: &str,
        token: &str,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Agent {
        Self::start_prepared_in(bin, Some(netns), url, token, extra, prepare)
    }

    fn start_prepared_in(
        bin: &Path,
        netns: Option<&str>,
        url: &str,
        token: &str,
        extra: &[&str],
        prepare: impl FnOnce(&Path),
    ) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("distro-agent-test-")
            .tempdir()
            .expect("temp dir");
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--config".into(),
            dir.path().join("no-config.yaml").display().to_string(),
            "--data-dir".into(),
            dir.path().join("data").display().to_string(),
            "--join".into(),
            url.into(),
            "--token".into(),
            token.into(),
        ];
        // The fake runtime unless the test names one.
        if !extra.contains(&"--runtime") {
            args.extend(["--runtime".into(), "fake".into()]);
        }
        // Tests run agents side by side: each kubelet API on a free port.
        if !extra.iter().any(|a| a.starts_with("--kubelet-port")) {
            args.push("--kubelet-port=0".into());
        }
        // Test machines' disks may be fuller than upstream's thresholds allow: no evictions
        // unless a test asks for them.
        if !extra.iter().any(|a| a.starts_with("--eviction-hard")) {
            args.push("--eviction-hard=".into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        std::fs::write(dir.path().join("no-config.yaml"), "").expect("config file");
        prepare(&dir.path().join("data"));
        let mut a = Agent {
            child: None,
            dir,
            // In its own namespace the agent's tables go with the namespace.
            proxy_table: if netns.is_some() {
                None
            } else {
                proxy_table(&args)
            },
            args,
            bin: bin.to_path_buf(),
            netns: netns.map(String::from),
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let child = in_netns(self.netns.as_deref(), &self.bin)
            .args(&self.args)
            .env("DISTRO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("starting distro agent");
        self.child = Some(child);
    }

    /// The running agent's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The agent's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits for the agent to exit by itself (panics after `deadline`).
    pub fn wait_exit(&mut self, deadline: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        eventually(deadline, Duration::from_millis(20), "agent exit", || {
            child.try_wait().ok().flatten()
        })
    }

    /// Sends SIGTERM and waits for a clean exit (panics if it does not stop within 10 s).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("agent running");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit(Duration::from_secs(10))
    }

    /// Starts the agent again on the same data dir after [`Agent::stop`] (a test can change
    /// the cluster while the node is down).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "agent still running");
        self.spawn();
    }

    /// Stops and starts again on the same data dir.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "agent did not stop cleanly: {status}\n{}",
            self.log()
        );
        self.spawn();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(table) = &self.proxy_table {
            for family in ["ip", "ip6"] {
                let _ = Command::new("nft")
                    .args(["delete", "table", family, table])
                    .output();
            }
            // The NetworkPolicy table is named as the proxy's (`distro-policy[-<bridge>]`).
            let policy = table.replacen("distro-proxy", "distro-policy", 1);
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", &policy])
                .output();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- distro agent log ({}) ----\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// The service proxy table a containerd agent started with `args` will make and the test then
/// owns (named as `distro_agent::containerd` names it), if any.
fn proxy_table(args: &[String]) -> Option<String> {
    let containerd = args
        .windows(2)
        .any(|w| w[0] == "--runtime" && w[1] == "containerd");
    if !containerd {
        return None;
    }
    let bridge = args
        .windows(2)
        .find(|w| w[0] == "--cni-bridge")
        .map(|w| w[1].clone())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--cni-bridge=").map(str::to_string))
        });
    match bridge.as_deref() {
        Some(b) if b != "cni0" => Some(format!("distro-proxy-{b}")),
        // The machine's own node may own the default table: only one this agent creates.
        _ => {
            let exists = Command::new("nft")
                .args(["list", "table", "ip", "distro-proxy"])
                .output()
                .is_ok_and(|o| o.status.success());
            (!exists).then(|| "distro-proxy".to_string())
        }
    }
}
