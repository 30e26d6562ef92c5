//! Typed `metav1.LabelSelector`s (k8s-openapi, as controllers, the scheduler and the network
//! policy code hold them) turned into the one label matcher, [`Selector`] from
//! `distro-apimachinery`, which the apiserver also uses for `?labelSelector=` and its own
//! checks: one set of rules for what a selector selects, everywhere.
//!
//! The rules are upstream's `metav1.LabelSelectorAsSelector` and `labels.NewRequirement`:
//! a missing (nil) selector selects nothing, an empty one everything; `matchLabels` and
//! `matchExpressions` are ANDed; `In`/`NotIn` need values, `Exists`/`DoesNotExist` take none;
//! `NotIn` and `DoesNotExist` also select objects without the key; keys must be qualified
//! names and values label values. A selector breaking these rules is an error, not a guess:
//! callers decide (upstream controllers log it and act on nothing).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub use distro_apimachinery::labels::{Error, Labels, Operator, Requirement, Selector};

/// Converts a typed selector into a [`Selector`], as upstream's `LabelSelectorAsSelector`:
/// `None` gives [`Selector::nothing`], an empty selector [`Selector::everything`].
///
/// Build it once and match many objects with [`Selector::matches`]: conversion validates every
/// key and value.
///
/// # Errors
/// [`Error::InvalidOperator`] for an operator other than In, NotIn, Exists, DoesNotExist;
/// [`Error::InvalidRequirement`] (upstream's message) for a bad key, a bad value, `In`/`NotIn`
/// without values or `Exists`/`DoesNotExist` with values.
pub fn selector(selector: Option<&LabelSelector>) -> Result<Selector, Error> {
    let Some(sel) = selector else {
        return Ok(Selector::nothing());
    };
    let mut reqs = Vec::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.push(Requirement::new(k, Operator::Equals, vec![v.clone()])?);
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        reqs.push(Requirement::from_expression(&e.key, &e.operator, values)?);
    }
    Ok(Selector::from_requirements(reqs))
}

/// [`selector`] for callers that only filter: an invalid selector selects nothing (so a bad
/// object never widens what is selected) and is logged at debug level, where `what` names
/// the object holding it.
pub fn selector_or_nothing(sel: Option<&LabelSelector>, what: &str) -> Selector {
    selector(sel).unwrap_or_else(|e| {
        tracing::debug!(object = what, error = %e, "invalid label selector selects nothing");
        Selector::nothing()
    })
}

/// Whether `labels` has every pair of `set`: upstream's `labels.SelectorFromSet(set)`, how
/// a Service, a ReplicationController or a pod's `nodeSelector` selects (an empty set selects
/// everything; callers that treat a missing selector differently check that first).
pub fn set_matches(set: &BTreeMap<String, String>, labels: &impl Labels) -> bool {
    set.iter().all(|(k, v)| labels.label(k) == Some(v.as_str()))
}

