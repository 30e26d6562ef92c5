use serde_json::{json, Value};

use super::*;
use crate::schema::{FieldInfo, ListType, StaticSchema};

// ---------------- RFC 6902 (appendix A examples) ----------------

#[test]
fn rfc6902_examples() {
    let cases: Vec<(Value, Value, Value)> = vec![
        // A.1 add object member
        (
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/baz", "value": "qux"}]),
            json!({"foo": "bar", "baz": "qux"}),
        ),
        // A.2 add array element
        (
            json!({"foo": ["bar", "baz"]}),
            json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
            json!({"foo": ["bar", "qux", "baz"]}),
        ),
        // A.3 remove object member
        (
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "remove", "path": "/baz"}]),
            json!({"foo": "bar"}),
        ),
        // A.4 remove array element
        (
            json!({"foo": ["bar", "qux", "baz"]}),
            json!([{"op": "remove", "path": "/foo/1"}]),
            json!({"foo": ["bar", "baz"]}),
        ),
        // A.5 replace
        (
            json!({"baz": "qux", "foo": "bar"}),
            json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
            json!({"baz": "boo", "foo": "bar"}),
        ),
        // A.6 move value
        (
            json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
            json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
            json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
        ),
        // A.7 move array element
        (
            json!({"foo": ["all", "grass", "cows", "eat"]}),
            json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
            json!({"foo": ["all", "cows", "eat", "grass"]}),
        ),
        // A.8 test success
        (
            json!({"baz": "qux", "foo": ["a", 2, "c"]}),
            json!([{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}]),
            json!({"baz": "qux", "foo": ["a", 2, "c"]}),
        ),
        // A.10 add nested member
        (
            json!({"foo": "bar"}),
            json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
            json!({"foo": "bar", "child": {"grandchild": {}}}),
        ),
        // A.12 add to nonexistent target fails -> see errors
        // A.14 ~ escaping
        (
            json!({"/": 9, "~1": 10}),
            json!([{"op": "test", "path": "/~01", "value": 10}]),
            json!({"/": 9, "~1": 10}),
        ),
        (
            json!({"a/b": 1, "m~n": 2}),
            json!([{"op": "replace", "path": "/a~1b", "value": 3}, {"op": "remove", "path": "/m~0n"}]),
            json!({"a/b": 3}),
        ),
        // A.16 add array value
        (
            json!({"foo": ["bar"]}),
            json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
            json!({"foo": ["bar", ["abc", "def"]]}),
        ),
        // copy
        (
            json!({"a": {"b": 1}}),
            json!([{"op": "copy", "from": "/a", "path": "/c"}]),
            json!({"a": {"b": 1}, "c": {"b": 1}}),
        ),
        // numbers compare by value
        (
            json!({"n": 1}),
            json!([{"op": "test", "path": "/n", "value": 1.0}]),
            json!({"n": 1}),
        ),
        // whole-document replace
        (
            json!({"a": 1}),
            json!([{"op": "replace", "path": "", "value": [1]}]),
            json!([1]),
        ),
        // negative index (evanphx extension)
        (
            json!({"a": [1, 2, 3]}),
            json!([{"op": "remove", "path": "/a/-1"}]),
            json!({"a": [1, 2]}),
        ),
        // add at end index
        (
            json!({"a": [1]}),
            json!([{"op": "add", "path": "/a/1", "value": 2}]),
            json!({"a": [1, 2]}),
        ),
    ];
    for (doc, patch, want) in cases {
        assert_eq!(json_patch(&doc, &patch).unwrap(), want, "{patch}");
    }
}

