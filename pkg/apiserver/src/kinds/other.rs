//! The smaller groups: autoscaling, policy, coordination, events, scheduling, certificates,
//! apiextensions, and the review kinds of authentication/authorization.

use k8s_openapi::api::{
    authentication::v1 as authn, authorization::v1 as authz, autoscaling::v2 as autoscaling,
    certificates::v1 as certificates, coordination::v1 as coordination, events::v1 as events,
    policy::v1 as policy, scheduling::v1 as scheduling,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use serde_json::{json, Value};

use super::util::{
    self, arr, enum_check, int, invalid_raw, non_negative, required, s, set_default,
};
use super::{core, Builtin, Entry, ALL_VERBS, CREATE_ONLY};
use crate::error::FieldError;
use crate::table::{self, Column};

/// Catalogue entries of the remaining groups.
pub fn entries() -> Vec<Entry> {
    let mut v = vec![
        entry!(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            ns = true,
            short = ["hpa"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
            Builtin::of::<autoscaling::HorizontalPodAutoscaler>()
                .generation()
                .status()
                .convert(hpa_to_v2)
                .defaults(hpa_defaults)
                .validate(hpa_validate)
                .table(hpa_columns, hpa_cells)
        ),
        entry!(
            "autoscaling",
            "v1",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            ns = true,
            short = ["hpa"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler",
            Builtin::of::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>()
                .generation()
                .status()
                .convert(hpa_to_v1)
                .defaults(hpa_v1_defaults)
                .validate(|obj| hpa_validate(&hpa_to_v2(obj.clone())))
                .table(hpa_columns, |obj| hpa_cells(&hpa_to_v2(obj.clone())))
        ),
        entry!(
            "policy",
            "v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            ns = true,
            short = ["pdb"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.policy.v1.PodDisruptionBudget",
            Builtin::of::<policy::PodDisruptionBudget>()
                .generation()
                .status()
                .validate(pdb_validate)
                .table(pdb_columns, pdb_cells)
        ),
        entry!(
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.coordination.v1.Lease",
            Builtin::of::<coordination::Lease>()
                .create_on_update()
                .validate(lease_validate)
                .table(lease_columns, lease_cells)
        ),
        entry!(
            "events.k8s.io",
            "v1",
            "Event",
            "events",
            ns = true,
            short = ["ev"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.events.v1.Event",
            Builtin::of::<events::Event>()
                .convert(core::event_convert_to_v1)
                .validate(event_validate)
                .table(core::event_columns, event_cells)
                .fields(event_fields)
        ),
        entry!(
            "scheduling.k8s.io",
            "v1",
            "PriorityClass",
            "priorityclasses",
            ns = false,
            short = ["pc"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.scheduling.v1.PriorityClass",
            Builtin::of::<scheduling::PriorityClass>()
                .defaults(pc_defaults)
                .validate(pc_validate)
                .validate_update(pc_validate_update)
                .table(pc_columns, pc_cells)
        ),
        entry!(
            "certificates.k8s.io",
            "v1",
            "CertificateSigningRequest",
            "certificatesigningrequests",
            ns = false,
            short = ["csr"],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["approval", "status"],
            def = "io.k8s.api.certificates.v1.CertificateSigningRequest",
            Builtin::of::<certificates::CertificateSigningRequest>()
                .status()
                .prepare_for_create(csr_prepare)
                .validate(csr_validate)
                .validate_update(csr_validate_update)
                .table(csr_columns, csr_cells)
                .fields(csr_fields)
        ),
        entry!(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            ns = false,
            short = ["crd", "crds"],
            cat = ["api-extensions"],
            verbs = ALL_VERBS,
            sub = ["status"],
            def =
                "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
            Builtin::of::<apiextensions::CustomResourceDefinition>()
                .generation()
                .status()
                .prepare_for_create(crd_prepare)
                .defaults(crd_defaults)
                .validate(crd_validate)
                .validate_update(crd_validate_update)
        ),
        entry!(
            "authentication.k8s.io",
            "v1",
            "TokenReview",
            "tokenreviews",
            ns = false,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authentication.v1.TokenReview",
            Builtin::of::<authn::TokenReview>()
        ),
        entry!(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            ns = false,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authentication.v1.SelfSubjectReview",
            Builtin::of::<authn::SelfSubjectReview>()
        ),
        // kubectl 1.27's `auth whoami` asks v1beta1 (same schema as v1).
        entry!(
            "authentication.k8s.io",
            "v1beta1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            ns = false,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authentication.v1beta1.SelfSubjectReview",
            Builtin::of::<authn::SelfSubjectReview>()
        ),
        entry!(
            "authorization.k8s.io",
            "v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            ns = true,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authorization.v1.LocalSubjectAccessReview",
            Builtin::of::<authz::LocalSubjectAccessReview>()
        ),
        entry!(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            ns = false,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
            Builtin::of::<authz::SelfSubjectAccessReview>()
        ),
        entry!(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            ns = false,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
            Builtin::of::<authz::SelfSubjectRulesReview>()
        ),
        entry!(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            ns = false,
            short = [],
            cat = [],
            verbs = CREATE_ONLY,
            sub = [],
            def = "io.k8s.api.authorization.v1.SubjectAccessReview",
            Builtin::of::<authz::SubjectAccessReview>()
        ),
    ];
    for e in v.iter_mut() {
        if e.verbs == CREATE_ONLY {
            e.virtual_only = true;
        }
    }
    v
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscaler

fn fill_rules(rules: &mut Value, window: i64, policies: Value) {
    if rules.is_null() {
        *rules = json!({});
    }
    set_default(rules, "stabilizationWindowSeconds", json!(window));
    util::set_default_str(rules, "selectPolicy", "Max");
    if util::is_empty(&rules["policies"]) {
        rules["policies"] = policies;
    }
}

/// `SetDefaults_HorizontalPodAutoscaler` (autoscaling/v2).
/// Annotations autoscaling/v1 keeps what it has no fields for in, so a v2 object read and
/// written back through v1 loses nothing (upstream's names).
const HPA_METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const HPA_BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const HPA_CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const HPA_CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

fn is_cpu_utilization(m: &Value, target: &str) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && (target != "target" || m["resource"]["target"]["type"] == "Utilization")
}

/// An HPA another version stored, as autoscaling/v1.
fn hpa_to_v1(mut obj: Value) -> Value {
    if obj["apiVersion"] == "autoscaling/v1" {
        return obj;
    }
    let spec = obj["spec"].take();
    let status = obj["status"].take();
    let mut annotations = obj["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut out_spec = json!({});
    for k in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if !spec[k].is_null() {
            out_spec[k] = spec[k].clone();
        }
    }
    let mut others = Vec::new();
    for m in arr(&spec["metrics"]) {
        if is_cpu_utilization(m, "target") {
            out_spec["targetCPUUtilizationPercentage"] =
                m["resource"]["target"]["averageUtilization"].clone();
        } else {
            others.push(m.clone());
        }
    }
    if !others.is_empty() {
        annotations.insert(HPA_METRICS.into(), json!(Value::from(others).to_string()));
    }
    if spec["behavior"].is_object() {
        annotations.insert(HPA_BEHAVIOR.into(), json!(spec["behavior"].to_string()));
    }
    obj["apiVersion"] = json!("autoscaling/v1");
    obj["spec"] = out_spec;
    if status.is_object() {
        let mut out = json!({});
        for k in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if !status[k].is_null() {
                out[k] = status[k].clone();
            }
        }
        if out["desiredReplicas"].is_null() {
            out["desiredReplicas"] = json!(0);
        }
        let mut others = Vec::new();
        for m in arr(&status["currentMetrics"]) {
            if is_cpu_utilization(m, "current")
                && !m["resource"]["current"]["averageUtilization"].is_null()
            {
                out["currentCPUUtilizationPercentage"] =
                    m["resource"]["current"]["averageUtilization"].clone();
            } else {
                others.push(m.clone());
            }
        }
        if !others.is_empty() {
            annotations.insert(
                HPA_CURRENT_METRICS.into(),
                json!(Value::from(others).to_string()),
            );
        }
        if !util::is_empty(&status["conditions"]) {
            annotations.insert(
                HPA_CONDITIONS.into(),
                json!(status["conditions"].to_string()),
            );
        }
        obj["status"] = out;
    } else if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    if !annotations.is_empty() {
        obj["metadata"]["annotations"] = Value::Object(annotations);
    }
    obj
}

/// An HPA another version stored (autoscaling/v1), as autoscaling/v2.
fn hpa_to_v2(mut obj: Value) -> Value {
    if obj["apiVersion"] != "autoscaling/v1" {
        return obj;
    }
    let mut annotations = obj["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut take = |k: &str| -> Value {
        annotations
            .remove(k)
            .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()))
            .unwrap_or(Value::Null)
    };
    let (metrics, behavior, current, conditions) = (
        take(HPA_METRICS),
        take(HPA_BEHAVIOR),
        take(HPA_CURRENT_METRICS),
        take(HPA_CONDITIONS),
    );
    let spec = obj["spec"].take();
    let mut out = json!({});
    for k in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if !spec[k].is_null() {
            out[k] = spec[k].clone();
        }
    }
    let mut list = Vec::new();
    if let Some(cpu) = spec["targetCPUUtilizationPercentage"].as_i64() {
        list.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": cpu}}}));
    }
    list.extend(arr(&metrics).iter().cloned());
    if !list.is_empty() {
        out["metrics"] = json!(list);
    }
    if behavior.is_object() {
        out["behavior"] = behavior;
    }
    obj["apiVersion"] = json!("autoscaling/v2");
    obj["spec"] = out;
    let status = obj["status"].take();
    if status.is_object() {
        let mut out = json!({});
        for k in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if !status[k].is_null() {
                out[k] = status[k].clone();
            }
        }
        let mut list = Vec::new();
        if let Some(cpu) = status["currentCPUUtilizationPercentage"].as_i64() {
            list.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": cpu}}}));
        }
        list.extend(arr(&current).iter().cloned());
        if !list.is_empty() {
            out["currentMetrics"] = json!(list);
        }
        if conditions.is_array() {
            out["conditions"] = conditions;
        }
        obj["status"] = out;
    } else if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    if annotations.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    } else {
        obj["metadata"]["annotations"] = Value::Object(annotations);
    }
    obj
}

