//! A container's environment, as upstream's `makeEnvironmentVariables` builds it.
//!
//! Order of work (upstream's): `envFrom` sources first (ConfigMaps and Secrets, with prefix,
//! optional semantics and invalid keys skipped with a warning), then `env` in order, where a
//! literal value is `$(VAR)`-expanded against everything defined so far and then the service
//! variables, and `valueFrom` reads ConfigMaps, Secrets, pod fields and container resources;
//! last, service-link variables fill in names nobody set.
//!
//! # Limits
//! Variables come back in first-definition order (upstream's order is a Go map's, i.e.
//! random). `fileKeyRef` (alpha in 1.33) and hugepages in `resourceFieldRef` are not handled.

use std::collections::{BTreeMap, HashMap};

use distro_apimachinery::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVarSource, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
    Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::error::ConfigError;
use super::expansion::expand;

/// Where ConfigMaps and Secrets come from: the kubelet's informer cache, or a map in tests.
pub trait ObjectLookup {
    /// The ConfigMap `namespace/name`, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap>;
    /// The Secret `namespace/name`, if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;
}

/// Everything besides the pod and container that the environment depends on.
pub struct EnvContext<'a> {
    /// ConfigMaps and Secrets.
    pub objects: &'a dyn ObjectLookup,
    /// The Services the kubelet knows (any namespace): those of the pod's namespace become
    /// service links when `enableServiceLinks`, and `default/kubernetes` always does.
    pub services: &'a [Service],
    /// The pod's IPs from its sandbox, primary first.
    pub pod_ips: &'a [String],
    /// The node's IPs, primary first.
    pub host_ips: &'a [String],
    /// The node's allocatable resources: `resourceFieldRef` on an unset limit reads these.
    pub node_allocatable: &'a BTreeMap<String, ApiQuantity>,
}

/// The resolved environment plus warnings upstream records as Events (skipped keys).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `(name, value)` in first-definition order.
    pub vars: Vec<(String, String)>,
    /// Human-readable warnings, e.g. invalid `envFrom` keys that were skipped.
    pub warnings: Vec<String>,
}

/// Insertion-ordered map: later definitions replace the value but keep the first position.
#[derive(Default)]
struct OrderedEnv {
    index: HashMap<String, usize>,
    vars: Vec<(String, String)>,
}

impl OrderedEnv {
    fn set(&mut self, k: String, v: String) {
        match self.index.get(&k) {
            Some(&i) => self.vars[i].1 = v,
            None => {
                self.index.insert(k.clone(), self.vars.len());
                self.vars.push((k, v));
            }
        }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.index.get(k).map(|&i| self.vars[i].1.as_str())
    }
}

/// Builds the environment of `container` in `pod`.
///
/// # Errors
/// The [`ConfigError`]s that upstream reports as `CreateContainerConfigError`: a missing
/// non-optional ConfigMap/Secret or key, an unsupported field path or resource.
pub fn make_environment(
    pod: &Pod,
    container: &Container,
    ctx: &EnvContext<'_>,
) -> Result<Environment, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref();
    let links = spec.and_then(|s| s.enable_service_links).unwrap_or(true);
    let service_env = service_env(ns, links, ctx.services);
    let mut env = OrderedEnv::default();
    let mut warnings = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (kind, name, data): (&str, String, Vec<(String, String)>) =
            if let Some(r) = &from.config_map_ref {
                match ctx.objects.config_map(ns, &r.name) {
                    Some(cm) => (
                        "configMap",
                        r.name.clone(),
                        cm.data.unwrap_or_default().into_iter().collect(),
                    ),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(ConfigError::ConfigMapNotFound {
                            name: r.name.clone(),
                        })
                    }
                }
            } else if let Some(r) = &from.secret_ref {
                match ctx.objects.secret(ns, &r.name) {
                    Some(s) => ("secret", r.name.clone(), secret_strings(&s)),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(ConfigError::SecretNotFound {
                            name: r.name.clone(),
                        })
                    }
                }
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if !is_env_var_name(&k) {
                invalid.push(k);
                continue;
            }
            env.set(k, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {ns}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) if !v.is_empty() => {
                let lookup = |n: &str| {
                    env.get(n)
                        .or_else(|| service_env.get(n).map(String::as_str))
                };
                expand(v, lookup)
            }
            (_, Some(from)) => match value_from(pod, container, ns, from, ctx)? {
                Some(v) => v,
                None => continue, // optional source missing: the variable is not set at all
            },
            _ => String::new(),
        };
        env.set(var.name.clone(), value);
    }

    for (k, v) in service_env {
        if env.get(&k).is_none() {
            env.set(k, v);
        }
    }
    Ok(Environment {
        vars: env.vars,
        warnings,
    })
}

