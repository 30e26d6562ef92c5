//! Container lifecycle hooks and the graceful stop of one container, as upstream's
//! `lifecycle/handlers.go` and `kuberuntime_container.go` (`killContainer`).
//!
//! A postStart hook runs right after the container starts, and the pod worker waits for it;
//! if it fails, the container is killed and restarted per the pod's policy. A preStop hook
//! runs before the container is sent SIGTERM, within the grace period: what it uses is taken
//! off the time CRI `StopContainer` gives the process before SIGKILL (never under 2 s).
//!
//! # Limits
//! - A preStop hook still running when the grace period ends is cancelled (its `ExecSync`
//!   dropped) rather than left to finish in the background.
//! - No HTTPS-to-HTTP fallback for hooks (upstream's `LifecycleHTTPFallback`).

use std::time::Duration;

use distro_cri::Cri;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use tokio::time::Instant;

use crate::pod::actions::grace_after_pre_stop;
use crate::pod::format_pod;
use crate::prober::http;
use crate::prober::probe::{exec_sync, ExecError};

/// Runs one hook in `container_id`, bounded by `timeout` when given. `pod_ip` is the default
/// host of an httpGet hook.
///
/// # Errors
/// Upstream's message for the `FailedPostStartHook`/`FailedPreStopHook` Event.
pub async fn run_handler(
    cri: &Cri,
    pod: &Pod,
    container: &Container,
    container_id: &str,
    handler: &LifecycleHandler,
    pod_ip: Option<&str>,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let work = run_unbounded(cri, pod, container, container_id, handler, pod_ip);
    match timeout {
        None => work.await,
        // Out of time is not a hook failure: the caller goes on with stopping the container.
        Some(t) => tokio::time::timeout(t, work).await.unwrap_or(Ok(())),
    }
}

async fn run_unbounded(
    cri: &Cri,
    pod: &Pod,
    container: &Container,
    container_id: &str,
    handler: &LifecycleHandler,
    pod_ip: Option<&str>,
) -> Result<(), String> {
    let who = format!(
        "for Container {:?} in Pod {:?}",
        container.name,
        format_pod(pod)
    );
    if let Some(exec) = &handler.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        let shown = format!("[{}]", cmd.join(" "));
        let joined = cmd.join(" ");
        let (err, output) = match exec_sync(cri, container_id, cmd, None).await {
            Ok(o) if o.exit_code == 0 => return Ok(()),
            Ok(o) => (
                format!(
                    "command '{joined}' exited with {}: {}",
                    o.exit_code, o.stderr
                ),
                o.combined(),
            ),
            Err(ExecError::TimedOut) => (format!("command {joined:?} timed out"), String::new()),
            Err(ExecError::Runtime(e)) => (e, String::new()),
        };
        return Err(format!(
            "Exec lifecycle hook ({shown}) {who} failed - error: {err}, message: {output:?}"
        ));
    }
    if let Some(action) = &handler.http_get {
        let path = action.path.clone().unwrap_or_default();
        let fail =
            |err: String| format!("HTTP lifecycle hook ({path}) {who} failed - error: {err}");
        let req =
            http::Request::for_action(action, container, pod_ip, "lifecycle").map_err(fail)?;
        // Upstream treats any answer as done: only a failed request fails the hook.
        return http::get(&req, None, true).await.map(|_| ()).map_err(fail);
    }
    if let Some(sleep) = &handler.sleep {
        let secs = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return Ok(());
    }
    // A tcpSocket hook is accepted by the API but never supported: it fails here, as upstream.
    Err(format!("Cannot run handler: invalid handler: {handler:?}"))
}

/// Upstream `killContainer` after its Killing Event: the preStop hook (when `grace > 0`),
/// then CRI `StopContainer` with what is left of `grace` (at least 2 s). Returns the
/// preStop hook's failure message, if it failed, and the stop's result.
pub async fn kill_container(
    cri: &Cri,
    pod: &Pod,
    spec: Option<&Container>,
    container_id: &str,
    grace: i64,
    pod_ip: Option<&str>,
) -> (Option<String>, Result<(), distro_cri::Error>) {
    let mut hook_failure = None;
    let mut used = 0;
    let pre_stop = spec.and_then(|c| Some((c, c.lifecycle.as_ref()?.pre_stop.as_ref()?)));
    if let (Some((c, hook)), true) = (pre_stop, grace > 0) {
        let began = Instant::now();
        let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        hook_failure = run_handler(cri, pod, c, container_id, hook, pod_ip, Some(limit))
            .await
            .err();
        used = i64::try_from(began.elapsed().as_secs()).unwrap_or(i64::MAX);
    }
    let result = cri
        .stop_container(container_id, grace_after_pre_stop(grace, used))
        .await;
    (hook_failure, result)
}