fn hpa_v1_defaults(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
        set_default(spec, "minReplicas", json!(1));
    }
}

fn hpa_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "minReplicas", json!(1));
    if util::is_empty(&spec["metrics"]) {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if spec["behavior"].is_object() {
        fill_rules(
            &mut spec["behavior"]["scaleUp"],
            0,
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
        fill_rules(
            &mut spec["behavior"]["scaleDown"],
            300,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

fn hpa_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let min = spec["minReplicas"].as_i64();
    let max = spec["maxReplicas"].as_i64().unwrap_or(0);
    if let Some(m) = min {
        if m < 1 {
            errs.push(FieldError::invalid(
                "spec.minReplicas",
                &spec["minReplicas"],
                "must be greater than or equal to 1",
            ));
        }
    }
    if max < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &json!(max),
            "must be greater than 0",
        ));
    }
    if let Some(m) = min {
        if max < m && max >= 1 {
            errs.push(FieldError::invalid(
                "spec.maxReplicas",
                &json!(max),
                "must be greater than or equal to `minReplicas`",
            ));
        }
    }
    let r = &spec["scaleTargetRef"];
    if s(&r["kind"]).is_empty() {
        errs.push(required("spec.scaleTargetRef.kind", ""));
    }
    if s(&r["name"]).is_empty() {
        errs.push(required("spec.scaleTargetRef.name", ""));
    }
    const TYPES: &[&str] = &[
        "ContainerResource",
        "External",
        "Object",
        "Pods",
        "Resource",
    ];
    for (i, m) in arr(&spec["metrics"]).iter().enumerate() {
        let p = format!("spec.metrics[{i}]");
        let ty = s(&m["type"]);
        if ty.is_empty() {
            errs.push(required(
                format!("{p}.type"),
                "must specify a metric source type",
            ));
            continue;
        }
        enum_check(&mut errs, &format!("{p}.type"), &m["type"], TYPES);
        let key = match ty {
            "ContainerResource" => "containerResource",
            "External" => "external",
            "Object" => "object",
            "Pods" => "pods",
            _ => "resource",
        };
        if m[key].is_null() {
            errs.push(required(format!("{p}.{key}"), &format!("must populate information for the given metric source (only allowed when type is {ty})")));
        }
        let t = &m[key]["target"];
        if t.is_object() {
            enum_check(
                &mut errs,
                &format!("{p}.{key}.target.type"),
                &t["type"],
                &["AverageValue", "Utilization", "Value"],
            );
            if t["averageUtilization"].as_i64().is_some_and(|u| u < 1) {
                errs.push(FieldError::invalid(
                    format!("{p}.{key}.target.averageUtilization"),
                    &t["averageUtilization"],
                    "must be greater than 0",
                ));
            }
        }
    }
    errs
}

