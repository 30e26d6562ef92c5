//! Validation of a CRD's versions beyond their shape (called from the CRD kind's strategy).

use serde_json::Value;

use crate::error::FieldError;

/// The checks of a CRD's versions beyond their shape: each schema is structural, printer
/// columns and scale paths are usable, at least one version is served. Called from the CRD
/// kind's validation.
pub fn validate_versions(spec: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if !versions.is_empty() && !versions.iter().any(|v| v["served"] == true) {
        errs.push(FieldError::invalid(
            "spec.versions",
            &spec["versions"],
            "must have at least one version served",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        let p = format!("spec.versions[{i}]");
        let schema = &v["schema"]["openAPIV3Schema"];
        if schema.is_object() {
            errs.extend(super::strategy::field_errors(
                distro_apimachinery::structural::check_schema(
                    schema,
                    &format!("{p}.schema.openAPIV3Schema"),
                ),
            ));
        }
        let scale = &v["subresources"]["scale"];
        if scale.is_object() {
            for (key, under, required) in [
                ("specReplicasPath", ".spec.", true),
                ("statusReplicasPath", ".status.", true),
                ("labelSelectorPath", ".", false),
            ] {
                let path = format!("{p}.subresources.scale.{key}");
                match scale[key].as_str() {
                    None | Some("") if required => errs.push(FieldError::required(path, "")),
                    None | Some("") => {}
                    Some(jp) => {
                        let simple = super::jsonpath::JsonPath::parse(jp)
                            .and_then(|j| j.field_name())
                            .is_some();
                        if !jp.starts_with(under) || !simple {
                            let what = match under {
                                ".spec." => "should be a json path under .spec",
                                ".status." => "should be a json path under .status",
                                _ => "should be a json path under either .spec or .status",
                            };
                            errs.push(FieldError::invalid(path, &scale[key], what));
                        }
                    }
                }
            }
        }
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cp = format!("{p}.additionalPrinterColumns[{j}]");
            if c["name"].as_str().unwrap_or("").is_empty() {
                errs.push(FieldError::required(format!("{cp}.name"), ""));
            }
            match c["type"].as_str() {
                None | Some("") => errs.push(FieldError::required(format!("{cp}.type"), "")),
                Some("integer" | "number" | "string" | "boolean" | "date") => {}
                Some(_) => errs.push(FieldError::not_supported(
                    format!("{cp}.type"),
                    &c["type"],
                    &["boolean", "date", "integer", "number", "string"],
                )),
            }
            match c["jsonPath"].as_str() {
                None | Some("") => errs.push(FieldError::required(format!("{cp}.jsonPath"), "")),
                Some(jp) if super::jsonpath::JsonPath::parse(jp).is_none() => {
                    errs.push(FieldError::invalid(
                        format!("{cp}.jsonPath"),
                        &c["jsonPath"],
                        "must be a simple json path starting with .",
                    ))
                }
                Some(_) => {}
            }
        }
    }
    errs
}
