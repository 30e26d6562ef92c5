//! Pods and pod specs: the defaults, checks and printing that Pods, PodTemplates and every
//! workload's template share (upstream `SetDefaults_PodSpec`, `ValidatePodSpec`, `printPod`).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::util::{
    self, arr, enum_check, enum_required, invalid_raw, items_mut, label_name, non_negative,
    not_found, required, s, set_default, set_default_str, PORT_RANGE,
};
use crate::error::FieldError;
use crate::table::{self, Column};

// ---------------------------------------------------------------------------------------------
// Defaults

/// Upstream's `ParseImageName` tag decision: `Always` for `:latest` or no tag (and no digest).
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = match last.rsplit_once(':') {
        Some((_, t)) => t,
        None if digest => "",
        None => "latest",
    };
    if tag == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_probe(p: &mut Value) {
    if p.is_null() {
        return;
    }
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    default_handler(p);
}

fn default_handler(h: &mut Value) {
    if h["httpGet"].is_object() {
        set_default_str(&mut h["httpGet"], "path", "/");
        set_default_str(&mut h["httpGet"], "scheme", "HTTP");
    }
}

fn default_container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    if s(&c["imagePullPolicy"]).is_empty() {
        let policy = default_pull_policy(s(&c["image"]));
        c["imagePullPolicy"] = json!(policy);
    }
    set_default_str(c, "terminationMessagePath", "/dev/termination-log");
    set_default_str(c, "terminationMessagePolicy", "File");
    for p in items_mut(c, "ports") {
        set_default_str(p, "protocol", "TCP");
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe) {
            default_probe(p);
        }
    }
    if let Some(l) = c.get_mut("lifecycle").filter(|l| l.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = l.get_mut(hook).filter(|h| h.is_object()) {
                default_handler(h);
            }
        }
    }
    for e in items_mut(c, "env") {
        if let Some(f) = e
            .pointer_mut("/valueFrom/fieldRef")
            .filter(|f| f.is_object())
        {
            set_default_str(f, "apiVersion", "v1");
        }
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

fn default_volume(v: &mut Value) {
    if !v.is_object() {
        return;
    }
    if !VOLUME_SOURCES.iter().any(|k| !v[*k].is_null()) {
        v["emptyDir"] = json!({});
    }
    for k in ["configMap", "secret", "downwardAPI", "projected"] {
        if v[k].is_object() {
            set_default(&mut v[k], "defaultMode", json!(420));
        }
    }
    if v["hostPath"].is_object() {
        set_default(&mut v["hostPath"], "type", json!(""));
    }
    if let Some(items) = v
        .pointer_mut("/downwardAPI/items")
        .and_then(Value::as_array_mut)
    {
        for i in items {
            if let Some(f) = i.get_mut("fieldRef").filter(|f| f.is_object()) {
                set_default_str(f, "apiVersion", "v1");
            }
        }
    }
    if let Some(sources) = v
        .pointer_mut("/projected/sources")
        .and_then(Value::as_array_mut)
    {
        for src in sources {
            if let Some(t) = src.get_mut("serviceAccountToken").filter(|t| t.is_object()) {
                set_default(t, "expirationSeconds", json!(3600));
            }
            if let Some(items) = src
                .pointer_mut("/downwardAPI/items")
                .and_then(Value::as_array_mut)
            {
                for i in items {
                    if let Some(f) = i.get_mut("fieldRef").filter(|f| f.is_object()) {
                        set_default_str(f, "apiVersion", "v1");
                    }
                }
            }
        }
    }
    if v["iscsi"].is_object() {
        set_default_str(&mut v["iscsi"], "iscsiInterface", "default");
    }
    if v["rbd"].is_object() {
        set_default_str(&mut v["rbd"], "pool", "rbd");
        set_default_str(&mut v["rbd"], "user", "admin");
        set_default_str(&mut v["rbd"], "keyring", "/etc/ceph/keyring");
    }
    if v["azureDisk"].is_object() {
        set_default_str(&mut v["azureDisk"], "cachingMode", "ReadWrite");
        set_default_str(&mut v["azureDisk"], "kind", "Shared");
        set_default_str(&mut v["azureDisk"], "fsType", "ext4");
        set_default(&mut v["azureDisk"], "readOnly", json!(false));
    }
}

/// `SetDefaults_PodSpec` and everything nested in a spec (containers, probes, volumes); used for
/// Pods and for every pod template.
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default_str(spec, "dnsPolicy", "ClusterFirst");
    set_default_str(spec, "restartPolicy", "Always");
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default_str(spec, "schedulerName", "default-scheduler");
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            default_container(c);
        }
    }
    for c in items_mut(spec, "ephemeralContainers") {
        default_container(c);
    }
    for v in items_mut(spec, "volumes") {
        default_volume(v);
    }
    if spec["hostNetwork"] == json!(true) {
        // Host-network pods bind their container ports on the host (upstream `defaultHostNetworkPorts`).
        for key in ["containers", "initContainers"] {
            for c in items_mut(spec, key) {
                for p in items_mut(c, "ports") {
                    if p["hostPort"].as_i64().unwrap_or(0) == 0 {
                        p["hostPort"] = p["containerPort"].clone();
                    }
                }
            }
        }
    }
}

