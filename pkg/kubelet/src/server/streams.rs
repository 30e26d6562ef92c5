//! The kubelet API's `/exec/{ns}/{pod}[/{uid}]/{container}`, `/attach/…` and
//! `/portForward/{ns}/{pod}[/{uid}]`, as upstream's kubelet serves them (authorized as
//! `nodes/proxy`): the runtime is asked for a streaming URL through CRI (`Exec`, `Attach`,
//! `PortForward`) and the client's upgrade is served against it by `distro_streaming`
//! (relayed, or translated from WebSocket v5 / tunnelled SPDY).
//!
//! Query parameters are upstream's kubelet ones: `command` (repeated), `input`, `output`,
//! `error`, `tty` (`1` or `true`), and `port` for port-forward.

use distro_cri::{api, Cri};
use distro_streaming::{Kind, StreamOptions};

/// One streaming request, parsed from the path and query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRequest {
    /// Exec, attach or port-forward.
    pub kind: Kind,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The pod's uid, when the path names one.
    pub uid: Option<String>,
    /// The container (exec and attach).
    pub container: String,
    /// The command (exec).
    pub command: Vec<String>,
    /// Which standard streams (exec and attach).
    pub options: StreamOptions,
    /// Ports asked for (port-forward; kubectl names them per stream instead).
    pub ports: Vec<i32>,
}

/// Why a runtime has no stream for a request.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The runtime does not stream (simulated nodes).
    #[error("streaming is not supported by this node's runtime")]
    Unsupported,
    /// No such pod or container here.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The runtime failed.
    #[error("{0}")]
    Runtime(#[from] distro_cri::Error),
}

/// Whether `path` is one of the streaming endpoints.
pub fn is_stream_path(path: &str) -> bool {
    ["/exec/", "/attach/", "/portForward/"]
        .iter()
        .any(|p| path.starts_with(p))
}

fn flag(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true")
}

/// Parses a streaming request.
///
/// # Errors
/// [`StreamError::BadRequest`] for a path of the wrong shape, no command for exec, no
/// stream at all, or a port that is not a number.
pub fn parse(path: &str, query: Option<&str>) -> Result<StreamRequest, StreamError> {
    let bad = |m: &str| StreamError::BadRequest(m.to_string());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (kind, rest) = match segments.split_first() {
        Some((&"exec", rest)) => (Kind::Exec, rest),
        Some((&"attach", rest)) => (Kind::Attach, rest),
        Some((&"portForward", rest)) => (Kind::PortForward, rest),
        _ => return Err(bad("not a streaming path")),
    };
    let (namespace, pod, uid, container) = match (kind, rest) {
        (Kind::PortForward, [ns, pod]) => (*ns, *pod, None, ""),
        (Kind::PortForward, [ns, pod, uid]) => (*ns, *pod, Some(*uid), ""),
        (Kind::Exec | Kind::Attach, [ns, pod, c]) => (*ns, *pod, None, *c),
        (Kind::Exec | Kind::Attach, [ns, pod, uid, c]) => (*ns, *pod, Some(*uid), *c),
        _ => return Err(bad("malformed streaming path")),
    };
    let mut req = StreamRequest {
        kind,
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        uid: uid.map(str::to_string),
        container: container.to_string(),
        command: Vec::new(),
        options: StreamOptions::default(),
        ports: Vec::new(),
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "command" => req.command.push(v.into_owned()),
            "input" | "stdin" => req.options.stdin = flag(&v),
            "output" | "stdout" => req.options.stdout = flag(&v),
            "error" | "stderr" => req.options.stderr = flag(&v),
            "tty" => req.options.tty = flag(&v),
            "port" | "ports" => {
                for p in v.split(',') {
                    req.ports
                        .push(p.trim().parse().map_err(|_| bad("invalid port"))?);
                }
            }
            _ => {}
        }
    }
    // A terminal carries all output on stdout, as upstream's kubelet decides.
    if req.options.tty {
        req.options.stderr = false;
    }
    if kind == Kind::Exec && req.command.is_empty() {
        return Err(bad(
            "you must specify at least one command for the container",
        ));
    }
    let o = req.options;
    if kind != Kind::PortForward && !(o.stdin || o.stdout || o.stderr) {
        return Err(bad("you must specify at least 1 of stdin, stdout, stderr"));
    }
    Ok(req)
}

