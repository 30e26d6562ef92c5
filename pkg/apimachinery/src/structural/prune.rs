//! Pruning: dropping fields the schema does not specify, as upstream does on every write (and
//! reports for `fieldValidation`).

use serde_json::{Map, Value};

use super::{child, flag, index, OBJECT_META_FIELDS};

/// Drops from `obj` (a whole custom resource) every field `schema` does not specify, unless
/// `x-kubernetes-preserve-unknown-fields` keeps it. `apiVersion`, `kind` and `metadata` stay at
/// the root and in embedded resources; `metadata` keeps only `ObjectMeta`'s fields.
///
/// Returns the paths of dropped fields (`spec.foo`, `spec.items[0].bar`), in document order.
pub fn prune(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(m) = obj {
        resource(schema, m, "", &mut out);
    }
    out
}

/// An object that is a Kubernetes resource: the root, or an embedded resource.
fn resource(schema: &Value, m: &mut Map<String, Value>, path: &str, out: &mut Vec<String>) {
    if let Some(Value::Object(meta)) = m.get_mut("metadata") {
        let meta_path = child(path, "metadata");
        meta.retain(|k, _| {
            let keep = OBJECT_META_FIELDS.contains(&k.as_str());
            if !keep {
                out.push(child(&meta_path, k));
            }
            keep
        });
    }
    object(schema, m, path, out, true);
}

fn object(
    schema: &Value,
    m: &mut Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
    is_resource: bool,
) {
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let mut dropped = Vec::new();
    for (k, v) in m.iter_mut() {
        if is_resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let p = child(path, k);
        if let Some(s) = props.and_then(|p| p.get(k)) {
            node(s, v, &p, out);
            continue;
        }
        match additional {
            Some(s @ Value::Object(_)) => node(s, v, &p, out),
            Some(Value::Bool(true)) => {}
            _ if preserve => {}
            _ => dropped.push(k.clone()),
        }
    }
    for k in dropped {
        m.shift_remove(&k);
        out.push(child(path, &k));
    }
}

fn node(schema: &Value, v: &mut Value, path: &str, out: &mut Vec<String>) {
    if !schema.is_object() {
        return;
    }
    match v {
        Value::Object(m) => {
            if flag(schema, "x-kubernetes-embedded-resource") {
                resource(schema, m, path, out);
            } else {
                object(schema, m, path, out, false);
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    node(s, item, &index(path, i), out);
                }
            }
        }
        _ => {}
    }
}
