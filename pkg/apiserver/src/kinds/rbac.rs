//! `rbac.authorization.k8s.io`: Roles, ClusterRoles and their bindings.

use k8s_openapi::api::rbac::v1 as rbac;
use serde_json::{json, Value};

use super::util::{self, arr, required, s};
use super::{Builtin, Entry, ALL_VERBS};
use crate::error::FieldError;
use crate::resources::NameRule;
use crate::table::{self, Column};

const GROUP: &str = "rbac.authorization.k8s.io";

/// Catalogue entries of `rbac.authorization.k8s.io/v1`.
pub fn entries() -> Vec<Entry> {
    let names = NameRule::PathSegment;
    vec![
        entry!(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            ns = false,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.rbac.v1.ClusterRoleBinding",
            Builtin::of::<rbac::ClusterRoleBinding>()
                .names(names)
                .defaults(binding_defaults)
                .validate(clusterrolebinding_validate)
                .validate_update(binding_validate_update)
                .table(binding_columns, binding_cells)
        ),
        entry!(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            ns = false,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.rbac.v1.ClusterRole",
            Builtin::of::<rbac::ClusterRole>()
                .names(names)
                .validate(clusterrole_validate)
                .table(role_columns, role_cells)
        ),
        entry!(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.rbac.v1.RoleBinding",
            Builtin::of::<rbac::RoleBinding>()
                .names(names)
                .defaults(binding_defaults)
                .validate(rolebinding_validate)
                .validate_update(binding_validate_update)
                .table(binding_columns, binding_cells)
        ),
        entry!(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            ns = true,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.rbac.v1.Role",
            Builtin::of::<rbac::Role>()
                .names(names)
                .validate(role_validate)
                .table(role_columns, role_cells)
        ),
    ]
}

