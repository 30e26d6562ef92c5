//! `storage.k8s.io`: StorageClasses, CSIDrivers, CSINodes, VolumeAttachments.

use k8s_openapi::api::storage::v1 as storage;
use serde_json::{json, Value};

use super::util::{self, arr, enum_check, required, s, set_default};
use super::{Builtin, Entry, ALL_VERBS};
use crate::error::FieldError;
use crate::table::{self, Column};

/// Catalogue entries of `storage.k8s.io/v1`.
pub fn entries() -> Vec<Entry> {
    vec![
        entry!(
            "storage.k8s.io",
            "v1",
            "CSIDriver",
            "csidrivers",
            ns = false,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.storage.v1.CSIDriver",
            Builtin::of::<storage::CSIDriver>()
                .defaults(csidriver_defaults)
                .validate(csidriver_validate)
                .validate_update(csidriver_validate_update)
                .table(csidriver_columns, csidriver_cells)
        ),
        entry!(
            "storage.k8s.io",
            "v1",
            "CSINode",
            "csinodes",
            ns = false,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.storage.v1.CSINode",
            Builtin::of::<storage::CSINode>()
                .validate(csinode_validate)
                .table(csinode_columns, csinode_cells)
        ),
        entry!(
            "storage.k8s.io",
            "v1",
            "StorageClass",
            "storageclasses",
            ns = false,
            short = ["sc"],
            cat = [],
            verbs = ALL_VERBS,
            sub = [],
            def = "io.k8s.api.storage.v1.StorageClass",
            Builtin::of::<storage::StorageClass>()
                .defaults(sc_defaults)
                .validate(sc_validate)
                .validate_update(sc_validate_update)
                .table(sc_columns, sc_cells)
        ),
        entry!(
            "storage.k8s.io",
            "v1",
            "VolumeAttachment",
            "volumeattachments",
            ns = false,
            short = [],
            cat = [],
            verbs = ALL_VERBS,
            sub = ["status"],
            def = "io.k8s.api.storage.v1.VolumeAttachment",
            Builtin::of::<storage::VolumeAttachment>()
                .status()
                .validate(va_validate)
                .validate_update(va_validate_update)
                .table(va_columns, va_cells)
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// StorageClass

fn sc_defaults(obj: &mut Value) {
    util::set_default_str(obj, "reclaimPolicy", "Delete");
    util::set_default_str(obj, "volumeBindingMode", "Immediate");
}

fn sc_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let p = s(&obj["provisioner"]);
    if p.is_empty() {
        errs.push(required("provisioner", ""));
    } else {
        for m in distro_apimachinery::validation::is_qualified_name(&p.to_lowercase()) {
            errs.push(FieldError::invalid("provisioner", &obj["provisioner"], m));
        }
    }
    enum_check(
        &mut errs,
        "reclaimPolicy",
        &obj["reclaimPolicy"],
        &["Delete", "Retain"],
    );
    enum_check(
        &mut errs,
        "volumeBindingMode",
        &obj["volumeBindingMode"],
        &["Immediate", "WaitForFirstConsumer"],
    );
    errs
}

fn sc_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for k in ["parameters", "provisioner", "reclaimPolicy"] {
        if !util::same(&obj[k], &old[k]) {
            errs.push(FieldError::forbidden(
                k,
                format!("updates to {k} are forbidden."),
            ));
        }
    }
    util::immutable(
        &mut errs,
        "volumeBindingMode",
        &obj["volumeBindingMode"],
        &old["volumeBindingMode"],
    );
    errs
}

fn sc_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Provisioner", "Indicates the type of the provisioner."),
        Column::new("ReclaimPolicy", "Dynamically provisioned PersistentVolumes of this storage class are created with this reclaimPolicy. Defaults to Delete."),
        Column::new("VolumeBindingMode", "VolumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound. When unset, VolumeBindingImmediate is used. This field is only honored by servers that enable the VolumeScheduling feature."),
        Column::new("AllowVolumeExpansion", "AllowVolumeExpansion shows whether the storage class allow volume expand."),
        Column::age(),
    ]
}

