//! The operations of every served path, as upstream's OpenAPI names them (operation ids,
//! parameters, `x-kubernetes-action`, `x-kubernetes-group-version-kind`), in a form both the
//! swagger 2.0 and the OpenAPI 3 renderers read.
//!
//! kubectl depends on two details here: it decides that the server supports server-side field
//! validation by finding a `fieldValidation` query parameter on a PATCH operation whose
//! `x-kubernetes-group-version-kind` is the object's GVK (client-go `QueryParamVerifier`, v2
//! and v3 flavours), and it looks up response/body schemas by `$ref`.

use serde_json::{json, Map, Value};

use super::defs::{self, V2_PREFIX};
use super::Gvk;
use crate::resources::ResourceDef;

/// Where a parameter goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    /// `?name=`.
    Query,
    /// `{name}` in the path.
    Path,
}

/// One non-body parameter.
#[derive(Clone, Debug)]
pub(crate) struct Param {
    pub name: &'static str,
    pub loc: Loc,
    pub description: String,
    pub ty: &'static str,
    pub required: bool,
}

/// An HTTP method with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
}

impl Method {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Put => "put",
            Method::Post => "post",
            Method::Delete => "delete",
            Method::Patch => "patch",
        }
    }
}

/// What a response carries.
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    /// A definition, by name.
    Ref(String),
    /// A plain string (logs).
    Text,
}

/// The request body of an operation.
#[derive(Clone, Debug)]
pub(crate) struct Body {
    pub def: String,
    pub required: bool,
}

/// One operation.
#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub method: Method,
    pub id: String,
    pub description: String,
    pub action: &'static str,
    pub gvk: Option<Gvk>,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    /// (status code, description, payload)
    pub responses: Vec<(&'static str, &'static str, Option<Payload>)>,
    pub consumes: &'static [&'static str],
    pub produces: &'static [&'static str],
    pub tag: String,
}

/// One path with its operations.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub path: String,
    /// The group/version document (`api/v1`, `apis/apps/v1`) this path belongs to.
    pub gv_path: String,
    pub params: Vec<Param>,
    pub ops: Vec<Op>,
}

pub(crate) const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];
const ANY: &[&str] = &["*/*"];
const JSON_YAML: &[&str] = &["application/json", "application/yaml"];
const LIST_PRODUCES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
const TEXT: &[&str] = &["text/plain", "application/json", "application/yaml"];

fn q(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        loc: Loc::Query,
        description: description.to_string(),
        ty,
        required: false,
    }
}

fn p(name: &'static str, description: &str) -> Param {
    Param {
        name,
        loc: Loc::Path,
        description: description.to_string(),
        ty: "string",
        required: true,
    }
}

fn pretty() -> Param {
    q("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).")
}

fn dry_run() -> Param {
    q("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed")
}

fn field_manager(patch: bool) -> Param {
    let mut d = String::from("fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
    if patch {
        d.push_str(" This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).");
    }
    q("fieldManager", "string", &d)
}

fn field_validation() -> Param {
    q("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.")
}

fn force() -> Param {
    q("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.")
}

fn write_params(patch: bool) -> Vec<Param> {
    let mut v = vec![dry_run(), field_manager(patch), field_validation()];
    if patch {
        v.push(force());
    }
    v
}

fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        q("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately."),
        q("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error. A resource is considered corrupt if it can not be retrieved from the underlying storage successfully because of a) its data can not be transformed e.g. decryption failure, or b) it fails to decode into an object. NOTE: unsafe deletion ignores finalizer constraints, skips precondition checks, and removes the object from the storage. WARNING: This may potentially break the cluster if the workload associated with the resource being unsafe-deleted relies on normal deletion flow. Use only if you REALLY know what you are doing. The default value is false, and the user must opt in to enable it"),
        q("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both."),
        q("propagationPolicy", "string", "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground."),
    ]
}

