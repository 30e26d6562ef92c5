//! The three PATCH content types: RFC 6902 JSON patch (`application/json-patch+json`),
//! RFC 7386 merge patch (`application/merge-patch+json`) and Kubernetes strategic merge patch
//! (`application/strategic-merge-patch+json`).
//!
//! All functions take the current object and the patch by reference and return a new value;
//! on error nothing was changed (the caller still holds the untouched original).

use serde_json::{Map, Value};

use crate::gofmt;
use crate::schema::{FieldInfo, FieldKind, PatchStrategy, Schema};

/// Why a patch could not be applied. `Display` is upstream's message.
///
/// Upstream maps these to HTTP statuses as follows, which the apiserver should copy:
/// [`Error::JsonPatchDecode`] and the SMP format errors (`BadJsonDoc`, `BadPatchFormat*`) are
/// 400; [`Error::JsonPatchApply`], [`Error::NoListOfLists`] are 422; the remaining strategic
/// merge errors are 500 upstream (they surface as "Internal error occurred").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The JSON patch document is not a list of operations.
    #[error("{0}")]
    JsonPatchDecode(String),
    /// A JSON patch operation failed (missing path, failed test, bad index, ...).
    #[error("{0}")]
    JsonPatchApply(String),
    /// The object or the strategic patch is not a JSON object.
    #[error("invalid JSON document")]
    BadJsonDoc,
    /// A list contained lists.
    #[error("lists of lists are not supported")]
    NoListOfLists,
    /// `$deleteFromPrimitiveList/<field>` was malformed.
    #[error("invalid patch format of primitive list")]
    BadPatchFormatForPrimitiveList,
    /// `$retainKeys` was not a list, or the patch set a field it does not list.
    #[error("invalid patch format of retainKeys")]
    BadPatchFormatForRetainKeys,
    /// `$setElementOrder/<field>` was malformed or disagrees with the patch list.
    #[error("invalid patch format of setElementOrder list")]
    BadPatchFormatForSetElementOrderList,
    /// A merging-list item lacked its merge key.
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey {
        /// The item, Go `%v` style.
        map: String,
        /// The merge key.
        key: String,
    },
    /// A value had the wrong JSON type for its position.
    #[error("expected a {expected}, but received a {actual}")]
    BadArgType {
        /// Go type name expected.
        expected: &'static str,
        /// Go type name received.
        actual: &'static str,
    },
    /// `$patch` held something other than `replace`/`delete` (maps) or `delete`/`replace`
    /// (list items).
    #[error("unknown patch type: {patch_type} in map: {map}")]
    BadPatchType {
        /// The directive value, Go `%s` style.
        patch_type: String,
        /// The map holding it, Go `%v` style.
        map: String,
    },
    /// Other strategic merge patch failures, with upstream's text.
    #[error("{0}")]
    Strategic(String),
}

// ------------------------------------------------------------------------------------------
// RFC 6902
// ------------------------------------------------------------------------------------------

fn unescape_token(t: &str) -> String {
    t.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into unescaped tokens; `""` is the whole document.
fn pointer_tokens(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').map(unescape_token).collect())
}

/// JSON equality with numbers compared by value (1 == 1.0), as Go's decoded float64s compare.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Array index per evanphx/json-patch: decimal, negative counts from the end.
fn array_index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    let i: i64 = token.parse().ok()?;
    let len_i = len as i64;
    let i = if i < 0 { i + len_i } else { i };
    if i < 0 || i > len_i || (i == len_i && !allow_end) {
        return None;
    }
    Some(i as usize)
}

