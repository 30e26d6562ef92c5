//! Typed decoding: built-in kinds go through their k8s-openapi struct, so wrong types are
//! rejected with the field's path and unknown fields are found (and dropped) as upstream's
//! decoder does.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Round-trips `obj` through `T`. Returns the pruned object and the paths of fields `T` does not
/// have.
///
/// # Errors
/// The path of the first field whose value does not fit `T`, with serde's description.
pub fn typed<T: DeserializeOwned + Serialize>(obj: Value) -> Result<(Value, Vec<String>), String> {
    let parsed: T = serde_path_to_error::deserialize(&obj).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    let out = serde_json::to_value(&parsed).map_err(|e| e.to_string())?;
    let mut unknown = Vec::new();
    unknown_fields(&obj, &out, "", &mut unknown);
    Ok((out, unknown))
}

/// Paths present (and not null) in `input` but missing from `kept`.
pub fn unknown_fields(input: &Value, kept: &Value, path: &str, out: &mut Vec<String>) {
    match (input, kept) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None if !v.is_null() => out.push(p),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": 1}], "extra": null}});
        let (out, unknown) = typed::<Pod>(pod).unwrap();
        assert_eq!(unknown, vec!["spec.containers[0].bogus".to_string()]);
        assert!(out["spec"]["containers"][0].get("bogus").is_none());
        assert_eq!(out["spec"]["containers"][0]["image"], "i");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let pod = json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}]}});
        let err = typed::<Pod>(pod).unwrap_err();
        assert!(
            err.starts_with("spec.containers[0].ports[0].containerPort"),
            "{err}"
        );
    }
}
