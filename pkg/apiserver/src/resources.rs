//! The table of served resources: what each kind is called, where it lives, what it supports,
//! and its strategy (decode, defaults, validation, table columns, field selectors).
//!
//! Everything per-kind is data here, so the generic registry gets discovery, short names,
//! table output and selectors right once for every kind, built-in or custom.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::error::FieldError;
use crate::table::Column;

/// How a name must look, as upstream's per-kind `ValidateName` functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// DNS-1035 label (services).
    Dns1035,
    /// Any path segment: no `/`, `%`, and not `.`/`..` (RBAC, CRs without rules).
    PathSegment,
}

/// Per-kind behaviour. Default methods give the behaviour of a plain kind with no spec/status
/// split and no special rules, so a strategy only says what differs.
pub trait Strategy: Send + Sync {
    /// Type-checks `obj` and drops fields the kind doesn't have. Returns the pruned object and the
    /// paths of unknown fields (for `fieldValidation`).
    ///
    /// # Errors
    /// A message naming the field whose value has the wrong type (400 upstream).
    fn decode(&self, obj: Value) -> Result<(Value, Vec<String>), String>;

    /// Fills in defaults, as upstream's defaulting functions.
    fn default(&self, _obj: &mut Value) {}

    /// Checks a new object (metadata is checked by the registry).
    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Checks an update against the old object (immutable fields).
    fn validate_update(&self, obj: &Value, _old: &Value) -> Vec<FieldError> {
        self.validate(obj)
    }

    /// Resets what a create may not set (usually status).
    fn prepare_for_create(&self, obj: &mut Value) {
        if self.has_status() {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
    }

    /// True if stored objects are served exactly as stored (no conversion, no read-time
    /// defaults), so unfiltered lists can send the stored bytes without parsing them.
    fn served_as_stored(&self) -> bool {
        false
    }

    /// Carries over what an update may leave out (allocated values), before defaults run, as
    /// upstream's `PrepareForUpdate`. Not called for status writes.
    fn prepare_for_update(&self, _obj: &mut Value, _old: &Value) {}

    /// True if the kind has a `status` subresource: the main resource ignores status changes and
    /// the status subresource ignores everything else.
    fn has_status(&self) -> bool {
        false
    }

    /// True if `generation` counts changes of everything but metadata and status.
    fn tracks_generation(&self) -> bool {
        true
    }

    /// Whether a PUT of a missing object creates it (upstream's `AllowCreateOnUpdate`).
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// The name rule.
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Table columns for `kubectl get` (priority 1 columns show with `-o wide`).
    fn columns(&self) -> Vec<Column> {
        crate::table::default_columns()
    }

    /// The Table `columnDefinitions`; kinds whose columns are only known at run time (custom
    /// resources' printer columns) override this instead of [`Strategy::columns`].
    fn column_definitions(&self) -> Vec<Value> {
        self.columns().iter().map(Column::definition).collect()
    }

    /// Turns an object as stored into the object this resource serves: one another version of
    /// the resource stored (same storage, other `apiVersion`) converted to this version's shape,
    /// read-time defaults of custom resources. Called on every read.
    fn on_read(&self, _obj: &mut Value) {}

    /// Turns an object this resource serves into the one to store (custom resources: the
    /// storage version's apiVersion). Called on every write.
    fn to_storage(&self, _obj: &mut Value) {}

    /// The cells of one row, in the order of [`Strategy::columns`].
    fn cells(&self, obj: &Value) -> Vec<Value> {
        crate::table::default_cells(obj)
    }

    /// The value of a field for field selectors, beyond `metadata.name`/`metadata.namespace`.
    /// `None` means the field is not supported for selection (400 upstream).
    fn field(&self, _obj: &Value, _field: &str) -> Option<String> {
        None
    }
}

/// One served resource, at one group/version.
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name used in URLs.
    pub plural: String,
    /// Singular name (`kubectl get deployment`).
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`deploy`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Verbs advertised in discovery.
    pub verbs: Vec<&'static str>,
    /// Subresources served, e.g. `status`, `scale`.
    pub subresources: Vec<&'static str>,
    /// The OpenAPI definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: String,
    /// Stored at `/registry/<storage>/...`; several versions of one resource share it.
    pub storage: String,
    /// True for kinds that are not stored (reviews): create answers and keeps nothing.
    pub virtual_only: bool,
    /// Per-kind behaviour.
    pub strategy: Arc<dyn Strategy>,
}