fn hpa_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Reference", "Reference to the object being scaled"),
        Column::new("Targets", "Current and desired utilization or metric values"),
        Column::new("MinPods", "Lower limit for the number of pods that can be set by the autoscaler, default 1."),
        Column::int("MaxPods", "Upper limit for the number of pods that can be set by the autoscaler; cannot be smaller than MinReplicas."),
        Column::int("Replicas", "Current number of replicas of pods managed by this autoscaler."),
        Column::age(),
    ]
}

fn qty(v: &Value) -> String {
    util::quantity_string(v)
}

/// Upstream's `formatHPAMetrics`: up to two `current/target` pairs.
pub fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    let mut list = Vec::new();
    for (i, m) in specs.iter().enumerate() {
        let st = statuses.get(i).unwrap_or(&Value::Null);
        let entry = match s(&m["type"]) {
            "External" | "Object" => {
                let key = if s(&m["type"]) == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = &m[key]["target"];
                let cur = &st[key]["current"];
                if !target["averageValue"].is_null() {
                    let c = if cur["averageValue"].is_null() {
                        "<unknown>".into()
                    } else {
                        qty(&cur["averageValue"])
                    };
                    format!("{c}/{} (avg)", qty(&target["averageValue"]))
                } else {
                    let c = if st[key].is_null() {
                        "<unknown>".into()
                    } else {
                        qty(&cur["value"])
                    };
                    format!("{c}/{}", qty(&target["value"]))
                }
            }
            "Pods" => {
                let c = if st["pods"].is_null() {
                    "<unknown>".into()
                } else {
                    qty(&st["pods"]["current"]["averageValue"])
                };
                format!("{c}/{}", qty(&m["pods"]["target"]["averageValue"]))
            }
            "Resource" | "ContainerResource" => {
                let key = if s(&m["type"]) == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let src = &m[key];
                let name = s(&src["name"]);
                let prefix = if key == "resource" {
                    name.to_string()
                } else {
                    format!("{name}/{}", s(&src["container"]))
                };
                let target = &src["target"];
                if !target["averageValue"].is_null() {
                    let c = if st[key].is_null() {
                        "<unknown>".into()
                    } else {
                        qty(&st[key]["current"]["averageValue"])
                    };
                    format!("{prefix}: {c}/{}", qty(&target["averageValue"]))
                } else {
                    let c = match st[key]["current"]["averageUtilization"].as_i64() {
                        Some(u) if !st[key].is_null() => format!("{u}%"),
                        _ => "<unknown>".into(),
                    };
                    let t = match target["averageUtilization"].as_i64() {
                        Some(u) => format!("{u}%"),
                        None => "<auto>".into(),
                    };
                    format!("{prefix}: {c}/{t}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(entry);
    }
    let max = 2;
    let count = list.len();
    if count > max {
        list.truncate(max);
        format!("{} + {} more...", list.join(", "), count - max)
    } else {
        list.join(", ")
    }
}

fn hpa_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let r = &spec["scaleTargetRef"];
    let min = match spec["minReplicas"].as_i64() {
        Some(m) => m.to_string(),
        None => "<unset>".into(),
    };
    vec![
        json!(table::name(obj)),
        json!(format!("{}/{}", s(&r["kind"]), s(&r["name"]))),
        json!(format_hpa_metrics(
            arr(&spec["metrics"]),
            arr(&obj["status"]["currentMetrics"])
        )),
        json!(min),
        int(&spec["maxReplicas"]),
        int(&obj["status"]["currentReplicas"]),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// PodDisruptionBudget

fn pdb_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
        errs.push(invalid_raw(
            "spec",
            "policy.PodDisruptionBudgetSpec{...}",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for k in ["minAvailable", "maxUnavailable"] {
        let v = &spec[k];
        match v {
            Value::Number(_) => non_negative(&mut errs, &format!("spec.{k}"), v),
            Value::String(p) => {
                let n = p.strip_suffix('%').and_then(|n| n.parse::<i64>().ok());
                match n {
                    None => errs.push(invalid_raw(
                        format!("spec.{k}"),
                        p,
                        &distro_apimachinery::validation::regex_error(
                            "a valid percent string must be a numeric string followed by an ending '%'",
                            "[0-9]+%",
                            &["1%", "93%"],
                        ),
                    )),
                    Some(n) if n > 100 => errs.push(invalid_raw(format!("spec.{k}"), p, "must not be greater than 100%")),
                    Some(_) => {}
                }
            }
            _ => {}
        }
    }
    util::label_selector(&mut errs, "spec.selector", &spec["selector"]);
    enum_check(
        &mut errs,
        "spec.unhealthyPodEvictionPolicy",
        &spec["unhealthyPodEvictionPolicy"],
        &["AlwaysAllow", "IfHealthyBudget"],
    );
    errs
}

fn pdb_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new(
            "Min Available",
            "The minimum number of pods that must be available.",
        ),
        Column::new(
            "Max Unavailable",
            "The maximum number of pods that may be unavailable.",
        ),
        Column::int(
            "Allowed Disruptions",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        Column::age(),
    ]
}

fn pdb_cells(obj: &Value) -> Vec<Value> {
    let na = |v: &Value| {
        if v.is_null() {
            "N/A".to_string()
        } else {
            util::int_or_string(v)
        }
    };
    vec![
        json!(table::name(obj)),
        json!(na(&obj["spec"]["minAvailable"])),
        json!(na(&obj["spec"]["maxUnavailable"])),
        int(&obj["status"]["disruptionsAllowed"]),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// Lease

fn lease_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    if spec["leaseDurationSeconds"]
        .as_i64()
        .is_some_and(|d| d <= 0)
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &spec["leaseDurationSeconds"],
            "must be greater than 0",
        ));
    }
    non_negative(
        &mut errs,
        "spec.leaseTransitions",
        &spec["leaseTransitions"],
    );
    errs
}

fn lease_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Holder", "The holder of the lease"),
        Column::age(),
    ]
}