fn get_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let len = a.len();
                a.get_mut(array_index(t, len, false)?)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn get<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in tokens {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(array_index(t, a.len(), false)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn apply_err(msg: String) -> Error {
    Error::JsonPatchApply(msg)
}

fn op_add(doc: &mut Value, path: &str, value: Value) -> Result<(), Error> {
    let missing = || {
        apply_err(format!(
            "add operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    let tokens = pointer_tokens(path).ok_or_else(missing)?;
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match get_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                array_index(last, a.len(), true).ok_or_else(|| {
                    apply_err(format!(
                        "error in add for path: '{path}': Unable to access invalid index: {last}: invalid index referenced"
                    ))
                })?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn op_remove(doc: &mut Value, path: &str, verb: &str) -> Result<Value, Error> {
    let missing = || {
        apply_err(format!(
            "{verb} operation does not apply: doc is missing path: \"{path}\": missing value"
        ))
    };
    let tokens = pointer_tokens(path).ok_or_else(missing)?;
    let Some((last, parent)) = tokens.split_last() else {
        return Ok(std::mem::replace(doc, Value::Null));
    };
    match get_mut(doc, parent).ok_or_else(missing)? {
        Value::Object(m) => m.shift_remove(last).ok_or_else(|| {
            apply_err(format!(
                "error in {verb} for path: '{path}': Unable to remove nonexistent key: {last}: missing value"
            ))
        }),
        Value::Array(a) => {
            let idx = array_index(last, a.len(), false).ok_or_else(|| {
                apply_err(format!(
                    "error in {verb} for path: '{path}': Unable to remove invalid index: {last}: invalid index referenced"
                ))
            })?;
            Ok(a.remove(idx))
        }
        _ => Err(missing()),
    }
}

fn str_field<'a>(op: &'a Map<String, Value>, name: &str, kind: &str) -> Result<&'a str, Error> {
    match op.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(apply_err(format!(
            "{kind} operation failed to decode {name}: missing value"
        ))),
    }
}

fn apply_op(doc: &mut Value, op: &Value) -> Result<(), Error> {
    let Some(op) = op.as_object() else {
        return Err(Error::JsonPatchDecode(
            "json: cannot unmarshal into Go value of type jsonpatch.Operation".into(),
        ));
    };
    let kind = match op.get("op") {
        Some(Value::String(s)) => s.as_str(),
        _ => "unknown",
    };
    match kind {
        "add" => {
            let path = str_field(op, "path", kind)?;
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            op_add(doc, path, value)
        }
        "remove" => {
            let path = str_field(op, "path", kind)?;
            op_remove(doc, path, "remove").map(|_| ())
        }
        "replace" => {
            let path = str_field(op, "path", kind)?;
            let value = op.get("value").cloned().unwrap_or(Value::Null);
            let tokens = pointer_tokens(path).ok_or_else(|| {
                apply_err(format!(
                    "replace operation does not apply: doc is missing path: {path}: missing value"
                ))
            })?;
            match get_mut(doc, &tokens) {
                Some(slot) => {
                    *slot = value;
                    Ok(())
                }
                None => {
                    // Distinguish a missing parent from a missing key, as upstream does.
                    let parent_exists = tokens
                        .split_last()
                        .is_some_and(|(_, p)| get(doc, p).is_some_and(Value::is_object));
                    Err(apply_err(if parent_exists {
                        format!("replace operation does not apply: doc is missing key: {path}: missing value")
                    } else {
                        format!("replace operation does not apply: doc is missing path: {path}: missing value")
                    }))
                }
            }
        }
        "move" | "copy" => {
            let from = str_field(op, "from", kind)?;
            let path = str_field(op, "path", kind)?;
            let value = if kind == "move" {
                op_remove(doc, from, "move").map_err(|_| {
                    apply_err(format!(
                        "move operation does not apply: doc is missing from path: {from}: missing value"
                    ))
                })?
            } else {
                pointer_tokens(from)
                    .and_then(|t| get(doc, &t).cloned())
                    .ok_or_else(|| {
                        apply_err(format!(
                            "copy operation does not apply: doc is missing from path: {from}: missing value"
                        ))
                    })?
            };
            op_add(doc, path, value).map_err(|_| {
                apply_err(format!(
                    "{kind} operation does not apply: doc is missing destination path: {path}: missing value"
                ))
            })
        }
        "test" => {
            let path = str_field(op, "path", kind)?;
            let want = op.get("value").unwrap_or(&Value::Null);
            let got = pointer_tokens(path).and_then(|t| get(doc, &t));
            match got {
                Some(got) if json_equal(got, want) => Ok(()),
                None if want.is_null() => Ok(()),
                _ => Err(apply_err(format!(
                    "testing value {path} failed: test failed"
                ))),
            }
        }
        other => Err(apply_err(format!("Unexpected kind: {other}"))),
    }
}

/// Applies an RFC 6902 JSON patch (as evanphx/json-patch v4, which the apiserver uses:
/// negative array indices count from the end; `test` against a missing path passes only for
/// `null`).
///
/// # Errors
/// [`Error::JsonPatchDecode`] when `patch` is not a list of operations (HTTP 400),
/// [`Error::JsonPatchApply`] when an operation fails (HTTP 422).
///
/// # Guarantees
/// Atomic: on error `doc` is untouched (the operations run on a copy).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, Error> {
    let ops = match patch {
        Value::Array(ops) => ops,
        other => {
            return Err(Error::JsonPatchDecode(format!(
                "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
                json_kind(other)
            )))
        }
    };
    let mut out = doc.clone();
    for op in ops {
        apply_op(&mut out, op)?;
    }
    Ok(out)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

// ------------------------------------------------------------------------------------------
// RFC 7386
// ------------------------------------------------------------------------------------------

/// Applies an RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything
/// else (lists included) replaces.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match doc {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.shift_remove(k);
        } else {
            let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

// ------------------------------------------------------------------------------------------
// Strategic merge patch
// ------------------------------------------------------------------------------------------

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_PREFIX: &str = "$deleteFromPrimitiveList";
const ORDER_PREFIX: &str = "$setElementOrder";

/// Where in the type tree a map sits.
#[derive(Clone, Copy)]
enum Ctx<'a> {
    /// A struct with this OpenAPI name.
    Struct(&'a str),
    /// A map whose values are of this struct type (or scalars).
    MapOf(Option<&'a str>),
    /// Nothing known: JSON merge patch semantics.
    Unknown,
}

struct Smp<'a> {
    schema: &'a dyn Schema,
}

/// Strategy facts for one field.
struct FieldMeta {
    info: Option<FieldInfo>,
}

impl FieldMeta {
    fn strategy_merge(&self) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.has_strategy(PatchStrategy::Merge))
    }
    fn strategy_replace(&self) -> bool {
        self.info
            .as_ref()
            .is_some_and(|i| i.has_strategy(PatchStrategy::Replace))
    }
    fn merge_key(&self) -> Option<&str> {
        self.info.as_ref()?.patch_merge_key.as_deref()
    }
    /// Context for the field's value (object) or its items (list).
    fn child_ctx(&self) -> Ctx<'_> {
        match &self.info {
            Some(i) => match i.kind {
                Some(FieldKind::Map) => Ctx::MapOf(i.elem_type.as_deref()),
                _ => match i.elem_type.as_deref() {
                    Some(t) => Ctx::Struct(t),
                    None => Ctx::Unknown,
                },
            },
            None => Ctx::Unknown,
        }
    }
}

