//! [`TypeIndex`]: the published definitions seen as per-field patch metadata, for strategic
//! merge patch and server-side apply.
//!
//! Every struct definition is flattened once, at build time, into a table of
//! `field → FieldInfo`: `$ref`s resolved, arrays (`items`) and maps (`additionalProperties`)
//! classified, and the `x-kubernetes-*` patch extensions (stamped from
//! [`distro_apimachinery::schema::builtin_patch_metadata`] for built-in types, written by users
//! in CRD schemas) parsed. Inline object schemas (CRDs have nothing else) get synthetic type
//! names `<parent>:<field>`, `<parent>:<field>[]` (list items) and `<parent>:<field>{}` (map
//! values), so the patch code can walk into them like named types.

use std::collections::HashMap;
use std::sync::Arc;

use distro_apimachinery::schema::{FieldInfo, FieldKind, ListType, PatchStrategy, Schema};
use serde_json::{Map, Value};

/// Fields of one struct type.
#[derive(Debug, Default, Clone)]
struct TypeEntry {
    fields: HashMap<String, FieldInfo>,
    atomic: bool,
}

/// A flattened set of types.
#[derive(Debug, Default, Clone)]
pub(crate) struct Types {
    types: HashMap<String, TypeEntry>,
}

impl Types {
    /// Indexes every definition in `defs`. Refs are resolved against `defs` first, then `base`.
    pub(crate) fn build(defs: &Map<String, Value>, base: Option<&Map<String, Value>>) -> Types {
        let mut out = Types::default();
        let lookup = |name: &str| defs.get(name).or_else(|| base.and_then(|b| b.get(name)));
        for (name, schema) in defs {
            out.add_struct(name, schema, &lookup);
        }
        out
    }

    fn add_struct<'a>(
        &mut self,
        name: &str,
        schema: &'a Value,
        lookup: &dyn Fn(&str) -> Option<&'a Value>,
    ) {
        let mut entry = TypeEntry {
            atomic: is_atomic(schema),
            ..Default::default()
        };
        if let Some(Value::Object(props)) = schema.get("properties") {
            for (field, prop) in props {
                let info = self.field_info(name, field, prop, lookup);
                entry.fields.insert(field.clone(), info);
            }
        }
        self.types.insert(name.to_string(), entry);
    }

    /// Classifies one property and records its patch extensions.
    fn field_info<'a>(
        &mut self,
        parent: &str,
        field: &str,
        prop: &'a Value,
        lookup: &dyn Fn(&str) -> Option<&'a Value>,
    ) -> FieldInfo {
        let mut info = self.shape(&format!("{parent}:{field}"), prop, lookup);
        let ext = |k: &str| prop.get(k);
        if let Some(s) = ext("x-kubernetes-patch-strategy").and_then(Value::as_str) {
            info.patch_strategy = s
                .split(',')
                .filter_map(|p| match p.trim() {
                    "merge" => Some(PatchStrategy::Merge),
                    "replace" => Some(PatchStrategy::Replace),
                    "retainKeys" => Some(PatchStrategy::RetainKeys),
                    _ => None,
                })
                .collect();
        }
        info.patch_merge_key = ext("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
            .map(str::to_string);
        info.list_type = match ext("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("atomic") => Some(ListType::Atomic),
            Some("set") => Some(ListType::Set),
            Some("map") => Some(ListType::Map(
                ext("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            )),
            _ => None,
        };
        info.map_type_atomic =
            ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
        info
    }

    /// The kind and element type of a schema; inline structs are indexed under `synthetic`.
    fn shape<'a>(
        &mut self,
        synthetic: &str,
        s: &'a Value,
        lookup: &dyn Fn(&str) -> Option<&'a Value>,
    ) -> FieldInfo {
        if let Some(target) = ref_of(s) {
            return match lookup(target) {
                Some(t) if has_properties(t) => FieldInfo::object(target),
                Some(_) => FieldInfo::scalar(),
                None => FieldInfo::default(),
            };
        }
        let ty = s.get("type").and_then(Value::as_str);
        match ty {
            Some("array") => {
                let elem = s
                    .get("items")
                    .and_then(|items| self.element(&format!("{synthetic}[]"), items, lookup));
                FieldInfo {
                    kind: Some(FieldKind::List),
                    elem_type: elem,
                    ..Default::default()
                }
            }
            _ if has_properties(s) => {
                self.add_struct(synthetic, s, lookup);
                FieldInfo::object(synthetic)
            }
            Some("object") | None
                if s.get("additionalProperties").is_some_and(Value::is_object) =>
            {
                let elem = s
                    .get("additionalProperties")
                    .and_then(|v| self.element(&format!("{synthetic}{{}}"), v, lookup));
                FieldInfo {
                    kind: Some(FieldKind::Map),
                    elem_type: elem,
                    ..Default::default()
                }
            }
            // Schemaless values (`x-kubernetes-preserve-unknown-fields` without properties):
            // unknown, so patches merge them like JSON merge patch does.
            _ if s
                .get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true) =>
            {
                FieldInfo::default()
            }
            _ => FieldInfo::scalar(),
        }
    }

    /// The struct type name of a list item or map value, `None` for scalars.
    fn element<'a>(
        &mut self,
        synthetic: &str,
        s: &'a Value,
        lookup: &dyn Fn(&str) -> Option<&'a Value>,
    ) -> Option<String> {
        if let Some(target) = ref_of(s) {
            return lookup(target)
                .filter(|t| has_properties(t))
                .map(|_| target.to_string());
        }
        if has_properties(s) {
            self.add_struct(synthetic, s, lookup);
            return Some(synthetic.to_string());
        }
        None
    }

    fn get(&self, name: &str) -> Option<&TypeEntry> {
        self.types.get(name)
    }
}

