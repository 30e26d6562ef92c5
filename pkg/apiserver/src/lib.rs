//! The Kubernetes-compatible API server.
//!
//! Objects are handled generically as JSON (so custom resources keep unknown fields) through one
//! REST storage ([`rest`]), with per-kind behaviour in a table of strategies ([`resources`],
//! [`kinds`]). Discovery, OpenAPI, tables and selectors derive from that same table. Only this
//! crate touches the datastore; every other component is a client of the HTTP API.
//!
//! Subresources with their own semantics ([`subresources`]: scale, binding, eviction, token,
//! CSR approval), the review APIs ([`review`]) and `/metrics` ([`metrics`]) are routes the
//! handler consults before its generic routing.

pub mod admission;
pub mod allocator;
pub mod apply;
pub mod discovery;
pub mod error;
pub mod kinds;
pub mod limitrange;
pub mod list;
pub mod metrics;
pub mod mirror;
pub mod negotiate;
pub mod nodeauthz;
pub mod noderestriction;
pub mod openapi;
pub mod priority;
pub mod protobuf;
pub mod proxy;
pub mod quota;
pub mod request;
pub mod resources;
pub mod rest;
pub mod review;
pub mod serviceaccount;
pub mod subresources;
pub mod table;
pub mod tolerationseconds;
pub mod validation;

pub use error::{Error, Result};
pub mod authn;
pub mod authz;
pub mod crd;
pub mod handler;
pub mod server;