fn label<'a>(labels: &'a std::collections::HashMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map_or("", String::as_str)
}

/// The streaming URL containerd gives for `req`: the pod's newest running container of
/// that name (exec, attach) or its ready sandbox (port-forward).
///
/// # Errors
/// [`StreamError::NotFound`] with upstream's messages, or the CRI call's error.
pub async fn cri_stream_url(cri: &Cri, req: &StreamRequest) -> Result<String, StreamError> {
    use crate::pod::container::LABEL_CONTAINER_NAME;
    use crate::pod::sandbox::{LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID};
    let ours = |labels: &std::collections::HashMap<String, String>| {
        label(labels, LABEL_POD_NAMESPACE) == req.namespace
            && label(labels, LABEL_POD_NAME) == req.pod
            && req
                .uid
                .as_deref()
                .is_none_or(|u| label(labels, LABEL_POD_UID) == u)
    };
    let mut rt = cri.runtime();
    let rpc = |op: &'static str| move |source| distro_cri::Error::Rpc { op, source };
    if req.kind == Kind::PortForward {
        let sandbox = cri
            .list_pod_sandboxes()
            .await?
            .into_iter()
            .filter(|s| ours(&s.labels) && s.state == api::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| {
                StreamError::NotFound(format!("pod not found (\"{}_{}\")", req.pod, req.namespace))
            })?;
        let r = api::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port: req.ports.clone(),
        };
        return Ok(rt
            .port_forward(r)
            .await
            .map_err(rpc("PortForward"))?
            .into_inner()
            .url);
    }
    let container = cri
        .list_containers()
        .await?
        .into_iter()
        .filter(|c| {
            ours(&c.labels)
                && label(&c.labels, LABEL_CONTAINER_NAME) == req.container
                && c.state == api::ContainerState::ContainerRunning as i32
        })
        .max_by_key(|c| c.created_at)
        .ok_or_else(|| {
            StreamError::NotFound(format!("container not found (\"{}\")", req.container))
        })?;
    let o = req.options;
    let url = if req.kind == Kind::Exec {
        let r = api::ExecRequest {
            container_id: container.id,
            cmd: req.command.clone(),
            tty: o.tty,
            stdin: o.stdin,
            stdout: o.stdout,
            stderr: o.stderr,
        };
        rt.exec(r).await.map_err(rpc("Exec"))?.into_inner().url
    } else {
        let r = api::AttachRequest {
            container_id: container.id,
            stdin: o.stdin,
            tty: o.tty,
            stdout: o.stdout,
            stderr: o.stderr,
        };
        rt.attach(r).await.map_err(rpc("Attach"))?.into_inner().url
    };
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_kubelet_paths() {
        let r = parse(
            "/exec/ns/web/main",
            Some("command=sh&command=-c&command=echo+a%26b&input=1&output=1&error=1"),
        )
        .unwrap();
        assert_eq!(r.kind, Kind::Exec);
        assert_eq!((r.namespace.as_str(), r.pod.as_str()), ("ns", "web"));
        assert_eq!(r.container, "main");
        assert_eq!(r.command, ["sh", "-c", "echo a&b"]);
        assert!(r.options.stdin && r.options.stdout && r.options.stderr && !r.options.tty);

        let r = parse("/attach/ns/web/uid-1/main", Some("output=1&tty=1&error=1")).unwrap();
        assert_eq!(r.uid.as_deref(), Some("uid-1"));
        assert!(r.options.tty && !r.options.stderr, "a TTY has no stderr");

        let r = parse("/portForward/ns/web", Some("port=80&port=8080")).unwrap();
        assert_eq!(r.ports, [80, 8080]);
    }

    #[test]
    fn refuses_what_upstream_refuses() {
        let msg = |p: &str, q: &str| parse(p, Some(q)).unwrap_err().to_string();
        assert_eq!(
            msg("/exec/ns/web/main", "output=1"),
            "you must specify at least one command for the container"
        );
        assert_eq!(
            msg("/exec/ns/web/main", "command=ls"),
            "you must specify at least 1 of stdin, stdout, stderr"
        );
        assert!(parse("/exec/ns/web", None).is_err());
        assert!(parse("/portForward/ns/web", Some("port=http")).is_err());
        assert!(is_stream_path("/portForward/a/b") && !is_stream_path("/pods"));
    }
}
