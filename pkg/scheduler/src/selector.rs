//! Label selectors as the scheduler's plugins use them: pod affinity terms and topology spread
//! constraints select pods by label, namespace selectors select namespaces.

use std::collections::BTreeMap;

use distro_client::labels::{self, Selector};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Labels of an object (empty when it has none).
pub type Labels = BTreeMap<String, String>;

/// `selector` as the one label matcher ([`distro_client::labels`]): a missing selector selects
/// nothing, an empty one everything. An invalid one (possible only if the apiserver let it
/// through) also selects nothing: upstream fails the pod's PreFilter instead, which this
/// scheduler does not model, so it is logged at debug level with the pod's name.
pub fn compile(selector: Option<LabelSelector>, pod: &Pod) -> Selector {
    let what = format!(
        "pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    labels::selector_or_nothing(selector.as_ref(), &what)
}

/// `selector` narrowed by `matchLabelKeys`: each key the incoming pod has adds
/// `key In (its value)`, so only pods of the same revision (e.g. `pod-template-hash`) count.
/// Keys the pod lacks are ignored, as upstream does.
pub fn with_match_label_keys(
    selector: Option<&LabelSelector>,
    keys: Option<&Vec<String>>,
    pod_labels: &Labels,
) -> Option<LabelSelector> {
    let mut sel = selector?.clone();
    for key in keys.into_iter().flatten() {
        if let Some(v) = pod_labels.get(key) {
            sel.match_expressions
                .get_or_insert_with(Vec::new)
                .push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator: "In".into(),
                    values: Some(vec![v.clone()]),
                });
        }
    }
    Some(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    fn set(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_label_keys_narrow_to_the_pods_values() {
        let me = set(&[("app", "web"), ("pod-template-hash", "abc")]);
        let keys = vec!["pod-template-hash".to_string(), "missing".to_string()];
        let s = with_match_label_keys(
            Some(&sel(json!({"matchLabels": {"app": "web"}}))),
            Some(&keys),
            &me,
        );
        assert!(labels::matches(s.as_ref(), &me));
        let old = set(&[("app", "web"), ("pod-template-hash", "old")]);
        assert!(!labels::matches(s.as_ref(), &old));
        assert_eq!(with_match_label_keys(None, Some(&keys), &me), None);
    }
}
