//! managedFields: decoding and encoding the entries, and the two operations that change them
//! (an `Update` by any write, an `Apply` by server-side apply), with upstream's conflict rules.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::path::{path_string, Path};
use super::set::Set;
use super::typed::{strip_nulls, Comparison, Ty, Typer};
use super::{ApplyError, Conflict, Conflicts};
use crate::schema::Schema;

/// The annotation client-side `kubectl apply` keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager name `kubectl apply --server-side` uses; upstream keeps the last-applied
/// annotation in sync for it and lets it take over fields client-side apply set.
const KUBECTL: &str = "kubectl";

/// Update managers beyond this many are folded into `ancient-changes` (upstream's cap).
const MAX_UPDATE_MANAGERS: usize = 10;

/// Which operation an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One managedFields entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The manager's name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// The version the fields are expressed in.
    pub api_version: String,
    /// Empty for the main resource, `status` etc. otherwise.
    pub subresource: String,
    /// RFC 3339 time of the last change by this entry, when known.
    pub time: Option<String>,
    /// The owned fields.
    pub set: Set,
}

impl Entry {
    /// Upstream's manager identifier: the entry without fields and time (and without the
    /// version for appliers, so one applier is one entry whatever version it used).
    pub fn key(&self) -> String {
        key_of(
            &self.manager,
            self.operation,
            &self.api_version,
            &self.subresource,
        )
    }

