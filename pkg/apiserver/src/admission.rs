//! Admission steps that need the datastore (allocators, quotas): the generic storage runs them
//! after validation and before the write, and tells them when a write they admitted failed or
//! an object is gone, so what they reserved is given back.
//!
//! Per-kind logic that needs no shared state belongs in [`crate::resources::Strategy`] instead.

use std::sync::Arc;

use serde_json::Value;

use distro_store::Datastore;

use crate::error::Result;
use crate::resources::ResourceDef;

/// One admission step. Implementations ignore kinds they don't handle.
#[async_trait::async_trait]
pub trait Admission: Send + Sync {
    /// Admits a new object, possibly changing it (e.g. assigning an address). With `dry_run`
    /// nothing may be reserved.
    async fn create(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        dry_run: bool,
    ) -> Result<()>;

    /// Admits an update of `old` to `obj`. By default updates pass unchanged (steps that
    /// default or check on create only, as upstream's).
    async fn update(
        &self,
        _store: &Arc<dyn Datastore>,
        _def: &ResourceDef,
        _obj: &mut Value,
        _old: &Value,
        _dry_run: bool,
    ) -> Result<()> {
        Ok(())
    }

    /// The write of `obj` that [`Admission::create`] or [`Admission::update`] admitted did
    /// not happen; `old` is the object it would have replaced. Release what `obj` holds and
    /// `old` does not. By default nothing is held.
    async fn aborted(
        &self,
        _store: &Arc<dyn Datastore>,
        _def: &ResourceDef,
        _obj: &Value,
        _old: Option<&Value>,
    ) {
    }

    /// `old` was replaced by `new` (`None`: deleted). Release what `old` held and `new`
    /// does not. By default nothing is held.
    async fn committed(
        &self,
        _store: &Arc<dyn Datastore>,
        _def: &ResourceDef,
        _old: &Value,
        _new: Option<&Value>,
    ) {
    }
}
