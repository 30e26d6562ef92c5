//! The deployment controller's arithmetic, as upstream's `deployment/util`, `rolling.go`,
//! `sync.go` and `progress.go`: pure functions of a Deployment and its ReplicaSets, so they
//! test without a cluster. ReplicaSets are passed as one slice with the new one (if any) at
//! an index; sizes are `spec.replicas`, availability is `status.availableReplicas`.

use std::cmp::Reverse;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{DESIRED_REPLICAS, HASH_LABEL, MAX_REPLICAS, REVISION};

/// The alphabet of upstream's `rand.SafeEncodeString`: no vowels (no words), no look-alikes.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a template: FNV-32a over its canonical JSON (plus the
/// collision count, little-endian, when set), rendered in decimal through the safe alphabet,
/// as upstream renders its hash. Upstream hashes Go's `%#v` dump of the struct, which has no
/// Rust equivalent, so the values differ from upstream's but are stable across restarts.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&canonical(template)).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&(c as u32).to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// FNV-1a, 32 bits.
pub fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Upstream's `SafeEncodeString`: each byte picks a letter of [`SAFE_ALPHABET`].
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// A template as JSON with nulls, empty maps and empty lists dropped, so that equal
/// templates (in the sense of upstream's semantic equality) compare and hash alike.
fn canonical(template: &PodTemplateSpec) -> Value {
    fn prune(v: Value) -> Option<Value> {
        match v {
            Value::Null => None,
            Value::Object(m) => {
                let m: serde_json::Map<String, Value> = m
                    .into_iter()
                    .filter_map(|(k, v)| prune(v).map(|v| (k, v)))
                    .collect();
                (!m.is_empty()).then_some(Value::Object(m))
            }
            Value::Array(a) => (!a.is_empty()).then(|| {
                Value::Array(
                    a.into_iter()
                        .map(|v| prune(v).unwrap_or(Value::Null))
                        .collect(),
                )
            }),
            other => Some(other),
        }
    }
    prune(serde_json::to_value(template).unwrap_or(Value::Null)).unwrap_or(Value::Null)
}

/// Whether two templates are equal once the `pod-template-hash` label is ignored: how the
/// new ReplicaSet is recognised, including one `kubectl rollout undo` points back to.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: Option<&PodTemplateSpec>) -> bool {
    let Some(b) = b else { return false };
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(HASH_LABEL);
        }
        canonical(&t)
    };
    strip(a) == strip(b)
}

/// An empty selector selects every pod: upstream refuses to act on such a Deployment.
pub fn selects_everything(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// The controller owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// `spec.replicas` of a Deployment (default 1).
pub fn spec_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (default 1, as the apiserver defaults it).
pub fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// The revision annotation of a ReplicaSet (0 when missing or unparsable, as upstream's
/// `MaxRevision` skips those).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// An integer annotation of a ReplicaSet.
pub fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse().ok())
}

/// Sets the desired/max replica annotations; returns whether they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if ann.get(k) != Some(&v) {
            ann.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// Appends `old` to a comma-separated revision history, dropping the oldest entries to stay
/// within `limit` characters; `None` if even that cannot fit.
pub fn append_history(history: &str, old: &str, limit: usize) -> Option<String> {
    if history.is_empty() {
        return Some(old.to_string());
    }
    let parts: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > limit && start < parts.len() {
        total -= parts[start].len() + 1;
        start += 1;
    }
    (total <= limit).then(|| {
        let mut kept = parts[start..].to_vec();
        kept.push(old);
        kept.join(",")
    })
}

/// Oldest first, ties by name (upstream's `ReplicaSetsByCreationTimestamp`).
pub fn sort_by_creation(rss: &mut [ReplicaSet]) {
    rss.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            &a.metadata.name,
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                &b.metadata.name,
            ))
    });
}

fn created(rs: &ReplicaSet) -> (Option<Timestamp>, Option<&String>) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.metadata.name.as_ref(),
    )
}

