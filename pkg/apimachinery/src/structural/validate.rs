//! Validation of a custom resource against its version's schema, with upstream's messages
//! (`<path> in body must be of type integer: "string"`).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::{child, flag, index, FieldError};

/// Checks `obj` (a whole custom resource) against `schema` (its `openAPIV3Schema`).
///
/// At the root, `apiVersion`, `kind` and `metadata` are the apiserver's business and are not
/// checked here. Formats checked: `date-time`, `date`, `byte`, `uuid`, `ipv4`, `ipv6`,
/// `cidr`, `hostname`, `int32`; others are accepted as any string.
pub fn validate(schema: &Value, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(m) = obj.as_object() else {
        errs.push(type_error("", obj, "object"));
        return errs;
    };
    let mut root = m.clone();
    for k in ["apiVersion", "kind", "metadata"] {
        root.remove(k);
    }
    let mut s = schema.clone();
    if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
        for k in ["apiVersion", "kind", "metadata"] {
            props.remove(k);
        }
    }
    if let Some(req) = s.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|r| !matches!(r.as_str(), Some("apiVersion" | "kind" | "metadata")));
    }
    node(&s, &Value::Object(root), "", &mut errs);
    errs
}

/// Upstream's name of a JSON value's type in type errors.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, value: &Value, want: &str) -> FieldError {
    let actual = type_of(value);
    FieldError::invalid(
        path,
        &Value::String(actual.into()),
        &format!(
            "{} in body must be of type {want}: \"{actual}\"",
            body(path)
        ),
    )
}

/// How upstream names the root in messages.
fn body(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

fn matches_type(want: &str, v: &Value) -> bool {
    match want {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

/// Validates one value; the value's own path is `path`.
pub(crate) fn node(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    if !schema.is_object() {
        return;
    }
    if v.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            errs.push(type_error(path, v, t));
        } else if flag(schema, "x-kubernetes-int-or-string") {
            errs.push(type_error(path, v, "integer,string"));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(type_error(path, v, "integer,string"));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        if !matches_type(t, v) {
            errs.push(type_error(path, v, t));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.iter().any(|a| json_eq(a, v)) {
            errs.push(FieldError::not_supported(path, v, allowed));
        }
    }
    match v {
        Value::Number(_) => number(schema, v, path, errs),
        Value::String(s) => string(schema, s, v, path, errs),
        Value::Array(items) => array(schema, items, path, errs),
        Value::Object(m) => object(schema, m, path, errs),
        Value::Null | Value::Bool(_) => {}
    }
    junctors(schema, v, path, errs);
}

/// Numbers compare by value (`1` equals `1.0`), everything else structurally.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

fn number(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(x) = v.as_f64() else { return };
    let b = body(path);
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let show = &schema["minimum"];
        if flag(schema, "exclusiveMinimum") {
            if x <= min {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{b} in body should be greater than {show}"),
                ));
            }
        } else if x < min {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{b} in body should be greater than or equal to {show}"),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let show = &schema["maximum"];
        if flag(schema, "exclusiveMaximum") {
            if x >= max {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{b} in body should be less than {show}"),
                ));
            }
        } else if x > max {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{b} in body should be less than or equal to {show}"),
            ));
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64) {
        if m > 0.0 && ((x / m) - (x / m).round()).abs() > 1e-9 {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!(
                    "{b} in body should be a multiple of {}",
                    schema["multipleOf"]
                ),
            ));
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("int32")
        && v.as_i64().is_some_and(|i| i32::try_from(i).is_err())
    {
        errs.push(FieldError::invalid(
            path,
            v,
            &format!("{b} in body must be of type int32: \"{v}\""),
        ));
    }
}

fn string(schema: &Value, s: &str, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let b = body(path);
    let chars = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if chars < min {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{b} in body should be at least {min} chars long"),
            ));
        }
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if chars > max {
            errs.push(FieldError::too_long(path, max));
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        // An uncompilable pattern is rejected when the CRD is written; never fail CRs on it.
        if let Ok(re) = Regex::new(p) {
            if !re.is_match(s) {
                errs.push(FieldError::invalid(
                    path,
                    v,
                    &format!("{b} in body should match '{p}'"),
                ));
            }
        }
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        if !format_ok(f, s) {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!(
                    "{b} in body must be of type {f}: {}",
                    crate::gofmt::quote(s)
                ),
            ));
        }
    }
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static pattern compiles"))
}

