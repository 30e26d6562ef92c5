//! Encodes a swagger 2.0 JSON document as gnostic's `openapi.v2.Document` protobuf
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), which is what client-go's
//! `OpenAPISchema()` (kubectl explain, validation, apply) asks for and `proto.Unmarshal`s.
//!
//! Field numbers follow gnostic's `openapiv2/OpenAPIv2.proto`. Values gnostic keeps as YAML
//! (`Any.yaml`: vendor extensions, `default`, `example`, `enum`) are written as JSON text,
//! which is valid YAML and parses back to the same value with the yaml libraries clients use.
//! Keywords swagger 2.0 has no field for (`oneOf`, `nullable`, ...) are dropped, as gnostic's
//! own JSON → protobuf compiler does.

use serde_json::{Map, Value};

/// Encodes `doc` (a swagger 2.0 document) to protobuf bytes.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 << 20);
    let Some(m) = doc.as_object() else { return buf };
    for (k, v) in m {
        match k.as_str() {
            "swagger" => string(&mut buf, 1, v),
            "info" => message(&mut buf, 2, |b| info(b, v)),
            "host" => string(&mut buf, 3, v),
            "basePath" => string(&mut buf, 4, v),
            "schemes" => strings(&mut buf, 5, v),
            "consumes" => strings(&mut buf, 6, v),
            "produces" => strings(&mut buf, 7, v),
            "paths" => message(&mut buf, 8, |b| paths(b, v)),
            "definitions" => message(&mut buf, 9, |b| named(b, 1, v, schema)),
            "security" => security(&mut buf, 12, v),
            "securityDefinitions" => message(&mut buf, 13, |b| named(b, 1, v, security_definition)),
            x if x.starts_with("x-") => vendor(&mut buf, 16, k, v),
            _ => {}
        }
    }
    buf
}

// ---- wire format ----

fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(buf, field, 2);
    varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn str_field(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes_field(buf, field, s.as_bytes());
    }
}

/// A string field from a JSON value; non-strings are skipped.
fn string(buf: &mut Vec<u8>, field: u32, v: &Value) {
    if let Value::String(s) = v {
        str_field(buf, field, s);
    }
}

/// A repeated string field from a JSON string or array of strings.
fn strings(buf: &mut Vec<u8>, field: u32, v: &Value) {
    match v {
        Value::String(s) => bytes_field(buf, field, s.as_bytes()),
        Value::Array(a) => {
            for s in a.iter().filter_map(Value::as_str) {
                bytes_field(buf, field, s.as_bytes());
            }
        }
        _ => {}
    }
}

fn boolean(buf: &mut Vec<u8>, field: u32, v: &Value) {
    if v.as_bool() == Some(true) {
        key(buf, field, 0);
        varint(buf, 1);
    }
}

fn int64(buf: &mut Vec<u8>, field: u32, v: &Value) {
    let n = v
        .as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .unwrap_or(0);
    if n != 0 {
        key(buf, field, 0);
        varint(buf, n as u64);
    }
}