fn no_merge_key(m: &Map<String, Value>, key: &str) -> Error {
    Error::NoMergeKey {
        map: gofmt::v(&Value::Object(m.clone())),
        key: key.to_string(),
    }
}

fn bad_arg(expected: &'static str, actual: &Value) -> Error {
    Error::BadArgType {
        expected,
        actual: gofmt::type_name(actual),
    }
}

/// Removes patch directives and `null` members from a value copied wholesale from the patch,
/// standing in for the typed round trip upstream relies on to drop them.
fn sanitize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !is_directive_key(k) && !v.is_null())
                .map(|(k, v)| (k.clone(), sanitize(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(sanitize).collect()),
        other => other.clone(),
    }
}

fn is_directive_key(k: &str) -> bool {
    k == DIRECTIVE
        || k == RETAIN_KEYS
        || k.starts_with(DELETE_PREFIX)
        || k.starts_with(ORDER_PREFIX)
}

/// Which JSON "Go type" a value has, for upstream's same-type checks.
fn go_type(v: &Value) -> &'static str {
    gofmt::type_name(v)
}

/// Upstream `sliceElementType`: all items share one type and none is a list.
fn check_element_types(lists: &[&[Value]]) -> Result<Option<&'static str>, Error> {
    let mut prev: Option<&'static str> = None;
    for list in lists {
        for v in list.iter() {
            let t = go_type(v);
            match prev {
                None => {
                    if v.is_array() {
                        return Err(Error::NoListOfLists);
                    }
                    prev = Some(t);
                }
                Some(p) if p != t => {
                    let all: Vec<Value> = lists.iter().map(|l| Value::Array(l.to_vec())).collect();
                    return Err(Error::Strategic(format!(
                        "list element types are not identical: {}",
                        gofmt::v(&Value::Array(all))
                    )));
                }
                Some(_) => {}
            }
        }
    }
    Ok(prev)
}