/// Upstream 1.33 (`RelaxedEnvironmentVariableValidation`, on by default): any printable
/// ASCII except `=`, not empty.
fn is_env_var_name(k: &str) -> bool {
    !k.is_empty() && k.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

fn secret_strings(s: &Secret) -> Vec<(String, String)> {
    s.data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// One `valueFrom`; `Ok(None)` when an optional source or key is missing.
fn value_from(
    pod: &Pod,
    container: &Container,
    ns: &str,
    from: &EnvVarSource,
    ctx: &EnvContext<'_>,
) -> Result<Option<String>, ConfigError> {
    if let Some(f) = &from.field_ref {
        return field_value(pod, f, ctx).map(Some);
    }
    if let Some(r) = &from.resource_field_ref {
        // `containerName` points at another container of the pod (downward API volumes use
        // it; in env it may name the container itself).
        let target = match r.container_name.as_deref().filter(|n| !n.is_empty()) {
            None => container,
            Some(name) => pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| ConfigError::ContainerNotFound(name.to_string()))?,
        };
        return resource_value(target, r, ctx.node_allocatable).map(Some);
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional == Some(true);
        let Some(cm) = ctx.objects.config_map(ns, &r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::ConfigMapNotFound {
                    name: r.name.clone(),
                })
            };
        };
        return match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(ConfigError::ConfigMapKeyNotFound {
                key: r.key.clone(),
                namespace: ns.to_string(),
                name: r.name.clone(),
            }),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional == Some(true);
        let Some(s) = ctx.objects.secret(ns, &r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(ConfigError::SecretNotFound {
                    name: r.name.clone(),
                })
            };
        };
        return match s.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError::SecretKeyNotFound {
                key: r.key.clone(),
                namespace: ns.to_string(),
                name: r.name.clone(),
            }),
        };
    }
    Ok(Some(String::new()))
}

/// A downward-API field of the pod, as upstream's `podFieldSelectorRuntimeValue` and
/// `fieldpath.ExtractFieldPathAsString` resolve it.
pub fn field_value(
    pod: &Pod,
    f: &ObjectFieldSelector,
    ctx: &EnvContext<'_>,
) -> Result<String, ConfigError> {
    let spec = pod.spec.as_ref();
    let meta = &pod.metadata;
    let path = f.field_path.as_str();
    let v = match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "spec.terminationGracePeriodSeconds" => spec
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .to_string(),
        "status.hostIP" => ctx.host_ips.first().cloned().unwrap_or_default(),
        "status.hostIPs" => ctx.host_ips.join(","),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        _ => {
            let sub = |prefix: &str| {
                path.strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix("['"))
                    .and_then(|r| r.strip_suffix("']"))
                    .map(str::to_string)
            };
            if let Some(k) = sub("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = sub("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(ConfigError::UnsupportedFieldPath(path.to_string()));
            }
        }
    };
    Ok(v)
}

/// Upstream's `FormatMap`: sorted `key="value"` lines, no trailing newline.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse_q(field: &str, q: &ApiQuantity) -> Result<Quantity, ConfigError> {
    Quantity::parse(&q.0).map_err(|source| ConfigError::Quantity {
        field: field.to_string(),
        value: q.0.clone(),
        source,
    })
}

