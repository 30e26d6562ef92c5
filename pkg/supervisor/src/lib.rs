//! Supervises child programs that distro runs but does not implement: containerd on every
//! node, etcd on HA servers later.
//!
//! # What it owns
//! One tokio task per child ([`Supervisor::start`]) that spawns the program, appends its
//! stdout and stderr to a log file under the data dir, restarts it with capped exponential
//! backoff when it exits (logging why, with structured fields), and on [`Supervised::stop`]
//! sends SIGTERM and, after a timeout, SIGKILL.
//!
//! # Guarantees
//! - Only the process this task spawned is ever signalled, by its PID, and only while it has
//!   not been reaped yet (so the PID cannot have been reused by another process).
//! - The child runs in a process group of its own, so a Ctrl-C in distro's terminal reaches
//!   distro only, and distro decides how its children stop. Grandchildren the child starts in
//!   groups of their own (containerd's shims) are never signalled: running containers survive
//!   a restart of containerd or of distro.
//!
//! # Limits
//! - If distro itself is killed (SIGKILL), the child keeps running; the next start does not
//!   adopt it (the caller must notice, e.g. a socket already served).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log file could not be opened.
    #[error("opening the log file {path} of {name}: {source}")]
    LogFile {
        /// The child's name.
        name: String,
        /// The log file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started at all (not found, not executable).
    #[error("starting {name} ({program}): {source}")]
    Spawn {
        /// The child's name.
        name: String,
        /// The program.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The supervising task panicked or was cancelled.
    #[error("the supervisor task of {name} failed: {source}")]
    Task {
        /// The child's name.
        name: String,
        /// Cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How long to wait before restarting a child that exited: doubles from `initial` to `max`,
/// and starts over once a child ran for `reset_after` (as the kubelet's CrashLoopBackOff),
/// so a child that crashes at once does not spin, and one that ran for hours restarts quickly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// A run this long resets the delay to `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after `current`: doubled, capped at `max`.
    pub fn next(&self, current: Duration) -> Duration {
        (current * 2).min(self.max).max(self.initial)
    }
}

/// What to run and how: the declared form of a supervised child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// A short name for logs (`containerd`).
    pub name: String,
    /// The program (a path, or a name looked up on PATH).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables (the rest is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The file its stdout and stderr are appended to.
    pub log_file: PathBuf,
    /// How long SIGTERM may take before SIGKILL.
    pub stop_timeout: Duration,
    /// Restart delays.
    pub backoff: Backoff,
}

impl ChildSpec {
    /// A spec with default stop timeout (10 s) and backoff; logs to `log_file`.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        log_file: impl Into<PathBuf>,
    ) -> Self {
        ChildSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log_file: log_file.into(),
            stop_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn spawn(&self) -> Result<Child, Error> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .map_err(|source| self.log_error(source))?;
        let log2 = log.try_clone().map_err(|source| self.log_error(source))?;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Its own process group: a terminal's SIGINT goes to distro's group only.
            .process_group(0)
            .kill_on_drop(false);
        cmd.spawn().map_err(|source| Error::Spawn {
            name: self.name.clone(),
            program: self.program.clone(),
            source,
        })
    }

    fn log_error(&self, source: std::io::Error) -> Error {
        Error::LogFile {
            name: self.name.clone(),
            path: self.log_file.clone(),
            source,
        }
    }
}

/// What a supervised child is doing now, published on a watch channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The PID of the running child, `None` while it waits to be restarted or after stop.
    pub pid: Option<u32>,
    /// How many times it was started (1 after the first start).
    pub starts: u64,
    /// The exit status of the last run, if one ended.
    pub last_exit: Option<String>,
    /// Set once the supervisor stopped the child for good.
    pub stopped: bool,
}

/// Starts children and keeps them running.
#[derive(Debug, Default, Clone, Copy)]
pub struct Supervisor;

