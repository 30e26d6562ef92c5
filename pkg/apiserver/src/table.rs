//! Server-side table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which
//! is what `kubectl get` prints. Column sets per kind live with the kinds; this module holds the
//! shared pieces: column definitions, ages as kubectl prints them, and the Table envelope.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// One column definition.
#[derive(Clone, Debug)]
pub struct Column {
    /// Header (kubectl upper-cases it).
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub kind: &'static str,
    /// `name` for the name column, otherwise empty.
    pub format: &'static str,
    /// 0 shows always, 1 only with `-o wide`.
    pub priority: u8,
    /// Shown by `kubectl get --help`-like tooling.
    pub description: &'static str,
}

impl Column {
    /// A priority-0 string column.
    pub const fn new(name: &'static str, description: &'static str) -> Self {
        Column {
            name,
            kind: "string",
            format: "",
            priority: 0,
            description,
        }
    }
    /// A priority-0 integer column.
    pub const fn int(name: &'static str, description: &'static str) -> Self {
        Column {
            name,
            kind: "integer",
            format: "",
            priority: 0,
            description,
        }
    }
    /// This column only with `-o wide`.
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
    /// The NAME column every table starts with.
    pub const fn name() -> Self {
        Column {
            name: "Name",
            kind: "string",
            format: "name",
            priority: 0,
            description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        }
    }
    /// The AGE column.
    pub const fn age() -> Self {
        Column::new(
            "Age",
            "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        )
    }

    /// This column as a Table `columnDefinitions` entry.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// Upstream's default table (kinds without their own printer): NAME, CREATED AT.
pub fn default_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column {
            name: "Created At",
            kind: "date",
            format: "",
            priority: 0,
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
        },
    ]
}

/// Cells for [`default_columns`].
pub fn default_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(name(obj)),
        obj["metadata"]["creationTimestamp"].clone(),
    ]
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// Age of the object as kubectl prints it (`translateTimestampSince`).
pub fn age(obj: &Value) -> Value {
    json!(since(obj["metadata"]["creationTimestamp"].as_str()))
}

/// Time since an RFC 3339 timestamp, in kubectl's short form; `<unknown>` if absent.
pub fn since(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return "<unknown>".into();
    };
    human_duration(Utc::now().signed_duration_since(t.with_timezone(&Utc)))
}

/// Upstream's `duration.HumanDuration`: short, and coarser as it grows.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{}h", hours / 24, h)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{}d", hours / 24 / 365, dy)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// What a table row carries besides its cells (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// `PartialObjectMetadata` (kubectl's default: it reads namespace and labels from it).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// One row.
pub fn row(cells: Vec<Value>, obj: &Value, include: IncludeObject) -> Value {
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"].clone(),
        }),
    };
    let mut r = json!({"cells": cells});
    if !object.is_null() {
        r["object"] = object;
    }
    r
}

/// A Table with `rows`, under list metadata `meta`.
pub fn table(columns: &[Column], rows: Vec<Value>, meta: Value) -> Value {
    table_of(columns.iter().map(Column::definition).collect(), rows, meta)
}

/// A Table from ready-made column definitions (see `Strategy::column_definitions`).
pub fn table_of(definitions: Vec<Value>, rows: Vec<Value>, meta: Value) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// `<none>` for empty strings, as kubectl prints missing values.
pub fn or_none(s: impl Into<String>) -> Value {
    let s = s.into();
    if s.is_empty() {
        json!("<none>")
    } else {
        json!(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60 * 5, "3h5m"),
            (9 * 3600, "9h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                human_duration(chrono::Duration::seconds(secs)),
                want,
                "{secs}s"
            );
        }
    }
}
