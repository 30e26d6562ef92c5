//! The strategy of one served version of a custom resource: the CRD's structural schema
//! prunes, defaults and validates; printer columns make the Table; selectable fields serve
//! field selectors; reads and writes convert between the served and the storage version.

use serde_json::{json, Value};

use distro_apimachinery::structural;

use super::jsonpath::JsonPath;
use crate::error::{FieldError, FieldReason};
use crate::resources::Strategy;
use crate::table::{self, Column};

/// One `additionalPrinterColumns` entry.
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    path: Option<JsonPath>,
}

impl PrinterColumn {
    /// Reads a column from the CRD; `None` if it has no name.
    pub fn from_crd(c: &Value) -> Option<PrinterColumn> {
        let name = c["name"].as_str().filter(|n| !n.is_empty())?;
        Some(PrinterColumn {
            name: name.to_string(),
            ty: c["type"].as_str().unwrap_or("string").to_string(),
            format: c["format"].as_str().unwrap_or("").to_string(),
            description: c["description"].as_str().unwrap_or("").to_string(),
            priority: c["priority"].as_i64().unwrap_or(0),
            path: JsonPath::parse(c["jsonPath"].as_str().unwrap_or("")),
        })
    }

    /// Upstream's column when a CRD names none: AGE from the creation timestamp.
    pub fn age() -> PrinterColumn {
        PrinterColumn {
            name: "Age".into(),
            ty: "date".into(),
            format: String::new(),
            description: Column::age().description.to_string(),
            priority: 0,
            path: JsonPath::parse(".metadata.creationTimestamp"),
        }
    }

    fn definition(&self) -> Value {
        json!({"name": self.name, "type": self.ty, "format": self.format,
            "description": self.description, "priority": self.priority})
    }

    fn cell(&self, obj: &Value) -> Value {
        let Some(v) = self.path.as_ref().and_then(|p| p.get(obj)) else {
            return Value::Null;
        };
        match (self.ty.as_str(), v) {
            // Upstream shows dates as ages, as kubectl does for AGE.
            ("date", Value::String(s)) => json!(table::since(Some(s))),
            ("integer", Value::Number(_)) | ("number", Value::Number(_)) => v.clone(),
            ("boolean", Value::Bool(_)) => v.clone(),
            (_, Value::String(_)) => v.clone(),
            (_, Value::Null) => Value::Null,
            (_, other) => json!(other.to_string()),
        }
    }
}

/// Where the scale subresource reads and writes replicas (`subresources.scale`).
#[derive(Clone, Debug)]
pub struct ScaleSpec {
    /// `specReplicasPath`.
    pub spec_replicas: JsonPath,
    /// `statusReplicasPath`.
    pub status_replicas: JsonPath,
    /// `labelSelectorPath`.
    pub label_selector: Option<JsonPath>,
}

impl ScaleSpec {
    /// Reads `subresources.scale`; `None` if absent or its paths are not simple paths.
    pub fn from_crd(s: &Value) -> Option<ScaleSpec> {
        if !s.is_object() {
            return None;
        }
        Some(ScaleSpec {
            spec_replicas: JsonPath::parse(s["specReplicasPath"].as_str()?)?,
            status_replicas: JsonPath::parse(s["statusReplicasPath"].as_str()?)?,
            label_selector: s["labelSelectorPath"].as_str().and_then(JsonPath::parse),
        })
    }
}

/// The strategy of one custom resource version.
pub struct CustomStrategy {
    /// `openAPIV3Schema` (absent only for CRDs that predate required schemas).
    pub schema: Option<Value>,
    /// `subresources.status` is set.
    pub status: bool,
    /// `subresources.scale`.
    pub scale: Option<ScaleSpec>,
    /// Printer columns after NAME.
    pub columns: Vec<PrinterColumn>,
    /// `selectableFields`.
    pub selectable: Vec<JsonPath>,
    /// `group/version` served.
    pub api_version: String,
    /// `group/version` stored.
    pub storage_api_version: String,
}