impl Supervisor {
    /// Spawns the child now and supervises it in a task.
    ///
    /// # Errors
    /// The first start failing (program missing, log file not writable) is returned, so a
    /// misconfigured machine fails at startup with the reason; later failures are retried.
    pub fn start(spec: ChildSpec) -> Result<Supervised, Error> {
        let child = spec.spawn()?;
        let pid = child.id();
        tracing::info!(child = %spec.name, pid, log = %spec.log_file.display(), "started");
        let (state_tx, state_rx) = watch::channel(State {
            pid,
            starts: 1,
            last_exit: None,
            stopped: false,
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let name = spec.name.clone();
        let task = tokio::spawn(supervise(spec, child, state_tx, stop_rx));
        Ok(Supervised {
            name,
            state: state_rx,
            stop: stop_tx,
            task: Some(task),
        })
    }
}

/// A running supervised child. Dropping it without [`Supervised::stop`] leaves the child
/// running under its task until the runtime shuts down, and the child itself running after.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    state: watch::Receiver<State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Supervised {
    /// The PID of the running child, if one runs now.
    pub fn pid(&self) -> Option<u32> {
        self.state.borrow().pid
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// A receiver of state changes (restarts, exits), for readiness waits and tests.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Stops the child: SIGTERM, then SIGKILL after the spec's timeout; waits for it to exit.
    ///
    /// # Errors
    /// Only when the supervising task itself failed.
    pub async fn stop(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.await.map_err(|source| Error::Task {
                name: self.name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

async fn supervise(
    spec: ChildSpec,
    first: Child,
    state: watch::Sender<State>,
    mut stop: watch::Receiver<bool>,
) {
    let mut child = Some(first);
    let mut delay = spec.backoff.initial;
    loop {
        let mut running = match child.take() {
            Some(c) => c,
            None => {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped(&mut stop) => break,
                }
                delay = spec.backoff.next(delay);
                match spec.spawn() {
                    Ok(c) => {
                        let pid = c.id();
                        tracing::info!(child = %spec.name, pid, "restarted");
                        state.send_modify(|s| {
                            s.pid = pid;
                            s.starts += 1;
                        });
                        c
                    }
                    Err(e) => {
                        tracing::warn!(child = %spec.name, error = %e, retry_in = ?delay, "restart failed");
                        continue;
                    }
                }
            }
        };
        let started = Instant::now();
        tokio::select! {
            status = running.wait() => {
                let ran = started.elapsed();
                if ran >= spec.backoff.reset_after {
                    delay = spec.backoff.initial;
                }
                let exit = describe(status);
                tracing::warn!(child = %spec.name, exit = %exit, ran = ?ran, restart_in = ?delay, "exited; restarting");
                state.send_modify(|s| {
                    s.pid = None;
                    s.last_exit = Some(exit);
                });
            }
            _ = stopped(&mut stop) => {
                let exit = terminate(&spec, &mut running).await;
                state.send_modify(|s| {
                    s.pid = None;
                    s.last_exit = Some(exit);
                });
                break;
            }
        }
    }
    state.send_modify(|s| {
        s.pid = None;
        s.stopped = true;
    });
}

/// Resolves once stop was asked (or every sender is gone, which also means stop).
///
/// # Cancel safety
/// Cancel-safe: it only reads the watch channel.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// SIGTERM, wait up to the stop timeout, then SIGKILL. The child is not reaped before this
/// returns, so its PID still names it when we signal it.
async fn terminate(spec: &ChildSpec, child: &mut Child) -> String {
    if let Some(pid) = child.id() {
        let pid = Pid::from_raw(pid as i32);
        tracing::info!(child = %spec.name, %pid, "stopping (SIGTERM)");
        let _ = kill(pid, Signal::SIGTERM);
        if let Ok(status) = tokio::time::timeout(spec.stop_timeout, child.wait()).await {
            return describe(status);
        }
        tracing::warn!(child = %spec.name, %pid, timeout = ?spec.stop_timeout, "did not stop in time; SIGKILL");
    }
    let _ = child.start_kill();
    describe(child.wait().await)
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> ChildSpec {
        let mut s = ChildSpec::new("sh", "/bin/sh", dir.join("sh.log")).args(["-c", script]);
        s.stop_timeout = Duration::from_secs(2);
        s.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(200),
            reset_after: Duration::from_secs(60),
        };
        s
    }

    async fn wait_for(rx: &mut watch::Receiver<State>, f: impl Fn(&State) -> bool) -> State {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| f(s)))
            .await
            .expect("state reached in time")
            .expect("supervisor alive")
            .clone()
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
        };
        assert_eq!(b.next(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(b.next(Duration::from_secs(4)), Duration::from_secs(5));
        assert_eq!(b.next(Duration::ZERO), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn restarts_a_dead_child_and_logs_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = Supervisor::start(spec(dir.path(), "echo run; exit 3")).unwrap();
        let mut rx = s.subscribe();
        let st = wait_for(&mut rx, |s| s.starts >= 4).await;
        assert!(st.last_exit.unwrap().contains('3'));
        s.stop().await.unwrap();
        let log = std::fs::read_to_string(dir.path().join("sh.log")).unwrap();
        // The fourth run may not have written yet; three ran to their end.
        assert!(log.matches("run").count() >= 3, "{log}");
    }

    #[tokio::test]
    async fn stop_terms_then_kills() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores SIGTERM, so only SIGKILL ends it.
        let mut sp = spec(
            dir.path(),
            "trap '' TERM; echo up; while :; do sleep 0.05; done",
        );
        sp.stop_timeout = Duration::from_millis(300);
        let s = Supervisor::start(sp).unwrap();
        let pid = s.pid().unwrap();
        let mut rx = s.subscribe();
        // Only once the trap is set: a SIGTERM before it would end the shell at once.
        let log = dir.path().join("sh.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("up")
        {
            assert!(Instant::now() < deadline, "child never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        s.stop().await.unwrap();
        let st = wait_for(&mut rx, |s| s.stopped).await;
        assert!(st.last_exit.unwrap().contains("SIGKILL"));
        assert!(kill(Pid::from_raw(pid as i32), None).is_err(), "child gone");
    }

    #[tokio::test]
    async fn missing_program_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let sp = ChildSpec::new("nope", "/nonexistent/program", dir.path().join("x.log"));
        assert!(matches!(Supervisor::start(sp), Err(Error::Spawn { .. })));
    }
}