fn extract_key<'k>(key: &'k str, prefix: &str, err: Error) -> Result<&'k str, Error> {
    match key.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest),
        _ => Err(err),
    }
}

/// Index of the first item in `order` with the same identity (merge-key value for maps,
/// the value itself for scalars).
fn index_of(order: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    let id = |v: &Value| -> Option<Value> {
        match key {
            Some(k) => v.as_object().and_then(|m| m.get(k).cloned()),
            None => Some(v.clone()),
        }
    };
    let want = id(item);
    order.iter().position(|v| id(v) == want)
}

fn validate_merge_keys(key: &str, lists: &[&[Value]]) -> Result<(), Error> {
    for list in lists {
        for item in list.iter() {
            let m = item
                .as_object()
                .ok_or_else(|| bad_arg("map[string]interface {}", item))?;
            if !m.contains_key(key) {
                return Err(no_merge_key(m, key));
            }
        }
    }
    Ok(())
}

/// Upstream `normalizeSliceOrder`: stable sort by position in `order`; `$patch: delete` items
/// go last.
fn normalize_slice_order(
    mut to_sort: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
    maps: bool,
) -> Result<Vec<Value>, Error> {
    let mut to_delete = Vec::new();
    if maps {
        if let Some(k) = key {
            validate_merge_keys(k, &[&to_sort, order])?;
        }
        let (keep, del): (Vec<Value>, Vec<Value>) = to_sort
            .into_iter()
            .partition(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"));
        to_sort = keep;
        to_delete = del;
    }
    to_sort.sort_by_key(|v| index_of(order, v, key).unwrap_or(usize::MAX));
    to_sort.extend(to_delete);
    Ok(to_sort)
}

/// Upstream `mergeSortedSlice`: interleaves server-only items (`left`) into patch items
/// (`right`) keeping both relative orders, placing by position in the live list.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(l.next()),
            (None, Some(_)) => out.extend(r.next()),
            (Some(a), Some(b)) => {
                let less = match (
                    index_of(server_order, a, key),
                    index_of(server_order, b, key),
                ) {
                    (Some(i), Some(j)) => i < j,
                    _ => false,
                };
                if less {
                    out.extend(l.next());
                } else {
                    out.extend(r.next());
                }
            }
        }
    }
    out
}

/// Upstream `normalizeElementOrder`.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
    maps: bool,
) -> Result<Vec<Value>, Error> {
    let patch_items = normalize_slice_order(patch_items, patch_order, key, maps)?;
    let server_only = normalize_slice_order(server_only, server_order, key, maps)?;
    Ok(merge_sorted(server_only, patch_items, server_order, key))
}

/// Splits `merged` into items present in `by` and the rest.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let mut in_patch = Vec::new();
    let mut server_only = Vec::new();
    for v in merged {
        if let Some(k) = key {
            let m = v
                .as_object()
                .ok_or_else(|| bad_arg("map[string]interface {}", &v))?;
            if !m.contains_key(k) {
                return Err(no_merge_key(m, k));
            }
        }
        if index_of(by, &v, key).is_some() {
            in_patch.push(v);
        } else {
            server_only.push(v);
        }
    }
    Ok((in_patch, server_only))
}

