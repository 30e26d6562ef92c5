//! Integration tests: the horizontal pod autoscaler against the real binary, simulated nodes
//! (`distro agent --runtime fake`, whose pods report the usage their
//! `fake.distro.io/cpu-usage` annotation says through `metrics.k8s.io`) and real kubectl.

use std::path::Path;
use std::time::Duration;

use distro_testharness::get::ready_node;
use distro_testharness::{eventually, Agent, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const SOON: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(250);

/// Fast syncs and metrics, so a test sees several autoscaler periods in seconds.
const FLAGS: &[&str] = &[
    "--horizontal-pod-autoscaler-sync-period=1s",
    "--metrics-resolution=1s",
];

fn start() -> (Server, Agent) {
    let s = Server::start_with(bin(), FLAGS);
    let a = Agent::start(bin(), &s, &["--node-name", "sim", "--fake-nodes", "2"]);
    for i in 0..2 {
        ready_node(&s, &format!("sim-{i}"));
    }
    (s, a)
}

fn deployment(name: &str, replicas: u32, request: Option<&str>, usage: &str) -> String {
    let resources = match request {
        Some(r) => format!("{{requests: {{cpu: {r}}}}}"),
        None => "{}".into(),
    };
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{fake.distro.io/cpu-usage: "{usage}"}}
    spec:
      containers:
      - {{name: app, image: busybox, resources: {resources}}}
"#
    )
}

const HPA: &str = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource:
      name: cpu
      target: {type: Utilization, averageUtilization: 50}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 0
"#;

fn condition(hpa: &Value, kind: &str) -> Value {
    hpa["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or(Value::Null)
}

/// The messages of the events about HPA `name` with `reason`.
fn events(s: &Server, name: &str, reason: &str) -> Vec<String> {
    let list = s.json(
        LATEST,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={name},reason={reason}"),
        ],
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(String::from))
        .collect()
}

fn spec_replicas(s: &Server, deployment: &str) -> i64 {
    s.json(LATEST, &["get", "deployment", deployment])["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

#[test]
fn scales_a_deployment_up_with_cpu_usage_and_back_down() {
    let (s, _a) = start();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&deployment("web", 1, Some("100m"), "90m")),
    );
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(HPA));

    // 90% of requests against a 50% target: up to the maximum, 4.
    eventually(Duration::from_secs(45), EVERY, "scaled up to 4", || {
        (spec_replicas(&s, "web") == 4).then_some(())
    });
    let rescales = events(&s, "web", "SuccessfulRescale");
    assert!(
        rescales.iter().any(|m| m.starts_with("New size: ")
            && m.ends_with(
                "; reason: cpu resource utilization (percentage of request) above target"
            )),
        "{rescales:?}"
    );
    assert!(
        rescales.iter().any(|m| m.starts_with("New size: 4;")),
        "{rescales:?}"
    );
    // Once every pod reports, 90% of 4 pods asks for 8: held at the maximum.
    let hpa = eventually(
        SOON,
        EVERY,
        "status shows 4 replicas at 90%, limited",
        || {
            let h = s.json(LATEST, &["get", "hpa", "web"]);
            let m = &h["status"]["currentMetrics"][0]["resource"];
            (h["status"]["currentReplicas"] == 4
                && m["current"]["averageUtilization"] == 90
                && condition(&h, "ScalingLimited")["reason"] == "TooManyReplicas")
                .then_some(h)
        },
    );
    assert_eq!(
        hpa["status"]["currentMetrics"][0]["resource"]["name"],
        "cpu"
    );
    assert_eq!(
        hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageValue"],
        "90m"
    );
    assert_eq!(hpa["status"]["desiredReplicas"], 4);
    assert!(hpa["status"]["lastScaleTime"].is_string());
    assert_eq!(
        condition(&hpa, "ScalingActive")["reason"],
        "ValidMetricFound"
    );
    assert_eq!(condition(&hpa, "ScalingLimited")["status"], "True");
    assert_eq!(
        condition(&hpa, "ScalingLimited")["reason"],
        "TooManyReplicas"
    );
    let table = s.ok(LATEST, &["get", "hpa", "web"]);
    assert!(table.contains("cpu: 90%/50%"), "{table}");
    assert!(table.contains("Deployment/web"), "{table}");

    // Load drops to 10%: with no scale-down stabilisation, straight back to the minimum.
    s.ok(
        LATEST,
        &[
            "annotate",
            "pods",
            "-l",
            "app=web",
            "fake.distro.io/cpu-usage=10m",
            "--overwrite",
        ],
    );
    eventually(Duration::from_secs(45), EVERY, "scaled down to 1", || {
        (spec_replicas(&s, "web") == 1).then_some(())
    });
    let rescales = events(&s, "web", "SuccessfulRescale");
    assert!(
        rescales
            .iter()
            .any(|m| m == "New size: 1; reason: All metrics below target"),
        "{rescales:?}"
    );
    let described = s.ok(LATEST, &["describe", "hpa", "web"]);
    assert!(described.contains("SuccessfulRescale"), "{described}");
}