/// Whether the Deployment rolls out with the RollingUpdate strategy (the default).
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// An int-or-percent against a total: percentages round up or down (upstream's
/// `GetScaledValueFromIntOrPercent`).
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> i32 {
    match v {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.strip_suffix('%') {
            Some(p) => {
                let p: i64 = p.trim().parse().unwrap_or(0);
                let x = p * i64::from(total);
                let r = if round_up {
                    (x + 99).div_euclid(100)
                } else {
                    x.div_euclid(100)
                };
                r as i32
            }
            None => s.trim().parse().unwrap_or(0),
        },
    }
}

/// (maxSurge, maxUnavailable) in pods; never both zero, or nothing could move.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = spec_replicas(d);
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let quarter = IntOrString::String("25%".into());
    let surge = scaled(
        ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&quarter),
        desired,
        true,
    );
    let unavailable = scaled(
        ru.and_then(|r| r.max_unavailable.as_ref())
            .unwrap_or(&quarter),
        desired,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// maxSurge in pods (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) {
        fenceposts(d).0
    } else {
        0
    }
}

/// maxUnavailable in pods, at most `spec.replicas` (0 for Recreate or no replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let want = spec_replicas(d);
    if !is_rolling(d) || want == 0 {
        return 0;
    }
    fenceposts(d).1.min(want)
}

/// The size the new ReplicaSet may grow to now (upstream's `NewRSNewReplicas`): for
/// RollingUpdate, as far as maxSurge allows over all ReplicaSets' sizes; for Recreate, all.
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new: &ReplicaSet) -> i32 {
    let want = spec_replicas(d);
    if !is_rolling(d) {
        return want;
    }
    let current: i32 = all.iter().map(replicas).sum();
    let max_total = want + max_surge(d);
    if current >= max_total {
        return replicas(new);
    }
    let up = (max_total - current).min(want - replicas(new));
    replicas(new) + up
}

/// New sizes for old ReplicaSets in a rolling update (upstream's `reconcileOldReplicaSets`):
/// first unhealthy replicas go, then available ones while `minAvailable` holds. Returns
/// (index, new size) for each ReplicaSet that shrinks.
pub fn old_scale_down_plan(d: &Deployment, rss: &[ReplicaSet], new: usize) -> Vec<(usize, i32)> {
    let mut sizes: Vec<i32> = rss.iter().map(replicas).collect();
    let mut old: Vec<usize> = (0..rss.len())
        .filter(|&i| i != new && sizes[i] > 0)
        .collect();
    if old.iter().map(|&i| sizes[i]).sum::<i32>() == 0 {
        return Vec::new();
    }
    old.sort_by(|&a, &b| created(&rss[a]).cmp(&created(&rss[b])));
    let all_pods: i32 = sizes.iter().sum();
    let min_available = spec_replicas(d) - max_unavailable(d);
    let new_unavailable = sizes[new] - available(&rss[new]);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Vec::new();
    }
    // Unhealthy replicas first: removing them costs no availability.
    let mut cleaned = 0;
    for &i in &old {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = sizes[i] - available(&rss[i]);
        if sizes[i] == 0 || unhealthy <= 0 {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(unhealthy);
        sizes[i] -= down;
        cleaned += down;
    }
    // Then available ones, down to minAvailable. Availability of a shrunk ReplicaSet is at
    // most its new size.
    let available_now: i32 = (0..rss.len())
        .filter(|&i| sizes[i] > 0 || i == new)
        .map(|i| available(&rss[i]).min(sizes[i]))
        .sum();
    if available_now > min_available {
        let total_down = available_now - min_available;
        let mut done = 0;
        for &i in &old {
            if done >= total_down {
                break;
            }
            if sizes[i] == 0 {
                continue;
            }
            let down = sizes[i].min(total_down - done);
            sizes[i] -= down;
            done += down;
        }
    }
    (0..rss.len())
        .filter(|&i| sizes[i] != replicas(&rss[i]))
        .map(|i| (i, sizes[i]))
        .collect()
}