    /// How conflicts name this manager: `"name"`, `with subresource "s"`, `using v` for
    /// updaters.
    pub fn describe(&self) -> String {
        let mut s = serde_json::to_string(&self.manager).unwrap_or_default();
        if !self.subresource.is_empty() {
            s.push_str(&format!(
                " with subresource {}",
                serde_json::to_string(&self.subresource).unwrap_or_default()
            ));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn key_of(manager: &str, op: Operation, api_version: &str, subresource: &str) -> String {
    // Field order as Go's json.Marshal of ManagedFieldsEntry, so keys sort as upstream's do.
    let mut m = Map::new();
    if !manager.is_empty() {
        m.insert("manager".into(), json!(manager));
    }
    m.insert("operation".into(), json!(op.as_str()));
    if op == Operation::Update && !api_version.is_empty() {
        m.insert("apiVersion".into(), json!(api_version));
    }
    if !subresource.is_empty() {
        m.insert("subresource".into(), json!(subresource));
    }
    serde_json::to_string(&m).unwrap_or_default()
}

/// The decoded managedFields of an object, by manager identifier.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManagedFields {
    entries: BTreeMap<String, Entry>,
}

impl ManagedFields {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries, by identifier.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True without entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Decodes `metadata.managedFields` (absent or null is empty).
    ///
    /// # Errors
    /// As upstream: an operation other than Apply/Update, an empty apiVersion, a fieldsType
    /// other than FieldsV1, or unreadable fieldsV1.
    pub fn decode(v: Option<&Value>) -> Result<Self, String> {
        let mut out = ManagedFields::default();
        let items = match v {
            None | Some(Value::Null) => return Ok(out),
            Some(Value::Array(a)) => a,
            Some(other) => return Err(format!("managedFields must be a list, got {other}")),
        };
        for (i, e) in items.iter().enumerate() {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let operation = match s("operation").as_str() {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err("operation must be `Apply` or `Update`".into()),
            };
            if s("apiVersion").is_empty() {
                return Err("apiVersion must not be empty".into());
            }
            match s("fieldsType").as_str() {
                "FieldsV1" => {}
                "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
                other => {
                    return Err(format!(
                        "invalid fieldsType {other:?} in managed fields entry {i}"
                    ))
                }
            }
            let set = match e.get("fieldsV1") {
                None | Some(Value::Null) => Set::new(),
                Some(f) => Set::from_fields_v1(f)
                    .map_err(|err| format!("error decoding versioned set from entry {i}: {err}"))?,
            };
            let entry = Entry {
                manager: s("manager"),
                operation,
                api_version: s("apiVersion"),
                subresource: s("subresource"),
                time: e.get("time").and_then(Value::as_str).map(str::to_string),
                set,
            };
            out.entries.insert(entry.key(), entry);
        }
        Ok(out)
    }

    /// The `metadata.managedFields` list, in upstream's order (Apply before Update, then by
    /// time, manager, apiVersion, subresource); entries with empty sets are left out.
    pub fn encode(&self) -> Value {
        let mut list: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| !e.set.is_empty())
            .collect();
        list.sort_by(|p, q| {
            p.operation
                .cmp(&q.operation)
                .then_with(|| {
                    p.time
                        .as_deref()
                        .unwrap_or("")
                        .cmp(q.time.as_deref().unwrap_or(""))
                })
                .then_with(|| p.manager.cmp(&q.manager))
                .then_with(|| p.api_version.cmp(&q.api_version))
                .then_with(|| p.subresource.cmp(&q.subresource))
        });
        Value::Array(
            list.into_iter()
                .map(|e| {
                    let mut m = Map::new();
                    m.insert("manager".into(), json!(e.manager));
                    m.insert("operation".into(), json!(e.operation.as_str()));
                    m.insert("apiVersion".into(), json!(e.api_version));
                    if let Some(t) = &e.time {
                        m.insert("time".into(), json!(t));
                    }
                    m.insert("fieldsType".into(), json!("FieldsV1"));
                    m.insert("fieldsV1".into(), e.set.to_fields_v1());
                    if !e.subresource.is_empty() {
                        m.insert("subresource".into(), json!(e.subresource));
                    }
                    Value::Object(m)
                })
                .collect(),
        )
    }

    fn drop_empty(&mut self) {
        self.entries.retain(|_, e| !e.set.is_empty());
    }

    /// Folds the oldest Update entries into `ancient-changes` until at most ten remain.
    fn cap_updaters(&mut self) {
        const BUCKET: &str = "ancient-changes";
        loop {
            let mut updaters: Vec<(&String, &Entry)> = self
                .entries
                .iter()
                .filter(|(_, e)| e.operation == Operation::Update && e.manager != BUCKET)
                .collect();
            let buckets = self
                .entries
                .values()
                .filter(|e| e.operation == Operation::Update && e.manager == BUCKET)
                .count();
            if updaters.len() + buckets <= MAX_UPDATE_MANAGERS || updaters.is_empty() {
                return;
            }
            updaters.sort_by(|a, b| a.1.time.cmp(&b.1.time));
            let key = updaters[0].0.clone();
            let Some(old) = self.entries.remove(&key) else {
                return;
            };
            let bucket_key = key_of(BUCKET, Operation::Update, &old.api_version, "");
            let bucket = self.entries.entry(bucket_key).or_insert_with(|| Entry {
                manager: BUCKET.into(),
                operation: Operation::Update,
                api_version: old.api_version.clone(),
                subresource: String::new(),
                time: None,
                set: Set::new(),
            });
            bucket.set = bucket.set.union(&old.set);
            bucket.time = old.time.clone();
        }
    }
}

/// Which fields a write may not set: they belong to another endpoint and are reset there
/// (upstream's `ResetFieldsStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// Nothing is reset.
    None,
    /// The main resource of a kind with a status subresource: `status` is reset.
    Status,
    /// The status subresource: everything but `status` is reset.
    AllButStatus,
}

/// What an operation is about: the type, version and endpoint it writes through.
pub struct Context<'a> {
    /// Field metadata.
    pub schema: &'a dyn Schema,
    /// The object's OpenAPI definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub type_name: &'a str,
    /// `apps/v1`.
    pub api_version: &'a str,
    /// Empty or the subresource written through.
    pub subresource: &'a str,
    /// Fields reset by this endpoint.
    pub reset: Reset,
    /// The time to record, RFC 3339.
    pub now: &'a str,
}