fn lease_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(s(&obj["spec"]["holderIdentity"])),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// events.k8s.io Event

fn event_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if obj["eventTime"].is_null() {
        errs.push(required("eventTime", ""));
    }
    enum_check(&mut errs, "type", &obj["type"], &["Normal", "Warning"]);
    if s(&obj["reportingController"]).is_empty() {
        errs.push(required("reportingController", ""));
    }
    if s(&obj["reportingInstance"]).is_empty() {
        errs.push(required("reportingInstance", ""));
    }
    if s(&obj["action"]).is_empty() {
        errs.push(required("action", ""));
    }
    if s(&obj["reason"]).is_empty() {
        errs.push(required("reason", ""));
    }
    if s(&obj["note"]).len() > 1024 {
        errs.push(util::too_long("note", 1024));
    }
    errs
}

fn event_cells(obj: &Value) -> Vec<Value> {
    core::event_cells(&core::event_convert_to_core(obj.clone()))
}

fn event_fields(obj: &Value, field: &str) -> Option<String> {
    core::event_fields(&core::event_convert_to_core(obj.clone()), field)
}

// ---------------------------------------------------------------------------------------------
// PriorityClass

/// Upstream's highest value a user-defined PriorityClass may have.
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

fn pc_defaults(obj: &mut Value) {
    util::set_default_str(obj, "preemptionPolicy", "PreemptLowerPriority");
}