#[test]
fn rfc6902_errors_are_atomic_and_worded() {
    let doc = json!({"foo": "bar", "arr": [1]});
    let cases = [
        // A.9 test failure
        (json!([{"op": "test", "path": "/foo", "value": "baz"}]), "testing value /foo failed: test failed"),
        // A.12 add to a nonexistent target
        (json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]), "add operation does not apply: doc is missing path: \"/baz/bat\": missing value"),
        (json!([{"op": "replace", "path": "/nope", "value": 1}]), "replace operation does not apply: doc is missing key: /nope: missing value"),
        (json!([{"op": "remove", "path": "/nope"}]), "error in remove for path: '/nope': Unable to remove nonexistent key: nope: missing value"),
        (json!([{"op": "remove", "path": "/arr/5"}]), "error in remove for path: '/arr/5': Unable to remove invalid index: 5: invalid index referenced"),
        (json!([{"op": "add", "path": "/arr/5", "value": 1}]), "error in add for path: '/arr/5': Unable to access invalid index: 5: invalid index referenced"),
        (json!([{"op": "frob", "path": "/foo"}]), "Unexpected kind: frob"),
        (json!([{"op": "move", "from": "/nope", "path": "/x"}]), "move operation does not apply: doc is missing from path: /nope: missing value"),
        // first op succeeds, second fails: nothing is applied
        (json!([{"op": "add", "path": "/x", "value": 1}, {"op": "remove", "path": "/y"}]), "error in remove for path: '/y': Unable to remove nonexistent key: y: missing value"),
    ];
    for (patch, want) in cases {
        let err = json_patch(&doc, &patch).unwrap_err();
        assert!(matches!(err, Error::JsonPatchApply(_)), "{patch}");
        assert_eq!(err.to_string(), want, "{patch}");
    }
    let err = json_patch(&doc, &json!({"op": "add"})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    );
    assert_eq!(doc, json!({"foo": "bar", "arr": [1]}));
}

// ---------------- RFC 7386 (appendix A) ----------------

#[test]
fn rfc7386_examples() {
    let cases = [
        (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
        (
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        ),
        (json!({"a": "b"}), json!({"a": null}), json!({})),
        (
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        ),
        (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
        (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
        (
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        ),
        (
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        ),
        (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
        (json!({"a": "b"}), json!(["c"]), json!(["c"])),
        (json!({"a": "foo"}), json!(null), json!(null)),
        (json!({"a": "foo"}), json!("bar"), json!("bar")),
        (
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        ),
        (
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        ),
        (
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        ),
    ];
    for (doc, patch, want) in cases {
        assert_eq!(merge_patch(&doc, &patch), want, "{doc} + {patch}");
    }
}

// ---------------- strategic merge patch ----------------

const POD: &str = "io.k8s.api.core.v1.Pod";
const SPEC: &str = "io.k8s.api.core.v1.PodSpec";
const CONTAINER: &str = "io.k8s.api.core.v1.Container";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn schema() -> StaticSchema {
    StaticSchema::new()
        .with(POD, "metadata", FieldInfo::object(META))
        .with(POD, "spec", FieldInfo::object(SPEC))
        .with(META, "labels", FieldInfo::map_of(None))
        .with(
            META,
            "finalizers",
            FieldInfo::list_of_scalars()
                .merge_on("")
                .with_list_type(ListType::Set),
        )
        .with(
            META,
            "ownerReferences",
            FieldInfo::list_of("io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference")
                .merge_on("uid"),
        )
        .with(
            SPEC,
            "containers",
            FieldInfo::list_of(CONTAINER).merge_on("name"),
        )
        .with(
            SPEC,
            "volumes",
            FieldInfo::list_of("io.k8s.api.core.v1.Volume")
                .merge_on("name")
                .retain_keys(),
        )
        .with(
            SPEC,
            "tolerations",
            FieldInfo::list_of("io.k8s.api.core.v1.Toleration").with_list_type(ListType::Atomic),
        )
        .with(SPEC, "nodeSelector", FieldInfo::map_of(None))
        .with(
            SPEC,
            "affinity",
            FieldInfo::object("io.k8s.api.core.v1.Affinity"),
        )
        .with(
            SPEC,
            "securityContext",
            FieldInfo::object("io.k8s.api.core.v1.PodSecurityContext").replace(),
        )
        .with(
            CONTAINER,
            "env",
            FieldInfo::list_of("io.k8s.api.core.v1.EnvVar").merge_on("name"),
        )
        .with(
            CONTAINER,
            "ports",
            FieldInfo::list_of("io.k8s.api.core.v1.ContainerPort").merge_on("containerPort"),
        )
        .with(
            CONTAINER,
            "volumeMounts",
            FieldInfo::list_of("io.k8s.api.core.v1.VolumeMount").merge_on("mountPath"),
        )
        .with(CONTAINER, "args", FieldInfo::list_of_scalars())
        .with(
            CONTAINER,
            "resources",
            FieldInfo::object("io.k8s.api.core.v1.ResourceRequirements"),
        )
        .with(
            "io.k8s.api.core.v1.ResourceRequirements",
            "limits",
            FieldInfo::map_of(None),
        )
}

fn smp(doc: Value, patch: Value) -> Result<Value, Error> {
    strategic_merge_patch(&doc, &patch, &schema(), POD)
}

fn ok(doc: Value, patch: Value, want: Value) {
    let got = smp(doc.clone(), patch.clone()).unwrap_or_else(|e| panic!("{patch}: {e}"));
    assert_eq!(got, want, "\ndoc:   {doc}\npatch: {patch}");
}

#[test]
fn smp_maps_merge_and_null_deletes() {
    ok(
        json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
        json!({"metadata": {"name": "p", "labels": {"a": "1", "c": "3"}}}),
    );
    // null for an absent key is ignored, not stored
    ok(json!({"a": 1}), json!({"b": null}), json!({"a": 1}));
    // type change replaces
    ok(json!({"a": {"x": 1}}), json!({"a": [1]}), json!({"a": [1]}));
}

#[test]
fn smp_containers_merge_by_name() {
    ok(
        json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"},
            {"name": "b", "image": "b:1"}
        ]}}),
        json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
        json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"},
            {"name": "b", "image": "b:2"},
            {"name": "c", "image": "c:1"}
        ]}}),
    );
}