/// Upstream's `ValidatePolicyRule`.
fn validate_rule(errs: &mut Vec<FieldError>, path: &str, rule: &Value, namespaced: bool) {
    if arr(&rule["verbs"]).is_empty() {
        errs.push(required(
            format!("{path}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    if !arr(&rule["nonResourceURLs"]).is_empty() {
        let urls = util::go_string_slice(&rule["nonResourceURLs"]);
        if namespaced {
            errs.push(util::invalid_raw(
                format!("{path}.nonResourceURLs"),
                &urls,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !arr(&rule["apiGroups"]).is_empty()
            || !arr(&rule["resources"]).is_empty()
            || !arr(&rule["resourceNames"]).is_empty()
        {
            errs.push(util::invalid_raw(
                format!("{path}.nonResourceURLs"),
                &urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if rule["apiGroups"].as_array().is_none_or(|a| a.is_empty()) {
        errs.push(required(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if arr(&rule["resources"]).is_empty() {
        errs.push(required(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

fn rules_of(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, r) in arr(&obj["rules"]).iter().enumerate() {
        validate_rule(&mut errs, &format!("rules[{i}]"), r, namespaced);
    }
    errs
}

fn role_validate(obj: &Value) -> Vec<FieldError> {
    rules_of(obj, true)
}

fn clusterrole_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = rules_of(obj, false);
    let agg = &obj["aggregationRule"];
    if agg.is_object() {
        if !arr(&obj["rules"]).is_empty() && arr(&agg["clusterRoleSelectors"]).is_empty() {
            errs.push(required("aggregationRule.clusterRoleSelectors", ""));
        }
        for (i, sel) in arr(&agg["clusterRoleSelectors"]).iter().enumerate() {
            util::label_selector(
                &mut errs,
                &format!("aggregationRule.clusterRoleSelectors[{i}]"),
                sel,
            );
        }
    }
    errs
}

/// `SetDefaults_RoleBinding`/`SetDefaults_Subject`: the RBAC group for roleRef and User/Group
/// subjects.
fn binding_defaults(obj: &mut Value) {
    if obj["roleRef"].is_object() {
        util::set_default_str(&mut obj["roleRef"], "apiGroup", GROUP);
    }
    for sub in util::items_mut(obj, "subjects") {
        let kind = s(&sub["kind"]);
        if (kind == "User" || kind == "Group") && s(&sub["apiGroup"]).is_empty() {
            sub["apiGroup"] = json!(GROUP);
        }
    }
}

fn validate_binding(obj: &Value, kinds: &[&str], namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rr = &obj["roleRef"];
    if s(&rr["apiGroup"]) != GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &json!(s(&rr["apiGroup"])),
            &[GROUP],
        ));
    }
    if !kinds.contains(&s(&rr["kind"])) {
        errs.push(FieldError::not_supported(
            "roleRef.kind",
            &json!(s(&rr["kind"])),
            kinds,
        ));
    }
    let name = s(&rr["name"]);
    if name.is_empty() {
        errs.push(required("roleRef.name", ""));
    } else {
        for m in crate::validation::path_segment_name(name) {
            errs.push(FieldError::invalid("roleRef.name", &rr["name"], m));
        }
    }
    for (i, sub) in arr(&obj["subjects"]).iter().enumerate() {
        let p = format!("subjects[{i}]");
        let sname = s(&sub["name"]);
        if sname.is_empty() {
            errs.push(required(format!("{p}.name"), ""));
        }
        match s(&sub["kind"]) {
            "ServiceAccount" => {
                if !sname.is_empty() {
                    for m in distro_apimachinery::validation::is_dns1123_subdomain(sname) {
                        errs.push(FieldError::invalid(format!("{p}.name"), &sub["name"], m));
                    }
                }
                if !s(&sub["apiGroup"]).is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        &sub["apiGroup"],
                        &[""],
                    ));
                }
                if !namespaced && s(&sub["namespace"]).is_empty() {
                    errs.push(required(format!("{p}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if s(&sub["apiGroup"]) != GROUP {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        &json!(s(&sub["apiGroup"])),
                        &[GROUP],
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                format!("{p}.kind"),
                &json!(s(&sub["kind"])),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

fn rolebinding_validate(obj: &Value) -> Vec<FieldError> {
    validate_binding(obj, &["Role", "ClusterRole"], true)
}

fn clusterrolebinding_validate(obj: &Value) -> Vec<FieldError> {
    validate_binding(obj, &["ClusterRole"], false)
}

/// Go's `%#v` of an `rbac.RoleRef`.
fn go_role_ref(rr: &Value) -> String {
    format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        s(&rr["apiGroup"]),
        s(&rr["kind"]),
        s(&rr["name"])
    )
}

fn binding_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !util::same(&obj["roleRef"], &old["roleRef"]) {
        errs.push(util::invalid_raw(
            "roleRef",
            &go_role_ref(&obj["roleRef"]),
            "cannot change roleRef",
        ));
    }
    errs
}

fn role_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Created At", "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"),
    ]
}

fn role_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(s(&obj["metadata"]["creationTimestamp"])),
    ]
}

fn binding_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Role", "Role"),
        Column::age(),
        Column::new("Users", "Users in the roleBinding").wide(),
        Column::new("Groups", "Groups in the roleBinding").wide(),
        Column::new("ServiceAccounts", "ServiceAccounts in the roleBinding").wide(),
    ]
}

fn binding_cells(obj: &Value) -> Vec<Value> {
    let rr = &obj["roleRef"];
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for sub in arr(&obj["subjects"]) {
        match s(&sub["kind"]) {
            "User" => users.push(s(&sub["name"]).to_string()),
            "Group" => groups.push(s(&sub["name"]).to_string()),
            "ServiceAccount" => sas.push(format!("{}:{}", s(&sub["namespace"]), s(&sub["name"]))),
            _ => {}
        }
    }
    vec![
        json!(table::name(obj)),
        json!(format!("{}/{}", s(&rr["kind"]), s(&rr["name"]))),
        table::age(obj),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn rules_need_verbs_and_resources() {
        let role =
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"]}]});
        assert_eq!(
            msgs(&role_validate(&role)),
            vec![
            "rules[0].verbs: Required value: verbs must contain at least one value",
            "rules[1].apiGroups: Required value: resource rules must supply at least one api group",
            "rules[1].resources: Required value: resource rules must supply at least one resource",
        ]
        );
        let ok = json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        assert!(clusterrole_validate(&ok).is_empty());
        assert_eq!(msgs(&role_validate(&ok)), vec![
            "rules[0].nonResourceURLs: Invalid value: []string{\"/healthz\"}: namespaced rules cannot apply to non-resource URLs",
        ]);
    }

    #[test]
    fn bindings() {
        let mut rb = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}]});
        binding_defaults(&mut rb);
        assert_eq!(rb["roleRef"]["apiGroup"], GROUP);
        assert_eq!(rb["subjects"][0]["apiGroup"], GROUP);
        assert!(rb["subjects"][1].get("apiGroup").is_none());
        assert!(
            rolebinding_validate(&rb).is_empty(),
            "{:?}",
            rolebinding_validate(&rb)
        );
        let mut bad = rb.clone();
        bad["roleRef"]["kind"] = json!("Role");
        assert_eq!(
            msgs(&clusterrolebinding_validate(&bad)),
            vec!["roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",]
        );
        assert_eq!(msgs(&binding_validate_update(&bad, &rb)), vec![
            "roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"view\"}: cannot change roleRef",
        ]);
        let cells = binding_cells(&rb);
        assert_eq!(cells[1], "ClusterRole/view");
        assert_eq!(cells[3], "alice");
        assert_eq!(cells[5], "kube-system:default");
    }
}