fn list_params() -> Vec<Param> {
    vec![
        q("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored."),
        q("continue", "string", "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize. If the specified continue value is no longer valid whether due to expiration (generally five to fifteen minutes) or a configuration change on the server, the server will respond with a 410 ResourceExpired error together with a continue token."),
        q("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
        q("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
        q("limit", "integer", "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results."),
        q("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset"),
        q("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset"),
        q("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event  will be sent. The bookmark will report the ResourceVersion (RV) corresponding to the set of objects, and be marked with `\"k8s.io/initial-events-end\": \"true\"` annotation."),
        q("timeoutSeconds", "integer", "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity."),
        q("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."),
    ]
}

fn deletecollection_params() -> Vec<Param> {
    let mut v = delete_params();
    v.extend(
        list_params()
            .into_iter()
            .filter(|p| p.name != "watch" && p.name != "allowWatchBookmarks"),
    );
    v.sort_by_key(|p| p.name);
    v
}

/// `apps` → `Apps`, `rbac.authorization.k8s.io` → `RbacAuthorization`, `` → `Core`,
/// `stable.example.com` → `StableExampleCom`: upstream's operation-id infix.
pub(crate) fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed.split(['.', '-']).map(capitalize).collect()
}

/// Upstream's tag: `apps_v1`, `rbacAuthorization_v1`, `core_v1`.
fn tag(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut chars = camel.chars();
    let first = chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string())
        .unwrap_or_default();
    format!("{first}{}_{version}", chars.as_str())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// The document key of a group/version: `api/v1` or `apis/apps/v1`.
pub(crate) fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn ok_created_accepted(
    def: &str,
    accepted: bool,
) -> Vec<(&'static str, &'static str, Option<Payload>)> {
    let mut v = vec![
        ("200", "OK", Some(Payload::Ref(def.to_string()))),
        ("201", "Created", Some(Payload::Ref(def.to_string()))),
    ];
    if accepted {
        v.push(("202", "Accepted", Some(Payload::Ref(def.to_string()))));
    }
    v.push(("401", "Unauthorized", None));
    v
}

fn ok(def: &str) -> Vec<(&'static str, &'static str, Option<Payload>)> {
    vec![
        ("200", "OK", Some(Payload::Ref(def.to_string()))),
        ("401", "Unauthorized", None),
    ]
}

/// The routes of one resource: collection, item, all-namespaces list and subresources.
pub(crate) fn routes_for(def: &ResourceDef) -> Vec<Route> {
    let gv = gv_path(&def.group, &def.version);
    let prefix = format!("/{gv}");
    let opp = format!("{}{}", group_camel(&def.group), capitalize(&def.version));
    let tag = tag(&def.group, &def.version);
    let kind = &def.kind;
    let gvk = Gvk {
        group: def.group.clone(),
        version: def.version.clone(),
        kind: kind.clone(),
    };
    let has = |verb: &str| def.verbs.contains(&verb);
    let (ns_infix, ns_path, ns_params): (&str, String, Vec<Param>) = if def.namespaced {
        (
            "Namespaced",
            format!("{prefix}/namespaces/{{namespace}}/{}", def.plural),
            vec![p(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )],
        )
    } else {
        ("", format!("{prefix}/{}", def.plural), Vec::new())
    };
    let list_def = format!("{}List", def.definition);
    let op = |method: Method, id: String, description: String, action: &'static str| Op {
        method,
        id,
        description,
        action,
        gvk: Some(gvk.clone()),
        params: Vec::new(),
        body: None,
        responses: Vec::new(),
        consumes: ANY,
        produces: JSON_YAML,
        tag: tag.clone(),
    };
    let mut routes = Vec::new();

    // Collection.
    let mut coll = Route {
        path: ns_path.clone(),
        gv_path: gv.clone(),
        params: ns_params.clone(),
        ops: Vec::new(),
    };
    coll.params.push(pretty());
    if has("list") {
        let mut o = op(
            Method::Get,
            format!("list{opp}{ns_infix}{kind}"),
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        o.params = list_params();
        o.responses = ok(&list_def);
        o.produces = LIST_PRODUCES;
        coll.ops.push(o);
    }
    if has("create") {
        let mut o = op(
            Method::Post,
            format!("create{opp}{ns_infix}{kind}"),
            format!("create {}", article(kind)),
            "post",
        );
        o.params = write_params(false);
        o.body = Some(Body {
            def: def.definition.clone(),
            required: true,
        });
        o.responses = ok_created_accepted(&def.definition, true);
        coll.ops.push(o);
    }
    if has("deletecollection") {
        let mut o = op(
            Method::Delete,
            format!("delete{opp}Collection{ns_infix}{kind}"),
            format!("delete collection of {kind}"),
            "deletecollection",
        );
        o.params = deletecollection_params();
        o.body = Some(Body {
            def: defs::DELETE_OPTIONS.into(),
            required: false,
        });
        o.responses = ok(defs::STATUS);
        coll.ops.push(o);
    }
    if !coll.ops.is_empty() {
        routes.push(coll);
    }

    // One object.
    let item_path = format!("{ns_path}/{{name}}");
    let mut item_params = vec![p("name", &format!("name of the {kind}"))];
    item_params.extend(ns_params.iter().cloned());
    item_params.push(pretty());
    let mut item = Route {
        path: item_path.clone(),
        gv_path: gv.clone(),
        params: item_params.clone(),
        ops: Vec::new(),
    };
    if has("get") {
        let mut o = op(
            Method::Get,
            format!("read{opp}{ns_infix}{kind}"),
            format!("read the specified {kind}"),
            "get",
        );
        o.responses = ok(&def.definition);
        item.ops.push(o);
    }
    if has("update") {
        let mut o = op(
            Method::Put,
            format!("replace{opp}{ns_infix}{kind}"),
            format!("replace the specified {kind}"),
            "put",
        );
        o.params = write_params(false);
        o.body = Some(Body {
            def: def.definition.clone(),
            required: true,
        });
        o.responses = ok_created_accepted(&def.definition, false);
        item.ops.push(o);
    }
    if has("delete") {
        let mut o = op(
            Method::Delete,
            format!("delete{opp}{ns_infix}{kind}"),
            format!("delete {}", article(kind)),
            "delete",
        );
        o.params = delete_params();
        o.body = Some(Body {
            def: defs::DELETE_OPTIONS.into(),
            required: false,
        });
        o.responses = vec![
            ("200", "OK", Some(Payload::Ref(defs::STATUS.into()))),
            ("202", "Accepted", Some(Payload::Ref(defs::STATUS.into()))),
            ("401", "Unauthorized", None),
        ];
        item.ops.push(o);
    }
    if has("patch") {
        let mut o = op(
            Method::Patch,
            format!("patch{opp}{ns_infix}{kind}"),
            format!("partially update the specified {kind}"),
            "patch",
        );
        o.params = write_params(true);
        o.body = Some(Body {
            def: defs::PATCH.into(),
            required: true,
        });
        o.consumes = PATCH_TYPES;
        o.responses = ok_created_accepted(&def.definition, false);
        item.ops.push(o);
    }
    if !item.ops.is_empty() {
        routes.push(item);
    }

    // Every namespace.
    if def.namespaced && has("list") {
        let mut o = op(
            Method::Get,
            format!("list{opp}{kind}ForAllNamespaces"),
            format!("list or watch objects of kind {kind}"),
            "list",
        );
        o.responses = ok(&list_def);
        o.produces = LIST_PRODUCES;
        let mut params = list_params();
        params.push(pretty());
        params.sort_by_key(|p| p.name);
        routes.push(Route {
            path: format!("{prefix}/{}", def.plural),
            gv_path: gv.clone(),
            params,
            ops: vec![o],
        });
    }

    // Subresources.
    for sub in &def.subresources {
        let path = format!("{item_path}/{sub}");
        let camel_sub = capitalize(sub);
        let id = |verb: &str| format!("{verb}{opp}{ns_infix}{kind}{camel_sub}");
        let mut route = Route {
            path,
            gv_path: gv.clone(),
            params: item_params.clone(),
            ops: Vec::new(),
        };
        // (body/response definition, its GVK) for read/replace/patch style subresources.
        let rw: Option<(String, Gvk)> = match *sub {
            "status" | "ephemeralcontainers" | "approval" => {
                Some((def.definition.clone(), gvk.clone()))
            }
            "scale" => Some((defs::SCALE.into(), Gvk::new("autoscaling", "v1", "Scale"))),
            _ => None,
        };
        if let Some((target, sgvk)) = rw {
            let mut get = op(
                Method::Get,
                id("read"),
                format!("read {sub} of the specified {kind}"),
                "get",
            );
            get.gvk = Some(sgvk.clone());
            get.responses = ok(&target);
            let mut put = op(
                Method::Put,
                id("replace"),
                format!("replace {sub} of the specified {kind}"),
                "put",
            );
            put.gvk = Some(sgvk.clone());
            put.params = write_params(false);
            put.body = Some(Body {
                def: target.clone(),
                required: true,
            });
            put.responses = ok_created_accepted(&target, false);
            let mut patch = op(
                Method::Patch,
                id("patch"),
                format!("partially update {sub} of the specified {kind}"),
                "patch",
            );
            patch.gvk = Some(sgvk);
            patch.params = write_params(true);
            patch.body = Some(Body {
                def: defs::PATCH.into(),
                required: true,
            });
            patch.consumes = PATCH_TYPES;
            patch.responses = ok_created_accepted(&target, false);
            route.ops = vec![get, put, patch];
        } else {
            let create: Option<(&str, Gvk)> = match *sub {
                "eviction" => Some((defs::EVICTION, Gvk::new("policy", "v1", "Eviction"))),
                "binding" => Some((defs::BINDING, Gvk::new("", "v1", "Binding"))),
                "token" => Some((
                    defs::TOKEN_REQUEST,
                    Gvk::new("authentication.k8s.io", "v1", "TokenRequest"),
                )),
                _ => None,
            };
            if let Some((target, sgvk)) = create {
                let mut o = op(
                    Method::Post,
                    id("create"),
                    format!("create {sub} of {}", article(kind)),
                    "post",
                );
                o.gvk = Some(sgvk);
                o.params = write_params(false);
                o.body = Some(Body {
                    def: target.into(),
                    required: true,
                });
                o.responses = ok_created_accepted(target, true);
                route.ops.push(o);
            } else if *sub == "finalize" {
                let mut o = op(
                    Method::Put,
                    id("replace"),
                    format!("replace finalize of the specified {kind}"),
                    "put",
                );
                o.params = vec![dry_run(), field_manager(false), field_validation()];
                o.body = Some(Body {
                    def: def.definition.clone(),
                    required: true,
                });
                o.responses = ok_created_accepted(&def.definition, false);
                route.ops.push(o);
            } else if *sub == "log" {
                let mut o = op(
                    Method::Get,
                    id("read"),
                    format!("read log of the specified {kind}"),
                    "get",
                );
                o.params = log_params();
                o.produces = TEXT;
                o.responses = vec![
                    ("200", "OK", Some(Payload::Text)),
                    ("401", "Unauthorized", None),
                ];
                route.ops.push(o);
            }
        }
        if !route.ops.is_empty() {
            routes.push(route);
        }
    }
    routes
}

fn log_params() -> Vec<Param> {
    vec![
        q("container", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
        q("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
        q("insecureSkipTLSVerifyBackend", "boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to."),
        q("limitBytes", "integer", "If set, the number of bytes to read from the server before terminating the log output."),
        q("previous", "boolean", "Return previous terminated container logs. Defaults to false."),
        q("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show logs."),
        q("stream", "string", "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used, and both stdout and stderr are returned interleaved."),
        q("tailLines", "integer", "If set, the number of lines from the end of the logs to show."),
        q("timestamps", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false."),
    ]
}

fn article(kind: &str) -> String {
    match kind.chars().next() {
        Some('A' | 'E' | 'I' | 'O' | 'U') => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

/// The discovery route of a group/version (`GET /apis/apps/v1/`).
pub(crate) fn discovery_route(group: &str, version: &str) -> Route {
    let gv = gv_path(group, version);
    let opp = format!("{}{}", group_camel(group), capitalize(version));
    Route {
        path: format!("/{gv}/"),
        gv_path: gv,
        params: Vec::new(),
        ops: vec![Op {
            method: Method::Get,
            id: format!("get{opp}APIResources"),
            description: "get available resources".into(),
            action: "",
            gvk: None,
            params: Vec::new(),
            body: None,
            responses: ok(defs::API_RESOURCE_LIST),
            consumes: &["application/json", "application/yaml"],
            produces: JSON_YAML,
            tag: tag(group, version),
        }],
    }
}

/// The discovery route of a group (`GET /apis/apps/`); swagger 2.0 only.
pub(crate) fn group_route(group: &str) -> Route {
    let camel = group_camel(group);
    let mut r = discovery_route(group, "v1");
    r.path = format!("/apis/{group}/");
    r.gv_path = String::new();
    for o in r.ops.iter_mut() {
        o.id = format!("get{camel}APIGroup");
        o.description = "get information of a group".into();
        o.responses = ok(defs::API_GROUP);
        o.tag = {
            let t = tag(group, "");
            t.trim_end_matches('_').to_string()
        };
    }
    r
}

/// The routes outside any group/version: `/api/`, `/apis/`, `/version/`.
pub(crate) fn root_routes() -> Vec<Route> {
    let simple = |path: &str, id: &str, description: &str, def: &str, tag: &str| Route {
        path: path.into(),
        gv_path: String::new(),
        params: Vec::new(),
        ops: vec![Op {
            method: Method::Get,
            id: id.into(),
            description: description.into(),
            action: "",
            gvk: None,
            params: Vec::new(),
            body: None,
            responses: ok(def),
            consumes: &["application/json", "application/yaml"],
            produces: JSON_YAML,
            tag: tag.into(),
        }],
    };
    vec![
        simple(
            "/api/",
            "getCoreAPIVersions",
            "get available API versions",
            defs::API_VERSIONS,
            "core",
        ),
        simple(
            "/apis/",
            "getAPIVersions",
            "get available API versions",
            defs::API_GROUP_LIST,
            "apis",
        ),
        simple(
            "/version/",
            "getCodeVersion",
            "get the version information for this server",
            defs::VERSION_INFO,
            "version",
        ),
    ]
}

// ---- swagger 2.0 rendering ----

fn v2_param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), Value::String(p.description.clone()));
    m.insert(
        "in".into(),
        Value::String(if p.loc == Loc::Path { "path" } else { "query" }.into()),
    );
    m.insert("name".into(), Value::String(p.name.into()));
    if p.required {
        m.insert("required".into(), Value::Bool(true));
    }
    m.insert("type".into(), Value::String(p.ty.into()));
    m.insert("uniqueItems".into(), Value::Bool(true));
    Value::Object(m)
}

fn v2_gvk(g: &Gvk) -> Value {
    json!({"group": g.group, "kind": g.kind, "version": g.version})
}

fn v2_op(o: &Op) -> Value {
    let mut m = Map::new();
    m.insert("consumes".into(), json!(o.consumes));
    m.insert("description".into(), Value::String(o.description.clone()));
    m.insert("operationId".into(), Value::String(o.id.clone()));
    let mut params: Vec<Value> = Vec::new();
    if let Some(b) = &o.body {
        let mut bp = Map::new();
        bp.insert("in".into(), "body".into());
        bp.insert("name".into(), "body".into());
        if b.required {
            bp.insert("required".into(), Value::Bool(true));
        }
        bp.insert(
            "schema".into(),
            json!({"$ref": format!("{V2_PREFIX}{}", b.def)}),
        );
        params.push(Value::Object(bp));
    }
    params.extend(o.params.iter().map(v2_param));
    if !params.is_empty() {
        m.insert("parameters".into(), Value::Array(params));
    }
    m.insert("produces".into(), json!(o.produces));
    let mut responses = Map::new();
    for (code, description, payload) in &o.responses {
        let mut r = Map::new();
        r.insert("description".into(), Value::String((*description).into()));
        match payload {
            Some(Payload::Ref(d)) => {
                r.insert("schema".into(), json!({"$ref": format!("{V2_PREFIX}{d}")}));
            }
            Some(Payload::Text) => {
                r.insert("schema".into(), json!({"type": "string"}));
            }
            None => {}
        }
        responses.insert((*code).into(), Value::Object(r));
    }
    m.insert("responses".into(), Value::Object(responses));
    m.insert("schemes".into(), json!(["https"]));
    m.insert("tags".into(), json!([o.tag]));
    if !o.action.is_empty() {
        m.insert("x-kubernetes-action".into(), Value::String(o.action.into()));
    }
    if let Some(g) = &o.gvk {
        m.insert("x-kubernetes-group-version-kind".into(), v2_gvk(g));
    }
    Value::Object(m)
}

/// The swagger 2.0 path item of a route.
pub(crate) fn v2_path_item(r: &Route) -> Value {
    let mut m = Map::new();
    for o in &r.ops {
        m.insert(o.method.key().into(), v2_op(o));
    }
    if !r.params.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(r.params.iter().map(v2_param).collect()),
        );
    }
    Value::Object(m)
}

// ---- OpenAPI 3 rendering ----

fn v3_param(p: &Param) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), Value::String(p.description.clone()));
    m.insert(
        "in".into(),
        Value::String(if p.loc == Loc::Path { "path" } else { "query" }.into()),
    );
    m.insert("name".into(), Value::String(p.name.into()));
    if p.required {
        m.insert("required".into(), Value::Bool(true));
    }
    m.insert("schema".into(), json!({"type": p.ty, "uniqueItems": true}));
    Value::Object(m)
}

