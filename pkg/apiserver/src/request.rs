//! Parsing a request's path, method and query into what it asks for, as upstream's
//! `RequestInfoFactory` does (the authorizer and the handlers both use this one parse).

use std::collections::HashMap;

use http::Method;

/// What a resource request addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceRequest {
    /// API group (`""` for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Plural resource name.
    pub resource: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `log`, …), if any.
    pub subresource: Option<String>,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: &'static str,
}

/// What a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestInfo {
    /// A request for API objects.
    Resource(ResourceRequest),
    /// Anything else (discovery, health, OpenAPI, version): authorized by path.
    NonResource {
        /// Lower-case HTTP verb (`get`, `post`, …) as RBAC's nonResourceURLs rules expect.
        verb: &'static str,
        /// The path.
        path: String,
    },
}

/// Query parameters, decoded.
pub type Query = HashMap<String, String>;

/// Decodes a query string.
pub fn parse_query(q: Option<&str>) -> Query {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// True for `true`/`1` style booleans in queries.
pub fn query_flag(q: &Query, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true") | Some("1"))
}

/// Parses the request line into a [`RequestInfo`].
pub fn parse(method: &Method, path: &str, query: &Query) -> RequestInfo {
    let non_resource = || RequestInfo::NonResource {
        verb: http_verb(method),
        path: path.to_string(),
    };
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let (group, version, rest) = match segments.first().map(String::as_str) {
        Some("api") if segments.len() >= 3 => (String::new(), segments[1].clone(), &segments[2..]),
        Some("apis") if segments.len() >= 4 => {
            (segments[1].clone(), segments[2].clone(), &segments[3..])
        }
        _ => return non_resource(),
    };
    let mut rest: Vec<String> = rest.to_vec();
    // The deprecated `/watch/` path prefix.
    let mut watch_prefix = false;
    if rest.first().map(String::as_str) == Some("watch") {
        watch_prefix = true;
        rest.remove(0);
    }
    let mut namespace = None;
    if rest.first().map(String::as_str) == Some("namespaces") && rest.len() >= 2 {
        namespace = Some(rest[1].clone());
        // As upstream: `namespaces/<ns>/<resource>...` addresses a namespaced resource, except
        // the namespace's own subresources (`status`, `finalize`).
        if rest.len() > 2 && !matches!(rest[2].as_str(), "status" | "finalize") {
            rest.drain(..2);
        }
    }
    if rest.is_empty() {
        return non_resource();
    }
    let resource = rest[0].clone();
    let name = rest.get(1).cloned();
    let subresource = rest.get(2).cloned();
    if rest.len() > 3 && subresource.as_deref() != Some("proxy") {
        return non_resource();
    }
    let watch = watch_prefix || query_flag(query, "watch");
    let verb = match (method, name.is_some()) {
        (&Method::GET, true) | (&Method::HEAD, true) if watch => "watch",
        (&Method::GET, true) | (&Method::HEAD, true) => "get",
        (&Method::GET, false) | (&Method::HEAD, false) if watch => "watch",
        (&Method::GET, false) | (&Method::HEAD, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return non_resource(),
    };
    // As upstream: a list or watch of one object by `fieldSelector=metadata.name=<n>` names it,
    // so authorizers can allow it as they would a get (the kubelet watches secrets this way).
    let name = match (name, verb) {
        (None, "list" | "watch") => query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="))
            .filter(|n| !n.is_empty() && !n.contains(','))
            .map(String::from),
        (name, _) => name,
    };
    RequestInfo::Resource(ResourceRequest {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        verb,
    })
}

fn http_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::HEAD => "head",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(method: Method, path: &str, q: &str) -> ResourceRequest {
        match parse(&method, path, &parse_query(Some(q))) {
            RequestInfo::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths_parse_like_upstream() {
        let r = res(Method::GET, "/api/v1/namespaces/default/pods", "");
        assert_eq!(
            (r.namespace.as_deref(), r.resource.as_str(), r.verb),
            (Some("default"), "pods", "list")
        );
        let r = res(
            Method::GET,
            "/apis/apps/v1/namespaces/ns1/deployments/web/scale",
            "",
        );
        assert_eq!(
            (
                r.group.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref(),
                r.verb
            ),
            ("apps", Some("web"), Some("scale"), "get")
        );
        let r = res(Method::GET, "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.namespace.as_deref()
            ),
            ("namespaces", Some("kube-system"), Some("kube-system"))
        );
        let r = res(Method::PUT, "/api/v1/namespaces/x/finalize", "");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("finalize"))
        );
        let r = res(Method::GET, "/api/v1/pods", "watch=true");
        assert_eq!(r.verb, "watch");
        let r = res(Method::GET, "/api/v1/watch/namespaces/a/pods/p", "");
        assert_eq!((r.verb, r.name.as_deref()), ("watch", Some("p")));
        let r = res(
            Method::GET,
            "/api/v1/namespaces/a/secrets",
            "watch=1&fieldSelector=metadata.name%3Ds1",
        );
        assert_eq!((r.verb, r.name.as_deref()), ("watch", Some("s1")));
        let r = res(Method::DELETE, "/api/v1/namespaces/a/configmaps", "");
        assert_eq!(r.verb, "deletecollection");
        assert!(matches!(
            parse(&Method::GET, "/apis/apps/v1", &Query::new()),
            RequestInfo::NonResource { .. }
        ));
        assert!(matches!(
            parse(&Method::GET, "/healthz", &Query::new()),
            RequestInfo::NonResource { .. }
        ));
    }
}