/// Defaults of a `PodTemplateSpec` (only its spec has any).
pub fn default_template(template: &mut Value) {
    if let Some(spec) = template.get_mut("spec") {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_Pod`: the spec defaults plus what only Pods get (service links, requests
/// copied from limits).
pub fn pod_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    default_pod_spec(spec);
    set_default(spec, "enableServiceLinks", json!(true));
    for key in ["containers", "initContainers"] {
        for c in items_mut(spec, key) {
            let limits = c["resources"]["limits"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if limits.is_empty() {
                continue;
            }
            let res = &mut c["resources"];
            if res["requests"].is_null() {
                res["requests"] = json!({});
            }
            if let Some(req) = res["requests"].as_object_mut() {
                for (k, q) in limits {
                    req.entry(k).or_insert(q);
                }
            }
        }
    }
}

/// The token volume the ServiceAccount admission plugin mounts into every container.
const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Create-time preparation of Pods: upstream's ServiceAccount plugin, the built-in system
/// priority classes, then `status.phase: Pending` and the QoS class.
///
/// What needs other objects is admission's (`crate::priority` for named and global-default
/// PriorityClasses, `crate::tolerationseconds`, `crate::limitrange`, `crate::quota`). The
/// ServiceAccount's own `automountServiceAccountToken: false` is not honoured yet.
pub fn pod_prepare(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
        if s(&spec["serviceAccountName"]).is_empty() {
            let sa = s(&spec["serviceAccount"]);
            spec["serviceAccountName"] = json!(if sa.is_empty() { "default" } else { sa });
        }
        // The deprecated alias is kept in step, as upstream's conversion does.
        spec["serviceAccount"] = spec["serviceAccountName"].clone();
        if spec["automountServiceAccountToken"] != json!(false) {
            mount_service_account_token(spec);
        }
        if spec["priority"].is_null() {
            let pc = s(&spec["priorityClassName"]);
            let p = match pc {
                "system-node-critical" => Some(2_000_001_000),
                "system-cluster-critical" => Some(2_000_000_000),
                "" => Some(0),
                _ => None,
            };
            if let Some(p) = p {
                spec["priority"] = json!(p);
            }
        }
        set_default_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    }
    let qos = qos_class(&obj["spec"]);
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

fn mount_service_account_token(spec: &mut Value) {
    let all = ["containers", "initContainers"];
    let already = all.iter().any(|k| {
        arr(&spec[*k]).iter().any(|c| {
            arr(&c["volumeMounts"])
                .iter()
                .any(|m| s(&m["mountPath"]) == SA_MOUNT_PATH)
        })
    });
    if already {
        return;
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect();
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    if !spec["volumes"].is_array() {
        spec["volumes"] = json!([]);
    }
    if let Some(v) = spec["volumes"].as_array_mut() {
        v.push(volume);
    }
    for k in all {
        for c in items_mut(spec, k) {
            if !c["volumeMounts"].is_array() {
                c["volumeMounts"] = json!([]);
            }
            if let Some(m) = c["volumeMounts"].as_array_mut() {
                m.push(json!({"name": name, "readOnly": true, "mountPath": SA_MOUNT_PATH}));
            }
        }
    }
}

/// Upstream's QoS class: BestEffort without requests/limits, Guaranteed when every container's
/// cpu and memory limits equal its requests, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = arr(&spec["containers"])
        .iter()
        .chain(arr(&spec["initContainers"]))
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let limits = &c["resources"]["limits"];
        let requests = &c["resources"]["requests"];
        for r in ["cpu", "memory"] {
            let l = util::quantity(&limits[r]).filter(|q| !q.is_zero());
            let q = util::quantity(&requests[r]).filter(|q| !q.is_zero());
            if l.is_some() || q.is_some() {
                any = true;
            }
            match (l, q) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---------------------------------------------------------------------------------------------
// Validation

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];

fn validate_probe(errs: &mut Vec<FieldError>, path: &str, p: &Value, liveness_or_startup: bool) {
    if p.is_null() {
        return;
    }
    let handlers = ["exec", "httpGet", "tcpSocket", "grpc"]
        .iter()
        .filter(|h| !p[**h].is_null())
        .count();
    if handlers == 0 {
        errs.push(required(path, "must specify a handler type"));
    } else if handlers > 1 {
        errs.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        ));
    }
    for k in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        non_negative(errs, &format!("{path}.{k}"), &p[k]);
    }
    if liveness_or_startup && p["successThreshold"].as_i64().is_some_and(|n| n != 1) {
        errs.push(FieldError::invalid(
            format!("{path}.successThreshold"),
            &p["successThreshold"],
            "must be 1",
        ));
    }
    if let Some(port) = p["httpGet"]
        .get("port")
        .or_else(|| p["tcpSocket"].get("port"))
    {
        let sub = if p["httpGet"].is_object() {
            "httpGet"
        } else {
            "tcpSocket"
        };
        validate_port_ref(errs, &format!("{path}.{sub}.port"), port);
    }
}

fn validate_port_ref(errs: &mut Vec<FieldError>, path: &str, port: &Value) {
    match port {
        Value::Number(n) if !n.as_i64().is_some_and(util::valid_port) => {
            errs.push(FieldError::invalid(path, port, PORT_RANGE));
        }
        Value::String(name) => {
            for m in util::port_name_errors(name) {
                errs.push(FieldError::invalid(path, port, m));
            }
        }
        _ => {}
    }
}

fn validate_resources(errs: &mut Vec<FieldError>, path: &str, res: &Value) {
    util::resource_list(errs, &format!("{path}.limits"), &res["limits"]);
    util::resource_list(errs, &format!("{path}.requests"), &res["requests"]);
    let Some(reqs) = res["requests"].as_object() else {
        return;
    };
    for (name, q) in reqs {
        let (Some(req), Some(lim)) = (util::quantity(q), util::quantity(&res["limits"][name]))
        else {
            continue;
        };
        let overcommit = !name.contains('/')
            || name.starts_with("kubernetes.io/")
            || name.starts_with("hugepages-");
        let overcommit = overcommit && !name.starts_with("hugepages-");
        if !overcommit && req != lim {
            errs.push(invalid_raw(
                format!("{path}.requests"),
                &format!("{:?}", req.canonical()),
                &format!("must be equal to {name} limit of {}", lim.canonical()),
            ));
        } else if req.nanos() > lim.nanos() {
            errs.push(invalid_raw(
                format!("{path}.requests"),
                &format!("{:?}", req.canonical()),
                &format!(
                    "must be less than or equal to {name} limit of {}",
                    lim.canonical()
                ),
            ));
        }
    }
}

fn validate_container(
    errs: &mut Vec<FieldError>,
    path: &str,
    c: &Value,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    init: bool,
) {
    let name_path = format!("{path}.name");
    label_name(errs, &name_path, &c["name"]);
    let name = s(&c["name"]);
    if !name.is_empty() && !names.insert(name.to_string()) {
        errs.push(FieldError::duplicate(&name_path, &c["name"]));
    }
    if s(&c["image"]).trim().is_empty() {
        errs.push(required(format!("{path}.image"), ""));
    } else if s(&c["image"]) != s(&c["image"]).trim() {
        errs.push(FieldError::invalid(
            format!("{path}.image"),
            &c["image"],
            "must not have leading or trailing whitespace",
        ));
    }
    enum_required(
        errs,
        &format!("{path}.imagePullPolicy"),
        &c["imagePullPolicy"],
        PULL_POLICIES,
    );
    enum_required(
        errs,
        &format!("{path}.terminationMessagePolicy"),
        &c["terminationMessagePolicy"],
        &["File", "FallbackToLogsOnError"],
    );
    let mut port_names = HashSet::new();
    for (i, p) in arr(&c["ports"]).iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        let pname = s(&p["name"]);
        if !pname.is_empty() {
            let msgs = util::port_name_errors(pname);
            if !msgs.is_empty() {
                for m in msgs {
                    errs.push(FieldError::invalid(format!("{pp}.name"), &p["name"], m));
                }
            } else if !port_names.insert(pname.to_string()) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), &p["name"]));
            }
        }
        match p["containerPort"].as_i64() {
            None | Some(0) => errs.push(required(format!("{pp}.containerPort"), "")),
            Some(n) if !util::valid_port(n) => errs.push(FieldError::invalid(
                format!("{pp}.containerPort"),
                &p["containerPort"],
                PORT_RANGE,
            )),
            Some(_) => {}
        }
        if let Some(h) = p["hostPort"].as_i64().filter(|h| *h != 0) {
            if !util::valid_port(h) {
                errs.push(FieldError::invalid(
                    format!("{pp}.hostPort"),
                    &p["hostPort"],
                    PORT_RANGE,
                ));
            }
        }
        enum_required(errs, &format!("{pp}.protocol"), &p["protocol"], PROTOCOLS);
    }
    for (i, e) in arr(&c["env"]).iter().enumerate() {
        let ep = format!("{path}.env[{i}].name");
        let n = s(&e["name"]);
        if n.is_empty() {
            errs.push(required(ep, ""));
        } else if !n.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
            errs.push(FieldError::invalid(
                ep,
                &e["name"],
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        if !e["value"].is_null() && !s(&e["value"]).is_empty() && !e["valueFrom"].is_null() {
            errs.push(invalid_raw(
                format!("{path}.env[{i}].valueFrom"),
                "\"\"",
                "may not be specified when `value` is not empty",
            ));
        }
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in arr(&c["volumeMounts"]).iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        let vname = s(&m["name"]);
        if vname.is_empty() {
            errs.push(required(format!("{mp}.name"), ""));
        } else if !volumes.contains(vname) {
            errs.push(not_found(format!("{mp}.name"), vname));
        }
        let mpath = s(&m["mountPath"]);
        if mpath.is_empty() {
            errs.push(required(format!("{mp}.mountPath"), ""));
        } else if !mount_paths.insert(mpath.to_string()) {
            errs.push(FieldError::invalid(
                format!("{mp}.mountPath"),
                &m["mountPath"],
                "must be unique",
            ));
        }
    }
    validate_resources(errs, &format!("{path}.resources"), &c["resources"]);
    let sidecar = init && s(&c["restartPolicy"]) == "Always";
    if init && !sidecar {
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if !c[probe].is_null() {
                errs.push(FieldError::forbidden(
                    format!("{path}.{probe}"),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    } else {
        validate_probe(
            errs,
            &format!("{path}.livenessProbe"),
            &c["livenessProbe"],
            true,
        );
        validate_probe(
            errs,
            &format!("{path}.readinessProbe"),
            &c["readinessProbe"],
            false,
        );
        validate_probe(
            errs,
            &format!("{path}.startupProbe"),
            &c["startupProbe"],
            true,
        );
    }
    if init {
        enum_check(
            errs,
            &format!("{path}.restartPolicy"),
            &c["restartPolicy"],
            &["Always"],
        );
    } else if !c["restartPolicy"].is_null() {
        errs.push(FieldError::forbidden(
            format!("{path}.restartPolicy"),
            "may not be set for non-init containers",
        ));
    }
}

fn validate_volumes(errs: &mut Vec<FieldError>, path: &str, volumes: &[Value]) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vp = format!("{path}[{i}]");
        label_name(errs, &format!("{vp}.name"), &v["name"]);
        let n = s(&v["name"]);
        if !n.is_empty() && !names.insert(n.to_string()) {
            errs.push(FieldError::duplicate(format!("{vp}.name"), &v["name"]));
        }
        let sources: Vec<&&str> = VOLUME_SOURCES
            .iter()
            .filter(|k| !v[**k].is_null())
            .collect();
        match sources.as_slice() {
            [] => errs.push(required(&vp, "must specify a volume type")),
            [one] => validate_volume_source(errs, &format!("{vp}.{one}"), one, &v[**one]),
            [_, rest @ ..] => {
                for k in rest {
                    errs.push(FieldError::forbidden(
                        format!("{vp}.{k}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
    }
    names
}

fn validate_volume_source(errs: &mut Vec<FieldError>, path: &str, kind: &str, src: &Value) {
    match kind {
        "hostPath" => {
            if s(&src["path"]).is_empty() {
                errs.push(required(format!("{path}.path"), ""));
            }
            enum_check(
                errs,
                &format!("{path}.type"),
                &src["type"],
                &[
                    "",
                    "BlockDevice",
                    "CharDevice",
                    "Directory",
                    "DirectoryOrCreate",
                    "File",
                    "FileOrCreate",
                    "Socket",
                ],
            );
        }
        "configMap" | "persistentVolumeClaim" | "secret" => {
            let (key, label) = match kind {
                "configMap" => ("name", "name"),
                "secret" => ("secretName", "secretName"),
                _ => ("claimName", "claimName"),
            };
            if kind != "configMap" && s(&src[key]).is_empty() {
                errs.push(required(format!("{path}.{label}"), ""));
            }
            let dm = &src["defaultMode"];
            if dm.as_i64().is_some_and(|m| !(0..=0o777).contains(&m)) {
                errs.push(FieldError::invalid(
                    format!("{path}.defaultMode"),
                    dm,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                ));
            }
        }
        "nfs" => {
            if s(&src["server"]).is_empty() {
                errs.push(required(format!("{path}.server"), ""));
            }
            if s(&src["path"]).is_empty() {
                errs.push(required(format!("{path}.path"), ""));
            }
        }
        _ => {}
    }
}

fn validate_tolerations(errs: &mut Vec<FieldError>, path: &str, tolerations: &[Value]) {
    for (i, t) in tolerations.iter().enumerate() {
        let tp = format!("{path}[{i}]");
        let key = s(&t["key"]);
        let op = s(&t["operator"]);
        if !key.is_empty() {
            for m in distro_apimachinery::validation::is_qualified_name(key) {
                errs.push(FieldError::invalid(format!("{tp}.key"), &t["key"], m));
            }
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                format!("{tp}.operator"),
                &t["operator"],
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if !t["tolerationSeconds"].is_null() && s(&t["effect"]) != "NoExecute" {
            errs.push(FieldError::invalid(
                format!("{tp}.effect"),
                &t["effect"],
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                for m in distro_apimachinery::validation::is_valid_label_value(s(&t["value"])) {
                    errs.push(FieldError::invalid(
                        format!("{tp}.operator"),
                        &t["value"],
                        m,
                    ));
                }
            }
            "Exists" => {
                if !s(&t["value"]).is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{tp}.operator"),
                        &t["value"],
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                format!("{tp}.operator"),
                &t["operator"],
                &["Equal", "Exists"],
            )),
        }
        if !s(&t["effect"]).is_empty() {
            enum_check(
                errs,
                &format!("{tp}.effect"),
                &t["effect"],
                &["NoExecute", "NoSchedule", "PreferNoSchedule"],
            );
        }
    }
}

/// Upstream's `ValidatePodSpec` (the checks users commonly hit) of the spec at `path`.
pub fn validate_pod_spec(errs: &mut Vec<FieldError>, path: &str, spec: &Value) {
    let volumes = validate_volumes(errs, &format!("{path}.volumes"), arr(&spec["volumes"]));
    let containers = arr(&spec["containers"]);
    let mut names = HashSet::new();
    if containers.is_empty() {
        errs.push(required(format!("{path}.containers"), ""));
    }
    for (i, c) in arr(&spec["initContainers"]).iter().enumerate() {
        validate_container(
            errs,
            &format!("{path}.initContainers[{i}]"),
            c,
            &volumes,
            &mut names,
            true,
        );
    }
    for (i, c) in containers.iter().enumerate() {
        validate_container(
            errs,
            &format!("{path}.containers[{i}]"),
            c,
            &volumes,
            &mut names,
            false,
        );
    }
    for (i, c) in arr(&spec["ephemeralContainers"]).iter().enumerate() {
        let n = s(&c["name"]);
        if !n.is_empty() && !names.insert(n.to_string()) {
            errs.push(FieldError::duplicate(
                format!("{path}.ephemeralContainers[{i}].name"),
                &c["name"],
            ));
        }
    }
    enum_required(
        errs,
        &format!("{path}.restartPolicy"),
        &spec["restartPolicy"],
        RESTART_POLICIES,
    );
    enum_required(
        errs,
        &format!("{path}.dnsPolicy"),
        &spec["dnsPolicy"],
        DNS_POLICIES,
    );
    if s(&spec["dnsPolicy"]) == "None"
        && spec["dnsConfig"]["nameservers"]
            .as_array()
            .is_none_or(|a| a.is_empty())
    {
        errs.push(required(
            format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    util::label_map(errs, &format!("{path}.nodeSelector"), &spec["nodeSelector"]);
    validate_tolerations(
        errs,
        &format!("{path}.tolerations"),
        arr(&spec["tolerations"]),
    );
    if let Some(a) = spec["activeDeadlineSeconds"].as_i64() {
        if a <= 0 {
            errs.push(FieldError::invalid(
                format!("{path}.activeDeadlineSeconds"),
                &spec["activeDeadlineSeconds"],
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    for key in ["hostname", "subdomain"] {
        if !s(&spec[key]).is_empty() {
            for m in distro_apimachinery::validation::is_dns1123_label(s(&spec[key])) {
                errs.push(FieldError::invalid(format!("{path}.{key}"), &spec[key], m));
            }
        }
    }
    if !s(&spec["serviceAccountName"]).is_empty() {
        for m in
            distro_apimachinery::validation::is_dns1123_subdomain(s(&spec["serviceAccountName"]))
        {
            errs.push(FieldError::invalid(
                format!("{path}.serviceAccountName"),
                &spec["serviceAccountName"],
                m,
            ));
        }
    }
    if spec["hostNetwork"] == json!(true) {
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in arr(&c["ports"]).iter().enumerate() {
                if p["hostPort"].as_i64().unwrap_or(0) != p["containerPort"].as_i64().unwrap_or(0) {
                    errs.push(FieldError::invalid(
                        format!("{path}.containers[{i}].ports[{j}].containerPort"),
                        &p["containerPort"],
                        "must match `hostPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
}

/// Upstream's `ValidatePodTemplateSpec`: labels, annotations and the spec.
pub fn validate_template(errs: &mut Vec<FieldError>, path: &str, template: &Value) {
    if template.is_null() {
        errs.push(required(path, ""));
        return;
    }
    errs.extend(crate::validation::labels(
        &template["metadata"]["labels"],
        &format!("{path}.metadata.labels"),
    ));
    errs.extend(crate::validation::annotations(
        &template["metadata"]["annotations"],
        &format!("{path}.metadata.annotations"),
    ));
    validate_pod_spec(errs, &format!("{path}.spec"), &template["spec"]);
}

/// Validation of a new Pod.
pub fn pod_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_pod_spec(&mut errs, "spec", &obj["spec"]);
    errs
}