/// Resizes for a scaling event or a paused Deployment (upstream's `scale`): one active
/// ReplicaSet takes the new size; a saturated new one takes it all; otherwise the change is
/// spread over active ReplicaSets in proportion to their size, leftovers to the largest.
/// Returns (index, new size, "up"/"down" when proportional).
pub fn scale_plan(
    d: &Deployment,
    rss: &[ReplicaSet],
    new: Option<usize>,
) -> Vec<(usize, i32, Option<&'static str>)> {
    let want = spec_replicas(d);
    if rss.is_empty() {
        return Vec::new();
    }
    let active: Vec<usize> = (0..rss.len()).filter(|&i| replicas(&rss[i]) > 0).collect();
    let single = match active.len() {
        0 => Some(new.unwrap_or_else(|| {
            // The newest old ReplicaSet.
            (0..rss.len())
                .max_by(|&a, &b| created(&rss[a]).cmp(&created(&rss[b])))
                .expect("not empty")
        })),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(i) = single {
        return if replicas(&rss[i]) == want {
            Vec::new()
        } else {
            vec![(i, want, None)]
        };
    }
    if let Some(n) = new {
        let rs = &rss[n];
        if annotation_i32(rs, DESIRED_REPLICAS) == Some(want)
            && replicas(rs) == want
            && available(rs) == want
        {
            return active
                .into_iter()
                .filter(|&i| i != n)
                .map(|i| (i, 0, None))
                .collect();
        }
    }
    if !is_rolling(d) {
        return Vec::new();
    }
    let mut active = active;
    let total: i32 = active.iter().map(|&i| replicas(&rss[i])).sum();
    let allowed = if want > 0 { want + max_surge(d) } else { 0 };
    let to_add = allowed - total;
    let op = match to_add.cmp(&0) {
        std::cmp::Ordering::Greater => {
            // Largest first, newer first among equals.
            active.sort_by_key(|&i| (Reverse(replicas(&rss[i])), Reverse(created(&rss[i]))));
            Some("up")
        }
        std::cmp::Ordering::Less => {
            // Largest first, older first among equals.
            active.sort_by_key(|&i| (Reverse(replicas(&rss[i])), created(&rss[i])));
            Some("down")
        }
        std::cmp::Ordering::Equal => None,
    };
    let mut added = 0;
    let mut sizes: Vec<i32> = active
        .iter()
        .map(|&i| {
            let rs = &rss[i];
            if to_add == 0 {
                return replicas(rs);
            }
            let p = proportion(d, rs, to_add, added);
            added += p;
            replicas(rs) + p
        })
        .collect();
    if to_add != 0 {
        sizes[0] = (sizes[0] + to_add - added).max(0);
    }
    active
        .into_iter()
        .zip(sizes)
        .map(|(i, size)| (i, size, op))
        .collect()
}

/// How many replicas a ReplicaSet gains or loses in proportional scaling (upstream's
/// `GetProportion`).
fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = fraction(d, rs);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// A ReplicaSet's share of the new size, relative to the size it was sized for.
fn fraction(d: &Deployment, rs: &ReplicaSet) -> i32 {
    let want = spec_replicas(d);
    if want == 0 {
        return -replicas(rs);
    }
    let deployment_replicas = want + max_surge(d);
    let annotated = annotation_i32(rs, MAX_REPLICAS)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = f64::from(replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
    size.round() as i32 - replicas(rs)
}

/// A condition of a Deployment's status.
pub fn cond<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// A condition stamped now.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = Time(Timestamp::now());
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Sets a condition: unchanged if status and reason are; the transition time kept if only
/// the reason changes (upstream's `SetDeploymentCondition`).
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|x| x.type_ != type_);
    }
}

/// Whether progress is tracked against a deadline.
pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

