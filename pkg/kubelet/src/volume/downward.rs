//! Downward API values as upstream writes them into volumes: `fieldRef` on pod metadata
//! (`pkg/fieldpath`) and `resourceFieldRef` on a container's requests and limits, with limits
//! the container does not set defaulting to the node's allocatable.

use std::collections::BTreeMap;

use distro_apimachinery::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::Error;

/// The value of a downward API `fieldRef` for a volume file (upstream
/// `fieldpath.ExtractFieldPathAsString`): `metadata.name`, `.namespace`, `.uid`, `.labels`,
/// `.annotations` and their `['key']` subscripts.
///
/// # Errors
/// [`Error::DownwardApi`] with upstream's `unsupported fieldPath: ...` for anything else.
pub fn field_path_value(pod: &Pod, field_path: &str) -> Result<String, Error> {
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    if let Some((path, key)) = split_subscript(field_path) {
        return match path {
            "metadata.labels" => Ok(labels.get(key).cloned().unwrap_or_default()),
            "metadata.annotations" => Ok(annotations.get(key).cloned().unwrap_or_default()),
            _ => Err(Error::DownwardApi(format!(
                "fieldPath {field_path:?} does not support subscript"
            ))),
        };
    }
    match field_path {
        "metadata.annotations" => Ok(format_map(annotations)),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(Error::DownwardApi(format!(
            "unsupported fieldPath: {field_path}"
        ))),
    }
}

/// `metadata.labels['app']` → (`metadata.labels`, `app`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_suffix("']")?;
    let (head, key) = rest.split_once("['")?;
    Some((head, key))
}

/// Labels or annotations as upstream's `fieldpath.FormatMap`: `key="value"` lines sorted by
/// key, values quoted as Go's `%q`, no trailing newline.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote` for valid UTF-8: the usual backslash escapes, other control
/// characters as `\xHH` / `\uHHHH`, everything printable kept.
///
/// # Limits
/// Go's notion of "printable" covers Unicode categories; here only control characters are
/// escaped, so rare unprintable format characters (e.g. U+200B) stay raw.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef` (upstream `ExtractResourceValueByContainerNameAndNodeAllocatable`).
///
/// Limits the container leaves unset for cpu, memory and ephemeral-storage default to
/// `allocatable`, as the kubelet does, so `limits.memory` never reads 0.
///
/// # Errors
/// [`Error::DownwardApi`] with upstream's messages when the container does not exist or the
/// resource is not supported, or a quantity does not parse.
pub fn resource_field_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, ApiQuantity>,
) -> Result<String, Error> {
    let name = selector.container_name.as_deref().unwrap_or_default();
    let container = find_container(pod, name)
        .ok_or_else(|| Error::DownwardApi(format!("container {name} not found")))?;
    let divisor = match &selector.divisor {
        Some(d) => parse_quantity(&d.0)?,
        None => Quantity::from_units(1, distro_apimachinery::quantity::Format::DecimalSI),
    };
    let divisor = if divisor.is_zero() {
        Quantity::from_units(1, distro_apimachinery::quantity::Format::DecimalSI)
    } else {
        divisor
    };
    let resources = container.resources.clone().unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();

    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| unsupported(&selector.resource))?;
    let list = match kind {
        "limits" => &limits,
        "requests" => &requests,
        _ => return Err(unsupported(&selector.resource)),
    };
    let supported = matches!(resource, "cpu" | "memory" | "ephemeral-storage")
        || resource.starts_with("hugepages-");
    if !supported {
        return Err(unsupported(&selector.resource));
    }
    let defaulted = kind == "limits" && !resource.starts_with("hugepages-");
    let quantity = match list.get(resource) {
        Some(q) => parse_quantity(&q.0)?,
        None => match allocatable.get(resource).filter(|_| defaulted) {
            Some(q) => parse_quantity(&q.0)?,
            None => Quantity::from_units(0, distro_apimachinery::quantity::Format::DecimalSI),
        },
    };
    let value = if resource == "cpu" {
        ceil_ratio(quantity.milli_value(), divisor.milli_value())
    } else {
        ceil_ratio(quantity.value(), divisor.value())
    };
    Ok(value.to_string())
}

fn unsupported(resource: &str) -> Error {
    Error::DownwardApi(format!("unsupported container resource : {resource}"))
}

fn parse_quantity(s: &str) -> Result<Quantity, Error> {
    Quantity::parse(s).map_err(|e| Error::DownwardApi(format!("invalid quantity {s:?}: {e}")))
}

/// `ceil(a / b)` as upstream computes it through float64.
fn ceil_ratio(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    (a as f64 / b as f64).ceil() as i64
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        let q = |s: &str| ApiQuantity(s.into());
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("app".into(), "web".into()),
                    ("tier".into(), "a \"b\"\n\\c".into()),
                ])),
                annotations: Some(BTreeMap::from([("z".into(), "1".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        limits: Some(BTreeMap::from([("cpu".into(), q("1500m"))])),
                        requests: Some(BTreeMap::from([
                            ("cpu".into(), q("250m")),
                            ("memory".into(), q("64Mi")),
                        ])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_fields_and_format() {
        let p = pod();
        assert_eq!(
            field_path_value(&p, "metadata.labels").unwrap(),
            "app=\"web\"\ntier=\"a \\\"b\\\"\\n\\\\c\""
        );
        assert_eq!(
            field_path_value(&p, "metadata.annotations").unwrap(),
            "z=\"1\""
        );
        assert_eq!(
            field_path_value(&p, "metadata.labels['app']").unwrap(),
            "web"
        );
        assert_eq!(field_path_value(&p, "metadata.labels['nope']").unwrap(), "");
        assert_eq!(field_path_value(&p, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_path_value(&p, "metadata.namespace").unwrap(), "ns");
        assert_eq!(
            field_path_value(&p, "status.podIP")
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: status.podIP"
        );
        assert_eq!(go_quote("\u{1}é\u{85}"), "\"\\x01é\\u0085\"");
        assert_eq!(format_map(&BTreeMap::new()), "");
    }

    #[test]
    fn resource_fields_with_divisor_and_allocatable() {
        let p = pod();
        let alloc = BTreeMap::from([
            ("cpu".to_string(), ApiQuantity("4".into())),
            ("memory".to_string(), ApiQuantity("2Gi".into())),
        ]);
        let get = |res: &str, div: Option<&str>| {
            let sel = ResourceFieldSelector {
                container_name: Some("c".into()),
                resource: res.into(),
                divisor: div.map(|d| ApiQuantity(d.into())),
            };
            resource_field_value(&p, &sel, &alloc)
        };
        assert_eq!(get("limits.cpu", None).unwrap(), "2", "1.5 cores rounds up");
        assert_eq!(get("limits.cpu", Some("1m")).unwrap(), "1500");
        assert_eq!(get("requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(get("requests.memory", Some("1Mi")).unwrap(), "64");
        assert_eq!(get("requests.memory", None).unwrap(), "67108864");
        assert_eq!(
            get("limits.memory", Some("1Mi")).unwrap(),
            "2048",
            "from allocatable"
        );
        assert_eq!(get("requests.ephemeral-storage", None).unwrap(), "0");
        assert_eq!(
            get("limits.gpu", None).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
        let sel = ResourceFieldSelector {
            container_name: Some("x".into()),
            resource: "limits.cpu".into(),
            divisor: None,
        };
        assert_eq!(
            resource_field_value(&p, &sel, &alloc)
                .unwrap_err()
                .to_string(),
            "container x not found"
        );
    }
}
