use serde_json::{json, Value};

use super::*;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                    "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                    "ratio": {"type": "number", "exclusiveMinimum": true, "minimum": 0},
                    "size": {"type": "string", "enum": ["a", "b"], "default": "a"},
                    "when": {"type": "string", "format": "date-time"},
                    "port": {"x-kubernetes-int-or-string": true},
                    "note": {"type": "string", "nullable": true},
                    "tags": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer", "default": 80}}}},
                    "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
                    "nested": {"type": "object", "properties": {"inner": {"type": "object", "default": {}, "properties": {"x": {"type": "integer", "default": 3}}}}}
                }
            },
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
        }
    })
}

fn msgs(obj: Value) -> Vec<String> {
    validate(&schema(), &obj)
        .iter()
        .map(FieldError::message)
        .collect()
}

fn cr(spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "W", "metadata": {"name": "w"}, "spec": spec})
}

#[test]
fn valid_object_has_no_errors() {
    let got = msgs(cr(
        json!({"name": "abc", "replicas": 3, "ratio": 0.5, "size": "b", "port": "http",
        "note": null, "when": "2024-01-02T03:04:05Z", "tags": ["x", "y"], "labels": {"a": "b"}}),
    ));
    assert!(got.is_empty(), "{got:?}");
}

#[test]
fn messages_match_upstream() {
    let cases = [
        (json!({"name": "abc", "replicas": "x"}), "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""),
        (json!({"name": "abc", "replicas": 1.5}), "spec.replicas: Invalid value: \"number\": spec.replicas in body must be of type integer: \"number\""),
        (json!({"replicas": 1}), "spec.name: Required value"),
        (json!({"name": "abc", "size": "x"}), "spec.size: Unsupported value: \"x\": supported values: \"a\", \"b\""),
        (json!({"name": "abc", "replicas": -1}), "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"),
        (json!({"name": "abc", "replicas": 11}), "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
        (json!({"name": "abc", "ratio": 0}), "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0"),
        (json!({"name": ""}), "spec.name: Invalid value: \"\": spec.name in body should be at least 1 chars long"),
        (json!({"name": "abcdef"}), "spec.name: Too long: must have at most 5 bytes"),
        (json!({"name": "AB"}), "spec.name: Invalid value: \"AB\": spec.name in body should match '^[a-z]+$'"),
        (json!({"name": "a", "when": "yesterday"}), "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\""),
        (json!({"name": "a", "port": true}), "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\""),
        (json!({"name": "a", "tags": ["x", "x"]}), "spec.tags[1]: Duplicate value: \"x\""),
        (json!({"name": "a", "tags": ["x", "y", "z"]}), "spec.tags: Too many: 3: must have at most 2 items"),
        (json!({"name": "a", "ports": [{"name": "h"}, {"name": "h", "port": 1}]}), "spec.ports[1]: Duplicate value: {\"name\":\"h\"}"),
        (json!({"name": "a", "labels": {"a": "1", "b": "2"}}), "spec.labels: Too many: 2: must have at most 1 items"),
        (json!({"name": "a", "labels": {"a": 1}}), "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\""),
        (json!({"name": "a", "template": {"kind": "Pod"}}), "spec.template.apiVersion: Required value: must not be empty"),
    ];
    for (spec, want) in cases {
        let got = msgs(cr(spec.clone()));
        assert_eq!(
            got.first().map(String::as_str),
            Some(want),
            "{spec}: {got:?}"
        );
    }
    assert_eq!(
        msgs(json!({"spec": "x"})),
        vec!["spec: Invalid value: \"string\": spec in body must be of type object: \"string\""]
    );
}

#[test]
fn prunes_unknown_fields_and_reports_them() {
    let mut obj = cr(
        json!({"name": "a", "bogus": 1, "free": {"any": {"thing": 1}},
        "ports": [{"name": "h", "extra": true}],
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "junk": 1}, "spec": {}, "other": 2}}),
    );
    obj["metadata"]["extra"] = json!("x");
    obj["top"] = json!(1);
    let pruned = prune(&schema(), &mut obj);
    assert_eq!(
        pruned,
        vec![
            "metadata.extra",
            "spec.ports[0].extra",
            "spec.template.metadata.junk",
            "spec.template.other",
            "spec.bogus",
            "top"
        ]
    );
    assert_eq!(obj["spec"]["free"]["any"]["thing"], 1);
    assert_eq!(obj["apiVersion"], "example.com/v1");
    assert_eq!(obj["spec"]["template"]["kind"], "Pod");
    assert!(obj["spec"].get("bogus").is_none());
}

#[test]
fn defaults_fill_existing_objects_only() {
    let mut obj = cr(
        json!({"name": "a", "ports": [{"name": "h"}], "note": null, "replicas": null, "nested": {}}),
    );
    default(&schema(), &mut obj);
    assert_eq!(obj["spec"]["replicas"], 1);
    assert_eq!(obj["spec"]["size"], "a");
    assert_eq!(obj["spec"]["ports"][0]["port"], 80);
    assert_eq!(obj["spec"]["note"], Value::Null);
    // Defaults apply inside defaulted values too.
    assert_eq!(obj["spec"]["nested"]["inner"]["x"], 3);
    assert!(obj.get("status").is_none());
    let mut bare = json!({"apiVersion": "example.com/v1", "kind": "W", "metadata": {}});
    default(&schema(), &mut bare);
    assert!(bare.get("spec").is_none());
}

#[test]
fn non_structural_schemas_are_reported() {
    let p = "spec.versions[0].schema.openAPIV3Schema";
    let bad = json!({"type": "object", "properties": {
        "spec": {"properties": {"a": {"type": "string"}}},
        "list": {"type": "array"},
        "u": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
        "ios": {"type": "string", "x-kubernetes-int-or-string": true},
        "d": {"type": "string", "enum": ["a"], "default": "b"},
        "j": {"type": "object", "anyOf": [{"type": "object"}]},
        "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}
    }});
    let got: Vec<String> = check_schema(&bad, p)
        .iter()
        .map(FieldError::message)
        .collect();
    let want = [
        format!("{p}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"),
        format!("{p}.properties[spec].type: Required value: must not be empty for specified object fields"),
        format!("{p}.properties[list].items: Required value: must be specified"),
        format!("{p}.properties[u].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"),
        format!("{p}.properties[ios].type: Invalid value: \"string\": must be empty if x-kubernetes-int-or-string is true"),
        format!("{p}.properties[d].default: Unsupported value: \"b\": supported values: \"a\""),
        format!("{p}.properties[j].anyOf[0].type: Forbidden: must be empty to be structural"),
    ];
    for w in &want {
        assert!(got.contains(w), "missing {w}\n got {got:#?}");
    }
    assert_eq!(got.len(), want.len(), "{got:#?}");
    assert!(
        check_schema(&schema(), p).is_empty(),
        "{:?}",
        check_schema(&schema(), p)
    );
    let ios = json!({"type": "object", "properties": {"port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}}});
    assert!(check_schema(&ios, p).is_empty());
}
