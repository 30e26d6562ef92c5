//! Pod volumes end to end on a temp dir: setup, live update, teardown. The tmpfs and bind
//! mount cases need root (as in CI); each test unmounts and removes what it made, also when
//! it fails (a guard tears the pod down on drop).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use distro_kubelet::volume::mount::{mounted_fs_type, mounts};
use distro_kubelet::volume::token::TokenSourceError;
use distro_kubelet::volume::{
    IssuedToken, StaticSources, SystemClock, TokenManager, TokenRequestSpec, TokenSource,
    VolumeManager,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
    EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath, LocalVolumeSource, ObjectFieldSelector,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, Pod,
    PodSecurityContext, PodSpec, ProjectedVolumeSource, Secret, SecretVolumeSource,
    ServiceAccountTokenProjection, Volume, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

struct FixedTokens;

#[async_trait::async_trait]
impl TokenSource for FixedTokens {
    async fn request(&self, spec: &TokenRequestSpec) -> Result<IssuedToken, TokenSourceError> {
        Ok(IssuedToken {
            token: format!("jwt-for-{}", spec.service_account),
            expiration: SystemTime::now() + Duration::from_secs(3600),
            expiration_seconds: 3600,
        })
    }
}

/// A manager on a fresh temp root; tears the pod down when dropped so a failing test leaves
/// no mounts behind.
struct Fixture {
    manager: VolumeManager,
    uid: String,
    root: tempfile::TempDir,
}

impl Fixture {
    fn new(uid: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let tokens = Arc::new(TokenManager::new(
            Arc::new(FixedTokens),
            Arc::new(SystemClock),
        ));
        Self {
            manager: VolumeManager::new(root.path(), tokens),
            uid: uid.to_string(),
            root,
        }
    }
    fn volumes(&self) -> PathBuf {
        self.manager.pod_volumes_dir(&self.uid)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let manager = self.manager.clone();
        let uid = self.uid.clone();
        // Best effort on a private runtime: the test's runtime may be gone already.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .map(|rt| rt.block_on(manager.teardown(&uid)))
        })
        .join();
    }
}

