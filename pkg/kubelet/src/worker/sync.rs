//! One pod's sync, upstream's `SyncPod` / `SyncTerminatingPod`: read what containerd has,
//! decide with [`compute_pod_actions`], act (volumes, sandbox, image, init containers,
//! containers, kills), then write the status the result implies.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_cri::api::{self, ContainerState};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::Api;
use serde_json::json;
use tokio::sync::{watch, Notify};

use super::events::{Part, Recorder, NORMAL, WARNING};
use super::relist::runtime_pod;
use super::{Context, Desired, Error};
use crate::backoff::{wall_clock_now, Backoff};
use crate::lifecycle;
use crate::pod::actions::{
    backoff_event_message, compute_pod_actions, container_backoff, image_backoff_key,
    image_decision, image_pull_backoff, record_pull_failure, termination_grace_period,
    ImageDecision,
};
use crate::pod::container::{container_config, create_termination_log, ContainerInputs};
use crate::pod::env::{make_environment, EnvContext};
use crate::pod::hosts::{host_network_hosts_file, pod_hosts_file};
use crate::pod::mounts::volume_mounts;
use crate::pod::runtime::{self as rt_helpers, container_name, restart_count, RuntimePod};
use crate::pod::sandbox::{hostname_and_domain, log_directory, sandbox_config};
use crate::pod::security::ImageUser;
use crate::pod::status::{pod_status, StatusInputs, WaitingReason, ERR_IMAGE_PULL};
use crate::volume::MountedVolume;

/// How soon a pod is synced again when nothing wakes it earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Periodic resync (upstream: once a minute; the PLEG wakes us on any change).
    Resync(Duration),
    /// The pod is gone from the API and from the node: the worker ends.
    Finished,
}

/// A pod's resync period when it is steady.
pub const RESYNC: Duration = Duration::from_secs(10);
/// A pod's resync period while it waits out a backoff or a failed step.
pub const RETRY: Duration = Duration::from_secs(1);

/// Wall time per step of one sync, summed by step name, for the `synced` debug line: where
/// a pod's startup goes (CRI calls, volumes, API writes) without a profiler.
struct StepTimer {
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StepTimer {
    fn new() -> Self {
        StepTimer {
            last: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Charges the time since the previous step to `name`.
    fn step(&mut self, name: &'static str) {
        let now = Instant::now();
        let took = now - self.last;
        self.last = now;
        match self.steps.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += took,
            None => self.steps.push((name, took)),
        }
    }
}

impl std::fmt::Display for StepTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={}ms", d.as_millis())?;
        }
        Ok(())
    }
}

/// The per-pod state a worker keeps between syncs (upstream's reason cache and backoffs).
pub struct PodState {
    pub(super) backoff: Backoff,
    pub(super) reasons: HashMap<String, WaitingReason>,
    /// The last failed pull's `ErrImagePull: <error>` per image backoff key (upstream's
    /// `prevPullErrMsg`), shown in the ImagePullBackOff message.
    pub(super) pull_errors: HashMap<String, String>,
    /// The shortest backoff a container of this sync still waits out: the next sync comes
    /// then (at most [`RESYNC`] later), not every [`RETRY`], so a crash loop or a failed
    /// pull posts a BackOff event about every 10 s, as upstream's pod workers do.
    pub(super) backoff_wait: Option<Duration>,
    pub(super) events: Recorder,
    /// The status last written, to skip writes that change nothing.
    pub(super) last_status: Option<serde_json::Value>,
    /// The pod object was deleted (grace 0) after its containers stopped.
    pub(super) deleted: bool,
    /// Wakes this pod's worker (probe verdict changes use it).
    pub(super) wake: Arc<Notify>,
    /// What the worker is asked to do (a deletion's grace period may shrink while it stops
    /// the pod).
    pub(super) desired: watch::Receiver<Desired>,
}

impl PodState {
    /// Notes a container waiting out a backoff for `wait` more (the sync's shortest wins).
    fn wait_backoff(&mut self, wait: Duration) {
        self.backoff_wait = Some(self.backoff_wait.map_or(wait, |w| w.min(wait)));
    }
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn cri_err(e: distro_cri::Error) -> Error {
    Error::Cri(Box::new(e))
}

/// `spec.containers` or `spec.initContainers`, by kind.
fn part(c: &Container, init: bool) -> Part<'_> {
    if init {
        Part::InitContainer(&c.name)
    } else {
        Part::Container(&c.name)
    }
}