/// The message upstream gives when a Pod update touches a field that cannot change.
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Upstream's `ValidatePodUpdate`: only images, activeDeadlineSeconds, added tolerations and a
/// few other fields may change.
pub fn pod_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let new_spec = &obj["spec"];
    let old_spec = &old["spec"];
    if let (Some(new), Some(old)) = (
        new_spec["activeDeadlineSeconds"].as_i64(),
        old_spec["activeDeadlineSeconds"].as_i64(),
    ) {
        if new > old {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                &new_spec["activeDeadlineSeconds"],
                "must be less than or equal to previous value",
            ));
        }
    } else if new_spec["activeDeadlineSeconds"].is_null()
        && !old_spec["activeDeadlineSeconds"].is_null()
    {
        errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        ));
    }
    // Make the old spec look like the new one in every updatable field; anything left is forbidden.
    let mut munged = new_spec.clone();
    for key in ["containers", "initContainers"] {
        let olds = arr(&old_spec[key]);
        if let Some(cs) = munged.get_mut(key).and_then(Value::as_array_mut) {
            if cs.len() == olds.len() {
                for (c, o) in cs.iter_mut().zip(olds) {
                    c["image"] = o["image"].clone();
                    // Resources change through the resize subresource, not here.
                }
            }
        }
    }
    munged["activeDeadlineSeconds"] = old_spec["activeDeadlineSeconds"].clone();
    let old_tol = arr(&old_spec["tolerations"]);
    let new_tol = arr(&new_spec["tolerations"]);
    let additions_only = old_tol
        .iter()
        .all(|t| new_tol.iter().any(|n| util::same(n, t)));
    if additions_only {
        munged["tolerations"] = old_spec["tolerations"].clone();
    }
    if old_spec["terminationGracePeriodSeconds"]
        .as_i64()
        .is_some_and(|g| g < 0)
        && new_spec["terminationGracePeriodSeconds"] == json!(1)
    {
        munged["terminationGracePeriodSeconds"] = old_spec["terminationGracePeriodSeconds"].clone();
    }
    // Scheduling gates may only be removed; node selectors and affinity of gated pods are not handled.
    let old_gates = arr(&old_spec["schedulingGates"]);
    let new_gates = arr(&new_spec["schedulingGates"]);
    if new_gates.iter().all(|g| old_gates.contains(g)) {
        munged["schedulingGates"] = old_spec["schedulingGates"].clone();
    }
    // Ephemeral containers (`kubectl debug`) may be added, never changed or removed.
    let old_eph = arr(&old_spec["ephemeralContainers"]);
    let new_eph = arr(&new_spec["ephemeralContainers"]);
    if old_eph
        .iter()
        .all(|o| new_eph.iter().any(|n| util::same(n, o)))
    {
        munged["ephemeralContainers"] = old_spec["ephemeralContainers"].clone();
    }
    if !util::same(&munged, old_spec) {
        let mut paths = Vec::new();
        util::diff_paths(old_spec, &munged, "spec", &mut paths);
        let mut detail = POD_UPDATE_FORBIDDEN.to_string();
        if !paths.is_empty() {
            detail.push_str("\n  changed: ");
            detail.push_str(&paths.join(", "));
        }
        errs.push(FieldError::forbidden("spec", detail));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Table

/// Pod columns (`printPod`).
pub fn pod_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Ready", "The aggregate readiness state of this pod for accepting traffic."),
        Column::new("Status", "The aggregate status of the containers in this pod."),
        Column::new(
            "Restarts",
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        Column::age(),
        Column::new("IP", "podIP is the IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.").wide(),
        Column::new("Node", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName.").wide(),
        Column::new("Nominated Node", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.").wide(),
        Column::new("Readiness Gates", "If specified, all readiness gates will be evaluated for pod readiness. More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates").wide(),
    ]
}

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn terminated_reason(t: &Value, prefix: &str) -> String {
    let reason = s(&t["reason"]);
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    match t["signal"].as_i64().filter(|s| *s != 0) {
        Some(sig) => format!("{prefix}Signal:{sig}"),
        None => format!("{prefix}ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
    }
}

fn condition_true(status: &Value, kind: &str) -> bool {
    arr(&status["conditions"])
        .iter()
        .any(|c| s(&c["type"]) == kind && s(&c["status"]) == "True")
}

/// The READY, STATUS and RESTARTS cells of a Pod, as upstream's `printPod` computes them.
pub fn pod_status_cells(pod: &Value) -> (String, String, String) {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let phase = s(&status["phase"]);
    let mut reason = if s(&status["reason"]).is_empty() {
        phase.to_string()
    } else {
        s(&status["reason"]).to_string()
    };
    if arr(&status["conditions"])
        .iter()
        .any(|c| s(&c["type"]) == "PodScheduled" && s(&c["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let init_specs = arr(&spec["initContainers"]);
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(&c["name"]) == name && s(&c["restartPolicy"]) == "Always")
    };
    let total = arr(&spec["containers"]).len()
        + init_specs
            .iter()
            .filter(|c| s(&c["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_sidecar_restart: Option<DateTime<Utc>> = None;
    let later = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    let mut initializing = false;
    for (i, c) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        let n = c["restartCount"].as_i64().unwrap_or(0);
        restarts += n;
        let finished = parse_time(&c["lastState"]["terminated"]["finishedAt"]);
        last_restart = later(last_restart, finished);
        let sidecar = is_sidecar(s(&c["name"]));
        if sidecar {
            sidecar_restarts += n;
            last_sidecar_restart = later(last_sidecar_restart, finished);
        }
        let term = &c["state"]["terminated"];
        let waiting = &c["state"]["waiting"];
        if term.is_object() && term["exitCode"].as_i64().unwrap_or(0) == 0 {
            continue;
        }
        if sidecar && c["started"] == json!(true) {
            if c["ready"] == json!(true) {
                ready += 1;
            }
            continue;
        }
        if term.is_object() {
            reason = terminated_reason(term, "Init:");
        } else if waiting.is_object()
            && !s(&waiting["reason"]).is_empty()
            && s(&waiting["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", s(&waiting["reason"]));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    if !initializing || condition_true(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(&status["containerStatuses"]).iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            last_restart = later(
                last_restart,
                parse_time(&c["lastState"]["terminated"]["finishedAt"]),
            );
            let waiting = &c["state"]["waiting"];
            let term = &c["state"]["terminated"];
            if waiting.is_object() && !s(&waiting["reason"]).is_empty() {
                reason = s(&waiting["reason"]).to_string();
            } else if term.is_object() {
                reason = terminated_reason(term, "");
            } else if c["ready"] == json!(true) && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(status, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && s(&status["reason"]) == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => {
            format!(
                "{restarts} ({} ago)",
                table::human_duration(Utc::now().signed_duration_since(t))
            )
        }
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts_str)
}

/// Pod cells.
pub fn pod_cells(pod: &Value) -> Vec<Value> {
    let (ready, status, restarts) = pod_status_cells(pod);
    let ip = arr(&pod["status"]["podIPs"])
        .first()
        .map(|p| s(&p["ip"]).to_string())
        .unwrap_or_default();
    let ip = if ip.is_empty() {
        s(&pod["status"]["podIP"]).to_string()
    } else {
        ip
    };
    let gates = arr(&pod["spec"]["readinessGates"]);
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(&pod["status"]["conditions"]);
        let t = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| s(&c["status"]) == "True")
            })
            .count();
        format!("{t}/{}", gates.len())
    };
    vec![
        json!(table::name(pod)),
        json!(ready),
        json!(status),
        json!(restarts),
        table::age(pod),
        table::or_none(ip),
        table::or_none(s(&pod["spec"]["nodeName"])),
        table::or_none(s(&pod["status"]["nominatedNodeName"])),
        json!(gates_cell),
    ]
}

/// Pod field selectors (upstream `PodToSelectableFields`).
pub fn pod_fields(pod: &Value, field: &str) -> Option<String> {
    let spec = &pod["spec"];
    match field {
        "spec.nodeName" => util::field_str(&spec["nodeName"]),
        "spec.restartPolicy" => util::field_str(&spec["restartPolicy"]),
        "spec.schedulerName" => util::field_str(&spec["schedulerName"]),
        "spec.serviceAccountName" => util::field_str(&spec["serviceAccountName"]),
        "spec.hostNetwork" => Some((spec["hostNetwork"] == json!(true)).to_string()),
        "status.phase" => util::field_str(&pod["status"]["phase"]),
        "status.podIP" => {
            let first = arr(&pod["status"]["podIPs"])
                .first()
                .map(|p| s(&p["ip"]).to_string());
            Some(first.unwrap_or_else(|| s(&pod["status"]["podIP"]).to_string()))
        }
        "status.nominatedNodeName" => util::field_str(&pod["status"]["nominatedNodeName"]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn defaulted(pod: Value) -> Value {
        let mut pod = pod;
        pod_prepare(&mut pod);
        pod_defaults(&mut pod);
        pod
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/nginx:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("nginx@sha256:abcd"), "IfNotPresent");
    }

    #[test]
    fn minimal_pod_defaults_as_upstream() {
        let pod = defaulted(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
             "livenessProbe": {"httpGet": {"port": 80}},
             "resources": {"limits": {"cpu": "1"}}}],
            "volumes": [{"name": "v"}, {"name": "cm", "configMap": {"name": "x"}}]}}));
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["resources"]["requests"]["cpu"], "1");
        let probe = &c["livenessProbe"];
        assert_eq!(probe["timeoutSeconds"], 1);
        assert_eq!(probe["periodSeconds"], 10);
        assert_eq!(probe["successThreshold"], 1);
        assert_eq!(probe["failureThreshold"], 3);
        assert_eq!(probe["httpGet"]["scheme"], "HTTP");
        assert_eq!(probe["httpGet"]["path"], "/");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        assert!(s(&spec["volumes"][2]["name"]).starts_with("kube-api-access-"));
        assert_eq!(c["volumeMounts"][0]["mountPath"], SA_MOUNT_PATH);
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "Burstable"); // a cpu limit alone is not Guaranteed
                                                            // Defaults are idempotent (they run again on every update).
        let mut again = pod.clone();
        pod_defaults(&mut again);
        assert_eq!(again, pod);
    }

    #[test]
    fn invalid_pods_get_upstream_messages() {
        let cases = vec![
            (json!({"containers": []}), "spec.containers: Required value"),
            (json!({"containers": [{"name": "c"}]}), "spec.containers[0].image: Required value"),
            (json!({"containers": [{"image": "i"}]}), "spec.containers[0].name: Required value"),
            (
                json!({"containers": [{"name": "c", "image": "i"}, {"name": "c", "image": "i"}]}),
                "spec.containers[1].name: Duplicate value: \"c\"",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 70000}]}]}),
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Sometimes"}]}),
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
            ),
            (
                json!({"restartPolicy": "Maybe", "containers": [{"name": "c", "image": "i"}]}),
                "spec.restartPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "data", "mountPath": "/d"}]}]}),
                "spec.containers[0].volumeMounts[0].name: Not found: \"data\"",
            ),
            (
                json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}}]}),
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            ),
        ];
        for (spec, want) in cases {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": spec});
            pod_defaults(&mut pod);
            let got = msgs(&pod_validate(&pod));
            assert!(got.iter().any(|m| m == want), "want {want:?}, got {got:?}");
        }
    }

    #[test]
    fn pod_updates_are_limited() {
        let old = defaulted(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a:1"}]}}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("a:2");
        assert!(pod_validate_update(&new, &old).is_empty());
        new["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP"}]);
        let errs = pod_validate_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .message()
            .starts_with(&format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}")));
    }

    #[test]
    fn ephemeral_containers_may_only_be_added() {
        let old = defaulted(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a:1"}]}}),
        );
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "image": "busybox"}]);
        assert!(pod_validate_update(&new, &old).is_empty());
        let mut changed = new.clone();
        changed["spec"]["ephemeralContainers"][0]["image"] = json!("other");
        assert_eq!(pod_validate_update(&changed, &new).len(), 1);
        let mut removed = new.clone();
        removed["spec"]["ephemeralContainers"] = json!([]);
        assert_eq!(pod_validate_update(&removed, &new).len(), 1);
    }

    #[test]
    fn pod_status_cells_follow_printpod() {
        let base = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        let with = |status: Value| {
            let mut p = base.clone();
            p["status"] = status;
            pod_status_cells(&p)
        };
        assert_eq!(
            with(json!({"phase": "Pending"})),
            ("0/1".into(), "Pending".into(), "0".into())
        );
        assert_eq!(
            with(
                json!({"phase": "Pending", "containerStatuses": [{"name": "c", "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]})
            )
            .1,
            "ContainerCreating"
        );
        assert_eq!(
            with(
                json!({"phase": "Running", "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                "state": {"running": {}}}]})
            ),
            ("1/1".into(), "Running".into(), "0".into())
        );
        assert_eq!(
            with(
                json!({"phase": "Succeeded", "containerStatuses": [{"name": "c", "restartCount": 0,
                "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]})
            )
            .1,
            "Completed"
        );
        let ago = (Utc::now() - chrono::Duration::seconds(130)).to_rfc3339();
        let (_, st, r) = with(
            json!({"phase": "Running", "containerStatuses": [{"name": "c", "restartCount": 3,
            "lastState": {"terminated": {"finishedAt": ago, "exitCode": 1}},
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        assert_eq!(st, "CrashLoopBackOff");
        assert_eq!(r, "3 (2m10s ago)");
        let mut p = base.clone();
        p["spec"]["initContainers"] = json!([{"name": "i"}]);
        p["status"] = json!({"phase": "Pending", "initContainerStatuses": [{"name": "i", "restartCount": 0,
            "state": {"running": {}}}]});
        assert_eq!(pod_status_cells(&p).1, "Init:0/1");
        p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(pod_status_cells(&p).1, "Terminating");
    }

    #[test]
    fn pod_field_selectors() {
        let pod = json!({"spec": {"nodeName": "n1", "restartPolicy": "Always"}, "status": {"phase": "Running",
            "podIPs": [{"ip": "10.42.0.5"}]}});
        assert_eq!(pod_fields(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(pod_fields(&pod, "status.phase").as_deref(), Some("Running"));
        assert_eq!(
            pod_fields(&pod, "status.podIP").as_deref(),
            Some("10.42.0.5")
        );
        assert_eq!(
            pod_fields(&pod, "spec.hostNetwork").as_deref(),
            Some("false")
        );
        assert_eq!(pod_fields(&pod, "spec.bogus"), None);
    }
}