#[test]
fn smp_env_by_name_nested_in_container() {
    ok(
        json!({"spec": {"containers": [{"name": "a", "image": "i", "env": [
            {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}
        ]}]}}),
        json!({"spec": {"containers": [{"name": "a", "env": [
            {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}, {"name": "X", "$patch": "delete"}
        ]}]}}),
        json!({"spec": {"containers": [{"name": "a", "image": "i", "env": [
            {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}
        ]}]}}),
    );
}

#[test]
fn smp_ports_by_container_port() {
    ok(
        json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}]}}),
        json!({"spec": {"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}
        ]}]}}),
        json!({"spec": {"containers": [{"name": "a", "ports": [
            {"containerPort": 80, "name": "http", "protocol": "TCP"}, {"containerPort": 443}
        ]}]}}),
    );
}

#[test]
fn smp_patch_delete_and_replace_in_lists() {
    let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
    ok(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
        json!({"spec": {"containers": [{"name": "a"}, {"name": "c"}]}}),
    );
    ok(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "z", "image": "z"}, {"$patch": "replace"}]}}),
        json!({"spec": {"containers": [{"name": "z", "image": "z"}]}}),
    );
    let err = smp(
        doc.clone(),
        json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "merging lists cannot yet be specified in the patch"
    );
    let err = smp(
        doc.clone(),
        json!({"spec": {"containers": [{"image": "x"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "map: map[image:x] does not contain declared merge key: name"
    );
    let err = smp(
        doc,
        json!({"spec": {"containers": [{"name": "a", "$patch": "frob"}]}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown patch type: frob in map: map[$patch:frob name:a]"
    );
}

#[test]
fn smp_patch_directives_on_maps() {
    ok(
        json!({"spec": {"affinity": {"nodeAffinity": {"x": 1}, "podAffinity": {"y": 2}}}}),
        json!({"spec": {"affinity": {"$patch": "replace", "podAffinity": {"z": 3}}}}),
        json!({"spec": {"affinity": {"podAffinity": {"z": 3}}}}),
    );
    ok(
        json!({"spec": {"affinity": {"nodeAffinity": {"x": 1}}, "hostname": "h"}}),
        json!({"spec": {"affinity": {"$patch": "delete"}}}),
        json!({"spec": {"affinity": {}, "hostname": "h"}}),
    );
    let err = smp(
        json!({"spec": {"affinity": {"a": 1}}}),
        json!({"spec": {"affinity": {"$patch": "merge"}}}),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown patch type: merge in map: map[$patch:merge]"
    );
    // patchStrategy=replace on a struct field replaces it whole
    ok(
        json!({"spec": {"securityContext": {"runAsUser": 1, "fsGroup": 2}}}),
        json!({"spec": {"securityContext": {"runAsUser": 5}}}),
        json!({"spec": {"securityContext": {"runAsUser": 5}}}),
    );
}

#[test]
fn smp_primitive_lists() {
    // no strategy: replace
    ok(
        json!({"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}}),
        json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
        json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
    );
    // merge strategy: union, patch order with server-only items interleaved
    ok(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"finalizers": ["d", "b"]}}),
        json!({"metadata": {"finalizers": ["d", "a", "b", "c"]}}),
    );
    ok(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "x"]}}),
        json!({"metadata": {"finalizers": ["a", "c"]}}),
    );
    // deleting from an absent list is a no-op
    ok(
        json!({"metadata": {"name": "n"}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
        json!({"metadata": {"name": "n"}}),
    );
    let err = smp(
        json!({"metadata": {"finalizers": ["a"]}}),
        json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
    )
    .unwrap_err();
    assert_eq!(err, Error::BadPatchFormatForPrimitiveList);
}

#[test]
fn smp_atomic_and_unknown_lists_replace() {
    ok(
        json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
        json!({"spec": {"tolerations": [{"key": "c"}]}}),
        json!({"spec": {"tolerations": [{"key": "c"}]}}),
    );
    // unknown field: JSON merge patch semantics (maps merge, lists replaced)
    ok(
        json!({"spec": {"mystery": {"a": 1, "l": [1, 2]}}}),
        json!({"spec": {"mystery": {"b": 2, "l": [3]}}}),
        json!({"spec": {"mystery": {"a": 1, "b": 2, "l": [3]}}}),
    );
}

#[test]
fn smp_retain_keys() {
    ok(
        json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/x"}, "emptyDir": {}}]}}),
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}}]}}),
        json!({"spec": {"volumes": [{"name": "v", "configMap": {"name": "cm"}}]}}),
    );
    let err = smp(
        json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}}),
        json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["name"], "configMap": {"name": "cm"}}]}}),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "invalid patch format of retainKeys");
    let err = smp(
        json!({"spec": {}}),
        json!({"spec": {"$retainKeys": "name"}}),
    )
    .unwrap_err();
    assert_eq!(err, Error::BadPatchFormatForRetainKeys);
}

