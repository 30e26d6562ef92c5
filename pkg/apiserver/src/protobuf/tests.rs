//! Hand-encoded protobuf bodies, as kubectl 1.32+ sends them, and the JSON upstream would store.

use super::*;
use serde_json::json;

// --- a tiny protobuf encoder --------------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint field.
fn v(tag: u32, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag) << 3, &mut out);
    varint(value, &mut out);
    out
}

/// A length-delimited field.
fn l(tag: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(u64::from(tag) << 3 | 2, &mut out);
    varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn s(tag: u32, text: &str) -> Vec<u8> {
    l(tag, text.as_bytes())
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A map entry field.
fn entry(tag: u32, key: &str, value: &[u8]) -> Vec<u8> {
    l(tag, &cat(&[s(1, key), l(2, value)]))
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = cat(&[s(1, api_version), s(2, kind)]);
    let mut out = MAGIC.to_vec();
    out.extend(cat(&[l(1, &type_meta), l(2, raw), s(3, ""), s(4, "")]));
    out
}

/// ObjectMeta as client-go marshals a fresh object: value fields always, zero included.
fn meta(name: &str, namespace: &str) -> Vec<u8> {
    cat(&[
        s(1, name),
        s(2, ""),
        s(3, namespace),
        s(4, ""),
        s(5, ""),
        s(6, ""),
        v(7, 0),
        l(8, &[]),
        s(15, ""),
    ])
}

fn intstr_int(i: u64) -> Vec<u8> {
    cat(&[v(1, 0), v(2, i), s(3, "")])
}

// --- tests -------------------------------------------------------------------------------------

#[test]
fn configmap() {
    let raw = cat(&[
        l(1, &meta("x", "default")),
        entry(2, "b", b"2"),
        entry(2, "a", b"1"),
    ]);
    let got = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "namespace": "default", "creationTimestamp": null},
            "data": {"a": "1", "b": "2"}
        })
    );
    // Map keys come out sorted, like Go's encoding/json.
    assert_eq!(
        got["data"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["a", "b"]
    );
    // apiVersion and kind lead, as upstream writes them.
    assert_eq!(
        got.as_object().unwrap().keys().next().unwrap(),
        "apiVersion"
    );
}

#[test]
fn secret_bytes_are_base64() {
    let raw = cat(&[
        l(1, &meta("s", "")),
        entry(2, "k", b"v\x00\xff"),
        s(3, "Opaque"),
    ]);
    let got = decode(&envelope("v1", "Secret", &raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "creationTimestamp": null},
            "data": {"k": "dgD/"},
            "type": "Opaque"
        })
    );
}

#[test]
fn deployment_with_zero_replicas_ports_and_quantities() {
    let port = cat(&[s(1, ""), v(2, 0), v(3, 8080), s(4, "TCP"), s(5, "")]);
    let resources = cat(&[
        entry(1, "memory", &s(1, "128Mi")),
        entry(2, "cpu", &s(1, "100m")),
    ]);
    let container = cat(&[
        s(1, "busybox"),
        s(2, "busybox"),
        s(5, ""),
        l(6, &port),
        l(8, &resources),
        s(13, ""),
        s(14, ""),
        v(16, 0),
        v(17, 0),
        v(18, 0),
    ]);
    let labels = entry(11, "app", &[]);
    let pod_meta = cat(&[meta("", ""), labels.clone()]);
    let pod_spec = cat(&[
        l(2, &container),
        s(3, ""),
        s(6, ""),
        s(8, ""),
        s(9, ""),
        s(10, ""),
        v(11, 0),
        v(12, 0),
        v(13, 0),
    ]);
    let template = cat(&[l(1, &pod_meta), l(2, &pod_spec)]);
    let selector = entry(1, "app", b"d");
    let spec = cat(&[
        v(1, 0),
        l(2, &selector),
        l(3, &template),
        l(4, &[]),
        v(5, 0),
        v(7, 0),
    ]);
    let status = cat(&[v(1, 0), v(2, 0), v(3, 0), v(4, 0), v(5, 0)]);
    let raw = cat(&[
        l(1, &cat(&[meta("d", ""), entry(11, "app", b"d")])),
        l(2, &spec),
        l(3, &status),
    ]);
    let got = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "creationTimestamp": null, "labels": {"app": "d"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "d"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": ""}},
                    "spec": {"containers": [{
                        "name": "busybox",
                        "image": "busybox",
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}}
                    }]}
                },
                "strategy": {}
            },
            "status": {}
        })
    );
}

