//! Small helpers shared by the group modules: reading and defaulting JSON fields, upstream's
//! common validators (ports, label selectors, immutability), Go-style value rendering for the
//! messages upstream prints with `%#v`, and table-cell formatting.

use distro_apimachinery::labels::Selector;
use distro_apimachinery::quantity::Quantity;
use distro_apimachinery::validation as v;
use serde_json::{json, Map, Value};

use crate::error::{FieldError, FieldReason};

/// The string at `v`, or `""`.
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The array at `v`, or an empty slice.
pub fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], |a| a.as_slice())
}

/// True if `v` is null, or an empty string/array/object.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Sets `obj[key]` to `value` if it is missing or null. Does nothing if `obj` is not an object
/// (or null, which becomes one).
pub fn set_default(obj: &mut Value, key: &str, value: Value) {
    if obj.is_null() {
        *obj = json!({});
    }
    if let Some(m) = obj.as_object_mut() {
        match m.get(key) {
            None | Some(Value::Null) => {
                m.insert(key.to_string(), value);
            }
            Some(_) => {}
        }
    }
}

/// Sets `obj[key]` to `value` if it is missing, null or the empty string.
pub fn set_default_str(obj: &mut Value, key: &str, value: &str) {
    if s(&obj[key]).is_empty() && obj.is_object() {
        obj[key] = json!(value);
    }
}

/// Removes `key` from `obj` if it is an object.
pub fn remove(obj: &mut Value, key: &str) {
    if let Some(m) = obj.as_object_mut() {
        m.remove(key);
    }
}

/// Mutable items of the array at `obj[key]` (nothing if absent).
pub fn items_mut<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    obj.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

/// `Required value` at `path` with upstream's optional detail.
pub fn required(path: impl Into<String>, detail: &str) -> FieldError {
    FieldError::required(path, detail)
}

/// An `Invalid value` error whose value is already rendered (Go `%#v`-style values).
pub fn invalid_raw(path: impl Into<String>, shown: &str, detail: &str) -> FieldError {
    let detail = if detail.is_empty() {
        format!("Invalid value: {shown}")
    } else {
        format!("Invalid value: {shown}: {detail}")
    };
    FieldError {
        field: path.into(),
        reason: FieldReason::Invalid,
        detail,
    }
}

/// `Not found: "value"`.
pub fn not_found(path: impl Into<String>, value: &str) -> FieldError {
    FieldError {
        field: path.into(),
        reason: FieldReason::NotFound,
        detail: format!("Not found: {value:?}"),
    }
}

/// `Too long: must have at most N bytes`.
pub fn too_long(path: impl Into<String>, max: usize) -> FieldError {
    FieldError {
        field: path.into(),
        reason: FieldReason::TooLong,
        detail: format!("Too long: must have at most {max} bytes"),
    }
}

/// Checks `value` is one of `supported` (when set): upstream's `field.NotSupported`.
pub fn enum_check(errs: &mut Vec<FieldError>, path: &str, value: &Value, supported: &[&str]) {
    if let Some(v) = value.as_str() {
        if !supported.contains(&v) {
            errs.push(FieldError::not_supported(path, value, supported));
        }
    }
}

/// Like [`enum_check`], but an empty or missing value is `Required value`.
pub fn enum_required(errs: &mut Vec<FieldError>, path: &str, value: &Value, supported: &[&str]) {
    if s(value).is_empty() {
        errs.push(required(path, ""));
    } else {
        enum_check(errs, path, value, supported);
    }
}

/// `must be greater than or equal to 0` for a negative integer.
pub fn non_negative(errs: &mut Vec<FieldError>, path: &str, value: &Value) {
    if value.as_i64().is_some_and(|n| n < 0) {
        errs.push(FieldError::invalid(
            path,
            value,
            "must be greater than or equal to 0",
        ));
    }
}

/// Upstream's `IsValidPortNum` message.
pub const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// True for 1..=65535.
pub fn valid_port(n: i64) -> bool {
    (1..=65535).contains(&n)
}