fn find_by_key(list: &[Value], key: &str, value: &Value) -> Result<Option<usize>, Error> {
    for (i, v) in list.iter().enumerate() {
        let m = v
            .as_object()
            .ok_or_else(|| Error::Strategic(format!("value for key {i} is not a map.")))?;
        if m.get(key) == Some(value) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

impl Smp<'_> {
    fn lookup(&self, ctx: Ctx<'_>, key: &str) -> FieldMeta {
        let info = match ctx {
            Ctx::Struct(t) => self.schema.field(t, key),
            Ctx::MapOf(Some(t)) => Some(FieldInfo::object(t)),
            Ctx::MapOf(None) | Ctx::Unknown => None,
        };
        FieldMeta { info }
    }

    /// Upstream `mergeMap` with `MergeParallelList` and `IgnoreUnmatchedNulls` on.
    fn merge_map(
        &self,
        original: Map<String, Value>,
        patch: &Map<String, Value>,
        ctx: Ctx<'_>,
    ) -> Result<Map<String, Value>, Error> {
        if let Some(d) = patch.get(DIRECTIVE) {
            return match d.as_str() {
                Some("replace") => match sanitize(&Value::Object(patch.clone())) {
                    Value::Object(m) => Ok(m),
                    _ => Ok(Map::new()),
                },
                Some("delete") => Ok(Map::new()),
                _ => Err(Error::BadPatchType {
                    patch_type: gofmt::s(d),
                    map: gofmt::v(&Value::Object(patch.clone())),
                }),
            };
        }
        let mut original = original;
        let mut patch = patch.clone();
        self.apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_order(&mut original, &mut patch, ctx)?;

        for (k, pv) in &patch {
            let (key, is_delete_list) = if k.starts_with(DELETE_PREFIX) {
                (
                    extract_key(k, DELETE_PREFIX, Error::BadPatchFormatForPrimitiveList)?,
                    true,
                )
            } else {
                (k.as_str(), false)
            };
            if is_delete_list {
                // Deleting from a list the object lacks is a no-op (upstream would copy the
                // deletion list in as the field's value).
                let Some(orig) = original.get(key) else {
                    continue;
                };
                let (Value::Array(o), Value::Array(d)) = (orig, pv) else {
                    return Err(Error::BadPatchFormatForPrimitiveList);
                };
                let kept: Vec<Value> = o.iter().filter(|v| !d.contains(v)).cloned().collect();
                original.insert(key.to_string(), Value::Array(kept));
                continue;
            }
            if pv.is_null() {
                original.shift_remove(key);
                continue;
            }
            let Some(ov) = original.get(key) else {
                original.insert(key.to_string(), sanitize(pv));
                continue;
            };
            let merged = match (ov, pv) {
                (Value::Object(om), Value::Object(pm)) => {
                    let meta = self.lookup(ctx, key);
                    if meta.strategy_replace() {
                        sanitize(pv)
                    } else {
                        Value::Object(self.merge_map(om.clone(), pm, meta.child_ctx())?)
                    }
                }
                (Value::Array(ol), Value::Array(pl)) => {
                    let meta = self.lookup(ctx, key);
                    if meta.strategy_merge() {
                        Value::Array(self.merge_slice(ol.clone(), pl, &meta)?)
                    } else {
                        sanitize(pv)
                    }
                }
                _ => sanitize(pv),
            };
            original.insert(key.to_string(), merged);
        }
        Ok(original)
    }

    /// Upstream `applyRetainKeysDirective`.
    fn apply_retain_keys(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
    ) -> Result<(), Error> {
        let Some(retain) = patch.shift_remove(RETAIN_KEYS) else {
            return Ok(());
        };
        let Value::Array(list) = retain else {
            return Err(Error::BadPatchFormatForRetainKeys);
        };
        let listed = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
        for (k, v) in patch.iter() {
            if v.is_null() || k.starts_with(DELETE_PREFIX) || k.starts_with(ORDER_PREFIX) {
                continue;
            }
            if !listed(k) {
                return Err(Error::BadPatchFormatForRetainKeys);
            }
        }
        original.retain(|k, _| listed(k));
        Ok(())
    }

    /// Upstream `mergePatchIntoOriginal`: handles `$setElementOrder/<field>` together with the
    /// patch list of that field.
    fn merge_set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        ctx: Ctx<'_>,
    ) -> Result<(), Error> {
        let order_keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(ORDER_PREFIX))
            .cloned()
            .collect();
        for ok in order_keys {
            let Some(order_v) = patch.shift_remove(&ok) else {
                continue;
            };
            let Value::Array(order) = order_v else {
                return Err(bad_arg("[]interface {}", &order_v));
            };
            let field = extract_key(
                &ok,
                ORDER_PREFIX,
                Error::BadPatchFormatForSetElementOrderList,
            )?
            .to_string();
            let orig_list = match original.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_arg("[]interface {}", other)),
            };
            let patch_list = match patch.get(&field) {
                None => None,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => return Err(bad_arg("[]interface {}", other)),
            };
            let meta = self.lookup(ctx, &field);
            if meta.info.is_none() {
                // No metadata: upstream fails the lookup; we ignore the ordering hint and let
                // the field patch like a merge patch.
                continue;
            }
            let key = if meta.strategy_merge() {
                meta.merge_key()
            } else {
                None
            };
            validate_patch_with_order(patch_list.as_deref().unwrap_or(&[]), &order, key)?;
            let merged = match (&orig_list, &patch_list) {
                (Some(o), None) => o.clone(),
                (None, Some(p)) => p.iter().map(sanitize).collect(),
                (Some(o), Some(p)) => {
                    if meta.strategy_merge() {
                        self.merge_slice(o.clone(), p, &meta)?
                    } else {
                        p.iter().map(sanitize).collect()
                    }
                }
                (None, None) => continue,
            };
            let orig_slice = orig_list.clone().unwrap_or_default();
            let kind = check_element_types(&[&orig_slice, patch_list.as_deref().unwrap_or(&[])])?;
            let maps = kind == Some("map[string]interface {}");
            let (in_order, server_only) = partition(merged, &order, key)?;
            let both =
                normalize_element_order(in_order, server_only, &order, &orig_slice, key, maps)?;
            original.insert(field.clone(), Value::Array(both));
            patch.shift_remove(&field);
        }
        Ok(())
    }

    /// Upstream `mergeSlice` for a list with the `merge` strategy.
    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: &[Value],
        meta: &FieldMeta,
    ) -> Result<Vec<Value>, Error> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let kind = check_element_types(&[&original, patch])?;
        let maps = kind == Some("map[string]interface {}");
        if !maps {
            let mut merged: Vec<Value> = Vec::new();
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            let (in_patch, server_only) = partition(merged, patch, None)?;
            return normalize_element_order(in_patch, server_only, patch, &original, None, false);
        }
        let Some(key) = meta.merge_key() else {
            return Err(Error::Strategic(
                "cannot merge lists without merge key for type struct".into(),
            ));
        };
        // Special elements: `$patch: delete` / `replace` items.
        let mut original = original;
        let mut plain: Vec<Value> = Vec::new();
        let mut replace = false;
        for item in patch {
            let m = item
                .as_object()
                .ok_or_else(|| bad_arg("map[string]interface {}", item))?;
            match m.get(DIRECTIVE) {
                None => plain.push(item.clone()),
                Some(d) => match d.as_str() {
                    Some("delete") => {
                        let kv = m.get(key).ok_or_else(|| no_merge_key(m, key))?;
                        while let Some(i) = find_by_key(&original, key, kv)? {
                            original.remove(i);
                        }
                    }
                    Some("replace") => replace = true,
                    Some("merge") => {
                        return Err(Error::Strategic(
                            "merging lists cannot yet be specified in the patch".into(),
                        ))
                    }
                    _ => {
                        return Err(Error::BadPatchType {
                            patch_type: gofmt::s(d),
                            map: gofmt::v(item),
                        })
                    }
                },
            }
        }
        let (original, plain) = if replace {
            (plain.iter().map(sanitize).collect::<Vec<_>>(), Vec::new())
        } else {
            (original, plain)
        };
        let mut merged = original.clone();
        let child = meta.child_ctx();
        for item in &plain {
            let m = item
                .as_object()
                .ok_or_else(|| bad_arg("map[string]interface {}", item))?;
            let kv = m.get(key).ok_or_else(|| no_merge_key(m, key))?;
            match find_by_key(&merged, key, kv)? {
                Some(i) => {
                    let base = merged
                        .get(i)
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    let out = self.merge_map(base, m, child)?;
                    if let Some(slot) = merged.get_mut(i) {
                        *slot = Value::Object(out);
                    }
                }
                None => merged.push(sanitize(item)),
            }
        }
        let (in_patch, server_only) = partition(merged, &plain, Some(key))?;
        normalize_element_order(in_patch, server_only, &plain, &original, Some(key), true)
    }
}

