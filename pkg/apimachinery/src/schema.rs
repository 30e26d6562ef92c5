//! Per-field patch metadata, as seen by strategic merge patch (and later server-side apply).
//!
//! The patch code asks a [`Schema`] about one field of one named type at a time. Type names are
//! OpenAPI definition names (`io.k8s.api.core.v1.PodSpec`). The apiserver's implementation is
//! built by the OpenAPI generator from k8s-openapi's schemas plus [`builtin_patch_metadata`];
//! tests use [`StaticSchema`].

use std::collections::{HashMap, HashSet};

mod builtin_table;

/// The JSON shape of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// string, number, bool, or an opaque value (IntOrString, Quantity, RawExtension).
    Scalar,
    /// A struct: its fields are looked up in `elem_type`.
    Object,
    /// A list: items are of `elem_type` (a struct name) or scalars when `elem_type` is `None`.
    List,
    /// A map with arbitrary keys (`labels`, `data`, `resources.limits`): values are of
    /// `elem_type`, or scalars when `None`.
    Map,
}

/// One `patchStrategy` struct-tag value (the tag may hold two, e.g. `merge,retainKeys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchStrategy {
    /// Lists merge item by item (by `patch_merge_key` for objects, as a set for scalars).
    Merge,
    /// The patch value replaces the field whole.
    Replace,
    /// The field accepts a `$retainKeys` directive that clears keys not listed.
    RetainKeys,
}

/// `x-kubernetes-list-type` (server-side apply's view of a list).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListType {
    /// Replaced as a whole; one owner.
    Atomic,
    /// Scalars, each item owned separately.
    Set,
    /// Objects keyed by these fields (`x-kubernetes-list-map-keys`).
    Map(Vec<String>),
}

/// Everything the patch code needs to know about one field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldInfo {
    /// The value's shape; `None` means unknown (treated like JSON merge patch).
    pub kind: Option<FieldKind>,
    /// Type name of the object, list item or map value, when it is a struct.
    pub elem_type: Option<String>,
    /// The `patchStrategy` tag, split on commas.
    pub patch_strategy: Vec<PatchStrategy>,
    /// The `patchMergeKey` tag.
    pub patch_merge_key: Option<String>,
    /// The `listType` / `listMapKey` tags.
    pub list_type: Option<ListType>,
    /// `x-kubernetes-map-type: atomic` on a map field.
    pub map_type_atomic: bool,
}

impl FieldInfo {
    /// A scalar (or opaque) field.
    pub fn scalar() -> Self {
        FieldInfo {
            kind: Some(FieldKind::Scalar),
            ..Default::default()
        }
    }

    /// A nested struct of type `type_name`.
    pub fn object(type_name: &str) -> Self {
        FieldInfo {
            kind: Some(FieldKind::Object),
            elem_type: Some(type_name.to_string()),
            ..Default::default()
        }
    }

    /// A list of structs of type `type_name`.
    pub fn list_of(type_name: &str) -> Self {
        FieldInfo {
            kind: Some(FieldKind::List),
            elem_type: Some(type_name.to_string()),
            ..Default::default()
        }
    }

    /// A list of scalars.
    pub fn list_of_scalars() -> Self {
        FieldInfo {
            kind: Some(FieldKind::List),
            ..Default::default()
        }
    }

    /// A map whose values are structs of type `type_name`, or scalars for `None`.
    pub fn map_of(type_name: Option<&str>) -> Self {
        FieldInfo {
            kind: Some(FieldKind::Map),
            elem_type: type_name.map(str::to_string),
            ..Default::default()
        }
    }

    /// Adds `patchStrategy=merge` with `patchMergeKey=key` (use `""` for scalar lists).
    pub fn merge_on(mut self, key: &str) -> Self {
        self.patch_strategy.push(PatchStrategy::Merge);
        if !key.is_empty() {
            self.patch_merge_key = Some(key.to_string());
        }
        self
    }

    /// Adds the `retainKeys` strategy.
    pub fn retain_keys(mut self) -> Self {
        self.patch_strategy.push(PatchStrategy::RetainKeys);
        self
    }

    /// Adds the `replace` strategy.
    pub fn replace(mut self) -> Self {
        self.patch_strategy.push(PatchStrategy::Replace);
        self
    }

    /// Sets the list type.
    pub fn with_list_type(mut self, list_type: ListType) -> Self {
        self.list_type = Some(list_type);
        self
    }

    /// True when the tag includes `strategy`.
    pub fn has_strategy(&self, strategy: PatchStrategy) -> bool {
        self.patch_strategy.contains(&strategy)
    }
}

/// Source of per-field metadata for patching.
///
/// # Assumptions
/// Implementations answer `None` for fields they do not know; strategic merge patch then treats
/// the field like JSON merge patch (maps merge, lists are replaced).
pub trait Schema: Send + Sync {
    /// Metadata of `field` (JSON name) in the struct `type_name`.
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo>;

