//! The `batch` group: Jobs and CronJobs.

use k8s_openapi::api::batch::v1 as batch;
use serde_json::{json, Value};

use super::util::{self, arr, enum_check, invalid_raw, non_negative, required, s, set_default};
use super::{pod, Builtin, Entry, ALL_VERBS};
use crate::error::FieldError;
use crate::table::{self, Column};

/// Catalogue entries of `batch/v1`.
pub fn entries() -> Vec<Entry> {
    vec![
        entry!(
            "batch",
            "v1",
            "CronJob",
            "cronjobs",
            ns = true,
            short = ["cj"],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.batch.v1.CronJob",
            Builtin::of::<batch::CronJob>()
                .generation()
                .status()
                .defaults(cronjob_defaults)
                .validate(cronjob_validate)
                .table(cronjob_columns, cronjob_cells)
        ),
        entry!(
            "batch",
            "v1",
            "Job",
            "jobs",
            ns = true,
            short = [],
            cat = ["all"],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.batch.v1.Job",
            Builtin::of::<batch::Job>()
                .generation()
                .status()
                .prepare_for_create(job_prepare)
                .defaults(job_defaults)
                .validate(job_validate)
                .validate_update(job_validate_update)
                .table(job_columns, job_cells)
                .fields(job_fields)
        ),
    ]
}

const CONTAINERS: &str = "Names of each container in the template.";
const IMAGES: &str = "Images referenced by each container in the template.";

// ---------------------------------------------------------------------------------------------
// Job

/// `SetDefaults_Job` (the pod template gets the pod spec defaults).
pub fn job_defaults(obj: &mut Value) {
    let template_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    if spec["backoffLimit"].is_null() {
        spec["backoffLimit"] = if spec["backoffLimitPerIndex"].is_null() {
            json!(6)
        } else {
            json!(i32::MAX)
        };
    }
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if let Some(rules) = spec
        .pointer_mut("/podFailurePolicy/rules")
        .and_then(Value::as_array_mut)
    {
        for r in rules {
            for c in util::items_mut(r, "onPodConditions") {
                util::set_default_str(c, "status", "True");
            }
        }
    }
    if spec["podReplacementPolicy"].is_null() {
        let p = if spec["podFailurePolicy"].is_null() {
            "TerminatingOrFailed"
        } else {
            "Failed"
        };
        spec["podReplacementPolicy"] = json!(p);
    }
    if let Some(t) = spec.get_mut("template") {
        pod::default_template(t);
    }
    if template_labels.as_object().is_some_and(|m| !m.is_empty())
        && util::is_empty(&obj["metadata"]["labels"])
    {
        obj["metadata"]["labels"] = template_labels;
    }
}

/// Drops status and, unless `spec.manualSelector`, generates the selector and pod labels from
/// the Job's name and uid (upstream `generateSelector`).
/// The generic storage assigns the uid and the final name first; a uid is still made here
/// when absent so the function stands alone.
pub fn job_prepare(obj: &mut Value) {
    util::remove(obj, "status");
    if obj["spec"]["manualSelector"] == json!(true) || !obj["spec"].is_object() {
        return;
    }
    if s(&obj["metadata"]["uid"]).is_empty() {
        obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
    }
    let uid = s(&obj["metadata"]["uid"]).to_string();
    let name = s(&obj["metadata"]["name"]).to_string();
    let spec = &mut obj["spec"];
    if !spec["template"].is_object() {
        spec["template"] = json!({});
    }
    if !spec["template"]["metadata"].is_object() {
        spec["template"]["metadata"] = json!({});
    }
    if !spec["template"]["metadata"]["labels"].is_object() {
        spec["template"]["metadata"]["labels"] = json!({});
    }
    if let Some(labels) = spec["template"]["metadata"]["labels"].as_object_mut() {
        if !name.is_empty() {
            for k in ["job-name", "batch.kubernetes.io/job-name"] {
                labels.entry(k).or_insert_with(|| json!(name));
            }
        }
        for k in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
            labels.entry(k).or_insert_with(|| json!(uid));
        }
    }
    if !spec["selector"].is_object() {
        spec["selector"] = json!({});
    }
    if !spec["selector"]["matchLabels"].is_object() {
        spec["selector"]["matchLabels"] = json!({});
    }
    if let Some(ml) = spec["selector"]["matchLabels"].as_object_mut() {
        ml.entry("batch.kubernetes.io/controller-uid")
            .or_insert_with(|| json!(uid));
    }
}

