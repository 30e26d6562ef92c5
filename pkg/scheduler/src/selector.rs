//! Label selectors as the scheduler's plugins use them: pod affinity terms and topology spread
//! constraints select pods by label, namespace selectors select namespaces.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Labels of an object (empty when it has none).
pub type Labels = BTreeMap<String, String>;

/// Whether `selector` selects an object with `labels`. A missing selector selects nothing and
/// an empty one everything, as upstream's `LabelSelectorAsSelector`; a malformed requirement
/// (unknown operator, `In` without values) selects nothing.
pub fn matches(selector: Option<&LabelSelector>, labels: &Labels) -> bool {
    let Some(sel) = selector else { return false };
    sel.match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement(r, labels))
}

fn requirement(r: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let have = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => !values.is_empty() && have.is_some_and(|v| values.contains(v)),
        "NotIn" => !values.is_empty() && have.is_none_or(|v| !values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        _ => false,
    }
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

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        assert!(!matches(None, &web), "no selector selects nothing");
        assert!(matches(Some(&sel(json!({}))), &web), "empty selects all");
        for (s, want) in [
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}),
                false,
            ),
        ] {
            assert_eq!(matches(Some(&sel(s.clone())), &web), want, "{s}");
        }
    }

    #[test]
    fn match_label_keys_narrow_to_the_pods_values() {
        let me = labels(&[("app", "web"), ("pod-template-hash", "abc")]);
        let keys = vec!["pod-template-hash".to_string(), "missing".to_string()];
        let s = with_match_label_keys(
            Some(&sel(json!({"matchLabels": {"app": "web"}}))),
            Some(&keys),
            &me,
        );
        assert!(matches(s.as_ref(), &me));
        let old = labels(&[("app", "web"), ("pod-template-hash", "old")]);
        assert!(!matches(s.as_ref(), &old));
        assert_eq!(with_match_label_keys(None, Some(&keys), &me), None);
    }
}