fn pc_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(&obj["metadata"]["name"]);
    let value = obj["value"].as_i64().unwrap_or(0);
    let system = matches!(
        (name, value),
        ("system-node-critical", 2_000_001_000) | ("system-cluster-critical", 2_000_000_000)
    ) && obj["globalDefault"] != json!(true);
    if system {
        // Known system classes.
    } else if name.starts_with("system-") {
        errs.push(FieldError::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved for system use only",
        ));
    } else if value > HIGHEST_USER_PRIORITY {
        errs.push(FieldError::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    enum_check(
        &mut errs,
        "preemptionPolicy",
        &obj["preemptionPolicy"],
        &["Never", "PreemptLowerPriority"],
    );
    errs
}

fn pc_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if obj["value"] != old["value"] {
        errs.push(FieldError::forbidden(
            "value",
            "may not be changed in an update.",
        ));
    }
    util::immutable(
        &mut errs,
        "preemptionPolicy",
        &obj["preemptionPolicy"],
        &old["preemptionPolicy"],
    );
    errs
}

fn pc_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::int("Value", "The value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
        Column { kind: "boolean", ..Column::new("Global-Default", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class. Only one PriorityClass can be marked as `globalDefault`. However, if more than one PriorityClasses exists with their `globalDefault` field set to true, the smallest value of such global default PriorityClasses will be used as the default priority.") },
        Column::age(),
        Column::new("PreemptionPolicy", "PreemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset."),
    ]
}

fn pc_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        int(&obj["value"]),
        json!(obj["globalDefault"].as_bool().unwrap_or(false)),
        table::age(obj),
        json!(s(&obj["preemptionPolicy"])),
    ]
}