/// Upstream `validatePatchWithSetOrderList`: patch items (minus deletions) must appear in
/// the `$setElementOrder` list in the same relative order.
fn validate_patch_with_order(
    patch: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> Result<(), Error> {
    if order.is_empty() || patch.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match key {
        Some(_) => patch
            .iter()
            .filter(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"))
            .collect(),
        None => patch.iter().collect(),
    };
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        let item = non_delete[pi];
        if item.as_object().is_some_and(|m| m.contains_key(DIRECTIVE)) {
            pi += 1;
            continue;
        }
        let equal = match key {
            None => item == &order[oi],
            Some(k) => {
                let a = item
                    .as_object()
                    .ok_or_else(|| bad_arg("map[string]interface {}", item))?;
                let b = order[oi]
                    .as_object()
                    .ok_or_else(|| bad_arg("map[string]interface {}", &order[oi]))?;
                let av = a.get(k).ok_or_else(|| no_merge_key(a, k))?;
                let bv = b.get(k).ok_or_else(|| no_merge_key(b, k))?;
                av == bv
            }
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() && oi >= order.len() {
        return Err(Error::Strategic(format!(
            "The order in patch list:\n{}\n doesn't match {ORDER_PREFIX} list:\n{}\n",
            gofmt::v(&Value::Array(patch.to_vec())),
            gofmt::v(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

/// Applies a strategic merge patch to `doc`, an object of OpenAPI type `type_name` (e.g.
/// `io.k8s.api.apps.v1.Deployment`), using `schema` for patch strategies and merge keys.
///
/// Semantics follow upstream `StrategicMergeMapPatch`: maps merge recursively and `null`
/// deletes; lists are replaced unless the field's strategy is `merge`, in which case lists of
/// scalars become a union (with `$deleteFromPrimitiveList/<field>` removing items) and lists of
/// objects merge by `patchMergeKey` (`$patch: delete` removes an item, `$patch: replace` in any
/// item replaces the list); `$patch: replace|delete` on a map replaces or empties it;
/// `$retainKeys` clears unlisted keys; `$setElementOrder/<field>` orders a list. Fields the
/// schema does not know behave like JSON merge patch.
///
/// # Errors
/// [`Error::BadJsonDoc`] if `doc` or `patch` is not an object; the other [`Error`] variants
/// with upstream's messages for malformed directives and merge lists.
///
/// # Guarantees
/// `doc` is not modified. Directives and `null` members never reach the result.
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    schema: &dyn Schema,
    type_name: &str,
) -> Result<Value, Error> {
    let (Value::Object(d), Value::Object(p)) = (doc, patch) else {
        return Err(Error::BadJsonDoc);
    };
    let smp = Smp { schema };
    smp.merge_map(d.clone(), p, Ctx::Struct(type_name))
        .map(Value::Object)
}

#[cfg(test)]
mod tests;
