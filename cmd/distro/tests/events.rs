//! Integration test: core/v1 and events.k8s.io/v1 Events are one resource in two versions.

use std::path::Path;

use distro_testharness::{Server, LATEST};

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