/// Checks of a JobSpec at `path` shared by Jobs and CronJob templates (`validateJobSpec`).
fn validate_job_spec(errs: &mut Vec<FieldError>, path: &str, spec: &Value) {
    for k in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(errs, &format!("{path}.{k}"), &spec[k]);
    }
    if spec["activeDeadlineSeconds"].as_i64() == Some(0) {
        errs.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            &json!(0),
            "must be greater than or equal to 1",
        ));
    }
    enum_check(
        errs,
        &format!("{path}.completionMode"),
        &spec["completionMode"],
        &["NonIndexed", "Indexed"],
    );
    if s(&spec["completionMode"]) == "Indexed" && spec["completions"].is_null() {
        errs.push(required(
            format!("{path}.completions"),
            "when completion mode is Indexed",
        ));
    }
    enum_check(
        errs,
        &format!("{path}.podReplacementPolicy"),
        &spec["podReplacementPolicy"],
        &["Failed", "TerminatingOrFailed"],
    );
    let template = &spec["template"];
    pod::validate_template(errs, &format!("{path}.template"), template);
    let rp = &template["spec"]["restartPolicy"];
    if !matches!(s(rp), "OnFailure" | "Never") {
        errs.push(FieldError::not_supported(
            format!("{path}.template.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
}

fn job_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    let sel = &spec["selector"];
    if sel.is_null() {
        errs.push(required("spec.selector", ""));
    } else {
        util::label_selector(&mut errs, "spec.selector", sel);
        match util::selector_of(sel) {
            Some(selector) => {
                if !selector.matches_value(spec["template"]["metadata"].get("labels")) {
                    errs.push(invalid_raw(
                        "spec.template.metadata.labels",
                        &util::go_string_map(&spec["template"]["metadata"]["labels"]),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            None => errs.push(invalid_raw(
                "spec.selector",
                &util::go_label_selector(sel),
                "invalid label selector",
            )),
        }
    }
    validate_job_spec(&mut errs, "spec", spec);
    errs
}

fn job_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (n, o) = (&obj["spec"], &old["spec"]);
    if !util::same(&n["selector"], &o["selector"]) {
        errs.push(invalid_raw(
            "spec.selector",
            &util::go_label_selector(&n["selector"]),
            "field is immutable",
        ));
    }
    // A suspended Job that never started may change its scheduling directives; nothing else in
    // the template may change.
    let mut nt = n["template"].clone();
    if o["suspend"] == json!(true) && old["status"]["startTime"].is_null() {
        for k in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
            nt["spec"][k] = o["template"]["spec"][k].clone();
        }
        nt["metadata"]["labels"] = o["template"]["metadata"]["labels"].clone();
        nt["metadata"]["annotations"] = o["template"]["metadata"]["annotations"].clone();
    }
    if !util::same(&nt, &o["template"]) {
        errs.push(invalid_raw(
            "spec.template",
            "core.PodTemplateSpec{...}",
            "field is immutable",
        ));
    }
    let elastic = s(&n["completionMode"]) == "Indexed"
        && n["completions"] == n["parallelism"]
        && o["completions"] == o["parallelism"];
    if !elastic {
        util::immutable(
            &mut errs,
            "spec.completions",
            &n["completions"],
            &o["completions"],
        );
    }
    util::immutable(
        &mut errs,
        "spec.completionMode",
        &n["completionMode"],
        &o["completionMode"],
    );
    util::immutable(
        &mut errs,
        "spec.podFailurePolicy",
        &n["podFailurePolicy"],
        &o["podFailurePolicy"],
    );
    util::immutable(
        &mut errs,
        "spec.backoffLimitPerIndex",
        &n["backoffLimitPerIndex"],
        &o["backoffLimitPerIndex"],
    );
    util::immutable(
        &mut errs,
        "spec.podReplacementPolicy",
        &n["podReplacementPolicy"],
        &o["podReplacementPolicy"],
    );
    errs
}

fn job_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Status", "Status of the job."),
        Column::new("Completions", "The completion status of the job."),
        Column::new("Duration", "Time required to complete the job."),
        Column::age(),
        Column::new("Containers", CONTAINERS).wide(),
        Column::new("Images", IMAGES).wide(),
        Column::new("Selector", "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn has_condition(obj: &Value, kind: &str) -> bool {
    arr(&obj["status"]["conditions"])
        .iter()
        .any(|c| s(&c["type"]) == kind && s(&c["status"]) == "True")
}

/// The STATUS cell of a Job (1.31+ printer).
pub fn job_status(obj: &Value) -> &'static str {
    if has_condition(obj, "Complete") {
        "Complete"
    } else if has_condition(obj, "Failed") {
        "Failed"
    } else if !obj["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has_condition(obj, "Suspended") {
        "Suspended"
    } else if has_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else if has_condition(obj, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn parse_time(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn job_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let succeeded = obj["status"]["succeeded"].as_i64().unwrap_or(0);
    let completions = match spec["completions"].as_i64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => match spec["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        parse_time(&obj["status"]["startTime"]),
        parse_time(&obj["status"]["completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => {
            table::human_duration(chrono::Utc::now().signed_duration_since(start))
        }
        (Some(start), Some(end)) => table::human_duration(end.signed_duration_since(start)),
    };
    let (names, images) = util::containers_and_images(&spec["template"]["spec"]);
    vec![
        json!(table::name(obj)),
        json!(job_status(obj)),
        json!(completions),
        json!(duration),
        table::age(obj),
        json!(names),
        json!(images),
        json!(util::format_label_selector(&spec["selector"])),
    ]
}

fn job_fields(obj: &Value, field: &str) -> Option<String> {
    match field {
        "status.successful" => Some(obj["status"]["succeeded"].as_i64().unwrap_or(0).to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// CronJob

fn cronjob_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    util::set_default_str(spec, "concurrencyPolicy", "Allow");
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(t) = spec.pointer_mut("/jobTemplate/spec/template") {
        pod::default_template(t);
    }
}

/// Checks a cron schedule as robfig/cron's standard parser does (5 fields or a descriptor).
pub fn schedule_errors(schedule: &str) -> Option<String> {
    if schedule.contains("TZ") {
        return Some("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    let trimmed = schedule.trim();
    if let Some(d) = trimmed.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => None,
            _ if d.starts_with("every ") => None,
            _ => Some(format!("unrecognized descriptor: {trimmed}")),
        };
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() != 5 {
        return Some(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (f, (lo, hi)) in fields.iter().zip(ranges) {
        for part in f.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, st)) => (r, Some(st)),
                None => (part, None),
            };
            if let Some(st) = step {
                if st.parse::<u32>().map_or(true, |n| n == 0) {
                    return Some(format!("failed to parse int from {st}: strconv.Atoi: parsing {st:?}: invalid syntax"));
                }
            }
            if range == "*" || range == "?" {
                continue;
            }
            for bound in range.split('-') {
                let named = matches!(
                    bound.to_ascii_lowercase().as_str(),
                    "jan"
                        | "feb"
                        | "mar"
                        | "apr"
                        | "may"
                        | "jun"
                        | "jul"
                        | "aug"
                        | "sep"
                        | "oct"
                        | "nov"
                        | "dec"
                        | "sun"
                        | "mon"
                        | "tue"
                        | "wed"
                        | "thu"
                        | "fri"
                        | "sat"
                );
                if named {
                    continue;
                }
                match bound.parse::<u32>() {
                    Ok(n) if n < lo || n > hi => {
                        return Some(format!("end of range ({n}) above maximum ({hi}): {part}"));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Some(format!("failed to parse int from {bound}: strconv.Atoi: parsing {bound:?}: invalid syntax"))
                    }
                }
            }
        }
    }
    None
}

fn cronjob_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(&obj["metadata"]["name"]);
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            &obj["metadata"]["name"],
            "must be no more than 52 characters",
        ));
    }
    let spec = &obj["spec"];
    let schedule = s(&spec["schedule"]);
    if schedule.is_empty() {
        errs.push(required("spec.schedule", ""));
    } else if let Some(m) = schedule_errors(schedule) {
        errs.push(FieldError::invalid("spec.schedule", &spec["schedule"], m));
    }
    enum_check(
        &mut errs,
        "spec.concurrencyPolicy",
        &spec["concurrencyPolicy"],
        &["Allow", "Forbid", "Replace"],
    );
    if s(&spec["concurrencyPolicy"]).is_empty() {
        errs.push(required("spec.concurrencyPolicy", ""));
    }
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(&mut errs, &format!("spec.{k}"), &spec[k]);
    }
    if let Some(tz) = spec["timeZone"].as_str() {
        if tz.is_empty() || tz.contains(' ') || tz.starts_with('/') {
            errs.push(FieldError::invalid(
                "spec.timeZone",
                &spec["timeZone"],
                "unknown time zone",
            ));
        }
    }
    validate_job_spec(
        &mut errs,
        "spec.jobTemplate.spec",
        &spec["jobTemplate"]["spec"],
    );
    errs
}

fn cronjob_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Schedule", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
        Column::new("Timezone", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones. If not specified, this will default to the time zone of the kube-controller-manager process. The set of valid time zone names and the time zone offset is loaded from the system-wide time zone database by the API server during CronJob validation and the controller manager during execution. If no system-wide time zone database can be found a bundled version of the database is used instead. If the time zone name becomes invalid during the lifetime of a CronJob or due to a change in host configuration, the controller will stop creating new new Jobs and will create a system event with the reason UnknownTimeZone. More information can be found in https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#time-zones"),
        Column { kind: "boolean", ..Column::new("Suspend", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false.") },
        Column::int("Active", "A list of pointers to currently running jobs."),
        Column::new("Last Schedule", "Information when was the last time the job was successfully scheduled."),
        Column::age(),
        Column::new("Containers", CONTAINERS).wide(),
        Column::new("Images", IMAGES).wide(),
        Column::new("Selector", "A label query over pods that should match the pod count. Normally, the system sets this field for you. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors").wide(),
    ]
}

fn cronjob_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let last = if obj["status"]["lastScheduleTime"].is_null() {
        "<none>".to_string()
    } else {
        util::since_opt(&obj["status"]["lastScheduleTime"])
    };
    let suspend = match spec["suspend"].as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = &spec["jobTemplate"]["spec"];
    let (names, images) = util::containers_and_images(&job_spec["template"]["spec"]);
    vec![
        json!(table::name(obj)),
        json!(s(&spec["schedule"])),
        table::or_none(s(&spec["timeZone"])),
        json!(suspend),
        json!(arr(&obj["status"]["active"]).len()),
        json!(last),
        table::age(obj),
        json!(names),
        json!(images),
        json!(util::format_label_selector(&job_spec["selector"])),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    fn job(restart: &str) -> Value {
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": restart,
            "containers": [{"name": "c", "image": "perl:5"}]}}}})
    }

    #[test]
    fn job_defaults_and_selector() {
        let mut j = job("Never");
        job_prepare(&mut j);
        job_defaults(&mut j);
        let spec = &j["spec"];
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(
            spec["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        assert_eq!(spec["template"]["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(
            j["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "pi"
        );
        assert!(job_validate(&j).is_empty(), "{:?}", job_validate(&j));
    }

    #[test]
    fn job_rejects_always() {
        let mut j = job("");
        job_prepare(&mut j);
        job_defaults(&mut j);
        assert_eq!(msgs(&job_validate(&j)), vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\"",
        ]);
    }

    #[test]
    fn job_template_is_immutable() {
        let mut old = job("Never");
        job_prepare(&mut old);
        job_defaults(&mut old);
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:6");
        assert_eq!(
            msgs(&job_validate_update(&new, &old)),
            vec!["spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"]
        );
    }

    #[test]
    fn job_cells_and_fields() {
        let mut j = job("Never");
        job_prepare(&mut j);
        job_defaults(&mut j);
        j["status"] = json!({"succeeded": 1, "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:07Z",
            "conditions": [{"type": "Complete", "status": "True"}]});
        let cells = job_cells(&j);
        assert_eq!(cells[1], "Complete");
        assert_eq!(cells[2], "1/1");
        assert_eq!(cells[3], "7s");
        assert_eq!(job_columns().len(), cells.len());
        assert_eq!(job_fields(&j, "status.successful").as_deref(), Some("1"));
        assert_eq!(job_status(&json!({})), "Running");
    }

    #[test]
    fn cronjobs() {
        let mut cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        cronjob_defaults(&mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert!(
            cronjob_validate(&cj).is_empty(),
            "{:?}",
            cronjob_validate(&cj)
        );
        cj["spec"]["schedule"] = json!("bad");
        assert_eq!(
            msgs(&cronjob_validate(&cj)),
            vec![
                "spec.schedule: Invalid value: \"bad\": expected exactly 5 fields, found 1: [bad]"
            ]
        );
        let cells = cronjob_cells(&cj);
        assert_eq!(cells[2], "<none>");
        assert_eq!(cells[3], "False");
        assert_eq!(cells[5], "<none>");
        assert_eq!(cronjob_columns().len(), cells.len());
        assert!(schedule_errors("@hourly").is_none());
        assert!(schedule_errors("0 0 * * 1-5").is_none());
        assert!(schedule_errors("61 * * * *").is_some());
    }
}
