use serde_json::{json, Value};

use super::*;
use crate::schema::{FieldInfo, ListType, StaticSchema};

const D: &str = "Deployment";

fn schema() -> StaticSchema {
    let meta = "ObjectMeta";
    StaticSchema::new()
        .with(D, "apiVersion", FieldInfo::scalar())
        .with(D, "kind", FieldInfo::scalar())
        .with(D, "metadata", FieldInfo::object(meta))
        .with(D, "spec", FieldInfo::object("Spec"))
        .with(D, "status", FieldInfo::object("Status"))
        .with(meta, "name", FieldInfo::scalar())
        .with(meta, "namespace", FieldInfo::scalar())
        .with(meta, "labels", FieldInfo::map_of(None))
        .with(meta, "annotations", FieldInfo::map_of(None))
        .with(meta, "resourceVersion", FieldInfo::scalar())
        .with(meta, "uid", FieldInfo::scalar())
        .with(
            meta,
            "finalizers",
            FieldInfo::list_of_scalars()
                .merge_on("")
                .with_list_type(ListType::Set),
        )
        .with(meta, "managedFields", FieldInfo::list_of("MFE"))
        .with("Spec", "replicas", FieldInfo::scalar())
        .with("Spec", "paused", FieldInfo::scalar())
        .with("Spec", "selector", FieldInfo::object("LabelSelector"))
        .with("Spec", "template", FieldInfo::object("Template"))
        .with("LabelSelector", "matchLabels", FieldInfo::map_of(None))
        .with_atomic_type("LabelSelector")
        .with("Template", "metadata", FieldInfo::object(meta))
        .with("Template", "spec", FieldInfo::object("PodSpec"))
        .with(
            "PodSpec",
            "containers",
            FieldInfo::list_of("Container")
                .merge_on("name")
                .with_list_type(ListType::Map(vec!["name".into()])),
        )
        .with(
            "PodSpec",
            "tolerations",
            FieldInfo::list_of("Toleration").with_list_type(ListType::Atomic),
        )
        .with("Container", "name", FieldInfo::scalar())
        .with("Container", "image", FieldInfo::scalar())
        .with("Container", "args", FieldInfo::list_of_scalars())
        .with(
            "Container",
            "ports",
            FieldInfo::list_of("Port")
                .merge_on("containerPort")
                .with_list_type(ListType::Map(vec![
                    "containerPort".into(),
                    "protocol".into(),
                ])),
        )
        .with(
            "Container",
            "env",
            FieldInfo::list_of("Env").merge_on("name"),
        )
        .with("Port", "containerPort", FieldInfo::scalar())
        .with("Port", "protocol", FieldInfo::scalar())
        .with("Env", "name", FieldInfo::scalar())
        .with("Env", "value", FieldInfo::scalar())
        .with("Status", "replicas", FieldInfo::scalar())
}

fn ctx<'a>(s: &'a StaticSchema, reset: Reset) -> Context<'a> {
    Context {
        schema: s,
        type_name: D,
        api_version: "apps/v1",
        subresource: "",
        reset,
        now: "2024-01-01T00:00:00Z",
    }
}

fn deploy(replicas: i64, containers: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}}
    })
}

fn fields(m: &ManagedFields, manager: &str) -> Value {
    m.entries()
        .find(|e| e.manager == manager)
        .map(|e| e.set.to_fields_v1())
        .unwrap_or(Value::Null)
}

#[test]
fn apply_creates_and_records_the_applied_fields() {
    let s = schema();
    let c = ctx(&s, Reset::Status);
    let cfg = deploy(
        2,
        json!([{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]),
    );
    let a = c
        .apply(None, &cfg, ManagedFields::new(), "mgr", false)
        .unwrap();
    assert_eq!(a.object["spec"]["replicas"], 2);
    let expected = json!({
        "f:metadata": {"f:labels": {"f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"app\"}": {
                    ".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                        ".": {}, "f:containerPort": {}
                    }}
                }
            }}}
        }
    });
    let got = fields(&a.managed, "mgr");
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&expected).unwrap()
    );
    let enc = a.managed.encode();
    assert_eq!(enc[0]["operation"], "Apply");
    assert_eq!(enc[0]["apiVersion"], "apps/v1");
    assert_eq!(enc[0]["fieldsType"], "FieldsV1");
    assert_eq!(enc[0]["time"], "2024-01-01T00:00:00Z");
    assert!(enc[0].get("subresource").is_none());
    // Decoding the encoded form gives the same entries.
    assert_eq!(ManagedFields::decode(Some(&enc)).unwrap(), a.managed);
}

