//! Schema-directed walks over JSON values: the field set of a value, the comparison of two
//! values, the apply merge and item removal, each following structured-merge-diff's rules for
//! which parts are granular (structs, maps, associative lists, sets) and which are atomic.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::path::{Path, PathElement};
use super::set::Set;
use crate::schema::{FieldInfo, FieldKind, ListType, PatchStrategy, Schema};

/// How a value is owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A scalar: one owner.
    Scalar,
    /// A list, map or struct owned as a whole.
    Atomic,
    /// No schema: maps are granular (every key a member), lists atomic.
    Untyped,
    /// A named struct type; its fields come from the schema.
    Struct(String),
    /// A map with arbitrary keys.
    Map(Box<Ty>),
    /// A list of scalars, each item owned separately.
    Set,
    /// A list of structs keyed by these fields.
    Assoc(Vec<String>, Box<Ty>),
}

/// The schema walker: resolves types and answers the questions the algorithms ask.
pub(crate) struct Typer<'a> {
    pub schema: &'a dyn Schema,
}

/// What a comparison found.
#[derive(Debug, Default, Clone)]
pub(crate) struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

impl Comparison {
    /// Drops everything under `ignored` (reset fields).
    pub fn filter(&mut self, ignored: &Set) {
        self.added = self.added.recursive_difference(ignored);
        self.modified = self.modified.recursive_difference(ignored);
        self.removed = self.removed.recursive_difference(ignored);
    }

    /// Added ∪ Modified: what the new value sets.
    pub fn changed(&self) -> Set {
        self.added.union(&self.modified)
    }
}

impl<'a> Typer<'a> {
    /// The type of a struct named `name` (atomic if tagged so).
    pub fn named(&self, name: &str) -> Ty {
        if self.schema.is_atomic_type(name) {
            Ty::Atomic
        } else {
            Ty::Struct(name.to_string())
        }
    }

    fn of_info(&self, info: &FieldInfo) -> Ty {
        match info.kind {
            None => Ty::Untyped,
            Some(FieldKind::Scalar) => Ty::Scalar,
            Some(FieldKind::Object) => {
                if info.map_type_atomic {
                    return Ty::Atomic;
                }
                match &info.elem_type {
                    Some(t) => self.named(t),
                    None => Ty::Untyped,
                }
            }
            Some(FieldKind::Map) => {
                if info.map_type_atomic {
                    return Ty::Atomic;
                }
                let elem = match &info.elem_type {
                    Some(t) => self.named(t),
                    None => Ty::Scalar,
                };
                Ty::Map(Box::new(elem))
            }
            Some(FieldKind::List) => {
                let elem = || match &info.elem_type {
                    Some(t) => self.named(t),
                    None => Ty::Scalar,
                };
                match &info.list_type {
                    Some(ListType::Atomic) => Ty::Atomic,
                    Some(ListType::Set) if info.elem_type.is_none() => Ty::Set,
                    Some(ListType::Map(keys)) if !keys.is_empty() && info.elem_type.is_some() => {
                        Ty::Assoc(keys.clone(), Box::new(elem()))
                    }
                    Some(_) => Ty::Atomic,
                    // Without a list type, upstream's schema conversion reads the strategic
                    // merge tags: merge by key makes a map, merge of scalars a set.
                    None if info.has_strategy(PatchStrategy::Merge) => {
                        match (&info.patch_merge_key, &info.elem_type) {
                            (Some(k), Some(_)) => Ty::Assoc(vec![k.clone()], Box::new(elem())),
                            (None, None) => Ty::Set,
                            _ => Ty::Atomic,
                        }
                    }
                    None => Ty::Atomic,
                }
            }
        }
    }

    /// The type of member `key` of a map-like value, and whether it is a declared struct field
    /// (declared fields are not members themselves unless they are leaves).
    pub fn field(&self, ty: &Ty, key: &str) -> (Ty, bool) {
        match ty {
            Ty::Struct(t) => match self.schema.field(t, key) {
                Some(info) => (self.of_info(&info), true),
                None => (Ty::Untyped, false),
            },
            Ty::Map(elem) => ((**elem).clone(), false),
            _ => (Ty::Untyped, false),
        }
    }

