//! `pods/log`: a container's log from the kubelet of the pod's node, as upstream's `LogREST`
//! and `LogLocation`.
//!
//! # Design
//! The options are decoded and validated here as upstream's `PodLogOptions` (422 with the
//! field errors), the container is defaulted when the pod has exactly one (else 400 naming
//! the choices), and the request goes to the kubelet's `/containerLogs/<ns>/<pod>/<container>`
//! through [`super::forward`], so `follow` streams as the kubelet writes. A kubelet error
//! becomes a `Status` as upstream's `GenericHttpResponseChecker` makes it: 400 keeps the
//! kubelet's message (`container "c" in pod "p" is waiting to start: ContainerCreating`),
//! 500 becomes an internal error, other codes a generic response naming `pods/log`.
//!
//! # Limits
//! - `insecureSkipTLSVerifyBackend` is accepted and ignored: the kubelet's certificate is
//!   always verified (it is issued by the cluster CA).
//! - `stream` (split stdout/stderr, alpha upstream) is not passed on.

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::{forward, pod_container, KubeletProxy};
use crate::error::{Error, FieldError, Result};
use crate::handler::Body;
use crate::request::ResourceRequest;

/// How much of a kubelet's error body is read into the `Status` message (upstream: 4 KiB).
const MAX_ERROR_BODY: usize = 4096;

/// Upstream's `PodLogOptions`, decoded from the query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodLogOptions {
    /// `container`.
    pub container: Option<String>,
    /// `follow`.
    pub follow: bool,
    /// `previous`.
    pub previous: bool,
    /// `timestamps`.
    pub timestamps: bool,
    /// `sinceSeconds`.
    pub since_seconds: Option<i64>,
    /// `sinceTime` (RFC3339).
    pub since_time: Option<String>,
    /// `tailLines`.
    pub tail_lines: Option<i64>,
    /// `limitBytes`.
    pub limit_bytes: Option<i64>,
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::BadRequest(format!(
            "{key}: strconv.ParseBool: parsing {v:?}: invalid syntax"
        ))),
    }
}

fn parse_int(key: &str, v: &str) -> Result<i64> {
    v.parse().map_err(|_| {
        Error::BadRequest(format!(
            "{key}: strconv.ParseInt: parsing {v:?}: invalid syntax"
        ))
    })
}

impl PodLogOptions {
    /// Decodes the query (unknown parameters are ignored, as upstream's parameter codec does).
    ///
    /// # Errors
    /// 400 for values that do not parse.
    pub fn from_query(query: Option<&str>) -> Result<PodLogOptions> {
        let mut o = PodLogOptions::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "container" if !v.is_empty() => o.container = Some(v.into_owned()),
                "follow" => o.follow = parse_bool(&k, &v)?,
                "previous" => o.previous = parse_bool(&k, &v)?,
                "timestamps" => o.timestamps = parse_bool(&k, &v)?,
                "sinceSeconds" => o.since_seconds = Some(parse_int(&k, &v)?),
                "sinceTime" => {
                    let t: k8s_openapi::jiff::Timestamp = v.parse().map_err(|e| {
                        Error::BadRequest(format!("sinceTime: parsing time {v:?}: {e}"))
                    })?;
                    // Sent on to the kubelet in RFC3339 seconds, as upstream formats it.
                    o.since_time = Some(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                }
                "tailLines" => o.tail_lines = Some(parse_int(&k, &v)?),
                "limitBytes" => o.limit_bytes = Some(parse_int(&k, &v)?),
                _ => {}
            }
        }
        Ok(o)
    }

    /// Upstream's `ValidatePodLogOptions`.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(t) = self.tail_lines.filter(|t| *t < 0) {
            errs.push(FieldError::invalid(
                "tailLines",
                &json!(t),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = self.limit_bytes.filter(|l| *l < 1) {
            errs.push(FieldError::invalid(
                "limitBytes",
                &json!(l),
                "must be greater than 0",
            ));
        }
        match (self.since_seconds, &self.since_time) {
            (Some(_), Some(_)) => errs.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(s), None) if s < 1 => errs.push(FieldError::invalid(
                "sinceSeconds",
                &json!(s),
                "must be greater than 0",
            )),
            _ => {}
        }
        errs
    }

    /// The kubelet's query, in upstream's parameter order.
    pub fn kubelet_query(&self) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if self.follow {
            q.append_pair("follow", "true");
        }
        if self.previous {
            q.append_pair("previous", "true");
        }
        if self.timestamps {
            q.append_pair("timestamps", "true");
        }
        if let Some(s) = self.since_seconds {
            q.append_pair("sinceSeconds", &s.to_string());
        }
        if let Some(t) = &self.since_time {
            q.append_pair("sinceTime", t);
        }
        if let Some(t) = self.tail_lines {
            q.append_pair("tailLines", &t.to_string());
        }
        if let Some(l) = self.limit_bytes {
            q.append_pair("limitBytes", &l.to_string());
        }
        q.finish()
    }
}

/// The container to read: the named one if the pod has it, else the only one.
///
/// # Errors
/// 400 with upstream's messages: an unknown name, or no name for a pod with several.
pub fn log_container(pod: &Pod, container: Option<&str>) -> Result<String> {
    pod_container(pod, container)
}