fn pod(uid: &str, volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn config_map(data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("cfg".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test]
async fn disk_volumes_setup_update_teardown() {
    let fx = Fixture::new("uid-disk");
    let host_dir = fx.root.path().join("host/data");
    let mut sources = StaticSources::default();
    sources.put_config_map(config_map(&[("a", "1"), ("b", "2")]));

    let mut cm = volume("cfg");
    cm.config_map = Some(ConfigMapVolumeSource {
        name: "cfg".into(),
        items: Some(vec![
            KeyToPath {
                key: "a".into(),
                path: "nested/a.txt".into(),
                mode: Some(0o600),
            },
            KeyToPath {
                key: "b".into(),
                path: "b".into(),
                mode: None,
            },
        ]),
        ..Default::default()
    });
    let mut scratch = volume("scratch");
    scratch.empty_dir = Some(EmptyDirVolumeSource {
        size_limit: Some(Quantity("64Ki".into())),
        ..Default::default()
    });
    let mut info = volume("info");
    info.downward_api = Some(DownwardAPIVolumeSource {
        items: Some(vec![DownwardAPIVolumeFile {
            path: "labels".into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.labels".into(),
                api_version: None,
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    let mut host = volume("host");
    host.host_path = Some(HostPathVolumeSource {
        path: host_dir.to_string_lossy().into_owned(),
        type_: Some("DirectoryOrCreate".into()),
    });
    let mut p = pod(&fx.uid, vec![cm, scratch, info, host]);

    let mounted = fx.manager.setup(&p, &sources).await.unwrap();
    let by_name: BTreeMap<_, _> = mounted.iter().map(|m| (m.name.as_str(), m)).collect();
    let cm_dir = fx.volumes().join("kubernetes.io~configmap/cfg");
    assert_eq!(by_name["cfg"].host_path, cm_dir);
    assert!(by_name["cfg"].read_only);
    assert_eq!(
        fs::read_to_string(cm_dir.join("nested/a.txt")).unwrap(),
        "1"
    );
    assert_eq!(mode(&cm_dir.join("nested/a.txt")), 0o600);
    assert_eq!(mode(&cm_dir.join("b")), 0o644);
    let scratch_dir = fx.volumes().join("kubernetes.io~empty-dir/scratch");
    assert_eq!(by_name["scratch"].host_path, scratch_dir);
    assert!(!by_name["scratch"].read_only);
    assert_eq!(mode(&scratch_dir), 0o777);
    let info_dir = fx.volumes().join("kubernetes.io~downward-api/info");
    assert_eq!(
        fs::read_to_string(info_dir.join("labels")).unwrap(),
        "app=\"web\""
    );
    assert_eq!(by_name["host"].host_path, host_dir);
    assert_eq!(mode(&host_dir), 0o755);

    // emptyDir usage against its sizeLimit.
    fs::write(scratch_dir.join("big"), vec![7u8; 128 * 1024]).unwrap();
    let usage = fx.manager.usage(&p).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert!(usage[0].exceeds_limit(), "{usage:?}");

    // Nothing changed: update is a no-op. Then a ConfigMap change and a label change land.
    assert!(!fx.manager.update(&p, &sources).await.unwrap());
    let data_before = fs::read_link(cm_dir.join("..data")).unwrap();
    sources.put_config_map(config_map(&[("a", "one")]));
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    let err = fx
        .manager
        .update(&p, &sources)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "MountVolume.SetUp failed for volume \"cfg\" : configmap references non-existent config key: b"
    );
    assert_eq!(
        fs::read_to_string(info_dir.join("labels")).unwrap(),
        "app=\"web\"\nv=\"2\"",
        "the other volume still updated"
    );
    sources.put_config_map(config_map(&[("a", "one"), ("b", "2")]));
    assert!(fx.manager.update(&p, &sources).await.unwrap());
    assert_eq!(
        fs::read_to_string(cm_dir.join("nested/a.txt")).unwrap(),
        "one"
    );
    assert_ne!(fs::read_link(cm_dir.join("..data")).unwrap(), data_before);

    // Setup again over existing state (a restarted kubelet) keeps the emptyDir's data.
    fx.manager.setup(&p, &sources).await.unwrap();
    assert!(scratch_dir.join("big").exists());

    fx.manager.teardown(&fx.uid).await.unwrap();
    assert!(!fx.volumes().exists());
    assert!(host_dir.is_dir(), "hostPath content is never removed");
    fx.manager.teardown(&fx.uid).await.unwrap();
    // Update after teardown does not resurrect anything.
    assert!(!fx.manager.update(&p, &sources).await.unwrap());
    assert!(!fx.volumes().exists());
}

#[tokio::test]
async fn setup_errors_name_the_volume() {
    let fx = Fixture::new("uid-errors");
    let sources = StaticSources::default();
    let mut cm = volume("cfg");
    cm.config_map = Some(ConfigMapVolumeSource {
        name: "missing".into(),
        ..Default::default()
    });
    let err = fx
        .manager
        .setup(&pod(&fx.uid, vec![cm]), &sources)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"cfg\" : configmaps \"missing\" not found"
    );

    let mut host = volume("sock");
    host.host_path = Some(HostPathVolumeSource {
        path: "/dev/null".into(),
        type_: Some("Socket".into()),
    });
    let err = fx
        .manager
        .setup(&pod(&fx.uid, vec![host]), &sources)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"sock\" : hostPath type check failed: /dev/null is not a socket file"
    );

    let mut claim = volume("data");
    claim.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
        claim_name: "pvc".into(),
        read_only: None,
    });
    let mut sources = StaticSources::default();
    sources.put_claim(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("pvc".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        status: Some(PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = fx
        .manager
        .setup(&pod(&fx.uid, vec![claim]), &sources)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"data\" : PVC ns/pvc has non-bound phase (\"Pending\") or empty pvc.Spec.VolumeName (\"\")"
    );
}

fn bound_claim(sources: &mut StaticSources, pv: PersistentVolumeSpec) {
    sources.put_claim(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("pvc".into()),
            namespace: Some("ns".into()),
            uid: Some("claim-uid".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            volume_name: Some("pv-1".into()),
            ..Default::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        }),
    });
    sources.put_volume(PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv-1".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            claim_ref: Some(ObjectReference {
                uid: Some("claim-uid".into()),
                ..Default::default()
            }),
            ..pv
        }),
        ..Default::default()
    });
}