/// Converts schema errors into the apiserver's field errors.
pub fn field_errors(errs: Vec<structural::FieldError>) -> Vec<FieldError> {
    errs.into_iter()
        .map(|e| FieldError {
            field: e.field,
            reason: match e.kind {
                structural::ErrorKind::Required => FieldReason::Required,
                structural::ErrorKind::Invalid => FieldReason::Invalid,
                structural::ErrorKind::NotSupported => FieldReason::NotSupported,
                structural::ErrorKind::Duplicate => FieldReason::Duplicate,
                structural::ErrorKind::Forbidden => FieldReason::Forbidden,
                structural::ErrorKind::TooLong => FieldReason::TooLong,
                structural::ErrorKind::TooMany => FieldReason::TooMany,
            },
            detail: e.detail,
        })
        .collect()
}

impl Strategy for CustomStrategy {
    fn decode(&self, mut obj: Value) -> Result<(Value, Vec<String>), String> {
        let unknown = match &self.schema {
            Some(s) => structural::prune(s, &mut obj),
            None => Vec::new(),
        };
        Ok((obj, unknown))
    }

    fn default(&self, obj: &mut Value) {
        if let Some(s) = &self.schema {
            structural::default(s, obj);
        }
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = match &self.schema {
            Some(s) => field_errors(structural::validate(s, obj)),
            None => Vec::new(),
        };
        if let Some(scale) = &self.scale {
            // Upstream insists the replicas the scale subresource reads are integers.
            if let Some(v) = scale.spec_replicas.get(obj) {
                if !v.is_i64() && !v.is_null() {
                    let path = scale.spec_replicas.field_name().unwrap_or_default();
                    errs.push(FieldError::invalid(path, v, "should be an integer"));
                }
            }
        }
        errs
    }

    fn has_status(&self) -> bool {
        self.status
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn column_definitions(&self) -> Vec<Value> {
        let mut defs = vec![Column::name().definition()];
        defs.extend(self.columns.iter().map(PrinterColumn::definition));
        defs
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut cells = vec![json!(table::name(obj))];
        cells.extend(self.columns.iter().map(|c| c.cell(obj)));
        cells
    }

    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        let path = self
            .selectable
            .iter()
            .find(|p| p.field_name().as_deref() == Some(field))?;
        Some(match path.get(obj) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        })
    }

    fn on_read(&self, obj: &mut Value) {
        obj["apiVersion"] = json!(self.api_version);
        self.default(obj);
    }

    fn to_storage(&self, obj: &mut Value) {
        obj["apiVersion"] = json!(self.storage_api_version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy() -> CustomStrategy {
        CustomStrategy {
            schema: Some(
                json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                "replicas": {"type": "integer", "default": 1}, "color": {"type": "string"}}}}}),
            ),
            status: true,
            scale: None,
            columns: vec![
                PrinterColumn::from_crd(
                    &json!({"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}),
                )
                .unwrap(),
                PrinterColumn::age(),
            ],
            selectable: vec![JsonPath::parse(".spec.color").unwrap()],
            api_version: "example.com/v2".into(),
            storage_api_version: "example.com/v1".into(),
        }
    }

    #[test]
    fn converts_defaults_and_prints() {
        let s = strategy();
        let mut o = json!({"apiVersion": "example.com/v1", "kind": "W", "metadata": {"name": "w", "creationTimestamp": "2020-01-01T00:00:00Z"}, "spec": {"color": "red", "junk": 1}});
        let (mut o2, unknown) = s.decode(o.clone()).unwrap();
        assert_eq!(unknown, vec!["spec.junk"]);
        s.on_read(&mut o);
        assert_eq!(o["apiVersion"], "example.com/v2");
        assert_eq!(o["spec"]["replicas"], 1);
        s.to_storage(&mut o2);
        assert_eq!(o2["apiVersion"], "example.com/v1");
        let cells = s.cells(&o);
        assert_eq!(cells[0], "w");
        assert_eq!(cells[1], 1);
        assert!(cells[2].as_str().unwrap().contains('y'), "{cells:?}");
        assert_eq!(s.column_definitions()[1]["name"], "Replicas");
        assert_eq!(s.field(&o, "spec.color").as_deref(), Some("red"));
        assert_eq!(s.field(&o, "spec.other"), None);
        let bad = json!({"spec": {"replicas": "x"}});
        assert_eq!(s.validate(&bad)[0].message(), "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"");
    }
}
