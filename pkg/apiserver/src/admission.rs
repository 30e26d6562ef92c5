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

    /// Admits an update of `old` to `obj`.
    async fn update(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> Result<()>;

    /// The write of `obj` that [`Admission::create`] or [`Admission::update`] admitted did
    /// not happen; `old` is the object it would have replaced. Release what `obj` holds and
    /// `old` does not.
    async fn aborted(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        obj: &Value,
        old: Option<&Value>,
    );

    /// `old` was replaced by `new` (`None`: deleted). Release what `old` held and `new`
    /// does not.
    async fn committed(
        &self,
        store: &Arc<dyn Datastore>,
        def: &ResourceDef,
        old: &Value,
        new: Option<&Value>,
    );
}
