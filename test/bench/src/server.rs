//! The `distro server` under test: started on a fresh temp data dir and a free port, observed
//! through /proc, stopped with SIGTERM by PID, its temp dir removed.
//!
//! Flags mirror test/harness (control plane only, empty config file, port 0, kubeconfig in the
//! temp dir). The harness is not reused because it polls at 20 ms, panics on failure and does
//! not expose the PID; the bench needs millisecond timing, errors it can report, and /proc.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};

/// How long the server gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running `distro server` owned by the bench.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    /// The admin kubeconfig the server writes once it is about to serve.
    pub kubeconfig: PathBuf,
}

impl Server {
    /// Spawns `bin server --disable-agent` on a fresh temp data dir (under `tmp_root`, or the
    /// system temp dir) and returns as soon as the process exists; the second value is the
    /// instant just before the spawn, for start-up timing.
    ///
    /// # Errors
    /// If the temp dir cannot be made or the binary cannot be started.
    pub fn spawn(bin: &Path, tmp_root: Option<&Path>) -> Result<(Server, Instant)> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("distro-bench-");
        let dir = match tmp_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .context("creating the temp data dir")?;
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let config = dir.path().join("no-config.yaml");
        // An empty config file: the bench never reads the machine's /etc/distro/config.yaml.
        std::fs::write(&config, "").context("writing the empty config file")?;
        let log = std::fs::File::create(dir.path().join("server.log")).context("log file")?;
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--bind-address")
            .arg("127.0.0.1")
            .arg("--https-listen-port")
            .arg("0")
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .arg("--disable-agent")
            // A /13 of /24 node ranges (k3s's per-node size): room for the 1,024 simulated
            // nodes of DESIGN.md's scale target, whose pods start only once their node has a
            // range, and still 253 addresses for the real node's 100-pod burst (a /26 ran
            // out at 61 pods and the burst never finished).
            .args(["--cluster-cidr", "10.128.0.0/13"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log)
            // Last resort if the bench itself dies; `stop` and `Drop` send SIGTERM first.
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("distro server exited at once"))?;
        Ok((
            Server {
                child: Some(child),
                pid,
                dir,
                kubeconfig,
            },
            started,
        ))
    }

    /// Polls every `every` until the kubeconfig exists, failing early if the server exits.
    ///
    /// # Errors
    /// If the server exits or `deadline` passes first.
    pub async fn wait_for_kubeconfig(&mut self, every: Duration, deadline: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.kubeconfig.exists() {
                return Ok(());
            }
            self.check_running()?;
            if start.elapsed() > deadline {
                bail!("no kubeconfig after {deadline:?}\n{}", self.log_tail(30));
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Fails with the log's tail if the server has exited.
    ///
    /// # Errors
    /// If it has exited (or its status cannot be read).
    pub fn check_running(&mut self) -> Result<()> {
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("server stopped"))?;
        if let Some(status) = child.try_wait()? {
            bail!("distro server exited with {status}:\n{}", self.log_tail(30));
        }
        Ok(())
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM and waits for the exit; kills the process if it outlives the grace period.
    ///
    /// # Errors
    /// If the signal cannot be sent or the process does not stop even when killed.
    pub async fn stop(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("server stopped"))?;
        sigterm(self.pid).await?;
        match tokio::time::timeout(STOP_GRACE, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.kill().await?;
                bail!("distro server ignored SIGTERM for {STOP_GRACE:?}; killed it")
            }
        }
    }
}

impl Drop for Server {
    /// Error paths: SIGTERM by PID, a short synchronous wait, then `kill_on_drop` finishes the
    /// job. Blocking is acceptable here, the bench is about to exit.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// SIGTERM to one PID, through kill(1): the workspace denies `unsafe`, so no libc call.
async fn sigterm(pid: u32) -> Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .context("running kill")?;
    if !status.success() {
        bail!("kill -TERM {pid} failed: {status}");
    }
    Ok(())
}

/// Resident memory of a process, from /proc/<pid>/status.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS so far), bytes.
    pub peak: u64,
}

/// Reads VmRSS and VmHWM of `pid`.
///
/// # Errors
/// If the process is gone or the fields are missing.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .ok_or_else(|| anyhow!("/proc/{pid}/status has no {name}"))?;
        let kib: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("parsing {name}{line}"))?;
        Ok(kib * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// User plus system CPU time a process has used so far, from /proc/<pid>/stat.
///
/// # Errors
/// If the process is gone or the file does not parse.
pub fn cpu_time(pid: &str, ticks_per_sec: u64) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after its ')' are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("/proc/{pid}/stat: no ')'"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i - 3)
            .ok_or_else(|| anyhow!("/proc/{pid}/stat: no field {i}"))?
            .parse()
            .with_context(|| format!("/proc/{pid}/stat field {i}"))
    };
    let total = ticks(14)? + ticks(15)?;
    Ok(Duration::from_secs_f64(
        total as f64 / ticks_per_sec.max(1) as f64,
    ))
}

/// The kernel's clock ticks per second for /proc times (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