    /// The type of the child reached through `pe`.
    pub fn child(&self, ty: &Ty, pe: &PathElement) -> Ty {
        match (ty, pe) {
            (_, PathElement::Field(k)) => self.field(ty, k).0,
            (Ty::Assoc(_, elem), PathElement::Key(_)) => (**elem).clone(),
            (Ty::Set, PathElement::Value(_)) => Ty::Scalar,
            _ => Ty::Untyped,
        }
    }

    /// The path element of list item `item`.
    ///
    /// # Errors
    /// An item of an associative list that is not an object or lacks a key field.
    pub fn item_pe(&self, ty: &Ty, item: &Value) -> Result<PathElement, String> {
        match ty {
            Ty::Set => Ok(PathElement::Value(item.clone())),
            Ty::Assoc(keys, _) => {
                let Value::Object(m) = item else {
                    return Err("associative list may only contain objects".into());
                };
                let mut fields = Vec::with_capacity(keys.len());
                for k in keys {
                    match m.get(k) {
                        Some(v) if !v.is_null() => fields.push((k.clone(), v.clone())),
                        // The only defaulted key of the built-in types: port lists.
                        _ if k == "protocol" => fields.push((k.clone(), Value::from("TCP"))),
                        _ => {
                            return Err(format!(
                                "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                            ))
                        }
                    }
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(PathElement::Key(fields))
            }
            _ => Err("not a granular list".into()),
        }
    }

    /// Items of a granular list in order, first occurrence of each key only.
    ///
    /// # Errors
    /// With `strict`, a duplicate key; always, an item without its key.
    fn index<'v>(
        &self,
        ty: &Ty,
        list: &'v [Value],
        path: &Path,
        strict: bool,
    ) -> Result<(Vec<PathElement>, HashMap<String, &'v Value>), String> {
        let mut order = Vec::with_capacity(list.len());
        let mut seen = HashMap::with_capacity(list.len());
        for item in list {
            let pe = self
                .item_pe(ty, item)
                .map_err(|e| format!("{}: {e}", super::path::path_string(path)))?;
            let k = pe.serialize();
            if seen.contains_key(&k) {
                if strict {
                    let what = match &pe {
                        PathElement::Value(_) => "value",
                        _ => "key",
                    };
                    return Err(format!(
                        "{}: duplicate entries for {what} {}",
                        super::path::path_string(path),
                        pe
                    ));
                }
                continue;
            }
            seen.insert(k, item);
            order.push(pe);
        }
        Ok((order, seen))
    }

    /// The field set of `v`: every leaf, every list item, every map entry.
    ///
    /// # Errors
    /// With `strict` (applied configurations), duplicate or key-less list items.
    pub fn to_set(&self, ty: &Ty, v: &Value, strict: bool) -> Result<Set, String> {
        let mut out = Set::new();
        self.walk_set(ty, v, &mut Vec::new(), &mut out, strict)?;
        Ok(out)
    }

    fn walk_set(
        &self,
        ty: &Ty,
        v: &Value,
        path: &mut Path,
        out: &mut Set,
        strict: bool,
    ) -> Result<(), String> {
        match (ty, v) {
            (Ty::Scalar | Ty::Atomic, _) => out.insert(path),
            (Ty::Struct(_) | Ty::Map(_) | Ty::Untyped, Value::Object(m)) => {
                for (k, child) in m {
                    let (cty, declared) = self.field(ty, k);
                    path.push(PathElement::Field(k.clone()));
                    self.walk_set(&cty, child, path, out, strict)?;
                    if !declared {
                        out.insert(path);
                    }
                    path.pop();
                }
            }
            (Ty::Struct(_) | Ty::Map(_), _) => {}
            (Ty::Untyped, Value::Array(_)) => out.insert(path),
            (Ty::Untyped, _) => out.insert(path),
            (Ty::Set | Ty::Assoc(..), Value::Array(items)) => {
                let elem = match ty {
                    Ty::Assoc(_, e) => (**e).clone(),
                    _ => Ty::Scalar,
                };
                let list_ty = ty.clone();
                match self.index(&list_ty, items, path, strict) {
                    Ok((order, seen)) => {
                        for pe in order {
                            let item = seen[&pe.serialize()];
                            path.push(pe);
                            self.walk_set(&elem, item, path, out, strict)?;
                            out.insert(path);
                            path.pop();
                        }
                    }
                    Err(e) if strict => return Err(e),
                    Err(_) => out.insert(path),
                }
            }
            (Ty::Set | Ty::Assoc(..), _) => {}
        }
        Ok(())
    }

    /// Whether the node is compared (and merged) as one value.
    fn is_leaf(&self, ty: &Ty, l: Option<&Value>, r: Option<&Value>) -> bool {
        let empty = |v: Option<&Value>| match v {
            None | Some(Value::Null) => true,
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        match ty {
            Ty::Scalar | Ty::Atomic => true,
            Ty::Struct(_) | Ty::Map(_) | Ty::Untyped => {
                let fits =
                    |v: Option<&Value>| matches!(v, None | Some(Value::Null | Value::Object(_)));
                !(fits(l) && fits(r)) || (empty(l) && empty(r))
            }
            Ty::Set | Ty::Assoc(..) => {
                let fits =
                    |v: Option<&Value>| matches!(v, None | Some(Value::Null | Value::Array(_)));
                if !(fits(l) && fits(r)) || (empty(l) && empty(r)) {
                    return true;
                }
                // A list whose items have no usable keys is compared whole.
                let ok = |v: Option<&Value>| match v {
                    Some(Value::Array(a)) => self.index(ty, a, &Vec::new(), false).is_ok(),
                    _ => true,
                };
                !(ok(l) && ok(r))
            }
        }
    }

    /// Compares `l` (old) with `r` (new). With `skeleton`, absent struct fields of `l` count as
    /// present and empty and absent lists as null, as in the zero-valued typed object upstream
    /// compares against on create.
    pub fn compare(
        &self,
        ty: &Ty,
        l: Option<&Value>,
        r: Option<&Value>,
        skeleton: bool,
    ) -> Comparison {
        let mut c = Comparison::default();
        self.walk_compare(ty, l, r, &mut Vec::new(), &mut c, skeleton);
        c
    }

    fn walk_compare(
        &self,
        ty: &Ty,
        l: Option<&Value>,
        r: Option<&Value>,
        path: &mut Path,
        c: &mut Comparison,
        skeleton: bool,
    ) {
        if l.is_none() && r.is_none() {
            return;
        }
        if self.is_leaf(ty, l, r) {
            match (l, r) {
                (None, Some(_)) => c.added.insert(path),
                (Some(_), None) => c.removed.insert(path),
                (Some(a), Some(b)) if a != b => c.modified.insert(path),
                _ => {}
            }
            return;
        }
        let empty = Map::new();
        match ty {
            Ty::Struct(_) | Ty::Map(_) | Ty::Untyped => {
                let lm = l.and_then(Value::as_object).unwrap_or(&empty);
                let rm = r.and_then(Value::as_object).unwrap_or(&empty);
                let skeleton_struct = Value::Object(Map::new());
                let keys = lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k)));
                for k in keys {
                    let (cty, _) = self.field(ty, k);
                    let mut lv = lm.get(k);
                    let nested = skeleton && matches!(ty, Ty::Struct(_));
                    if lv.is_none() && nested {
                        lv = match cty {
                            Ty::Struct(_) => Some(&skeleton_struct),
                            Ty::Set | Ty::Assoc(..) => Some(&Value::Null),
                            _ => None,
                        };
                    }
                    path.push(PathElement::Field(k.clone()));
                    self.walk_compare(&cty, lv, rm.get(k), path, c, nested);
                    path.pop();
                }
            }
            Ty::Set | Ty::Assoc(..) => {
                let elem = match ty {
                    Ty::Assoc(_, e) => (**e).clone(),
                    _ => Ty::Scalar,
                };
                let no: Vec<Value> = Vec::new();
                let la = l.and_then(Value::as_array).unwrap_or(&no);
                let ra = r.and_then(Value::as_array).unwrap_or(&no);
                let (Ok((lo, ls)), Ok((ro, rs))) = (
                    self.index(ty, la, path, false),
                    self.index(ty, ra, path, false),
                ) else {
                    return;
                };
                let mut order = lo.clone();
                order.extend(
                    ro.iter()
                        .filter(|pe| !ls.contains_key(&pe.serialize()))
                        .cloned(),
                );
                for pe in order {
                    let k = pe.serialize();
                    path.push(pe);
                    self.walk_compare(
                        &elem,
                        ls.get(&k).copied(),
                        rs.get(&k).copied(),
                        path,
                        c,
                        false,
                    );
                    path.pop();
                }
            }
            Ty::Scalar | Ty::Atomic => {}
        }
        if l.is_none() {
            c.added.insert(path);
        } else if r.is_none() {
            c.removed.insert(path);
        }
    }