/// A container resource for `resourceFieldRef`, as upstream's `ExtractContainerResourceValue`:
/// `ceil(value / divisor)`, cpu in millis, unset limits read as node allocatable.
pub fn resource_value(
    container: &Container,
    r: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, ApiQuantity>,
) -> Result<String, ConfigError> {
    let divisor = match &r.divisor {
        Some(d) => parse_q("divisor", d)?,
        None => Quantity::from_units(1, distro_apimachinery::quantity::Format::DecimalSI),
    };
    let divisor = if divisor.is_zero() {
        Quantity::from_units(1, distro_apimachinery::quantity::Format::DecimalSI)
    } else {
        divisor
    };
    let (kind, name) = r
        .resource
        .split_once('.')
        .ok_or_else(|| ConfigError::UnsupportedResource(r.resource.clone()))?;
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || !matches!(kind, "limits" | "requests")
    {
        return Err(ConfigError::UnsupportedResource(r.resource.clone()));
    }
    let res = container.resources.as_ref();
    let map = if kind == "limits" {
        res.and_then(|r| r.limits.as_ref())
    } else {
        res.and_then(|r| r.requests.as_ref())
    };
    let set = map
        .and_then(|m| m.get(name))
        .map(|q| parse_q(&r.resource, q))
        .transpose()?;
    let set = set.filter(|q| !q.is_zero());
    let value = match set {
        Some(q) => q,
        // Upstream merges node allocatable into unset limits only.
        None if kind == "limits" => match allocatable.get(name) {
            Some(q) => parse_q("allocatable", q)?,
            None => Quantity::from_units(0, distro_apimachinery::quantity::Format::DecimalSI),
        },
        None => Quantity::from_units(0, distro_apimachinery::quantity::Format::DecimalSI),
    };
    let (num, den) = if name == "cpu" {
        (value.milli_value(), divisor.milli_value())
    } else {
        (value.value(), divisor.value())
    };
    let den = den.max(1);
    Ok(num
        .div_euclid(den)
        .saturating_add(i64::from(num.rem_euclid(den) != 0))
        .to_string())
}