/// Upstream's `IsValidPortName` (IANA_SVC_NAME) messages.
pub fn port_name_errors(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push(v::max_len_error(15));
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// DNS-1123 label check of a name field, with `Required value` when empty.
pub fn label_name(errs: &mut Vec<FieldError>, path: &str, value: &Value) {
    let name = s(value);
    if name.is_empty() {
        errs.push(required(path, ""));
        return;
    }
    for m in v::is_dns1123_label(name) {
        errs.push(FieldError::invalid(path, value, m));
    }
}

/// DNS-1123 subdomain check of a name field, with `Required value` when empty.
pub fn subdomain_name(errs: &mut Vec<FieldError>, path: &str, value: &Value) {
    let name = s(value);
    if name.is_empty() {
        errs.push(required(path, ""));
        return;
    }
    for m in v::is_dns1123_subdomain(name) {
        errs.push(FieldError::invalid(path, value, m));
    }
}

/// Upstream's `IsConfigMapKey` messages (keys of ConfigMap/Secret data).
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push(v::max_len_error(253));
    }
    if key.is_empty()
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        errs.push(v::regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if key == "." {
        errs.push("must not be '.'".into());
    } else if key == ".." {
        errs.push("must not be '..'".into());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

/// Label values and keys of a plain string map (selectors, nodeSelector).
pub fn label_map(errs: &mut Vec<FieldError>, path: &str, labels: &Value) {
    errs.extend(crate::validation::labels(labels, path));
}

/// Upstream's `ValidateLabelSelector`: operators, values and keys.
pub fn label_selector(errs: &mut Vec<FieldError>, path: &str, sel: &Value) {
    if sel.is_null() {
        return;
    }
    for (i, e) in arr(&sel["matchExpressions"]).iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let op = s(&e["operator"]);
        let nvals = arr(&e["values"]).len();
        match op {
            "In" | "NotIn" => {
                if nvals == 0 {
                    errs.push(required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if nvals > 0 {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(invalid_raw(
                format!("{p}.operator"),
                &format!("{op:?}"),
                "not a valid selector operator",
            )),
        }
        let key = s(&e["key"]);
        for m in v::is_qualified_name(key) {
            errs.push(FieldError::invalid(format!("{p}.key"), &json!(key), m));
        }
    }
    label_map(errs, &format!("{path}.matchLabels"), &sel["matchLabels"]);
}

/// The selector `sel` (a `LabelSelector`); `nothing` when absent and `None` when malformed.
pub fn selector_of(sel: &Value) -> Option<Selector> {
    Selector::from_label_selector(sel).ok()
}

/// A selector made of a plain label map (RC, Service).
pub fn selector_of_map(map: &Value) -> Selector {
    match map.as_object() {
        Some(m) => Selector::from_set(m),
        None => Selector::everything(),
    }
}

/// Upstream's `Selector.String()`; `""` when it selects everything.
pub fn selector_string(sel: &Selector) -> String {
    sel.requirements()
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: `<none>` for empty, `<error>` when malformed.
pub fn format_label_selector(sel: &Value) -> String {
    match Selector::from_label_selector(sel) {
        Ok(s) => {
            let out = selector_string(&s);
            if out.is_empty() {
                "<none>".into()
            } else {
                out
            }
        }
        Err(_) => "<error>".into(),
    }
}

/// `labels.FormatLabels`: `k=v,...` sorted by key, `<none>` when empty.
pub fn format_labels(map: &Value) -> String {
    let Some(m) = map.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut kv: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
    kv.sort();
    kv.join(",")
}

/// Go's `%#v` of a `map[string]string`: sorted keys, `(nil)` when absent.
pub fn go_string_map(map: &Value) -> String {
    match map.as_object() {
        None => "map[string]string(nil)".into(),
        Some(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{:?}:{:?}", k, s(&m[*k])))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
    }
}

/// Go's `%#v` of a `[]string`.
pub fn go_string_slice(v: &Value) -> String {
    match v.as_array() {
        None => "[]string(nil)".into(),
        Some(a) => {
            let parts: Vec<String> = a.iter().map(|x| format!("{:?}", s(x))).collect();
            format!("[]string{{{}}}", parts.join(", "))
        }
    }
}

/// Go's `%#v` of a `*metav1.LabelSelector`, as upstream prints selectors in messages.
pub fn go_label_selector(sel: &Value) -> String {
    if sel.is_null() {
        return "(*v1.LabelSelector)(nil)".into();
    }
    let exprs = match sel["matchExpressions"].as_array() {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(a) => {
            let parts: Vec<String> = a
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{}}}",
                        s(&e["key"]),
                        s(&e["operator"]),
                        go_string_slice(&e["values"])
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", parts.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}",
        go_string_map(&sel["matchLabels"]),
        exprs
    )
}

/// `field is immutable` when `new` differs from `old` (both taken at the same path).
pub fn immutable(errs: &mut Vec<FieldError>, path: &str, new: &Value, old: &Value) {
    if !same(new, old) {
        errs.push(FieldError::invalid(path, new, "field is immutable"));
    }
}

/// Semantic equality: null and absent are the same; empty maps/arrays equal null, as Go's
/// `apiequality.Semantic.DeepEqual` treats nil and empty slices in the typed round trip.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().all(|k| {
                same(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                )
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Null, other) | (other, Value::Null) => is_empty(other),
        _ => a == b,
    }
}

/// The paths (dotted, with `[i]`) at which `a` and `b` differ, for upstream-like diff hints.
pub fn diff_paths(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if same(a, b) {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_paths(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_paths(p, q, &format!("{path}[{i}]"), out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

/// A quantity's canonical string, or `None` when absent or malformed.
pub fn quantity(v: &Value) -> Option<Quantity> {
    if v.is_null() {
        return None;
    }
    Quantity::from_json(v).ok()
}

/// `Quantity.String()` of `v`, `"0"` when absent (Go's zero quantity).
pub fn quantity_string(v: &Value) -> String {
    quantity(v).map_or_else(|| "0".into(), |q| q.canonical())
}

/// Checks every quantity of a resource list is well-formed and not negative.
pub fn resource_list(errs: &mut Vec<FieldError>, path: &str, list: &Value) {
    let Some(m) = list.as_object() else { return };
    for (k, q) in m {
        let p = format!("{path}[{k}]");
        match Quantity::from_json(q) {
            Ok(q) if q.nanos() < 0 => errs.push(invalid_raw(
                &p,
                &format!("{:?}", q.canonical()),
                "must be greater than or equal to 0",
            )),
            Ok(_) => {}
            Err(e) => errs.push(invalid_raw(&p, &format!("{q}"), &e.to_string())),
        }
    }
}

/// Names of a pod template's containers and their images, joined by `,` (`layoutContainerCells`).
pub fn containers_and_images(pod_spec: &Value) -> (String, String) {
    let cs = arr(&pod_spec["containers"]);
    let names: Vec<&str> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

/// An integer cell (0 when absent).
pub fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

/// An int-or-string value as Go's `IntOrString.String()`.
pub fn int_or_string(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// The object's labels as a map (empty when absent).
pub fn labels_of(obj: &Value) -> Map<String, Value> {
    obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// An optional string field for field selectors: always `Some`, `""` when absent.
pub fn field_str(v: &Value) -> Option<String> {
    Some(s(v).to_string())
}

/// The timestamp at `v` as kubectl's age, `<unknown>` when absent.
pub fn since_opt(v: &Value) -> String {
    crate::table::since(v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_renderings_match_upstream() {
        assert_eq!(
            go_string_map(&json!({"b": "2", "a": "1"})),
            r#"map[string]string{"a":"1", "b":"2"}"#
        );
        assert_eq!(go_string_map(&Value::Null), "map[string]string(nil)");
        assert_eq!(
            go_label_selector(&json!({"matchLabels": {"app": "x"}})),
            r#"v1.LabelSelector{MatchLabels:map[string]string{"app":"x"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"#
        );
    }

    #[test]
    fn selectors_format_as_kubectl() {
        assert_eq!(
            format_label_selector(&json!({"matchLabels": {"b": "2", "a": "1"}})),
            "a=1,b=2"
        );
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(
            format_label_selector(
                &json!({"matchExpressions": [{"key": "k", "operator": "In", "values": ["y", "x"]}]})
            ),
            "k in (x,y)"
        );
        assert_eq!(format_labels(&json!({"z": "1", "a": "2"})), "a=2,z=1");
        assert_eq!(format_labels(&json!({})), "<none>");
    }

    #[test]
    fn semantic_equality_ignores_empty() {
        assert!(same(&json!({"a": null, "b": []}), &json!({})));
        assert!(!same(&json!({"a": 1}), &json!({})));
        let mut d = Vec::new();
        diff_paths(
            &json!({"a": {"b": 1}, "c": [1]}),
            &json!({"a": {"b": 2}, "c": [1]}),
            "spec",
            &mut d,
        );
        assert_eq!(d, vec!["spec.a.b".to_string()]);
    }

    #[test]
    fn port_names() {
        assert!(port_name_errors("http").is_empty());
        assert_eq!(
            port_name_errors("8080"),
            vec!["must contain at least one letter (a-z)".to_string()]
        );
        assert!(!port_name_errors("Http").is_empty());
    }
}
