//! Objects control-plane tests create in place of the components that would: a Node that
//! reports Ready, as a kubelet would, for scheduler and controller tests without an agent.

use crate::{Server, LATEST};

/// Creates Node `name` labelled `kubernetes.io/hostname: <name>` plus `labels` (more entries
/// of a YAML flow map, e.g. `", role: worker"`), with `taints` (items of a YAML flow list),
/// and reports it Ready with `cpu` and `memory` capacity and room for 110 pods. The heartbeat
/// is a fixed past time: the node lifecycle controller times nodes by when it sees a change.
pub fn add_ready_node(s: &Server, name: &str, labels: &str, taints: &str, cpu: &str, memory: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{kubernetes.io/hostname: {name}{labels}}}\nspec:\n  taints: [{taints}]\n"
    );
    s.ok_stdin(LATEST, &["create", "-f", "-"], Some(&manifest));
    let res = format!(r#"{{"cpu": "{cpu}", "memory": "{memory}", "pods": "110"}}"#);
    let status = format!(
        r#"{{"status": {{"capacity": {res}, "allocatable": {res}, "conditions": [{{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test node", "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}}]}}}}"#
    );
    s.ok(
        LATEST,
        &[
            "patch",
            "node",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
    );
}
