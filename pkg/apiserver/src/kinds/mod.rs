//! Built-in kinds: one module per API group holds their defaults, validation and table
//! columns; this module holds the catalogue (names, scope, short names, verbs, subresources)
//! and the [`Builtin`] strategy those modules fill in.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::FieldError;
use crate::resources::{NameRule, ResourceDef, Strategy};
use crate::table::Column;

pub mod decode;

type DecodeFn = fn(Value) -> Result<(Value, Vec<String>), String>;

/// A built-in kind's strategy: function pointers so group modules state only what differs.
#[derive(Clone)]
pub struct Builtin {
    decode: DecodeFn,
    default: fn(&mut Value),
    validate: fn(&Value) -> Vec<FieldError>,
    validate_update: Option<fn(&Value, &Value) -> Vec<FieldError>>,
    prepare_for_create: Option<fn(&mut Value)>,
    prepare_for_update: Option<fn(&mut Value, &Value)>,
    status: bool,
    generation: bool,
    create_on_update: bool,
    name_rule: NameRule,
    columns: fn() -> Vec<Column>,
    cells: fn(&Value) -> Vec<Value>,
    field: fn(&Value, &str) -> Option<String>,
    convert: Option<fn(Value) -> Value>,
}

impl Builtin {
    /// A plain kind decoded through `T`, with no defaults, checks or columns of its own.
    pub fn of<T: DeserializeOwned + Serialize>() -> Self {
        Builtin {
            decode: decode::typed::<T>,
            default: |_| {},
            validate: |_| Vec::new(),
            validate_update: None,
            prepare_for_create: None,
            prepare_for_update: None,
            convert: None,
            status: false,
            generation: false,
            create_on_update: false,
            name_rule: NameRule::Subdomain,
            columns: crate::table::default_columns,
            cells: crate::table::default_cells,
            field: |_, _| None,
        }
    }
    /// Sets the defaulting function.
    pub fn defaults(mut self, f: fn(&mut Value)) -> Self {
        self.default = f;
        self
    }
    /// Sets the validation of new objects (also used on update unless [`Builtin::validate_update`]).
    pub fn validate(mut self, f: fn(&Value) -> Vec<FieldError>) -> Self {
        self.validate = f;
        self
    }
    /// Sets the validation of updates (immutable fields).
    pub fn validate_update(mut self, f: fn(&Value, &Value) -> Vec<FieldError>) -> Self {
        self.validate_update = Some(f);
        self
    }
    /// Replaces the create-time reset (default: drop status if there is a status subresource).
    pub fn prepare_for_create(mut self, f: fn(&mut Value)) -> Self {
        self.prepare_for_create = Some(f);
        self
    }
    /// Sets the update-time fix-up of the new object from the old one, before defaults (upstream's
    /// `PrepareForUpdate`, e.g. Services keeping their allocated clusterIP and nodePorts).
    pub fn prepare_for_update(mut self, f: fn(&mut Value, &Value)) -> Self {
        self.prepare_for_update = Some(f);
        self
    }
    /// The kind has a status subresource.
    pub fn status(mut self) -> Self {
        self.status = true;
        self
    }
    /// The kind sets `metadata.generation` and bumps it on spec changes (workloads, CRDs);
    /// kinds without it (ConfigMap, Pod, Service, …) have no generation, as upstream.
    pub fn generation(mut self) -> Self {
        self.generation = true;
        self
    }
    /// PUT of a missing object creates it.
    pub fn create_on_update(mut self) -> Self {
        self.create_on_update = true;
        self
    }
    /// Sets the name rule.
    pub fn names(mut self, rule: NameRule) -> Self {
        self.name_rule = rule;
        self
    }
    /// Sets the table columns and row function.
    pub fn table(mut self, columns: fn() -> Vec<Column>, cells: fn(&Value) -> Vec<Value>) -> Self {
        self.columns = columns;
        self.cells = cells;
        self
    }
    /// Sets the conversion from objects another version of the resource stored (run on every
    /// read; it returns objects already in this version unchanged).
    pub fn convert(mut self, f: fn(Value) -> Value) -> Self {
        self.convert = Some(f);
        self
    }
    /// Field selector values beyond name and namespace.
    pub fn fields(mut self, f: fn(&Value, &str) -> Option<String>) -> Self {
        self.field = f;
        self
    }
}

