//! Whether a CRD's schema is structural, with upstream's messages for what is not
//! (`properties[spec].type: Required value: must not be empty for specified object fields`).

use regex::Regex;
use serde_json::Value;

use super::{flag, FieldError};

/// Checks that `schema` (a version's `openAPIV3Schema`, found at `path`, e.g.
/// `spec.versions[0].schema.openAPIV3Schema`) is structural: every specified field has a type,
/// arrays have items, extensions are used consistently, no `$ref`, no quadratic
/// `uniqueItems`, junctors (`allOf`, …) only restate value validations, `metadata` at the root
/// restricts only `name` and `generateName`, and defaults validate against their schema.
///
/// The root's `type: object` is checked by the CRD validation itself.
pub fn check_schema(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(meta) = schema.pointer("/properties/metadata") {
        let only_names = meta
            .as_object()
            .map(|m| {
                m.iter().all(|(k, v)| match k.as_str() {
                    "type" => v == "object",
                    "properties" => v
                        .as_object()
                        .is_some_and(|p| p.keys().all(|k| k == "name" || k == "generateName")),
                    _ => false,
                })
            })
            .unwrap_or(false);
        if !only_names {
            errs.push(FieldError::forbidden(
                &format!("{path}.properties[metadata]"),
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    node(schema, path, Position::Root, &mut errs);
    errs
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Position {
    Root,
    Property,
    Item,
    /// Inside `allOf`/`anyOf`/`oneOf`/`not`.
    Junctor,
}

fn node(s: &Value, path: &str, pos: Position, errs: &mut Vec<FieldError>) {
    let Some(m) = s.as_object() else {
        errs.push(FieldError::invalid(path, s, "must be a schema object"));
        return;
    };
    let at = |k: &str| format!("{path}.{k}");
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(s, "x-kubernetes-embedded-resource");
    if m.contains_key("$ref") {
        errs.push(FieldError::forbidden(&at("$ref"), "$ref is not supported"));
    }
    if pos == Position::Junctor {
        for k in [
            "type",
            "default",
            "nullable",
            "additionalProperties",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-embedded-resource",
            "x-kubernetes-int-or-string",
        ] {
            if m.contains_key(k) && !(k == "type" && int_or_string_branch(s)) {
                errs.push(FieldError::forbidden(
                    &at(k),
                    "must be empty to be structural",
                ));
            }
        }
    } else if ty.is_empty() && !int_or_string && !preserve && pos != Position::Root {
        let what = if pos == Position::Item {
            "must not be empty for specified array items"
        } else {
            "must not be empty for specified object fields"
        };
        errs.push(FieldError::required(&at("type"), what));
    }
    if int_or_string && !ty.is_empty() {
        errs.push(FieldError::invalid(
            &at("type"),
            &m["type"],
            "must be empty if x-kubernetes-int-or-string is true",
        ));
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(
            &at("x-kubernetes-preserve-unknown-fields"),
            &Value::Bool(false),
            "must be true or undefined",
        ));
    }
    if embedded {
        if ty != "object" {
            errs.push(FieldError::invalid(
                &at("type"),
                m.get("type").unwrap_or(&Value::Null),
                "must be object if x-kubernetes-embedded-resource is true",
            ));
        }
        if !preserve && !m.contains_key("properties") {
            errs.push(FieldError::required(
                &at("properties"),
                "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            ));
        }
    }
    if ty == "array" && !m.contains_key("items") {
        errs.push(FieldError::required(&at("items"), "must be specified"));
    }
    if m.contains_key("properties") && m.contains_key("additionalProperties") {
        errs.push(FieldError::forbidden(
            &at("additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if m.get("additionalProperties") == Some(&Value::Bool(false)) {
        errs.push(FieldError::forbidden(
            &at("additionalProperties"),
            "additionalProperties cannot be set to false",
        ));
    }
    if flag(s, "uniqueItems") {
        errs.push(FieldError::forbidden(
            &at("uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(p) = m.get("pattern").and_then(Value::as_str) {
        if let Err(e) = Regex::new(p) {
            errs.push(FieldError::invalid(
                &at("pattern"),
                &m["pattern"],
                &format!("must be a valid regular expression, but isn't: {e}"),
            ));
        }
    }
    match m.get("x-kubernetes-list-type").and_then(Value::as_str) {
        None | Some("atomic") | Some("set") => {}
        Some("map") => {
            let keys = m
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .is_some_and(|k| !k.is_empty());
            if !keys {
                errs.push(FieldError::required(
                    &at("x-kubernetes-list-map-keys"),
                    "must not be empty if x-kubernetes-list-type is map",
                ));
            }
        }
        Some(_) => errs.push(FieldError::not_supported(
            &at("x-kubernetes-list-type"),
            &m["x-kubernetes-list-type"],
            &["atomic".into(), "set".into(), "map".into()],
        )),
    }
    if let Some(d) = m.get("default") {
        if pos != Position::Junctor {
            let mut de = Vec::new();
            super::validate::node(s, d, &at("default"), &mut de);
            errs.extend(de);
        }
    }
    let inner = |p: Position| {
        if pos == Position::Junctor {
            Position::Junctor
        } else {
            p
        }
    };
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        for (k, ps) in props {
            node(
                ps,
                &format!("{path}.properties[{k}]"),
                inner(Position::Property),
                errs,
            );
        }
    }
    if let Some(ap @ Value::Object(_)) = m.get("additionalProperties") {
        node(
            ap,
            &at("additionalProperties"),
            inner(Position::Property),
            errs,
        );
    }
    if let Some(items) = m.get("items") {
        node(items, &at("items"), inner(Position::Item), errs);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = m.get(k).and_then(Value::as_array) {
            for (i, js) in list.iter().enumerate() {
                node(js, &format!("{path}.{k}[{i}]"), Position::Junctor, errs);
            }
        }
    }
    if let Some(not) = m.get("not") {
        node(not, &at("not"), Position::Junctor, errs);
    }
}

/// The `anyOf: [{type: integer}, {type: string}]` upstream allows under int-or-string.
fn int_or_string_branch(s: &Value) -> bool {
    matches!(
        s.get("type").and_then(Value::as_str),
        Some("integer" | "string")
    ) && s.as_object().is_some_and(|m| m.len() == 1)
}
