//! What the projected volume types write: payloads for configMap, secret, downwardAPI and
//! projected volumes, as upstream's `MakePayload`/`CollectData` build them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::atomic_writer::{FileProjection, Payload};
use super::downward::{field_path_value, resource_field_value};
use super::sources::VolumeSources;
use super::token::{TokenManager, TokenRequestSpec};
use super::Error;

/// Upstream's default `defaultMode` for configMap, secret, downwardAPI and projected volumes.
pub const DEFAULT_MODE: u32 = 0o644;
/// Upstream's default `serviceAccountToken.expirationSeconds`.
pub const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// API modes are decimal `int32`s of which only permission bits count.
pub fn mode_bits(mode: Option<i32>, default: u32) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map(|m| m & 0o7777)
        .unwrap_or(default)
}

/// Files of a ConfigMap volume (or projection). `cm` is `None` when the ConfigMap does not
/// exist: an empty volume when `optional`, otherwise upstream's `configmaps "x" not found`.
///
/// # Errors
/// [`Error::NotFound`], or [`Error::MissingKey`] with `configmap references non-existent
/// config key: K` for an item whose key is missing and the source is not optional.
pub fn config_map_payload(
    name: &str,
    cm: Option<&ConfigMap>,
    items: &[KeyToPath],
    default_mode: u32,
    optional: bool,
) -> Result<Payload, Error> {
    let Some(cm) = cm else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(Error::NotFound {
                resource: "configmaps",
                name: name.to_string(),
            })
        };
    };
    let lookup = |key: &str| -> Option<Vec<u8>> {
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| b.0.clone())
            })
    };
    let all_keys: Vec<String> = cm
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(cm.binary_data.iter().flat_map(|d| d.keys()))
        .cloned()
        .collect();
    project(items, &all_keys, lookup, default_mode, optional, |key| {
        format!("configmap references non-existent config key: {key}")
    })
}

/// Files of a Secret volume (or projection); see [`config_map_payload`] for the rules.
///
/// # Errors
/// [`Error::NotFound`] (`secrets "x" not found`) or [`Error::MissingKey`]
/// (`references non-existent secret key: K`).
pub fn secret_payload(
    name: &str,
    secret: Option<&Secret>,
    items: &[KeyToPath],
    default_mode: u32,
    optional: bool,
) -> Result<Payload, Error> {
    let Some(secret) = secret else {
        return if optional {
            Ok(Payload::new())
        } else {
            Err(Error::NotFound {
                resource: "secrets",
                name: name.to_string(),
            })
        };
    };
    let lookup = |key: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
    };
    let all_keys: Vec<String> = secret.data.iter().flat_map(|d| d.keys()).cloned().collect();
    project(items, &all_keys, lookup, default_mode, optional, |key| {
        format!("references non-existent secret key: {key}")
    })
}

/// Every key at its own name with `default_mode`, or only `items` at their paths.
fn project(
    items: &[KeyToPath],
    all_keys: &[String],
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
    default_mode: u32,
    optional: bool,
    missing: impl Fn(&str) -> String,
) -> Result<Payload, Error> {
    let mut payload = Payload::new();
    if items.is_empty() {
        for key in all_keys {
            if let Some(data) = lookup(key) {
                payload.insert(key.clone(), FileProjection::new(data, default_mode));
            }
        }
        return Ok(payload);
    }
    for item in items {
        let Some(data) = lookup(&item.key) else {
            if optional {
                continue;
            }
            return Err(Error::MissingKey(missing(&item.key)));
        };
        payload.insert(
            item.path.clone(),
            FileProjection::new(data, mode_bits(item.mode, default_mode)),
        );
    }
    Ok(payload)
}

/// Files of a downwardAPI volume (or projection).
///
/// # Errors
/// [`Error::DownwardApi`] for an unsupported field or resource; all failing items are
/// reported together as upstream's aggregate does.
pub fn downward_api_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<Payload, Error> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_path_value(pod, &field.field_path)
        } else if let Some(resource) = &item.resource_field_ref {
            resource_field_value(pod, resource, allocatable)
        } else {
            continue;
        };
        match value {
            Ok(v) => {
                payload.insert(
                    item.path.clone(),
                    FileProjection::new(v, mode_bits(item.mode, default_mode)),
                );
            }
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors)?;
    Ok(payload)
}

