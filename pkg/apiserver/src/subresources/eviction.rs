//! `pods/<name>/eviction`: a delete that honours PodDisruptionBudgets, as upstream's
//! `EvictionREST` (what `kubectl drain` uses). A budget with no disruptions left answers 429
//! so clients retry; an allowed eviction spends one disruption (recorded in the budget's
//! `status.disruptedPods`) before the pod is deleted.

use distro_apimachinery::labels::Selector;
use distro_store::{prefix_end, RangeRequest};
use serde_json::{json, Value};

use super::{check_kind, created_status, Call, Subresources};
use crate::error::{Error, Result};
use crate::handler::Body;
use crate::rest::{now_rfc3339, DeleteOptions, WriteOptions};

const TOO_MANY: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// Pods whose eviction needs no budget: finished, never started, or already going.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending")
    ) || !pod["metadata"]["deletionTimestamp"].is_null()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// True if `pdb` (policy/v1: an empty selector selects every pod) selects `pod`.
fn selects(pdb: &Value, pod: &Value) -> bool {
    let Ok(sel) = Selector::from_label_selector(&pdb["spec"]["selector"]) else {
        return false;
    };
    let empty = serde_json::Map::new();
    sel.matches(pod["metadata"]["labels"].as_object().unwrap_or(&empty))
}

/// What the budget says about evicting `pod`.
enum Verdict {
    /// Evict without spending a disruption (unhealthy pod the policy lets go).
    Free,
    /// Spend one disruption: the budget as it must be written.
    Spend(Value),
}

/// Upstream's `checkAndDecrement` plus the unhealthy-pod eviction policy.
fn check(pdb: &Value, pod: &Value) -> Result<Verdict> {
    let name = pdb["metadata"]["name"].as_str().unwrap_or("");
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let st = &pdb["status"];
    if st["observedGeneration"].as_i64().unwrap_or(0)
        < pdb["metadata"]["generation"].as_i64().unwrap_or(0)
    {
        return Err(Error::DisruptionBudget {
            message: TOO_MANY.into(),
            cause: format!("The disruption budget {name} is still being processed by the server."),
            retry_after: 10,
        });
    }
    let (current, desired) = (
        st["currentHealthy"].as_i64().unwrap_or(0),
        st["desiredHealthy"].as_i64().unwrap_or(0),
    );
    if !is_ready(pod) {
        let policy = pdb["spec"]["unhealthyPodEvictionPolicy"]
            .as_str()
            .unwrap_or("IfHealthyBudget");
        if policy == "AlwaysAllow" || (current >= desired && desired > 0) {
            return Ok(Verdict::Free);
        }
    }
    let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(Error::Forbidden(format!(
            "poddisruptionbudgets.policy {name:?} is forbidden: pdb disruptions allowed is negative"
        )));
    }
    if st["disruptedPods"]
        .as_object()
        .is_some_and(|m| m.len() > 2000)
    {
        return Err(Error::Forbidden(format!(
            "poddisruptionbudgets.policy {name:?} is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
        )));
    }
    if allowed == 0 {
        return Err(Error::DisruptionBudget {
            message: TOO_MANY.into(),
            cause: format!(
                "The disruption budget {name} needs {desired} healthy pods and has {current} currently"
            ),
            retry_after: 0,
        });
    }
    let mut next = pdb.clone();
    next["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !next["status"]["disruptedPods"].is_object() {
        next["status"]["disruptedPods"] = json!({});
    }
    next["status"]["disruptedPods"][pod_name] = json!(now_rfc3339());
    Ok(Verdict::Spend(next))
}

/// POST of an Eviction (policy/v1, or v1beta1 from older clients).
pub(crate) async fn handle(s: &Subresources, call: &Call<'_>) -> Result<http::Response<Body>> {
    let body = call.body()?;
    check_kind(&body, &["Eviction"], &["policy/v1", "policy/v1beta1"])?;
    let name = call.name();
    if body["metadata"]["name"].as_str() != Some(name) {
        return Err(Error::BadRequest(
            "name in URL does not match name in Eviction object".into(),
        ));
    }
    let query = call.query();
    let delete_body = body.get("deleteOptions").filter(|v| v.is_object());
    let mut dopts = DeleteOptions::parse(delete_body, &query)?;
    let pods = &call.def;
    let pod = s.storage.get(pods, call.ns, name).await?;
    if dopts.precondition_uid.is_none() {
        dopts.precondition_uid = pod["metadata"]["uid"].as_str().map(String::from);
    }
    if !can_ignore_budget(&pod) {
        spend_budget(s, call, &pod, dopts.dry_run).await?;
    }
    if !dopts.dry_run {
        mark_disruption_target(s, call, name).await?;
    }
    s.storage.delete(pods, call.ns, name, &dopts).await?;
    Ok(created_status())
}

/// Sets the pod's `DisruptionTarget` condition before it is deleted, as upstream's
/// `addConditionAndDeletePod`, so the pod's controller (and `kubectl describe`) can tell an
/// eviction from a crash. The transition time moves only when the condition changes.
async fn mark_disruption_target(s: &Subresources, call: &Call<'_>, name: &str) -> Result<()> {
    let pods = &call.def;
    let wanted = json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
    });
    s.storage
        .guaranteed_update(
            pods,
            call.ns,
            name,
            Some("status"),
            &WriteOptions::default(),
            |current| {
                let current =
                    current.ok_or_else(|| Error::not_found(pods.group_resource(), name))?;
                let mut next = current.clone();
                if let Some(m) = next["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                Ok((with_condition(next, &wanted), Vec::new()))
            },
        )
        .await?;
    Ok(())
}