#[test]
fn service_target_port_int_or_string() {
    let p1 = cat(&[
        s(1, "80-8080"),
        s(2, "TCP"),
        v(3, 80),
        l(4, &intstr_int(8080)),
        v(5, 0),
    ]);
    let p2 = cat(&[
        s(1, "web"),
        s(2, "TCP"),
        v(3, 443),
        l(4, &cat(&[v(1, 1), v(2, 0), s(3, "https")])),
        v(5, 0),
    ]);
    let spec = cat(&[
        l(1, &p1),
        l(1, &p2),
        entry(2, "app", b"s1"),
        s(3, ""),
        s(4, "ClusterIP"),
    ]);
    let raw = cat(&[l(1, &meta("s1", "")), l(2, &spec), l(3, &l(1, &[]))]);
    let got = decode(&envelope("v1", "Service", &raw)).unwrap();
    assert_eq!(
        got["spec"],
        json!({
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "web", "protocol": "TCP", "port": 443, "targetPort": "https"}
            ],
            "selector": {"app": "s1"},
            "type": "ClusterIP"
        })
    );
    assert_eq!(got["status"], json!({"loadBalancer": {}}));
}

#[test]
fn token_request() {
    let spec = cat(&[s(1, "https://kubernetes.default.svc"), v(4, 3600)]);
    let status = cat(&[s(1, ""), l(2, &[])]);
    let raw = cat(&[
        l(1, &meta("default", "default")),
        l(2, &spec),
        l(3, &status),
    ]);
    let got = decode(&envelope("authentication.k8s.io/v1", "TokenRequest", &raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": "default", "namespace": "default", "creationTimestamp": null},
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
            "status": {"token": "", "expirationTimestamp": null}
        })
    );
}

#[test]
fn self_subject_access_review() {
    let attrs = cat(&[
        s(1, "default"),
        s(2, "create"),
        s(3, "apps"),
        s(4, ""),
        s(5, "deployments"),
        s(6, ""),
        s(7, ""),
    ]);
    let raw = cat(&[
        l(1, &meta("", "")),
        l(2, &l(1, &attrs)),
        l(3, &cat(&[v(1, 0), v(4, 0), s(2, ""), s(3, "")])),
    ]);
    let got = decode(&envelope(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &raw,
    ))
    .unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "metadata": {"creationTimestamp": null},
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "group": "apps", "resource": "deployments"}},
            // `allowed` has no omitempty upstream: kept even when false.
            "status": {"allowed": false}
        })
    );
}

#[test]
fn priority_class_value_zero_is_kept() {
    let raw = cat(&[l(1, &meta("p", "")), v(2, 0), v(3, 0), s(4, "")]);
    let got = decode(&envelope("scheduling.k8s.io/v1", "PriorityClass", &raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "p", "creationTimestamp": null},
            "value": 0
        })
    );
}

#[test]
fn negative_int32_and_pointer_false() {
    // PodSpec.automountServiceAccountToken (pointer) false is kept; hostNetwork (value) false is not;
    // a negative int32 arrives as a 10-byte varint.
    let pod_spec = cat(&[v(21, 0), v(11, 0), v(4, (-5i64) as u64)]);
    let raw = cat(&[l(1, &meta("p", "")), l(2, &pod_spec)]);
    let got = decode(&envelope("v1", "Pod", &raw)).unwrap();
    assert_eq!(
        got["spec"],
        json!({"terminationGracePeriodSeconds": -5, "automountServiceAccountToken": false})
    );
}

