//! Defaulting: `default` values of the schema filled into objects that exist, as upstream does
//! when decoding a request and when reading from storage.

use serde_json::{Map, Value};

use super::flag;

/// Applies `schema`'s defaults to `obj` (a whole custom resource).
///
/// A property with a `default` is set when it is absent, or when it is `null` and not
/// `nullable`; a non-nullable `null` without a default is dropped (upstream's
/// `PruneNonNullableNullsWithoutDefaults`). Defaults apply only inside objects that exist, and
/// recursively inside defaulted values. `apiVersion`, `kind` and `metadata` at the root are
/// left alone.
pub fn default(schema: &Value, obj: &mut Value) {
    if let Value::Object(m) = obj {
        object(schema, m, true);
    }
}

fn object(schema: &Value, m: &mut Map<String, Value>, root: bool) {
    let skip = |k: &str| root && matches!(k, "apiVersion" | "kind" | "metadata");
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, ps) in props {
            if skip(k) {
                continue;
            }
            let default = ps.get("default");
            match m.get(k) {
                None => {
                    if let Some(d) = default {
                        m.insert(k.clone(), d.clone());
                    }
                }
                Some(Value::Null) if !flag(ps, "nullable") => match default {
                    Some(d) => {
                        m.insert(k.clone(), d.clone());
                    }
                    None => {
                        m.shift_remove(k);
                    }
                },
                Some(_) => {}
            }
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in m.iter_mut() {
        if skip(k) {
            continue;
        }
        if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
            node(s, v);
        }
    }
}

fn node(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => object(schema, m, false),
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    node(s, item);
                }
            }
        }
        _ => {}
    }
}
