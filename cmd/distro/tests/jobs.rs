//! Integration tests: the Job, CronJob and TTL-after-finished controllers, seen through real
//! kubectl. No kubelet runs here, so pods "finish" by patching their status as a kubelet
//! would report it (phase, container exit codes, conditions).

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, LATEST};
use serde_json::{json, Value};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(10);
const EVERY: Duration = Duration::from_millis(100);
const V: u32 = LATEST;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn apply(s: &Server, manifest: &Value) {
    s.ok_stdin(V, &["apply", "-f", "-"], Some(&manifest.to_string()));
}

/// A Job manifest running one container `main`; `spec` is merged into its spec.
fn job_manifest(name: &str, spec: Value) -> Value {
    let mut m = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}],
            }},
        },
    });
    if let (Some(dst), Some(src)) = (m["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in src {
            dst.insert(k.clone(), v.clone());
        }
    }
    m
}

fn job(s: &Server, name: &str) -> Value {
    s.json(V, &["get", "job", name])
}

/// The job's pods that are neither finished nor being deleted.
fn running_pods(s: &Server, job: &str) -> Vec<Value> {
    let list = s.json(V, &["get", "pods", "-l", &format!("job-name={job}")]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        })
        .collect()
}

fn all_pods(s: &Server, job: &str) -> Vec<Value> {
    let list = s.json(V, &["get", "pods", "-l", &format!("job-name={job}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Reports a pod finished as a kubelet would: phase and container `main`'s exit code, plus
/// extra pod conditions.
fn finish(s: &Server, pod: &str, exit_code: i32, conditions: &[&str]) {
    let phase = if exit_code == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let t = now();
    let conds: Vec<Value> = conditions
        .iter()
        .map(|c| json!({"type": c, "status": "True", "lastTransitionTime": t}))
        .collect();
    let patch = json!({"status": {
        "phase": phase,
        "conditions": conds,
        "containerStatuses": [{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "startedAt": t, "finishedAt": t}},
        }],
    }});
    s.ok(
        V,
        &[
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
    );
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// Waits for condition `type_` and returns its reason.
fn wait_condition(s: &Server, job_name: &str, type_: &str, within: Duration) -> Value {
    eventually(within, EVERY, &format!("job {job_name} {type_}"), || {
        condition(&job(s, job_name), type_).cloned()
    })
}

fn events(s: &Server, reason: &str) -> String {
    s.ok(
        V,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason}"),
        ],
    )
}

#[test]
fn completions_parallelism_and_indexed_jobs() {
    let s = Server::start(bin());
    apply(
        &s,
        &job_manifest("work", json!({"completions": 3, "parallelism": 2})),
    );
    let first = eventually(SOON, EVERY, "two pods running", || {
        let pods = running_pods(&s, "work");
        (pods.len() == 2).then_some(pods)
    });
    let fins = first[0]["metadata"]["finalizers"].clone();
    assert!(
        fins.as_array()
            .is_some_and(|f| f.iter().any(|x| x == "batch.kubernetes.io/job-tracking")),
        "tracking finalizer on pods: {fins}"
    );
    let owner = &first[0]["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["controller"].as_bool()),
        (Some("Job"), Some(true))
    );
    eventually(SOON, EVERY, "status.active 2 and startTime", || {
        let j = job(&s, "work");
        (j["status"]["active"] == 2 && j["status"]["startTime"].is_string()).then_some(())
    });

    // One success: a third pod starts (parallelism 2, one completion still missing beyond).
    finish(&s, &name(&first[0]), 0, &[]);
    eventually(SOON, EVERY, "succeeded 1, replacement started", || {
        let j = job(&s, "work");
        (j["status"]["succeeded"] == 1 && running_pods(&s, "work").len() == 2).then_some(())
    });
    // The counted pod lost its finalizer.
    eventually(
        SOON,
        EVERY,
        "finalizer removed from the counted pod",
        || {
            let p = s.json(V, &["get", "pod", &name(&first[0])]);
            p["metadata"]["finalizers"].is_null().then_some(())
        },
    );
    for p in running_pods(&s, "work") {
        finish(&s, &name(&p), 0, &[]);
    }
    let complete = wait_condition(&s, "work", "Complete", SOON);
    assert_eq!(complete["reason"], "CompletionsReached");
    let j = job(&s, "work");
    assert_eq!(j["status"]["succeeded"], 3);
    assert!(j["status"]["completionTime"].is_string());
    assert!(condition(&j, "SuccessCriteriaMet").is_some(), "{j}");
    assert!(j["status"]["active"].is_null(), "{j}");
    assert_eq!(all_pods(&s, "work").len(), 3, "no pod beyond completions");
    let table = s.ok(V, &["get", "job", "work"]);
    assert!(
        table.contains("3/3") && table.contains("Complete"),
        "{table}"
    );
    assert!(events(&s, "Completed").contains("Job completed"));
    assert!(events(&s, "SuccessfulCreate").contains("Created pod: work-"));

    // Indexed: one pod per index, each knowing its index; done when every index succeeded.
    apply(
        &s,
        &job_manifest(
            "idx",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
        ),
    );
    let pods = eventually(SOON, EVERY, "three indexed pods", || {
        let pods = running_pods(&s, "idx");
        (pods.len() == 3).then_some(pods)
    });
    let mut indexes: Vec<String> = Vec::new();
    for p in &pods {
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("index annotation")
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            ix.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{ix}"));
        assert!(name(p).starts_with(&format!("idx-{ix}-")), "{}", name(p));
        let env = &p["spec"]["containers"][0]["env"][0];
        assert_eq!(env["name"], "JOB_COMPLETION_INDEX");
        indexes.push(ix);
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    let by_index = |i: &str| {
        pods.iter()
            .find(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == i)
            .map(name)
            .expect("pod of index")
    };
    finish(&s, &by_index("1"), 0, &[]);
    eventually(SOON, EVERY, "completedIndexes 1", || {
        (job(&s, "idx")["status"]["completedIndexes"] == "1").then_some(())
    });
    finish(&s, &by_index("0"), 0, &[]);
    finish(&s, &by_index("2"), 0, &[]);
    wait_condition(&s, "idx", "Complete", SOON);
    let j = job(&s, "idx");
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    assert_eq!(j["status"]["succeeded"], 3);

    // Suspended: no pods and no start time until resumed.
    apply(&s, &job_manifest("held", json!({"suspend": true})));
    let c = wait_condition(&s, "held", "Suspended", SOON);
    assert_eq!(c["reason"], "JobSuspended");
    assert!(all_pods(&s, "held").is_empty());
    assert!(job(&s, "held")["status"]["startTime"].is_null());
    s.ok(
        V,
        &[
            "patch",
            "job",
            "held",
            "--type=merge",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    );
    eventually(SOON, EVERY, "resumed with a pod", || {
        (running_pods(&s, "held").len() == 1).then_some(())
    });
    let j = job(&s, "held");
    let resumed = j["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Suspended").cloned())
        .unwrap_or_default();
    assert_eq!(
        (resumed["status"].as_str(), resumed["reason"].as_str()),
        (Some("False"), Some("JobResumed"))
    );
    assert!(j["status"]["startTime"].is_string());
    assert!(events(&s, "Resumed").contains("Job resumed"));
}

#[test]
fn backoff_limit_deadline_and_failure_policy() {
    let s = Server::start(bin());
    // backoffLimit 1: the first failure is replaced after upstream's 10 s backoff, the second
    // fails the Job.
    apply(&s, &job_manifest("flaky", json!({"backoffLimit": 1})));
    // activeDeadlineSeconds: the running pod is stopped and the Job fails once it is gone.
    apply(
        &s,
        &job_manifest("slow", json!({"activeDeadlineSeconds": 3})),
    );
    // Pod failure policy: a disruption is ignored (replaced at once, not counted), exit code
    // 42 fails the Job whatever the backoff limit.
    apply(
        &s,
        &job_manifest(
            "policy",
            json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]}}),
        ),
    );

    let p1 = eventually(SOON, EVERY, "flaky pod", || running_pods(&s, "flaky").pop());
    let failed_at = std::time::Instant::now();
    finish(&s, &name(&p1), 1, &[]);
    eventually(SOON, EVERY, "failed 1", || {
        (job(&s, "flaky")["status"]["failed"] == 1).then_some(())
    });
    let p2 = eventually(
        Duration::from_secs(20),
        EVERY,
        "replacement after backoff",
        || running_pods(&s, "flaky").pop(),
    );
    assert!(
        failed_at.elapsed() >= Duration::from_secs(8),
        "replaced after {:?}, before the 10 s backoff",
        failed_at.elapsed()
    );

    let pp = eventually(SOON, EVERY, "policy pod", || {
        running_pods(&s, "policy").pop()
    });
    finish(&s, &name(&pp), 137, &["DisruptionTarget"]);
    let pp2 = eventually(SOON, EVERY, "ignored failure replaced", || {
        running_pods(&s, "policy")
            .into_iter()
            .find(|p| name(p) != name(&pp))
    });
    assert!(job(&s, "policy")["status"]["failed"].is_null());
    finish(&s, &name(&pp2), 42, &[]);
    let failed = wait_condition(&s, "policy", "Failed", SOON);
    assert_eq!(failed["reason"], "PodFailurePolicy");
    assert_eq!(
        failed["message"],
        format!(
            "Container main for pod default/{} failed with exit code 42 matching FailJob rule at index 0",
            name(&pp2)
        )
    );
    assert!(condition(&job(&s, "policy"), "FailureTarget").is_some());

    let deadline = wait_condition(&s, "slow", "Failed", SOON);
    assert_eq!(deadline["reason"], "DeadlineExceeded");
    assert_eq!(
        deadline["message"],
        "Job was active longer than specified deadline"
    );
    assert!(running_pods(&s, "slow").is_empty());
    assert!(events(&s, "DeadlineExceeded").contains("Job was active longer"));

    finish(&s, &name(&p2), 1, &[]);
    let failed = wait_condition(&s, "flaky", "Failed", SOON);
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        failed["message"],
        "Job has reached the specified backoff limit"
    );
    let j = job(&s, "flaky");
    assert_eq!(j["status"]["failed"], 2);
    assert!(j["status"]["completionTime"].is_null());
    let described = s.ok(V, &["describe", "job", "flaky"]);
    assert!(
        described.contains("BackoffLimitExceeded"),
        "describe tells the story: {described}"
    );
}