impl PodState {
    /// Syncs a pod that exists in the API.
    ///
    /// # Errors
    /// CRI or API failures the caller retries; failures of one container are recorded as
    /// its waiting reason and Events instead.
    pub async fn sync(&mut self, ctx: &Context, pod: &Pod) -> Result<Next, Error> {
        let mut timer = StepTimer::new();
        let rt = runtime_pod(&ctx.cri, uid(pod)).await.map_err(cri_err)?;
        timer.step("runtime");
        if pod.metadata.deletion_timestamp.is_some() {
            if !self.deleted {
                self.stop_deleted_pod(ctx, pod, rt).await?;
                ctx.volumes.teardown(uid(pod)).await?;
                self.delete_object(ctx, pod).await?;
                self.deleted = true;
            }
            return Ok(Next::Resync(RESYNC));
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            // Terminal: nothing runs again; stop what may still run, keep it for logs. An
            // evicted pod stops with the eviction's grace period.
            match ctx.eviction_grace.get(uid(pod)) {
                Some(grace) => {
                    let mut evicted = pod.clone();
                    if let Some(spec) = evicted.spec.as_mut() {
                        spec.termination_grace_period_seconds = Some(grace);
                    }
                    self.kill_pod(ctx, &evicted, &rt, false).await?;
                }
                None => self.kill_pod(ctx, pod, &rt, false).await?,
            }
            // Its probe workers see the terminal phase and end.
            ctx.prober
                .observe(pod, &rt, primary_pod_ip(ctx, pod, &rt), &self.wake);
            return Ok(Next::Resync(RESYNC));
        }

        let volumes = match ctx.volumes.setup(pod, &ctx.caches).await {
            Ok(v) => v,
            Err(e) => {
                self.events
                    .record(pod, Part::Pod, WARNING, "FailedMount", e.to_string())
                    .await;
                self.write_status(ctx, pod, &rt).await?;
                return Ok(Next::Resync(RETRY));
            }
        };

        timer.step("volumes");
        let actions = compute_pod_actions(pod, &rt, &ctx.prober.failures(pod, &rt));
        tracing::debug!(pod = %crate::pod::format_pod(pod), ?actions, "sync");
        if actions.kill_pod {
            self.kill_pod(ctx, pod, &rt, false).await?;
        }
        for k in &actions.containers_to_kill {
            let c = find_container(pod, &k.name);
            let grace = c.map_or(crate::pod::actions::MIN_GRACE_PERIOD_SECONDS, |(c, _)| {
                termination_grace_period(pod, c, Some(k.reason))
            });
            self.kill_container(ctx, pod, &rt, &k.name, &k.id, grace, k.message.clone())
                .await?;
        }

        let mut retry = false;
        self.backoff_wait = None;
        let mut rt = rt;
        let mut sandbox_id = actions.sandbox_id.clone();
        let (sb_config, dns_warnings) = match sandbox_config(pod, actions.attempt, &ctx.sandbox) {
            Ok(c) => c,
            Err(e) => {
                self.events
                    .record(
                        pod,
                        Part::Pod,
                        WARNING,
                        "FailedCreatePodSandBox",
                        e.to_string(),
                    )
                    .await;
                self.write_status(ctx, pod, &rt).await?;
                return Ok(Next::Resync(RETRY));
            }
        };
        if actions.create_sandbox {
            self.remove_empty_sandboxes(ctx, &rt).await?;
            for w in &dns_warnings {
                self.events
                    .record(pod, Part::Pod, WARNING, w.reason(), w.to_string())
                    .await;
            }
            if actions.attempt > 0 {
                self.events
                    .record(
                        pod,
                        Part::Pod,
                        NORMAL,
                        "SandboxChanged",
                        "Pod sandbox changed, it will be killed and re-created.".into(),
                    )
                    .await;
            }
            let dir = PathBuf::from(&sb_config.log_directory);
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|source| Error::Io { path: dir, source })?;
            match ctx.cri.run_pod_sandbox(sb_config.clone()).await {
                Ok(id) => sandbox_id = Some(id),
                Err(e) => {
                    self.events
                        .record(
                            pod,
                            Part::Pod,
                            WARNING,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {e}"),
                        )
                        .await;
                    self.write_status(ctx, pod, &rt).await?;
                    return Ok(Next::Resync(RETRY));
                }
            }
            timer.step("sandbox");
            rt = runtime_pod(&ctx.cri, uid(pod)).await.map_err(cri_err)?;
            timer.step("runtime");
        }