/// A kubelet's non-2xx answer as upstream's `GenericHttpResponseChecker` turns it into a
/// `Status`.
pub fn kubelet_error(code: StatusCode, body: &[u8], pod: &str) -> Error {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)])
        .trim_end()
        .to_string();
    match code {
        StatusCode::BAD_REQUEST => Error::BadRequest(text),
        StatusCode::INTERNAL_SERVER_ERROR => {
            Error::Internal(format!("Internal error occurred: {text}"))
        }
        StatusCode::NOT_FOUND => Error::NotFound {
            resource: "pods/log".into(),
            name: pod.to_string(),
        },
        _ => Error::BadRequest(format!(
            "the server responded with the status code {} but did not return more information (get pods/log {pod}): {text}",
            code.as_u16()
        )),
    }
}

impl KubeletProxy {
    /// `GET pods/<name>/log`: the container's log from its node's kubelet.
    pub(super) async fn pod_log(
        &self,
        req: &Request<Bytes>,
        r: &ResourceRequest,
    ) -> Result<Response<Body>> {
        let name = r.name.as_deref().unwrap_or_default();
        let namespace = r.namespace.as_deref().unwrap_or_default();
        let opts = PodLogOptions::from_query(req.uri().query())?;
        let causes = opts.validate();
        if !causes.is_empty() {
            return Err(Error::Invalid {
                kind: "PodLogOptions".into(),
                group: String::new(),
                name: name.to_string(),
                causes,
            });
        }
        let def = self
            .registry
            .get("", "v1", "pods")
            .ok_or(Error::NoSuchResource)?;
        let obj: Value = self.storage.get(&def, Some(namespace), name).await?;
        let pod: Pod = serde_json::from_value(obj)
            .map_err(|e| Error::Internal(format!("decoding pod {name}: {e}")))?;
        let container = log_container(&pod, opts.container.as_deref())?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        if node.is_empty() {
            // As upstream: a pod not yet scheduled has no log, and that is not an error.
            return Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                .map_err(|e| Error::Internal(e.to_string()));
        }
        let addr = self.kubelet(node).await?;
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut path = format!(
            "/containerLogs/{}/{}/{}",
            enc(namespace),
            enc(name),
            enc(&container)
        );
        let query = opts.kubelet_query();
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let resp = forward(&self.tls, addr, req, &path).await?;
        if resp.status().is_success() {
            let (mut parts, body) = resp.into_parts();
            parts.headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            return Ok(Response::from_parts(parts, body));
        }
        let code = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(kubelet_error(code, &body, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], inits: &[&str]) -> Pod {
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| json!({"name": n, "image": "x"}))
                .collect::<Vec<_>>()
        };
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": list(containers), "initContainers": list(inits)}
        }))
        .unwrap()
    }

    #[test]
    fn container_defaults_and_errors_as_upstream() {
        assert_eq!(log_container(&pod(&["a"], &[]), None).unwrap(), "a");
        assert_eq!(
            log_container(&pod(&["a", "b"], &["i"]), Some("i")).unwrap(),
            "i"
        );
        assert_eq!(
            log_container(&pod(&["a", "b"], &[]), None)
                .unwrap_err()
                .to_string(),
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            log_container(&pod(&["a", "b"], &["i", "j"]), None)
                .unwrap_err()
                .to_string(),
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i j]"
        );
        assert_eq!(
            log_container(&pod(&["a"], &[]), Some("z"))
                .unwrap_err()
                .to_string(),
            "container z is not valid for pod p"
        );
    }

    #[test]
    fn options_decode_validate_and_pass_on() {
        let o = PodLogOptions::from_query(Some(
            "container=c&follow=true&tailLines=2&sinceTime=2024-01-02T03%3A04%3A05.7Z&limitBytes=9&timestamps=1",
        ))
        .unwrap();
        assert_eq!(o.container.as_deref(), Some("c"));
        assert!(o.validate().is_empty());
        assert_eq!(
            o.kubelet_query(),
            "follow=true&timestamps=true&sinceTime=2024-01-02T03%3A04%3A05Z&tailLines=2&limitBytes=9"
        );
        assert!(PodLogOptions::from_query(Some("follow=maybe")).is_err());
        let bad = PodLogOptions::from_query(Some("tailLines=-1&limitBytes=0&sinceSeconds=0"))
            .unwrap()
            .validate();
        let msgs: Vec<String> = bad.iter().map(FieldError::message).collect();
        assert_eq!(
            msgs,
            [
                "tailLines: Invalid value: -1: must be greater than or equal to 0",
                "limitBytes: Invalid value: 0: must be greater than 0",
                "sinceSeconds: Invalid value: 0: must be greater than 0"
            ]
        );
    }

    #[test]
    fn kubelet_errors_become_statuses() {
        let e = kubelet_error(
            StatusCode::BAD_REQUEST,
            b"container \"c\" in pod \"p\" is waiting to start: ContainerCreating",
            "p",
        );
        assert_eq!(
            e.to_string(),
            "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        assert!(matches!(
            kubelet_error(StatusCode::NOT_FOUND, b"x", "p"),
            Error::NotFound { .. }
        ));
    }
}