#[test]
fn ttl_deletes_finished_jobs_and_cronjobs_fire_with_history_limits() {
    let s = Server::start(bin());
    apply(
        &s,
        &job_manifest("brief", json!({"ttlSecondsAfterFinished": 3})),
    );
    let p = eventually(SOON, EVERY, "brief pod", || running_pods(&s, "brief").pop());
    finish(&s, &name(&p), 0, &[]);
    // Condition times have whole seconds, so the TTL may end up to a second early.
    wait_condition(&s, "brief", "Complete", SOON);
    let finished = std::time::Instant::now();
    eventually(SOON, EVERY, "job deleted after its TTL", || {
        let out = s.kubectl(V, &["get", "job", "brief"]);
        (!out.status.success()).then_some(())
    });
    assert!(
        finished.elapsed() >= Duration::from_millis(1500),
        "deleted {:?} after it finished, before its TTL",
        finished.elapsed()
    );
    eventually(SOON, EVERY, "its pods collected", || {
        all_pods(&s, "brief").is_empty().then_some(())
    });

    // Foreground deletion waits for the pods, whose tracking finalizer the Job controller
    // must release although the Job is not finished.
    apply(
        &s,
        &job_manifest("doomed", json!({"parallelism": 2, "completions": 2})),
    );
    eventually(SOON, EVERY, "doomed pods", || {
        (running_pods(&s, "doomed").len() == 2).then_some(())
    });
    s.ok(
        V,
        &[
            "delete",
            "job",
            "doomed",
            "--cascade=foreground",
            "--wait=false",
        ],
    );
    eventually(SOON, EVERY, "foreground deletion done", || {
        let out = s.kubectl(V, &["get", "job", "doomed"]);
        (!out.status.success() && all_pods(&s, "doomed").is_empty()).then_some(())
    });

    // Once an hour, at this minute (Berlin is a whole number of hours from UTC): the run the
    // test starts below is the only one, however long the test takes.
    let minute = chrono::Utc::now().timestamp() / 60 % 60;
    apply(
        &s,
        &json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "tick"},
            "spec": {
                "schedule": format!("{minute} * * * *"),
                "timeZone": "Europe/Berlin",
                "successfulJobsHistoryLimit": 1,
                "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }}}},
            },
        }),
    );
    // Waiting for the next minute would take up to 60 s: report a last run three minutes ago
    // instead, so the controller sees the runs it missed since and starts the latest at once.
    let earlier = (chrono::Utc::now() - chrono::Duration::minutes(3))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    s.ok(
        V,
        &[
            "patch",
            "cronjob",
            "tick",
            "--subresource=status",
            "--type=merge",
            "-p",
            &json!({"status": {"lastScheduleTime": earlier}}).to_string(),
        ],
    );
    let scheduled = eventually(SOON, EVERY, "a scheduled job", || {
        let list = s.json(V, &["get", "jobs"]);
        list["items"]
            .as_array()?
            .iter()
            .find(|j| name(j).starts_with("tick-"))
            .cloned()
    });
    let sname = name(&scheduled);
    let minutes: i64 = sname["tick-".len()..].parse().expect("minutes in job name");
    let now_min = chrono::Utc::now().timestamp() / 60;
    assert!(
        (now_min - 1..=now_min).contains(&minutes),
        "the latest missed minute, not an older one: {sname}"
    );
    let stamp = scheduled["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        stamp.ends_with("+01:00") || stamp.ends_with("+02:00"),
        "scheduled time in the CronJob's zone: {stamp}"
    );
    eventually(SOON, EVERY, "active and lastScheduleTime", || {
        let cj = s.json(V, &["get", "cronjob", "tick"]);
        (cj["status"]["active"][0]["name"] == sname.as_str()
            && cj["status"]["lastScheduleTime"] != earlier.as_str())
        .then_some(())
    });
    assert!(events(&s, "SuccessfulCreate").contains(&format!("Created job {sname}")));

    // A manual run from the template, as kubectl makes it. Start times have whole seconds and
    // ties go by name: start it in a later second, so the scheduled run is the older one.
    let started = eventually(SOON, EVERY, "scheduled job started", || {
        let t = job(&s, &sname)["status"]["startTime"].as_str()?.to_string();
        chrono::DateTime::parse_from_rfc3339(&t).ok()
    });
    eventually(SOON, Duration::from_millis(20), "a later second", || {
        (chrono::Utc::now().timestamp() > started.timestamp()).then_some(())
    });
    s.ok(V, &["create", "job", "manual", "--from=cronjob/tick"]);
    let manual = job(&s, "manual");
    assert_eq!(manual["metadata"]["ownerReferences"][0]["kind"], "CronJob");

    for j in [sname.as_str(), "manual"] {
        let p = eventually(SOON, EVERY, "cron job pod", || running_pods(&s, j).pop());
        finish(&s, &name(&p), 0, &[]);
        wait_condition(&s, j, "Complete", SOON);
    }
    // Two succeeded jobs, history limit one: the older one goes.
    eventually(SOON, EVERY, "history limited to one", || {
        let list = s.json(V, &["get", "jobs"]);
        let names: Vec<String> = list["items"].as_array()?.iter().map(name).collect();
        (names == ["manual"]).then_some(())
    });
    let cj = s.json(V, &["get", "cronjob", "tick"]);
    assert!(cj["status"]["active"].is_null(), "{cj}");
    assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    assert!(events(&s, "SawCompletedJob")
        .contains(&format!("Saw completed job: {sname}, condition: Complete")));
    assert!(events(&s, "SuccessfulDelete").contains(&format!("Deleted job {sname}")));
    // The manual run is reported once, as upstream's recorder folds repeats.
    let unexpected = events(&s, "UnexpectedJob");
    assert_eq!(
        unexpected
            .matches("Saw a job that the controller did not create or forgot: manual")
            .count(),
        1,
        "{unexpected}"
    );
}