fn nz(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// Counts from the ReplicaSets, and the Available condition (upstream's `calculateStatus`).
/// Zero counts are left out, as upstream's `omitempty` does.
pub fn calculate_status(
    d: &Deployment,
    rss: &[ReplicaSet],
    new: Option<usize>,
    _now: Timestamp,
) -> DeploymentStatus {
    let available: i32 = rss.iter().map(available).sum();
    let total: i32 = rss.iter().map(replicas).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(rss.iter().map(actual).sum()),
        updated_replicas: nz(new.map_or(0, |i| actual(&rss[i]))),
        ready_replicas: nz(rss.iter().map(ready).sum()),
        available_replicas: nz(available),
        unavailable_replicas: nz((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    if available >= spec_replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}

fn count(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Every replica updated and available, and the latest spec observed.
pub fn deployment_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = spec_replicas(d);
    count(s.updated_replicas) == want
        && count(s.replicas) == want
        && count(s.available_replicas) == want
        && s.observed_generation >= d.metadata.generation
}

/// Whether the rollout moved since the last status: more updated, ready or available
/// replicas, or fewer old ones.
fn progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(s.replicas) - count(s.updated_replicas);
    count(s.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(s.ready_replicas) > count(old.ready_replicas)
        || count(s.available_replicas) > count(old.available_replicas)
}

fn deadline(d: &Deployment) -> Duration {
    let secs = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn last_update(c: &DeploymentCondition) -> Option<Timestamp> {
    c.last_update_time.as_ref().map(|t| t.0)
}

fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = cond(Some(s), "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => last_update(c).is_some_and(|from| {
            let dl = deadline(d);
            let end = from
                .checked_add(k8s_openapi::jiff::SignedDuration::try_from(dl).unwrap_or_default())
                .unwrap_or(from);
            end < now
        }),
    }
}

/// Status after a rollout step, with the Progressing condition as upstream's
/// `syncRolloutStatus` sets it: complete, progressing, or past its deadline.
pub fn rollout_status(
    d: &Deployment,
    rss: &[ReplicaSet],
    new: Option<usize>,
    new_name: Option<&str>,
    now: Timestamp,
) -> DeploymentStatus {
    let mut s = calculate_status(d, rss, new, now);
    if !has_progress_deadline(d) {
        remove_condition(&mut s, "Progressing");
    }
    let current = cond(d.status.as_ref(), "Progressing").cloned();
    let already_complete = s.replicas == s.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    let subject = |what: &str| match new_name {
        Some(n) => format!("ReplicaSet {n:?} {what}"),
        None => format!(
            "Deployment {:?} {what}",
            d.metadata.name.clone().unwrap_or_default()
        ),
    };
    if has_progress_deadline(d) && !already_complete {
        if deployment_complete(d, &s) {
            set_condition(
                &mut s,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    subject("has successfully progressed."),
                ),
            );
        } else if progressing(d, &s) {
            let mut c = new_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                subject("is progressing."),
            );
            if let Some(cur) = &current {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut s, "Progressing");
            }
            set_condition(&mut s, c);
        } else if timed_out(d, &s, now) {
            set_condition(
                &mut s,
                new_condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    subject("has timed out progressing."),
                ),
            );
        }
    }
    // ReplicaSet failures (e.g. quota) surface on the Deployment, the new one's first.
    let failure = new
        .into_iter()
        .chain((0..rss.len()).filter(|&i| Some(i) != new))
        .find_map(|i| {
            rss[i]
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                .cloned()
        });
    match failure {
        Some(f) => set_condition(
            &mut s,
            DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: f.status,
                reason: f.reason,
                message: f.message,
                last_update_time: f.last_transition_time.clone(),
                last_transition_time: f.last_transition_time,
            },
        ),
        None => remove_condition(&mut s, "ReplicaFailure"),
    }
    s
}