impl ResourceDef {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, or `pods` for the core group: how upstream names a resource in errors.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The `kind` of lists of this resource.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Datastore prefix for all objects of this resource (in all namespaces).
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage)
    }

    /// Datastore key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.storage, ns, name),
            _ => format!("/registry/{}/{}", self.storage, name),
        }
    }

    /// Datastore prefix of one namespace's objects (or all, for cluster-scoped or `None`).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.storage, ns),
            _ => self.key_prefix(),
        }
    }
}

/// The set of resources the server serves, shared by every request and updated when CRDs come
/// and go.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Index>,
}

#[derive(Default, Clone)]
struct Index {
    /// (group, version, plural) → def.
    by_path: HashMap<(String, String), HashMap<String, Arc<ResourceDef>>>,
    /// Groups in discovery order, each with its versions in preference order.
    groups: Vec<(String, Vec<String>)>,
}

impl Registry {
    /// A registry holding `defs`.
    pub fn new(defs: Vec<ResourceDef>) -> Self {
        let r = Registry::default();
        for d in defs {
            r.add(Arc::new(d));
        }
        r
    }

    /// Adds or replaces a resource (CRDs).
    pub fn add(&self, def: Arc<ResourceDef>) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let gv = (def.group.clone(), def.version.clone());
        match idx.groups.iter_mut().find(|(g, _)| *g == def.group) {
            Some((_, versions)) => {
                if !versions.contains(&def.version) {
                    versions.push(def.version.clone());
                }
            }
            None => idx
                .groups
                .push((def.group.clone(), vec![def.version.clone()])),
        }
        idx.by_path
            .entry(gv)
            .or_default()
            .insert(def.plural.clone(), def);
    }

    /// Removes every resource of `group` named `plural` (a CRD went away).
    pub fn remove(&self, group: &str, plural: &str) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        for ((g, _), m) in idx.by_path.iter_mut() {
            if g == group {
                m.remove(plural);
            }
        }
        idx.by_path.retain(|_, m| !m.is_empty());
        let live: Vec<(String, String)> = idx.by_path.keys().cloned().collect();
        for (g, versions) in idx.groups.iter_mut() {
            versions.retain(|v| live.contains(&(g.clone(), v.clone())));
        }
        idx.groups.retain(|(_, v)| !v.is_empty());
    }

    /// Sets the preference order of a group's versions (CRDs name their storage version).
    pub fn set_version_order(&self, group: &str, order: Vec<String>) {
        let mut idx = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, versions)) = idx.groups.iter_mut().find(|(g, _)| g == group) {
            let mut sorted: Vec<String> =
                order.into_iter().filter(|v| versions.contains(v)).collect();
            for v in versions.iter() {
                if !sorted.contains(v) {
                    sorted.push(v.clone());
                }
            }
            *versions = sorted;
        }
    }

    /// The resource at `group/version/plural`.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceDef>> {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        idx.by_path
            .get(&(group.to_string(), version.to_string()))?
            .get(plural)
            .cloned()
    }

    /// The preferred-version resource of `group` with this kind.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceDef>> {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let (_, versions) = idx.groups.iter().find(|(g, _)| g == group)?;
        versions.iter().find_map(|v| {
            idx.by_path
                .get(&(group.to_string(), v.clone()))?
                .values()
                .find(|d| d.kind == kind)
                .cloned()
        })
    }

    /// Every resource of one group/version, sorted by plural name.
    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<ResourceDef>> {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = idx
            .by_path
            .get(&(group.to_string(), version.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a: &Arc<ResourceDef>, b| a.plural.cmp(&b.plural));
        v
    }

    /// Groups with their versions, preferred version first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .groups
            .clone()
    }

    /// Every resource (all groups and versions).
    pub fn all(&self) -> Vec<Arc<ResourceDef>> {
        let idx = self.inner.read().unwrap_or_else(|e| e.into_inner());
        idx.by_path
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }
}