fn v3_op(o: &Op, prefix: &str) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), Value::String(o.description.clone()));
    m.insert("operationId".into(), Value::String(o.id.clone()));
    if !o.params.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(o.params.iter().map(v3_param).collect()),
        );
    }
    if let Some(b) = &o.body {
        let mut content = Map::new();
        for ct in o.consumes {
            content.insert(
                (*ct).into(),
                json!({"schema": {"$ref": format!("{prefix}{}", b.def)}}),
            );
        }
        let mut rb = Map::new();
        rb.insert("content".into(), Value::Object(content));
        if b.required {
            rb.insert("required".into(), Value::Bool(true));
        }
        m.insert("requestBody".into(), Value::Object(rb));
    }
    let mut responses = Map::new();
    for (code, description, payload) in &o.responses {
        let mut r = Map::new();
        if let Some(payload) = payload {
            let schema = match payload {
                Payload::Ref(d) => json!({"$ref": format!("{prefix}{d}")}),
                Payload::Text => json!({"type": "string"}),
            };
            let mut content = Map::new();
            for ct in o.produces {
                content.insert((*ct).into(), json!({ "schema": schema }));
            }
            r.insert("content".into(), Value::Object(content));
        }
        r.insert("description".into(), Value::String((*description).into()));
        responses.insert((*code).into(), Value::Object(r));
    }
    m.insert("responses".into(), Value::Object(responses));
    m.insert("tags".into(), json!([o.tag]));
    if !o.action.is_empty() {
        m.insert("x-kubernetes-action".into(), Value::String(o.action.into()));
    }
    if let Some(g) = &o.gvk {
        m.insert("x-kubernetes-group-version-kind".into(), v2_gvk(g));
    }
    Value::Object(m)
}

/// The OpenAPI 3 path item of a route; refs point at `prefix` (`#/components/schemas/`).
pub(crate) fn v3_path_item(r: &Route, prefix: &str) -> Value {
    let mut m = Map::new();
    for o in &r.ops {
        m.insert(o.method.key().into(), v3_op(o, prefix));
    }
    if !r.params.is_empty() {
        m.insert(
            "parameters".into(),
            Value::Array(r.params.iter().map(v3_param).collect()),
        );
    }
    Value::Object(m)
}

/// Definitions a route refers to directly (bodies and responses).
pub(crate) fn route_refs(r: &Route) -> impl Iterator<Item = &str> {
    r.ops.iter().flat_map(|o| {
        o.body
            .iter()
            .map(|b| b.def.as_str())
            .chain(o.responses.iter().filter_map(|(_, _, p)| match p {
                Some(Payload::Ref(d)) => Some(d.as_str()),
                _ => None,
            }))
    })
}