/// Service-link variables for the pod's namespace (when `enable_links`) plus the
/// `kubernetes` service of `default`, as upstream's `getServiceEnvVarMap` and
/// `envvars.FromServices`.
pub fn service_env(
    namespace: &str,
    enable_links: bool,
    services: &[Service],
) -> BTreeMap<String, String> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        let (Some(name), Some(ns)) = (s.metadata.name.as_deref(), s.metadata.namespace.as_deref())
        else {
            continue;
        };
        let ip = s
            .spec
            .as_ref()
            .and_then(|sp| sp.cluster_ip.as_deref())
            .unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        if ns == namespace && enable_links {
            chosen.insert(name.to_string(), s);
        } else if ns == "default" && name == "kubernetes" {
            chosen.entry(name.to_string()).or_insert(s);
        }
    }
    let mut out = BTreeMap::new();
    for (name, s) in chosen {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let var = name.to_uppercase().replace('-', "_");
        out.insert(format!("{var}_SERVICE_HOST"), ip.clone());
        let ports = spec.ports.as_deref().unwrap_or_default();
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.clone()
        };
        for (i, p) in ports.iter().enumerate() {
            if i == 0 {
                out.insert(format!("{var}_SERVICE_PORT"), p.port.to_string());
            }
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.insert(
                    format!("{var}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                );
            }
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let prefix = format!("{var}_PORT_{}_{}", p.port, proto.to_uppercase());
            let url = format!("{lower}://{host}:{}", p.port);
            if i == 0 {
                out.insert(format!("{var}_PORT"), url.clone());
            }
            out.insert(prefix.clone(), url);
            out.insert(format!("{prefix}_PROTO"), lower);
            out.insert(format!("{prefix}_PORT"), p.port.to_string());
            out.insert(format!("{prefix}_ADDR"), ip.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, PodSpec,
        ResourceRequirements, SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    #[derive(Default)]
    struct Objects {
        cms: Vec<ConfigMap>,
        secrets: Vec<Secret>,
    }
    impl ObjectLookup for Objects {
        fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
            self.cms
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(ns)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }
        fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
            self.secrets
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(ns)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned()
        }
    }

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn cm(name: &str, kv: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: meta("ns", name),
            data: Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn secret(name: &str, kv: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: meta("ns", name),
            data: Some(
                kv.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, Option<&str>)]) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(Into::into),
                            port: *p,
                            protocol: proto.map(Into::into),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(links: Option<bool>) -> Pod {
        let mut m = meta("ns", "web");
        m.uid = Some("u-1".into());
        m.labels = Some(
            [
                ("app".to_string(), "web".to_string()),
                ("b".to_string(), "say \"hi\"".to_string()),
            ]
            .into(),
        );
        Pod {
            metadata: m,
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("sa".into()),
                enable_service_links: links,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(src),
            ..Default::default()
        }
    }

    fn run(
        pod: &Pod,
        c: &Container,
        objects: &Objects,
        services: &[Service],
    ) -> Result<Environment, ConfigError> {
        let alloc: BTreeMap<String, ApiQuantity> = [
            ("cpu".to_string(), ApiQuantity("2".into())),
            ("memory".to_string(), ApiQuantity("4Gi".into())),
        ]
        .into();
        let ctx = EnvContext {
            objects,
            services,
            pod_ips: &["10.42.0.5".to_string(), "fd00::5".to_string()],
            host_ips: &["192.168.1.2".to_string()],
            node_allocatable: &alloc,
        };
        make_environment(pod, c, &ctx)
    }

    fn get<'a>(e: &'a Environment, k: &str) -> Option<&'a str> {
        e.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn literal_values_expand_against_earlier_vars_and_services() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                var("A", "a"),
                var("B", "$(A)-b"),
                var("C", "$(LATER)$(A)"),
                var("D", "$(KUBERNETES_SERVICE_HOST)"),
                var("LATER", "x"),
                var("E", "$$(A)"),
                var("A", "second"),
            ]),
            ..Default::default()
        };
        let services = [svc(
            "default",
            "kubernetes",
            "10.43.0.1",
            &[(Some("https"), 443, None)],
        )];
        let e = run(&pod(Some(false)), &c, &Objects::default(), &services).unwrap();
        assert_eq!(get(&e, "B"), Some("a-b"));
        assert_eq!(
            get(&e, "C"),
            Some("$(LATER)a"),
            "later vars are not visible"
        );
        assert_eq!(get(&e, "D"), Some("10.43.0.1"));
        assert_eq!(get(&e, "E"), Some("$(A)"));
        assert_eq!(get(&e, "A"), Some("second"));
        assert_eq!(e.vars[0].0, "A", "redefinition keeps first position");
        // default/kubernetes is linked even with enableServiceLinks: false.
        assert_eq!(get(&e, "KUBERNETES_PORT"), Some("tcp://10.43.0.1:443"));
    }

    #[test]
    fn env_from_with_prefix_invalid_keys_and_optional() {
        let objects = Objects {
            cms: vec![cm("cfg", &[("k1", "v1"), ("bad=key", "x"), ("", "y")])],
            secrets: vec![secret("sec", &[("pw", "hunter2")])],
        };
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![
                EnvFromSource {
                    prefix: Some("P_".into()),
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "cfg".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                EnvFromSource {
                    secret_ref: Some(k8s_openapi::api::core::v1::SecretEnvSource {
                        name: "sec".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "missing".into(),
                        optional: Some(true),
                    }),
                    ..Default::default()
                },
            ]),
            env: Some(vec![var("X", "$(P_k1)/$(pw)")]),
            ..Default::default()
        };
        let e = run(&pod(None), &c, &objects, &[]).unwrap();
        assert_eq!(get(&e, "P_k1"), Some("v1"));
        assert_eq!(get(&e, "P_"), Some("y"), "prefix makes the empty key valid");
        assert_eq!(get(&e, "pw"), Some("hunter2"));
        assert_eq!(get(&e, "X"), Some("v1/hunter2"));
        assert_eq!(
            e.warnings,
            vec!["Keys [P_bad=key] from the EnvFrom configMap ns/cfg were skipped since they are considered invalid environment variable names."]
        );
        // Not optional: the exact upstream message.
        let c2 = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "missing".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(
            run(&pod(None), &c2, &objects, &[]).unwrap_err().to_string(),
            "configmap \"missing\" not found"
        );
    }

    #[test]
    fn key_refs_optional_and_messages() {
        let objects = Objects {
            cms: vec![cm("cfg", &[("k", "v")])],
            secrets: vec![secret("sec", &[("k", "s")])],
        };
        let cmref = |name: &str, key: &str, optional| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        };
        let secref = |name: &str, key: &str, optional| EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        };
        let c = |vars: Vec<EnvVar>| Container {
            name: "c".into(),
            env: Some(vars),
            ..Default::default()
        };
        let p = pod(None);
        let ok = run(
            &p,
            &c(vec![
                from("A", cmref("cfg", "k", None)),
                from("B", secref("sec", "k", None)),
                from("C", cmref("cfg", "nope", Some(true))),
                from("D", secref("gone", "k", Some(true))),
            ]),
            &objects,
            &[],
        )
        .unwrap();
        assert_eq!(get(&ok, "A"), Some("v"));
        assert_eq!(get(&ok, "B"), Some("s"));
        assert_eq!(
            get(&ok, "C"),
            None,
            "optional missing key leaves the var unset"
        );
        assert_eq!(get(&ok, "D"), None);
        let err = |v| {
            run(&p, &c(vec![from("X", v)]), &objects, &[])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(cmref("cfg", "nope", None)),
            "couldn't find key nope in ConfigMap ns/cfg"
        );
        assert_eq!(
            err(secref("sec", "nope", Some(false))),
            "couldn't find key nope in Secret ns/sec"
        );
        assert_eq!(err(secref("gone", "k", None)), "secret \"gone\" not found");
        assert_eq!(
            err(cmref("gone", "k", None)),
            "configmap \"gone\" not found"
        );
    }

    #[test]
    fn field_refs() {
        let f = |path: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        };
        let paths = [
            ("metadata.name", "web"),
            ("metadata.namespace", "ns"),
            ("metadata.uid", "u-1"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['absent']", ""),
            ("metadata.labels", "app=\"web\"\nb=\"say \\\"hi\\\"\""),
            ("spec.nodeName", "node-a"),
            ("spec.serviceAccountName", "sa"),
            ("spec.terminationGracePeriodSeconds", "30"),
            ("status.podIP", "10.42.0.5"),
            ("status.podIPs", "10.42.0.5,fd00::5"),
            ("status.hostIP", "192.168.1.2"),
            ("status.hostIPs", "192.168.1.2"),
        ];
        let c = Container {
            env: Some(paths.iter().map(|(p, _)| from(p, f(p))).collect()),
            ..Default::default()
        };
        let e = run(&pod(None), &c, &Objects::default(), &[]).unwrap();
        for (p, want) in paths {
            assert_eq!(get(&e, p), Some(want), "{p}");
        }
        let bad = Container {
            env: Some(vec![from("X", f("spec.bogus"))]),
            ..Default::default()
        };
        assert_eq!(
            run(&pod(None), &bad, &Objects::default(), &[])
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: spec.bogus"
        );
    }

    #[test]
    fn resource_refs_round_up_and_default_to_allocatable() {
        let c = Container {
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_string(), ApiQuantity("250m".into()))].into()),
                limits: Some([("memory".to_string(), ApiQuantity("64Mi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let alloc: BTreeMap<String, ApiQuantity> = [
            ("cpu".to_string(), ApiQuantity("2".into())),
            ("memory".to_string(), ApiQuantity("4Gi".into())),
        ]
        .into();
        let r = |res: &str, div: Option<&str>| {
            resource_value(
                &c,
                &ResourceFieldSelector {
                    resource: res.into(),
                    divisor: div.map(|d| ApiQuantity(d.into())),
                    container_name: None,
                },
                &alloc,
            )
        };
        assert_eq!(
            r("requests.cpu", None).unwrap(),
            "1",
            "250m rounds up to 1 core"
        );
        assert_eq!(r("requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(
            r("limits.cpu", None).unwrap(),
            "2",
            "unset limit is node allocatable"
        );
        assert_eq!(r("limits.memory", None).unwrap(), "67108864");
        assert_eq!(r("limits.memory", Some("1Mi")).unwrap(), "64");
        assert_eq!(r("limits.memory", Some("1Gi")).unwrap(), "1");
        assert_eq!(r("requests.memory", None).unwrap(), "0");
        assert_eq!(
            r("limits.gpu", None).unwrap_err().to_string(),
            "unsupported container resource : limits.gpu"
        );
    }

    #[test]
    fn resource_ref_to_another_container() {
        let mut p = pod(None);
        let sidecar = Container {
            name: "side".into(),
            resources: Some(ResourceRequirements {
                limits: Some([("memory".to_string(), ApiQuantity("32Mi".into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        p.spec.as_mut().unwrap().containers.push(sidecar);
        let r = |name: &str| EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(name.into()),
                resource: "limits.memory".into(),
                divisor: Some(ApiQuantity("1Mi".into())),
            }),
            ..Default::default()
        };
        let c = Container {
            name: "main".into(),
            env: Some(vec![from("SIDE_MEM", r("side"))]),
            ..Default::default()
        };
        let e = run(&p, &c, &Objects::default(), &[]).unwrap();
        assert_eq!(get(&e, "SIDE_MEM"), Some("32"));
        let c = Container {
            name: "main".into(),
            env: Some(vec![from("X", r("nope"))]),
            ..Default::default()
        };
        assert_eq!(
            run(&p, &c, &Objects::default(), &[])
                .unwrap_err()
                .to_string(),
            "container nope not found"
        );
    }

    #[test]
    fn service_links() {
        let services = [
            svc(
                "ns",
                "my-db",
                "10.43.0.20",
                &[
                    (Some("pg"), 5432, None),
                    (Some("metrics-x"), 9187, Some("UDP")),
                ],
            ),
            svc("ns", "headless", "None", &[(None, 80, None)]),
            svc("other", "elsewhere", "10.43.0.30", &[(None, 80, None)]),
            svc("ns", "v6", "fd00::10", &[(None, 80, None)]),
        ];
        let env = service_env("ns", true, &services);
        assert_eq!(env["MY_DB_SERVICE_HOST"], "10.43.0.20");
        assert_eq!(env["MY_DB_SERVICE_PORT"], "5432");
        assert_eq!(env["MY_DB_SERVICE_PORT_PG"], "5432");
        assert_eq!(env["MY_DB_SERVICE_PORT_METRICS_X"], "9187");
        assert_eq!(env["MY_DB_PORT"], "tcp://10.43.0.20:5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP"], "tcp://10.43.0.20:5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_PROTO"], "tcp");
        assert_eq!(env["MY_DB_PORT_5432_TCP_PORT"], "5432");
        assert_eq!(env["MY_DB_PORT_5432_TCP_ADDR"], "10.43.0.20");
        assert_eq!(env["MY_DB_PORT_9187_UDP"], "udp://10.43.0.20:9187");
        assert_eq!(env["V6_PORT"], "tcp://[fd00::10]:80");
        assert!(!env
            .keys()
            .any(|k| k.starts_with("HEADLESS") || k.starts_with("ELSEWHERE")));
        assert!(service_env("ns", false, &services).is_empty());
        // A var the container sets itself wins over a service link.
        let c = Container {
            env: Some(vec![var("MY_DB_SERVICE_HOST", "mine")]),
            ..Default::default()
        };
        let e = run(&pod(None), &c, &Objects::default(), &services).unwrap();
        assert_eq!(get(&e, "MY_DB_SERVICE_HOST"), Some("mine"));
        assert_eq!(get(&e, "MY_DB_SERVICE_PORT"), Some("5432"));
    }
}