#[test]
fn smp_set_element_order() {
    // reorder only
    ok(
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
        json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {"containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}]}}),
    );
    // change + insert in a specific place (what kubectl apply sends)
    ok(
        json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "c", "image": "1"}]}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
            "containers": [{"name": "b", "image": "2"}, {"name": "c", "image": "2"}]
        }}),
        json!({"spec": {"containers": [
            {"name": "a", "image": "1"}, {"name": "b", "image": "2"}, {"name": "c", "image": "2"}
        ]}}),
    );
    // primitive list
    ok(
        json!({"metadata": {"finalizers": ["a", "b"]}}),
        json!({"metadata": {"$setElementOrder/finalizers": ["c", "b", "a"], "finalizers": ["c"]}}),
        json!({"metadata": {"finalizers": ["c", "b", "a"]}}),
    );
    // patch items out of the declared order are rejected
    let err = smp(
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "x"}, {"name": "a", "image": "y"}]
        }}),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("The order in patch list:"),
        "{err}"
    );
}

#[test]
fn smp_new_subtrees_are_sanitized() {
    ok(
        json!({"spec": {}}),
        json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}], "image": null}]}}),
        json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X"}]}]}}),
    );
}

#[test]
fn smp_top_level_and_bad_docs() {
    ok(
        json!({"a": 1, "b": 2}),
        json!({"$patch": "replace", "c": 3}),
        json!({"c": 3}),
    );
    ok(json!({"a": 1}), json!({"$patch": "delete"}), json!({}));
    assert_eq!(smp(json!([]), json!({})).unwrap_err(), Error::BadJsonDoc);
    assert_eq!(
        smp(json!({}), json!([1])).unwrap_err().to_string(),
        "invalid JSON document"
    );
    let err = smp(
        json!({"metadata": {"finalizers": [["a"]]}}),
        json!({"metadata": {"finalizers": ["b"]}}),
    )
    .unwrap_err();
    assert_eq!(err, Error::NoListOfLists);
}

#[test]
fn smp_map_typed_fields_merge_keys() {
    ok(
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}),
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": null, "nvidia.com/gpu": "1"}}}]}}),
        json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}}}]}}),
    );
}

#[test]
fn smp_owner_references_by_uid() {
    ok(
        json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}, {"uid": "2", "name": "b"}]}}),
        json!({"metadata": {"ownerReferences": [{"uid": "2", "controller": true}]}}),
        json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}, {"uid": "2", "name": "b", "controller": true}]}}),
    );
}
