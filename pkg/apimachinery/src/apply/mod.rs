//! Server-side apply and managedFields, with structured-merge-diff's semantics.
//!
//! # Design
//!
//! A [`Set`] is the tree of paths a manager owns, in the FieldsV1 wire format (`f:name`,
//! `k:{"name":"web"}` for associative-list items, `v:<json>` for set items, `.` for the node
//! itself). Which parts of an object are granular comes from the [`crate::schema::Schema`]:
//! structs and maps by key, lists by `x-kubernetes-list-type`/`-list-map-keys` or, without
//! one, by their strategic-merge tags; atomic types and untagged lists are owned whole; values
//! of unknown type are maps (granular) or atomic.
//!
//! [`Context::update`] records any write: the writer takes the fields whose values it changed
//! (from whoever owned them) and everyone loses removed fields. [`Context::apply`] merges an
//! applied configuration into the live object, removes what the same applier applied before
//! and no longer does (unless someone else owns it), and reports a [`Conflict`] for each field
//! it would change that another manager owns, unless forced.
//!
//! # Limits
//!
//! - One version per resource: entries recorded at another apiVersion are used as they are,
//!   without conversion.
//! - On create, upstream compares against the zero-valued Go struct, whose non-pointer struct
//!   fields are present; without Go types, every struct counts as present and lists as null,
//!   so `.` markers of optional structs (e.g. `rollingUpdate`) on create entries can differ.
//! - Associative-list keys missing from an item default only for `protocol` (`TCP`), the one
//!   defaulted key of the built-in types.

mod managers;
mod path;
mod set;
mod typed;

pub use managers::{
    base_managed_fields, Applied, Context, Entry, ManagedFields, Operation, Reset, LAST_APPLIED,
};
pub use path::{path_string, Path, PathElement};
pub use set::Set;

/// One field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The owner's identifier (for grouping and ordering).
    pub manager_key: String,
    /// The owner as upstream prints it: `"name"` or `"name" using apps/v1`.
    pub manager: String,
    /// The field.
    pub path: Path,
}

/// The conflicts of one apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflicts(pub Vec<Conflict>);

/// Why an apply failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (409 upstream).
    #[error("{}", .0.message())]
    Conflicts(Conflicts),
    /// The configuration cannot be typed (duplicate or key-less list items).
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests;