#[test]
fn kubectl_autoscale_limits_disabled_scaling_and_failures_are_reported() {
    let (s, _a) = start();
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&deployment("api", 1, Some("100m"), "50m")),
    );
    // kubectl 1.27 creates an autoscaling/v1 HPA; the replica count below the minimum is
    // raised first, whatever the metrics.
    s.ok(
        27,
        &[
            "autoscale",
            "deployment",
            "api",
            "--min=2",
            "--max=3",
            "--cpu-percent=50",
        ],
    );
    eventually(SOON, EVERY, "raised to the minimum", || {
        (spec_replicas(&s, "api") == 2).then_some(())
    });
    let rescales = events(&s, "api", "SuccessfulRescale");
    assert!(
        rescales.contains(
            &"New size: 2; reason: Current number of replicas below Spec.MinReplicas".to_string()
        ),
        "{rescales:?}"
    );
    let v1 = s.json(27, &["get", "hpa.v1.autoscaling", "api"]);
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);

    // A target scaled to zero turns autoscaling off.
    s.ok(LATEST, &["scale", "deployment", "api", "--replicas=0"]);
    eventually(SOON, EVERY, "ScalingDisabled", || {
        let h = s.json(LATEST, &["get", "hpa", "api"]);
        let c = condition(&h, "ScalingActive");
        (c["reason"] == "ScalingDisabled" && c["status"] == "False").then_some(())
    });
    assert_eq!(
        spec_replicas(&s, "api"),
        0,
        "the autoscaler left it at zero"
    );

    // A target that does not exist.
    let ghost = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: ghost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}\n  maxReplicas: 3\n";
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(ghost));
    let h = eventually(SOON, EVERY, "FailedGetScale", || {
        let h = s.json(LATEST, &["get", "hpa", "ghost"]);
        (condition(&h, "AbleToScale")["reason"] == "FailedGetScale").then_some(h)
    });
    let msg = condition(&h, "AbleToScale")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.starts_with("the HPA controller was unable to get the target's current scale: failed to query scale subresource for Deployment/default/ghost"),
        "{msg}"
    );
    assert!(!events(&s, "ghost", "FailedGetScale").is_empty());

    // Pods without a cpu request cannot be measured against one.
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&deployment("norequest", 1, None, "50m")),
    );
    s.ok(
        LATEST,
        &[
            "autoscale",
            "deployment",
            "norequest",
            "--min=1",
            "--max=3",
            "--cpu-percent=50",
        ],
    );
    let h = eventually(SOON, EVERY, "FailedGetResourceMetric", || {
        let h = s.json(LATEST, &["get", "hpa", "norequest"]);
        let c = condition(&h, "ScalingActive");
        (c["reason"] == "FailedGetResourceMetric"
            && c["message"]
                .as_str()?
                .contains("missing request for cpu in container app of Pod norequest-"))
        .then_some(h)
    });
    assert_eq!(condition(&h, "ScalingActive")["status"], "False");
    let failed = events(&s, "norequest", "FailedGetResourceMetric");
    assert!(
        failed
            .iter()
            .any(|m| m.starts_with("failed to get cpu utilization: missing request for cpu")),
        "{failed:?}"
    );
    assert!(!events(&s, "norequest", "FailedComputeMetricsReplicas").is_empty());
}

#[test]
fn unsupported_metric_types_are_reported_not_ignored() {
    let s = Server::start_with(bin(), FLAGS);
    s.ok_stdin(
        LATEST,
        &["apply", "-f", "-"],
        Some(&deployment("queue", 1, Some("100m"), "10m")),
    );
    let hpa = r#"
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: queue}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: queue}
  maxReplicas: 3
  metrics:
  - type: External
    external:
      metric: {name: queue_depth}
      target: {type: AverageValue, averageValue: "30"}
"#;
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(hpa));
    let h = eventually(SOON, EVERY, "FailedGetExternalMetric", || {
        let h = s.json(LATEST, &["get", "hpa", "queue"]);
        (condition(&h, "ScalingActive")["reason"] == "FailedGetExternalMetric").then_some(h)
    });
    let msg = condition(&h, "ScalingActive")["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("external metrics (external.metrics.k8s.io) API is not served"),
        "{msg}"
    );
    assert!(!events(&s, "queue", "FailedGetExternalMetric").is_empty());
    assert_eq!(spec_replicas(&s, "queue"), 1);
}
