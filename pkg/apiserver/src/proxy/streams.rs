//! `pods/exec`, `pods/attach` and `pods/portforward` (GET and POST, as upstream's connect
//! subresources): the options are validated and defaulted as upstream's `ExecLocation`,
//! `AttachLocation` and `PortForwardLocation` do, then the request is relayed to the pod's
//! node's kubelet (`/exec/{ns}/{pod}/{container}`, `/attach/…`, `/portForward/{ns}/{pod}`
//! with the kubelet's query names) by [`super::forward`], which joins the upgraded
//! connections byte for byte. Whatever kubectl speaks (SPDY, WebSocket v5, tunnelled SPDY)
//! is understood by the kubelet (`distro_streaming`), so nothing is translated here.

use bytes::Bytes;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;

use super::{forward, pod_container, KubeletProxy};
use crate::error::{Error, Result};
use crate::handler::Body;
use crate::request::ResourceRequest;

/// The query of a connect request, as upstream's `PodExecOptions`/`PodAttachOptions`/
/// `PodPortForwardOptions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// `container`.
    pub container: Option<String>,
    /// `command` (repeated).
    pub command: Vec<String>,
    /// `stdin`.
    pub stdin: bool,
    /// `stdout`.
    pub stdout: bool,
    /// `stderr`.
    pub stderr: bool,
    /// `tty`.
    pub tty: bool,
    /// `ports` (repeated or comma-separated).
    pub ports: Vec<u16>,
}

fn boolean(v: &str) -> bool {
    v == "1" || v.eq_ignore_ascii_case("true")
}

/// Parses the query of a connect request.
///
/// # Errors
/// 400 for a port that is not a number from 1 to 65535.
pub fn parse_options(query: Option<&str>) -> Result<ConnectOptions> {
    let mut o = ConnectOptions::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "container" if !v.is_empty() => o.container = Some(v.into_owned()),
            "command" => o.command.push(v.into_owned()),
            "stdin" => o.stdin = boolean(&v),
            "stdout" => o.stdout = boolean(&v),
            "stderr" => o.stderr = boolean(&v),
            "tty" => o.tty = boolean(&v),
            "ports" | "port" => {
                for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match p.parse::<u16>() {
                        Ok(n) if n > 0 => o.ports.push(n),
                        _ => {
                            return Err(Error::BadRequest(format!(
                                "port {p:?} is not a valid port number"
                            )))
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(o)
}

/// The kubelet path and query for a connect request on `pod`.
///
/// # Errors
/// 400 for a pod without a node, no container to choose, no stream asked for, or no
/// command for exec.
pub fn kubelet_path(pod: &Pod, subresource: &str, o: &ConnectOptions) -> Result<(String, String)> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::BadRequest(format!("pod {name} does not have a host assigned")))?;
    let mut q = form_urlencoded::Serializer::new(String::new());
    let path = if subresource == "portforward" {
        for p in &o.ports {
            q.append_pair("port", &p.to_string());
        }
        format!("/portForward/{ns}/{name}")
    } else {
        let container = pod_container(pod, o.container.as_deref())?;
        if !(o.stdin || o.stdout || o.stderr) {
            return Err(Error::BadRequest(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        if subresource == "exec" {
            if o.command.is_empty() {
                return Err(Error::BadRequest(
                    "you must specify at least one command for the container".into(),
                ));
            }
            for c in &o.command {
                q.append_pair("command", c);
            }
        }
        for (flag, key) in [
            (o.stdin, "input"),
            (o.stdout, "output"),
            (o.stderr, "error"),
            (o.tty, "tty"),
        ] {
            if flag {
                q.append_pair(key, "1");
            }
        }
        format!("/{subresource}/{ns}/{name}/{container}")
    };
    let q = q.finish();
    let path_and_query = if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    };
    Ok((node, path_and_query))
}

impl KubeletProxy {
    /// `pods/<name>/{exec,attach,portforward}`: validated, then relayed to the pod's kubelet.
    pub(super) async fn pod_stream(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
        subresource: &str,
    ) -> Result<Response<Body>> {
        let name = r.name.as_deref().unwrap_or_default();
        let def = self
            .registry
            .get("", "v1", "pods")
            .ok_or(Error::NoSuchResource)?;
        let obj = self.storage.get(&def, r.namespace.as_deref(), name).await?;
        let pod: Pod = serde_json::from_value(obj)
            .map_err(|e| Error::Internal(format!("decoding pod {name}: {e}")))?;
        let options = parse_options(req.uri().query())?;
        let (node, path) = kubelet_path(&pod, subresource, &options)?;
        let addr = self.kubelet(&node).await?;
        forward(&self.tls, addr, req, &path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], init: &[&str]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "nodeName": "n1",
                "containers": containers.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>(),
                "initContainers": init.iter().map(|c| serde_json::json!({"name": c})).collect::<Vec<_>>(),
            }
        }))
        .unwrap()
    }

    #[test]
    fn exec_options_become_the_kubelet_query() {
        let o = parse_options(Some(
            "command=sh&command=-c&command=echo%20hi&container=app&stdin=true&stdout=true&stderr=true&tty=false",
        ))
        .unwrap();
        let (node, path) = kubelet_path(&pod(&["app", "side"], &[]), "exec", &o).unwrap();
        assert_eq!(node, "n1");
        assert_eq!(
            path,
            "/exec/shop/web/app?command=sh&command=-c&command=echo+hi&input=1&output=1&error=1"
        );
        let o = parse_options(Some("stdout=1&tty=1&stdin=1")).unwrap();
        let (_, path) = kubelet_path(&pod(&["app"], &[]), "attach", &o).unwrap();
        assert_eq!(path, "/attach/shop/web/app?input=1&output=1&tty=1");
        let o = parse_options(Some("ports=8080&ports=9090")).unwrap();
        let (_, path) = kubelet_path(&pod(&["app"], &[]), "portforward", &o).unwrap();
        assert_eq!(path, "/portForward/shop/web?port=8080&port=9090");
    }

    #[test]
    fn upstream_messages_for_bad_options() {
        let msg = |p: &Pod, sub: &str, q: &str| {
            kubelet_path(p, sub, &parse_options(Some(q)).unwrap())
                .unwrap_err()
                .to_string()
        };
        assert!(msg(&pod(&["a", "b"], &["i"]), "exec", "command=ls&stdout=true").contains(
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]"
        ));
        assert!(msg(
            &pod(&["a"], &[]),
            "exec",
            "command=ls&container=x&stdout=true"
        )
        .contains("container x is not valid for pod web"));
        assert!(msg(&pod(&["a"], &[]), "exec", "command=ls")
            .contains("you must specify at least 1 of stdin, stdout, stderr"));
        assert!(msg(&pod(&["a"], &[]), "exec", "stdout=true")
            .contains("you must specify at least one command for the container"));
        assert!(parse_options(Some("ports=http")).is_err());
        let mut unbound = pod(&["a"], &[]);
        unbound.spec.as_mut().unwrap().node_name = None;
        assert!(msg(&unbound, "portforward", "").contains("pod web does not have a host assigned"));
    }
}