fn double(buf: &mut Vec<u8>, field: u32, v: &Value) {
    if let Some(d) = v.as_f64() {
        if d != 0.0 {
            key(buf, field, 1);
            buf.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// A length-delimited sub-message, always written (oneof members need presence).
///
/// The body is written in place after a one-byte length placeholder, which is widened
/// afterwards if needed: no temporary buffer per nesting level.
fn message(buf: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    key(buf, field, 2);
    let start = buf.len();
    buf.push(0);
    f(buf);
    let len = buf.len() - start - 1;
    if len < 0x80 {
        if let Some(b) = buf.get_mut(start) {
            *b = len as u8;
        }
    } else {
        let mut prefix = Vec::with_capacity(10);
        varint(&mut prefix, len as u64);
        buf.splice(start..start + 1, prefix);
    }
}

/// `Any { yaml = 2 }` holding `v` as JSON text.
fn any(buf: &mut Vec<u8>, field: u32, v: &Value) {
    let text = serde_json::to_string(v).unwrap_or_default();
    message(buf, field, |b| str_field(b, 2, &text));
}

/// `NamedAny { name = 1; value = 2 }`: one vendor extension.
fn vendor(buf: &mut Vec<u8>, field: u32, name: &str, v: &Value) {
    message(buf, field, |b| {
        str_field(b, 1, name);
        any(b, 2, v);
    });
}

/// `repeated Named<X> additional_properties = field` from a JSON object: `{name = 1; value = 2}`.
fn named(buf: &mut Vec<u8>, field: u32, v: &Value, value: fn(&mut Vec<u8>, &Value)) {
    if let Value::Object(m) = v {
        for (name, child) in m {
            message(buf, field, |b| {
                str_field(b, 1, name);
                message(b, 2, |b| value(b, child));
            });
        }
    }
}

// ---- messages ----

fn info(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, v) in m {
        match k.as_str() {
            "title" => string(buf, 1, v),
            "version" => string(buf, 2, v),
            "description" => string(buf, 3, v),
            "termsOfService" => string(buf, 4, v),
            x if x.starts_with("x-") => vendor(buf, 7, k, v),
            _ => {}
        }
    }
}

fn paths(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, item) in m {
        if k.starts_with("x-") {
            vendor(buf, 1, k, item);
        } else {
            message(buf, 2, |b| {
                str_field(b, 1, k);
                message(b, 2, |b| path_item(b, item));
            });
        }
    }
}

fn path_item(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, v) in m {
        match k.as_str() {
            "$ref" => string(buf, 1, v),
            "get" => message(buf, 2, |b| operation(b, v)),
            "put" => message(buf, 3, |b| operation(b, v)),
            "post" => message(buf, 4, |b| operation(b, v)),
            "delete" => message(buf, 5, |b| operation(b, v)),
            "options" => message(buf, 6, |b| operation(b, v)),
            "head" => message(buf, 7, |b| operation(b, v)),
            "patch" => message(buf, 8, |b| operation(b, v)),
            "parameters" => parameters(buf, 9, v),
            x if x.starts_with("x-") => vendor(buf, 10, k, v),
            _ => {}
        }
    }
}

fn operation(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, v) in m {
        match k.as_str() {
            "tags" => strings(buf, 1, v),
            "summary" => string(buf, 2, v),
            "description" => string(buf, 3, v),
            "externalDocs" => message(buf, 4, |b| external_docs(b, v)),
            "operationId" => string(buf, 5, v),
            "produces" => strings(buf, 6, v),
            "consumes" => strings(buf, 7, v),
            "parameters" => parameters(buf, 8, v),
            "responses" => message(buf, 9, |b| responses(b, v)),
            "schemes" => strings(buf, 10, v),
            "deprecated" => boolean(buf, 11, v),
            x if x.starts_with("x-") => vendor(buf, 13, k, v),
            _ => {}
        }
    }
}

/// `repeated ParametersItem` (`parameter = 1` | `json_reference = 2`).
fn parameters(buf: &mut Vec<u8>, field: u32, v: &Value) {
    let Value::Array(items) = v else { return };
    for p in items {
        let Some(m) = p.as_object() else { continue };
        message(buf, field, |b| {
            if let Some(r) = m.get("$ref") {
                message(b, 2, |b| {
                    string(b, 1, r);
                    if let Some(d) = m.get("description") {
                        string(b, 2, d);
                    }
                });
                return;
            }
            message(b, 1, |b| match m.get("in").and_then(Value::as_str) {
                Some("body") => message(b, 1, |b| body_parameter(b, m)),
                Some("query") => message(b, 2, |b| message(b, 3, |b| non_body(b, m, 1))),
                Some("path") => message(b, 2, |b| message(b, 4, |b| non_body(b, m, 0))),
                Some("header") => message(b, 2, |b| message(b, 1, |b| non_body(b, m, 0))),
                Some("formData") => message(b, 2, |b| message(b, 2, |b| non_body(b, m, 1))),
                _ => {}
            });
        });
    }
}