/// When to look again so a stuck rollout is marked `ProgressDeadlineExceeded` on time.
pub fn requeue_after(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    if !has_progress_deadline(d) || deployment_complete(d, s) {
        return None;
    }
    let c = cond(Some(s), "Progressing")?;
    if matches!(
        c.reason.as_deref(),
        Some("ProgressDeadlineExceeded" | "NewReplicaSetAvailable")
    ) || c.status == "Unknown"
    {
        return None;
    }
    let from = last_update(c)?;
    let elapsed = now.duration_since(from);
    let left =
        k8s_openapi::jiff::SignedDuration::try_from(deadline(d)).unwrap_or_default() - elapsed;
    Some(Duration::try_from(left).unwrap_or_default() + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };

    fn deploy(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        let int_or = |v: &str| match v.parse::<i32>() {
            Ok(n) => IntOrString::Int(n),
            Err(_) => IntOrString::String(v.into()),
        };
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(int_or(surge)),
                        max_unavailable: Some(int_or(unavailable)),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(name: &str, age: i64, replicas: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(1_000 + age).unwrap())),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn hash_is_fnv32a_in_the_safe_alphabet_and_moves_with_collisions() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let t = PodTemplateSpec::default();
        let h = pod_template_hash(&t, None);
        assert_eq!(h, pod_template_hash(&t, None), "stable");
        assert!(h.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(h, pod_template_hash(&t, Some(1)));
        assert_ne!(
            pod_template_hash(&t, Some(1)),
            pod_template_hash(&t, Some(2))
        );
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let mut b = a.clone();
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "x".into());
        assert!(equal_ignore_hash(&a, Some(&b)));
        b.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert!(!equal_ignore_hash(&a, Some(&b)));
        assert!(!equal_ignore_hash(&a, None));
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(fenceposts(&deploy(10, "25%", "25%")), (3, 2));
        assert_eq!(fenceposts(&deploy(3, "25%", "25%")), (1, 0));
        assert_eq!(fenceposts(&deploy(3, "0", "0")), (0, 1), "never both zero");
        assert_eq!(fenceposts(&deploy(4, "2", "50%")), (2, 2));
        assert_eq!(
            max_unavailable(&deploy(2, "0", "5")),
            2,
            "capped at replicas"
        );
    }

    #[test]
    fn new_rs_grows_within_surge() {
        let d = deploy(3, "25%", "25%");
        let all = [rs("old", 0, 3, 3), rs("new", 1, 0, 0)];
        assert_eq!(new_rs_new_replicas(&d, &all, &all[1]), 1);
        let all = [rs("old", 0, 3, 3), rs("new", 1, 1, 0)];
        assert_eq!(
            new_rs_new_replicas(&d, &all, &all[1]),
            1,
            "at 4 = 3 + surge"
        );
        let d = deploy(10, "3", "0");
        let all = [rs("old", 0, 10, 10), rs("new", 1, 0, 0)];
        assert_eq!(new_rs_new_replicas(&d, &all, &all[1]), 3);
    }

    #[test]
    fn old_rs_shrinks_only_while_min_available_holds() {
        let d = deploy(3, "25%", "25%"); // surge 1, unavailable 0
        let all = [rs("old", 0, 3, 3), rs("new", 1, 1, 0)];
        assert!(
            old_scale_down_plan(&d, &all, 1).is_empty(),
            "new not available yet"
        );
        let all = [rs("old", 0, 3, 3), rs("new", 1, 1, 1)];
        assert_eq!(old_scale_down_plan(&d, &all, 1), vec![(0, 2)]);
        // Unhealthy old replicas go first, whatever their availability.
        let d = deploy(10, "3", "2");
        let all = [rs("a", 0, 5, 2), rs("b", 1, 5, 5), rs("new", 2, 3, 0)];
        // all 13, minAvailable 8, new unavailable 3 -> 2 may go: a's unhealthy ones.
        assert_eq!(old_scale_down_plan(&d, &all, 2), vec![(0, 3)]);
    }

    #[test]
    fn proportional_scaling_spreads_by_size() {
        // 10 replicas mid-rollout (old 8, new 5 = 13 = 10 + surge 3), scaled to 15.
        let mut d = deploy(15, "3", "2");
        let mut old = rs("old", 0, 8, 8);
        let mut new = rs("new", 1, 5, 0);
        for r in [&mut old, &mut new] {
            set_replicas_annotations(r, 10, 13);
        }
        let all = [old, new];
        // allowed 18, to add 5: old gets round(8*18/13)-8 = 3, new round(5*18/13)-5 = 2.
        let plan = scale_plan(&d, &all, Some(1));
        assert_eq!(plan, vec![(0, 11, Some("up")), (1, 7, Some("up"))]);
        // Down to 5: allowed 7 (surge 2), 6 to remove: old -4 (round(8*7/13)-8), new -2.
        d = deploy(5, "2", "1");
        let plan = scale_plan(&d, &all, Some(1));
        assert_eq!(plan, vec![(0, 4, Some("down")), (1, 3, Some("down"))]);
        assert!(plan.iter().all(|p| p.2 == Some("down")));
    }

    #[test]
    fn scaling_one_active_rs_or_a_saturated_new_one() {
        let d = deploy(5, "25%", "25%");
        let all = [rs("old", 0, 0, 0), rs("new", 1, 3, 3)];
        assert_eq!(scale_plan(&d, &all, Some(1)), vec![(1, 5, None)]);
        let mut new = rs("new", 1, 5, 5);
        set_replicas_annotations(&mut new, 5, 7);
        let all = [rs("old", 0, 2, 2), new];
        assert_eq!(scale_plan(&d, &all, Some(1)), vec![(0, 0, None)]);
    }

    #[test]
    fn status_counts_and_conditions() {
        let d = deploy(3, "25%", "25%");
        let all = [rs("old", 0, 1, 1), rs("new", 1, 3, 2)];
        let s = calculate_status(&d, &all, Some(1), Timestamp::now());
        assert_eq!(
            (
                s.replicas,
                s.updated_replicas,
                s.available_replicas,
                s.unavailable_replicas
            ),
            (Some(4), Some(3), Some(3), Some(1))
        );
        let avail = cond(Some(&s), "Available").unwrap();
        assert_eq!(avail.reason.as_deref(), Some("MinimumReplicasAvailable"));
        let mut d2 = d.clone();
        d2.spec.as_mut().unwrap().progress_deadline_seconds = Some(600);
        let s = rollout_status(&d2, &all, Some(1), Some("web-1"), Timestamp::now());
        let p = cond(Some(&s), "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(
            p.message.as_deref(),
            Some("ReplicaSet \"web-1\" is progressing.")
        );
        let all = [rs("new", 1, 3, 3)];
        let s = rollout_status(&d2, &all, Some(0), Some("web-1"), Timestamp::now());
        let p = cond(Some(&s), "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(requeue_after(&d2, &s, Timestamp::now()), None);
        // Stuck past the deadline.
        let mut stuck = d2.clone();
        stuck.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
        let mut old = new_condition("Progressing", "True", "ReplicaSetUpdated", "x".into());
        old.last_update_time = Some(Time(Timestamp::from_second(1).unwrap()));
        stuck.status = Some(DeploymentStatus {
            replicas: Some(3),
            updated_replicas: Some(3),
            conditions: Some(vec![old]),
            ..Default::default()
        });
        let all = [rs("new", 1, 3, 0)];
        let s = rollout_status(&stuck, &all, Some(0), Some("web-1"), Timestamp::now());
        let p = cond(Some(&s), "Progressing").unwrap();
        assert_eq!(p.reason.as_deref(), Some("ProgressDeadlineExceeded"));
        assert_eq!(p.status, "False");
    }

    #[test]
    fn revision_history_keeps_within_limit() {
        assert_eq!(append_history("", "1", 10).as_deref(), Some("1"));
        assert_eq!(append_history("1,2", "3", 10).as_deref(), Some("1,2,3"));
        assert_eq!(append_history("1,2,3", "4", 5).as_deref(), Some("2,3,4"));
        assert_eq!(append_history("1", "123456", 3), None);
    }

    #[test]
    fn only_the_empty_selector_selects_everything() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        };
        assert!(!selects_everything(&sel));
        assert!(selects_everything(&LabelSelector::default()));
    }
}