// ---------------------------------------------------------------------------------------------
// CertificateSigningRequest

/// Clears status on create. The rest of upstream's `PrepareForCreate` (`spec.username`,
/// `uid`, `groups` and `extra` from the requesting user) needs the request's user, so the
/// handler's create path does it (`handler::stamp_requester`).
fn csr_prepare(obj: &mut Value) {
    util::remove(obj, "status");
}

const KEY_USAGES: &[&str] = &[
    "any",
    "cert sign",
    "client auth",
    "code signing",
    "content commitment",
    "crl sign",
    "data encipherment",
    "decipher only",
    "digital signature",
    "email protection",
    "encipher only",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "key agreement",
    "key encipherment",
    "microsoft sgc",
    "netscape sgc",
    "ocsp signing",
    "s/mime",
    "server auth",
    "signing",
    "timestamping",
];

fn csr_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let request = s(&spec["request"]);
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, request)
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&decoded);
    if !text.contains("-----BEGIN CERTIFICATE REQUEST-----")
        && !text.contains("-----BEGIN NEW CERTIFICATE REQUEST-----")
    {
        errs.push(invalid_raw(
            "spec.request",
            "[]byte{...}",
            "PEM block type must be CERTIFICATE REQUEST",
        ));
    }
    let signer = s(&spec["signerName"]);
    if signer.is_empty() {
        errs.push(required("spec.signerName", ""));
    } else if !signer.contains('/') {
        errs.push(FieldError::invalid(
            "spec.signerName",
            &spec["signerName"],
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    let usages = arr(&spec["usages"]);
    if usages.is_empty() {
        errs.push(required("spec.usages", ""));
    }
    for (i, u) in usages.iter().enumerate() {
        enum_check(&mut errs, &format!("spec.usages[{i}]"), u, KEY_USAGES);
    }
    if let Some(e) = spec["expirationSeconds"].as_i64() {
        if e < 600 {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                &spec["expirationSeconds"],
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    errs
}

fn csr_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !util::same(&obj["spec"], &old["spec"]) {
        errs.push(FieldError::invalid(
            "spec",
            &Value::Null,
            "field is immutable",
        ));
    }
    errs
}

fn csr_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::age(),
        Column::new(
            "SignerName",
            "Name of the signer to use for this CertificateSigningRequest.",
        ),
        Column::new("Requestor", "Name of the user requesting the certificate."),
        Column::new(
            "RequestedDuration",
            "Duration of the certificate requested.",
        ),
        Column::new("Condition", "Latest condition of the certificate request."),
    ]
}

/// Upstream's `extractCSRStatus`: `Pending`, `Approved,Issued`, `Denied`, `…,Failed`.
pub fn csr_status(obj: &Value) -> String {
    let conds: Vec<&str> = arr(&obj["status"]["conditions"])
        .iter()
        .map(|c| s(&c["type"]))
        .collect();
    let mut st = if conds.contains(&"Denied") {
        "Denied".to_string()
    } else if conds.contains(&"Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if conds.contains(&"Failed") {
        st.push_str(",Failed");
    }
    if !s(&obj["status"]["certificate"]).is_empty() {
        st.push_str(",Issued");
    }
    st
}

fn csr_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let duration = match spec["expirationSeconds"].as_i64() {
        Some(e) => table::human_duration(chrono::Duration::seconds(e)),
        None => "<none>".into(),
    };
    vec![
        json!(table::name(obj)),
        table::age(obj),
        table::or_none(s(&spec["signerName"])),
        json!(s(&spec["username"])),
        json!(duration),
        json!(csr_status(obj)),
    ]
}

fn csr_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "spec.signerName" => util::field_str(&obj["spec"]["signerName"]),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// CustomResourceDefinition