/// `$ref` target of a schema (plain, or wrapped in a one-element `allOf`), without the prefix.
fn ref_of(s: &Value) -> Option<&str> {
    let r = s.get("$ref").and_then(Value::as_str).or_else(|| {
        s.get("allOf")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 1)
            .and_then(|a| a.first())
            .and_then(|x| x.get("$ref"))
            .and_then(Value::as_str)
    })?;
    Some(r.rsplit_once('/').map(|(_, name)| name).unwrap_or(r)).filter(|_| r.starts_with('#'))
}

fn has_properties(s: &Value) -> bool {
    s.get("properties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
}

fn is_atomic(s: &Value) -> bool {
    s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
}

/// The published types as patch metadata, built once per OpenAPI build and shared.
///
/// # Guarantees
/// Answers the same for a type as the published OpenAPI documents say about it: both are
/// built from the same definitions.
#[derive(Debug, Clone, Default)]
pub struct TypeIndex {
    base: Arc<Types>,
    custom: Types,
    base_defs: Arc<Map<String, Value>>,
    custom_defs: Arc<Map<String, Value>>,
}

impl TypeIndex {
    pub(crate) fn new(
        base: Arc<Types>,
        custom: Types,
        base_defs: Arc<Map<String, Value>>,
        custom_defs: Arc<Map<String, Value>>,
    ) -> TypeIndex {
        TypeIndex {
            base,
            custom,
            base_defs,
            custom_defs,
        }
    }

    /// The swagger 2.0 definition `name` (`io.k8s.api.apps.v1.Deployment`), as published.
    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.custom_defs
            .get(name)
            .or_else(|| self.base_defs.get(name))
    }

    /// True if `name` is a known struct type (a definition or a synthetic inline type).
    pub fn has_type(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    fn entry(&self, name: &str) -> Option<&TypeEntry> {
        self.custom.get(name).or_else(|| self.base.get(name))
    }
}

impl Schema for TypeIndex {
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        self.entry(type_name)?.fields.get(field).cloned()
    }

    fn is_atomic_type(&self, type_name: &str) -> bool {
        self.entry(type_name).is_some_and(|e| e.atomic)
    }
}
