//! Integration tests: one resource served in several versions (core/v1 and events.k8s.io/v1
//! Events; autoscaling/v1 and v2 HorizontalPodAutoscalers) reads the same objects in each.

use std::path::Path;

use distro_testharness::{Server, LATEST};

const OLDEST: u32 = 27;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

#[test]
fn events_are_readable_in_both_versions() {
    let s = Server::start(bin());
    let v = LATEST;
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some(
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: e1}\n\
             eventTime: \"2026-01-01T00:00:00.000000Z\"\nreportingController: test/x\n\
             reportingInstance: x-1\naction: Testing\nreason: Tested\nnote: hello\ntype: Normal\n\
             regarding: {kind: Pod, name: p, namespace: default}\n",
        ),
    );
    s.ok_stdin(
        v,
        &["create", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Event\nmetadata: {name: e2}\n\
             involvedObject: {kind: Pod, name: p, namespace: default}\nreason: Old\n\
             message: core event\ntype: Warning\ncount: 3\nsource: {component: kubelet}\n",
        ),
    );
    let core = s.json(v, &["get", "events.v1.", "e1"]);
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "hello");
    assert_eq!(core["involvedObject"]["name"], "p");
    assert_eq!(core["reportingComponent"], "test/x");
    let new = s.json(v, &["get", "events.v1.events.k8s.io", "e2"]);
    assert_eq!(new["apiVersion"], "events.k8s.io/v1");
    assert_eq!(new["note"], "core event");
    assert_eq!(new["deprecatedCount"], 3);
    assert_eq!(new["deprecatedSource"]["component"], "kubelet");
    let list = s.ok(v, &["get", "events.v1.events.k8s.io", "-o", "name"]);
    assert!(list.contains("e1") && list.contains("e2"), "{list}");
    let list = s.ok(
        v,
        &[
            "get",
            "events.v1.",
            "--field-selector",
            "reason=Tested",
            "-o",
            "name",
        ],
    );
    assert_eq!(list.trim(), "event/e1");
}

#[test]
fn autoscalers_convert_between_v1_and_v2() {
    let s = Server::start(bin());
    // kubectl 1.27 writes autoscaling/v1, newer ones autoscaling/v2.
    for v in [OLDEST, LATEST] {
        s.ok(
            v,
            &["create", "deployment", &format!("w{v}"), "--image=nginx"],
        );
        s.ok(
            v,
            &[
                "autoscale",
                "deploy",
                &format!("w{v}"),
                "--min=2",
                "--max=5",
                "--cpu-percent=60",
            ],
        );
    }
    for name in ["w27", "w33"] {
        let v2 = s.json(
            LATEST,
            &["get", "horizontalpodautoscalers.v2.autoscaling", name],
        );
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            60
        );
        let v1 = s.json(
            LATEST,
            &["get", "horizontalpodautoscalers.v1.autoscaling", name],
        );
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert_eq!(v1["spec"]["minReplicas"], 2);
    }
    // A v2-only field survives a round trip through v1.
    s.ok(
        LATEST,
        &[
            "patch",
            "hpa",
            "w33",
            "--type=merge",
            "-p",
            r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":60}}}}"#,
        ],
    );
    let v1 = s.json(
        LATEST,
        &["get", "horizontalpodautoscalers.v1.autoscaling", "w33"],
    );
    s.ok_stdin(OLDEST, &["replace", "-f", "-"], Some(&v1.to_string()));
    let v2 = s.json(
        LATEST,
        &["get", "horizontalpodautoscalers.v2.autoscaling", "w33"],
    );
    assert_eq!(
        v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        60
    );
    assert!(v2["metadata"]["annotations"].is_null(), "{v2}");
    let out = s.ok(LATEST, &["get", "hpa"]);
    assert!(out.contains("cpu: <unknown>/60%"), "{out}");
}