/// Resets status to what upstream's `PrepareForCreate` leaves: the storage version recorded,
/// names not yet accepted (the CRD controllers fill in conditions and accepted names).
fn crd_prepare(obj: &mut Value) {
    let storage = arr(&obj["spec"]["versions"])
        .iter()
        .find(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone());
    let stored: Vec<Value> = storage.into_iter().collect();
    obj["status"] = json!({"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": stored});
}

fn crd_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec["names"].is_object() {
        let kind = s(&spec["names"]["kind"]).to_string();
        if s(&spec["names"]["singular"]).is_empty() {
            spec["names"]["singular"] = json!(kind.to_lowercase());
        }
        if s(&spec["names"]["listKind"]).is_empty() && !kind.is_empty() {
            spec["names"]["listKind"] = json!(format!("{kind}List"));
        }
    }
    set_default(spec, "conversion", json!({"strategy": "None"}));
    if let Some(svc) = spec
        .pointer_mut("/conversion/webhook/clientConfig/service")
        .filter(|s| s.is_object())
    {
        set_default(svc, "port", json!(443));
    }
}

fn crd_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let group = s(&spec["group"]);
    let names = &spec["names"];
    let plural = s(&names["plural"]);
    let name = s(&obj["metadata"]["name"]);
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            &obj["metadata"]["name"],
            "must be spec.names.plural+\".\"+spec.group".to_string(),
        ));
    }
    if group.is_empty() {
        errs.push(required("spec.group", ""));
    } else {
        for m in distro_apimachinery::validation::is_dns1123_subdomain(group) {
            errs.push(FieldError::invalid("spec.group", &spec["group"], m));
        }
        if group.split('.').count() < 2 {
            errs.push(FieldError::invalid(
                "spec.group",
                &spec["group"],
                "should be a domain with at least one dot",
            ));
        }
    }
    for (k, label) in [
        ("plural", true),
        ("singular", true),
        ("kind", false),
        ("listKind", false),
    ] {
        let v = s(&names[k]);
        let path = format!("spec.names.{k}");
        if v.is_empty() && k != "singular" {
            errs.push(required(&path, ""));
            continue;
        }
        if v.is_empty() {
            continue;
        }
        if label {
            for m in distro_apimachinery::validation::is_dns1035_label(v) {
                errs.push(FieldError::invalid(&path, &names[k], m));
            }
        } else {
            for m in distro_apimachinery::validation::is_dns1035_label(&v.to_lowercase()) {
                errs.push(FieldError::invalid(&path, &names[k], m));
            }
        }
    }
    for (i, sn) in arr(&names["shortNames"]).iter().enumerate() {
        for m in distro_apimachinery::validation::is_dns1035_label(s(sn)) {
            errs.push(FieldError::invalid(
                format!("spec.names.shortNames[{i}]"),
                sn,
                m,
            ));
        }
    }
    let scope = &spec["scope"];
    if s(scope).is_empty() {
        errs.push(required("spec.scope", ""));
    } else {
        enum_check(&mut errs, "spec.scope", scope, &["Cluster", "Namespaced"]);
    }
    let versions = arr(&spec["versions"]);
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            &json!(versions),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            &json!(versions),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let p = format!("spec.versions[{i}]");
        let vn = s(&v["name"]);
        for m in distro_apimachinery::validation::is_dns1035_label(vn) {
            errs.push(FieldError::invalid(format!("{p}.name"), &v["name"], m));
        }
        if !seen.insert(vn.to_string()) {
            errs.push(FieldError::invalid(
                "spec.versions",
                &json!(versions),
                "must contain unique version names",
            ));
        }
        if v["schema"]["openAPIV3Schema"].is_null() {
            errs.push(required(
                format!("{p}.schema.openAPIV3Schema"),
                "schemas are required",
            ));
        } else if s(&v["schema"]["openAPIV3Schema"]["type"]) != "object" {
            errs.push(FieldError::invalid(
                format!("{p}.schema.openAPIV3Schema.type"),
                &v["schema"]["openAPIV3Schema"]["type"],
                "must be object at the root",
            ));
        }
    }
    let conv = s(&spec["conversion"]["strategy"]);
    if !conv.is_empty() {
        enum_check(
            &mut errs,
            "spec.conversion.strategy",
            &spec["conversion"]["strategy"],
            &["None", "Webhook"],
        );
    }
    if conv == "Webhook" && spec["conversion"]["webhook"].is_null() {
        errs.push(required(
            "spec.conversion.webhook",
            "required when strategy is set to Webhook",
        ));
    }
    errs.extend(crate::crd::validate_versions(spec));
    errs
}