fn body_parameter(buf: &mut Vec<u8>, m: &Map<String, Value>) {
    for (k, v) in m {
        match k.as_str() {
            "description" => string(buf, 1, v),
            "name" => string(buf, 2, v),
            "in" => string(buf, 3, v),
            "required" => boolean(buf, 4, v),
            "schema" => message(buf, 5, |b| schema(b, v)),
            x if x.starts_with("x-") => vendor(buf, 6, k, v),
            _ => {}
        }
    }
}

/// Query/formData (`shift` 1: they have `allow_empty_value = 5`) and path/header (`shift` 0)
/// sub-schemas share one layout after the first four fields.
fn non_body(buf: &mut Vec<u8>, m: &Map<String, Value>, shift: u32) {
    for (k, v) in m {
        match k.as_str() {
            "required" => boolean(buf, 1, v),
            "in" => string(buf, 2, v),
            "description" => string(buf, 3, v),
            "name" => string(buf, 4, v),
            "allowEmptyValue" if shift == 1 => boolean(buf, 5, v),
            "type" => string(buf, 5 + shift, v),
            "format" => string(buf, 6 + shift, v),
            "collectionFormat" => string(buf, 8 + shift, v),
            "default" => any(buf, 9 + shift, v),
            "maximum" => double(buf, 10 + shift, v),
            "exclusiveMaximum" => boolean(buf, 11 + shift, v),
            "minimum" => double(buf, 12 + shift, v),
            "exclusiveMinimum" => boolean(buf, 13 + shift, v),
            "maxLength" => int64(buf, 14 + shift, v),
            "minLength" => int64(buf, 15 + shift, v),
            "pattern" => string(buf, 16 + shift, v),
            "maxItems" => int64(buf, 17 + shift, v),
            "minItems" => int64(buf, 18 + shift, v),
            "uniqueItems" => boolean(buf, 19 + shift, v),
            "enum" => {
                for e in v.as_array().into_iter().flatten() {
                    any(buf, 20 + shift, e);
                }
            }
            "multipleOf" => double(buf, 21 + shift, v),
            x if x.starts_with("x-") => vendor(buf, 22 + shift, k, v),
            _ => {}
        }
    }
}

fn responses(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (code, r) in m {
        if code.starts_with("x-") {
            vendor(buf, 2, code, r);
            continue;
        }
        message(buf, 1, |b| {
            str_field(b, 1, code);
            message(b, 2, |b| {
                if let Some(reference) = r.get("$ref") {
                    message(b, 2, |b| string(b, 1, reference));
                } else {
                    message(b, 1, |b| response(b, r));
                }
            });
        });
    }
}

fn response(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, v) in m {
        match k.as_str() {
            "description" => string(buf, 1, v),
            "schema" => message(buf, 2, |b| message(b, 1, |b| schema(b, v))),
            x if x.starts_with("x-") => vendor(buf, 5, k, v),
            _ => {}
        }
    }
}

fn external_docs(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, v) in m {
        match k.as_str() {
            "description" => string(buf, 1, v),
            "url" => string(buf, 2, v),
            x if x.starts_with("x-") => vendor(buf, 3, k, v),
            _ => {}
        }
    }
}

