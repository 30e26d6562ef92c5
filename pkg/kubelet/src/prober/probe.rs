//! Running one probe: exec through CRI `ExecSync`, httpGet, tcpSocket and grpc from the
//! kubelet, with upstream's verdicts and output texts (they end up in `Unhealthy` Events).

use std::time::Duration;

use distro_cri::api::ExecSyncRequest;
use distro_cri::Cri;
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::http;
use crate::backoff::go_duration;
use crate::pod::expansion::expand;
use crate::pod::format_pod;

/// Upstream retries a probe that errored (not one that failed) this many times.
const MAX_RETRIES: usize = 3;
/// Exec output kept for the Event (upstream `maxReadLength`).
const MAX_OUTPUT: usize = 10 * 1024;
/// Extra time the CRI gets beyond an exec's own timeout to kill the process and answer.
const EXEC_GRACE: Duration = Duration::from_secs(10);

/// One probe's verdict and output (upstream `probe.Result` plus output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Success(String),
    /// Passed with a warning (an HTTP redirect to another host was not followed).
    Warning(String),
    /// Failed: the output says why.
    Failure(String),
    /// Could not be run (no pod IP, bad port, CRI error): the verdict is thrown away.
    Error(String),
}

/// What a probe is run against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The pod (for messages).
    pub pod: &'a Pod,
    /// The probed container's spec (named ports, env for exec expansion).
    pub container: &'a Container,
    /// Its CRI container ID (exec).
    pub container_id: &'a str,
    /// The pod's IP, the default host of network probes.
    pub pod_ip: Option<&'a str>,
    /// `timeoutSeconds`.
    pub timeout: Duration,
}

/// Runs `probe` once (retrying errors as upstream does).
pub async fn run(probe: &Probe, target: &Target<'_>, cri: &Cri) -> Outcome {
    let mut outcome = Outcome::Error("not run".into());
    for _ in 0..MAX_RETRIES {
        outcome = run_once(probe, target, cri).await;
        if !matches!(outcome, Outcome::Error(_)) {
            break;
        }
    }
    outcome
}

async fn run_once(probe: &Probe, t: &Target<'_>, cri: &Cri) -> Outcome {
    if let Some(exec) = &probe.exec {
        let cmd = expand_static(exec.command.as_deref().unwrap_or_default(), t.container);
        return exec_probe(cri, t.container_id, cmd, t.timeout).await;
    }
    if let Some(h) = &probe.http_get {
        let req = match http::Request::for_action(h, t.container, t.pod_ip, "probe") {
            Ok(r) => r,
            Err(e) => return Outcome::Error(e),
        };
        return http_probe(&req, t.timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = match resolve_port(&tcp.port, t.container) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let Some(host) = tcp.host.as_deref().filter(|h| !h.is_empty()).or(t.pod_ip) else {
            return Outcome::Error("the pod has no IP yet".into());
        };
        return tcp_probe(host, port, t.timeout).await;
    }
    if let Some(g) = &probe.grpc {
        let Ok(port) = u16::try_from(g.port) else {
            return Outcome::Error(format!("invalid port number: {}", g.port));
        };
        let Some(host) = t.pod_ip else {
            return Outcome::Error("the pod has no IP yet".into());
        };
        return grpc_probe(host, port, g.service.as_deref().unwrap_or(""), t.timeout).await;
    }
    Outcome::Error(format!(
        "missing probe handler for {}:{}",
        format_pod(t.pod),
        t.container.name
    ))
}

/// Upstream `ExpandContainerCommandOnlyStatic`: `$(VAR)` in an exec probe's command is
/// expanded with the container's literal `env` values only (no valueFrom, no pod env).
pub fn expand_static(cmd: &[String], container: &Container) -> Vec<String> {
    let env: &[EnvVar] = container.env.as_deref().unwrap_or_default();
    cmd.iter()
        .map(|arg| {
            expand(arg, |name| {
                env.iter()
                    .rev()
                    .find(|e| e.name == name)
                    .map(|e| e.value.as_deref().unwrap_or(""))
            })
        })
        .collect()
}

/// Upstream `ResolveContainerPort`: a number, or the name of one of the container's ports.
///
/// # Errors
/// An unknown name or a number outside 1–65535.
pub fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| {
                    format!("couldn't find port: {s} in container {:?}", container.name)
                })?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// `host:port`, bracketing IPv6 literals as Go's `net.JoinHostPort`.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A dial error as Go's net package words it (`connect: connection refused`), since users
/// compare Events with upstream's.
pub fn dial_error(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            let mut chars = text.chars();
            let lower = chars
                .next()
                .map(|c| c.to_lowercase().chain(chars).collect::<String>())
                .unwrap_or_default();
            format!("connect: {lower}")
        }
        None => e.to_string(),
    }
}