impl Strategy for Builtin {
    fn decode(&self, obj: Value) -> Result<(Value, Vec<String>), String> {
        (self.decode)(obj)
    }
    fn default(&self, obj: &mut Value) {
        (self.default)(obj)
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        (self.validate)(obj)
    }
    fn validate_update(&self, obj: &Value, old: &Value) -> Vec<FieldError> {
        match self.validate_update {
            Some(f) => {
                let mut errs = (self.validate)(obj);
                errs.extend(f(obj, old));
                errs
            }
            None => (self.validate)(obj),
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        match self.prepare_for_create {
            Some(f) => f(obj),
            None if self.status => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
            None => {}
        }
    }
    fn served_as_stored(&self) -> bool {
        self.convert.is_none()
    }
    fn on_read(&self, obj: &mut Value) {
        if let Some(f) = self.convert {
            *obj = f(obj.take());
        }
    }
    fn prepare_for_update(&self, obj: &mut Value, old: &Value) {
        if let Some(f) = self.prepare_for_update {
            f(obj, old);
        }
    }
    fn has_status(&self) -> bool {
        self.status
    }
    fn tracks_generation(&self) -> bool {
        self.generation
    }
    fn allow_create_on_update(&self) -> bool {
        self.create_on_update
    }
    fn name_rule(&self) -> NameRule {
        self.name_rule
    }
    fn columns(&self) -> Vec<Column> {
        (self.columns)()
    }
    fn cells(&self, obj: &Value) -> Vec<Value> {
        (self.cells)(obj)
    }
    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        (self.field)(obj, field)
    }
}

/// The verbs of an ordinary stored resource.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deleted as a collection.
pub const NO_COLLECTION_DELETE: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// Review kinds: only create, nothing stored.
pub const CREATE_ONLY: &[&str] = &["create"];

/// One entry of the catalogue.
pub struct Entry {
    /// API group.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Plural.
    pub plural: &'static str,
    /// Namespaced?
    pub namespaced: bool,
    /// Short names.
    pub short_names: &'static [&'static str],
    /// Categories.
    pub categories: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [&'static str],
    /// OpenAPI definition name.
    pub definition: &'static str,
    /// Not stored (reviews, bindings).
    pub virtual_only: bool,
    /// Storage name override (defaults to plural).
    pub storage: Option<&'static str>,
    /// The strategy.
    pub strategy: Builtin,
}

impl Entry {
    fn into_def(self) -> ResourceDef {
        ResourceDef {
            group: self.group.into(),
            version: self.version.into(),
            kind: self.kind.into(),
            plural: self.plural.into(),
            singular: self.kind.to_lowercase(),
            namespaced: self.namespaced,
            short_names: self.short_names.iter().map(|s| s.to_string()).collect(),
            categories: self.categories.iter().map(|s| s.to_string()).collect(),
            verbs: self.verbs.to_vec(),
            subresources: self.subresources.to_vec(),
            definition: self.definition.into(),
            storage: self.storage.unwrap_or(self.plural).into(),
            virtual_only: self.virtual_only || self.verbs == CREATE_ONLY,
            strategy: Arc::new(self.strategy),
        }
    }
}

/// Declares a catalogue entry; see [`Entry`] for the fields.
macro_rules! entry {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, ns = $ns:expr, short = [$($s:expr),*],
     cat = [$($c:expr),*], verbs = $verbs:expr, sub = [$($sub:expr),*], def = $def:expr, $strategy:expr) => {
        $crate::kinds::Entry {
            group: $group, version: $version, kind: $kind, plural: $plural, namespaced: $ns,
            short_names: &[$($s),*], categories: &[$($c),*], verbs: $verbs, subresources: &[$($sub),*],
            definition: $def, virtual_only: false, storage: None, strategy: $strategy,
        }
    };
}

pub mod apiregistration;
pub mod apps;
pub mod batch;
pub mod core;
pub mod networking;
pub mod other;
pub mod pod;
pub mod rbac;
pub mod storage;
pub mod util;

/// Every built-in resource we serve.
pub fn builtin() -> Vec<ResourceDef> {
    let mut entries = Vec::new();
    entries.extend(core::entries());
    entries.extend(apps::entries());
    entries.extend(batch::entries());
    entries.extend(networking::entries());
    entries.extend(rbac::entries());
    entries.extend(storage::entries());
    entries.extend(other::entries());
    entries.extend(apiregistration::entries());
    entries.into_iter().map(Entry::into_def).collect()
}