/// The result of an apply.
#[derive(Debug)]
pub struct Applied {
    /// The merged object (without managedFields; set them from `managed`).
    pub object: Value,
    /// The new managedFields.
    pub managed: ManagedFields,
}

fn field(s: &str) -> super::path::PathElement {
    super::path::PathElement::Field(s.to_string())
}

/// Paths nobody owns, as upstream's strip-meta layer: identity and system metadata.
fn strip_set() -> Set {
    let mut s = Set::new();
    s.insert(&[field("apiVersion")]);
    s.insert(&[field("kind")]);
    s.insert(&[field("metadata")]);
    for f in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        s.insert(&[field("metadata"), field(f)]);
    }
    s
}

fn without_managed_fields(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

impl Context<'_> {
    fn typer(&self) -> Typer<'_> {
        Typer {
            schema: self.schema,
        }
    }

    fn root(&self) -> Ty {
        self.typer().named(self.type_name)
    }

    fn reset_set(&self, objects: &[&Value]) -> Set {
        let mut s = Set::new();
        match self.reset {
            Reset::None => {}
            Reset::Status => s.insert(&[field("status")]),
            Reset::AllButStatus => {
                for o in objects {
                    for k in o.as_object().into_iter().flat_map(|m| m.keys()) {
                        if k != "status" {
                            s.insert(&[field(k)]);
                        }
                    }
                }
            }
        }
        s
    }

    fn compare(&self, old: Option<&Value>, new: &Value) -> Comparison {
        let skeleton = Value::Object(Map::new());
        let (l, sk) = match old {
            Some(o) => (without_managed_fields(o), false),
            None => (skeleton, true),
        };
        let r = without_managed_fields(new);
        let mut c = self.typer().compare(&self.root(), Some(&l), Some(&r), sk);
        c.filter(&self.reset_set(&[&l, &r]));
        c
    }

    /// Records a non-apply write by `manager`: it takes the fields it changed (from every
    /// other manager), and everyone loses the fields it removed.
    ///
    /// `old` is `None` for a create. `managed` is the base set (see [`base_managed_fields`]).
    pub fn update(
        &self,
        old: Option<&Value>,
        new: &Value,
        mut managed: ManagedFields,
        manager: &str,
    ) -> ManagedFields {
        let c = self.compare(old, new);
        let changed = c.changed();
        let strip = strip_set();
        for e in managed.entries.values_mut() {
            e.set = e
                .set
                .difference(&changed)
                .difference(&c.removed)
                .difference(&strip);
        }
        let mine = changed.difference(&strip);
        if !mine.is_empty() {
            let key = key_of(
                manager,
                Operation::Update,
                self.api_version,
                self.subresource,
            );
            let e = managed.entries.entry(key).or_insert_with(|| Entry {
                manager: manager.to_string(),
                operation: Operation::Update,
                api_version: self.api_version.to_string(),
                subresource: self.subresource.to_string(),
                time: None,
                set: Set::new(),
            });
            e.set = e.set.union(&mine);
            e.time = Some(self.now.to_string());
        }
        managed.drop_empty();
        managed.cap_updaters();
        managed
    }

    /// Server-side apply of `config` by `manager` onto `live` (`None`: the object is created).
    ///
    /// # Errors
    /// [`ApplyError::Invalid`] for a configuration with duplicate or key-less list items;
    /// [`ApplyError::Conflicts`] when, without `force`, the apply would change fields other
    /// managers own.
    pub fn apply(
        &self,
        live: Option<&Value>,
        config: &Value,
        managed: ManagedFields,
        manager: &str,
        force: bool,
    ) -> Result<Applied, ApplyError> {
        match self.apply_once(live, config, managed.clone(), manager, force) {
            Err(ApplyError::Conflicts(conflicts)) if manager == KUBECTL && !force => {
                // Upstream lets kubectl's server-side apply take over what client-side apply
                // set, as long as the live values still match the last-applied annotation.
                let Some(allowed) = live.and_then(|l| self.allowed_from_last_applied(l)) else {
                    return Err(ApplyError::Conflicts(conflicts));
                };
                let rest: Vec<Conflict> = conflicts
                    .0
                    .iter()
                    .filter(|c| !allowed.has(&c.path))
                    .cloned()
                    .collect();
                if !rest.is_empty() {
                    return Err(ApplyError::Conflicts(Conflicts(rest)));
                }
                self.apply_once(live, config, managed, manager, true)
            }
            other => other,
        }
        .map(|mut a| {
            if manager == KUBECTL {
                sync_last_applied(&mut a.object, config);
            }
            a
        })
    }

    fn allowed_from_last_applied(&self, live: &Value) -> Option<Set> {
        let raw = live["metadata"]["annotations"][LAST_APPLIED].as_str()?;
        let last: Value = serde_json::from_str(raw).ok()?;
        let t = self.typer();
        let root = self.root();
        let last_set = t.to_set(&root, &last, false).ok()?;
        let live = without_managed_fields(live);
        let live_set = t.to_set(&root, &live, false).ok()?;
        let c = t.compare(&root, Some(&last), Some(&live), false);
        Some(last_set.intersection(&live_set).difference(&c.modified))
    }

    fn apply_once(
        &self,
        live: Option<&Value>,
        config: &Value,
        mut managed: ManagedFields,
        manager: &str,
        force: bool,
    ) -> Result<Applied, ApplyError> {
        let t = self.typer();
        let root = self.root();
        let empty = Value::Object(Map::new());
        let live_v = live.map(without_managed_fields).unwrap_or(empty);
        let mut merged = t
            .merge(&root, Some(&live_v), Some(config))
            .unwrap_or_else(|| Value::Object(Map::new()));
        strip_nulls(&mut merged);
        let applied = t
            .to_set(&root, config, true)
            .map_err(ApplyError::Invalid)?
            .recursive_difference(&self.reset_set(&[config, &live_v]));
        let key = key_of(manager, Operation::Apply, "", self.subresource);
        let last = managed.entries.get(&key).map(|e| e.set.clone());
        let previous_time = managed.entries.get(&key).and_then(|e| e.time.clone());
        managed.entries.insert(
            key.clone(),
            Entry {
                manager: manager.to_string(),
                operation: Operation::Apply,
                api_version: self.api_version.to_string(),
                subresource: self.subresource.to_string(),
                time: previous_time,
                set: applied,
            },
        );
        let object = match &last {
            Some(last) if !last.is_empty() => self.prune(&merged, &managed, last),
            _ => merged,
        };

        // Conflicts: fields this apply changes that others own.
        let c = self.compare(Some(&live_v), &object);
        let changed = c.changed();
        let mut conflicts = Vec::new();
        for (k, e) in &managed.entries {
            if *k == key {
                continue;
            }
            for path in e.set.intersection(&changed).paths() {
                conflicts.push(Conflict {
                    manager_key: k.clone(),
                    manager: e.describe(),
                    path,
                });
            }
        }
        if !force && !conflicts.is_empty() {
            return Err(ApplyError::Conflicts(Conflicts(conflicts)));
        }
        let strip = strip_set();
        for (k, e) in managed.entries.iter_mut() {
            if *k != key {
                e.set = e.set.difference(&changed).difference(&c.removed);
            }
            e.set = e.set.difference(&strip);
        }
        if object != live_v {
            if let Some(e) = managed.entries.get_mut(&key) {
                e.time = Some(self.now.to_string());
            }
        }
        managed.drop_empty();
        managed.cap_updaters();
        Ok(Applied { object, managed })
    }

    /// Removes what the applier applied last time and no longer does, unless another manager
    /// (or the new configuration) owns it; structured-merge-diff's prune, with its add-back
    /// steps.
    fn prune(&self, merged: &Value, managed: &ManagedFields, last: &Set) -> Value {
        let t = self.typer();
        let root = self.root();
        let set_of = |v: &Value| t.to_set(&root, v, false).unwrap_or_default();
        let empty = || Value::Object(Map::new());
        let first = t
            .remove(&root, merged, &t.ensure_named(&root, last))
            .unwrap_or_else(empty);
        let owned = managed
            .entries
            .values()
            .fold(Set::new(), |acc, e| acc.union(&e.set));
        let merged_set = set_of(merged);
        let unowned = t.ensure_named(&root, &merged_set).difference(
            &t.ensure_named(&root, &set_of(&first))
                .union(&t.ensure_named(&root, &owned)),
        );
        let second = t.remove(&root, merged, &unowned).unwrap_or_else(empty);
        let dangling = merged_set.difference(&set_of(&second)).intersection(last);
        t.remove(&root, merged, &dangling).unwrap_or_else(empty)
    }
}