#[tokio::test]
async fn claim_bound_to_host_path_pv() {
    let fx = Fixture::new("uid-pvc-hostpath");
    let data = fx.root.path().join("pv-data");
    let mut sources = StaticSources::default();
    bound_claim(
        &mut sources,
        PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: data.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
    );
    let mut claim = volume("data");
    claim.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
        claim_name: "pvc".into(),
        read_only: Some(true),
    });
    let mounted = fx
        .manager
        .setup(&pod(&fx.uid, vec![claim]), &sources)
        .await
        .unwrap();
    assert_eq!(mounted[0].host_path, data);
    assert!(mounted[0].read_only);
    assert!(data.is_dir());
}

#[tokio::test]
async fn tmpfs_volumes_are_mounted_and_unmounted() {
    if !is_root() {
        eprintln!("skipped: mounting tmpfs needs root");
        return;
    }
    let fx = Fixture::new("uid-tmpfs");
    let mut sources = StaticSources {
        allocatable: BTreeMap::from([("memory".into(), Quantity("1Gi".into()))]),
        ..Default::default()
    };
    sources.put_secret(Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".into(),
            ByteString(b"hunter2".to_vec()),
        )])),
        ..Default::default()
    });
    sources.put_config_map(ConfigMap {
        metadata: ObjectMeta {
            name: Some("kube-root-ca.crt".into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("ca.crt".into(), "PEM".into())])),
        ..Default::default()
    });
    let mut mem = volume("cache");
    mem.empty_dir = Some(EmptyDirVolumeSource {
        medium: Some("Memory".into()),
        size_limit: Some(Quantity("8Mi".into())),
    });
    let mut secret = volume("creds");
    secret.secret = Some(SecretVolumeSource {
        secret_name: Some("creds".into()),
        default_mode: Some(0o400),
        ..Default::default()
    });
    let mut access = volume("kube-api-access-x1");
    access.projected = Some(ProjectedVolumeSource {
        default_mode: Some(0o644),
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    expiration_seconds: Some(3607),
                    audience: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(k8s_openapi::api::core::v1::ConfigMapProjection {
                    name: "kube-root-ca.crt".into(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".into(),
                        path: "ca.crt".into(),
                        mode: None,
                    }]),
                    optional: None,
                }),
                ..Default::default()
            },
        ]),
    });
    let mut p = pod(&fx.uid, vec![mem, secret, access]);
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        fs_group: Some(3456),
        ..Default::default()
    });

    let mounted = fx.manager.setup(&p, &sources).await.unwrap();
    let mem_dir = fx.volumes().join("kubernetes.io~empty-dir/cache");
    let secret_dir = fx.volumes().join("kubernetes.io~secret/creds");
    let access_dir = fx
        .volumes()
        .join("kubernetes.io~projected/kube-api-access-x1");
    assert_eq!(mounted[0].host_path, mem_dir);
    for dir in [&mem_dir, &secret_dir, &access_dir] {
        assert_eq!(
            mounted_fs_type(dir).unwrap().as_deref(),
            Some("tmpfs"),
            "{}",
            dir.display()
        );
    }
    let size = nix::sys::statvfs::statvfs(&mem_dir).unwrap();
    assert_eq!(
        size.blocks() * size.fragment_size(),
        8 * 1024 * 1024,
        "size= from sizeLimit"
    );
    let mem_meta = fs::metadata(&mem_dir).unwrap();
    assert_eq!(mem_meta.gid(), 3456, "fsGroup owns the emptyDir");
    assert_eq!(
        fs::read_to_string(secret_dir.join("password")).unwrap(),
        "hunter2"
    );
    // defaultMode 0400 plus fsGroup's group read.
    assert_eq!(mode(&secret_dir.join("password")), 0o440);
    assert_eq!(
        fs::read_to_string(access_dir.join("token")).unwrap(),
        "jwt-for-default"
    );
    assert_eq!(
        mode(&access_dir.join("token")),
        0o640,
        "0600 token plus group read"
    );
    assert_eq!(
        fs::read_to_string(access_dir.join("ca.crt")).unwrap(),
        "PEM"
    );

    // Running setup again (restart) mounts nothing twice.
    fs::write(mem_dir.join("keep"), "x").unwrap();
    fx.manager.setup(&p, &sources).await.unwrap();
    let count = |dir: &Path| {
        mounts()
            .unwrap()
            .iter()
            .filter(|m| m.mount_point == dir)
            .count()
    };
    assert_eq!(count(&mem_dir), 1);
    assert_eq!(count(&secret_dir), 1);
    assert!(mem_dir.join("keep").exists());

    fx.manager.teardown(&fx.uid).await.unwrap();
    assert!(!fx.volumes().exists());
    let volumes = fx.volumes();
    assert!(
        mounts()
            .unwrap()
            .iter()
            .all(|m| !m.mount_point.starts_with(&volumes)),
        "all mounts gone"
    );
}