/// True for the cluster's default class (GA and beta annotations).
pub fn is_default_class(obj: &Value) -> bool {
    let a = &obj["metadata"]["annotations"];
    s(&a["storageclass.kubernetes.io/is-default-class"]) == "true"
        || s(&a["storageclass.beta.kubernetes.io/is-default-class"]) == "true"
}

fn sc_cells(obj: &Value) -> Vec<Value> {
    let mut name = table::name(obj).to_string();
    if is_default_class(obj) {
        name.push_str(" (default)");
    }
    let or = |v: &Value, d: &str| {
        if s(v).is_empty() {
            d.to_string()
        } else {
            s(v).to_string()
        }
    };
    vec![
        json!(name),
        json!(s(&obj["provisioner"])),
        json!(or(&obj["reclaimPolicy"], "Delete")),
        json!(or(&obj["volumeBindingMode"], "Immediate")),
        json!(obj["allowVolumeExpansion"].as_bool().unwrap_or(false)),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// CSIDriver

fn csidriver_defaults(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, "attachRequired", json!(true));
    set_default(spec, "podInfoOnMount", json!(false));
    set_default(spec, "storageCapacity", json!(false));
    set_default(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    set_default(spec, "requiresRepublish", json!(false));
    set_default(spec, "seLinuxMount", json!(false));
    if util::is_empty(&spec["volumeLifecycleModes"]) {
        spec["volumeLifecycleModes"] = json!(["Persistent"]);
    }
}

fn csidriver_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = s(&obj["metadata"]["name"]);
    if name.len() > 63 {
        errs.push(util::too_long("metadata.name", 63));
    }
    let spec = &obj["spec"];
    enum_check(
        &mut errs,
        "spec.fsGroupPolicy",
        &spec["fsGroupPolicy"],
        &["File", "None", "ReadWriteOnceWithFSType"],
    );
    for (i, m) in arr(&spec["volumeLifecycleModes"]).iter().enumerate() {
        enum_check(
            &mut errs,
            &format!("spec.volumeLifecycleModes[{i}]"),
            m,
            &["Ephemeral", "Persistent"],
        );
    }
    errs
}

fn csidriver_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for k in [
        "attachRequired",
        "podInfoOnMount",
        "volumeLifecycleModes",
        "fsGroupPolicy",
    ] {
        util::immutable(
            &mut errs,
            &format!("spec.{k}"),
            &obj["spec"][k],
            &old["spec"][k],
        );
    }
    errs
}

fn csidriver_columns() -> Vec<Column> {
    let b = |name, desc| Column {
        kind: "boolean",
        ..Column::new(name, desc)
    };
    vec![
        Column::name(),
        b("AttachRequired", "Indicates this CSI volume driver requires an attach operation, and that Kubernetes should call attach and wait for any attach operation to complete before proceeding to mounting."),
        b("PodInfoOnMount", "Indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations."),
        b("StorageCapacity", "Indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information."),
        Column::new("TokenRequests", "Indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
        b("RequiresRepublish", "RequiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume."),
        Column::new("Modes", "Defines the volume lifecycle modes supported by this CSI volume driver."),
        Column::age(),
    ]
}

fn csidriver_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    let b = |k: &str, d: bool| json!(spec[k].as_bool().unwrap_or(d));
    let modes: Vec<&str> = arr(&spec["volumeLifecycleModes"]).iter().map(s).collect();
    let tokens = match spec["tokenRequests"].as_array() {
        Some(t) => t
            .iter()
            .map(|x| s(&x["audience"]))
            .collect::<Vec<_>>()
            .join(","),
        None => "<unset>".into(),
    };
    vec![
        json!(table::name(obj)),
        b("attachRequired", true),
        b("podInfoOnMount", false),
        b("storageCapacity", false),
        json!(tokens),
        b("requiresRepublish", false),
        table::or_none(modes.join(",")),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// CSINode

fn csinode_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, d) in arr(&obj["spec"]["drivers"]).iter().enumerate() {
        let p = format!("spec.drivers[{i}]");
        let n = s(&d["name"]);
        if n.is_empty() {
            errs.push(required(format!("{p}.name"), ""));
        } else if !names.insert(n.to_string()) {
            errs.push(FieldError::duplicate(format!("{p}.name"), &d["name"]));
        }
        if s(&d["nodeID"]).is_empty() {
            errs.push(required(format!("{p}.nodeID"), ""));
        }
    }
    errs
}