#[test]
fn dropping_a_field_from_the_config_removes_it() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let cfg = deploy(
        2,
        json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]),
    );
    let a = c
        .apply(None, &cfg, ManagedFields::new(), "m", false)
        .unwrap();
    let mut live = a.object.clone();
    live["metadata"]["managedFields"] = a.managed.encode();
    let mut cfg2 = deploy(2, json!([{"name": "a", "image": "x"}]));
    cfg2["metadata"].as_object_mut().unwrap().remove("labels");
    let b = c
        .apply(Some(&live), &cfg2, a.managed.clone(), "m", false)
        .unwrap();
    let containers = b.object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert!(b.object["metadata"].get("labels").is_none(), "{}", b.object);
}

#[test]
fn fields_owned_by_others_survive_pruning() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let cfg = deploy(2, json!([{"name": "a", "image": "x"}]));
    let a = c
        .apply(None, &cfg, ManagedFields::new(), "one", false)
        .unwrap();
    // A second applier also sets replicas (same value: no conflict, shared ownership).
    let cfg_two = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    let b = c
        .apply(Some(&a.object), &cfg_two, a.managed.clone(), "two", false)
        .unwrap();
    // The first applier drops replicas: the second still owns it, so it stays.
    let cfg_one = deploy(2, json!([{"name": "a", "image": "x"}]));
    let mut cfg_one = cfg_one;
    cfg_one["spec"].as_object_mut().unwrap().remove("replicas");
    let d = c
        .apply(Some(&b.object), &cfg_one, b.managed.clone(), "one", false)
        .unwrap();
    assert_eq!(d.object["spec"]["replicas"], 2);
}

#[test]
fn conflicts_and_force() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let cfg = deploy(2, json!([{"name": "a", "image": "x"}]));
    let a = c
        .apply(None, &cfg, ManagedFields::new(), "a", false)
        .unwrap();
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let err = c
        .apply(Some(&a.object), &other, a.managed.clone(), "b", false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    let forced = c
        .apply(Some(&a.object), &other, a.managed.clone(), "b", true)
        .unwrap();
    assert_eq!(forced.object["spec"]["replicas"], 5);
    let a_set = forced.managed.entries().find(|e| e.manager == "a").unwrap();
    assert!(!a_set.set.has(&[
        PathElement::Field("spec".into()),
        PathElement::Field("replicas".into())
    ]));

    // Two conflicts with an updater, grouped by manager.
    let upd = c.update(
        Some(&a.object),
        &deploy(3, json!([{"name": "a", "image": "z"}])),
        a.managed.clone(),
        "kubectl-edit",
    );
    let mut live = deploy(3, json!([{"name": "a", "image": "z"}]));
    live["metadata"]["managedFields"] = upd.encode();
    let err = c
        .apply(Some(&live), &cfg, upd.clone(), "a", false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-edit\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"a\"].image"
    );
}

#[test]
fn update_takes_changed_fields_and_marks_new_maps() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let obj = deploy(1, json!([{"name": "a", "image": "x"}]));
    let m = c.update(None, &obj, ManagedFields::new(), "kubectl-create");
    let got = fields(&m, "kubectl-create");
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:replicas":{},"f:template":{"f:spec":{"f:containers":{"k:{\"name\":\"a\"}":{".":{},"f:image":{},"f:name":{}}}}}}}"#
    );
    // A scale by another manager moves replicas over.
    let mut scaled = obj.clone();
    scaled["spec"]["replicas"] = json!(3);
    let m2 = c.update(Some(&obj), &scaled, m.clone(), "kubectl-scale");
    assert_eq!(
        fields(&m2, "kubectl-scale"),
        json!({"f:spec": {"f:replicas": {}}})
    );
    assert!(!fields(&m2, "kubectl-create")["f:spec"]
        .as_object()
        .unwrap()
        .contains_key("f:replicas"));
    // A write that changes nothing records nothing.
    let m3 = c.update(Some(&scaled), &scaled, m2.clone(), "other");
    assert_eq!(m3, m2);
}

#[test]
fn reset_fields_are_not_owned() {
    let s = schema();
    let c = ctx(&s, Reset::Status);
    let mut cfg = deploy(1, json!([]));
    cfg["status"] = json!({"replicas": 4});
    let a = c
        .apply(None, &cfg, ManagedFields::new(), "m", false)
        .unwrap();
    assert!(fields(&a.managed, "m").get("f:status").is_none());
}

