//! Integration test: Events go through the shared recorder (`distro_client::events`), which
//! folds repeats into one Event as upstream's recorder does: the same reason and message
//! about the same object bumps `count` and `lastTimestamp` (a merge PATCH on the real
//! apiserver) instead of adding Events, and `kubectl describe` shows `(xN over ...)`.

use std::path::Path;
use std::time::Duration;

use distro_testharness::{eventually, Server, LATEST};
use serde_json::Value;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_distro"))
}

const EVERY: Duration = Duration::from_millis(250);

#[test]
fn repeated_events_count_up_on_one_event() {
    // An autoscaler syncing every second whose target does not exist fails the same way
    // each time: FailedGetScale with one message.
    let s = Server::start_with(bin(), &["--horizontal-pod-autoscaler-sync-period=1s"]);
    let ghost = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: ghost}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: ghost}\n  maxReplicas: 3\n";
    s.ok_stdin(LATEST, &["apply", "-f", "-"], Some(ghost));

    let event = eventually(
        Duration::from_secs(60),
        EVERY,
        "one FailedGetScale event counted three times",
        || {
            let list: Value = s.json(
                LATEST,
                &[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=ghost,reason=FailedGetScale",
                ],
            );
            let items = list["items"].as_array()?;
            (items.len() == 1 && items[0]["count"].as_i64()? >= 3).then(|| items[0].clone())
        },
    );
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["source"]["component"], "horizontal-pod-autoscaler");
    assert_eq!(event["involvedObject"]["kind"], "HorizontalPodAutoscaler");
    assert_ne!(
        event["firstTimestamp"], event["lastTimestamp"],
        "repeats move lastTimestamp: {event}"
    );
    let message = event["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("failed to query scale subresource for Deployment/default/ghost"),
        "{message}"
    );

    let describe = s.ok(LATEST, &["describe", "hpa", "ghost"]);
    assert!(
        describe.contains("FailedGetScale") && describe.contains("(x"),
        "describe shows the count:\n{describe}"
    );
}