/// gnostic `Schema`.
pub(crate) fn schema(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    for (k, v) in m {
        match k.as_str() {
            "$ref" => string(buf, 1, v),
            "format" => string(buf, 2, v),
            "title" => string(buf, 3, v),
            "description" => string(buf, 4, v),
            "default" => any(buf, 5, v),
            "multipleOf" => double(buf, 6, v),
            "maximum" => double(buf, 7, v),
            "exclusiveMaximum" => boolean(buf, 8, v),
            "minimum" => double(buf, 9, v),
            "exclusiveMinimum" => boolean(buf, 10, v),
            "maxLength" => int64(buf, 11, v),
            "minLength" => int64(buf, 12, v),
            "pattern" => string(buf, 13, v),
            "maxItems" => int64(buf, 14, v),
            "minItems" => int64(buf, 15, v),
            "uniqueItems" => boolean(buf, 16, v),
            "maxProperties" => int64(buf, 17, v),
            "minProperties" => int64(buf, 18, v),
            "required" => strings(buf, 19, v),
            "enum" => {
                for e in v.as_array().into_iter().flatten() {
                    any(buf, 20, e);
                }
            }
            "additionalProperties" => match v {
                Value::Bool(flag) => message(buf, 21, |b| {
                    // A oneof member is present even when false.
                    key(b, 2, 0);
                    varint(b, u64::from(*flag));
                }),
                Value::Object(_) => message(buf, 21, |b| message(b, 1, |b| schema(b, v))),
                _ => {}
            },
            "type" => message(buf, 22, |b| strings(b, 1, v)),
            "items" => match v {
                Value::Array(items) => message(buf, 23, |b| {
                    for it in items {
                        message(b, 1, |b| schema(b, it));
                    }
                }),
                Value::Object(_) => message(buf, 23, |b| message(b, 1, |b| schema(b, v))),
                _ => {}
            },
            "allOf" => {
                for s in v.as_array().into_iter().flatten() {
                    message(buf, 24, |b| schema(b, s));
                }
            }
            "properties" => message(buf, 25, |b| named(b, 1, v, schema)),
            "discriminator" => string(buf, 26, v),
            "readOnly" => boolean(buf, 27, v),
            "externalDocs" => message(buf, 29, |b| external_docs(b, v)),
            "example" => any(buf, 30, v),
            x if x.starts_with("x-") => vendor(buf, 31, k, v),
            _ => {}
        }
    }
}

/// `repeated SecurityRequirement { repeated NamedStringArray additional_properties = 1 }`.
fn security(buf: &mut Vec<u8>, field: u32, v: &Value) {
    for req in v.as_array().into_iter().flatten() {
        message(buf, field, |b| {
            named(b, 1, req, |b, scopes| strings(b, 1, scopes))
        });
    }
}

/// `SecurityDefinitionsItem`; only API keys (bearer tokens) and basic auth are published.
fn security_definition(buf: &mut Vec<u8>, v: &Value) {
    let Some(m) = v.as_object() else { return };
    match m.get("type").and_then(Value::as_str) {
        Some("apiKey") => message(buf, 2, |b| {
            for (k, v) in m {
                match k.as_str() {
                    "type" => string(b, 1, v),
                    "name" => string(b, 2, v),
                    "in" => string(b, 3, v),
                    "description" => string(b, 4, v),
                    x if x.starts_with("x-") => vendor(b, 5, k, v),
                    _ => {}
                }
            }
        }),
        Some("basic") => message(buf, 1, |b| {
            for (k, v) in m {
                match k.as_str() {
                    "type" => string(b, 1, v),
                    "description" => string(b, 2, v),
                    x if x.starts_with("x-") => vendor(b, 3, k, v),
                    _ => {}
                }
            }
        }),
        _ => {}
    }
}

/// The entries of `Paths` (`repeated NamedPathItem path = 2`) for `paths`, without the
/// enclosing message, so cached parts can be concatenated.
pub(crate) fn path_entries(paths: &Map<String, Value>) -> Vec<u8> {
    let mut buf = Vec::new();
    for (k, item) in paths {
        message(&mut buf, 2, |b| {
            str_field(b, 1, k);
            message(b, 2, |b| path_item(b, item));
        });
    }
    buf
}

/// The entries of `Definitions` (`repeated NamedSchema additional_properties = 1`).
pub(crate) fn definition_entries(defs: &Map<String, Value>) -> Vec<u8> {
    let mut buf = Vec::new();
    for (k, s) in defs {
        message(&mut buf, 1, |b| {
            str_field(b, 1, k);
            message(b, 2, |b| schema(b, s));
        });
    }
    buf
}

/// A whole document from its header (a swagger 2.0 document without `paths` and
/// `definitions`) and the pre-encoded entries of both.
pub(crate) fn assemble(header: &Value, paths: &[&[u8]], defs: &[&[u8]]) -> Vec<u8> {
    let mut buf = encode_document(header);
    let concat = |parts: &[&[u8]]| {
        parts
            .iter()
            .flat_map(|p| p.iter().copied())
            .collect::<Vec<u8>>()
    };
    bytes_field(&mut buf, 8, &concat(paths));
    bytes_field(&mut buf, 9, &concat(defs));
    buf
}