#[tokio::test]
async fn local_pv_is_bind_mounted() {
    if !is_root() {
        eprintln!("skipped: bind mounts need root");
        return;
    }
    let fx = Fixture::new("uid-local");
    let data = fx.root.path().join("disk1");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("existing"), "keep me").unwrap();
    let mut sources = StaticSources::default();
    bound_claim(
        &mut sources,
        PersistentVolumeSpec {
            local: Some(LocalVolumeSource {
                path: data.to_string_lossy().into_owned(),
                fs_type: None,
            }),
            ..Default::default()
        },
    );
    let mut claim = volume("data");
    claim.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
        claim_name: "pvc".into(),
        read_only: None,
    });
    let p = pod(&fx.uid, vec![claim]);
    let mounted = fx.manager.setup(&p, &sources).await.unwrap();
    let dir = fx.volumes().join("kubernetes.io~local-volume/pv-1");
    assert_eq!(mounted[0].host_path, dir);
    assert_eq!(fs::read_to_string(dir.join("existing")).unwrap(), "keep me");
    fx.manager.setup(&p, &sources).await.unwrap();
    fx.manager.teardown(&fx.uid).await.unwrap();
    assert!(!fx.volumes().exists());
    assert_eq!(
        fs::read_to_string(data.join("existing")).unwrap(),
        "keep me",
        "teardown unmounts, never deletes the PV's data"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_pod_leave_one_consistent_version() {
    let fx = Fixture::new("uid-race");
    let mut cm = volume("cfg");
    cm.config_map = Some(ConfigMapVolumeSource {
        name: "cfg".into(),
        ..Default::default()
    });
    let p = pod(&fx.uid, vec![cm]);
    let mut sources = StaticSources::default();
    sources.put_config_map(config_map(&[("k", "v0")]));
    fx.manager.setup(&p, &sources).await.unwrap();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=16 {
        let manager = fx.manager.clone();
        let p = p.clone();
        let mut sources = sources.clone();
        sources.put_config_map(config_map(&[
            ("k", &format!("v{i}")),
            ("n", &i.to_string()),
        ]));
        tasks.spawn(async move { manager.update(&p, &sources).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let dir = fx.volumes().join("kubernetes.io~configmap/cfg");
    let n: u32 = fs::read_to_string(dir.join("n")).unwrap().parse().unwrap();
    assert_eq!(fs::read_to_string(dir.join("k")).unwrap(), format!("v{n}"));
    let versions: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..2"))
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(
        fs::read_link(dir.join("..data")).unwrap().to_string_lossy(),
        versions[0]
    );
}

#[tokio::test]
async fn ephemeral_volume_uses_the_pods_own_claim() {
    let fx = Fixture::new("uid-ephemeral");
    let data = fx.root.path().join("eph-data");
    let mut sources = StaticSources::default();
    bound_claim(
        &mut sources,
        PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: data.to_string_lossy().into_owned(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
    );
    // The claim of volume "pvc" of pod "web" is named "web-pvc"; re-key the fixture claim.
    let mut claim = (*sources.claims["ns/pvc"]).clone();
    claim.metadata.name = Some("web-pvc".into());
    let mut eph = volume("pvc");
    eph.ephemeral = Some(Default::default());
    let p = pod(&fx.uid, vec![eph]);

    sources.put_claim(claim.clone());
    let err = fx
        .manager
        .setup(&p, &sources)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "MountVolume.SetUp failed for volume \"pvc\" : PVC ns/web-pvc was not created for pod ns/web (pod is not owner)"
    );

    claim.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: "web".into(),
            uid: fx.uid.clone(),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    sources.put_claim(claim);
    let mounted = fx.manager.setup(&p, &sources).await.unwrap();
    assert_eq!(mounted[0].host_path, data);
}