#[test]
fn associative_lists_merge_by_key_in_upstream_order() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let live = deploy(
        1,
        json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "3"}]),
    );
    let cfg = deploy(
        1,
        json!([{"name": "c", "image": "30"}, {"name": "d", "image": "4"}, {"name": "a", "image": "10"}]),
    );
    let a = c
        .apply(Some(&live), &cfg, ManagedFields::new(), "m", true)
        .unwrap();
    let names: Vec<(&str, &str)> = a.object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["image"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![("b", "2"), ("c", "30"), ("d", "4"), ("a", "10")]
    );
}

#[test]
fn bad_configs_are_rejected() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let dup = deploy(1, json!([{"name": "a"}, {"name": "a"}]));
    let err = c
        .apply(None, &dup, ManagedFields::new(), "m", false)
        .unwrap_err();
    assert!(matches!(err, ApplyError::Invalid(_)));
    assert!(
        err.to_string()
            .contains("duplicate entries for key [name=\"a\"]"),
        "{err}"
    );
    let keyless = deploy(1, json!([{"image": "a"}]));
    assert!(c
        .apply(None, &keyless, ManagedFields::new(), "m", false)
        .is_err());
}

#[test]
fn base_managed_fields_rules() {
    let live_mf = json!([{"manager": "a", "operation": "Update", "apiVersion": "v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]);
    let old = json!({"metadata": {"managedFields": live_mf}});
    let reset = json!({"metadata": {"managedFields": []}});
    assert!(base_managed_fields(Some(&old), &reset, false)
        .unwrap()
        .is_empty());
    let reset1 = json!({"metadata": {"managedFields": [{}]}});
    assert!(base_managed_fields(Some(&old), &reset1, false)
        .unwrap()
        .is_empty());
    let bad = json!({"metadata": {"managedFields": [{"manager": "x", "operation": "Bogus"}]}});
    assert_eq!(
        base_managed_fields(Some(&old), &bad, false).unwrap().len(),
        1
    );
    let none = json!({"metadata": {}});
    assert_eq!(
        base_managed_fields(Some(&old), &none, false).unwrap().len(),
        1
    );
    let given = json!({"metadata": {"managedFields": [{"manager": "z", "operation": "Apply",
        "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]}});
    let m = base_managed_fields(Some(&old), &given, false).unwrap();
    assert_eq!(m.entries().next().unwrap().manager, "z");
    // Subresources always use the live entries.
    let m = base_managed_fields(Some(&old), &given, true).unwrap();
    assert_eq!(m.entries().next().unwrap().manager, "a");
    assert!(
        ManagedFields::decode(Some(&json!([{"manager": "x", "operation": "Update",
        "apiVersion": "v1", "fieldsType": "FieldsV2"}])))
        .is_err()
    );
}

#[test]
fn kubectl_takes_over_client_side_apply_fields() {
    let s = schema();
    let c = ctx(&s, Reset::None);
    let mut obj = deploy(2, json!([{"name": "a", "image": "x"}]));
    let last = serde_json::to_string(&obj).unwrap();
    obj["metadata"]["annotations"] = json!({LAST_APPLIED: last});
    let m = c.update(
        None,
        &obj,
        ManagedFields::new(),
        "kubectl-client-side-apply",
    );
    // Fields whose live value still matches the annotation are taken over even when the
    // new value differs.
    let cfg = deploy(3, json!([{"name": "a", "image": "y"}]));
    let a = c
        .apply(Some(&obj), &cfg, m.clone(), "kubectl", false)
        .unwrap();
    assert_eq!(a.object["spec"]["replicas"], 3);
    // Another manager name gets the conflicts.
    assert!(c
        .apply(Some(&obj), &cfg, m.clone(), "other", false)
        .is_err());
    // A field changed since the last client-side apply is a real conflict.
    let mut drifted = obj.clone();
    drifted["spec"]["replicas"] = json!(5);
    let err = c
        .apply(Some(&drifted), &cfg, m.clone(), "kubectl", false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    let ann = a.object["metadata"]["annotations"][LAST_APPLIED]
        .as_str()
        .unwrap();
    let parsed: Value = serde_json::from_str(ann).unwrap();
    assert_eq!(parsed["spec"]["replicas"], 3);
    assert!(ann.ends_with('\n'));
}
