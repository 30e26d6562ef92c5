//! A container's `volumeMounts` as CRI mounts (upstream's `makeMounts`), given the host
//! paths the volume manager prepared: `subPath`/`subPathExpr` resolution with upstream's
//! checks, read-only from the mount or the volume, and mount propagation.
//!
//! # Limits
//! Creating the `subPath` directory and guarding against symlink escapes (upstream's
//! `PrepareSafeSubpath`) is IO left to the caller, as is recursive read-only support.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use distro_cri::api::{Mount, MountPropagation};
use k8s_openapi::api::core::v1::Container;

use super::expansion::expand;
use super::ConfigError;
use crate::volume::MountedVolume;

/// Upstream `translateMountPropagation`.
fn propagation(mode: Option<&str>) -> Result<MountPropagation, ConfigError> {
    match mode {
        None | Some("None") => Ok(MountPropagation::PropagationPrivate),
        Some("HostToContainer") => Ok(MountPropagation::PropagationHostToContainer),
        Some("Bidirectional") => Ok(MountPropagation::PropagationBidirectional),
        Some(other) => Err(ConfigError::MountPropagation(other.to_string())),
    }
}

/// Upstream `ExpandContainerVolumeMounts`: `$(VAR)` in `subPathExpr` from the container's
/// environment; unset or empty variables are an error naming them all.
fn expand_sub_path(expr: &str, env: &HashMap<&str, &str>) -> Result<String, ConfigError> {
    let missing = RefCell::new(BTreeSet::new());
    let out = expand(expr, |n| {
        match env.get(n).copied().filter(|v| !v.is_empty()) {
            Some(v) => Some(v),
            None => {
                missing.borrow_mut().insert(n.to_string());
                Some("")
            }
        }
    });
    let missing = missing.into_inner();
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError::SubPathMissingVars(
            missing.into_iter().collect::<Vec<_>>().join(", "),
        ))
    }
}

/// The CRI mounts for `container`'s `volumeMounts`, in order, over the volumes
/// [`crate::volume::VolumeManager::setup`] prepared. `env` is the container's resolved
/// environment (for `subPathExpr`).
///
/// # Errors
/// A volume that was not prepared, a bad `subPath`, missing `subPathExpr` variables, or an
/// unknown propagation mode: all `CreateContainerConfigError`.
pub fn volume_mounts(
    container: &Container,
    volumes: &[MountedVolume],
    env: &[(String, String)],
) -> Result<Vec<Mount>, ConfigError> {
    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let vol = volumes.iter().find(|v| v.name == m.name).ok_or_else(|| {
            ConfigError::VolumeNotFound {
                volume: m.name.clone(),
                container: container.name.clone(),
            }
        })?;
        let sub_path = match m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            Some(expr) => expand_sub_path(expr, &env)?,
            None => m.sub_path.clone().unwrap_or_default(),
        };
        let mut host_path = vol.host_path.clone();
        if !sub_path.is_empty() {
            if sub_path.starts_with('/') {
                return Err(ConfigError::SubPathAbsolute(sub_path));
            }
            if sub_path.split('/').any(|part| part == "..") {
                return Err(ConfigError::SubPathBacksteps(sub_path));
            }
            host_path = host_path.join(&sub_path);
        }
        let container_path = if m.mount_path.starts_with('/') {
            m.mount_path.clone()
        } else {
            format!("/{}", m.mount_path)
        };
        out.push(Mount {
            container_path,
            host_path: host_path.to_string_lossy().into_owned(),
            readonly: m.read_only.unwrap_or(false) || vol.read_only,
            propagation: propagation(m.mount_propagation.as_deref())? as i32,
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    fn vols() -> Vec<MountedVolume> {
        vec![
            MountedVolume {
                name: "data".into(),
                host_path: "/pods/u/volumes/data".into(),
                read_only: false,
            },
            MountedVolume {
                name: "cfg".into(),
                host_path: "/pods/u/volumes/cfg".into(),
                read_only: true,
            },
        ]
    }

    fn vm(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..Default::default()
        }
    }

    fn c(mounts: Vec<VolumeMount>) -> Container {
        Container {
            name: "app".into(),
            volume_mounts: Some(mounts),
            ..Default::default()
        }
    }

    #[test]
    fn mounts_in_order_with_read_only_and_propagation() {
        let mounts = vec![
            VolumeMount {
                read_only: Some(true),
                ..vm("data", "/data")
            },
            vm("cfg", "/etc/app"),
            VolumeMount {
                sub_path: Some("logs/x".into()),
                mount_propagation: Some("HostToContainer".into()),
                ..vm("data", "/logs")
            },
        ];
        let m = volume_mounts(&c(mounts), &vols(), &[]).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[0].host_path.as_str(), m[0].readonly),
            ("/pods/u/volumes/data", true)
        );
        assert!(m[1].readonly, "a read-only volume stays read-only");
        assert_eq!(m[2].host_path, "/pods/u/volumes/data/logs/x");
        assert_eq!(
            m[2].propagation,
            MountPropagation::PropagationHostToContainer as i32
        );
        assert_eq!(
            m[0].propagation,
            MountPropagation::PropagationPrivate as i32
        );
    }

    #[test]
    fn sub_path_expr_and_errors() {
        let env = vec![
            ("POD_NAME".to_string(), "web-0".to_string()),
            ("EMPTY".to_string(), String::new()),
        ];
        let m = volume_mounts(
            &c(vec![VolumeMount {
                sub_path_expr: Some("logs/$(POD_NAME)".into()),
                ..vm("data", "/logs")
            }]),
            &vols(),
            &env,
        )
        .unwrap();
        assert_eq!(m[0].host_path, "/pods/u/volumes/data/logs/web-0");
        let err = |mount: VolumeMount| {
            volume_mounts(&c(vec![mount]), &vols(), &env)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(VolumeMount {
                sub_path_expr: Some("$(NOPE)/$(EMPTY)".into()),
                ..vm("data", "/x")
            }),
            "missing value for EMPTY, NOPE"
        );
        assert_eq!(
            err(VolumeMount {
                sub_path: Some("/etc".into()),
                ..vm("data", "/x")
            }),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            err(VolumeMount {
                sub_path: Some("a/../../b".into()),
                ..vm("data", "/x")
            }),
            "unable to provision SubPath `a/../../b`: must not contain '..'"
        );
        assert_eq!(
            err(vm("ghost", "/x")),
            "cannot find volume \"ghost\" to mount into container \"app\""
        );
        assert_eq!(
            err(VolumeMount {
                mount_propagation: Some("Sideways".into()),
                ..vm("data", "/x")
            }),
            "invalid MountPropagation mode: \"Sideways\""
        );
    }
}