    /// Merges `r` (the applied configuration) into `l` (the live object): `r`'s leaves win,
    /// granular parts merge, associative lists keep upstream's order (shared items in `r`'s
    /// order, `l`-only items where they were).
    pub fn merge(&self, ty: &Ty, l: Option<&Value>, r: Option<&Value>) -> Option<Value> {
        if l.is_none() && r.is_none() {
            return None;
        }
        if self.is_leaf(ty, l, r) {
            return r.or(l).cloned();
        }
        let empty = Map::new();
        match ty {
            Ty::Struct(_) | Ty::Map(_) | Ty::Untyped => {
                let lm = l.and_then(Value::as_object).unwrap_or(&empty);
                let rm = r.and_then(Value::as_object).unwrap_or(&empty);
                let mut out = Map::new();
                for k in lm.keys().chain(rm.keys().filter(|k| !lm.contains_key(*k))) {
                    let (cty, _) = self.field(ty, k);
                    if let Some(v) = self.merge(&cty, lm.get(k), rm.get(k)) {
                        out.insert(k.clone(), v);
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Ty::Set | Ty::Assoc(..) => {
                let elem = match ty {
                    Ty::Assoc(_, e) => (**e).clone(),
                    _ => Ty::Scalar,
                };
                let no: Vec<Value> = Vec::new();
                let la = l.and_then(Value::as_array).unwrap_or(&no);
                let ra = r.and_then(Value::as_array).unwrap_or(&no);
                let (Ok((lo, ls)), Ok((ro, rs))) = (
                    self.index(ty, la, &Vec::new(), false),
                    self.index(ty, ra, &Vec::new(), false),
                ) else {
                    return r.or(l).cloned();
                };
                let out = merge_order(
                    &lo,
                    &ro,
                    |pe| ls.contains_key(&pe.serialize()),
                    |pe| rs.contains_key(&pe.serialize()),
                )
                .into_iter()
                .filter_map(|pe| {
                    let k = pe.serialize();
                    self.merge(&elem, ls.get(&k).copied(), rs.get(&k).copied())
                })
                .collect::<Vec<_>>();
                (!out.is_empty()).then_some(Value::Array(out))
            }
            Ty::Scalar | Ty::Atomic => r.or(l).cloned(),
        }
    }

    /// `v` without the members of `set` (and what is below them). A map or list emptied by the
    /// removal disappears (`None`), as the typed round trip upstream turns it into nothing.
    pub fn remove(&self, ty: &Ty, v: &Value, set: &Set) -> Option<Value> {
        if set.is_empty() {
            return Some(v.clone());
        }
        match (ty, v) {
            (Ty::Struct(_) | Ty::Map(_) | Ty::Untyped, Value::Object(m)) if !m.is_empty() => {
                let mut out = Map::new();
                for (k, child) in m {
                    let pe = PathElement::Field(k.clone());
                    if set.has_member(&pe) {
                        continue;
                    }
                    match set.child(&pe) {
                        Some(sub) => {
                            let (cty, _) = self.field(ty, k);
                            if let Some(c) = self.remove(&cty, child, sub) {
                                out.insert(k.clone(), c);
                            }
                        }
                        None => {
                            out.insert(k.clone(), child.clone());
                        }
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            (Ty::Set | Ty::Assoc(..), Value::Array(items)) if !items.is_empty() => {
                let elem = match ty {
                    Ty::Assoc(_, e) => (**e).clone(),
                    _ => Ty::Scalar,
                };
                let mut out = Vec::new();
                for item in items {
                    let Ok(pe) = self.item_pe(ty, item) else {
                        return Some(v.clone());
                    };
                    if set.has_member(&pe) {
                        continue;
                    }
                    match set.child(&pe) {
                        Some(sub) => {
                            if let Some(c) = self.remove(&elem, item, sub) {
                                out.push(c);
                            }
                        }
                        None => out.push(item.clone()),
                    }
                }
                (!out.is_empty()).then_some(Value::Array(out))
            }
            _ => Some(v.clone()),
        }
    }

    /// `set` plus every declared struct field that has owned paths below it (upstream's
    /// `EnsureNamedFieldsAreMembers`), so pruning can tell owned structs from unowned ones.
    pub fn ensure_named(&self, ty: &Ty, set: &Set) -> Set {
        let mut members: std::collections::BTreeSet<PathElement> =
            set.members_iter().cloned().collect();
        let mut children = std::collections::BTreeMap::new();
        for (pe, c) in set.children_iter() {
            if let (PathElement::Field(k), Ty::Struct(_)) = (pe, ty) {
                if self.field(ty, k).1 {
                    members.insert(pe.clone());
                }
            }
            children.insert(pe.clone(), self.ensure_named(&self.child(ty, pe), c));
        }
        Set::from_parts(members, children)
    }
}

/// The order of a merged associative list (structured-merge-diff's algorithm): walk both
/// lists; items in both appear in the right-hand order; left-only items stay where they were
/// relative to the shared ones; right-only items follow their right-hand neighbours.
fn merge_order(
    lo: &[PathElement],
    ro: &[PathElement],
    in_l: impl Fn(&PathElement) -> bool,
    in_r: impl Fn(&PathElement) -> bool,
) -> Vec<PathElement> {
    let mut shared = ro.iter().filter(|pe| in_l(pe));
    let mut next_shared = shared.next();
    let mut out = Vec::with_capacity(lo.len() + ro.len());
    let (mut i, mut j) = (0, 0);
    while i < lo.len() || j < ro.len() {
        if i < lo.len() && j < ro.len() {
            let pe = &lo[i];
            if *pe == ro[j] {
                out.push(pe.clone());
                i += 1;
                j += 1;
                next_shared = shared.next();
                continue;
            }
            if in_r(pe) && next_shared.is_some_and(|n| n != pe) {
                // Shared, but its turn comes later in the right-hand order.
                i += 1;
                continue;
            }
        }
        if i < lo.len() && !in_r(&lo[i]) {
            out.push(lo[i].clone());
            i += 1;
            continue;
        }
        if j < ro.len() {
            let pe = &ro[j];
            out.push(pe.clone());
            j += 1;
            if next_shared.is_some_and(|n| n == pe) {
                next_shared = shared.next();
            }
        } else {
            // Only shared left-hand items remain, already emitted in right-hand order.
            i += 1;
        }
    }
    out
}

/// Removes `null` members of objects (applied `null`s mean "unset").
pub(crate) fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}