/// `pod` with condition `wanted` set (upstream's `UpdatePodCondition`).
fn with_condition(mut pod: Value, wanted: &Value) -> Value {
    let mut conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let existing = conditions.iter().position(|c| c["type"] == wanted["type"]);
    let mut cond = wanted.clone();
    match existing {
        Some(i) if conditions[i]["status"] == wanted["status"] => {
            cond["lastTransitionTime"] = conditions[i]["lastTransitionTime"].clone();
            if cond["lastTransitionTime"].is_null() {
                cond["lastTransitionTime"] = json!(now_rfc3339());
            }
            conditions[i] = cond;
        }
        Some(i) => {
            cond["lastTransitionTime"] = json!(now_rfc3339());
            conditions[i] = cond;
        }
        None => {
            cond["lastTransitionTime"] = json!(now_rfc3339());
            conditions.push(cond);
        }
    }
    pod["status"]["conditions"] = json!(conditions);
    pod
}

/// Finds the one budget selecting `pod` and spends a disruption of it (retrying races).
async fn spend_budget(s: &Subresources, call: &Call<'_>, pod: &Value, dry_run: bool) -> Result<()> {
    let Some(def) = s.registry.get("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    let prefix = def.namespace_prefix(call.ns);
    let resp = s
        .storage
        .range(RangeRequest {
            start: prefix.clone(),
            end: prefix_end(&prefix),
            limit: 0,
            revision: None,
        })
        .await?;
    let mut matching = Vec::new();
    for kv in &resp.kvs {
        let pdb = s.storage.decode(&def, kv)?;
        if selects(&pdb, pod) {
            matching.push(pdb);
        }
    }
    let pdb = match matching.len() {
        0 => return Ok(()),
        1 => &matching[0],
        _ => {
            return Err(Error::Internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            ))
        }
    };
    let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
    let opts = WriteOptions {
        dry_run,
        ..WriteOptions::default()
    };
    s.storage
        .guaranteed_update(&def, call.ns, &pdb_name, Some("status"), &opts, |current| {
            let current =
                current.ok_or_else(|| Error::not_found(def.group_resource(), pdb_name.as_str()))?;
            match check(current, pod)? {
                Verdict::Free => {
                    let mut same = current.clone();
                    if let Some(m) = same["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    Ok((same, Vec::new()))
                }
                Verdict::Spend(mut next) => {
                    // No resourceVersion: the update compares-and-swaps on the budget read
                    // here and, when a concurrent eviction (or the disruption controller)
                    // wrote first, reads it again and re-checks, as upstream's retry on
                    // conflict, so parallel evictions of a drain never overspend.
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    Ok((next, Vec::new()))
                }
            }
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(allowed: i64) -> Value {
        json!({"metadata": {"name": "b", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
            "status": {"observedGeneration": 1, "disruptionsAllowed": allowed, "desiredHealthy": 2, "currentHealthy": 2}})
    }

    #[test]
    fn budgets_decide_like_upstream() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(selects(&pdb(0), &pod));
        assert!(!selects(&json!({"spec": {}}), &pod));
        assert!(selects(&json!({"spec": {"selector": {}}}), &pod));
        let e = match check(&pdb(0), &pod) {
            Err(e) => e,
            Ok(_) => panic!("a budget with no disruptions left must refuse"),
        };
        let st = e.status();
        assert_eq!(st["code"], 429);
        assert_eq!(st["reason"], "TooManyRequests");
        assert_eq!(st["message"], TOO_MANY);
        assert_eq!(st["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            st["details"]["causes"][0]["message"],
            "The disruption budget b needs 2 healthy pods and has 2 currently"
        );
        match check(&pdb(1), &pod) {
            Ok(Verdict::Spend(next)) => {
                assert_eq!(next["status"]["disruptionsAllowed"], 0);
                assert!(next["status"]["disruptedPods"]["p"].is_string());
            }
            _ => panic!("one disruption left must be spent"),
        }
        let mut stale = pdb(1);
        stale["metadata"]["generation"] = json!(2);
        assert!(check(&stale, &pod).is_err());
        let unready = json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "status": {"phase": "Running"}});
        let mut healthy = pdb(0);
        healthy["status"]["desiredHealthy"] = json!(1);
        assert!(matches!(check(&healthy, &unready), Ok(Verdict::Free)));
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
    }

    #[test]
    fn disruption_target_is_added_once() {
        let wanted = json!({"type": "DisruptionTarget", "status": "True",
            "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"});
        let pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let once = with_condition(pod, &wanted);
        let conds = once["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[1]["reason"], "EvictionByEvictionAPI");
        assert!(conds[1]["lastTransitionTime"].is_string());
        let mut stamped = once.clone();
        stamped["status"]["conditions"][1]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        let twice = with_condition(stamped, &wanted);
        assert_eq!(twice["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(
            twice["status"]["conditions"][1]["lastTransitionTime"], "2020-01-01T00:00:00Z",
            "an unchanged condition keeps its transition time"
        );
    }
}