/// Whether `sel` selects an object with `labels`, for a single check; an invalid selector
/// selects nothing. To test many objects, build the selector once with [`selector`].
pub fn matches(sel: Option<&LabelSelector>, labels: &impl Labels) -> bool {
    selector(sel).is_ok_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> serde_json::Value {
        match values {
            Some(v) => json!({"matchExpressions": [{"key": key, "operator": op, "values": v}]}),
            None => json!({"matchExpressions": [{"key": key, "operator": op}]}),
        }
    }

    #[test]
    fn nil_selects_nothing_and_empty_everything() {
        let web = labels(&[("app", "web")]);
        assert!(!matches(None, &web));
        assert!(!matches(None, &BTreeMap::new()));
        assert!(selector(None).unwrap().is_nothing());
        for empty in [
            json!({}),
            json!({"matchLabels": {}, "matchExpressions": []}),
        ] {
            let s = selector(Some(&sel(empty.clone()))).unwrap();
            assert!(s.is_empty(), "{empty}");
            assert!(s.matches(&web) && s.matches(&BTreeMap::new()), "{empty}");
        }
    }

    #[test]
    fn every_operator_as_upstream() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (json!({"matchLabels": {"zone": "a"}}), false),
            (
                json!({"matchLabels": {"app": "web", "tier": "back"}}),
                false,
            ),
            (expr("app", "In", Some(&["db", "web"])), true),
            (expr("app", "In", Some(&["db"])), false),
            (expr("zone", "In", Some(&["a"])), false),
            (expr("app", "NotIn", Some(&["web"])), false),
            (expr("app", "NotIn", Some(&["db"])), true),
            // NotIn and DoesNotExist select objects without the key.
            (expr("zone", "NotIn", Some(&["a"])), true),
            (expr("tier", "Exists", None), true),
            (expr("zone", "Exists", None), false),
            (expr("tier", "DoesNotExist", None), false),
            (expr("zone", "DoesNotExist", None), true),
            (expr("tier", "Exists", Some(&[])), true),
        ];
        for (s, want) in cases {
            assert_eq!(matches(Some(&sel(s.clone())), &web), want, "{s}");
        }
    }

    #[test]
    fn invalid_selectors_are_errors_and_select_nothing() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (
                expr("app", "In", Some(&[])),
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
            ),
            (
                expr("zone", "NotIn", None),
                "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty",
            ),
            (
                expr("tier", "Exists", Some(&["front"])),
                "values: Invalid value: [\"front\"]: values set must be empty for exists and does not exist",
            ),
            (
                expr("zone", "DoesNotExist", Some(&["a"])),
                "values: Invalid value: [\"a\"]: values set must be empty for exists and does not exist",
            ),
            (
                expr("tier", "Bogus", None),
                "\"Bogus\" is not a valid label selector operator",
            ),
        ];
        for (s, want) in cases {
            let typed = sel(s.clone());
            let err = selector(Some(&typed)).expect_err(&s.to_string());
            assert_eq!(err.to_string(), want, "{s}");
            assert!(!matches(Some(&typed), &web), "{s}");
            assert!(selector_or_nothing(Some(&typed), "test").is_nothing());
        }
        let bad_key = sel(json!({"matchLabels": {"-app": "web"}}));
        assert!(selector(Some(&bad_key)).is_err());
        let bad_value = sel(json!({"matchLabels": {"app": "we b"}}));
        assert!(selector(Some(&bad_value)).is_err());
    }

    #[test]
    fn typed_and_json_forms_agree() {
        let v = json!({
            "matchLabels": {"b": "1", "a": "2"},
            "matchExpressions": [
                {"key": "c", "operator": "In", "values": ["y", "x"]},
                {"key": "d", "operator": "DoesNotExist"}
            ]
        });
        let typed = selector(Some(&sel(v.clone()))).unwrap();
        assert_eq!(typed, Selector::from_label_selector(&v).unwrap());
        assert_eq!(typed.to_string(), "a=2,b=1,c in (x,y),!d");
    }

    #[test]
    fn sets_select_objects_with_every_pair() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        assert!(set_matches(&labels(&[("app", "web")]), &web));
        assert!(
            set_matches(&BTreeMap::new(), &web),
            "an empty set selects all"
        );
        assert!(!set_matches(&labels(&[("app", "db")]), &web));
        assert!(!set_matches(&labels(&[("zone", "a")]), &web));
        let none: Option<BTreeMap<String, String>> = None;
        assert!(!set_matches(&labels(&[("app", "web")]), &none));
    }

    #[test]
    fn objects_without_labels_have_none() {
        let no_labels: Option<BTreeMap<String, String>> = None;
        let s = selector(Some(&sel(expr("app", "DoesNotExist", None)))).unwrap();
        assert!(s.matches(&no_labels));
        let s = selector(Some(&sel(json!({"matchLabels": {"app": "web"}})))).unwrap();
        assert!(!s.matches(&no_labels));
        assert!(s.matches(&Some(labels(&[("app", "web")]))));
    }
}
