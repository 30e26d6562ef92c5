//! Field sets: the tree of paths a manager owns, with set algebra and the FieldsV1 wire
//! format.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::path::{Path, PathElement};

/// A set of paths, stored as a tree: `members` are paths ending here, `children` hold the
/// paths that continue.
///
/// # Guarantees
/// No child set is empty, so equality is structural.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, Set>,
}

impl Set {
    /// The empty set.
    pub fn new() -> Set {
        Set::default()
    }

    /// True when no path is in the set.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path` (the empty path is not a member of anything and is ignored, as upstream).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// True if `path` is a member.
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// True if `pe` is a member at this level.
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// The paths under `pe`, relative to it.
    pub fn child(&self, pe: &PathElement) -> Option<&Set> {
        self.children.get(pe)
    }

    /// Paths in either set.
    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &Set) -> Set {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, c)| {
                let i = c.intersection(other.children.get(pe)?);
                (!i.is_empty()).then(|| (pe.clone(), i))
            })
            .collect();
        Set { members, children }
    }

    /// Paths in `self` but not in `other`.
    pub fn difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(pe, c)| {
                let d = match other.children.get(pe) {
                    Some(oc) => c.difference(oc),
                    None => c.clone(),
                };
                (!d.is_empty()).then(|| (pe.clone(), d))
            })
            .collect();
        Set { members, children }
    }

    /// Paths in `self` that are neither in `other` nor below one of its members.
    pub fn recursive_difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter(|(pe, _)| !other.members.contains(pe))
            .filter_map(|(pe, c)| {
                let d = match other.children.get(pe) {
                    Some(oc) => c.recursive_difference(oc),
                    None => c.clone(),
                };
                (!d.is_empty()).then(|| (pe.clone(), d))
            })
            .collect();
        Set { members, children }
    }

    /// Every path, members of a level before the paths below it (upstream's iteration order).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    pub(crate) fn children_iter(&self) -> impl Iterator<Item = (&PathElement, &Set)> {
        self.children.iter()
    }

    pub(crate) fn members_iter(&self) -> impl Iterator<Item = &PathElement> {
        self.members.iter()
    }

    pub(crate) fn from_parts(
        members: BTreeSet<PathElement>,
        children: BTreeMap<PathElement, Set>,
    ) -> Set {
        let children = children
            .into_iter()
            .filter(|(_, c)| !c.is_empty())
            .collect();
        Set { members, children }
    }

    /// The FieldsV1 form, keys in upstream's order: `.` first, then elements in path order.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if include_self && !self.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            let v = match self.children.get(pe) {
                Some(c) => c.emit(self.members.contains(pe)),
                None => Map::new(),
            };
            m.insert(pe.serialize(), Value::Object(v));
        }
        m
    }

    /// Reads the FieldsV1 form.
    ///
    /// # Errors
    /// A value that is not an object, or a key that is not a path element.
    pub fn from_fields_v1(v: &Value) -> Result<Set, String> {
        let (set, _) = read(v)?;
        Ok(set.unwrap_or_default())
    }
}

/// Returns the children (None if there are none) and whether the node itself is a member.
fn read(v: &Value) -> Result<(Option<Set>, bool), String> {
    let Value::Object(m) = v else {
        return Err(format!("expected an object in fieldsV1, got {v}"));
    };
    let mut is_member = false;
    let mut children: Option<Set> = None;
    for (k, child) in m {
        if k == "." {
            is_member = true;
            continue;
        }
        let Some(pe) = PathElement::deserialize(k)? else {
            continue;
        };
        let (grand, child_member) = read(child)?;
        let set = children.get_or_insert_with(Set::default);
        if child_member {
            set.members.insert(pe.clone());
        }
        if let Some(g) = grand.filter(|g| !g.is_empty()) {
            set.children.insert(pe, g);
        }
    }
    if children.is_none() {
        is_member = true;
    }
    Ok((children, is_member))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> PathElement {
        PathElement::Field(s.into())
    }

    fn set(paths: &[&[PathElement]]) -> Set {
        let mut s = Set::new();
        for p in paths {
            s.insert(p);
        }
        s
    }

    #[test]
    fn fields_v1_round_trip_and_order() {
        let raw = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}
            }
        });
        let s = Set::from_fields_v1(&raw).unwrap();
        assert!(s.has(&[f("metadata"), f("labels")]));
        assert!(s.has(&[f("metadata"), f("labels"), f("app")]));
        assert!(!s.has(&[f("metadata")]));
        assert!(s.has(&[f("spec"), f("replicas")]));
        assert_eq!(
            serde_json::to_string(&s.to_fields_v1()).unwrap(),
            serde_json::to_string(&raw).unwrap()
        );
        // Out-of-order input is written back in canonical order, `.` first.
        let messy = json!({"f:b": {}, "f:a": {"f:x": {}, ".": {}}});
        let s = Set::from_fields_v1(&messy).unwrap();
        assert_eq!(
            serde_json::to_string(&s.to_fields_v1()).unwrap(),
            r#"{"f:a":{".":{},"f:x":{}},"f:b":{}}"#
        );
        assert!(Set::from_fields_v1(&json!({"zz": {}})).is_err());
        assert!(Set::from_fields_v1(&json!({"f:a": 1})).is_err());
    }

    #[test]
    fn algebra() {
        let a = set(&[&[f("a")], &[f("b"), f("c")], &[f("b"), f("d")]]);
        let b = set(&[&[f("b"), f("c")], &[f("e")]]);
        assert_eq!(
            a.union(&b),
            set(&[&[f("a")], &[f("b"), f("c")], &[f("b"), f("d")], &[f("e")]])
        );
        assert_eq!(a.intersection(&b), set(&[&[f("b"), f("c")]]));
        assert_eq!(a.difference(&b), set(&[&[f("a")], &[f("b"), f("d")]]));
        assert!(a.difference(&a).is_empty());
        let prefix = set(&[&[f("b")]]);
        assert_eq!(a.difference(&prefix), a);
        assert_eq!(a.recursive_difference(&prefix), set(&[&[f("a")]]));
        assert_eq!(
            a.paths(),
            vec![vec![f("a")], vec![f("b"), f("c")], vec![f("b"), f("d")]]
        );
    }
}