fn csinode_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::int(
            "Drivers",
            "Drivers indicates the number of CSI drivers registered on the node",
        ),
        Column::age(),
    ]
}

fn csinode_cells(obj: &Value) -> Vec<Value> {
    vec![
        json!(table::name(obj)),
        json!(arr(&obj["spec"]["drivers"]).len()),
        table::age(obj),
    ]
}

// ---------------------------------------------------------------------------------------------
// VolumeAttachment

fn va_validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &obj["spec"];
    if s(&spec["attacher"]).is_empty() {
        errs.push(required("spec.attacher", ""));
    }
    if s(&spec["nodeName"]).is_empty() {
        errs.push(required("spec.nodeName", ""));
    }
    let src = &spec["source"];
    let n = ["persistentVolumeName", "inlineVolumeSpec"]
        .iter()
        .filter(|k| !src[**k].is_null())
        .count();
    if n == 0 {
        errs.push(required(
            "spec.source",
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        ));
    } else if n > 1 {
        errs.push(FieldError::forbidden(
            "spec.source",
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        ));
    }
    errs
}

fn va_validate_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !util::same(&obj["spec"], &old["spec"]) {
        errs.push(FieldError::invalid(
            "spec",
            &obj["spec"],
            "field is immutable",
        ));
    }
    errs
}

fn va_columns() -> Vec<Column> {
    vec![
        Column::name(),
        Column::new("Attacher", "Attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName()."),
        Column::new("PV", "Name of the persistent volume to attach."),
        Column::new("Node", "The node that the volume should be attached to."),
        Column { kind: "boolean", ..Column::new("Attached", "Indicates the volume is successfully attached. This field must only be set by the entity completing the attach operation, i.e. the external-attacher.") },
        Column::age(),
    ]
}

fn va_cells(obj: &Value) -> Vec<Value> {
    let spec = &obj["spec"];
    vec![
        json!(table::name(obj)),
        json!(s(&spec["attacher"])),
        json!(s(&spec["source"]["persistentVolumeName"])),
        json!(s(&spec["nodeName"])),
        json!(obj["status"]["attached"].as_bool().unwrap_or(false)),
        table::age(obj),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(FieldError::message).collect()
    }

    #[test]
    fn storage_classes() {
        let mut sc = json!({"metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path"});
        sc_defaults(&mut sc);
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert_eq!(sc["volumeBindingMode"], "Immediate");
        assert!(sc_validate(&sc).is_empty(), "{:?}", sc_validate(&sc));
        let cells = sc_cells(&sc);
        assert_eq!(cells[0], "local-path (default)");
        assert_eq!(cells[4], false);
        let mut new = sc.clone();
        new["provisioner"] = json!("other.io/x");
        assert_eq!(
            msgs(&sc_validate_update(&new, &sc)),
            vec!["provisioner: Forbidden: updates to provisioner are forbidden."]
        );
        assert_eq!(
            msgs(&sc_validate(&json!({}))),
            vec!["provisioner: Required value"]
        );
    }

    #[test]
    fn csi_drivers_and_attachments() {
        let mut d = json!({"metadata": {"name": "x.csi.io"}, "spec": {}});
        csidriver_defaults(&mut d);
        assert_eq!(d["spec"]["attachRequired"], true);
        assert_eq!(d["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
        let cells = csidriver_cells(&d);
        assert_eq!(cells[4], "<unset>");
        assert_eq!(cells[6], "Persistent");
        assert_eq!(csidriver_columns().len(), cells.len());
        let va = json!({"spec": {"attacher": "x", "nodeName": "n", "source": {"persistentVolumeName": "pv1"}}, "status": {"attached": true}});
        assert!(va_validate(&va).is_empty());
        assert_eq!(va_cells(&va)[2], "pv1");
    }
}
