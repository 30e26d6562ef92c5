//! Path elements and paths of field sets, with upstream's total order, wire format
//! (`f:`, `k:`, `v:`, `i:`) and display form (`.spec.containers[name="web"].image`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;

/// One step from a value to a child.
#[derive(Clone, Debug)]
pub enum PathElement {
    /// A struct field or map key (`f:name`).
    Field(String),
    /// An associative-list item, by its key fields sorted by name (`k:{"name":"web"}`).
    Key(Vec<(String, Value)>),
    /// A set-list item, by value (`v:"a"`).
    Value(Value),
    /// A list item by position (`i:0`); never produced here, kept when read.
    Index(usize),
}

/// A path from the root of an object.
pub type Path = Vec<PathElement>;

fn rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// Upstream's total order on values: numbers < strings < bools < lists < maps < null.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let (f, g) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                f.partial_cmp(&g).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|a, b| a.0.cmp(b.0));
            ys.sort_by(|a, b| a.0.cmp(b.0));
            for ((ka, va), (kb, vb)) in xs.iter().zip(ys.iter()) {
                let c = ka.cmp(kb).then_with(|| compare_values(va, vb));
                if c != Ordering::Equal {
                    return c;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

fn compare_keys(a: &[(String, Value)], b: &[(String, Value)]) -> Ordering {
    for ((na, va), (nb, vb)) in a.iter().zip(b.iter()) {
        let c = na.cmp(nb).then_with(|| compare_values(va, vb));
        if c != Ordering::Equal {
            return c;
        }
    }
    a.len().cmp(&b.len())
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        use PathElement::*;
        match (self, other) {
            (Field(a), Field(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Key(a), Key(b)) => compare_keys(a, b),
            (Value(a), Value(b)) => compare_values(a, b),
            (Index(a), Index(b)) => a.cmp(b),
            _ => self.kind_rank().cmp(&other.kind_rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

/// Compact JSON with map keys sorted, as Go's encoders write values.
pub(crate) fn go_json(v: &Value) -> String {
    serde_json::to_string(&sorted(v)).unwrap_or_default()
}

/// A copy of `v` whose maps are in sorted key order.
pub(crate) fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

impl PathElement {
    fn kind_rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The FieldsV1 key of this element.
    pub fn serialize(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(fields) => {
                let mut m = serde_json::Map::new();
                for (k, v) in fields {
                    m.insert(k.clone(), sorted(v));
                }
                format!("k:{}", serde_json::to_string(&m).unwrap_or_default())
            }
            PathElement::Value(v) => format!("v:{}", go_json(v)),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a FieldsV1 key. `Ok(None)` for an unknown element type, which upstream skips so
    /// that newer writers' entries survive older readers.
    ///
    /// # Errors
    /// A key shorter than two characters, without the `:` separator, or with a bad JSON body.
    pub fn deserialize(s: &str) -> Result<Option<PathElement>, String> {
        let b = s.as_bytes();
        if b.len() < 2 {
            return Err(format!("key must be 2 characters long: {s:?}"));
        }
        if b[1] != b':' {
            return Err(format!("missing colon: {s}"));
        }
        let rest = &s[2..];
        Ok(Some(match b[0] {
            b'f' => PathElement::Field(rest.to_string()),
            b'v' => PathElement::Value(
                serde_json::from_str(rest).map_err(|e| format!("parsing {s:?}: {e}"))?,
            ),
            b'k' => {
                let m: serde_json::Map<String, Value> =
                    serde_json::from_str(rest).map_err(|e| format!("parsing {s:?}: {e}"))?;
                let mut fields: Vec<(String, Value)> = m.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PathElement::Key(fields)
            }
            b'i' => PathElement::Index(rest.parse().map_err(|e| format!("parsing {s:?}: {e}"))?),
            _ => return Ok(None),
        }))
    }
}

/// A value as upstream's `value.ToString` prints it inside paths.
fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Null => "null".into(),
        other => go_json(other),
    }
}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", value_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path as upstream prints it: `.spec.containers[name="web"].image`.
pub fn path_string(p: &[PathElement]) -> String {
    p.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_is_field_key_value_index() {
        let f = PathElement::Field("z".into());
        let k = PathElement::Key(vec![("name".into(), json!("a"))]);
        let v = PathElement::Value(json!(1));
        let i = PathElement::Index(0);
        assert!(f < k && k < v && v < i);
        // Numbers sort numerically, before strings.
        let k9 = PathElement::Key(vec![("port".into(), json!(9))]);
        let k10 = PathElement::Key(vec![("port".into(), json!(10))]);
        assert!(k9 < k10);
        assert!(PathElement::Value(json!(2)) < PathElement::Value(json!("1")));
    }

    #[test]
    fn wire_format_round_trips() {
        for s in [
            "f:spec",
            r#"k:{"containerPort":80,"protocol":"TCP"}"#,
            r#"v:"a""#,
            "i:3",
        ] {
            let pe = PathElement::deserialize(s).unwrap().unwrap();
            assert_eq!(pe.serialize(), s);
        }
        assert_eq!(PathElement::deserialize("x:1").unwrap(), None);
        assert!(PathElement::deserialize("f").is_err());
        assert!(PathElement::deserialize("fx").is_err());
        // Key fields are sorted on read.
        let pe = PathElement::deserialize(r#"k:{"protocol":"TCP","containerPort":80}"#)
            .unwrap()
            .unwrap();
        assert_eq!(pe.serialize(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
    }

    #[test]
    fn display_matches_upstream() {
        let p = vec![
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("web"))]),
            PathElement::Field("image".into()),
        ];
        assert_eq!(path_string(&p), ".spec.containers[name=\"web\"].image");
        assert_eq!(
            path_string(&[
                PathElement::Field("finalizers".into()),
                PathElement::Value(json!("a"))
            ]),
            ".finalizers[=\"a\"]"
        );
    }
}