/// Keeps client-side apply's annotation in step with what `kubectl apply --server-side`
/// applied, so a later client-side apply computes its patch from the right base.
fn sync_last_applied(object: &mut Value, config: &Value) {
    let has = object["metadata"]["annotations"]
        .get(LAST_APPLIED)
        .is_some_and(|v| v.is_string());
    if !has {
        return;
    }
    let mut c = config.clone();
    if let Some(a) = c["metadata"]
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            if let Some(m) = c["metadata"].as_object_mut() {
                m.remove("annotations");
            }
        }
    }
    let text = format!("{}\n", super::path::go_json(&c));
    object["metadata"]["annotations"][LAST_APPLIED] = Value::String(text);
}

/// The managedFields an Update starts from, as upstream's `decodeLiveOrNew`: a subresource
/// write always uses the live ones; `[]` or `[{}]` in the new object resets them; valid,
/// non-empty ones in the new object are taken (clients may edit managedFields, as kubectl's
/// client-side to server-side migration does); anything else falls back to the live ones.
///
/// # Errors
/// The live object's managedFields do not decode.
pub fn base_managed_fields(
    old: Option<&Value>,
    new: &Value,
    subresource: bool,
) -> Result<ManagedFields, String> {
    let live = || ManagedFields::decode(old.and_then(|o| o["metadata"].get("managedFields")));
    if subresource {
        return live();
    }
    let given = new["metadata"].get("managedFields");
    if let Some(Value::Array(a)) = given {
        let reset = a.is_empty()
            || (a.len() == 1 && a[0].as_object().is_some_and(|m| m.values().all(is_zero)));
        if reset {
            return Ok(ManagedFields::new());
        }
    }
    match ManagedFields::decode(given) {
        Ok(m) if !m.is_empty() => Ok(m),
        _ => live(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

impl Conflicts {
    /// Upstream's message: `Apply failed with 1 conflict: conflict with "m": .path`, or for
    /// several, grouped by manager (sorted by identifier), one `- path` line each.
    pub fn message(&self) -> String {
        if let [c] = self.0.as_slice() {
            return format!(
                "Apply failed with 1 conflict: conflict with {}: {}",
                c.manager,
                path_string(&c.path)
            );
        }
        let mut by: BTreeMap<&str, (&str, Vec<&Path>)> = BTreeMap::new();
        for c in &self.0 {
            by.entry(&c.manager_key)
                .or_insert((&c.manager, Vec::new()))
                .1
                .push(&c.path);
        }
        let mut lines = Vec::new();
        for (name, paths) in by.values() {
            lines.push(format!("conflicts with {name}:"));
            lines.extend(paths.iter().map(|p| format!("- {}", path_string(p))));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            self.0.len(),
            lines.join("\n")
        )
    }
}