        let start_any = actions.next_init_container.is_some()
            || !actions.sidecars_to_start.is_empty()
            || !actions.containers_to_start.is_empty()
            || !actions.ephemeral_to_start.is_empty();
        if let (Some(sb), true) = (sandbox_id.as_deref(), start_any) {
            let spec = pod.spec.clone().unwrap_or_default();
            let inits = spec.init_containers.clone().unwrap_or_default();
            let hosts = self.hosts_file(ctx, pod, &rt).await?;
            timer.step("hosts");
            let mut todo: Vec<(&Container, bool)> = Vec::new();
            if let Some(i) = actions.next_init_container {
                todo.extend(inits.get(i).map(|c| (c, true)));
            }
            todo.extend(
                actions
                    .sidecars_to_start
                    .iter()
                    .filter_map(|i| inits.get(*i).map(|c| (c, true))),
            );
            todo.extend(
                actions
                    .containers_to_start
                    .iter()
                    .filter_map(|i| spec.containers.get(*i).map(|c| (c, false))),
            );
            let ephemeral = crate::pod::actions::ephemeral_containers(pod);
            todo.extend(
                actions
                    .ephemeral_to_start
                    .iter()
                    .filter_map(|i| ephemeral.get(*i).map(|c| (c, false))),
            );
            for (c, init) in todo {
                let started = self
                    .start_container(ctx, pod, c, init, sb, &sb_config, &rt, &volumes, &hosts)
                    .await?;
                retry |= !started;
            }
            timer.step("containers");
            rt = runtime_pod(&ctx.cri, uid(pod)).await.map_err(cri_err)?;
            timer.step("runtime");
        }
        self.write_status(ctx, pod, &rt).await?;
        timer.step("status");
        remove_dead_attempts(ctx, pod, &rt).await;
        tracing::debug!(pod = %crate::pod::format_pod(pod), steps = %timer, "synced");
        let retry_in = match self.backoff_wait.take() {
            Some(wait) => wait.clamp(RETRY, RESYNC),
            None => RETRY,
        };
        Ok(Next::Resync(if retry { retry_in } else { RESYNC }))
    }

    /// A pod that is gone from the API (deleted with grace 0 elsewhere, or orphaned across a
    /// restart): stop and remove everything it has on the node.
    ///
    /// # Errors
    /// CRI or volume failures; the caller retries.
    pub async fn cleanup(&mut self, ctx: &Context, pod: &Pod) -> Result<Next, Error> {
        let rt = runtime_pod(&ctx.cri, uid(pod)).await.map_err(cri_err)?;
        self.kill_pod(ctx, pod, &rt, true).await?;
        ctx.volumes.teardown(uid(pod)).await?;
        ctx.volumes.tokens().forget_pod(uid(pod));
        ctx.prober.remove_pod(pod, &rt);
        Ok(Next::Finished)
    }

    /// Stops a deleted pod's containers and sandboxes. A second deletion with a shorter grace
    /// period (`kubectl delete --grace-period=1` after a plain delete) cuts the stop short
    /// and starts it over with the shorter one, as upstream's pod workers do.
    async fn stop_deleted_pod(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        rt: RuntimePod,
    ) -> Result<(), Error> {
        let grace_of = |p: &Pod| p.metadata.deletion_grace_period_seconds.unwrap_or(i64::MAX);
        let mut pod = pod.clone();
        let mut rt = rt;
        let mut desired = self.desired.clone();
        loop {
            let current = grace_of(&pod);
            let shortened = async {
                while desired.changed().await.is_ok() {
                    // A forced deletion (the object gone) counts as the shortest grace.
                    let (Desired::Run(p) | Desired::Gone(p)) = &*desired.borrow_and_update();
                    if p.metadata.uid == pod.metadata.uid && grace_of(p) < current {
                        return (**p).clone();
                    }
                }
                std::future::pending().await
            };
            // Cancel safety: dropping the stop abandons its CRI calls; the next round
            // issues StopContainer again, which containerd honours with the new timeout.
            let shorter = tokio::select! {
                r = self.kill_pod(ctx, &pod, &rt, true) => return r,
                p = shortened => p,
            };
            tracing::debug!(pod = %crate::pod::format_pod(&shorter), "grace period shortened; stopping again");
            pod = shorter;
            rt = runtime_pod(&ctx.cri, uid(&pod)).await.map_err(cri_err)?;
        }
    }

    /// Stops every running container (each with its grace period, in parallel) and every
    /// sandbox; with `remove`, removes the sandboxes and their containers too.
    async fn kill_pod(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        rt: &RuntimePod,
        remove: bool,
    ) -> Result<(), Error> {
        let running: Vec<&api::ContainerStatus> = rt
            .containers
            .iter()
            .filter(|c| {
                matches!(
                    rt_helpers::state(c),
                    ContainerState::ContainerRunning | ContainerState::ContainerUnknown
                )
            })
            .collect();
        let pod_ip = primary_pod_ip(ctx, pod, rt);
        let mut stops = Vec::new();
        for c in &running {
            let name = container_name(c).to_string();
            let found = find_container(pod, &name);
            // Upstream's pod workers give a stopping pod at least 1 s (even a forced
            // deletion's 0), so a preStop hook still gets its chance.
            let grace = found
                .map_or(
                    crate::pod::actions::MIN_GRACE_PERIOD_SECONDS,
                    |(spec, _)| termination_grace_period(pod, spec, None),
                )
                .max(1);
            let part = found.map_or(Part::Container(&name), |(spec, init)| part(spec, init));
            self.events
                .record(
                    pod,
                    part,
                    NORMAL,
                    "Killing",
                    format!("Stopping container {name}"),
                )
                .await;
            let (cri, id, pod_ip) = (&ctx.cri, c.id.clone(), pod_ip.as_deref());
            stops.push(async move {
                let spec = found.map(|(s, _)| s);
                let (hook, r) = lifecycle::kill_container(cri, pod, spec, &id, grace, pod_ip).await;
                (name, found.is_some_and(|(_, init)| init), hook, r)
            });
        }
        // Every container stops at once, each within its own grace period (upstream).
        let mut failed = None;
        for (name, init, hook, r) in futures::future::join_all(stops).await {
            if let Some(msg) = hook {
                let part = if init {
                    Part::InitContainer(&name)
                } else {
                    Part::Container(&name)
                };
                self.events
                    .record(pod, part, WARNING, "FailedPreStopHook", msg)
                    .await;
            }
            if let Err(e) = r {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(cri_err(e));
        }
        for sb in &rt.sandboxes {
            if sb.state == api::PodSandboxState::SandboxReady as i32 {
                ctx.cri.stop_pod_sandbox(&sb.id).await.map_err(cri_err)?;
            }
            if remove {
                ctx.cri.remove_pod_sandbox(&sb.id).await.map_err(cri_err)?;
            }
        }
        Ok(())
    }

    /// Removes the pod's stopped sandboxes that hold no containers (e.g. those whose network
    /// setup failed), so retries do not pile up sandboxes and network namespaces. Sandboxes
    /// with containers stay: their exited containers carry the restart history.
    async fn remove_empty_sandboxes(&self, ctx: &Context, rt: &RuntimePod) -> Result<(), Error> {
        for sb in &rt.sandboxes {
            if sb.state == api::PodSandboxState::SandboxReady as i32 {
                continue;
            }
            let containers = ctx
                .cri
                .runtime()
                .list_containers(api::ListContainersRequest {
                    filter: Some(api::ContainerFilter {
                        pod_sandbox_id: sb.id.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .map_err(|source| {
                    cri_err(distro_cri::Error::Rpc {
                        op: "ListContainers",
                        source,
                    })
                })?
                .into_inner()
                .containers;
            if containers.is_empty() {
                ctx.cri.remove_pod_sandbox(&sb.id).await.map_err(cri_err)?;
            }
        }
        Ok(())
    }

    /// Deletes the pod object for good (grace 0, this incarnation only), as upstream's status
    /// manager does once the pod's containers are gone.
    async fn delete_object(&mut self, ctx: &Context, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::Api(Box::new(e))),
        }
    }

    /// The pod's managed `/etc/hosts`, written under its directory.
    async fn hosts_file(
        &self,
        ctx: &Context,
        pod: &Pod,
        rt: &RuntimePod,
    ) -> Result<Option<PathBuf>, Error> {
        let spec = pod.spec.clone().unwrap_or_default();
        let aliases = spec.host_aliases.clone().unwrap_or_default();
        let text = if spec.host_network.unwrap_or(false) {
            let node_hosts = tokio::fs::read_to_string("/etc/hosts")
                .await
                .unwrap_or_default();
            host_network_hosts_file(&node_hosts, &aliases)
        } else {
            let Ok((hostname, domain)) = hostname_and_domain(pod, &ctx.sandbox.cluster_dns.domain)
            else {
                return Ok(None);
            };
            pod_hosts_file(&rt.pod_ips(), &hostname, domain.as_deref(), &aliases)
        };
        let dir = ctx.pod_dir(uid(pod));
        let path = dir.join("etc-hosts");
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        tokio::fs::write(&path, text).await.map_err(io(&path))?;
        Ok(Some(path))
    }

    /// Starts one container (upstream `startContainer` with its backoff and image steps).
    /// Returns whether it was started; when not, its waiting reason and Events say why.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        c: &Container,
        init: bool,
        sandbox_id: &str,
        sb_config: &api::PodSandboxConfig,
        rt: &RuntimePod,
        volumes: &[MountedVolume],
        hosts: &Option<PathBuf>,
    ) -> Result<bool, Error> {
        let mut timer = StepTimer::new();
        let now = wall_clock_now();
        if let Some((msg, wait)) = container_backoff(&mut self.backoff, pod, c, rt, now) {
            self.wait_backoff(wait);
            self.events
                .record(
                    pod,
                    part(c, init),
                    WARNING,
                    "BackOff",
                    backoff_event_message(pod, &c.name),
                )
                .await;
            self.reasons
                .insert(c.name.clone(), WaitingReason::crash_loop(msg));
            return Ok(false);
        }
        let Some((image_ref, image_user)) = self.ensure_image(ctx, pod, c, init, sb_config).await?
        else {
            return Ok(false);
        };

        timer.step("image");
        let restart = rt.latest(&c.name).map_or(0, |s| restart_count(s) + 1);
        let restart = u32::try_from(restart).unwrap_or(0);
        let pod_dir = ctx.pod_dir(uid(pod));
        let name = c.name.clone();
        let termination_log =
            tokio::task::spawn_blocking(move || create_termination_log(&pod_dir, &name, restart))
                .await
                .map_err(Error::Task)?
                .map_err(|source| Error::Io {
                    path: ctx.pod_dir(uid(pod)),
                    source,
                })?;
        let made = {
            // No await in here: the environment context borrows non-Send caches.
            let pod_ips = rt.pod_ips();
            let host_ips = ctx.host_ips.borrow().clone();
            let services = ctx.caches.services();
            let allocatable = ctx.caches.allocatable();
            let env_ctx = EnvContext {
                objects: &ctx.caches,
                services: &services,
                pod_ips: &pod_ips,
                host_ips: &host_ips,
                node_allocatable: &allocatable,
            };
            make_environment(pod, c, &env_ctx)
                .and_then(|env| volume_mounts(c, volumes, &env.vars))
                .and_then(|mounts| {
                    let inputs = ContainerInputs {
                        restart_count: restart,
                        image_ref,
                        image_user,
                        volume_mounts: mounts,
                        hosts_file: hosts.clone(),
                        termination_log: Some(termination_log),
                    };
                    container_config(pod, c, &inputs, &env_ctx, &ctx.container)
                })
        };
        let config = match made {
            Ok((config, warnings)) => {
                for w in warnings {
                    self.events
                        .record(pod, part(c, init), WARNING, "Warning", w)
                        .await;
                }
                config
            }
            Err(e) => return self.config_error(pod, c, init, &e).await,
        };
        let mut config = config;
        // `kubectl debug --target`: share the target container's process namespace.
        if let Some(target) = crate::pod::actions::ephemeral_target(pod, &c.name) {
            let running = rt
                .latest(target)
                .filter(|s| rt_helpers::state(s) == ContainerState::ContainerRunning);
            if let Some(t) = running {
                let sc = config
                    .linux
                    .get_or_insert_with(Default::default)
                    .security_context
                    .get_or_insert_with(Default::default);
                let ns = sc.namespace_options.get_or_insert_with(Default::default);
                ns.pid = api::NamespaceMode::Target as i32;
                ns.target_id = t.id.clone();
            }
        }
        timer.step("config");
        let id = match ctx
            .cri
            .create_container(sandbox_id, config, sb_config.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                let msg = e.to_string();
                self.events
                    .record(
                        pod,
                        part(c, init),
                        WARNING,
                        "Failed",
                        format!("Error: {msg}"),
                    )
                    .await;
                self.reasons.insert(
                    c.name.clone(),
                    WaitingReason {
                        reason: "CreateContainerError".into(),
                        message: msg,
                    },
                );
                return Ok(false);
            }
        };
        timer.step("create");
        self.events
            .record(
                pod,
                part(c, init),
                NORMAL,
                "Created",
                format!("Created container {}", c.name),
            )
            .await;
        timer.step("event");
        let started = ctx.cri.start_container(&id).await;
        timer.step("start");
        if let Err(e) = started {
            let msg = e.to_string();
            self.events
                .record(
                    pod,
                    part(c, init),
                    WARNING,
                    "Failed",
                    format!("Error: {msg}"),
                )
                .await;
            self.reasons
                .insert(c.name.clone(), WaitingReason::run_error(msg));
            return Ok(false);
        }
        self.events
            .record(
                pod,
                part(c, init),
                NORMAL,
                "Started",
                format!("Started container {}", c.name),
            )
            .await;
        timer.step("event");
        tracing::debug!(pod = %crate::pod::format_pod(pod), container = %c.name, steps = %timer, "container started");
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let pod_ip = primary_pod_ip(ctx, pod, rt);
            let ran =
                lifecycle::run_handler(&ctx.cri, pod, c, &id, hook, pod_ip.as_deref(), None).await;
            if let Err(msg) = ran {
                // Upstream: the container is killed and restarted per the pod's policy.
                self.events
                    .record(
                        pod,
                        part(c, init),
                        WARNING,
                        "FailedPostStartHook",
                        msg.clone(),
                    )
                    .await;
                let grace = termination_grace_period(pod, c, None);
                self.kill_container(
                    ctx,
                    pod,
                    rt,
                    &c.name,
                    &id,
                    grace,
                    "FailedPostStartHook".into(),
                )
                .await?;
                self.reasons.insert(
                    c.name.clone(),
                    WaitingReason {
                        reason: "PostStartHookError".into(),
                        message: msg,
                    },
                );
                return Ok(false);
            }
        }
        self.reasons.remove(&c.name);
        Ok(true)
    }

    /// Upstream `killContainer` for one container: the Killing Event with `message`, its
    /// preStop hook, then SIGTERM and SIGKILL after what is left of `grace`.
    #[allow(clippy::too_many_arguments)]
    async fn kill_container(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        rt: &RuntimePod,
        name: &str,
        id: &str,
        grace: i64,
        message: String,
    ) -> Result<(), Error> {
        let found = find_container(pod, name);
        let part = found.map_or(Part::Container(name), |(c, init)| part(c, init));
        self.events
            .record(pod, part, NORMAL, "Killing", message)
            .await;
        let pod_ip = primary_pod_ip(ctx, pod, rt);
        let spec = found.map(|(c, _)| c);
        let (hook, stopped) =
            lifecycle::kill_container(&ctx.cri, pod, spec, id, grace, pod_ip.as_deref()).await;
        if let Some(msg) = hook {
            self.events
                .record(pod, part, WARNING, "FailedPreStopHook", msg)
                .await;
        }
        stopped.map_err(cri_err)
    }

    async fn config_error(
        &mut self,
        pod: &Pod,
        c: &Container,
        init: bool,
        e: &crate::pod::ConfigError,
    ) -> Result<bool, Error> {
        self.events
            .record(pod, part(c, init), WARNING, "Failed", format!("Error: {e}"))
            .await;
        self.reasons
            .insert(c.name.clone(), WaitingReason::config_error(e));
        Ok(false)
    }

    /// Upstream `EnsureImageExists`: the image's ID and user, pulling per `imagePullPolicy`
    /// with backoff; `None` when the container cannot start yet (reason and Events recorded).
    async fn ensure_image(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        c: &Container,
        init: bool,
        sb_config: &api::PodSandboxConfig,
    ) -> Result<Option<(String, ImageUser)>, Error> {
        let image = c.image.clone().unwrap_or_default();
        let present = ctx.cri.image_status(&image).await.map_err(cri_err)?;
        match image_decision(c, present.is_some()) {
            ImageDecision::NeverPull(msg) => {
                self.events
                    .record(
                        pod,
                        part(c, init),
                        WARNING,
                        "ErrImageNeverPull",
                        msg.clone(),
                    )
                    .await;
                self.events
                    .record(
                        pod,
                        part(c, init),
                        WARNING,
                        "Failed",
                        "Error: ErrImageNeverPull".into(),
                    )
                    .await;
                self.reasons.insert(
                    c.name.clone(),
                    WaitingReason {
                        reason: crate::pod::status::ERR_IMAGE_NEVER_PULL.into(),
                        message: msg,
                    },
                );
                return Ok(None);
            }
            ImageDecision::Present(msg) => {
                self.events
                    .record(pod, part(c, init), NORMAL, "Pulled", msg)
                    .await;
            }
            ImageDecision::Pull => {
                let now = wall_clock_now();
                let key = image_backoff_key(pod, &image);
                if let Some(msg) = image_pull_backoff(&self.backoff, pod, &image, now) {
                    self.wait_backoff(self.backoff.remaining_since_update(&key, now));
                    self.events
                        .record(pod, part(c, init), NORMAL, "BackOff", msg.clone())
                        .await;
                    // As upstream's startContainer: every failed EnsureImageExists is also
                    // a `Failed` event naming the reason.
                    self.events
                        .record(
                            pod,
                            part(c, init),
                            WARNING,
                            "Failed",
                            "Error: ImagePullBackOff".into(),
                        )
                        .await;
                    // Since kubelet 1.32 the waiting message carries the last pull error.
                    let msg = match self.pull_errors.get(&key) {
                        Some(prev) => format!("{msg}: {prev}"),
                        None => msg,
                    };
                    self.reasons
                        .insert(c.name.clone(), WaitingReason::image_pull_backoff(msg));
                    return Ok(None);
                }
                // A fresh attempt: the last error is no longer news (upstream deletes it too).
                self.pull_errors.remove(&key);
                self.events
                    .record(
                        pod,
                        part(c, init),
                        NORMAL,
                        "Pulling",
                        format!("Pulling image {image:?}"),
                    )
                    .await;
                let secrets = crate::images::pull::PullSecrets::for_pod(pod, |ns, name| {
                    ctx.caches.secrets.get(ns, name)
                });
                if let Some(msg) = secrets.missing_message() {
                    self.events
                        .record(
                            pod,
                            Part::Pod,
                            WARNING,
                            "FailedToRetrieveImagePullSecret",
                            msg,
                        )
                        .await;
                }
                let began = Instant::now();
                let pulled = crate::images::pull::pull(
                    &ctx.cri,
                    &image,
                    &secrets.keyring,
                    Some(sb_config.clone()),
                )
                .await;
                match pulled {
                    Ok(_) => {
                        let took = began.elapsed();
                        let size = ctx.cri.image_status(&image).await.ok().flatten();
                        let msg = crate::images::pull::pulled_message(
                            &image,
                            took,
                            took,
                            size.map(|s| s.size),
                        );
                        self.events
                            .record(pod, part(c, init), NORMAL, "Pulled", msg)
                            .await;
                    }
                    Err(e) => {
                        record_pull_failure(&mut self.backoff, pod, &image, wall_clock_now());
                        // Upstream: the event says which image; the waiting message is the
                        // runtime's error alone, kept for the backoff's message.
                        let err = e.to_string();
                        self.events
                            .record(
                                pod,
                                part(c, init),
                                WARNING,
                                "Failed",
                                format!("Failed to pull image {image:?}: {err}"),
                            )
                            .await;
                        self.pull_errors
                            .insert(key, format!("{ERR_IMAGE_PULL}: {err}"));
                        let msg = err;
                        self.events
                            .record(
                                pod,
                                part(c, init),
                                WARNING,
                                "Failed",
                                "Error: ErrImagePull".into(),
                            )
                            .await;
                        self.reasons
                            .insert(c.name.clone(), WaitingReason::image_pull(msg));
                        return Ok(None);
                    }
                }
            }
        }
        let status = match present {
            Some(s) => Some(s),
            None => ctx.cri.image_status(&image).await.map_err(cri_err)?,
        };
        let Some(status) = status else {
            self.reasons.insert(
                c.name.clone(),
                WaitingReason::image_pull(format!("image {image:?} not found after pull")),
            );
            return Ok(None);
        };
        let user = ImageUser {
            uid: status.uid.map(|u| u.value),
            username: status.username.clone(),
        };
        Ok(Some((status.id, user)))
    }

    /// Builds the status from the runtime's state and writes it with the `status`
    /// subresource when it differs from what the API (or our last write) holds.
    pub(super) async fn write_status(
        &mut self,
        ctx: &Context,
        pod: &Pod,
        rt: &RuntimePod,
    ) -> Result<(), Error> {
        ctx.prober
            .observe(pod, rt, primary_pod_ip(ctx, pod, rt), &self.wake);
        let (readiness, startup) = ctx.prober.status_inputs(rt);
        let log_dir = log_directory(&ctx.sandbox.pod_log_root, pod);
        let messages = termination_messages(rt, log_dir).await;
        let host_ips = ctx.host_ips.borrow().clone();
        let inputs = StatusInputs {
            reasons: &self.reasons,
            readiness: &readiness,
            startup: &startup,
            termination_messages: &messages,
            host_ips: &host_ips,
            pod_is_terminal: pod.metadata.deletion_timestamp.is_some(),
            now: wall_clock_now(),
            runtime_name: "containerd",
        };
        let status = pod_status(pod, rt, &inputs);
        let new = serde_json::to_value(&status).map_err(Error::Json)?;
        let old = pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok());
        // A static pod's `status` is its mirror's (see static_pods), which may be a new
        // object without the status last written.
        let written =
            self.last_status.as_ref() == Some(&new) && !crate::static_pods::is_static(pod);
        if old.as_ref() == Some(&new) || written {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        // A static pod's status goes to its mirror pod (same name, its own uid).
        let body = if crate::static_pods::is_static(pod) {
            json!({"status": new})
        } else {
            json!({"metadata": {"uid": uid(pod)}, "status": new})
        };
        match api
            .patch_status(
                pod.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => {
                self.last_status = Some(new);
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(Error::Api(Box::new(e))),
        }
    }
}

