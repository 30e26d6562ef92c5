//! Reading objects back through kubectl, as many test files do: a condition of an object's
//! status, a Node as JSON, waiting for a Node to be Ready.

use std::time::Duration;

use serde_json::Value;

use crate::{eventually, Server, LATEST};

/// The condition of type `type_` in `obj.status.conditions`, whatever its status.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Node `name` as JSON, or `None` while kubectl cannot get it.
pub fn node_json(s: &Server, name: &str) -> Option<Value> {
    let out = s.kubectl(LATEST, &["get", "node", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Node `name` as JSON if its Ready condition is True now.
pub fn node_ready(s: &Server, name: &str) -> Option<Value> {
    let node = node_json(s, name)?;
    (condition(&node, "Ready")?["status"] == "True").then_some(node)
}

/// Waits (up to 60 s) for node `name` to be Ready and returns it.
///
/// # Panics
/// When it is not Ready in time.
pub fn ready_node(s: &Server, name: &str) -> Value {
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(100),
        &format!("node {name} Ready"),
        || node_ready(s, name),
    )
}
