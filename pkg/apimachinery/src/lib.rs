//! Pure Kubernetes API machinery for the distro apiserver: label and field selectors,
//! object-name and label validation, resource quantities, CRD structural schemas
//! ([`structural`]: validation, pruning, defaulting), and the three PATCH flavours
//! (RFC 6902 JSON patch, RFC 7386 merge patch, strategic merge patch).
//!
//! # Design
//!
//! Everything here is a pure function over [`serde_json::Value`]: no IO, no clocks, no
//! randomness, so the apiserver can call it from any thread and every behaviour is covered by
//! table-driven unit tests beside the code. Behaviour and error wording follow upstream
//! `k8s.io/apimachinery` (and `evanphx/json-patch` for RFC 6902) because real kubectl 1.27–1.33
//! shows these messages to users and some clients match on them.
//!
//! Strategic merge patch needs per-field metadata (patch strategy, merge key, list type). That
//! metadata reaches the patch code only through the [`schema::Schema`] trait, so the same code
//! serves a hand-written [`schema::StaticSchema`] in tests and the OpenAPI-backed schema the
//! apiserver builds from k8s-openapi plus [`schema::builtin_patch_metadata`].
//!
//! # Limits
//!
//! - Quantities are held as `i128` nano-units; upstream's arbitrary-precision path for values
//!   above ~1.7e29 saturates here (see [`quantity`]).
//! - Server-side apply (managed fields, conflicts) is not implemented yet.
//! - Strategic merge patch removes `$`-directives and `null` members from values it copies
//!   wholesale from the patch; upstream leaves them in and relies on the typed round trip to
//!   drop them, which this untyped store does not do.

pub mod apply;
pub mod fields;
pub mod labels;
pub mod patch;
pub mod quantity;
pub mod quota;
pub mod schema;
pub mod structural;
pub mod validation;

mod gofmt;
