//! The JSONPath subset CRDs use in `additionalPrinterColumns`, `selectableFields` and the scale
//! subresource: `.a.b`, `.a[0]`, `.a[?(@.type=="Ready")].status`, optionally in `{...}`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[?(@.key=="value")]`: the first element whose `key` equals `value`.
    Filter(String, Value),
}

/// A parsed path.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    /// Parses `path`; `None` if it uses more than the subset above.
    pub fn parse(path: &str) -> Option<JsonPath> {
        let p = path.trim();
        let p = p
            .strip_prefix('{')
            .and_then(|p| p.strip_suffix('}'))
            .unwrap_or(p);
        let mut rest = p.strip_prefix('$').unwrap_or(p);
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                steps.push(Step::Field(r[..end].to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']')?;
                let inner = &r[..end];
                if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                    let (key, value) = f.split_once("==")?;
                    let value = value.trim();
                    let value = match value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                    {
                        Some(s) => Value::String(s.to_string()),
                        None => serde_json::from_str(value).ok()?,
                    };
                    steps.push(Step::Filter(key.trim().to_string(), value));
                } else if let Some(q) = inner.strip_prefix('\'').and_then(|q| q.strip_suffix('\''))
                {
                    steps.push(Step::Field(q.to_string()));
                } else {
                    steps.push(Step::Index(inner.parse().ok()?));
                }
                rest = &r[end + 1..];
            } else {
                return None;
            }
        }
        Some(JsonPath(steps))
    }

    /// The value at this path in `obj`, if there is one.
    pub fn get<'a>(&self, obj: &'a Value) -> Option<&'a Value> {
        let mut v = obj;
        for s in &self.0 {
            v = match s {
                Step::Field(f) => v.get(f)?,
                Step::Index(i) => v.get(*i)?,
                Step::Filter(k, want) => v.as_array()?.iter().find(|e| e.get(k) == Some(want))?,
            };
        }
        Some(v)
    }

    /// Sets the value at this path (fields only), creating objects on the way.
    ///
    /// # Errors
    /// The path has index or filter steps, or crosses a non-object.
    pub fn set(&self, obj: &mut Value, value: Value) -> Result<(), String> {
        let mut v = obj;
        for (i, s) in self.0.iter().enumerate() {
            let Step::Field(f) = s else {
                return Err("only field paths can be set".into());
            };
            if v.is_null() {
                *v = Value::Object(Default::default());
            }
            let m = v
                .as_object_mut()
                .ok_or_else(|| format!("{f}: not an object"))?;
            if i == self.0.len() - 1 {
                m.insert(f.clone(), value);
                return Ok(());
            }
            v = m.entry(f.clone()).or_insert(Value::Null);
        }
        Err("empty path".into())
    }

    /// The path as a field-selector name: `.spec.color` → `spec.color`.
    pub fn field_name(&self) -> Option<String> {
        let parts: Option<Vec<&str>> = self
            .0
            .iter()
            .map(|s| match s {
                Step::Field(f) => Some(f.as_str()),
                Step::Index(_) | Step::Filter(..) => None,
            })
            .collect();
        parts.map(|p| p.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset() {
        let obj = json!({"spec": {"a": [1, 2]}, "status": {"conditions": [{"type": "X", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let p = |s| JsonPath::parse(s).unwrap();
        assert_eq!(p(".spec.a[1]").get(&obj), Some(&json!(2)));
        assert_eq!(
            p(r#".status.conditions[?(@.type=="Ready")].status"#).get(&obj),
            Some(&json!("True"))
        );
        assert_eq!(p("{.spec.a}").get(&obj), Some(&json!([1, 2])));
        assert_eq!(p(".spec.missing").get(&obj), None);
        let mut o = json!({});
        p(".spec.replicas").set(&mut o, json!(3)).unwrap();
        assert_eq!(o, json!({"spec": {"replicas": 3}}));
        assert_eq!(p(".spec.color").field_name().as_deref(), Some("spec.color"));
        assert!(JsonPath::parse("spec..x").is_none());
    }
}