    /// Whether the struct `type_name` is `x-kubernetes-map-type: atomic` (`+structType=atomic`),
    /// which server-side apply treats as one value.
    fn is_atomic_type(&self, _type_name: &str) -> bool {
        false
    }
}

/// A schema that knows nothing: strategic merge patch degrades to JSON merge patch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSchema;

impl Schema for NoSchema {
    fn field(&self, _type_name: &str, _field: &str) -> Option<FieldInfo> {
        None
    }
}

/// A hash-map schema, for tests and for small hand-built type sets.
#[derive(Debug, Clone, Default)]
pub struct StaticSchema {
    fields: HashMap<String, HashMap<String, FieldInfo>>,
    atomic_types: HashSet<String>,
}

impl StaticSchema {
    /// An empty schema.
    pub fn new() -> Self {
        StaticSchema::default()
    }

    /// Adds (or replaces) one field, builder style.
    pub fn with(mut self, type_name: &str, field: &str, info: FieldInfo) -> Self {
        self.insert(type_name, field, info);
        self
    }

    /// Adds (or replaces) one field.
    pub fn insert(&mut self, type_name: &str, field: &str, info: FieldInfo) {
        self.fields
            .entry(type_name.to_string())
            .or_default()
            .insert(field.to_string(), info);
    }

    /// Marks a struct type atomic.
    pub fn with_atomic_type(mut self, type_name: &str) -> Self {
        self.atomic_types.insert(type_name.to_string());
        self
    }
}

impl Schema for StaticSchema {
    fn field(&self, type_name: &str, field: &str) -> Option<FieldInfo> {
        self.fields.get(type_name)?.get(field).cloned()
    }

    fn is_atomic_type(&self, type_name: &str) -> bool {
        self.atomic_types.contains(type_name)
    }
}

/// List type as written in the static table (keys live in [`PatchMeta::list_map_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaticListType {
    /// `+listType=atomic`
    Atomic,
    /// `+listType=set`
    Set,
    /// `+listType=map`
    Map,
}

/// Patch-related struct tags of one field of a built-in Kubernetes 1.33 type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// OpenAPI definition name of the struct, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub type_name: &'static str,
    /// JSON field name, e.g. `containers`.
    pub field: &'static str,
    /// `patchStrategy` (empty when untagged).
    pub patch_strategy: &'static [PatchStrategy],
    /// `patchMergeKey`.
    pub patch_merge_key: Option<&'static str>,
    /// `+listType`.
    pub list_type: Option<StaticListType>,
    /// `+listMapKey` values, in order (only for `Map`).
    pub list_map_keys: &'static [&'static str],
    /// `+mapType=atomic`.
    pub map_type_atomic: bool,
}

impl PatchMeta {
    /// The `x-kubernetes-list-type` this entry stamps, with keys.
    pub fn list_type(&self) -> Option<ListType> {
        self.list_type.map(|t| match t {
            StaticListType::Atomic => ListType::Atomic,
            StaticListType::Set => ListType::Set,
            StaticListType::Map => {
                ListType::Map(self.list_map_keys.iter().map(|k| k.to_string()).collect())
            }
        })
    }

    /// Applies this entry's tags to a structural [`FieldInfo`] (kind and element type come
    /// from the OpenAPI schema; the tags come from here).
    pub fn apply_to(&self, mut info: FieldInfo) -> FieldInfo {
        info.patch_strategy = self.patch_strategy.to_vec();
        info.patch_merge_key = self.patch_merge_key.map(str::to_string);
        info.list_type = self.list_type();
        info.map_type_atomic = self.map_type_atomic;
        info
    }
}

/// Every field of the built-in Kubernetes 1.33 types that carries a `patchStrategy` /
/// `patchMergeKey` tag and/or a `listType` / `listMapKey` / `mapType=atomic` tag, sorted by
/// (type, field). The OpenAPI generator stamps these as `x-kubernetes-patch-strategy`,
/// `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and
/// `x-kubernetes-map-type`, which kubectl reads for `apply` and `patch`.
///
/// # Assumptions
/// List/map types come from k8s-openapi 0.29's `v1_33` generated merge strategies; patch
/// strategies and merge keys were transcribed from upstream `k8s.io/api` struct tags. Lists
/// without any tag are atomic for server-side apply and replaced by strategic merge patch, so
/// they need no entry.
pub fn builtin_patch_metadata() -> &'static [PatchMeta] {
    builtin_table::TABLE
}

/// The table entry for one field, if any.
pub fn builtin_patch_meta(type_name: &str, field: &str) -> Option<&'static PatchMeta> {
    let table = builtin_table::TABLE;
    table
        .binary_search_by(|m| (m.type_name, m.field).cmp(&(type_name, field)))
        .ok()
        .and_then(|i| table.get(i))
}