/// Upstream's `FsUserFrom`: the user every init and regular container runs as, when they all
/// run as the same explicitly set user; tokens are then owned by it.
pub fn fs_user_from(pod: &Pod) -> Option<u32> {
    let spec = pod.spec.as_ref()?;
    let pod_user = spec.security_context.as_ref().and_then(|s| s.run_as_user);
    let mut user = None;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let effective = c
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_user)?;
        match user {
            Some(u) if u != effective => return None,
            _ => user = Some(effective),
        }
    }
    user.and_then(|u| u32::try_from(u).ok())
}

/// The pod's `securityContext.fsGroup`.
pub fn fs_group_from(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

/// Files of a projected volume: its sources merged in order (later ones win on equal paths).
/// All sources are tried; their errors are reported together.
///
/// # Errors
/// The first failure alone, or [`Error::Aggregate`] for several, as upstream.
pub async fn projected_payload(
    pod: &Pod,
    projected: &ProjectedVolumeSource,
    sources: &dyn VolumeSources,
    tokens: &TokenManager,
) -> Result<Payload, Error> {
    let default_mode = mode_bits(projected.default_mode, DEFAULT_MODE);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let fs_user = fs_user_from(pod);
    let fs_group = fs_group_from(pod);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for source in projected.sources.iter().flatten() {
        let part = if let Some(s) = &source.secret {
            let secret = sources.secret(namespace, &s.name);
            secret_payload(
                &s.name,
                secret.as_deref(),
                s.items.as_deref().unwrap_or_default(),
                default_mode,
                s.optional.unwrap_or(false),
            )
        } else if let Some(c) = &source.config_map {
            let cm = sources.config_map(namespace, &c.name);
            config_map_payload(
                &c.name,
                cm.as_deref(),
                c.items.as_deref().unwrap_or_default(),
                default_mode,
                c.optional.unwrap_or(false),
            )
        } else if let Some(d) = &source.downward_api {
            downward_api_payload(
                pod,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
                &sources.node_allocatable(),
            )
        } else if let Some(t) = &source.service_account_token {
            // With fsUser or fsGroup the token is private to its owner (fsGroup later adds
            // group read), as upstream.
            let mode = if fs_user.is_some() || fs_group.is_some() {
                0o600
            } else {
                default_mode
            };
            let spec = TokenRequestSpec {
                namespace: namespace.to_string(),
                service_account: service_account_name(pod),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                audiences: t
                    .audience
                    .iter()
                    .filter(|a| !a.is_empty())
                    .cloned()
                    .collect(),
                expiration_seconds: t
                    .expiration_seconds
                    .unwrap_or(DEFAULT_TOKEN_EXPIRATION_SECONDS),
            };
            tokens.token(&spec).await.map(|token| {
                let mut file = FileProjection::new(token, mode);
                file.fs_user = fs_user;
                Payload::from([(t.path.clone(), file)])
            })
        } else {
            continue;
        };
        match part {
            Ok(p) => payload.extend(p),
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors)?;
    Ok(payload)
}

/// `spec.serviceAccountName`, `default` when unset as the API server defaults it.
fn service_account_name(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// Upstream's `NewAggregate`: nothing, the one error, or all of them.
fn aggregate(mut errors: Vec<Error>) -> Result<(), Error> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Aggregate(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::sources::StaticSources;
    use crate::volume::token::tests::setup;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, DownwardAPIProjection, ObjectFieldSelector, PodSecurityContext,
        PodSpec, SecretProjection, ServiceAccountTokenProjection, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn cm() -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cfg".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("a".into(), "A".into())])),
            binary_data: Some(BTreeMap::from([("b".into(), ByteString(vec![0, 1]))])),
            ..Default::default()
        }
    }

    fn ktp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    #[test]
    fn config_map_items_modes_and_errors() {
        let c = cm();
        let all = config_map_payload("cfg", Some(&c), &[], 0o644, false).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["b"].data, vec![0, 1]);
        let items = [ktp("a", "x/y", Some(0o400)), ktp("b", "b", None)];
        let p = config_map_payload("cfg", Some(&c), &items, 0o600, false).unwrap();
        assert_eq!(p["x/y"], FileProjection::new("A", 0o400));
        assert_eq!(p["b"].mode, 0o600);
        let missing = [ktp("zz", "zz", None)];
        assert_eq!(
            config_map_payload("cfg", Some(&c), &missing, 0o644, false)
                .unwrap_err()
                .to_string(),
            "configmap references non-existent config key: zz"
        );
        assert!(config_map_payload("cfg", Some(&c), &missing, 0o644, true)
            .unwrap()
            .is_empty());
        assert_eq!(
            config_map_payload("cfg", None, &[], 0o644, false)
                .unwrap_err()
                .to_string(),
            "configmaps \"cfg\" not found"
        );
        assert!(config_map_payload("cfg", None, &[], 0o644, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn secret_errors_match_upstream() {
        let s = Secret {
            data: Some(BTreeMap::from([("k".into(), ByteString(b"v".to_vec()))])),
            ..Default::default()
        };
        assert_eq!(
            secret_payload("s", Some(&s), &[], 0o644, false).unwrap()["k"].data,
            b"v"
        );
        assert_eq!(
            secret_payload("s", Some(&s), &[ktp("x", "x", None)], 0o644, false)
                .unwrap_err()
                .to_string(),
            "references non-existent secret key: x"
        );
        assert_eq!(
            secret_payload("s", None, &[], 0o644, false)
                .unwrap_err()
                .to_string(),
            "secrets \"s\" not found"
        );
    }

    fn pod(fs_group: Option<i64>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                security_context: Some(PodSecurityContext {
                    fs_group,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The `kube-api-access-*` volume the ServiceAccount admission adds to every pod.
    fn kube_api_access() -> ProjectedVolumeSource {
        ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![ktp("ca.crt", "ca.crt", None)]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        }
    }

    #[tokio::test]
    async fn kube_api_access_shape() {
        let (_clock, _source, tokens) = setup();
        let mut sources = StaticSources::default();
        sources.put_config_map(ConfigMap {
            metadata: ObjectMeta {
                name: Some("kube-root-ca.crt".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("ca.crt".into(), "PEM".into())])),
            ..Default::default()
        });
        let p = projected_payload(&pod(None), &kube_api_access(), &sources, &tokens)
            .await
            .unwrap();
        assert_eq!(
            p.keys().collect::<Vec<_>>(),
            ["ca.crt", "namespace", "token"]
        );
        assert_eq!(p["token"], FileProjection::new("token-1", 0o644));
        assert_eq!(p["ca.crt"].data, b"PEM");
        assert_eq!(p["namespace"].data, b"ns");

        // With fsGroup the token is 0600 (fsGroup ownership adds group read later).
        let p = projected_payload(&pod(Some(2000)), &kube_api_access(), &sources, &tokens)
            .await
            .unwrap();
        assert_eq!(p["token"].mode, 0o600);

        // Without the CA ConfigMap, that source fails and the others are still tried.
        let empty = StaticSources::default();
        let err = projected_payload(&pod(None), &kube_api_access(), &empty, &tokens)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "configmaps \"kube-root-ca.crt\" not found");

        // Two failing sources aggregate.
        let mut two = kube_api_access();
        two.sources.as_mut().unwrap().push(VolumeProjection {
            secret: Some(SecretProjection {
                name: "nope".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = projected_payload(&pod(None), &two, &empty, &tokens)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "[configmaps \"kube-root-ca.crt\" not found, secrets \"nope\" not found]"
        );
    }

    #[test]
    fn fs_user_only_when_every_container_runs_as_one_user() {
        let with = |pod_user: Option<i64>, users: &[Option<i64>]| -> Pod {
            serde_json::from_value(serde_json::json!({
                "spec": {
                    "securityContext": {"runAsUser": pod_user},
                    "containers": users.iter().enumerate().map(|(i, u)| serde_json::json!({
                        "name": format!("c{i}"),
                        "securityContext": {"runAsUser": u},
                    })).collect::<Vec<_>>(),
                }
            }))
            .unwrap()
        };
        assert_eq!(
            fs_user_from(&with(None, &[Some(1000), Some(1000)])),
            Some(1000)
        );
        assert_eq!(
            fs_user_from(&with(Some(1000), &[None, Some(1000)])),
            Some(1000)
        );
        assert_eq!(fs_user_from(&with(None, &[Some(1000), Some(1001)])), None);
        assert_eq!(fs_user_from(&with(None, &[Some(1000), None])), None);
        assert_eq!(fs_user_from(&with(Some(5), &[])), None);
    }
}
