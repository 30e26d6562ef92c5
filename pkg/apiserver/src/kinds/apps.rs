//! The `apps` group: Deployments, ReplicaSets, StatefulSets, DaemonSets, ControllerRevisions.

use k8s_openapi::api::apps::v1 as apps;
use serde_json::{json, Value};

use super::util::{
    self, arr, enum_check, format_label_selector, int, invalid_raw, non_negative, required, s,
    set_default,
};
use super::{pod, Builtin, Entry, ALL_VERBS};
use crate::error::FieldError;
use crate::table::{self, Column};

/// Catalogue entries of `apps/v1`.
pub fn entries() -> Vec<Entry> {
    vec![
        entry!(
            "apps",
            "v1",
            "ControllerRevision",
            "controllerrevisions",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.apps.v1.ControllerRevision",
            Builtin::of::<apps::ControllerRevision>()
                .validate(revision_validate)
                .validate_update(revision_validate_update)
                .table(revision_columns, revision_cells)
        ),
        entry!(
            "apps",
            "v1",
            "DaemonSet",
            "daemonsets",
            ns = true,
            short = ["ds"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.apps.v1.DaemonSet",
            Builtin::of::<apps::DaemonSet>()
                .status()
                .generation()
                .defaults(daemonset_defaults)
                .validate(daemonset_validate)
                .validate_update(selector_immutable)
                .table(daemonset_columns, daemonset_cells)
        ),
        entry!(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            ns = true,
            short = ["deploy"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["scale", "status"],
            def = "io.k8s.api.apps.v1.Deployment",
            Builtin::of::<apps::Deployment>()
                .status()
                .generation()
                .defaults(deployment_defaults)
                .validate(deployment_validate)
                .validate_update(selector_immutable)
                .table(deployment_columns, deployment_cells)
        ),
        entry!(
            "apps",
            "v1",
            "ReplicaSet",
            "replicasets",
            ns = true,
            short = ["rs"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["scale", "status"],
            def = "io.k8s.api.apps.v1.ReplicaSet",
            Builtin::of::<apps::ReplicaSet>()
                .status()
                .generation()
                .defaults(replicaset_defaults)
                .validate(replicaset_validate)
                .validate_update(selector_immutable)
                .table(replicaset_columns, replicaset_cells)
                .fields(replicaset_fields)
        ),
        entry!(
            "apps",
            "v1",
            "StatefulSet",
            "statefulsets",
            ns = true,
            short = ["sts"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["scale", "status"],
            def = "io.k8s.api.apps.v1.StatefulSet",
            Builtin::of::<apps::StatefulSet>()
                .status()
                .generation()
                .defaults(statefulset_defaults)
                .validate(statefulset_validate)
                .validate_update(statefulset_validate_update)
                .table(statefulset_columns, statefulset_cells)
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Shared

fn template_mut(obj: &mut Value) -> Option<&mut Value> {
    obj.get_mut("spec")?.get_mut("template")
}

/// Upstream's selector checks plus `ValidatePodTemplateSpecForReplicaSet`: the selector is
/// required and non-empty, the template's labels must match it, and the template's pods must
/// restart `Always` without an active deadline.
pub fn validate_selector_and_template(
    errs: &mut Vec<FieldError>,
    spec: &Value,
    kind: &str,
    always: bool,
) {
    let sel = &spec["selector"];
    if sel.is_null() {
        errs.push(required("spec.selector", ""));
    } else {
        util::label_selector(errs, "spec.selector", sel);
        if util::is_empty(&sel["matchLabels"]) && util::is_empty(&sel["matchExpressions"]) {
            errs.push(invalid_raw(
                "spec.selector",
                &util::go_label_selector(sel),
                &format!("empty selector is invalid for {kind}"),
            ));
        }
    }
    let template = &spec["template"];
    match util::selector_of(sel) {
        None => errs.push(invalid_raw(
            "spec.selector",
            &util::go_label_selector(sel),
            "invalid label selector",
        )),
        Some(selector) => {
            if template.is_null() {
                errs.push(required("spec.template", ""));
                return;
            }
            if !selector.is_empty() && !selector.matches_value(template["metadata"].get("labels")) {
                errs.push(invalid_raw(
                    "spec.template.metadata.labels",
                    &util::go_string_map(&template["metadata"]["labels"]),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    pod::validate_template(errs, "spec.template", template);
    if always {
        let rp = &template["spec"]["restartPolicy"];
        if s(rp) != "Always" && !s(rp).is_empty() {
            errs.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                rp,
                &["Always"],
            ));
        }
        if !template["spec"]["activeDeadlineSeconds"].is_null() {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                format!(
                    "activeDeadlineSeconds in {} is not Supported",
                    kind_title(kind)
                ),
            ));
        }
    }
}

fn kind_title(kind: &str) -> &'static str {
    match kind {
        "deployment" => "ReplicaSet",
        "replicaset" => "ReplicaSet",
        "statefulset" => "StatefulSet",
        _ => "DaemonSet",
    }
}

/// `spec.selector` may not change (apps/v1).
fn selector_immutable(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !util::same(&obj["spec"]["selector"], &old["spec"]["selector"]) {
        errs.push(invalid_raw(
            "spec.selector",
            &util::go_label_selector(&obj["spec"]["selector"]),
            "field is immutable",
        ));
    }
    errs
}

/// Upstream's `ValidatePositiveIntOrPercent`; returns the value as a number or percentage.
fn int_or_percent(errs: &mut Vec<FieldError>, path: &str, v: &Value) {
    match v {
        Value::String(p) => {
            let ok = p
                .strip_suffix('%')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                errs.push(invalid_raw(
                    path,
                    p,
                    &distro_apimachinery::validation::regex_error(
                        "a valid percent string must be a numeric string followed by an ending '%'",
                        "[0-9]+%",
                        &["1%", "93%"],
                    ),
                ));
            } else if p
                .trim_end_matches('%')
                .parse::<u64>()
                .is_ok_and(|n| n > 100)
            {
                errs.push(invalid_raw(path, p, "must not be greater than 100%"));
            }
        }
        Value::Number(_) => non_negative(errs, path, v),
        _ => {}
    }
}

fn is_zero_int_or_percent(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(p) => p.trim_end_matches('%').parse::<u64>() == Ok(0),
        _ => false,
    }
}

fn template_cells(spec: &Value) -> (Value, Value, Value) {
    let (names, images) = util::containers_and_images(&spec["template"]["spec"]);
    (
        json!(names),
        json!(images),
        json!(format_label_selector(&spec["selector"])),
    )
}

/// `<selector>` column text for Deployments: upstream uses `Selector.String()` (empty, not
/// `<none>`, when everything is selected).
fn deployment_selector(spec: &Value) -> String {
    match util::selector_of(&spec["selector"]) {
        Some(s) => util::selector_string(&s),
        None => "<invalid>".into(),
    }
}

const CONTAINERS: &str = "Names of each container in the template.";
const IMAGES: &str = "Images referenced by each container in the template.";

// ---------------------------------------------------------------------------------------------
// Deployment

fn deployment_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "strategy", json!({}));
    util::set_default_str(&mut spec["strategy"], "type", "RollingUpdate");
    if s(&spec["strategy"]["type"]) == "RollingUpdate" {
        let ru = &mut spec["strategy"]["rollingUpdate"];
        set_default(ru, "maxUnavailable", json!("25%"));
        set_default(ru, "maxSurge", json!("25%"));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    if let Some(t) = template_mut(obj) {
        pod::default_template(t);
    }
}

fn deployment_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    non_negative(&mut errs, "spec.replicas", &spec["replicas"]);
    validate_selector_and_template(&mut errs, spec, "deployment", true);
    let strategy = &spec["strategy"];
    let ty = s(&strategy["type"]);
    if ty.is_empty() {
        errs.push(required("spec.strategy.type", ""));
    } else {
        enum_check(
            &mut errs,
            "spec.strategy.type",
            &strategy["type"],
            &["Recreate", "RollingUpdate"],
        );
    }
    let ru = &strategy["rollingUpdate"];
    if ty == "Recreate" && !ru.is_null() {
        errs.push(FieldError::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ));
    }
    if ty == "RollingUpdate" && ru.is_object() {
        int_or_percent(
            &mut errs,
            "spec.strategy.rollingUpdate.maxUnavailable",
            &ru["maxUnavailable"],
        );
        int_or_percent(
            &mut errs,
            "spec.strategy.rollingUpdate.maxSurge",
            &ru["maxSurge"],
        );
        if is_zero_int_or_percent(&ru["maxSurge"]) && is_zero_int_or_percent(&ru["maxUnavailable"])
        {
            errs.push(invalid_raw(
                "spec.strategy.rollingUpdate.maxUnavailable",
                &util::int_or_string(&ru["maxUnavailable"]),
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    for k in [
        "revisionHistoryLimit",
        "minReadySeconds",
        "progressDeadlineSeconds",
    ] {
        non_negative(&mut errs, &format!("spec.{k}"), &spec[k]);
    }
    if let (Some(p), min) = (
        spec["progressDeadlineSeconds"].as_i64(),
        spec["minReadySeconds"].as_i64().unwrap_or(0),
    ) {
        if p <= min {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &spec["progressDeadlineSeconds"],
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

fn deployment_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Ready", "Number of the pod with ready state"),
        Column::int("Up-to-date", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
        Column::int("Available", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
        Column::age(),
        Column::new("Containers", CONTAINERS).wide(),
        Column::new("Images", IMAGES).wide(),
        Column::new("Selector", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.").wide(),
    ]
}

fn deployment_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let status = &obj["status"];
    let (names, images, _) = template_cells(spec);
    vec![
        json!(table::name(obj)),
        json!(format!(
            "{}/{}",
            status["readyReplicas"].as_i64().unwrap_or(0),
            spec["replicas"].as_i64().unwrap_or(0)
        )),
        int(&status["updatedReplicas"]),
        int(&status["availableReplicas"]),
        table::age(obj),
        names,
        images,
        json!(deployment_selector(spec)),
    ]
}

// ---------------------------------------------------------------------------------------------
// ReplicaSet

fn replicaset_defaults(obj: &mut Value) {
    if obj["spec"].is_object() {
        set_default(&mut obj["spec"], "replicas", json!(1));
    }
    if let Some(t) = template_mut(obj) {
        pod::default_template(t);
    }
}

fn replicaset_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    non_negative(&mut errs, "spec.replicas", &spec["replicas"]);
    non_negative(&mut errs, "spec.minReadySeconds", &spec["minReadySeconds"]);
    validate_selector_and_template(&mut errs, spec, "replicaset", true);
    errs
}

fn replicaset_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::int("Desired", "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
        Column::int("Current", "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
        Column::int("Ready", "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
        Column::age(),
        Column::new("Containers", CONTAINERS).wide(),
        Column::new("Images", IMAGES).wide(),
        Column::new("Selector", "Selector is a label query over pods that should match the replica count. Label keys and values that must match in order to be controlled by this replica set. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn replicaset_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let (names, images, selector) = template_cells(spec);
    vec![
        json!(table::name(obj)),
        int(&spec["replicas"]),
        int(&obj["status"]["replicas"]),
        int(&obj["status"]["readyReplicas"]),
        table::age(obj),
        names,
        images,
        selector,
    ]
}

fn replicaset_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.replicas" => Some(obj["status"]["replicas"].as_i64().unwrap_or(0).to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// StatefulSet

fn statefulset_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    util::set_default_str(spec, "podManagementPolicy", "OrderedReady");
    set_default(spec, "updateStrategy", json!({}));
    if s(&spec["updateStrategy"]["type"]).is_empty() {
        spec["updateStrategy"]["type"] = json!("RollingUpdate");
        set_default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
    }
    if s(&spec["updateStrategy"]["type"]) == "RollingUpdate"
        && spec["updateStrategy"]["rollingUpdate"].is_object()
    {
        set_default(
            &mut spec["updateStrategy"]["rollingUpdate"],
            "partition",
            json!(0),
        );
    }
    set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
    util::set_default_str(
        &mut spec["persistentVolumeClaimRetentionPolicy"],
        "whenDeleted",
        "Retain",
    );
    util::set_default_str(
        &mut spec["persistentVolumeClaimRetentionPolicy"],
        "whenScaled",
        "Retain",
    );
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    for pvc in util::items_mut(spec, "volumeClaimTemplates") {
        if pvc["spec"].is_object() {
            util::set_default_str(&mut pvc["spec"], "volumeMode", "Filesystem");
        }
        if pvc["status"].is_null() {
            pvc["status"] = json!({});
        }
        util::set_default_str(&mut pvc["status"], "phase", "Pending");
        util::set_default_str(pvc, "apiVersion", "v1");
        util::set_default_str(pvc, "kind", "PersistentVolumeClaim");
    }
    if let Some(t) = template_mut(obj) {
        pod::default_template(t);
    }
}

fn statefulset_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    non_negative(&mut errs, "spec.replicas", &spec["replicas"]);
    non_negative(&mut errs, "spec.minReadySeconds", &spec["minReadySeconds"]);
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        &spec["revisionHistoryLimit"],
    );
    non_negative(&mut errs, "spec.ordinals.start", &spec["ordinals"]["start"]);
    enum_check(
        &mut errs,
        "spec.podManagementPolicy",
        &spec["podManagementPolicy"],
        &["OrderedReady", "Parallel"],
    );
    let us = &spec["updateStrategy"];
    match s(&us["type"]) {
        "" => errs.push(required("spec.updateStrategy", "")),
        "OnDelete" => {
            if !us["rollingUpdate"].is_null() {
                errs.push(invalid_raw(
                    "spec.updateStrategy.rollingUpdate",
                    &us["rollingUpdate"].to_string(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            non_negative(
                &mut errs,
                "spec.updateStrategy.rollingUpdate.partition",
                &us["rollingUpdate"]["partition"],
            );
        }
        _ => errs.push(FieldError::not_supported(
            "spec.updateStrategy",
            &us["type"],
            &["OnDelete", "RollingUpdate"],
        )),
    }
    let retention = &spec["persistentVolumeClaimRetentionPolicy"];
    enum_check(
        &mut errs,
        "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
        &retention["whenDeleted"],
        &["Retain", "Delete"],
    );
    enum_check(
        &mut errs,
        "spec.persistentVolumeClaimRetentionPolicy.whenScaled",
        &retention["whenScaled"],
        &["Retain", "Delete"],
    );
    validate_selector_and_template(&mut errs, spec, "statefulset", true);
    for (i, pvc) in arr(&spec["volumeClaimTemplates"]).iter().enumerate() {
        super::core::validate_pvc_spec(
            &mut errs,
            &format!("spec.volumeClaimTemplates[{i}].spec"),
            &pvc["spec"],
        );
    }
    errs
}

/// Upstream's message for StatefulSet updates touching other fields.
pub const STATEFULSET_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn statefulset_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut munged = obj["spec"].clone();
    for k in [
        "replicas",
        "template",
        "updateStrategy",
        "minReadySeconds",
        "ordinals",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
    ] {
        munged[k] = old["spec"][k].clone();
    }
    if !util::same(&munged, &old["spec"]) {
        errs.push(FieldError::forbidden("spec", STATEFULSET_UPDATE_FORBIDDEN));
    }
    errs
}

fn statefulset_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Ready", "Number of the pod with ready state"),
        Column::age(),
        Column::new("Containers", CONTAINERS).wide(),
        Column::new("Images", IMAGES).wide(),
    ]
}

fn statefulset_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let (names, images, _) = template_cells(spec);
    vec![
        json!(table::name(obj)),
        json!(format!(
            "{}/{}",
            obj["status"]["readyReplicas"].as_i64().unwrap_or(0),
            spec["replicas"].as_i64().unwrap_or(0)
        )),
        table::age(obj),
        names,
        images,
    ]
}

// ---------------------------------------------------------------------------------------------
// DaemonSet

fn daemonset_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "updateStrategy", json!({}));
    util::set_default_str(&mut spec["updateStrategy"], "type", "RollingUpdate");
    if s(&spec["updateStrategy"]["type"]) == "RollingUpdate" {
        let ru = &mut spec["updateStrategy"]["rollingUpdate"];
        set_default(ru, "maxUnavailable", json!(1));
        set_default(ru, "maxSurge", json!(0));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(t) = template_mut(obj) {
        pod::default_template(t);
    }
}

fn daemonset_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    validate_selector_and_template(&mut errs, spec, "daemonset", true);
    non_negative(&mut errs, "spec.minReadySeconds", &spec["minReadySeconds"]);
    non_negative(
        &mut errs,
        "spec.revisionHistoryLimit",
        &spec["revisionHistoryLimit"],
    );
    let us = &spec["updateStrategy"];
    match s(&us["type"]) {
        "" => errs.push(required("spec.updateStrategy.type", "")),
        "OnDelete" => {}
        "RollingUpdate" => {
            let ru = &us["rollingUpdate"];
            if ru.is_null() {
                errs.push(required("spec.updateStrategy.rollingUpdate", ""));
            } else {
                int_or_percent(
                    &mut errs,
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    &ru["maxUnavailable"],
                );
                int_or_percent(
                    &mut errs,
                    "spec.updateStrategy.rollingUpdate.maxSurge",
                    &ru["maxSurge"],
                );
                if is_zero_int_or_percent(&ru["maxUnavailable"])
                    && is_zero_int_or_percent(&ru["maxSurge"])
                {
                    errs.push(invalid_raw(
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                        &util::int_or_string(&ru["maxUnavailable"]),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        }
        _ => errs.push(FieldError::not_supported(
            "spec.updateStrategy.type",
            &us["type"],
            &["OnDelete", "RollingUpdate"],
        )),
    }
    errs
}

fn daemonset_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::int("Desired", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
        Column::int("Current", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
        Column::int("Ready", "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition."),
        Column::int("Up-to-date", "The total number of nodes that are running updated daemon pod"),
        Column::int("Available", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
        Column::new("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
        Column::age(),
        Column::new("Containers", CONTAINERS).wide(),
        Column::new("Images", IMAGES).wide(),
        Column::new("Selector", "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn daemonset_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let st = &obj["status"];
    let (names, images, selector) = template_cells(spec);
    vec![
        json!(table::name(obj)),
        int(&st["desiredNumberScheduled"]),
        int(&st["currentNumberScheduled"]),
        int(&st["numberReady"]),
        int(&st["updatedNumberScheduled"]),
        int(&st["numberAvailable"]),
        json!(util::format_labels(
            &spec["template"]["spec"]["nodeSelector"]
        )),
        table::age(obj),
        names,
        images,
        selector,
    ]
}

// ---------------------------------------------------------------------------------------------
// ControllerRevision

fn revision_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    non_negative(&mut errs, "revision", &obj["revision"]);
    errs
}

fn revision_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !util::same(&obj["data"], &old["data"]) {
        errs.push(invalid_raw(
            "data",
            "runtime.RawExtension{...}",
            "field is immutable",
        ));
    }
    errs
}

fn revision_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Controller", "Controller of the object"),
        Column::int(
            "Revision",
            "Revision indicates the revision of the state represented by Data.",
        ),
        Column::age(),
    ]
}

/// `<kind>.<group>/<name>` of the controlling owner, as `formatResourceName`.
pub fn controller_of(obj: &Value) -> String {
    let Some(owner) = arr(&obj["metadata"]["ownerReferences"])
        .iter()
        .find(|o| o["controller"] == json!(true))
    else {
        return "<none>".into();
    };
    let group = s(&owner["apiVersion"])
        .rsplit_once('/')
        .map_or("", |(g, _)| g);
    let kind = s(&owner["kind"]);
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    if gk.is_empty() {
        s(&owner["name"]).to_string()
    } else {
        format!("{}/{}", gk.to_lowercase(), s(&owner["name"]))
    }
}

fn revision_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(controller_of(obj)),
        int(&obj["revision"]),
        table::age(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "d"}, "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}})
    }

    #[test]
    fn deployment_defaults_as_upstream() {
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        deployment_defaults(&mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(spec["template"]["spec"]["enableServiceLinks"].is_null());
        assert!(
            deployment_validate(&d).is_empty(),
            "{:?}",
            deployment_validate(&d)
        );
    }

    #[test]
    fn invalid_deployments() {
        let mut d = deployment(Value::Null, json!({"app": "a"}));
        deployment_defaults(&mut d);
        assert_eq!(msgs(&deployment_validate(&d)), vec![
            "spec.selector: Required value",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"a\"}: `selector` does not match template `labels`",
        ]);
        let mut d = deployment(json!({"matchLabels": {"app": "b"}}), json!({"app": "a"}));
        deployment_defaults(&mut d);
        assert_eq!(msgs(&deployment_validate(&d)), vec![
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"a\"}: `selector` does not match template `labels`",
        ]);
        let mut d = deployment(json!({}), json!({"app": "a"}));
        deployment_defaults(&mut d);
        assert_eq!(msgs(&deployment_validate(&d)), vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment",
        ]);
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}});
        deployment_defaults(&mut d);
        assert_eq!(msgs(&deployment_validate(&d)), vec![
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ]);
    }

    #[test]
    fn selectors_are_immutable() {
        let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let new = deployment(json!({"matchLabels": {"app": "b"}}), json!({"app": "b"}));
        assert_eq!(msgs(&selector_immutable(&new, &old)), vec![
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
        ]);
    }

    #[test]
    fn statefulset_updates_are_limited() {
        let mut old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        old["spec"]["serviceName"] = json!("s");
        statefulset_defaults(&mut old);
        assert!(
            statefulset_validate(&old).is_empty(),
            "{:?}",
            statefulset_validate(&old)
        );
        assert_eq!(old["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            old["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert!(statefulset_validate_update(&new, &old).is_empty());
        new["spec"]["serviceName"] = json!("t");
        assert_eq!(
            msgs(&statefulset_validate_update(&new, &old)),
            vec![format!("spec: Forbidden: {STATEFULSET_UPDATE_FORBIDDEN}")]
        );
    }

    #[test]
    fn workload_cells() {
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        deployment_defaults(&mut d);
        d["spec"]["replicas"] = json!(3);
        d["status"] = json!({"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2});
        let cells = deployment_cells(&d);
        assert_eq!(cells[1], "2/3");
        assert_eq!(cells[2], 3);
        assert_eq!(cells[3], 2);
        assert_eq!(cells[5], "c");
        assert_eq!(cells[6], "nginx:1");
        assert_eq!(cells[7], "app=a");
        assert_eq!(deployment_columns().len(), cells.len());
        let mut ds = d.clone();
        daemonset_defaults(&mut ds);
        assert_eq!(daemonset_cells(&ds)[6], "<none>");
        assert_eq!(daemonset_columns().len(), daemonset_cells(&ds).len());
        assert_eq!(
            replicaset_fields(&d, "status.replicas").as_deref(),
            Some("0")
        );
        let rev = json!({"metadata": {"name": "r", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "controller": true}]},
            "revision": 2});
        assert_eq!(revision_cells(&rev)[1], "daemonset.apps/x");
    }
}