#[test]
fn times_durations_and_eviction() {
    // Eviction with DeleteOptions (gracePeriodSeconds 0 is a pointer: kept).
    let delete_options = cat(&[v(1, 0)]);
    let created = cat(&[v(1, 1_700_000_000), v(2, 5)]);
    let raw = cat(&[
        l(1, &cat(&[meta("pod", "ns"), l(8, &created)])),
        l(2, &delete_options),
    ]);
    let got = decode(&envelope("policy/v1", "Eviction", &raw)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "pod", "namespace": "ns", "creationTimestamp": "2023-11-14T22:13:20Z"},
            "deleteOptions": {"gracePeriodSeconds": 0}
        })
    );
    assert_eq!(
        time(&cat(&[v(1, 1_700_000_000), v(2, 123_456_789)]), true).unwrap(),
        json!("2023-11-14T22:13:20.123456Z")
    );
    for (nanos, want) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5µs"),
        (300_000_000, "300ms"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (3_600_000_000_000, "1h0m0s"),
        (5_445_000_000_000, "1h30m45s"),
        (-90_000_000_000, "-1m30s"),
    ] {
        assert_eq!(go_duration(nanos), want);
    }
}

#[test]
fn raw_extension_and_fields_v1() {
    // ManagedFieldsEntry.fieldsV1 {Raw} is embedded JSON.
    let mf = cat(&[
        s(1, "kubectl"),
        s(2, "Update"),
        s(3, "v1"),
        s(6, "FieldsV1"),
        l(7, &s(1, r#"{"f:data":{}}"#)),
    ]);
    let raw = cat(&[l(1, &cat(&[meta("x", ""), l(17, &mf)]))]);
    let got = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(
        got["metadata"]["managedFields"],
        json!([{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}])
    );
}

#[test]
fn meta_kinds_resolve_in_any_group() {
    let raw = cat(&[v(1, 30), s(4, "Foreground")]);
    let got = decode(&envelope("apps/v1", "DeleteOptions", &raw)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 30, "propagationPolicy": "Foreground"})
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(decode(b"{}").is_err());
    assert!(decode(b"k8s\0").is_err());
    assert!(decode(&envelope("v1", "NoSuchKind", &[])).is_err());
    // Truncated length, bad wire type, invalid UTF-8, deep nesting.
    let mut body = envelope("v1", "ConfigMap", &[]);
    body.extend([0x12, 0x10, 0x0a]);
    assert!(decode(&body).is_err());
    assert!(decode(&envelope("v1", "ConfigMap", &[0x0b])).is_err());
    assert!(decode(&envelope("v1", "ConfigMap", &l(1, &l(1, &[0xff])))).is_err());
    let mut nested = Vec::new();
    for _ in 0..200 {
        nested = l(1, &nested); // JSONSchemaProps.not -> JSONSchemaProps ...
    }
    let _ = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "JSONSchemaProps",
        &nested,
    ));
    for n in 0..64 {
        let body = envelope("v1", "Pod", &vec![0xffu8; n]);
        let _ = decode(&body);
    }
}

#[test]
fn table_covers_all_kinds_kubectl_creates() {
    for (av, kind) in [
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "Service"),
        ("v1", "Namespace"),
        ("v1", "ServiceAccount"),
        ("v1", "ResourceQuota"),
        ("apps/v1", "Deployment"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("policy/v1", "PodDisruptionBudget"),
        ("policy/v1", "Eviction"),
        ("networking.k8s.io/v1", "Ingress"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
        ("certificates.k8s.io/v1", "CertificateSigningRequest"),
        ("autoscaling/v1", "Scale"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        ("apiregistration.k8s.io/v1", "APIService"),
        ("v1", "DeleteOptions"),
    ] {
        assert!(lookup(av, kind).is_some(), "{av} {kind}");
    }
    // Field names that Rust's snake_case would have garbled.
    let names: Vec<&str> = MESSAGES
        .iter()
        .flat_map(|m| m.fields.iter().map(|f| f.json))
        .collect();
    for name in [
        "podIPs",
        "hostIPC",
        "clusterIP",
        "externalIPs",
        "nodeSelectorTerms",
        "hostIP",
        "x-kubernetes-preserve-unknown-fields",
        "$ref",
        "insecureSkipTLSVerify",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}