/// Built-in struct types tagged `+structType=atomic` (`x-kubernetes-map-type: atomic` on the
/// definition): server-side apply owns them as one value.
pub fn builtin_atomic_types() -> &'static [&'static str] {
    &[
        "io.k8s.api.core.v1.ConfigMapKeySelector",
        "io.k8s.api.core.v1.FileKeySelector",
        "io.k8s.api.core.v1.LocalObjectReference",
        "io.k8s.api.core.v1.NodeSelector",
        "io.k8s.api.core.v1.NodeSelectorTerm",
        "io.k8s.api.core.v1.ObjectFieldSelector",
        "io.k8s.api.core.v1.ObjectReference",
        "io.k8s.api.core.v1.ResourceFieldSelector",
        "io.k8s.api.core.v1.SecretKeySelector",
        "io.k8s.api.core.v1.SecretReference",
        "io.k8s.api.core.v1.TopologySelectorTerm",
        "io.k8s.api.core.v1.TypedLocalObjectReference",
        "io.k8s.api.core.v1.TypedObjectReference",
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        let t = builtin_patch_metadata();
        for w in t.windows(2) {
            assert!(
                (w[0].type_name, w[0].field) < (w[1].type_name, w[1].field),
                "{w:?}"
            );
        }
        assert!(t.len() > 300);
    }

    #[test]
    fn table_has_the_well_known_entries() {
        let check = |ty: &str, f: &str, strat: &[PatchStrategy], key: Option<&str>| {
            let m = builtin_patch_meta(ty, f).unwrap_or_else(|| panic!("{ty}.{f} missing"));
            assert_eq!(m.patch_strategy, strat, "{ty}.{f}");
            assert_eq!(m.patch_merge_key, key, "{ty}.{f}");
            m
        };
        use PatchStrategy::*;
        let core = |t: &str| format!("io.k8s.api.core.v1.{t}");
        check(&core("PodSpec"), "containers", &[Merge], Some("name"));
        check(&core("PodSpec"), "initContainers", &[Merge], Some("name"));
        check(
            &core("PodSpec"),
            "volumes",
            &[Merge, RetainKeys],
            Some("name"),
        );
        check(&core("PodSpec"), "imagePullSecrets", &[Merge], Some("name"));
        check(&core("PodSpec"), "hostAliases", &[Merge], Some("ip"));
        let t = check(&core("PodSpec"), "tolerations", &[], None);
        assert_eq!(t.list_type(), Some(ListType::Atomic));
        check(&core("Container"), "env", &[Merge], Some("name"));
        check(
            &core("Container"),
            "volumeMounts",
            &[Merge],
            Some("mountPath"),
        );
        let p = check(&core("Container"), "ports", &[Merge], Some("containerPort"));
        assert_eq!(
            p.list_type(),
            Some(ListType::Map(vec![
                "containerPort".into(),
                "protocol".into()
            ]))
        );
        let p = check(&core("ServiceSpec"), "ports", &[Merge], Some("port"));
        assert_eq!(p.list_map_keys, &["port", "protocol"]);
        check(&core("EphemeralContainer"), "env", &[Merge], Some("name"));
        check(&core("PodStatus"), "conditions", &[Merge], Some("type"));
        check(&core("NodeStatus"), "conditions", &[Merge], Some("type"));
        check(&core("NodeStatus"), "addresses", &[Merge], Some("type"));
        check(&core("ServiceAccount"), "secrets", &[Merge], Some("name"));
        check(&core("NodeSpec"), "podCIDRs", &[Merge], None);
        check(&core("NodeSpec"), "taints", &[], None);
        let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
        check(meta, "finalizers", &[Merge], None);
        check(meta, "ownerReferences", &[Merge], Some("uid"));
        check(
            "io.k8s.api.apps.v1.DeploymentStatus",
            "conditions",
            &[Merge],
            Some("type"),
        );
        check(
            "io.k8s.api.apps.v1.DeploymentSpec",
            "strategy",
            &[RetainKeys],
            None,
        );
        check(
            "io.k8s.api.batch.v1.JobStatus",
            "conditions",
            &[Merge],
            Some("type"),
        );
        check("io.k8s.api.rbac.v1.ClusterRole", "rules", &[], None);
        check(
            "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
            "conditions",
            &[],
            None,
        );
        assert!(
            builtin_patch_meta(&core("ServiceSpec"), "selector").is_some_and(|m| m.map_type_atomic)
        );
    }

    #[test]
    fn static_schema_lookups() {
        let s = StaticSchema::new()
            .with("T", "items", FieldInfo::list_of("Item").merge_on("name"))
            .with_atomic_type("Item");
        let f = s.field("T", "items").unwrap();
        assert!(f.has_strategy(PatchStrategy::Merge));
        assert_eq!(f.patch_merge_key.as_deref(), Some("name"));
        assert!(s.field("T", "other").is_none());
        assert!(s.is_atomic_type("Item"));
        assert!(NoSchema.field("T", "items").is_none());
    }
}