/// Whether `s` is a valid `format` value; unknown formats accept anything, as upstream.
fn format_ok(format: &str, s: &str) -> bool {
    static DATE_TIME: OnceLock<Regex> = OnceLock::new();
    static DATE: OnceLock<Regex> = OnceLock::new();
    static UUID: OnceLock<Regex> = OnceLock::new();
    static HOSTNAME: OnceLock<Regex> = OnceLock::new();
    match format {
        "date-time" | "datetime" => re(
            &DATE_TIME,
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
        )
        .is_match(s),
        "date" => re(&DATE, r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$").is_match(s),
        "uuid" => re(
            &UUID,
            r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
        )
        .is_match(s),
        "hostname" => {
            s.len() <= 255
                && re(
                    &HOSTNAME,
                    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$",
                )
                .is_match(s)
        }
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.parse::<Ipv4Addr>().is_ok() {
                32
            } else if ip.parse::<Ipv6Addr>().is_ok() {
                128
            } else {
                return false;
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "byte" => {
            s.len().is_multiple_of(4)
                && s.trim_end_matches('=').len() + 2 >= s.len()
                && s.trim_end_matches('=')
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        }
        _ => true,
    }
}

fn array(schema: &Value, items: &[Value], path: &str, errs: &mut Vec<FieldError>) {
    let b = body(path);
    let n = items.len();
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if (n as u64) < min {
            errs.push(FieldError::invalid(
                path,
                &Value::from(n),
                &format!("{b} in body should have at least {min} items"),
            ));
        }
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if n as u64 > max {
            errs.push(FieldError::too_many(path, n, max));
        }
    }
    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    if flag(schema, "uniqueItems") || list_type == Some("set") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].iter().any(|prev| json_eq(prev, item)) {
                errs.push(FieldError::duplicate(&index(path, i), item));
            }
        }
    }
    if list_type == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let key_of = |item: &Value| -> Map<String, Value> {
            keys.iter()
                .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect()
        };
        for (i, item) in items.iter().enumerate() {
            let k = key_of(item);
            if items[..i].iter().any(|prev| key_of(prev) == k) {
                errs.push(FieldError::duplicate(&index(path, i), &Value::Object(k)));
            }
        }
    }
    if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
        for (i, item) in items.iter().enumerate() {
            node(item_schema, item, &index(path, i), errs);
        }
    }
}

fn object(schema: &Value, m: &Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    let b = body(path);
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                errs.push(FieldError::required(&child(path, r), ""));
            }
        }
    }
    if embedded {
        for k in ["apiVersion", "kind"] {
            if m.get(k).and_then(Value::as_str).unwrap_or("").is_empty() {
                errs.push(FieldError::required(&child(path, k), "must not be empty"));
            }
        }
    }
    let n = m.len();
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if (n as u64) < min {
            errs.push(FieldError::invalid(
                path,
                &Value::from(n),
                &format!("{b} in body should have at least {min} properties"),
            ));
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if n as u64 > max {
            errs.push(FieldError::too_many(path, n, max));
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    for (k, v) in m {
        if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let p = child(path, k);
        match props.and_then(|p| p.get(k)) {
            Some(s) => node(s, v, &p, errs),
            None => match schema.get("additionalProperties") {
                Some(s @ Value::Object(_)) => node(s, v, &p, errs),
                Some(Value::Bool(false)) => errs.push(FieldError::forbidden(&p, "")),
                _ => {}
            },
        }
    }
}

/// `allOf`, `anyOf`, `oneOf`, `not`: value validations only, as structural schemas allow.
fn junctors(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let b = body(path);
    let check = |s: &Value| {
        let mut e = Vec::new();
        node(s, v, path, &mut e);
        e
    };
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            errs.extend(check(s));
        }
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let results: Vec<Vec<FieldError>> = any.iter().map(check).collect();
        if !results.is_empty() && results.iter().all(|r| !r.is_empty()) {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{b} in body must validate at least one schema (anyOf)"),
            ));
            errs.extend(results.into_iter().flatten());
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let results: Vec<Vec<FieldError>> = one.iter().map(check).collect();
        let passing = results.iter().filter(|r| r.is_empty()).count();
        if !results.is_empty() && passing != 1 {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{b} in body must validate one and only one schema (oneOf)"),
            ));
            if passing == 0 {
                errs.extend(results.into_iter().flatten());
            }
        }
    }
    if let Some(not) = schema.get("not").filter(|s| s.is_object()) {
        if check(not).is_empty() {
            errs.push(FieldError::invalid(
                path,
                v,
                &format!("{b} in body must not validate the schema (not)"),
            ));
        }
    }
}