/// What an `ExecSync` in a container printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command's exit code.
    pub exit_code: i32,
}

impl ExecOutput {
    /// Standard output then standard error, as upstream reports exec output.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// An `ExecSync` that did not produce an exit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The command ran past its timeout and was killed.
    #[error("the command timed out")]
    TimedOut,
    /// The runtime refused or failed the call (its message).
    #[error("{0}")]
    Runtime(String),
}

/// Runs `cmd` in a container through CRI `ExecSync`. `timeout` bounds the command (the
/// runtime kills it after that); `None` lets it run as long as it takes, as lifecycle hooks do.
///
/// # Errors
/// [`ExecError::TimedOut`] past the timeout, [`ExecError::Runtime`] when the CRI call failed.
pub async fn exec_sync(
    cri: &Cri,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Option<Duration>,
) -> Result<ExecOutput, ExecError> {
    let req = ExecSyncRequest {
        container_id: container_id.to_string(),
        cmd,
        timeout: timeout.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
    };
    let mut client = cri.runtime();
    let call = client.exec_sync(req);
    let resp = match timeout {
        Some(t) => match tokio::time::timeout(t + EXEC_GRACE, call).await {
            Ok(r) => r,
            Err(_) => return Err(ExecError::TimedOut),
        },
        None => call.await,
    };
    match resp {
        Ok(r) => {
            let r = r.into_inner();
            let text = |mut b: Vec<u8>| {
                b.truncate(MAX_OUTPUT);
                String::from_utf8_lossy(&b).into_owned()
            };
            Ok(ExecOutput {
                stdout: text(r.stdout),
                stderr: text(r.stderr),
                exit_code: r.exit_code,
            })
        }
        Err(s) if s.code() == tonic::Code::DeadlineExceeded => Err(ExecError::TimedOut),
        Err(s) => Err(ExecError::Runtime(s.message().to_string())),
    }
}

async fn exec_probe(cri: &Cri, id: &str, cmd: Vec<String>, timeout: Duration) -> Outcome {
    let joined = cmd.join(" ");
    match exec_sync(cri, id, cmd, Some(timeout)).await {
        Ok(o) if o.exit_code == 0 => Outcome::Success(o.combined()),
        Ok(o) => Outcome::Failure(o.combined()),
        Err(ExecError::TimedOut) => Outcome::Failure(format!("command {joined:?} timed out")),
        Err(ExecError::Runtime(e)) => Outcome::Error(e),
    }
}

/// Upstream `DoHTTPProbe`: 2xx passes; a 3xx left unfollowed (another host) passes with a
/// warning; anything else, or no answer within the timeout, fails.
pub async fn http_probe(req: &http::Request, timeout: Duration) -> Outcome {
    match http::get(req, Some(timeout), false).await {
        Err(e) => Outcome::Failure(e),
        Ok(r) if (200..300).contains(&r.status) => Outcome::Success(r.body),
        Ok(r) if (300..400).contains(&r.status) => Outcome::Warning(format!(
            "Probe terminated redirects, Response body: {}",
            r.body
        )),
        // Upstream leaves the body out of the message on purpose (it may hold secrets).
        Ok(r) => Outcome::Failure(format!("HTTP probe failed with statuscode: {}", r.status)),
    }
}

/// Upstream's tcp probe: a connection accepted within the timeout passes.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => Outcome::Success(String::new()),
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {addr}: {}", dial_error(&e))),
        Err(_) => Outcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Upstream's grpc probe: `grpc.health.v1.Health/Check` for `service` must answer SERVING.
pub async fn grpc_probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let addr = join_host_port(host, port);
    let within = go_duration(timeout);
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {addr:?}: {}",
                source_chain(&e)
            ))
        }
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {within}: context deadline exceeded"
            ))
        }
    };
    let mut client = HealthClient::new(channel);
    let req = HealthCheckRequest {
        service: service.to_string(),
    };
    let resp = match tokio::time::timeout(timeout, client.check(req)).await {
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {within}"
            ))
        }
        Ok(Err(s)) => {
            return Outcome::Failure(match s.code() {
                tonic::Code::Unimplemented => format!(
                    "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                    s.message()
                ),
                tonic::Code::DeadlineExceeded => {
                    format!("timeout: health rpc did not complete within {within}")
                }
                code => format!(
                    "error: health rpc probe failed: rpc error: code = {code:?} desc = {}",
                    s.message()
                ),
            })
        }
        Ok(Ok(r)) => r.into_inner(),
    };
    let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        Outcome::Success("service healthy".into())
    } else {
        Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status.as_str_name()
        ))
    }
}