/// Removes the exited containers of `pod` beyond the newest one per container name, and
/// their log files (rotations included), as upstream's container garbage collection with
/// its default `MaxPerPodContainer` of 1: a crash-looping container would otherwise leave
/// one container in containerd and one log file per attempt until the pod is deleted. The
/// newest exited attempt stays, for `lastState` and `kubectl logs --previous`; restart
/// counts live in each container's annotations, so they survive the removal.
///
/// # Guarantees
/// Best effort: a failed removal is logged at debug level and tried again next sync.
async fn remove_dead_attempts(ctx: &Context, pod: &Pod, rt: &RuntimePod) {
    let mut kept: std::collections::HashSet<&str> = std::collections::HashSet::new();
    // Newest first (RuntimePod's order): the first exited attempt of each name is kept.
    for c in &rt.containers {
        if rt_helpers::state(c) != ContainerState::ContainerExited || kept.insert(container_name(c))
        {
            continue;
        }
        if let Err(e) = ctx.cri.remove_container(&c.id).await {
            tracing::debug!(pod = %crate::pod::format_pod(pod), container = %c.id, error = %e, "removing a dead container failed");
            continue;
        }
        tracing::debug!(pod = %crate::pod::format_pod(pod), container = %c.id, "removed a dead container");
        if !c.log_path.is_empty() {
            let log = PathBuf::from(&c.log_path);
            if let Err(e) =
                tokio::task::spawn_blocking(move || crate::log_rotation::remove_all(&log)).await
            {
                tracing::debug!(error = %e, "removing a dead container's logs failed");
            }
        }
    }
}

/// Termination messages of exited containers, read from the files their config mounted.
async fn termination_messages(rt: &RuntimePod, log_dir: PathBuf) -> HashMap<String, String> {
    let exited: Vec<api::ContainerStatus> = rt
        .containers
        .iter()
        .filter(|c| rt_helpers::state(c) == ContainerState::ContainerExited)
        .cloned()
        .collect();
    if exited.is_empty() {
        return HashMap::new();
    }
    tokio::task::spawn_blocking(move || {
        exited
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    crate::pod::status::read_termination_message(c, &log_dir),
                )
            })
            .filter(|(_, m)| !m.is_empty())
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// The pod's primary IP as its status shows it (the node's for hostNetwork pods): where
/// probes and httpGet hooks connect by default.
fn primary_pod_ip(ctx: &Context, pod: &Pod, rt: &RuntimePod) -> Option<String> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        ctx.host_ips.borrow().first().cloned()
    } else {
        rt.pod_ips().into_iter().next()
    }
}

/// The spec of container `name` and whether it is an init container.
fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<(&'a Container, bool)> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == name)
        .map(|c| (c, false))
        .or_else(|| {
            spec.init_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .map(|c| (c, true))
        })
}