fn crd_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    util::immutable(
        &mut errs,
        "spec.group",
        &obj["spec"]["group"],
        &old["spec"]["group"],
    );
    util::immutable(
        &mut errs,
        "spec.scope",
        &obj["spec"]["scope"],
        &old["spec"]["scope"],
    );
    // The stored versions must stay served definitions.
    for sv in arr(&old["status"]["storedVersions"]) {
        if !arr(&obj["spec"]["versions"])
            .iter()
            .any(|v| v["name"] == *sv)
        {
            errs.push(FieldError::invalid(
                "status.storedVersions",
                &old["status"]["storedVersions"],
                "must appear in spec.versions".to_string(),
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn hpa() {
        let mut h = json!({"metadata": {"name": "h"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5}});
        hpa_defaults(&mut h);
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(
            h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(hpa_validate(&h).is_empty(), "{:?}", hpa_validate(&h));
        let cells = hpa_cells(&h);
        assert_eq!(cells[1], "Deployment/web");
        assert_eq!(cells[2], "cpu: <unknown>/80%");
        assert_eq!(cells[3], "1");
        h["status"] = json!({"currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]});
        assert_eq!(hpa_cells(&h)[2], "cpu: 12%/80%");
        let mut b =
            json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}});
        hpa_defaults(&mut b);
        assert_eq!(
            b["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            60
        );
        assert_eq!(b["spec"]["behavior"]["scaleUp"]["policies"][0]["value"], 4);
    }

    #[test]
    fn priority_classes() {
        let mut pc = json!({"metadata": {"name": "high"}, "value": 2_000_000_000i64});
        pc_defaults(&mut pc);
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(
            msgs(&pc_validate(&pc)),
            vec![
                "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
            ]
        );
        let sys = json!({"metadata": {"name": "system-x"}, "value": 1});
        assert_eq!(msgs(&pc_validate(&sys)), vec!["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only"]);
        let mut new = pc.clone();
        new["value"] = json!(5);
        assert_eq!(
            msgs(&pc_validate_update(&new, &pc)),
            vec!["value: Forbidden: may not be changed in an update."]
        );
        assert_eq!(pc_cells(&pc)[4], "PreemptLowerPriority");
    }

    #[test]
    fn csrs() {
        let csr = json!({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kube-apiserver-client", "username": "alice",
            "expirationSeconds": 86400, "usages": ["client auth"],
            "request": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "-----BEGIN CERTIFICATE REQUEST-----\n")},
            "status": {"conditions": [{"type": "Approved"}], "certificate": "abc"}});
        assert!(csr_validate(&csr).is_empty(), "{:?}", csr_validate(&csr));
        let cells = csr_cells(&csr);
        assert_eq!(cells[3], "alice");
        assert_eq!(cells[4], "24h");
        assert_eq!(cells[5], "Approved,Issued");
        assert_eq!(
            csr_fields(&csr, "spec.signerName").as_deref(),
            Some("kubernetes.io/kube-apiserver-client")
        );
    }

    #[test]
    fn crds() {
        let mut crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        crd_prepare(&mut crd);
        crd_defaults(&mut crd);
        assert_eq!(crd["spec"]["names"]["singular"], "widget");
        assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
        assert!(crd_validate(&crd).is_empty(), "{:?}", crd_validate(&crd));
        let mut bad = crd.clone();
        bad["metadata"]["name"] = json!("widgets");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        let got = msgs(&crd_validate(&bad));
        assert!(got[0].starts_with("metadata.name: Invalid value: \"widgets\": must be spec.names.plural+\".\"+spec.group"), "{got:?}");
        assert!(
            got.iter()
                .any(|m| m.ends_with("must have exactly one version marked as storage version")),
            "{got:?}"
        );
    }

    #[test]
    fn pdb_and_lease() {
        let pdb = json!({"spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert!(pdb_validate(&pdb).is_empty());
        let cells = pdb_cells(&pdb);
        assert_eq!(cells[1], "50%");
        assert_eq!(cells[2], "N/A");
        assert_eq!(cells[3], 1);
        assert_eq!(
            lease_cells(&json!({"spec": {"holderIdentity": "n1"}}))[1],
            "n1"
        );
    }
}