/// An error with its sources, `a: b: c`.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn container() -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            env: Some(vec![
                EnvVar {
                    name: "FILE".into(),
                    value: Some("/tmp/ok".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "FROM".into(),
                    value_from: Some(Default::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn ports_and_static_expansion() {
        let c = container();
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(resolve_port(&IntOrString::String("82".into()), &c), Ok(82));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert!(resolve_port(&IntOrString::String("nope".into()), &c)
            .unwrap_err()
            .contains("couldn't find port: nope"));
        assert_eq!(
            resolve_port(&IntOrString::Int(0), &c),
            Err("invalid port number: 0".into())
        );
        let cmd = expand_static(
            &[
                "cat".into(),
                "$(FILE)".into(),
                "[$(FROM)]".into(),
                "$(NONE)".into(),
            ],
            &c,
        );
        assert_eq!(cmd, ["cat", "/tmp/ok", "[]", "$(NONE)"]);
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
    }

    #[tokio::test]
    async fn tcp_probe_connects_or_says_why_not() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = Duration::from_secs(1);
        assert_eq!(
            tcp_probe("127.0.0.1", port, t).await,
            Outcome::Success(String::new())
        );
        drop(l);
        assert_eq!(
            tcp_probe("127.0.0.1", port, t).await,
            Outcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    /// Serves `responses` (raw HTTP) to successive connections; returns the port and the
    /// requests it read.
    async fn serve(responses: Vec<String>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for r in responses {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                s.write_all(r.as_bytes()).await.unwrap();
                s.shutdown().await.unwrap();
            }
            seen
        });
        (port, task)
    }

    fn response(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    fn get(port: u16, path: &str) -> http::Request {
        let action = k8s_openapi::api::core::v1::HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            http_headers: Some(vec![k8s_openapi::api::core::v1::HTTPHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }]),
            ..Default::default()
        };
        http::Request::for_action(&action, &container(), Some("127.0.0.1"), "probe").unwrap()
    }

    #[tokio::test]
    async fn http_probe_verdicts() {
        let t = Duration::from_secs(2);
        let (port, seen) = serve(vec![
            response("200 OK", "", "fine"),
            response("503 Service Unavailable", "", "secret detail"),
            response("302 Found", "Location: /next\r\n", ""),
            response("204 No Content", "", ""),
            response(
                "301 Moved",
                "Location: http://elsewhere.invalid/\r\n",
                "moved",
            ),
        ])
        .await;
        assert_eq!(
            http_probe(&get(port, "healthz"), t).await,
            Outcome::Success("fine".into())
        );
        assert_eq!(
            http_probe(&get(port, "/healthz"), t).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        assert_eq!(
            http_probe(&get(port, "/a"), t).await,
            Outcome::Success(String::new()),
            "a local redirect is followed"
        );
        assert_eq!(
            http_probe(&get(port, "/b"), t).await,
            Outcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        let seen = seen.await.unwrap();
        assert!(
            seen[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        let lower = seen[0].to_lowercase();
        for h in [
            "user-agent: kube-probe/1.33",
            "accept: */*",
            "x-probe: yes",
            "host: 127.0.0.1:",
        ] {
            assert!(lower.contains(h), "{h} in {lower}");
        }
        assert!(seen[3].starts_with("GET /next HTTP/1.1"), "{}", seen[3]);

        // Refused, and no answer within the timeout.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = l.local_addr().unwrap().port();
        let out = http_probe(&get(silent, "/x"), Duration::from_millis(300)).await;
        assert_eq!(
            out,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{silent}/x\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        drop(l);
        let Outcome::Failure(msg) = http_probe(&get(silent, "/x"), t).await else {
            panic!("refused must fail")
        };
        assert_eq!(
            msg,
            format!("Get \"http://127.0.0.1:{silent}/x\": dial tcp 127.0.0.1:{silent}: connect: connection refused")
        );
    }

    #[tokio::test]
    async fn grpc_probe_checks_the_health_service() {
        use tokio_stream::wrappers::TcpListenerStream;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("ok", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("down", tonic_health::ServingStatus::NotServing)
            .await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), async {
                    let _ = stop_rx.await;
                }),
        );
        let t = Duration::from_secs(2);
        assert_eq!(
            grpc_probe("127.0.0.1", port, "ok", t).await,
            Outcome::Success("service healthy".into())
        );
        assert_eq!(
            grpc_probe("127.0.0.1", port, "down", t).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let Outcome::Failure(msg) = grpc_probe("127.0.0.1", port, "unknown", t).await else {
            panic!("an unknown service fails")
        };
        assert!(msg.contains("code = NotFound"), "{msg}");
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
        let Outcome::Failure(msg) = grpc_probe("127.0.0.1", port, "", t).await else {
            panic!("no server fails")
        };
        assert!(
            msg.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{port}\""
            )),
            "{msg}"
        );
    }
}
